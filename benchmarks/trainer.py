"""Benchmark: training throughput and model FLOPs utilisation (MFU) of the real trainer on this CPU.

What runs, in one process and side by side, for each thread count (default 1 and 2):

1. the machine's dense fp32 matmul rate: ``torch.matmul`` of two n x n float32 matrices
   (default n = 1024 and 2048) at that thread count, ``2 n^3 / median(time)`` over repeats,
   measured once before and once after the models (the reference is the median of all those
   repeats at the best size, so a burst of load from other processes shows up as a spread);
2. a ~1M-parameter Transformer and a ~1M-parameter SWLA + GRM Memory Caching model (segment
   length 64 at seq_len 512 by default), each trained with ``scaling.train.run_trial`` on the
   built-in corpus for ``--steps`` optimiser steps at that thread count.

Throughput is run_trial's own: ``tokens_per_second`` and ``flops_per_second`` (analytic training
FLOPs per token from ``scaling.models.flops.training_flops_per_token`` = 3 x forward matmul FLOPs,
times tokens, over ``train_seconds``, which times only the training steps, never evaluation).
A "steady" column repeats this from the median per-step time once ``--warmup-steps`` steps are
left out (per-step times come from run_trial's own clock via ``on_step``).
MFU = achieved FLOP/s / measured matmul FLOP/s at the same thread count.

Run: ``python benchmarks/trainer.py`` (``--quick`` for a smoke run, ``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from scaling.data.corpus import CorpusSpec  # noqa: E402
from scaling.models.architectures import parse_architecture  # noqa: E402
from scaling.models.config import ModelConfig  # noqa: E402
from scaling.models.flops import forward_flops  # noqa: E402
from scaling.models.ladder import format_count, parse_size, shape_for_params  # noqa: E402
from scaling.train import TrialConfig, run_trial  # noqa: E402


# ----------------------------------------------------------------------------- matmul reference
def matmul_flops(n: int, threads: int, repeats: int) -> list[float]:
    """FLOP/s of each timed ``torch.matmul`` of two n x n fp32 matrices (after one warm-up call)."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(n)
    a = torch.randn(n, n, generator=gen, dtype=torch.float32)
    b = torch.randn(n, n, generator=gen, dtype=torch.float32)
    out = torch.empty(n, n, dtype=torch.float32)
    torch.matmul(a, b, out=out)  # warm-up: thread pool, allocator, caches
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        rates.append(2.0 * n ** 3 / (time.perf_counter() - t0))
    return rates


# ----------------------------------------------------------------------------- models
@dataclass
class ModelRun:
    label: str
    arch: str
    config: ModelConfig
    params_nonembed: int
    params_total: int
    flops_per_token: float = 0.0
    metrics: dict = field(default_factory=dict)
    step_seconds: list[float] = field(default_factory=list)


def model_for(arch: str, target: float, seq_len: int, segment_len: int, head_dim: int, chunk_len: int) -> tuple[ModelConfig, int, int]:
    """The ladder shape for `target` non-embedding parameters, as `scaling.study.plan` would build it."""
    parsed = parse_architecture(arch)
    fields = dict(vocab_size=256, d_model=head_dim, n_heads=1, seq_len=seq_len, chunk_len=min(chunk_len, seq_len),
                  **parsed.config_fields())
    if parsed.caching != "none":
        fields.update(segment_len=segment_len, chunk_len=min(chunk_len, seq_len, segment_len))
    rung = shape_for_params(target, ModelConfig(**fields), head_dim)
    return rung.config, rung.params_nonembed, rung.params_total


def train(run: ModelRun, threads: int, steps: int, batch_tokens: int, max_bytes: int | None) -> None:
    """run_trial for `steps` steps; per-step times from run_trial's own cumulative train_seconds."""
    tokens_per_step = (batch_tokens // run.config.seq_len) * run.config.seq_len
    cumulative: list[float] = []

    def on_step(m: dict) -> None:  # tokens_per_second = tokens / train_seconds, so this is exact
        cumulative.append(m["tokens"] / m["tokens_per_second"])

    config = TrialConfig(model=run.config, corpus=CorpusSpec(source="builtin", max_bytes=max_bytes),
                         tokens=steps * tokens_per_step, batch_tokens=batch_tokens, threads=threads,
                         eval_every_steps=steps + 1, eval_windows=1, seed=0)
    result = run_trial(config, on_step=on_step)
    run.metrics = result.metrics
    run.flops_per_token = result.metrics["flops_per_token"]
    run.step_seconds = [b - a for a, b in zip([0.0] + cumulative[:-1], cumulative)]


def steady(run: ModelRun, warmup: int) -> tuple[float, float]:
    """(tokens/s, FLOP/s) from the median step time after `warmup` steps (all steps if too few)."""
    times = run.step_seconds[warmup:] or run.step_seconds
    tokens_per_step = run.metrics["tokens"] / max(1, run.metrics["step"])
    tps = tokens_per_step / statistics.median(times)
    return tps, tps * run.flops_per_token


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See benchmarks/README.md.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=16, help="optimiser steps per model per thread count")
    p.add_argument("--warmup-steps", type=int, default=2, help="steps left out of the 'steady' columns")
    p.add_argument("--seq-len", type=int, default=512, help="sequence length L")
    p.add_argument("--segment-len", type=int, default=64, help="GRM segment length C (must divide --seq-len)")
    p.add_argument("--batch-tokens", type=int, default=4096, help="tokens per optimiser step (multiple of seq-len)")
    p.add_argument("--params", default="1M", help="target non-embedding parameters of both models (e.g. 1M, 500K)")
    p.add_argument("--head-dim", type=int, default=64, help="ladder head dimension")
    p.add_argument("--chunk-len", type=int, default=64, help="scan chunk length of the recurrent model")
    p.add_argument("--archs", default="transformer,swla+grm", help="comma-separated architectures")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--matmul-sizes", default="1024,2048", help="comma-separated n of the n x n fp32 matmul reference")
    p.add_argument("--matmul-repeats", type=int, default=7, help="timed matmuls per size, before and after the models")
    p.add_argument("--max-bytes", type=int, default=None, help="cap on the built-in corpus text (default: all)")
    p.add_argument("--json", type=Path, default=None, help="also write every raw number to this file")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 4 steps, 1 warm-up step, seq_len 256, 1024 batch tokens, matmul 1024 x 3")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup_steps, args.seq_len, args.batch_tokens = 4, 1, 256, 1024
        args.matmul_sizes, args.matmul_repeats = "1024", 3
    if args.seq_len % args.segment_len:
        p.error(f"--segment-len {args.segment_len} does not divide --seq-len {args.seq_len}")
    if args.batch_tokens < args.seq_len:
        p.error("--batch-tokens must be at least --seq-len")
    if args.steps < 1:
        p.error("--steps must be >= 1")
    return args


def gf(x: float) -> str:
    return f"{x / 1e9:.2f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 220)
    err = Console(stderr=True)
    threads_list = [int(t) for t in args.threads.split(",") if t.strip()]
    sizes = [int(s) for s in args.matmul_sizes.split(",") if s.strip()]
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    target = parse_size(args.params)
    load_start = os.getloadavg()
    started = time.perf_counter()

    results: dict[int, dict] = {}
    for threads in threads_list:
        mm_before = {n: matmul_flops(n, threads, args.matmul_repeats) for n in sizes}
        err.log(f"[{threads} thr] matmul before: " + ", ".join(
            f"{n}: {gf(statistics.median(r))} GFLOP/s" for n, r in mm_before.items()))
        runs = []
        for arch in archs:
            cfg, pn, pt = model_for(arch, target, args.seq_len, args.segment_len, args.head_dim, args.chunk_len)
            run = ModelRun(label=arch if cfg.caching == "none" else f"{arch} C={cfg.segment_len}", arch=arch,
                           config=cfg, params_nonembed=pn, params_total=pt)
            train(run, threads, args.steps, args.batch_tokens, args.max_bytes)
            err.log(f"[{threads} thr] {run.label}: {run.metrics['tokens_per_second']:.0f} tok/s, "
                    f"{gf(run.metrics['flops_per_second'])} GFLOP/s over {run.metrics['step']} steps")
            runs.append(run)
        mm_after = {n: matmul_flops(n, threads, args.matmul_repeats) for n in sizes}
        err.log(f"[{threads} thr] matmul after: " + ", ".join(
            f"{n}: {gf(statistics.median(r))} GFLOP/s" for n, r in mm_after.items()))
        mm_all = {n: mm_before[n] + mm_after[n] for n in sizes}
        best_n = max(sizes, key=lambda n: statistics.median(mm_all[n]))
        results[threads] = dict(mm_before=mm_before, mm_after=mm_after, mm_all=mm_all, best_n=best_n,
                                ref=statistics.median(mm_all[best_n]), runs=runs)
    load_end = os.getloadavg()
    elapsed = time.perf_counter() - started

    # -- table 1: the matmul reference
    mm = Table(title="fp32 matmul reference (torch.matmul, n x n @ n x n, FLOP = 2 n^3)")
    for col in ("threads", "n", "GFLOP/s before (median)", "GFLOP/s after (median)", "GFLOP/s pooled (median)",
                "pooled min-max", "repeats"):
        mm.add_column(col, justify="right")
    for threads, r in results.items():
        for n in sizes:
            rates = r["mm_all"][n]
            mark = " *" if n == r["best_n"] else ""
            mm.add_row(str(threads), f"{n}{mark}", gf(statistics.median(r["mm_before"][n])),
                       gf(statistics.median(r["mm_after"][n])), gf(statistics.median(rates)),
                       f"{gf(min(rates))}-{gf(max(rates))}", str(len(rates)))
    console.print(mm)

    # -- table 2: the models
    t = Table(title=f"run_trial throughput and MFU (built-in corpus, seq_len {args.seq_len}, "
                    f"{args.batch_tokens} tokens/step, {args.steps} steps)")
    for col in ("thr", "model", "d x layers (heads)", "params non-emb/total", "train MFLOP/tok",
                "tokens/s", "GFLOP/s", "matmul GFLOP/s", "MFU", "steady tok/s",
                "steady GFLOP/s", "steady MFU", "train s/wall s"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for threads, r in results.items():
        for run in r["runs"]:
            m = run.metrics
            s_tps, s_fps = steady(run, args.warmup_steps)
            c = run.config
            t.add_row(str(threads), run.label, f"{c.d_model} x {c.n_layers} ({c.n_heads})",
                      f"{format_count(run.params_nonembed)} / {format_count(run.params_total)}",
                      f"{run.flops_per_token / 1e6:.2f}", f"{m['tokens_per_second']:,.0f}",
                      gf(m["flops_per_second"]), gf(r["ref"]), f"{m['flops_per_second'] / r['ref']:.1%}",
                      f"{s_tps:,.0f}", gf(s_fps), f"{s_fps / r['ref']:.1%}",
                      f"{m['train_seconds']:.1f} / {m['wall_seconds']:.1f}")
    console.print(t)

    # -- table 3: where the FLOPs are
    b = Table(title="analytic forward FLOPs per token by component, in MFLOP (scaling.models.flops; training = 3 x forward)")
    components = ("lm_head", "projections", "mlp", "attention", "memory_update", "online_read", "gate_scores",
                  "cached_read", "forward")
    b.add_column("model")
    for comp in components:
        b.add_column(comp, justify="right")
    for run in results[threads_list[0]]["runs"]:
        d = forward_flops(run.config).as_dict()
        b.add_row(run.label, *[f"{d[comp] / 1e6:.3f}" for comp in components])
    console.print(b)

    lines = [
        f"load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, "
        f"at end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}; {os.cpu_count()} CPUs; "
        f"torch {torch.__version__}; total {elapsed:.0f} s.",
        "tokens/s and achieved GFLOP/s are run_trial's metrics over all steps (first steps included); "
        f"'steady' uses the median step time after {args.warmup_steps} warm-up step(s).",
        "MFU = achieved FLOP/s / median fp32 matmul FLOP/s at the same thread count (size marked * in table 1, "
        "the faster size; repeats before and after the models pooled).",
        "Analytic FLOPs count matmuls only and attention as dense L x L (no causal halving), as flops.py does.",
    ]
    for line in lines:
        console.print(line, soft_wrap=True)

    if args.json is not None:
        raw = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "load_start": load_start, "load_end": load_end, "results": {}}
        for threads, r in results.items():
            raw["results"][threads] = {
                "matmul_before": r["mm_before"], "matmul_after": r["mm_after"], "matmul_ref": r["ref"],
                "matmul_ref_n": r["best_n"],
                "models": [{"label": run.label, "config": run.config.to_dict(), "params_nonembed": run.params_nonembed,
                            "metrics": {k: v for k, v in run.metrics.items() if isinstance(v, (int, float, str))},
                            "step_seconds": run.step_seconds} for run in r["runs"]]}
        args.json.write_text(json.dumps(raw, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
