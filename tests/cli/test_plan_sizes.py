"""`mcscale plan` shows each rung's name with the size its model actually has (`48K (47.6K)`), and
counts the extra seeds of `seeds_at` rungs in its rows and its total (issue 21)."""

from __future__ import annotations

import copy

import yaml
from typer.testing import CliRunner

from scaling.cli.app import app
from scaling.models.ladder import count_params, format_count
from scaling.spec import parse_spec
from scaling.study.plan import plan_ladder

SPEC = {"name": "sizes", "data": {"seq_len": 64, "evals": {"every_steps": 10, "val_windows": 2}},
        "architectures": [{"name": "transformer"}, {"name": "swla+grm", "segment_lens": [32]}],
        "ladder": {"sizes": ["8K", "16K", "32K"], "head_dim": 8, "aspect": 16, "aspect_weight": 0.2},
        "budget": {"tokens_per_param": 3}, "optimizer": {"batch_tokens": 256}, "seeds": [0]}


def _plan(tmp_path, raw: dict) -> dict[str, list[str]]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["plan", str(path), "--no-memory"])
    assert result.exit_code == 0, result.output
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in result.output.splitlines()
            if line.startswith("│ ")]
    assert "size (actual)" in result.output
    return {"rows": rows, "total": [line for line in result.output.splitlines() if line.startswith("total:")]}


def test_each_row_shows_the_rung_and_the_actual_non_embedding_parameters(tmp_path):
    out = _plan(tmp_path, SPEC)
    expected = {t.trial_id: f"{t.size_label} ({format_count(count_params(t.config.model)['params_nonembed'])})"
                for t in plan_ladder(parse_spec(SPEC))}
    shown = {row[0]: row[1] for row in out["rows"]}
    assert shown == expected
    assert shown["ladder-swla_grm-c32-8k-s0"] == "8K (7.99K)"  # 7 layers x 8: within 10% of its rung
    assert len(out["total"]) == 1 and out["total"][0].startswith(f"total: {len(expected)} trials, ")


def test_extra_seeds_are_planned_rows_and_counted_in_the_total(tmp_path):
    raw = copy.deepcopy(SPEC)
    raw["seeds_at"] = {"32K": [0, 1, 2]}
    out = _plan(tmp_path, raw)
    ids = [row[0] for row in out["rows"]]
    assert len(ids) == 2 * (1 + 1 + 3)
    assert {"ladder-transformer-cna-32k-s1", "ladder-transformer-cna-32k-s2", "ladder-swla_grm-c32-32k-s2"} <= set(ids)
    assert "ladder-transformer-cna-16k-s1" not in ids
    assert out["total"][0].startswith("total: 10 trials, ")
