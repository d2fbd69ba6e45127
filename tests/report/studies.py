"""Synthetic studies written into a real `ResultStore`, for the report's analysis and CLI tests.

Why synthetic but real: the trials are the study's own planned trials (exact parameter counts
and exact per-architecture FLOPs from `plan_ladder`), written through the same `trial_row` /
`write_trial` path the study driver uses; only the validation loss comes from a known law, so
the tests can check that the report recovers what was put in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from scaling.models.flops import training_flops_per_token
from scaling.spec import parse_spec
from scaling.study.plan import PlannedTrial, plan_ladder
from scaling.study.store import ResultStore, trial_row

E_TRUE = 1.9
ALPHA_TRUE = 0.3
#: the law's A per series: lower is better
A_TRUE = {"transformer": 2000.0, "swla+grm@C32": 1700.0, "swla+grm@C64": 1800.0, "swla+ssc@C32": 1900.0}


def spec_dict(name: str, storage: str, sizes: list[str] | None = None, **extra) -> dict:
    spec = {
        "name": name,
        "data": {"corpus": {"source": "builtin"}, "seq_len": 256,
                 "evals": {"every_steps": 40, "val_windows": 2,
                           "mqar": {"n_pairs": 4, "n_queries": 4, "key_vocab": 16, "value_vocab": 16},
                           "needle": {"lengths": [256], "depths": [0.5]}}},
        "architectures": [{"name": "transformer"}, {"name": "swla+grm", "segment_lens": [32, 64]},
                          {"name": "swla+ssc", "segment_lens": [32], "top_k": 2}],
        "ladder": {"sizes": sizes or ["8K", "16K", "32K", "64K", "128K"], "head_dim": 8, "aspect": 16,
                   "aspect_weight": 0.2},
        "budget": {"tokens_per_param": 20},
        "storage": storage,
        "fit": {"law": "power", "x": "compute", "bootstrap": 60, "target_sizes": ["1.3B", "7B", "70B"]},
    }
    spec.update(extra)
    return spec


def power_loss(series: str, flops: float, tokens: float, params: float) -> float:
    return E_TRUE + A_TRUE[series] * flops ** -ALPHA_TRUE


def write_study(storage: Path | str, name: str, *, sizes: list[str] | None = None, noise: float = 0.003, seed: int = 0,
                loss: Callable[[str, float, float, float], float] = power_loss,
                tokens_factor: Callable[[int], float] | None = None,
                status: Callable[[str], str] | None = None, curve_steps: tuple[int, ...] = (40, 80, 100),
                curve_noise: float = 0.0, extra_metrics: Callable[[PlannedTrial], dict] | None = None,
                **extra) -> ResultStore:
    """Write spec.yaml, one trial row and a val_loss curve per planned trial; returns the store.

    ``tokens_factor(i)`` scales the i-th trial's tokens (to vary D at fixed N for chinchilla fits);
    ``status(trial_id)`` may mark trials diverged/running. The curve is evaluated at
    ``curve_steps`` (of 100), smooth towards the final loss, each evaluation off it by a log
    factor ``curve_noise * N(0, 1)`` (the checkpoint scatter `scaling.fit.noise` measures).
    ``extra_metrics(planned)`` adds final metrics to a trial's row (e.g. the evaluation's diagnostics).
    """
    raw = spec_dict(name, str(storage), sizes, **extra)
    spec = parse_spec(raw)
    store = ResultStore(str(storage), name, extra.get("s3_endpoint"))
    store.write_text("spec.yaml", yaml.safe_dump(raw, sort_keys=False))
    store.write_json("study.json", {"name": name, "status": "ladder-complete"})
    rng = np.random.default_rng(seed)
    curve_rng = np.random.default_rng(seed + 1)  # its own stream: the final losses do not depend on the curves
    for i, planned in enumerate(plan_ladder(spec)):
        cfg = planned.config
        params = float(planned.tags["params_nonembed"])
        tokens = float(cfg.tokens_per_param * params * (tokens_factor(i) if tokens_factor else 1.0))
        per_token = training_flops_per_token(cfg.model)
        flops = per_token * tokens
        value = loss(planned.series, flops, tokens, params) * math.exp(noise * rng.standard_normal())
        state = status(planned.trial_id) if status else "completed"
        metrics = {"status": state, "step": 100, "total_steps": 100, "tokens": int(tokens), "flops": flops,
                   "flops_per_token": per_token, "params_nonembed": int(params), "val_loss": value,
                   "mqar_acc": min(1.0, 0.05 * math.log2(params / 4000)), "needle_acc_256": 0.5}
        if extra_metrics is not None:
            metrics.update(extra_metrics(planned))
        if state == "diverged":
            metrics.update(diverged_step=37, val_loss=float("nan"))
        store.write_trial(planned.trial_id, trial_row(planned.trial_id, "ladder", planned.tags, metrics, cfg.to_dict()))
        store.write_curves(planned.trial_id, [
            {"trial_id": planned.trial_id, "step": step, "tokens": int(tokens * step / 100),
             "flops": flops * step / 100, "metric": "val_loss",
             "value": (value + 0.5 * (100 - step) / 100) * (1.0 if step == 100 else math.exp(curve_noise * curve_rng.standard_normal()))}
            for step in curve_steps])
    return store


def file_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` except the report's own, to prove a report changes nothing else."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "report" not in p.relative_to(folder).parts and not p.name.startswith("mlflow.db")
            and "mlartifacts" not in p.parts}
