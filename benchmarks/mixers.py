#!/usr/bin/env python
"""Side-by-side CPU benchmark of every token mixer x Memory Caching strategy against attention.

One run measures, for each architecture (``transformer``; ``linear``, ``swla``, ``dla``,
``dla-matrix``, ``titans`` each with caching none / residual / grm / soup / ssc) and each sequence
length (segment length C fixed across lengths):

1. forward+backward wall time of one training step (batch 1 sequence, vocab 256, float32,
   cross-entropy on random next tokens, no optimizer step): one warm-up step, then the median of
   the timed repeats; printed per token relative to the Transformer at the same length;
2. the fitted exponent of time per step vs seq_len (least-squares slope in log-log), next to the
   analytic training-FLOP ratio and exponent from ``scaling.models.flops.forward_flops``;
3. the peak memory of one training step at the largest seq_len, in a fresh process per
   architecture: peak RSS during the step minus RSS just before it.

Every architecture runs in its own fresh worker subprocess with an address-space limit
(RLIMIT_AS), so an out-of-memory cell fails with an allocation error that is reported in its
table cell instead of waking the kernel's OOM killer, and a crashed worker only loses its
current cell. Run ``python benchmarks/mixers.py --help`` for the options; see
benchmarks/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this folder comes first on sys.path, and benchmarks/kernels.py would shadow the
# `kernels` package that scaling.models imports: put the repository root first instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(REPO_ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (_HERE, REPO_ROOT)]

BASES = ("linear", "swla", "dla", "dla-matrix", "titans")
STRATEGIES = ("none", "residual", "grm", "soup", "ssc")
DEFAULT_ARCHS = ("transformer",) + tuple(
    base if s == "none" else f"{base}+{s}" for base in BASES for s in STRATEGIES)
QUICK_ARCHS = ("transformer", "swla", "swla+grm", "swla+ssc", "dla+soup", "titans+ssc")
EVENT_PREFIX = "@@MIXERS@@"


# ============================================================================ helpers
def _length_label(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return sorted(set(values))


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _classify_error(exc: BaseException) -> tuple[str, str]:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    low = text.lower()
    if isinstance(exc, MemoryError) or "can't allocate memory" in low or "out of memory" in low \
            or "cannot allocate memory" in low or "std::bad_alloc" in low:
        return "oom", text[:300] or "out of memory"
    return "error", (text or repr(exc))[:300]


# ============================================================================ worker (one architecture)
def _proc_status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps(event) + "\n")
    sys.stdout.flush()


def worker_main(spec: dict[str, Any]) -> int:
    """Time one architecture at every requested length (longest first) and, at the longest,
    measure the peak RSS growth of its first training step in this fresh process."""
    import gc
    import resource

    if spec.get("mem_limit_bytes"):
        limit = int(spec["mem_limit_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    import torch
    import torch.nn.functional as F

    from scaling.models.architectures import parse_architecture
    from scaling.models.config import ModelConfig
    from scaling.models.model import LanguageModel

    torch.set_num_threads(int(spec["threads"]))
    torch.set_default_dtype(torch.float32)
    arch = parse_architecture(spec["arch"])
    vocab = int(spec["vocab"])

    def config(length: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab, d_model=spec["d_model"], n_layers=spec["n_layers"],
                           n_heads=spec["n_heads"], seq_len=length, segment_len=spec["segment_len"],
                           top_k=spec["top_k"], **arch.config_fields())

    def make(length: int) -> tuple[Any, Any]:
        torch.manual_seed(0)
        model = LanguageModel(config(length))
        gen = torch.Generator().manual_seed(1234)
        tokens = torch.randint(0, vocab, (1, length + 1), generator=gen)
        return model, tokens

    def step(model: Any, tokens: Any) -> float:
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))
        loss.backward()
        elapsed = time.perf_counter() - start
        del logits, loss
        return elapsed

    lengths = sorted(spec["lengths"], reverse=True)
    memory_len = spec.get("memory_len")
    warm_small = min(spec["all_lengths"])
    params_done = False

    for length in lengths:
        _emit({"event": "start", "L": length})
        model = tokens = None
        cell: dict[str, Any] = {"event": "cell", "L": length}
        measure_memory = memory_len is not None and length == memory_len
        memory_reported = False
        try:
            if measure_memory:
                # Initialise threads, allocator and caches on a short sequence first so that
                # the measured growth belongs to the long step, not to one-time setup.
                small_model, small_tokens = make(warm_small)
                step(small_model, small_tokens)
                del small_model, small_tokens
            model, tokens = make(length)
            if not params_done:
                counts = model.param_counts()
                _emit({"event": "params", **counts})
                params_done = True
            if measure_memory:
                gc.collect()
                reset_ok = _reset_peak_rss()
                rss_before = (_proc_status_kib("VmRSS") or 0) * 1024
                maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            warmup = step(model, tokens)
            if measure_memory:
                maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                hwm = _proc_status_kib("VmHWM")
                if reset_ok and hwm is not None:
                    peak, method = hwm * 1024, "VmHWM reset via /proc/self/clear_refs"
                else:
                    peak, method = maxrss_after, "getrusage ru_maxrss"
                memory_reported = True
                _emit({"event": "memory", "L": length, "status": "ok", "rss_before": rss_before, "peak_rss": peak,
                       "delta": peak - rss_before, "maxrss_delta": maxrss_after - rss_before,
                       "maxrss_before": maxrss_before, "method": method, "step_s": warmup})
            requested = int(spec["repeats"])
            repeats, reasons = requested, []
            by_budget = max(1, int(spec["cell_budget_s"] // max(warmup, 1e-9)))
            if by_budget < repeats:
                repeats = by_budget
                reasons.append(f"warm-up {warmup:.1f}s x {requested} > cell budget {spec['cell_budget_s']:g}s")
            if spec.get("deadline") and time.time() > spec["deadline"] and repeats > 1:
                repeats = 1
                reasons.append("past the --time-budget")
            times = [step(model, tokens) for _ in range(repeats)]
            cell.update(status="ok", warmup=warmup, times=times, repeats=repeats, requested=requested,
                        reduced="; ".join(reasons))
        except BaseException as exc:  # noqa: BLE001 - one bad cell must not abort the table
            if isinstance(exc, KeyboardInterrupt):
                raise
            status, msg = _classify_error(exc)
            cell.update(status=status, message=msg)
            if measure_memory and not memory_reported:
                _emit({"event": "memory", "L": length, "status": status, "message": msg})
        finally:
            model = tokens = None
            gc.collect()
        _emit(cell)
    return 0


# ============================================================================ orchestrator
@dataclass
class ArchResult:
    name: str
    cells: dict[int, dict[str, Any]] = field(default_factory=dict)
    memory: dict[str, Any] | None = None
    params: dict[str, int] | None = None

    def time_per_step(self, length: int) -> float | None:
        cell = self.cells.get(length)
        if cell and cell.get("status") == "ok":
            return statistics.median(cell["times"])
        return None


def _fit_slope(xs: list[float], ys: list[float]) -> float | None:
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y and y > 0]
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def run_arch(arch: str, args: argparse.Namespace, lengths: list[int], deadline: float | None,
             on_event) -> ArchResult:  # noqa: ANN001
    """Run `arch` in fresh worker subprocesses until every length has a result."""
    result = ArchResult(arch)
    pending = sorted(lengths, reverse=True)
    memory_len = None if args.no_memory else max(lengths)
    while pending:
        spec = {"arch": arch, "lengths": pending, "all_lengths": lengths, "d_model": args.d_model,
                "n_heads": args.n_heads, "n_layers": args.n_layers, "segment_len": args.segment_len,
                "top_k": args.top_k, "vocab": args.vocab, "threads": args.threads, "repeats": args.repeats,
                "cell_budget_s": args.cell_budget, "deadline": deadline,
                "memory_len": memory_len if memory_len in pending else None,
                "mem_limit_bytes": args.mem_limit_bytes}
        with tempfile.TemporaryFile(mode="w+") as err:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [str(REPO_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(args.threads)
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                    stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=str(REPO_ROOT))
            current = None
            assert proc.stdout is not None
            for line in proc.stdout:
                if not line.startswith(EVENT_PREFIX):
                    continue
                event = json.loads(line[len(EVENT_PREFIX):])
                kind = event.pop("event")
                if kind == "start":
                    current = event["L"]
                elif kind == "params":
                    result.params = event
                elif kind == "memory":
                    result.memory = event
                elif kind == "cell":
                    result.cells[event["L"]] = event
                    if event["L"] in pending:
                        pending.remove(event["L"])
                    current = None
                    on_event(arch, event, result)
            rc = proc.wait()
            if pending:  # the worker died: blame the cell it was on, retry the rest in a new one
                err.seek(0)
                tail = [ln for ln in err.read().strip().splitlines() if ln.strip()][-1:] or [""]
                why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
                if rc in (-9, 137):
                    why += " (killed; likely out of memory)"
                failed = current if current in pending else pending[0]
                cell = {"L": failed, "status": "oom" if rc in (-9, 137) else "crash",
                        "message": f"worker died: {why}. {tail[0][:200]}"}
                result.cells[failed] = cell
                if memory_len == failed and result.memory is None:
                    result.memory = {"L": failed, "status": cell["status"], "message": cell["message"]}
                pending.remove(failed)
                on_event(arch, cell, result)
    return result


def _cell_text(result: ArchResult, ref: ArchResult | None, length: int) -> str:
    cell = result.cells.get(length)
    if cell is None:
        return "-"
    if cell.get("status") != "ok":
        return {"oom": "OOM", "crash": "crash"}.get(cell.get("status", ""), "error")
    t = result.time_per_step(length)
    t_ref = ref.time_per_step(length) if ref else None
    mark = "*" if cell.get("repeats", 0) < cell.get("requested", 0) else ""
    if t is None or not t_ref:
        return "n/a" + mark
    return f"{t / t_ref:.2f}{mark}"


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/mixers.py",
        description="CPU forward+backward time, time/FLOP scaling exponents and peak training-step memory "
                    "of every mixer x Memory Caching strategy, relative to the Transformer, in one run.",
        formatter_class=argparse.HelpFormatter)
    parser.add_argument("--seq-lens", type=_int_list, default=None,
                        help="comma-separated sequence lengths (default 512,1024,2048,4096,8192; "
                             "--quick: 128,256)")
    parser.add_argument("--segment-len", type=int, default=None,
                        help="Memory Caching segment length C, fixed across lengths (default 256; --quick: 64)")
    parser.add_argument("--d-model", type=int, default=None, help="model width (default 256; --quick: 64)")
    parser.add_argument("--n-heads", type=int, default=None, help="heads (default 4; --quick: 2)")
    parser.add_argument("--n-layers", type=int, default=None, help="layers (default 2; --quick: 1)")
    parser.add_argument("--top-k", type=int, default=2, help="SSC top-k (default %(default)s)")
    parser.add_argument("--vocab", type=int, default=256, help="vocabulary size (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per cell after one warm-up step, median reported; reduced "
                             "(never below 1) where warm-up x repeats exceeds --cell-budget (default 5; "
                             "--quick: 2)")
    parser.add_argument("--cell-budget", type=float, default=None,
                        help="seconds of timed repeats allowed per (arch, seq_len) cell (default 6; --quick: 2)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="soft wall-clock budget in minutes: once exceeded, remaining cells run 1 repeat "
                             "(default 13; --quick: 3)")
    parser.add_argument("--archs", type=str, default=None,
                        help="comma-separated architecture names (e.g. transformer,swla+grm,titans+ssc); "
                             "default: transformer + {linear,swla,dla,dla-matrix,titans} x "
                             "{none,residual,grm,soup,ssc}. transformer is always added (ratios need it)")
    parser.add_argument("--threads", type=int, default=_default_threads(), help="torch intra-op threads (default: all cores, %(default)s here)")
    parser.add_argument("--mem-limit-gb", type=float, default=None,
                        help="address-space limit per worker (RLIMIT_AS), so an OOM is an error in its cell "
                             "rather than the kernel OOM killer (default: min(16, 0.75 x MemAvailable))")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write all raw results to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help="fast smoke run: tiny model, seq_lens 128,256, C=64, a handful of architectures")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        return worker_main(json.loads(args.worker))

    quick = args.quick
    defaults = {"seq_lens": [128, 256] if quick else [512, 1024, 2048, 4096, 8192],
                "segment_len": 64 if quick else 256, "d_model": 64 if quick else 256,
                "n_heads": 2 if quick else 4, "n_layers": 1 if quick else 2, "repeats": 2 if quick else 5,
                "cell_budget": 2.0 if quick else 6.0, "time_budget": 3.0 if quick else 13.0}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeats < 1 or args.threads < 1 or args.cell_budget <= 0:
        parser.error("--repeats, --threads and --cell-budget must be positive")

    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn)
    from rich.table import Table

    from scaling.errors import UserInputError
    from scaling.models.architectures import parse_architecture
    from scaling.models.config import ModelConfig
    from scaling.models.flops import forward_flops

    # ---- architectures and configs, validated up front
    names = [a for a in (args.archs.split(",") if args.archs else (QUICK_ARCHS if quick else DEFAULT_ARCHS))
             if a.strip()]
    archs: list[str] = []
    try:
        for name in names:
            canonical = parse_architecture(name, field="--archs").name
            if canonical not in archs:
                archs.append(canonical)
    except UserInputError as exc:
        parser.error(str(exc))
    if "transformer" not in archs:
        archs.insert(0, "transformer")
    else:
        archs.remove("transformer")
        archs.insert(0, "transformer")
    lengths = args.seq_lens

    def config(arch: str, length: int) -> ModelConfig:
        return ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.n_layers,
                           n_heads=args.n_heads, seq_len=length, segment_len=args.segment_len, top_k=args.top_k,
                           **parse_architecture(arch).config_fields())

    try:
        for arch in archs:
            for length in lengths:
                config(arch, length)
    except UserInputError as exc:
        parser.error(f"invalid configuration: {exc}")

    if args.mem_limit_gb is None:
        avail = _mem_available_bytes()
        limit = 16 * 2**30 if avail is None else min(16 * 2**30, int(0.75 * avail))
    else:
        limit = int(args.mem_limit_gb * 2**30) if args.mem_limit_gb > 0 else 0
    args.mem_limit_bytes = limit

    out = Console(width=None if sys.stdout.isatty() else 150)
    err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    t_start = time.time()
    deadline = t_start + 60.0 * args.time_budget
    results: dict[str, ArchResult] = {}

    import torch  # only for the version string; already imported by scaling.models

    out.print(f"[bold]mcscale mixer benchmark[/bold]  d_model={args.d_model} n_heads={args.n_heads} "
              f"n_layers={args.n_layers} vocab={args.vocab} C={args.segment_len} top_k={args.top_k} "
              f"seq_lens={','.join(map(str, lengths))}  float32, batch 1, threads={args.threads}, "
              f"torch {torch.__version__}, {platform.machine()} x{os.cpu_count()}, "
              f"worker RLIMIT_AS={'none' if not limit else f'{limit / 2**30:.1f} GiB'}")

    if load_start is not None and load_start[0] > 0.5:
        err.print(f"[yellow]warning: 1-min load average is {load_start[0]:.2f} before starting; other processes "
                  "compete for the cores, so times will be noisy[/yellow]")
    progress = Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=False)
    total_cells = len(archs) * len(lengths)
    with progress:
        task = progress.add_task("starting", total=total_cells)

        def on_event(arch: str, cell: dict[str, Any], result: ArchResult) -> None:
            length = cell["L"]
            if cell.get("status") == "ok":
                med = statistics.median(cell["times"])
                line = (f"{arch:<18} L={length:>6}  {med * 1e3:9.1f} ms/step  {med / length * 1e6:8.1f} us/tok  "
                        f"warm-up {cell['warmup']:.2f}s  repeats {cell['repeats']}/{cell['requested']}")
                if cell.get("reduced"):
                    line += f"  (reduced: {cell['reduced']})"
            else:
                line = f"{arch:<18} L={length:>6}  {cell.get('status', '?').upper()}: {cell.get('message', '')}"
            mem = result.memory
            if mem and mem.get("L") == length and mem.get("status") == "ok":
                line += f"  peak dRSS {mem['delta'] / 2**20:.0f} MiB"
            progress.console.print(line, markup=False, highlight=False)
            progress.advance(task)

        for arch in archs:
            progress.update(task, description=f"{arch:<16}")
            results[arch] = run_arch(arch, args, lengths, deadline, on_event)
        progress.update(task, description="done")
    wall = time.time() - t_start
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    ref = results.get("transformer")
    big = max(lengths)
    labels = [_length_label(n) for n in lengths]

    # ---- analytic FLOPs (training FLOPs per sequence = 3 x forward per token x L)
    flops = {a: {n: forward_flops(config(a, n), n).training * n for n in lengths} for a in archs}

    # ---- table 1: measured time per token relative to the Transformer
    t1 = Table()
    title1 = (f"1. Forward+backward time per token / Transformer time per token at the same seq_len "
              f"(C={args.segment_len} for every length)")
    t1.add_column("architecture", style="bold")
    for lab in labels:
        t1.add_column(lab, justify="right")
    for arch in archs:
        t1.add_row(arch, *[_cell_text(results[arch], ref, n) for n in lengths],
                   end_section=arch in ("transformer", archs[-1]))
    if ref is not None:
        t1.add_row("[dim]transformer ms/step[/dim]",
                   *[_fmt(None if ref.time_per_step(n) is None else ref.time_per_step(n) * 1e3, ".1f") for n in lengths])
        t1.add_row("[dim]transformer us/token[/dim]",
                   *[_fmt(None if ref.time_per_step(n) is None else ref.time_per_step(n) / n * 1e6, ".1f")
                     for n in lengths])
    out.print()
    out.print(f"[bold]{title1}[/bold]")
    out.print(t1)
    out.print("   cell = median step time of the arch / median step time of the transformer (equal tokens per step). "
              "* = fewer repeats than requested (see notes). OOM = allocation failed under the worker's memory limit.")

    # ---- table 2: analytic FLOP ratio
    t2 = Table()
    title2 = "2. Analytic training FLOPs / Transformer training FLOPs (forward_flops(cfg, L).training, same L)"
    t2.add_column("architecture", style="bold")
    for lab in labels:
        t2.add_column(lab, justify="right")
    for arch in archs:
        t2.add_row(arch, *[f"{flops[arch][n] / flops['transformer'][n]:.2f}" for n in lengths],
                   end_section=arch in ("transformer", archs[-1]))
    t2.add_row("[dim]transformer GFLOP/step[/dim]", *[f"{flops['transformer'][n] / 1e9:.2f}" for n in lengths])
    out.print()
    out.print(f"[bold]{title2}[/bold]")
    out.print(t2)

    # ---- table 3: scaling exponents, measured vs analytic
    t3 = Table()
    title3 = (f"3. Scaling with seq_len: slope of log(time/step) and log(FLOPs/step) vs log(seq_len); "
              f"ratios to the Transformer at {_length_label(big)}")
    for col, just in (("architecture", "left"), ("time exp", "right"), ("FLOP exp", "right"),
                      (f"time ratio {_length_label(big)}", "right"), (f"FLOP ratio {_length_label(big)}", "right"),
                      (f"ms/step {_length_label(big)}", "right"), (f"GFLOP/s {_length_label(big)}", "right"),
                      (f"repeats {_length_label(big)}", "right"), ("params (M)", "right")):
        t3.add_column(col, justify=just, style="bold" if col == "architecture" else None)
    for arch in archs:
        res = results[arch]
        ok = [n for n in lengths if res.time_per_step(n) is not None]
        slope = _fit_slope(ok, [res.time_per_step(n) for n in ok])
        slope_txt = _fmt(slope) + ("" if len(ok) == len(lengths) or slope is None else f" ({len(ok)} pts)")
        fslope = _fit_slope(lengths, [flops[arch][n] for n in lengths])
        t_big = res.time_per_step(big)
        cell = res.cells.get(big, {})
        reps = f"{cell['repeats']}/{cell['requested']}" if cell.get("status") == "ok" else cell.get("status", "-")
        params = res.params["params_total"] / 1e6 if res.params else None
        t3.add_row(arch, slope_txt, _fmt(fslope), _cell_text(res, ref, big),
                   f"{flops[arch][big] / flops['transformer'][big]:.2f}",
                   _fmt(None if t_big is None else t_big * 1e3, ".0f"),
                   _fmt(None if t_big is None else flops[arch][big] / t_big / 1e9, ".1f"), reps, _fmt(params, ".2f"),
                   end_section=arch == "transformer")
    out.print()
    out.print(f"[bold]{title3}[/bold]")
    out.print(t3)
    out.print("   time exp: least-squares slope of log(median time per step) vs log(seq_len) over the measured lengths; "
              "FLOP exp: the same slope on analytic training FLOPs per sequence (1 = linear, 2 = quadratic). "
              "GFLOP/s = analytic training FLOPs / measured time.")

    # ---- table 4: peak memory of one training step at the largest length
    if not args.no_memory:
        t4 = Table()
        title4 = (f"4. Peak memory of one training step (forward+backward) at seq_len {big}, "
                  "fresh process per architecture")
        for col in ("architecture", "peak RSS growth (MiB)", "x transformer", "RSS before (MiB)",
                    "peak RSS (MiB)", "step time (s)"):
            t4.add_column(col, justify="left" if col == "architecture" else "right",
                          style="bold" if col == "architecture" else None)
        ref_mem = ref.memory if ref else None
        ref_delta = ref_mem["delta"] if ref_mem and ref_mem.get("status") == "ok" else None
        methods = set()
        for arch in archs:
            mem = results[arch].memory
            if not mem or mem.get("status") != "ok":
                status = {"oom": f"OOM (> {limit / 2**30:.1f} GiB limit)" if limit else "OOM",
                          "crash": "crash"}.get((mem or {}).get("status", ""), (mem or {}).get("status", "-"))
                t4.add_row(arch, status, "-", "-", "-", "-", end_section=arch == "transformer")
                continue
            methods.add(mem["method"])
            t4.add_row(arch, f"{mem['delta'] / 2**20:.0f}",
                       _fmt(mem["delta"] / ref_delta if ref_delta else None),
                       f"{mem['rss_before'] / 2**20:.0f}", f"{mem['peak_rss'] / 2**20:.0f}", f"{mem['step_s']:.2f}",
                       end_section=arch == "transformer")
        out.print()
        out.print(f"[bold]{title4}[/bold]")
        out.print(t4)
        out.print(f"   peak RSS growth = peak resident set size during the step ({', '.join(sorted(methods)) or 'n/a'}) "
                  "minus VmRSS just before it, in a fresh worker that first ran one step at the shortest length "
                  "(so thread pools and allocator setup are excluded). It covers activations saved for backward, "
                  "gradients and temporaries of the first long step; the model's parameters are already resident. "
                  "step time = that first step (it doubles as the timing warm-up).")

    # ---- notes
    out.print()
    out.print("[bold]Notes[/bold]")
    reduced = [(a, n, c) for a in archs for n, c in sorted(results[a].cells.items())
               if c.get("status") == "ok" and c.get("repeats", 0) < c.get("requested", 0)]
    if reduced:
        by_len: dict[int, list[str]] = {}
        for a, n, c in reduced:
            by_len.setdefault(n, []).append(f"{a} ({c['repeats']})")
        out.print(f" - repeats reduced from {args.repeats} (cell budget {args.cell_budget:g}s of timed repeats, "
                  f"soft time budget {args.time_budget:g} min); timed repeats in parentheses:")
        for n in sorted(by_len):
            out.print(f"     L={n}: " + ", ".join(by_len[n]), highlight=False)
    else:
        out.print(f" - every cell ran all {args.repeats} requested repeats")
    failures = [(a, n, c) for a in archs for n, c in sorted(results[a].cells.items()) if c.get("status") != "ok"]
    for a, n, c in failures:
        out.print(f" - {a} L={n}: {c.get('status', '?').upper()}: {c.get('message', '')}", highlight=False, markup=False)
    load_txt = ("" if load_start is None or load_end is None else
                f"; load average at start {load_start[0]:.2f}, at end {load_end[0]:.2f} "
                f"(other processes share the {os.cpu_count()} cores, so times can be noisy)")
    out.print(f" - wall time {wall / 60:.1f} min{load_txt}", highlight=False)
    if load_start is not None and load_start[0] > 0.5:
        out.print(f" - WARNING: the machine was busy (1-min load average {load_start[0]:.2f} before this run "
                  f"started). With --threads equal to the core count, a descheduled OpenMP thread "
                  "stalls every parallel op, which slows many-small-op models (chunk loops: MLP memories, Titans) "
                  "far more than attention; treat the ratios as indicative only and rerun on an idle machine.",
                  highlight=False)

    if args.json:
        payload = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "wall_s": wall, "flops_training_per_sequence": flops,
                   "results": {a: {"cells": {str(n): c for n, c in r.cells.items()}, "memory": r.memory,
                                   "params": r.params} for a, r in results.items()}}
        args.json.write_text(json.dumps(payload, indent=1))
        out.print(f" - raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
