"""A study is one thing: a changed spec under an existing name is refused (or explicitly extends the
study), spec.yaml is never overwritten by a different spec, and `resume --storage X` reads and writes X.

Recorded studies are written through the real `ResultStore` with the trials the spec plans (their
real config hashes), so no training is needed to test what happens when a study is started again.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scaling.errors import UserInputError
from scaling.spec import parse_spec
from scaling.study.identity import check_resume, claim, describe, differences
from scaling.study.plan import plan_ladder
from scaling.study.store import ResultStore, trial_row


def _spec(name: str, storage: str) -> dict:
    return {"name": name,
            "data": {"corpus": {"source": "builtin", "max_bytes": 200_000}, "seq_len": 128,
                     "evals": {"every_steps": 5, "val_windows": 1}},
            "architectures": [{"name": "transformer"}, {"name": "swla+grm", "segment_lens": [32]}],
            "ladder": {"sizes": ["20K"], "head_dim": 16}, "budget": {"tokens": "5K"},
            "optimizer": {"batch_tokens": 512}, "resources": {"cpus_per_trial": 1}, "concurrency": 1,
            "storage": storage}


def _record(raw: dict, text: str | None = None) -> ResultStore:
    """A study as `mcscale run` leaves it: spec.yaml, study.json and every planned trial completed."""
    store = ResultStore(raw["storage"], raw["name"])
    store.write_text("spec.yaml", text or yaml.safe_dump(raw, sort_keys=False))
    store.write_json("study.json", {"name": raw["name"], "status": "ladder-complete"})
    for p in plan_ladder(parse_spec(raw)):
        store.write_trial(p.trial_id, trial_row(p.trial_id, "ladder", p.tags, {"status": "completed", "step": 10,
                                                                               "val_loss": 5.0}, p.config.to_dict()))
    return store


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_differences_name_each_changed_field_and_ignore_formatting_and_location(tmp_path):
    raw = _spec("same", str(tmp_path / "a"))
    changed = copy.deepcopy(raw)
    changed["data"]["seq_len"] = 64
    changed["storage"] = str(tmp_path / "b")  # where it was found is not what it is
    diffs = differences(parse_spec(raw), parse_spec(changed))
    assert [d[0] for d in diffs] == ["data.seq_len"] and describe(diffs) == "data.seq_len: 128 -> 64"

    store = _record(raw, "# my study\n" + yaml.safe_dump(raw, sort_keys=True))
    before = store.read_text("spec.yaml")
    claim(store, parse_spec(raw), yaml.safe_dump(raw, sort_keys=False))  # the same study, written differently
    assert store.read_text("spec.yaml") == before  # kept as recorded


def test_a_changed_spec_under_a_recorded_name_exits_2_and_changes_nothing(tmp_path):
    raw = _spec("changed", str(tmp_path / "runs"))
    _record(raw)
    before = _files(tmp_path / "runs")
    changed = copy.deepcopy(raw)
    changed["data"]["seq_len"] = 64
    changed["budget"]["tokens"] = "6K"
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    result = subprocess.run([sys.executable, "-m", "scaling", "run", str(path), "--no-report"], capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "data.seq_len: 128 -> 64" in result.stderr and "budget.tokens: 5000 -> 6000" in result.stderr
    assert "--extend" in result.stderr and "Traceback" not in result.stderr
    assert _files(tmp_path / "runs") == before  # spec.yaml, study.json and the trials untouched

    with pytest.raises(UserInputError) as err:  # --extend does not cover changed training settings
        claim(ResultStore(raw["storage"], raw["name"]), parse_spec(changed), path.read_text(), extend=True)
    assert err.value.field == "--extend" and "data.seq_len: 128 -> 64" in str(err.value)
    assert _files(tmp_path / "runs") == before


def test_extend_adds_trials_keeps_the_recorded_ones_and_refuses_anything_else(tmp_path):
    raw = _spec("grow", str(tmp_path / "runs"))
    store = _record(raw)
    old_text = store.read_text("spec.yaml")
    grown = copy.deepcopy(raw)
    grown["ladder"]["sizes"] = ["20K", "40K"]
    grown["architectures"][1]["segment_lens"] = [32, 64]
    grown["architectures"].append({"name": "swla"})
    grown["description"] = "now with swla"
    with pytest.raises(UserInputError) as err:  # without --extend: refused
        claim(store, parse_spec(grown), yaml.safe_dump(grown))
    assert "ladder.sizes" in str(err.value) and "architectures" in str(err.value)
    claim(store, parse_spec(grown), yaml.safe_dump(grown), extend=True)
    assert parse_spec(yaml.safe_load(store.read_text("spec.yaml"))) == parse_spec(grown)
    assert store.read_text("spec-1.yaml") == old_text  # the previous spec is kept beside it

    shrunk = copy.deepcopy(grown)
    shrunk["ladder"]["sizes"] = ["40K"]  # the recorded 20K trials would no longer belong to the spec
    with pytest.raises(UserInputError) as err:
        claim(store, parse_spec(shrunk), yaml.safe_dump(shrunk), extend=True)
    assert "ladder.sizes: entries were changed or removed" in str(err.value)

    # a recorded trial whose settings differ from what the spec plans (whatever the field) is never reused
    trial = store.read_trials().iloc[0]
    store.write_trial(trial["trial_id"], {**trial.to_dict(), "config_hash": "0" * 16})
    more = copy.deepcopy(grown)
    more["seeds"] = [0, 1]
    with pytest.raises(UserInputError) as err:
        claim(store, parse_spec(more), yaml.safe_dump(more), extend=True)
    assert "would train differently" in str(err.value) and trial["trial_id"] in str(err.value)
    assert store.read_text("spec-2.yaml") is None


def test_resume_reads_and_writes_the_storage_it_is_given(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    raw = _spec("moved", str(first))  # the recorded spec names `first`
    _record(raw)
    shutil.copytree(first, second)
    before = _files(first)
    result = subprocess.run([sys.executable, "-m", "scaling", "resume", "moved", "--storage", str(second),
                             "--no-report"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _files(first) == before  # the other copy: not one byte changed, no MLflow store made there
    state = ResultStore(str(second), "moved").read_json("study.json")
    assert state["mlflow"]["tracking_uri"] == f"sqlite:///{second / 'moved' / 'mlflow.db'}"
    assert (second / "moved" / "mlflow.db").is_file() and not (tmp_path / "mcscale-runs").exists()
    assert "2 trials (2 completed)" in result.stdout

    (second / "other").mkdir()
    (second / "other" / "spec.yaml").write_text((second / "moved" / "spec.yaml").read_text())
    with pytest.raises(UserInputError) as err:  # a folder holding another study's spec
        check_resume(ResultStore(str(second), "other"), "other", parse_spec(raw))
    assert "'moved', not 'other'" in str(err.value)
