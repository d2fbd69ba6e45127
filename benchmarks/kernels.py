"""Memory Caching read-path kernels: correctness on the chip, then speed and memory, as ratios.

On CUDA, in one run (`--budget-s` total: part 1 until 30% of it, part 2 until 60%, part 3 the rest;
every cell not run for the budget, or by design, prints a line saying so):
1. every op's Triton forward and gradients against its PyTorch reference in float64, bf16 first
   (the training path) then fp32, printing the worst relative error (max |triton - reference| /
   max |reference| over the output and every gradient) per op; Triton 3.4-3.7.0 had Hopper
   backward kernels return wrong gradients elsewhere (flash-linear-attention issue 640), so this
   is measured, not assumed;
2. forward+backward time and peak memory of the Triton ops against the PyTorch gather path
   (implemented below as scaling/models/caching.py did it before it called these ops: one state
   copy per (tile, cached segment) pair, one per (token, slot) for SSC) at L = 4K..32K, C = 64 and 256,
   head dim 64 and 128, bf16; the target cell (L = 8K, C = 64, d = 64) runs first;
3. whole-model forward+backward tokens/s of swla, swla+grm, swla+ssc, titans+grm against the
   Transformer (SDPA) at ~125M parameters, built with scaling.models.LanguageModel (fp32 weights
   under bf16 autocast, eager), whose cached reads all go through these ops (Triton on CUDA).
   `benchmarks/gpu_check.py` answers the issue's targets with the compiled training step; this
   is the longer sweep.
On CPU it runs the reference paths on small shapes against the gather path and says that GPU
numbers need a GPU. Imports only torch, triton, numpy and the source tree.

    python benchmarks/kernels.py            # auto: the GPU run on CUDA, the CPU run otherwise
    python benchmarks/kernels.py --quick    # part 2 at L = 8K only, part 3 at 16K only (the targets' lengths)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels import gated_cached_read, kernel_backend, mlp_cached_read, ssc_cached_read  # noqa: E402
from kernels.matrix_scan import scan_backend, segmented_scan  # noqa: E402
from scaling.models.memory import MatrixMemory, MemoryInputs, SegmentPlan  # noqa: E402

GiB = 2 ** 30


# ---- the PyTorch gather path (today's caching.py), as the baseline -------------------------------

def gather_tables(bounds: list[int], device: torch.device) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(tile length, pair tiles, pair segments): every (tile, cached segment before it) pair."""
    tile = bounds[1] - bounds[0]
    seg = np.searchsorted(np.asarray(bounds[1:-1]), np.arange(0, bounds[-1], tile), side="right")
    tiles = np.repeat(np.arange(len(seg)), seg)
    segs = np.concatenate([np.arange(s) for s in seg]) if seg.sum() else np.zeros(0, dtype=np.int64)
    return tile, torch.as_tensor(tiles, device=device), torch.as_tensor(segs, device=device)


def gather_read(z: torch.Tensor, weights: tuple[torch.Tensor, ...], gates: torch.Tensor, bounds: list[int],
                act: Callable[[torch.Tensor], torch.Tensor] = torch.nn.functional.silu) -> torch.Tensor:
    """sum_i g[t, i] M_i(z_t) by gathering a state copy per (tile, segment) pair (caching.cached_reads)."""
    b, h, length, _ = z.shape
    tile, tiles, segs = gather_tables(bounds, z.device)
    n_tiles = length // tile
    x = z.reshape(b, h, n_tiles, tile, -1)[:, :, tiles]
    for layer, w in enumerate(weights):
        x = torch.matmul(x, w[:, :, segs].transpose(-1, -2))
        if layer + 1 < len(weights):
            x = act(x)
    pair_gates = gates.reshape(b, h, n_tiles, tile, -1).transpose(-1, -2)[:, :, tiles, segs]
    x = x * pair_gates[..., None]
    out = x.new_zeros(b, h, n_tiles, tile, x.shape[-1]).index_add(2, tiles, x)
    return out.reshape(b, h, length, -1)


def gather_ssc(q: torch.Tensor, weights: tuple[torch.Tensor, ...], indices: torch.Tensor, gates: torch.Tensor,
               bounds: list[int], act: Callable[[torch.Tensor], torch.Tensor] = torch.nn.functional.silu) -> torch.Tensor:
    """sum_j g[t, j] M_{idx[t, j]}(q_t) by gathering the weights per (token, slot) (caching.ssc_reads)."""
    seg = torch.searchsorted(torch.tensor(bounds[1:-1], device=q.device), torch.arange(q.shape[2], device=q.device),
                             right=True)
    valid = (indices >= 0) & (indices < seg[:, None])
    idx = indices.clamp(min=0)
    z = q[:, :, :, None, None, :]  # (B,H,L,1,1,d): one row per (token, slot) after broadcasting
    for layer, w in enumerate(weights):
        index = idx.reshape(*idx.shape[:2], -1)[..., None, None].expand(-1, -1, -1, *w.shape[-2:])
        chosen = torch.gather(w, 2, index).view(*idx.shape, *w.shape[-2:])  # (B,H,L,K,out,in)
        z = torch.matmul(z, chosen.transpose(-1, -2))
        if layer + 1 < len(weights):
            z = act(z)
    return (z[..., 0, :] * (gates * valid)[..., None]).sum(3)


# ---- helpers ------------------------------------------------------------------------------------

def constant_bounds(length: int, segment: int) -> list[int]:
    return list(range(0, length + 1, segment))


def log_bounds(length: int, first: int) -> list[int]:
    bounds, end = [0], first
    while end < length:
        bounds.append(end)
        end *= 2
    return bounds + [length]


def leaves(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    return [None if t is None else t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]


def fwd_bwd(fn: Callable, tensors: list, grad: torch.Tensor | None = None) -> tuple[torch.Tensor, list]:
    xs = leaves(tensors)
    out = fn(*xs)
    out.backward(torch.ones_like(out) if grad is None else grad)
    return out.detach(), [x.grad for x in xs if x is not None and x.is_floating_point()]


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(fn: Callable, tensors: list, repeats: int) -> tuple[float, float | None]:
    """(median seconds of forward+backward, peak GPU bytes above the inputs or None on CPU)."""
    fwd_bwd(fn, tensors)  # warm-up (compiles Triton kernels)
    synchronize()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fwd_bwd(fn, tensors)
        synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() - base if cuda else None
    return float(np.median(times)), peak


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


# ---- the ops under test, as (name, builder) --------------------------------------------------

def op_cases(b: int, h: int, length: int, segment: int, d: int, dtype: torch.dtype, device: torch.device,
             top_k: int = 2, expansion: int = 4, with_mlp: bool = True):
    """Yields (name, inputs, op(backend) -> fn, gather fn or None) for one shape."""
    bounds = constant_bounds(length, segment)
    n = len(bounds) - 1
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, device=device) * scale).to(dtype)

    q = rand(b, h, length, d, scale=d ** -0.5)
    s = rand(b, h, n, d, d, scale=d ** -0.5)
    g = torch.randn(b, h, length, n, generator=gen, device=device).softmax(-1).to(dtype)
    top = torch.randn(b, h, length, n, generator=gen, device=device)
    seg = torch.searchsorted(torch.tensor(bounds[1:-1], device=device), torch.arange(length, device=device), right=True)
    top = top.masked_fill(torch.arange(n, device=device)[None, :] >= seg[:, None], float("-inf"))
    k = max(1, min(top_k, n - 1))
    logits, idx = top.topk(k, dim=-1)
    gk = torch.cat([torch.zeros_like(logits[..., :1]), logits], -1).softmax(-1)[..., 1:].to(dtype)
    yield ("grm", [q, s, g], lambda be: (lambda q, s, g: gated_cached_read(q, s, g, bounds, backend=be)),
           lambda q, s, g: gather_read(q, (s,), g, bounds))
    yield ("residual", [q, s], lambda be: (lambda q, s: gated_cached_read(q, s, None, bounds, backend=be)), None)
    yield (f"ssc(k={k})", [q, s, gk], lambda be: (lambda q, s, g: ssc_cached_read(q, s, idx, g, bounds, backend=be)),
           lambda q, s, g: gather_ssc(q, (s,), idx, g, bounds))
    if with_mlp:
        f = expansion * d
        w1, w2 = rand(b, h, n, f, d, scale=d ** -0.5), rand(b, h, n, d, f, scale=f ** -0.5)
        yield ("mlp-grm", [q, w1, w2, g],
               lambda be: (lambda q, a, c, g: mlp_cached_read(q, a, c, g, bounds, backend=be)),
               lambda q, a, c, g: gather_read(q, (a, c), g, bounds))
        yield (f"mlp-ssc(k={k})", [q, w1, w2, gk],
               lambda be: (lambda q, a, c, g: mlp_cached_read(q, a, c, g, bounds, indices=idx, backend=be)),
               lambda q, a, c, g: gather_ssc(q, (a, c), idx, g, bounds))
        yield ("mlp-paper-form", [q, w1, w2, g],  # the model's deep memory: z + LN(W2 GELU(W1 z)) per segment
               lambda be: (lambda q, a, c, g: mlp_cached_read(q, a, c, g, bounds, form="residual", activation="gelu",
                                                              backend=be)), None)
    unit = lambda x: torch.nn.functional.normalize(x.float(), dim=-1).to(dtype)  # noqa: E731
    scan_inputs = [unit(rand(b, h, length, d)), unit(rand(b, h, length, 2, d)), rand(b, h, length, 2, d),
                   torch.rand(b, h, length, 2, generator=gen, device=device).to(dtype),
                   torch.nn.functional.logsigmoid(torch.randn(b, h, length, generator=gen, device=device) + 3.0).to(dtype)]
    yield (SCAN_CASE, scan_inputs, lambda be: base_scan(be, tuple(bounds)), None)


SCAN_CASE = "swla-scan"


def base_scan(backend: str, bounds: tuple[int, ...]) -> Callable[..., torch.Tensor]:
    """SWLA's base scan (two write streams, continuous memory) as one output: the reads plus each
    query read against the sum of the segment states, so the states' gradients are compared too.
    `backend="triton"` on CUDA is flash-linear-attention's kernel through kernels/matrix_scan;
    anything else (the reference, or a CPU run) is MatrixMemory's PyTorch chunked scan."""

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gate: torch.Tensor, log_ret: torch.Tensor) -> torch.Tensor:
        fla_fn = scan_backend(q.device) if backend == "triton" else None
        if fla_fn is not None:
            reads, states = segmented_scan(q, k, v, gate, log_ret, bounds, False, fla_fn)
        else:
            plan = SegmentPlan(seq_len=bounds[-1], chunk_len=math.gcd(64, bounds[1]), bounds=bounds, independent=False)
            memory = MatrixMemory(q.shape[-1])
            (states,), ctx = memory.reference_scan(MemoryInputs(q, k, v, gate, log_ret), plan)
            reads = memory.online_layer(ctx, q, 0)
        return reads + torch.matmul(q, states.sum(2).to(q.dtype).transpose(-1, -2))

    return run


# ---- part 1: correctness ------------------------------------------------------------------------

#: worst relative error (max |candidate - reference| / max |reference| over the output and every
#: gradient) allowed against the float64 reference: bf16 inputs and outputs round at ~4e-3 and the
#: gradients sum many of them; fp32 leaves room for TF32 dots (~5e-4 typical), far below what a
#: wrong kernel gives (order 1).
TOLERANCE = {torch.float32: 2e-3, torch.bfloat16: 3e-2}


@dataclass
class CheckRow:
    """One (op, dtype) correctness cell; `worst` is NaN when the cell was not run (see `note`)."""

    op: str
    dtype: torch.dtype
    worst: float = float("nan")
    tolerance: float = float("nan")
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.note:
            return self.note
        return "ok" if self.worst <= self.tolerance else "WRONG"


def effective_top_k(length: int, segment: int, top_k: int) -> int:
    """The k `op_cases` gives SSC at this shape (at least 1, at most the cached segments)."""
    return max(1, min(top_k, len(constant_bounds(length, segment)) - 2))


def case_names(length: int, segment: int, top_k: int = 2, with_mlp: bool = True) -> list[str]:
    """The op names `op_cases` yields at this shape, in its order (to plan rows before running them)."""
    k = effective_top_k(length, segment, top_k)
    names = ["grm", "residual", f"ssc(k={k})"]
    return names + (["mlp-grm", f"mlp-ssc(k={k})", "mlp-paper-form"] if with_mlp else []) + [SCAN_CASE]


def _upcast(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    return [t if t is None or not t.is_floating_point() else t.double() for t in tensors]


def worst_relative_error(got: tuple[torch.Tensor, list], want: tuple[torch.Tensor, list]) -> float:
    """max over the output and every gradient of max |got - want| / max |want| (NaN counts as wrong)."""
    worst = 0.0
    for a, w in zip([got[0], *got[1]], [want[0], *want[1]]):
        err = float((a.double() - w).abs().max() / w.abs().max().clamp_min(1e-30))
        worst = max(worst, err) if err == err else float("inf")
    return worst


def correctness_rows(device: torch.device, backend: str = "triton", length: int = 1024, segment: int = 64,
                     d: int = 64, batch: int = 2, heads: int = 4, top_k: int = 3,
                     dtypes: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float32),
                     deadline: float = math.inf) -> Iterator[CheckRow]:
    """Each op's `backend` forward and gradients at each dtype against the reference in float64.

    The reference runs on the same inputs upcast to float64 (so its own rounding is out of the
    comparison), with the same output gradient. bf16 comes first: it is the training path, and
    the fp32 builds compile slowest (spilling kernels). Cells left when `deadline`
    (time.monotonic()) has passed are yielded as not run, never dropped.
    """
    for dtype in dtypes:
        for name, tensors, op, _ in op_cases(batch, heads, length, segment, d, dtype, device, top_k=top_k):
            if time.monotonic() > deadline:
                yield CheckRow(name, dtype, note="not run (time budget)")
                continue
            gen = torch.Generator(device=device).manual_seed(1)
            out_grad = torch.randn(batch, heads, length, d, generator=gen, device=device, dtype=torch.float64)
            try:
                want = fwd_bwd(op("reference"), _upcast(tensors), out_grad)
                got = fwd_bwd(op(backend), tensors, out_grad.to(dtype))
            except Exception as exc:  # noqa: BLE001 - one broken op (a compile error, say) must not hide the others
                yield CheckRow(name, dtype, note=f"error: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            yield CheckRow(name, dtype, worst_relative_error(got, want), TOLERANCE[dtype])


def format_check_row(row: CheckRow) -> str:
    worst = f"{row.worst:>14.2e}" if row.worst == row.worst else f"{'-':>14}"
    tol = f"{row.tolerance:>10.0e}" if row.tolerance == row.tolerance else f"{'-':>10}"
    return f"{row.op:<20} {str(row.dtype).removeprefix('torch.'):<9} {worst} {tol}  {row.verdict}"


def check_correctness(device: torch.device, length: int = 1024, segment: int = 64, d: int = 64, batch: int = 2,
                      heads: int = 4, deadline: float = math.inf, backend: str = "triton") -> bool:
    """Print part 1's table; True when every cell ran and is within tolerance."""
    print(f"\n## 1. {backend} vs the float64 reference on this device at L={length}, C={segment}, d={d} "
          "(worst relative error over the output and every gradient)\n")
    print(f"{'op':<20} {'dtype':<9} {'worst rel err':>14} {'tolerance':>10}  verdict")
    ok = True
    for row in correctness_rows(device, backend, length, segment, d, batch, heads, deadline=deadline):
        ok &= row.verdict == "ok"
        print(format_check_row(row), flush=True)
    return ok


# ---- part 2: op speed and memory ----------------------------------------------------------------

@dataclass
class SpeedRow:
    """One op at one shape: fwd+bwd seconds and peak bytes above the inputs, op vs gather (None: OOM)."""

    op: str
    length: int
    segment: int
    d: int
    op_s: float | None = None
    gather_s: float | None = None
    op_peak: float | None = None
    gather_peak: float | None = None
    note: str = ""

    @property
    def speedup(self) -> float | None:
        return self.gather_s / self.op_s if self.op_s and self.gather_s else None

    @property
    def memory_ratio(self) -> float | None:
        if self.op_peak is None or self.gather_peak is None:
            return None
        return self.gather_peak / max(self.op_peak, 1.0)


def _measure_or_oom(fn: Callable, tensors: list, repeats: int) -> tuple[float, float | None] | None:
    try:
        return measure(fn, tensors, repeats)
    except RuntimeError as exc:
        if not is_oom(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


def speed_row(device: torch.device, name: str, length: int, segment: int, d: int, heads: int = 4,
              repeats: int = 3, backend: str = "triton", dtype: torch.dtype = torch.bfloat16) -> SpeedRow:
    """Time and peak memory of op `name` (one of `case_names`) against the gather path, batch 1."""
    row = SpeedRow(name, length, segment, d)
    for case, tensors, op, gather in op_cases(1, heads, length, segment, d, dtype, device,
                                              with_mlp=name.startswith("mlp-")):
        if case != name:
            continue
        if gather is None:
            row.note = "no gather path"
            return row
        mine, theirs = _measure_or_oom(op(backend), tensors, repeats), _measure_or_oom(gather, tensors, repeats)
        if mine:
            row.op_s, row.op_peak = mine
        if theirs:
            row.gather_s, row.gather_peak = theirs
        row.note = "" if mine and theirs else ("op OOM" if not mine else "gather OOM")
        return row
    raise ValueError(f"no op case named {name!r} at L={length}, C={segment}")


SPEED_HEADER = (f"{'op':<14} {'L':>6} {'C':>4} {'d':>4} {'triton ms':>10} {'gather ms':>10} {'speedup':>8} "
                f"{'triton MiB':>11} {'gather MiB':>11} {'memory':>8}")


def format_speed_row(row: SpeedRow) -> str:
    text = [f"{row.op:<14} {row.length:>6} {row.segment:>4} {row.d:>4}"]
    if row.note and row.op_s is None and row.gather_s is None and "OOM" not in row.note:
        return text[0] + "  " + row.note
    text.append(f"{row.op_s * 1e3:>10.2f}" if row.op_s else f"{'OOM':>10}")
    text.append(f"{row.gather_s * 1e3:>10.2f}" if row.gather_s else f"{'OOM':>10}")
    text.append(f"{row.speedup:>7.1f}x" if row.speedup else f"{'-':>8}")
    peaks = row.memory_ratio is not None
    text.append(f"{row.op_peak / 2**20:>11.0f}" if peaks else f"{'-':>11}")
    text.append(f"{row.gather_peak / 2**20:>11.0f}" if peaks else f"{'-':>11}")
    text.append(f"{row.memory_ratio:>7.1f}x" if peaks else f"{'-':>8}")
    return " ".join(text)


#: the cell the issue's target names; it runs first so no budget can skip it
TARGET_CELL = (8192, 64, 64)  # (L, C, d)
MLP_MAX_LENGTH, MLP_MAX_DIM = 8192, 64  # the MLP gather path needs more memory than a GPU has above these


def speed_plan(lengths: list[int], dims: tuple[int, ...], segments: tuple[int, ...]) -> list[tuple[int, int, int, str, str]]:
    """(L, C, d, op, reason not run or '') for every cell, the target cell (L = 8K, C = 64, d = 64) first."""
    cells = []
    for d in dims:
        for segment in segments:
            for length in lengths:
                for name in case_names(length, segment):
                    if name in ("residual", "mlp-paper-form", SCAN_CASE):
                        continue  # no gather path to compare with
                    mlp_too_big = name.startswith("mlp-") and (d > MLP_MAX_DIM or length > MLP_MAX_LENGTH)
                    reason = (f"not run (MLP gather path only at d <= {MLP_MAX_DIM}, L <= {MLP_MAX_LENGTH}: "
                              "it does not fit above)" if mlp_too_big else "")
                    cells.append((length, segment, d, name, reason))
    return sorted(cells, key=lambda c: (c[:3] != TARGET_CELL,))  # stable: the target cell's ops first


def op_benchmark(device: torch.device, lengths: list[int], deadline: float, repeats: int,
                 dims: tuple[int, ...] = (64, 128), segments: tuple[int, ...] = (64, 256), heads: int = 4,
                 backend: str = "triton") -> list[SpeedRow]:
    """Print part 2's table: every planned cell gets a row, run or with the reason it was not."""
    print(f"\n## 2. Cached read fwd+bwd, {backend} vs the PyTorch gather path (bf16, batch 1, {heads} heads)\n")
    print("speedup = gather time / Triton time; memory = gather peak / Triton peak (above the inputs).")
    print("Targets (issues 11, 22): >= 5x faster and >= 10x less memory at L = 8K, C = 64 (run first).\n")
    print(SPEED_HEADER)
    rows = []
    for length, segment, d, name, reason in speed_plan(lengths, dims, segments):
        if not reason and time.monotonic() > deadline:
            reason = "not run (time budget)"
        row = SpeedRow(name, length, segment, d, note=reason) if reason else speed_row(
            device, name, length, segment, d, heads, repeats, backend)
        rows.append(row)
        print(format_speed_row(row), flush=True)
    return rows


# ---- part 3: whole model ------------------------------------------------------------------------

def model_benchmark(device: torch.device, lengths: list[int], deadline: float, width: int = 768,
                    n_layers: int = 12, n_heads: int = 12, vocab: int = 32000) -> None:
    """Forward+backward tokens/s of whole models as training runs them: fp32 weights, bf16 autocast."""
    from scaling.models import LanguageModel, ModelConfig

    print(f"\n## 3. Whole-model training tokens/s (d_model {width}, {n_layers} layers, {n_heads} heads; "
          "768/12/12 is ~125M parameters), fp32 weights under bf16 autocast (the trainer's path), batch 1, eager\n")
    print(f"The model's cached reads run through the kernels ops (backend {kernel_backend(device)}); "
          "benchmarks/gpu_check.py times the compiled trainer step.")
    print("Targets (issues 11, 22) at 16K: swla+grm >= transformer; swla+ssc >= 0.8x swla.\n")
    archs = {"transformer": dict(mixer="attention"), "swla": dict(mixer="swla", memory="matrix"),
             "swla+grm": dict(mixer="swla", memory="matrix", caching="grm", segment_len=256),
             "swla+ssc": dict(mixer="swla", memory="matrix", caching="ssc", segment_len=256, top_k=2),
             "titans+grm": dict(mixer="titans", memory="mlp", caching="grm", segment_len=256)}
    print(f"{'arch':<12} " + " ".join(f"{f'L={n}':>16}" for n in lengths))
    for arch, fields in archs.items():
        cells = []
        last = None  # (length, seconds per step) of this arch's previous cell
        for length in lengths:
            predicted_s = 0.0 if last is None else 3 * last[1] * (length / last[0]) ** 2
            if time.monotonic() + predicted_s > deadline:
                cells.append("not run (budget)")
                continue
            model = logits = None
            try:
                cfg = ModelConfig(vocab_size=vocab, d_model=width, n_layers=n_layers, n_heads=n_heads, seq_len=length,
                                  **fields)
                model = LanguageModel(cfg).to(device=device)
                tokens = torch.randint(0, vocab, (1, length), device=device)
                step_times = []
                for rep in range(3):
                    synchronize()
                    start = time.perf_counter()
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                        logits = model(tokens)
                    torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten()).backward()
                    synchronize()
                    if rep:
                        step_times.append(time.perf_counter() - start)
                last = (length, float(np.median(step_times)))
                cells.append(f"{length / last[1]:>12.0f} t/s")
            except RuntimeError as exc:
                if not is_oom(exc):
                    raise
                cells.append("OOM")
            finally:
                model = logits = None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        print(f"{arch:<12} " + " ".join(f"{c:>16}" for c in cells), flush=True)


# ---- CPU run ------------------------------------------------------------------------------------

def cpu_run(repeats: int) -> None:
    print("No CUDA device: running the PyTorch reference paths on small shapes against the gather path.")
    print("GPU numbers (Triton speed, peak memory, whole-model tokens/s) need a GPU: run this script on one.\n")
    print(f"{'op':<14} {'L':>6} {'C':>4} {'d':>4} {'reference ms':>13} {'gather ms':>10} {'ratio':>7} "
          f"{'max |ref - gather|':>19}")
    device = torch.device("cpu")
    for length in (1024, 2048):
        for name, tensors, op, gather in op_cases(1, 4, length, 64, 32, torch.float32, device, with_mlp=True):
            if gather is None:
                continue
            ref, _ = measure(op("reference"), tensors, repeats)
            gat, _ = measure(gather, tensors, repeats)
            with torch.no_grad():
                diff = float((op("reference")(*tensors) - gather(*tensors)).abs().max())
            print(f"{name:<14} {length:>6} {64:>4} {32:>4} {ref * 1e3:>13.1f} {gat * 1e3:>10.1f} {gat / ref:>6.2f}x "
                  f"{diff:>19.1e}", flush=True)
    print("\nratio = gather time / reference time (above 1: the bounded-memory reference is faster).")
    cpu_memory()


CHILD_FLAG = "--memory-child"
CHILD_LIMIT_BYTES = 8 * GiB


def cpu_memory(length: int = 8192) -> None:
    """Peak extra RSS of MLP-memory SSC fwd+bwd at 8K, reference vs gather, each in a fresh process.

    The shape of benchmarks/mixers.py's SSC cells (d_model 256: 4 heads of 64, C = 256, expansion
    4, k = 2), where the gather path ran out of memory. Each child runs under an 8 GiB address-space
    limit, so an allocation failure is reported instead of waking the OOM killer.
    """
    import subprocess

    print(f"\nPeak extra memory, MLP memory SSC (k=2) fwd+bwd at L={length}, 4 heads x 64, C=256, expansion 4, "
          f"fp32 (each in a fresh process, {CHILD_LIMIT_BYTES / GiB:.0f} GiB address-space limit):")
    for path in ("reference", "gather"):
        proc = subprocess.run([sys.executable, __file__, CHILD_FLAG, path, str(length)], capture_output=True,
                              text=True, timeout=600)
        lines = proc.stdout.strip().splitlines()
        print(f"  {path:<10} {lines[-1] if lines else 'failed: ' + proc.stderr.strip()[-200:]}", flush=True)


def rss_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (the high-water mark) of this process, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(path: str, length: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_LIMIT_BYTES, CHILD_LIMIT_BYTES))
    torch.set_num_threads(1)
    case = {name: (tensors, op, gather) for name, tensors, op, gather in
            op_cases(1, 4, length, 256, 64, torch.float32, torch.device("cpu"))}["mlp-ssc(k=2)"]
    tensors, op, gather = case
    fn = op("reference") if path == "reference" else gather
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS (Linux >= 4.0)
    before = rss_bytes("VmRSS")
    try:
        start = time.perf_counter()
        fwd_bwd(fn, tensors)
        peak = rss_bytes("VmHWM") - before
        print(f"{peak / 2**20:8.0f} MiB  ({time.perf_counter() - start:.1f} s)")
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc).lower() and not is_oom(exc):
            raise
        print(f"     OOM  (allocation failed under the {CHILD_LIMIT_BYTES / GiB:.0f} GiB limit)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="part 2 at L = 8K and part 3 at L = 16K only: the lengths the targets name")
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="time budget (seconds): part 1 stops starting cells at 30%%, part 2 at 60%%, part 3 at 100%%")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-model", action="store_true", help="skip part 3 (whole-model tokens/s)")
    parser.add_argument("--model-max-len", type=int, default=16384,
                        help="longest context of part 3 (default 16K, where the issue's targets are)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_FLAG]:
        memory_child(argv[1], int(argv[2]))
        return 0
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        cpu_run(args.repeats)
        return 0
    start = time.monotonic()
    device = torch.device("cuda")
    print(f"# kernels benchmark on {torch.cuda.get_device_name()} - torch {torch.__version__}, "
          f"triton {__import__('triton').__version__}, MCSCALE_KERNELS={os.environ.get('MCSCALE_KERNELS', 'auto')}")
    ok = check_correctness(device, deadline=start + 0.3 * args.budget_s)
    print("\nall ops within tolerance on this chip" if ok
          else "\nWRONG or not-run rows above: do not trust the timings of kernels that are WRONG on this chip")
    op_lengths = [8192] if args.quick else [4096, 8192, 16384, 32768]
    model_lengths = [16384] if args.quick else [4096, 8192, 16384]
    op_benchmark(device, op_lengths, start + 0.6 * args.budget_s, args.repeats)
    if not args.skip_model:
        model_benchmark(device, [n for n in model_lengths if n <= args.model_max_len], start + args.budget_s)
    print(f"\ntotal {time.monotonic() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
