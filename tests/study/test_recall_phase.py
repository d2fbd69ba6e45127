"""The recall phase: the `recall:` block plans one MQAR-trained trial per architecture x segment length
x context x width x seed, with exact bytes per sequence; it runs through the study's Ray Tune driver
into Parquet and MLflow as phase `recall`, is never rerun once finished, and the report leads with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scaling.errors import UserInputError
from scaling.models.flops import sequence_bytes
from scaling.models.ladder import count_params
from scaling.spec import load_spec, parse_spec
from scaling.study.plan import plan_ladder
from scaling.study.recall import chance_levels, plan_recall
from scaling.study.store import ResultStore
from scaling.study.tracking import StudyTracker

STUDIES = Path(__file__).resolve().parents[2] / "studies"


def recall_block(**extra) -> dict:
    block = {"architectures": [{"name": "transformer"}, {"name": "swla"},
                               {"name": "swla+grm", "segment_lens": [8, 16]}],
             "widths": [16, 32], "seq_lens": [32, 64], "mqar": {"n_pairs": 4, "key_vocab": 8, "value_vocab": 8},
             "steps": 6, "batch_size": 4, "eval_examples": 8}
    block.update(extra)
    return block


def recall_only(name: str, storage: str, **extra) -> dict:
    return {"name": name, "recall": recall_block(**extra), "resources": {"cpus_per_trial": 1}, "concurrency": 2,
            "storage": storage}


def test_plan_expands_the_grid_with_stable_ids_and_exact_bytes():
    spec = parse_spec(recall_only("r", "/tmp/unused"))
    trials = plan_recall(spec)
    # (transformer + swla + 2 segment lengths of grm) x 2 contexts x 2 widths x 1 seed
    assert len(trials) == 4 * 2 * 2 and len({t.trial_id for t in trials}) == 16
    assert [t.trial_id for t in trials] == [t.trial_id for t in plan_recall(spec)]
    assert [t.config_hash for t in trials] == [t.config_hash for t in plan_recall(spec)]
    assert plan_ladder(spec) == []  # a recall-only study has no ladder
    for t in trials:
        cfg = t.config
        assert t.phase == "recall" and t.tags["phase"] == "recall" and cfg.task == "mqar"
        assert cfg.mqar.seq_len == cfg.model.seq_len == int(t.tags["context_len"])
        assert cfg.model.d_model == int(t.tags["d_model"]) and cfg.model.n_layers == 2
        assert cfg.model.vocab_size == 1 + 8 + 8 and cfg.tokens == 6 * 4 * cfg.model.seq_len
        assert int(t.tags["sequence_bytes"]) == round(sequence_bytes(cfg.model).total_bytes)
        assert int(t.tags["params_nonembed"]) == count_params(cfg.model)["params_nonembed"]
        assert cfg.workers == 1 and cfg.weight_decay == 0.0 and cfg.mqar_eval_batch == 8
    grm = [t for t in trials if t.arch == "swla+grm" and t.tags["context_len"] == "64"]
    assert sorted({t.n_segments for t in grm}) == [4, 8]
    changed = plan_recall(parse_spec(recall_only("r", "/tmp/unused", lr=0.02)))
    assert [t.trial_id for t in changed] == [t.trial_id for t in trials]  # same trials ...
    assert all(a.config_hash != b.config_hash for a, b in zip(changed, trials))  # ... told apart when edited


def test_chance_is_guessing_among_the_values_not_yet_answered():
    spec = parse_spec(recall_only("r", "/tmp/unused", mqar={"n_pairs": 8, "key_vocab": 8, "value_vocab": 16}))
    levels = chance_levels(spec.recall)
    assert levels["in_context"] == pytest.approx(sum(1 / k for k in range(1, 9)) / 8)  # 34.0%
    assert levels["one_of_pairs"] == 1 / 8 and levels["vocabulary"] == 1 / 16
    spec = parse_spec(recall_only("r", "/tmp/unused", mqar={"n_pairs": 8, "n_queries": 2, "key_vocab": 8,
                                                            "value_vocab": 8}))
    assert chance_levels(spec.recall)["in_context"] == pytest.approx((1 / 8 + 1 / 7) / 2)


@pytest.mark.parametrize("mutate, field", [
    (lambda b: b["architectures"][2].update(segment_lens=[24]), "recall.architectures[2].segment_lens[0]"),
    (lambda b: b["architectures"][1].update(segment_lens=[8]), "recall.architectures[1].segment_lens"),
    (lambda b: b.update(widths=[12]), "recall.widths[0]"),
    (lambda b: b.update(seq_lens=[8]), "recall.seq_lens[0]"),
    (lambda b: b["mqar"].update(n_pairs=12), "recall.mqar.key_vocab"),
])
def test_bad_recall_blocks_name_the_field(mutate, field):
    spec = recall_only("r", "/tmp/unused")
    mutate(spec["recall"])
    with pytest.raises(UserInputError) as err:
        parse_spec(spec)
    assert err.value.field == field


def test_a_study_needs_a_ladder_or_a_recall_block():
    with pytest.raises(UserInputError) as err:
        parse_spec({"name": "x", "storage": "/tmp/unused"})
    assert err.value.field == "ladder"
    with pytest.raises(UserInputError) as err:  # a ladder without architectures
        parse_spec({"name": "x", "ladder": {"sizes": ["20K"]}, "budget": {"tokens": "20K"}})
    assert err.value.field == "architectures"


@pytest.mark.parametrize("name", ["quickstart.yaml", "recall.yaml"])
def test_the_shipped_studies_plan_a_recall_phase(name):
    spec = load_spec(STUDIES / name)
    trials = plan_recall(spec)
    archs = {t.arch for t in trials}
    assert {"transformer", "swla", "swla+grm"} <= archs
    assert len({t.tags["d_model"] for t in trials}) >= 2
    if name == "recall.yaml":  # every base memory, with and without MC, several segment lengths
        assert {"swla", "dla", "titans", "swla+grm", "dla+grm", "titans+grm", "swla+ssc"} <= archs
        assert len({t.segment_len for t in trials if t.arch == "swla+grm"}) >= 2


def test_recall_study_runs_end_to_end_records_phase_recall_and_is_not_rerun(tmp_path):
    storage = tmp_path / "runs"
    spec = recall_only("recall-e2e", str(storage), architectures=[{"name": "transformer"},
                                                                   {"name": "swla+grm", "segment_lens": [16]}],
                       widths=[16], seq_lens=[32])
    path = tmp_path / "recall.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "scaling", "run", str(path)], capture_output=True, text=True,
                         timeout=400, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    planned = plan_recall(parse_spec(spec))
    store = ResultStore(str(storage), spec["name"])
    trials = store.read_trials()
    assert sorted(trials["trial_id"]) == sorted(p.trial_id for p in planned)
    assert set(trials["phase"]) == {"recall"} and set(trials["status"]) == {"completed"}
    assert trials["mqar_acc"].between(0, 1).all() and (trials["step"] == 6).all()
    tracker = StudyTracker(f"sqlite:///{storage / spec['name'] / 'mlflow.db'}", spec["name"])
    runs = tracker.runs()
    trial_runs = runs[runs["tags.mcscale.role"] == "trial"]
    assert sorted(trial_runs["tags.trial_id"]) == sorted(p.trial_id for p in planned)
    assert set(trial_runs["tags.phase"]) == {"recall"} and set(trial_runs["status"]) == {"FINISHED"}
    assert set(trial_runs["tags.sequence_bytes"]) == {p.tags["sequence_bytes"] for p in planned}
    phase = runs[(runs["tags.mcscale.role"] == "phase") & (runs["tags.phase"] == "recall")]
    assert len(phase) == 1 and phase.iloc[0]["status"] == "FINISHED"
    report = json.loads(store.read_text("report/report.json"))
    assert sorted(p["trial_id"] for p in report["recall"]) == sorted(p.trial_id for p in planned)
    assert "Recall: models trained on MQAR" in store.read_text("report/report.md")
    assert "recall after training on MQAR" in run.stdout  # the closing note's recall table

    recorded = dict(zip(trials["trial_id"], trials["recorded_at"]))
    again = subprocess.run([sys.executable, "-m", "scaling", "run", str(path)], capture_output=True, text=True,
                           timeout=400, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = store.read_trials()
    assert dict(zip(after["trial_id"], after["recorded_at"])) == recorded  # finished trials are not rerun
    runs = tracker.runs()
    assert len(runs[runs["tags.mcscale.role"] == "trial"]) == len(planned)
