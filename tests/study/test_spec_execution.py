"""The spec's trainer: and resources: blocks: validation, per-rung resources, auto micro-batches."""

from __future__ import annotations

import pytest

from scaling.errors import UserInputError
from scaling.spec import parse_spec
from scaling.study.plan import plan_ladder
from scaling.train.memory import MEMORY_HEADROOM, estimate_memory


def spec(**extra) -> dict:
    out = {"name": "unit", "data": {"seq_len": 128},
           "architectures": [{"name": "transformer"}, {"name": "swla+grm", "segment_lens": [32]}],
           "ladder": {"sizes": ["20K", "80K"], "head_dim": 16}, "budget": {"tokens_per_param": 4},
           "optimizer": {"batch_tokens": 2048}}
    out.update(extra)
    return out


@pytest.mark.parametrize("extra, field", [
    (dict(trainer={"device": "cpu"}, resources={"gpus_per_trial": 1}), "trainer.device"),
    (dict(resources={"gpus_per_trial": 1.5}), "resources.gpus_per_trial"),
    (dict(resources={"gpus_per_trial": 2, "workers_per_trial": 4}), "resources.gpus_per_trial"),
    (dict(resources={"gpus_per_trial": 2, "workers_per_trial": 1}), "resources.workers_per_trial"),
    (dict(resources={"workers_per_trial": 3}), "optimizer.batch_tokens"),
    (dict(trainer={"micro_batch_tokens": 100}), "trainer.micro_batch_tokens"),
    (dict(trainer={"micro_batch_tokens": 128 * 3}), "trainer.micro_batch_tokens"),
    (dict(trainer={"precision": "fp16"}), "trainer.precision"),
    (dict(resources={"by_size": [{"min_params": "50K", "gpus_per_trial": 2.5}]}), "resources.by_size[0]"),
    (dict(trainer={"device": "cpu"}, resources={"by_size": [{"min_params": "50K", "gpus_per_trial": 1}]}),
     "trainer.device"),
])
def test_bad_trainer_and_resource_settings_name_the_field(extra, field):
    with pytest.raises(UserInputError) as err:
        parse_spec(spec(**extra))
    assert err.value.field == field, str(err.value)


def test_resources_differ_per_rung():
    study = parse_spec(spec(resources={"cpus_per_trial": 2, "gpus_per_trial": 0.25, "accelerator_type": "A100-80G",
                                       "by_size": [{"min_params": "50K", "gpus_per_trial": 4, "cpus_per_trial": 6}]}))
    trials = {(t.arch, t.size_label): t for t in plan_ladder(study)}
    small, large = trials[("transformer", "20K")], trials[("transformer", "80K")]
    assert small.resources.tune_request() == {"cpu": 2, "gpu": 0.25, "accelerator_type:A100-80G": 0.001}
    assert small.config.workers == 1 and small.resources.gpu_memory_bytes == pytest.approx(0.25 * 80e9)
    assert large.config.workers == 4 and large.resources.gpus_per_worker == 1
    assert large.resources.cpus == 6 and large.config.threads == 6
    assert large.resources.tune_request() == {"cpu": 0, "memory": 1_000_000}  # the Train workers hold the GPUs


def test_auto_micro_batch_is_the_largest_that_fits_the_gpu():
    study = parse_spec(spec(data={"seq_len": 512}, optimizer={"batch_tokens": 512 * 64},
                            ladder={"sizes": ["2M"], "head_dim": 64},
                            trainer={"precision": "bf16", "micro_batch_tokens": "auto"},
                            resources={"gpus_per_trial": 1, "gpu_memory_gb": 2}))
    for trial in plan_ladder(study):
        cfg = trial.config
        micro = cfg.micro_batch_size()
        assert micro < 64 and 64 % micro == 0
        fits = estimate_memory(cfg.model, micro, "bf16").total_bytes
        too_big = estimate_memory(cfg.model, micro * 2, "bf16").total_bytes
        assert fits <= MEMORY_HEADROOM * 2e9 < too_big, trial.trial_id


def test_auto_settings_without_a_known_gpu_memory_are_refused():
    study = parse_spec(spec(trainer={"micro_batch_tokens": "auto"}, resources={"gpus_per_trial": 1}))
    with pytest.raises(UserInputError) as err:
        plan_ladder(study)
    assert err.value.field == "resources.accelerator_type"


def test_cpu_trials_keep_the_whole_batch_and_fp32_by_default():
    for trial in plan_ladder(parse_spec(spec())):
        cfg = trial.config
        assert (cfg.device, cfg.precision, cfg.micro_batch_tokens, cfg.workers) == ("auto", "fp32", None, 1)


def test_planning_measures_each_distinct_shape_once():
    """Seeds, micro-batch candidates and the tune template repeat a shape; the memory estimate's meta
    pass runs once per shape (one per architecture here), every other lookup is a cache hit."""
    from scaling.train.memory import _cached_profile, profile_cache_info

    study = parse_spec(spec(seeds=[0, 1, 2], ladder={"sizes": ["20K"], "head_dim": 16},
                            trainer={"precision": "bf16", "micro_batch_tokens": "auto"},
                            resources={"gpus_per_trial": 1, "gpu_memory_gb": 0.05}))
    _cached_profile.cache_clear()
    trials = plan_ladder(study)
    assert len(trials) == 2 * 3
    info = profile_cache_info()
    assert info.misses == 2 and info.hits + info.misses >= len(trials)  # every seed's trial looked it up
