"""GPU check: the real trainer on a GPU, bf16 against fp32, throughput and MFU side by side.

For the Transformer, SWLA, SWLA+GRM, SWLA+SSC and Titans+GRM at about 10M, 50M and 125M
non-embedding parameters and 2K and 8K context, each cell trains the same seed twice with
`scaling.train.run_trial` on the built-in corpus, once in bf16 and once in fp32, for `--steps`
optimiser steps, and prints one table: steady-state tokens/s (the median step after
`--warmup-steps`), MFU against the device's dense bf16 peak (`scaling.train.throughput`), peak
GPU memory, the micro-batch the memory estimate chose, and the final training loss in bf16
and fp32 with their difference. A cell that runs out of memory says OOM; cells left when the
time budget is spent say so; nothing is dropped silently.

Only torch, numpy, the standard library and this source tree are imported, so it runs on a
bare GPU machine: ``PYTHONPATH=. python3 benchmarks/gpu_check.py`` (under 6 minutes on one
H200 with the defaults). Without a GPU it runs a tiny CPU smoke version of the same table and
says that the GPU numbers need a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from scaling.data.corpus import CorpusSpec  # noqa: E402
from scaling.models.architectures import parse_architecture  # noqa: E402
from scaling.models.config import ModelConfig  # noqa: E402
from scaling.models.ladder import format_count, shape_for_params  # noqa: E402
from scaling.train import TrialConfig, run_trial  # noqa: E402
from scaling.train.memory import fitting_micro_batch  # noqa: E402
from scaling.train.throughput import gpu_entry, peak_flops  # noqa: E402

ARCHS = ("transformer", "swla", "swla+grm", "swla+ssc", "titans+grm")


@dataclass
class Cell:
    arch: str
    size: float
    seq_len: int
    params: int = 0
    shape: str = ""
    micro: int = 0
    checkpointing: bool = False
    tokens_per_second: float = float("nan")
    mfu: float = float("nan")
    peak_bytes: float = float("nan")
    loss_bf16: float = float("nan")
    loss_fp32: float = float("nan")
    note: str = ""


def _model(arch: str, size: float, seq_len: int, vocab: int, segment_len: int) -> ModelConfig:
    parsed = parse_architecture(arch)
    fields = dict(vocab_size=vocab, d_model=64, n_heads=1, seq_len=seq_len, chunk_len=64, **parsed.config_fields())
    if parsed.caching != "none":
        fields.update(segment_len=segment_len, top_k=2)
    return shape_for_params(size, ModelConfig(**fields), head_dim=64).config


def _train(cfg: ModelConfig, precision: str, args: argparse.Namespace, micro: int | None, checkpointing: bool,
           device: str) -> tuple[dict, list[float]]:
    step_seconds: list[float] = []
    last = [time.perf_counter()]

    def on_step(info: dict) -> None:
        now = time.perf_counter()
        step_seconds.append(now - last[0])
        last[0] = now

    config = TrialConfig(model=cfg, corpus=CorpusSpec(max_bytes=args.corpus_bytes), tokens=args.steps * args.batch_tokens,
                         batch_tokens=args.batch_tokens, eval_every_steps=10 ** 9, eval_windows=1, seed=0,
                         warmup_fraction=0.1, lr=1e-3, device=device, precision=precision,
                         micro_batch_tokens=None if micro is None else micro * cfg.seq_len, compile=args.compile,
                         activation_checkpointing=checkpointing)
    last[0] = time.perf_counter()
    result = run_trial(config, on_step=on_step)
    return result.metrics, step_seconds


def run_cell(cell: Cell, args: argparse.Namespace, device: str, memory_bytes: float | None) -> None:
    cfg = _model(cell.arch, cell.size, cell.seq_len, args.vocab, args.segment_len)
    cell.shape = f"{cfg.n_layers}x{cfg.d_model}"
    share = args.batch_tokens // cell.seq_len
    micro, checkpointing = share, False
    if memory_bytes:
        fitted = fitting_micro_batch(cfg, share, "bf16", memory_bytes)
        if fitted is None:
            checkpointing, fitted = True, fitting_micro_batch(cfg, share, "bf16", memory_bytes,
                                                              activation_checkpointing=True)
        if fitted is None:
            cell.note = "does not fit (estimate)"
            return
        micro = fitted
    cell.micro, cell.checkpointing = micro, checkpointing
    try:
        metrics, steps = _train(cfg, "bf16", args, micro, checkpointing, device)
        cell.params = int(metrics["params_nonembed"])
        steady = statistics.median(steps[args.warmup_steps:] or steps)
        cell.tokens_per_second = args.batch_tokens / steady
        peak = peak_flops(metrics["device"], "bf16")
        cell.mfu = cell.tokens_per_second * metrics["flops_per_token"] / peak if peak else float("nan")
        cell.peak_bytes = float(metrics["device_memory_peak_bytes"])
        cell.loss_bf16 = float(metrics["train_loss"])
        reference, _ = _train(cfg, "fp32", args, micro, checkpointing, device)
        cell.loss_fp32 = float(reference["train_loss"])
    except torch.OutOfMemoryError:
        cell.note = "OOM"
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()


def _fmt(value: float, spec: str) -> str:
    return "-" if value != value else format(value, spec)


def print_table(cells: list[Cell], device_name: str) -> None:
    print(f"\nGPU check on {device_name} (bf16 autocast; loss after the same steps in bf16 and fp32)")
    header = ("arch", "target", "params", "shape", "L", "micro", "ckpt", "tokens/s", "MFU", "peak GiB",
              "loss bf16", "loss fp32", "diff", "note")
    rows = [header]
    for c in cells:
        rows.append((c.arch, format_count(c.size), format_count(c.params) if c.params else "-", c.shape,
                     str(c.seq_len), str(c.micro or "-"), "on" if c.checkpointing else "-",
                     _fmt(c.tokens_per_second, ",.0f"), _fmt(100 * c.mfu, ".1f") + ("%" if c.mfu == c.mfu else ""),
                     _fmt(c.peak_bytes / 2 ** 30, ".2f"), _fmt(c.loss_bf16, ".4f"), _fmt(c.loss_fp32, ".4f"),
                     _fmt(c.loss_bf16 - c.loss_fp32, "+.4f"), c.note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(v.ljust(w) if j in (0, 3, 13) else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--sizes", default="10M,50M,125M" if gpu else "50K")
    parser.add_argument("--seq-lens", default="2048,8192" if gpu else "256")
    parser.add_argument("--steps", type=int, default=12 if gpu else 4)
    parser.add_argument("--warmup-steps", type=int, default=4 if gpu else 1)
    parser.add_argument("--batch-tokens", type=int, default=65536 if gpu else 1024)
    parser.add_argument("--vocab", type=int, default=50304 if gpu else 256)
    parser.add_argument("--segment-len", type=int, default=256 if gpu else 64)
    parser.add_argument("--corpus-bytes", type=int, default=4_000_000 if gpu else 400_000)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="torch.compile every model (minutes of compilation per cell)")
    parser.add_argument("--budget-seconds", type=float, default=320.0, help="stop starting cells after this")
    args = parser.parse_args()
    from scaling.models.ladder import parse_size

    device = "cuda" if gpu else "cpu"
    name = torch.cuda.get_device_name() if gpu else "cpu"
    entry = gpu_entry(name) if gpu else None
    memory = float(torch.cuda.get_device_properties(0).total_memory) if gpu else None
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 reference uses TF32 tensor cores, as the MFU table
        print(f"{name}: {memory / 2 ** 30:.0f} GiB, bf16 peak {entry['bf16'] / 1e12 if entry else 0:.0f} TFLOP/s "
              f"(table), torch {torch.__version__}")
    else:
        print("No GPU: a tiny CPU smoke run of the same table; the GPU numbers need a GPU.")
    started = time.perf_counter()
    cells = [Cell(a, parse_size(s), int(L)) for L in args.seq_lens.split(",") for s in args.sizes.split(",")
             for a in args.archs.split(",")]
    for cell in cells:
        if time.perf_counter() - started > args.budget_seconds:
            cell.note = "not run (time budget)"
            continue
        t0 = time.perf_counter()
        run_cell(cell, args, device, memory)
        print(f"  {cell.arch} {format_count(cell.size)} L={cell.seq_len}: {time.perf_counter() - t0:.1f} s "
              f"{cell.note}", file=sys.stderr, flush=True)
    print_table(cells, name)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
