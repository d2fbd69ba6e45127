"""Benchmark: does each Memory Caching strategy beat, match or trail the memory it wraps?

Paired comparisons at quickstart scale (the quickstart's corpus, sequence length, ladder rule,
optimiser and evaluation; `studies/quickstart.yaml`): every MC series and its base (swla) train
under the same seeds - the same data order and, by the model's paired initialisation, the same
shared starting weights - so each seed gives one paired difference, MC minus base, in validation
loss (nats/token). Printed per (size, budget) cell and series: the mean paired difference, its
95% seed interval (t over the seeds), the online memory's gate mass (mean over layers and
segments, and in the last segment) and, where the evaluation records it, the per-position
difference. Each gated strategy runs twice: with the online-gate bias's default rule and with
`online_gate_init: 0` (the paper's plain softmax), so the table shows what the bias changes.

The same runs calibrate the seed-noise proxy (`scaling.fit.noise`): for every (series, size,
budget) the seed standard deviation of the final loss beside the late-checkpoint scatter of the
runs, and their ratio; the pooled ratio is `SEED_TO_CHECKPOINT_SD_RATIO`.

Run: ``python benchmarks/mc_vs_base.py`` (4 cells x 3 seeds; about 30-40 minutes on 2 idle
cores, ``--jobs`` runs at a time, one thread each), ``--quick`` (CI smoke: one tiny cell, 2 seeds,
a few seconds per run). ``--help`` for the options.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scaling.fit.noise import late_residuals  # noqa: E402
from scaling.models.ladder import format_count  # noqa: E402
from scaling.spec import parse_spec  # noqa: E402
from scaling.study.plan import PlannedTrial, plan_ladder  # noqa: E402
from scaling.train import TrialConfig, run_trial  # noqa: E402

BASE = "swla"
#: series -> architecture entry of the spec; the gated ones also run with online_gate_init 0
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "transformer": {"name": "transformer"},
    "swla": {"name": "swla"},
    "swla+residual@C32": {"name": "swla+residual", "segment_lens": [32]},
    "swla+grm@C32": {"name": "swla+grm", "segment_lens": [32]},
    "swla+grm@C64": {"name": "swla+grm", "segment_lens": [64]},
    "swla+ssc@C32": {"name": "swla+ssc", "segment_lens": [32], "top_k": 2},
}
GATED = ("grm", "ssc", "soup")
PLAIN = " (plain softmax)"


def spec_for(archs: list[dict[str, Any]], sizes: list[str], seeds: list[int], tokens_per_param: float,
             quick: bool) -> dict[str, Any]:
    """The quickstart's study spec with these architectures, sizes, seeds and budget, no recall or fit."""
    spec = yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())
    spec.pop("recall", None)
    spec.pop("fit", None)
    spec.pop("seeds_at", None)
    spec["data"]["evals"].pop("mqar", None)
    spec["data"]["evals"].pop("needle", None)
    spec.update(architectures=archs, seeds=seeds, budget={"tokens_per_param": tokens_per_param})
    spec["ladder"]["sizes"] = sizes
    if quick:
        spec["data"]["seq_len"] = 64
        spec["data"]["evals"]["every_steps"] = 2
        spec["optimizer"]["batch_tokens"] = 256
    return spec


def jobs_for(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run as a picklable job: (series label, size label, budget, seed, TrialConfig)."""
    jobs = []
    series = [s for s in args.series.split(",") if s]
    for tpp in args.budgets:
        for plain in (False, True):
            archs, labels = [], {}
            for name in series:
                entry = dict(ARCHITECTURES[name])
                gated = any(g in entry["name"] for g in GATED)
                if plain and not gated:
                    continue
                if plain:
                    entry["online_gate_init"] = 0
                archs.append(entry)
                labels[name] = name + (PLAIN if plain else "")
            spec = parse_spec(spec_for(archs, args.sizes, args.seeds, tpp, args.quick), "mc_vs_base")
            for trial in plan_ladder(spec):
                label = labels.get(trial.series, trial.series + (PLAIN if plain else ""))
                jobs.append(dict(series=label, size=trial.size_label, tpp=tpp, seed=trial.seed,
                                 params=int(trial.tags["params_nonembed"]), config=_single_thread(trial)))
    return jobs


def _single_thread(trial: PlannedTrial) -> TrialConfig:
    from dataclasses import replace

    return replace(trial.config, threads=1, checkpoint_dir=None)


def one_run(job: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    result = run_trial(job["config"])
    evals = [h for h in result.history if "val_loss" in h]
    r = late_residuals([h["step"] for h in evals], [h["val_loss"] for h in evals])
    metrics = result.metrics
    gate = {k: float(v) for k, v in metrics.items() if k.startswith("online_gate_seg")}
    positions = {k: float(v) for k, v in metrics.items() if k.startswith("val_loss_pos")}
    out = {k: v for k, v in job.items() if k != "config"}
    out.update(loss=float(metrics["val_loss"]), status=result.status, seconds=time.perf_counter() - started,
               ckpt_ss=float(np.sum(r * r)) if r is not None else math.nan,
               ckpt_dof=int(r.size - 3) if r is not None else 0, gate=gate, positions=positions)
    return out


def _ci(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of `values` with a t interval over them (nan bounds with one value)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def _gate_summary(gate: dict[str, float]) -> tuple[float, float]:
    """(mean over segments of the online gate mass, its value in the last segment); nan if not recorded."""
    if not gate:
        return math.nan, math.nan
    ordered = [gate[k] for k in sorted(gate, key=lambda k: int(k.rsplit("seg", 1)[1]))]
    return float(np.mean(ordered)), ordered[-1]


def print_tables(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The paired table per cell and the noise calibration; returns the numbers (for tests)."""
    cells = sorted({(r["size"], r["tpp"]) for r in rows}, key=lambda c: (c[1], float(c[0].rstrip("K")) if c[0].endswith("K") else 0))
    summary: dict[str, Any] = {"cells": {}, "noise": []}
    for size, tpp in cells:
        here = [r for r in rows if r["size"] == size and r["tpp"] == tpp]
        base = {r["seed"]: r for r in here if r["series"] == BASE}
        print(f"\n{size} rung, {tpp:g} tokens/param ({len(base)} seeds); MC minus {BASE}, paired by seed, nats/token")
        print(f"{'series':<36}{'params':>8}{'seeds':>6}{'loss':>8}{'paired diff':>12}{'95% seed interval':>22}"
              f"{'beyond?':>9}{'gate':>7}{'last':>7}")
        cell: dict[str, Any] = {}
        for name in _ordered(here):
            mine = {r["seed"]: r for r in here if r["series"] == name}
            seeds = sorted(set(mine) & set(base))
            diffs = [mine[s]["loss"] - base[s]["loss"] for s in seeds]
            mean, low, high = _ci(diffs) if diffs else (math.nan, math.nan, math.nan)
            gate_mean, gate_last = _gate_summary(_mean_dicts([mine[s]["gate"] for s in mine]))
            trails = low > 0 if not math.isnan(low) else None
            loss = float(np.mean([r["loss"] for r in mine.values()]))
            params = next(iter(mine.values()))["params"]
            cell[name] = dict(mean=mean, low=low, high=high, loss=loss, params=params, gate=gate_mean,
                              gate_last=gate_last, n=len(seeds))
            shown = "base" if name == BASE else f"{mean:+.3f}"
            interval = "" if name == BASE or math.isnan(low) else f"{low:+.3f} to {high:+.3f}"
            verdict = "" if name == BASE or trails is None else ("trails" if low > 0 else "beats" if high < 0 else "no")
            print(f"{name:<36}{format_count(params):>8}{len(mine):>6}{loss:>8.3f}{shown:>12}{interval:>22}"
                  f"{verdict:>9}{_fmt(gate_mean):>7}{_fmt(gate_last):>7}")
        summary["cells"][(size, tpp)] = cell
        _print_positions(here, base)
    print("\nSeed noise against the late-checkpoint proxy (scaling.fit.noise), per series and cell:")
    print(f"{'series':<36}{'size':>6}{'tok/p':>6}{'seed sd':>9}{'ckpt sd':>9}{'ratio':>7}")
    seed_var, ckpt_var = [], []
    for size, tpp in cells:
        for name in _ordered(rows):
            runs = [r for r in rows if r["series"] == name and r["size"] == size and r["tpp"] == tpp]
            if len(runs) < 2:
                continue
            logs = np.log([r["loss"] for r in runs])
            dof = sum(r["ckpt_dof"] for r in runs)
            if dof <= 0:
                continue
            s_seed = float(np.std(logs, ddof=1))
            s_ckpt = math.sqrt(sum(r["ckpt_ss"] for r in runs if r["ckpt_dof"]) / dof)
            seed_var.append(s_seed ** 2)
            ckpt_var.append(s_ckpt ** 2)
            summary["noise"].append(dict(series=name, size=size, tpp=tpp, seed_sd=s_seed, ckpt_sd=s_ckpt))
            print(f"{name:<36}{size:>6}{tpp:>6g}{s_seed:>9.4f}{s_ckpt:>9.4f}{s_seed / s_ckpt if s_ckpt else math.nan:>7.1f}")
    if seed_var:
        pooled = math.sqrt(float(np.mean(seed_var)) / float(np.mean(ckpt_var)))
        ratios = [n["seed_sd"] / n["ckpt_sd"] for n in summary["noise"] if n["ckpt_sd"] > 0]
        summary["pooled_ratio"] = pooled
        print(f"pooled seed sd / checkpoint sd (root of mean variances over {len(seed_var)} series x cells): "
              f"{pooled:.2f}; per-cell median {np.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}")
    return summary


def _print_positions(here: list[dict[str, Any]], base: dict[int, dict[str, Any]]) -> None:
    """MC minus base per position bucket (seed means), when the evaluation records it."""
    base_pos = _mean_dicts([r["positions"] for r in base.values()])
    if not base_pos:
        return
    keys = sorted(base_pos, key=lambda k: int(k.rsplit("pos", 1)[1]))
    print(f"  per position bucket (MC minus {BASE}, seed means; buckets {', '.join(k.rsplit('pos', 1)[1] for k in keys)}):")
    for name in _ordered(here):
        if name == BASE:
            continue
        mine = _mean_dicts([r["positions"] for r in here if r["series"] == name])
        if mine:
            print(f"  {name:<34}" + " ".join(f"{mine[k] - base_pos[k]:+.3f}" for k in keys if k in mine))


def _ordered(rows: list[dict[str, Any]]) -> list[str]:
    """Series in the table's order: ARCHITECTURES' order, each gated one followed by its plain-softmax run."""
    names = set(r["series"] for r in rows)
    order = [n for a in ARCHITECTURES for n in (a, a + PLAIN)]
    return [n for n in order if n in names] + sorted(names - set(order))


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = set().union(*dicts) if dicts else set()
    return {k: float(np.mean([d[k] for d in dicts if k in d])) for k in keys}


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="12K,48K", help="ladder rungs (the quickstart's ladder rule)")
    parser.add_argument("--budgets", default="10,40", help="tokens per non-embedding parameter")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--series", default=",".join(ARCHITECTURES), help=f"of {', '.join(ARCHITECTURES)}")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3K rung, 2 tokens/param, 2 seeds, swla vs grm")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.budgets, args.seeds, args.series = "3K", "2", "0,1", "swla,swla+grm@C32"
    args.sizes = args.sizes.split(",")
    args.budgets = [float(x) for x in args.budgets.split(",")]
    args.seeds = [int(x) for x in args.seeds.split(",")]
    jobs = jobs_for(args)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    ordered = sorted(jobs, key=lambda j: -j["params"] * j["tpp"])  # longest first: the pool ends together
    if args.jobs == 1:
        rows = [one_run(job) for job in ordered]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            rows = list(pool.map(one_run, ordered))
    print(f"MC vs base at quickstart scale: {len(rows)} runs in {time.perf_counter() - started:.0f} s, "
          f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f} ({args.jobs} at a time, 1 thread each)")
    failed = [r for r in rows if r["status"] != "completed"]
    for r in failed:
        print(f"  {r['series']} {r['size']} seed {r['seed']}: {r['status']}")
    return print_tables(rows, args)


if __name__ == "__main__":
    main()
