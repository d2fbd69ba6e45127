"""Study specs: validation names the YAML path; plans are stable; the shipped studies are sound."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scaling.errors import UserInputError
from scaling.models.ladder import parse_size
from scaling.spec import load_spec, parse_spec
from scaling.study.plan import plan_ladder, plan_tune, tune_series

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def base_spec(**extra) -> dict:
    spec = {"name": "unit", "data": {"seq_len": 128},
            "architectures": [{"name": "transformer"}, {"name": "swla+grm", "segment_lens": [32, 64]}],
            "ladder": {"sizes": ["20K", "40K"], "head_dim": 16}, "budget": {"tokens_per_param": 4}}
    spec.update(extra)
    return spec


@pytest.mark.parametrize("mutate, field", [
    (lambda s: s.update(name="Bad Name!"), "name"),
    (lambda s: s["architectures"].append({"name": "mamba"}), "architectures[2].name"),
    (lambda s: s["architectures"][1].update(segment_lens=[48]), "architectures[1].segment_lens[0]"),
    (lambda s: s["architectures"][0].update(segment_lens=[32]), "architectures[0].segment_lens"),
    (lambda s: s.update(budget={"tokens": "1M", "tokens_per_param": 20}), "budget"),
    (lambda s: s["ladder"].update(sizes=["10Q"]), "ladder.sizes[0]"),  # the path names the bad entry
    (lambda s: s.update(resources={"cpus_per_trial": 0}), "resources.cpus_per_trial"),
    (lambda s: s.update(colour="blue"), "colour"),
    (lambda s: s.pop("ladder"), "ladder"),
    (lambda s: s.update(data={"seq_len": 128, "evals": {"needle": {"lengths": [256]}}}),
     "data.evals.needle.lengths[0]"),
    (lambda s: s.update(seeds=[0, 0]), "seeds"),
])
def test_bad_specs_name_the_yaml_path(mutate, field):
    spec = base_spec()
    mutate(spec)
    with pytest.raises(UserInputError) as err:
        parse_spec(spec)
    assert err.value.field == field, str(err.value)
    assert "Fix:" in str(err.value)


def test_sizes_that_collapse_to_one_shape_are_rejected():
    spec = parse_spec(base_spec(ladder={"sizes": ["16K", "17K"], "head_dim": 16}))
    with pytest.raises(UserInputError) as err:
        plan_ladder(spec)
    assert err.value.field == "ladder.sizes"


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\narchitectures: [\n")
    with pytest.raises(UserInputError) as err:
        load_spec(path)
    assert "line" in err.value.problem


def test_plan_is_stable_and_expands_segment_lengths():
    spec = parse_spec(base_spec(seeds=[0, 1]))
    first, second = plan_ladder(spec), plan_ladder(spec)
    assert [t.trial_id for t in first] == [t.trial_id for t in second]
    assert [t.config_hash for t in first] == [t.config_hash for t in second]
    assert len(first) == (1 + 2) * 2 * 2  # (transformer + 2 GRM series) x sizes x seeds
    grm = [t for t in first if t.arch == "swla+grm"]
    assert {t.segment_len for t in grm} == {"32", "64"} and {t.n_segments for t in grm} == {4, 2}
    assert all(t.tags["params_nonembed"].isdigit() for t in first)


def test_tuned_lr_carries_across_widths_by_the_documented_rule():
    spec = parse_spec(base_spec(tune={"proxy_size": "20K", "tokens": "50K"}))
    templates = {plan_tune(spec, a, s).arch: plan_tune(spec, a, s) for a, s in tune_series(spec)}
    proxy = templates["transformer"].config.model.d_model
    tuned = {"transformer": {"lr": 0.01, "proxy_width": proxy}}
    for trial in plan_ladder(spec, tuned):
        if trial.arch == "transformer":
            assert trial.config.lr == pytest.approx(0.01 * proxy / trial.config.model.d_model)
        else:
            assert trial.config.lr == spec.optimizer.lr


def test_quickstart_is_the_study_the_issue_asks_for():
    spec = load_spec(STUDIES / "quickstart.yaml")
    trials = plan_ladder(spec)
    archs = {t.arch for t in trials}
    assert {"transformer", "swla", "swla+grm", "swla+ssc"} <= archs
    sizes = sorted(spec.ladder.sizes)
    assert len(sizes) >= 5 and sizes[-1] / sizes[0] >= 10
    assert len({t.segment_len for t in trials if t.arch == "swla+grm"}) >= 2
    assert spec.data.evals.mqar is not None and spec.data.evals.needle is not None
    assert spec.data.corpus.source == "builtin"
    params = sorted({int(t.tags["params_nonembed"]) for t in trials if t.arch == "transformer"})
    assert len(params) == len(sizes) and params[-1] / params[0] >= 10


@pytest.mark.parametrize("name", ["paper-ladder.yaml", "segment-sweep.yaml"])
def test_gpu_cluster_studies_plan(name):
    spec = load_spec(STUDIES / name)
    trials = plan_ladder(spec)
    assert trials and spec.resources.gpus_per_trial >= 1
    assert spec.data.seq_len == 4096
    if name == "paper-ladder.yaml":
        shapes = {t.size_label: (t.config.model.n_layers, t.config.model.d_model) for t in trials}
        assert shapes["760M"] == (24, 1536) and shapes["1.3B"] == (18, 2048)
        assert min(spec.ladder.sizes) == parse_size("125M")
        assert any(t.segment_len == "256" for t in trials)
        assert len({t.segment_len for t in trials if t.arch == "swla+grm"}) >= 3
