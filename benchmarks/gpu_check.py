"""GPU check: answers issue 22's targets on one H100/H200 inside 9 minutes, stage by stage.

Five stages, each with a hard deadline derived from `--budget-s` (default 540 s, counted from the
start of the script); a stage past its deadline is stopped (SIGALRM), its unfinished rows are
printed as "not run" with the reason, and the next stage starts. Nothing is dropped silently:
every stage prints its table, and a stage that cannot start prints a line saying so.

(a) versions (python, torch, triton, fla-core, einops, numpy, device), the dtypes the cached-read
    ops (`gated_cached_read`, `ssc_cached_read`, `mlp_cached_read`, at their entry points and at
    the autograd.Function that runs the kernel) and the base-memory scans receive in one bf16
    autocast training step, and the host syncs of one training step per architecture
    (`scaling.train.host_syncs.HostSyncCounter`; on CUDA also the warnings of
    `torch.cuda.set_sync_debug_mode("warn")`).
(b) every kernel op's forward and gradients in bf16 and fp32 against the PyTorch reference in
    float64 (worst relative error per op and dtype; `benchmarks/kernels.py` part 1).
(c) the cached read at L = 8K, C = 64 (d = 64, bf16): fwd+bwd time and peak memory of the op
    against the PyTorch gather path (`benchmarks/kernels.py` part 2's gather baseline).
(d) the Transformer at ~125M non-embedding parameters and 2K context: the trainer's step
    (fp32 weights, bf16 autocast, `torch.compile(model)`, cross-entropy, backward, fused AdamW),
    timed over a few steps after compilation; MFU against the datasheet bf16 peak
    (`scaling.train.throughput`) with the FLOPs of `scaling.models.flops`, and against a bf16
    matmul measured in the same run.
(e) swla, swla+grm, swla+ssc and the Transformer at ~125M (equal non-embedding parameters by
    `scaling.models.ladder.shape_for_params`) and 16K context, the same compiled step: tokens/s.
    Every architecture processes the same tokens per step (`--tps-sequences` sequences of 16K,
    capped by `scaling.train.memory.fitting_micro_batch` and halved on out-of-memory), so
    tokens/s compares like with like. Each cell compiles once under a compile-time budget
    (`--compile-budget-frac` of its time share); a compile past it, or one that fails, is
    abandoned and the cell runs eagerly, marked so.

A final "targets" block prints each target, its measured value and PASS / FAIL / NOT RUN.

Only torch, triton, numpy, the standard library, this source tree and (when importable, on CUDA)
fla-core/einops are imported, so it runs on a bare GPU machine:

    PYTHONPATH=. python3 benchmarks/gpu_check.py             # the GPU check (<= --budget-s seconds)
    PYTHONPATH=. python3 benchmarks/gpu_check.py --cpu       # tiny CPU version of every stage (CI smoke)

`--cpu` (also the fallback without CUDA) runs every stage at tiny shapes, eagerly; on CPU the ops
run their reference path, so stage (b) compares the reference in bf16/fp32 with float64 and the
GPU targets print NOT RUN.
"""

from __future__ import annotations

import time

START = time.monotonic()  # the budget counts from here, before torch's import

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field, fields, is_dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kernels  # noqa: E402
from kernels.common.dispatch import interpreting  # noqa: E402
from scaling.models.architectures import parse_architecture  # noqa: E402
from scaling.models.config import ModelConfig  # noqa: E402
from scaling.models.flops import training_flops_per_token  # noqa: E402
from scaling.models.ladder import format_count, shape_for_params  # noqa: E402
from scaling.models.model import LanguageModel  # noqa: E402
from scaling.train.device import autocast  # noqa: E402
from scaling.train.host_syncs import HostSyncCounter  # noqa: E402
from scaling.train.memory import fitting_micro_batch  # noqa: E402
from scaling.train.throughput import peak_flops  # noqa: E402

GiB = 2 ** 30
OPS = ("gated_cached_read", "ssc_cached_read", "mlp_cached_read")
PROBE_ARCHS = ("transformer", "swla", "swla+grm", "swla+ssc", "titans+grm")  # together they call every op
TPS_ARCHS = ("transformer", "swla", "swla+grm", "swla+ssc")
#: fla-core ops a base-memory scan may call (wrapped in stage (a) to see the dtypes they get)
FLA_MODULES = ("fla.ops.simple_gla", "fla.ops.gla", "fla.ops.delta_rule", "fla.ops.gated_delta_rule",
               "fla.ops.linear_attn")
#: cumulative share of the budget at which each stage's deadline falls (unused time rolls forward)
STAGE_ENDS = {"a": 0.07, "b": 0.21, "c": 0.27, "d": 0.45, "e": 1.0}
STAGE_TITLES = {
    "a": "versions, op dtypes under bf16 autocast, host syncs per training step",
    "b": "every kernel op vs the float64 reference (forward and gradients, bf16 and fp32)",
    "c": "cached read at L = 8K, C = 64: op vs the PyTorch gather path",
    "d": "Transformer ~125M / 2K, bf16 autocast, compiled: MFU",
    "e": "swla, swla+grm, swla+ssc, Transformer ~125M / 16K, compiled: tokens/s",
}
MIN_STAGE_S = 1.0  # a stage with less time than this left is not started


# ---- settings -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shapes:
    """Every shape the stages use; GPU_SHAPES answer the targets, CPU_SHAPES are the smoke test."""

    vocab: int
    probe_d_model: int  # (a): small models that call every op
    probe_heads: int
    probe_len: int
    probe_segment: int
    probe_layers: int
    kernel_len: int  # (b)
    kernel_segment: int
    kernel_dim: int
    kernel_batch: int
    kernel_heads: int
    read_len: int  # (c)
    read_segment: int
    read_dim: int
    read_heads: int
    read_repeats: int
    model_params: float  # (d), (e): non-embedding parameters
    mfu_len: int
    mfu_sequences: int
    tps_len: int
    tps_sequences: int
    segment_len: int  # MC's C and SSC's k in (e)
    top_k: int
    steps: int  # timed steps per cell (fewer when its time share runs out)
    warmup_steps: int  # untimed steps after the compile step


GPU_SHAPES = Shapes(vocab=50304, probe_d_model=256, probe_heads=4, probe_len=2048, probe_segment=256, probe_layers=2,
                    kernel_len=1024, kernel_segment=64, kernel_dim=64, kernel_batch=2, kernel_heads=4,
                    read_len=8192, read_segment=64, read_dim=64, read_heads=4, read_repeats=5,
                    model_params=125e6, mfu_len=2048, mfu_sequences=8, tps_len=16384, tps_sequences=1,
                    segment_len=256, top_k=2, steps=8, warmup_steps=1)
CPU_SHAPES = Shapes(vocab=256, probe_d_model=64, probe_heads=2, probe_len=128, probe_segment=32, probe_layers=1,
                    kernel_len=64, kernel_segment=16, kernel_dim=16, kernel_batch=1, kernel_heads=2,
                    read_len=512, read_segment=64, read_dim=16, read_heads=2, read_repeats=1,
                    model_params=3e4, mfu_len=256, mfu_sequences=2, tps_len=256, tps_sequences=1,
                    segment_len=64, top_k=2, steps=2, warmup_steps=0)


# ---- deadlines ----------------------------------------------------------------------------------

class DeadlineExpired(BaseException):
    """Raised by SIGALRM inside the code a `Deadlines.limit` guards. A BaseException, so library
    code that catches Exception (a compiler's fallbacks, say) cannot swallow it."""

    def __init__(self, token: object) -> None:
        super().__init__("deadline expired")
        self.token = token


@dataclass
class Limit:
    """One guarded region: its absolute end (time.monotonic) and whether it was cut off."""

    end: float
    label: str
    expired: bool = False


class Deadlines:
    """Nested hard deadlines on the main thread: SIGALRM fires at the nearest one and raises
    `DeadlineExpired` there; the `limit` whose deadline it was swallows it and sets `expired`.

    Python runs the handler between bytecodes, so a long C call (a kernel launch, ptxas through
    subprocess.run, which kills the child on the exception) ends first; the watchdog thread in
    `main` covers a call that never returns.
    """

    def __init__(self) -> None:
        self.stack: list[Limit] = []
        self.enabled = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
        self.previous: Any = None
        if self.enabled:
            self.previous = signal.signal(signal.SIGALRM, self._fire)

    def _arm(self) -> None:
        if not self.enabled:
            return
        if not self.stack:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        signal.setitimer(signal.ITIMER_REAL, max(min(x.end for x in self.stack) - time.monotonic(), 1e-3))

    def _fire(self, signum: int, frame: Any) -> None:
        due = [x for x in self.stack if x.end <= time.monotonic() + 1e-3]
        if not due:
            self._arm()
            return
        outermost = due[0]  # the outermost expired region: everything inside it is cut off too
        raise DeadlineExpired(outermost)

    def remaining(self) -> float:
        return min((x.end for x in self.stack), default=math.inf) - time.monotonic()

    @contextlib.contextmanager
    def limit(self, seconds: float, label: str) -> Iterator[Limit]:
        region = Limit(time.monotonic() + max(seconds, 0.0), label)
        self.stack.append(region)
        self._arm()
        try:
            yield region
        except DeadlineExpired as exc:
            if exc.token is not region:
                raise
            region.expired = True
        finally:
            if region in self.stack:
                self.stack.remove(region)
            self._arm()

    def prune(self, keep: Limit) -> None:
        """Forget every region nested inside `keep` (after one of them escaped its `with`)."""
        if keep in self.stack:
            del self.stack[self.stack.index(keep) + 1:]
        self._arm()

    def disarm(self) -> None:
        """Stop the timer and give SIGALRM back to whoever had it (pytest-timeout, say)."""
        self.stack.clear()
        self._arm()
        if self.enabled and self.previous is not None:
            signal.signal(signal.SIGALRM, self.previous)
            self.enabled = False


# ---- tables and targets -------------------------------------------------------------------------

@dataclass
class Row:
    cells: dict[str, str]
    done: bool = False
    note: str = ""


class Table:
    """A stage's table with its rows planned before anything runs: a row never filled prints the
    reason it was not run (the stage's deadline, unless a cell gave another), never disappears."""

    def __init__(self, title: str, columns: Sequence[str], text_columns: Sequence[str] = ()) -> None:
        self.title, self.columns = title, tuple(columns) + ("note",)
        self.left = {0, len(self.columns) - 1} | {self.columns.index(c) for c in text_columns}
        self.rows: dict[str, Row] = {}
        self.footer: list[str] = []

    def plan(self, key: str, **cells: str) -> None:
        self.rows[key] = Row(dict(cells))

    def fill(self, key: str, note: str = "", **cells: str) -> None:
        row = self.rows.setdefault(key, Row({}))
        row.cells.update(cells)
        row.done, row.note = True, note

    def expand(self, key: str, rows: dict[str, Row]) -> None:
        """Replace the planned row `key` by `rows`, in its place (one arch's several functions, say)."""
        if key not in self.rows:
            self.rows.update(rows)
            return
        self.rows = {k2: v2 for k, v in self.rows.items() for k2, v2 in (rows.items() if k == key else [(k, v)])}

    def skip(self, key: str, note: str) -> None:
        row = self.rows.setdefault(key, Row({}))
        row.note = note

    def render(self, unfinished: str) -> str:
        body = [[row.cells.get(c, "-") for c in self.columns[:-1]] + [row.note if (row.done or row.note) else unfinished]
                for row in self.rows.values()]
        if not body:
            body = [["-"] * (len(self.columns) - 1) + [unfinished or "no rows"]]
        widths = [max(len(r[i]) for r in [list(self.columns), *body]) for i in range(len(self.columns))]
        lines = [self.title, ""]
        for i, r in enumerate([list(self.columns), *body]):
            lines.append("  ".join(v.ljust(w) if j in self.left else v.rjust(w)
                                   for j, (v, w) in enumerate(zip(r, widths))).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines + self.footer)


@dataclass
class Target:
    """One line of the final block: what is measured, the bar, the value and the verdict."""

    text: str
    bar: str
    value: str = "-"
    verdict: str = "NOT RUN"
    why: str = ""


def make_targets() -> dict[str, Target]:
    return {
        "dtypes": Target("(a) cached-read kernels get bf16 q/states/gates under bf16 autocast", "all bf16"),
        "syncs": Target("(a) host syncs in one training step (most over the probe archs)", "0"),
        "kernels": Target("(b) every op's fwd+grads within tolerance of the float64 reference", "all ok"),
        "read_speed": Target("(c) cached read (grm) L=8K C=64: gather time / op time", ">= 5x"),
        "read_memory": Target("(c) cached read (grm) L=8K C=64: gather peak / op peak", ">= 10x"),
        "mfu": Target("(d) Transformer ~125M/2K bf16 compiled: MFU (datasheet peak)", ">= 35%"),
        "grm_vs_transformer": Target("(e) tokens/s at 16K: swla+grm / transformer", ">= 1.00"),
        "ssc_vs_swla": Target("(e) tokens/s at 16K: swla+ssc / swla", ">= 0.80"),
        "cpu_scan": Target("CPU: base scan bwd per chunk at 8K / at 2K", "<= 1.3x", why="measured by "
                           "benchmarks/scaling_with_length.py, not here"),
    }


def render_targets(targets: dict[str, Target]) -> str:
    rows = [("target", "bar", "measured", "verdict", "")] + [(t.text, t.bar, t.value, t.verdict, t.why)
                                                             for t in targets.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["", "## targets", ""]
    for i, r in enumerate(rows):
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths[:4]))
    return "\n".join(lines)


def judge(target: Target, value: float, bar: float, text: str, higher_is_better: bool = True,
          gpu: bool = True, why: str = "") -> None:
    """Fill a target from a measured value; on CPU a GPU target keeps NOT RUN (tiny shapes)."""
    target.value = text
    if not gpu:
        target.verdict = "NOT RUN"
        target.why = "needs a GPU" + (" (the value is the CPU smoke run's, at tiny shapes)" if text != "-" else "")
    elif not math.isfinite(value):
        target.verdict, target.why = "NOT RUN", why or "no value"
    else:
        target.verdict = "PASS" if (value >= bar if higher_is_better else value <= bar) else "FAIL"
        target.why = why


# ---- run context --------------------------------------------------------------------------------

@dataclass
class Context:
    args: argparse.Namespace
    shapes: Shapes
    device: torch.device
    deadlines: Deadlines
    targets: dict[str, Target]
    tables: list[Table] = field(default_factory=list)
    bench: ModuleType | None = None  # benchmarks/kernels.py, loaded once

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def table(self, title: str, columns: Sequence[str], text_columns: Sequence[str] = ()) -> Table:
        t = Table(title, columns, text_columns)
        self.tables.append(t)
        return t

    def synchronize(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def kernel_bench() -> ModuleType:
    """benchmarks/kernels.py as a module (its op cases, gather baseline and timing helpers)."""
    path = REPO / "benchmarks" / "kernels.py"
    spec = importlib.util.spec_from_file_location("mcscale_benchmarks_kernels", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def short_dtype(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}.get(
        dtype, str(dtype).removeprefix("torch."))


def model_config(arch: str, params: float, seq_len: int, shapes: Shapes) -> ModelConfig:
    """~`params` non-embedding parameters of `arch` at head dim 64 (32 on the CPU smoke), as a study sizes it."""
    parsed = parse_architecture(arch)
    fields_ = dict(vocab_size=shapes.vocab, d_model=64, n_heads=1, seq_len=seq_len, chunk_len=64,
                   **parsed.config_fields())
    if parsed.caching != "none":
        fields_.update(segment_len=shapes.segment_len, top_k=shapes.top_k)
    head_dim = 64 if params >= 1e6 else 32
    return shape_for_params(params, ModelConfig(**fields_), head_dim=head_dim).config


def probe_config(arch: str, shapes: Shapes) -> ModelConfig:
    parsed = parse_architecture(arch)
    fields_ = dict(vocab_size=min(shapes.vocab, 4096), d_model=shapes.probe_d_model, n_heads=shapes.probe_heads,
                   n_layers=shapes.probe_layers, seq_len=shapes.probe_len, chunk_len=min(64, shapes.probe_segment), **parsed.config_fields())
    if parsed.caching != "none":
        fields_.update(segment_len=shapes.probe_segment, top_k=2)
    return ModelConfig(**fields_)


class TrainStep:
    """The trainer's step (`scaling.train.loop._step_loss` + the optimiser) on random tokens:
    forward under bf16 autocast (fp32 weights), cross-entropy on fp32 logits, backward, fused
    AdamW, zero_grad. No `.item()`: the step itself adds no host sync."""

    def __init__(self, cfg: ModelConfig, micro: int, device: torch.device, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = LanguageModel(cfg).to(device)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        # fused on CPU too (the trainer uses it on CUDA only): the unfused CPU AdamW reads each step
        # counter with .item(), which would count as host syncs that no CUDA step has
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=True)
        tokens = torch.randint(0, cfg.vocab_size, (micro, cfg.seq_len + 1), device=device)
        self.inputs, self.targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
        self.device = device

    def __call__(self) -> None:
        with autocast(self.device, "bf16"):
            logits = self.forward(self.inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), self.targets.flatten())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def release(ctx: Context) -> None:
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


# ---- stage (a): versions, dtypes, host syncs -----------------------------------------------------

def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class DtypeRecorder:
    """Temporarily wraps functions to record the dtypes of the floating tensors they receive.

    Targets: the ops' entry points wherever a loaded module of this tree holds them (what
    caching.py passes), the autograd.Functions' `forward` (what the kernel or reference computes
    with: the dtype after any cast inside the op), every memory class's `scan` (the base scan's
    inputs) and fla-core's chunk ops where they are importable (the fla scan's inputs).
    """

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
        self.arch = ""
        self._undo: list[Callable[[], None]] = []

    @staticmethod
    def describe(signature: inspect.Signature | None, args: tuple, kwargs: dict) -> str:
        named: list[tuple[str, Any]] = []
        if signature is not None:
            try:
                named = list(signature.bind_partial(*args, **kwargs).arguments.items())
            except TypeError:
                named = []
        if not named:
            named = [(f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
        parts = []
        for name, value in named:
            if is_dataclass(value) and not isinstance(value, type):
                for f in fields(value):
                    item = getattr(value, f.name)
                    if isinstance(item, torch.Tensor) and item.is_floating_point():
                        parts.append(f"{f.name}={short_dtype(item.dtype)}")
            elif isinstance(value, torch.Tensor) and value.is_floating_point():
                parts.append(f"{name}={short_dtype(value.dtype)}")
            elif isinstance(value, (tuple, list)):
                dts = [short_dtype(v.dtype) for v in value if isinstance(v, torch.Tensor) and v.is_floating_point()]
                if dts:
                    parts.append(f"{name}=({','.join(dts)})")
        return " ".join(parts) or "(no float tensors)"

    def _wrapper(self, original: Callable, where: str, name: str, skip_first: bool = False) -> Callable:
        try:
            signature: inspect.Signature | None = inspect.signature(original)
        except (TypeError, ValueError):
            signature = None
        recorder = self

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            shown = args[1:] if skip_first else args
            sig = signature
            if skip_first and sig is not None:
                sig = sig.replace(parameters=list(sig.parameters.values())[1:])
            recorder.seen[(recorder.arch, where, name)][recorder.describe(sig, shown, kwargs)] += 1
            return original(*args, **kwargs)

        wrapped.__wrapped__ = original  # type: ignore[attr-defined]
        return wrapped

    def replace_everywhere(self, original: Callable, where: str, name: str,
                           prefixes: tuple[str, ...] = ("scaling", "kernels", "fla")) -> int:
        """Swap every loaded module attribute that *is* `original` (however it was imported)."""
        wrapped = self._wrapper(original, where, name)
        count = 0
        for module_name, module in list(sys.modules.items()):
            if module is None or not module_name.startswith(prefixes):
                continue
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, wrapped)
                    self._undo.append(lambda m=module, a=attr, v=value: setattr(m, a, v))
                    count += 1
        return count

    def wrap_method(self, owner: type, attr: str, where: str, static: bool, skip_first: bool) -> None:
        raw = vars(owner)[attr]
        function = raw.__func__ if isinstance(raw, staticmethod) else raw
        wrapped = self._wrapper(function, where, f"{owner.__name__}.{attr}", skip_first=skip_first)
        setattr(owner, attr, staticmethod(wrapped) if static else wrapped)
        self._undo.append(lambda: setattr(owner, attr, raw))

    def install(self, device: torch.device) -> list[str]:
        """Wrap every target; returns what was wrapped (for the table's footer)."""
        import scaling.models.memory as memory_module

        wrapped = []
        for op in OPS:
            if self.replace_everywhere(getattr(kernels, op), "op entry", op):
                wrapped.append(op)
        function_modules = ["kernels.matrix_read.reference", "kernels.mlp_read.reference"]
        if device.type == "cuda" or interpreting():
            function_modules += ["kernels.matrix_read.function", "kernels.mlp_read.function"]
        for module_name in function_modules:
            module = importlib.import_module(module_name)
            for value in list(vars(module).values()):
                if isinstance(value, type) and issubclass(value, torch.autograd.Function) and \
                        value.__module__ == module_name and "forward" in vars(value):
                    self.wrap_method(value, "forward", "kernel Function", static=True, skip_first=True)
                    wrapped.append(f"{value.__name__}.forward")
        for value in list(vars(memory_module).values()):
            if isinstance(value, type) and value.__module__ == memory_module.__name__ and "scan" in vars(value):
                self.wrap_method(value, "scan", "base scan", static=False, skip_first=True)
                wrapped.append(f"{value.__name__}.scan")
        if device.type == "cuda":
            for module_name in FLA_MODULES:
                try:
                    module = importlib.import_module(module_name)
                except Exception:  # noqa: BLE001 - fla is optional; a missing op is simply not watched
                    continue
                for attr in dir(module):
                    value = getattr(module, attr)
                    if attr.startswith(("chunk_", "fused_chunk_")) and callable(value) and \
                            self.replace_everywhere(value, "fla op", attr):
                        wrapped.append(f"fla {attr}")
        return wrapped

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()


def stage_a(ctx: Context) -> None:
    shapes = ctx.shapes
    versions = ctx.table("versions", ("component", "version"), text_columns=("version",))
    versions.fill("python", component="python", version=platform.python_version())
    versions.fill("torch", component="torch", version=torch.__version__)
    versions.fill("triton", component="triton", version=version_of("triton"))
    versions.fill("numpy", component="numpy", version=np.__version__)
    fla_note = ""
    if ctx.cuda:
        try:
            import fla  # noqa: F401

            fla_note = "imported"
        except Exception as exc:  # noqa: BLE001 - fla is optional; say why it is missing
            fla_note = f"not importable: {type(exc).__name__}: {str(exc)[:80]}"
    else:
        fla_note = "not imported (no CUDA: fla's Triton kernels need a GPU)"
    versions.fill("fla", component="fla-core", version=version_of("fla-core"), note=fla_note)
    versions.fill("einops", component="einops", version=version_of("einops"))
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        versions.fill("device", component="device", version=torch.cuda.get_device_name(ctx.device),
                      note=f"sm_{props.major}{props.minor}, {props.multi_processor_count} SMs, "
                           f"{props.total_memory / GiB:.0f} GiB, CUDA {torch.version.cuda}")
    else:
        versions.fill("device", component="device", version="cpu", note=f"{os.cpu_count()} cores, "
                      f"{torch.get_num_threads()} torch threads")
    versions.fill("backend", component="cached-read backend", version=kernels.kernel_backend(ctx.device),
                  note=f"MCSCALE_KERNELS={os.environ.get('MCSCALE_KERNELS', 'auto')}")

    dtypes = ctx.table("dtypes each function received in one bf16 autocast training step (eager, probe models "
                       f"{shapes.probe_layers} layer(s), d_model {shapes.probe_d_model}, {shapes.probe_heads} heads, "
                       f"L {shapes.probe_len}, "
                       f"C {shapes.probe_segment})", ("arch", "where", "function", "float inputs (calls)"),
                       text_columns=("where", "function", "float inputs (calls)"))
    syncs = ctx.table("host syncs in one training step (the second: caches built by the first are allowed)",
                      ("arch", "HostSyncCounter", "ops", "cuda sync warnings"), text_columns=("ops",))
    for arch in PROBE_ARCHS:
        dtypes.plan(arch, arch=arch)
        syncs.plan(arch, arch=arch)
    recorder = DtypeRecorder()
    sync_counts: list[int] = []
    kernel_dtypes: list[tuple[str, str]] = []

    def show_dtypes(arch: str, finished: bool) -> None:
        """The dtypes `arch` was seen with, also when its step was cut off (the wrappers record
        on entry, so a step stopped inside a kernel's compilation still shows what it was given)."""
        seen = {k: v for k, v in recorder.seen.items() if k[0] == arch}
        if not seen and not finished:
            return
        rows = {}
        for (_, where, name), descs in sorted(seen.items(), key=lambda kv: (kv[0][1], kv[0][2])):
            text = "; ".join(f"{d} ({n})" for d, n in descs.items())
            rows[f"{arch}/{where}/{name}"] = Row(dict(arch=arch, where=where, function=name,
                                                      **{"float inputs (calls)": text}),
                                                 done=True, note="" if finished else "step cut off here")
            if where == "kernel Function":
                kernel_dtypes.extend((f"{arch} {name}", d) for d in descs)
        dtypes.expand(arch, rows or {arch: Row(dict(arch=arch), done=True, note="calls none of the watched functions")})

    try:
        watched = recorder.install(ctx.device)
        dtypes.footer.append(f"\nwatched: {', '.join(watched)}")
        for arch in PROBE_ARCHS:
            try:
                step = TrainStep(probe_config(arch, shapes), 1, ctx.device)
                recorder.arch, finished = arch, False
                try:
                    step()
                    ctx.synchronize()
                    finished = True
                finally:
                    recorder.arch = ""
                    show_dtypes(arch, finished)
                count, ops, warned = count_syncs(step, ctx)
                sync_counts.append(count)
                syncs.fill(arch, arch=arch, HostSyncCounter=str(count),
                           ops=", ".join(f"{k.removeprefix('aten::')} x{v}" for k, v in ops.most_common()) or "-",
                           **{"cuda sync warnings": str(warned) if warned is not None else "- (no CUDA)"})
                del step
                release(ctx)
            except Exception as exc:  # noqa: BLE001 - one arch's failure is reported, the others still run
                report_error(exc)
                note = f"error: {type(exc).__name__}: {str(exc)[:100]}"
                dtypes.fill(arch, arch=arch, note=note)
                syncs.fill(arch, arch=arch, note=note)
    finally:
        recorder.uninstall()
        judge_dtypes_and_syncs(ctx, kernel_dtypes, sync_counts)


def judge_dtypes_and_syncs(ctx: Context, kernel_dtypes: list[tuple[str, str]], sync_counts: list[int]) -> None:
    """Targets of stage (a): every kernel Function input bf16; no host sync in any probe's step."""
    if kernel_dtypes:
        off = [f"{who}: {d}" for who, d in kernel_dtypes if any(not p.endswith("=bf16") for p in d.split())]
        target = ctx.targets["dtypes"]
        target.value = "all bf16" if not off else off[0] + (f" (+{len(off) - 1} more)" if len(off) > 1 else "")
        target.verdict = "PASS" if not off else "FAIL"
        if not ctx.cuda:
            target.why = "CPU autocast (CUDA's policy differs: run on a GPU)"
    if sync_counts:
        most = max(sync_counts)
        target = ctx.targets["syncs"]
        target.value = str(most) + ("" if len(sync_counts) == len(PROBE_ARCHS)
                                    else f" ({len(sync_counts)} of {len(PROBE_ARCHS)} archs counted)")
        target.verdict = "FAIL" if most else ("PASS" if len(sync_counts) == len(PROBE_ARCHS) else "NOT RUN")


def count_syncs(step: TrainStep, ctx: Context) -> tuple[int, Counter[str], int | None]:
    """(HostSyncCounter's count, its ops, CUDA's sync-debug warnings or None on CPU) of one step."""
    if not ctx.cuda:
        with HostSyncCounter() as counter:
            step()
        return counter.count, counter.ops, None
    ctx.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with HostSyncCounter() as counter:
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    ctx.synchronize()
    warned = sum("synchroniz" in str(w.message).lower() for w in caught)
    return counter.count, counter.ops, warned


def report_error(exc: BaseException) -> None:
    """The traceback's tail to stderr: stdout keeps the tables readable."""
    print("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:]), file=sys.stderr, flush=True)


# ---- stage (b): kernel correctness ---------------------------------------------------------------

def candidate_backend(ctx: Context) -> str:
    """Triton on CUDA (or in the interpreter); the PyTorch reference elsewhere."""
    return "triton" if ctx.cuda or interpreting() else "reference"


def stage_b(ctx: Context) -> None:
    s, bench = ctx.shapes, ctx.bench
    assert bench is not None
    backend = candidate_backend(ctx)
    table = ctx.table(f"{backend} vs the float64 reference at L={s.kernel_len}, C={s.kernel_segment}, d={s.kernel_dim}, "
                      f"batch {s.kernel_batch}, {s.kernel_heads} heads (worst of max|err| / max|ref| over the output "
                      "and every gradient); bf16 first", ("op", "dtype", "worst rel err", "tolerance", "verdict"))
    dtypes = (torch.bfloat16, torch.float32)
    for dtype in dtypes:
        for name in bench.case_names(s.kernel_len, s.kernel_segment, top_k=3):
            table.plan(f"{name}/{dtype}", op=name, dtype=short_dtype(dtype))
    rows: list[Any] = []
    try:
        for row in bench.correctness_rows(ctx.device, backend, s.kernel_len, s.kernel_segment, s.kernel_dim,
                                          s.kernel_batch, s.kernel_heads, top_k=3, dtypes=dtypes,
                                          deadline=ctx.deadlines.stack[-1].end):
            rows.append(row)
            key = f"{row.op}/{row.dtype}"
            if row.note:
                table.skip(key, row.note)
                continue
            table.fill(key, op=row.op, dtype=short_dtype(row.dtype), **{"worst rel err": f"{row.worst:.2e}",
                       "tolerance": f"{row.tolerance:.0e}", "verdict": row.verdict})
    finally:  # also when the stage's deadline cut the loop: judge what ran
        judge_kernels(ctx.targets["kernels"], rows, len(table.rows), backend)


def judge_kernels(target: Target, rows: list[Any], planned: int, backend: str) -> None:
    """PASS only when every planned (op, dtype) ran within tolerance; FAIL on any wrong or broken op."""
    ran = [r for r in rows if not r.note]
    broken = [r for r in rows if r.note.startswith("error")]
    wrong = [r for r in ran if r.verdict != "ok"]
    target.value = f"{len(ran) - len(wrong)}/{planned} ok"
    notes = []
    if wrong or broken:
        target.verdict = "FAIL"
        if wrong:
            worst = max(wrong, key=lambda r: r.worst)
            notes.append(f"worst: {worst.op} {short_dtype(worst.dtype)} {worst.worst:.1e}")
        if broken:
            notes.append(f"{len(broken)} raised")
    elif ran and len(ran) == planned:
        target.verdict = "PASS"
    elif len(ran) < planned:
        notes.append(f"{planned - len(ran)} not run")
    if backend != "triton":
        notes.append("candidate: the reference (no CUDA)")
    target.why = "; ".join(notes)


# ---- stage (c): cached read vs gather ------------------------------------------------------------

def stage_c(ctx: Context) -> None:
    s, bench = ctx.shapes, ctx.bench
    assert bench is not None
    backend = candidate_backend(ctx)
    table = ctx.table(f"cached read fwd+bwd at L={s.read_len}, C={s.read_segment}, d={s.read_dim}, bf16, batch 1, "
                      f"{s.read_heads} heads: {backend} op vs the PyTorch gather path (median of {s.read_repeats})",
                      ("op", "op ms", "gather ms", "speedup", "op MiB", "gather MiB", "memory"))
    names = [n for n in bench.case_names(s.read_len, s.read_segment) if n not in ("residual", "mlp-paper-form", bench.SCAN_CASE)]
    for name in names:
        table.plan(name, op=name)
    if not ctx.cuda:
        table.footer.append("\npeak memory is measured on CUDA only")
    for name in names:
        row = bench.speed_row(ctx.device, name, s.read_len, s.read_segment, s.read_dim, s.read_heads, s.read_repeats,
                              backend)
        cells = {"op ms": f"{row.op_s * 1e3:.2f}" if row.op_s else "OOM",
                 "gather ms": f"{row.gather_s * 1e3:.2f}" if row.gather_s else "OOM",
                 "speedup": f"{row.speedup:.1f}x" if row.speedup else "-",
                 "op MiB": f"{row.op_peak / 2**20:.0f}" if row.op_peak is not None else "-",
                 "gather MiB": f"{row.gather_peak / 2**20:.0f}" if row.gather_peak is not None else "-",
                 "memory": f"{row.memory_ratio:.1f}x" if row.memory_ratio is not None else "-"}
        table.fill(name, note=row.note, op=name, **cells)
        if name == "grm":
            speed = row.speedup if row.speedup else math.nan
            memory = row.memory_ratio if row.memory_ratio is not None else math.nan
            judge(ctx.targets["read_speed"], speed, 5.0, f"{speed:.1f}x" if speed == speed else "-", gpu=ctx.cuda,
                  why=row.note)
            judge(ctx.targets["read_memory"], memory, 10.0, f"{memory:.1f}x" if memory == memory else "-",
                  gpu=ctx.cuda, why=row.note or ("" if ctx.cuda else "peak memory is measured on CUDA only"))
        release(ctx)


# ---- stages (d) and (e): the compiled training step ----------------------------------------------

@dataclass
class Cell:
    """One timed (architecture, length) cell of stages (d) and (e)."""

    arch: str
    cfg: ModelConfig
    micro: int = 0
    mode: str = ""
    compile_s: float = math.nan
    step_times: list[float] = field(default_factory=list)
    peak_bytes: float = math.nan
    params: int = 0
    note: str = ""

    @property
    def tokens_per_step(self) -> int:
        return self.micro * self.cfg.seq_len

    @property
    def step_s(self) -> float:
        return statistics.median(self.step_times) if self.step_times else math.nan

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s if self.step_times else math.nan

    def mfu(self, peak: float) -> float:
        if not self.step_times or peak <= 0:
            return math.nan
        return self.tokens_per_s * training_flops_per_token(self.cfg, self.cfg.seq_len) / peak


def _time_cell(cell: Cell, ctx: Context, share_s: float) -> None:
    """Build, compile (under its budget), warm up and time one cell; fills `cell` as it goes, so a
    cell cut off by its deadline keeps the steps it timed."""
    args, device = ctx.args, ctx.device
    torch._dynamo.reset()
    step = TrainStep(cell.cfg, cell.micro, device)
    cell.params = sum(p.numel() for p in step.model.parameters()) - step.model.embed.weight.numel()
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(device)
    started = time.monotonic()
    cell.mode = "eager"
    if args.compile:
        step.forward = torch.compile(step.model, dynamic=False, backend=args.compile_backend)
        budget = args.compile_budget_frac * share_s
        with ctx.deadlines.limit(budget, "compile") as compiling:
            try:
                step()
                ctx.synchronize()
                cell.mode = "compiled"
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - a compiler failure must not cost the cell
                report_error(exc)
                cell.mode = f"eager (compile failed: {type(exc).__name__})"
        if compiling.expired:
            cell.mode = f"eager (compile > {budget:.0f} s budget)"
        if cell.mode != "compiled":
            torch._dynamo.reset()
            step.forward = step.model
            step.optimizer.zero_grad(set_to_none=True)
            step()  # the eager first step (allocator, kernels' own compilation)
        cell.compile_s = time.monotonic() - started
    else:
        step()
    ctx.synchronize()
    for _ in range(ctx.shapes.warmup_steps):
        step()
    ctx.synchronize()
    while len(cell.step_times) < args.steps:
        if cell.step_times and time.monotonic() + cell.step_s > ctx.deadlines.stack[-1].end:
            cell.note = f"{len(cell.step_times)} of {args.steps} steps (time share)"
            break
        t0 = time.perf_counter()
        step()
        ctx.synchronize()
        cell.step_times.append(time.perf_counter() - t0)
    if ctx.cuda:
        cell.peak_bytes = float(torch.cuda.max_memory_allocated(device))


def run_cell(cell: Cell, ctx: Context, share_s: float) -> None:
    """`_time_cell` under a hard limit of `share_s`, halving the micro-batch on out-of-memory."""
    requested = cell.micro
    if ctx.cuda:
        memory = float(torch.cuda.get_device_properties(ctx.device).total_memory)
        fitted = fitting_micro_batch(cell.cfg, requested, "bf16", memory)
        cell.micro = fitted or 1
        if fitted is None:
            cell.note = "estimate: 1 sequence does not fit; tried anyway"
        elif fitted < requested:
            cell.note = f"estimate: micro {fitted} of {requested}"
    with ctx.deadlines.limit(share_s, f"cell {cell.arch}") as cell_limit:
        while True:
            cell.step_times.clear()
            try:
                _time_cell(cell, ctx, share_s)
                break
            except torch.OutOfMemoryError:
                pass
            release(ctx)  # outside the except: its traceback no longer holds the model and activations
            if cell.micro == 1:
                cell.note = "OOM at 1 sequence"
                break
            cell.micro //= 2
            cell.note = f"OOM: halved to micro {cell.micro}"
    if cell_limit.expired:
        cell.note = (f"stopped at its {share_s:.0f} s share after {len(cell.step_times)} timed steps"
                     + (f" ({cell.mode})" if cell.mode else ""))
    torch._dynamo.reset()
    release(ctx)


CELL_COLUMNS = ("arch", "shape", "params", "L", "micro", "tokens/step", "mode", "compile s", "step ms", "tokens/s",
                "MFU", "peak GiB")
CELL_TEXT = ("mode",)


def fill_cell(table: Table, cell: Cell, peak: float) -> None:
    mfu = cell.mfu(peak)
    table.fill(cell.arch, note=cell.note, arch=cell.arch, shape=f"{cell.cfg.n_layers}x{cell.cfg.d_model}",
               params=format_count(cell.params) if cell.params else "-", L=str(cell.cfg.seq_len),
               micro=str(cell.micro), **{"tokens/step": str(cell.tokens_per_step), "mode": cell.mode or "-",
                                         "compile s": f"{cell.compile_s:.0f}" if cell.compile_s == cell.compile_s else "-",
                                         "step ms": f"{cell.step_s * 1e3:.1f}" if cell.step_times else "-",
                                         "tokens/s": f"{cell.tokens_per_s:,.0f}" if cell.step_times else "-",
                                         "MFU": f"{100 * mfu:.1f}%" if mfu == mfu else "-",
                                         "peak GiB": f"{cell.peak_bytes / GiB:.1f}" if cell.peak_bytes == cell.peak_bytes else "-"})


def matmul_rate(ctx: Context, n: int = 8192, repeats: int = 10) -> float:
    """bf16 FLOP/s of an n^3 matmul on random data (CUDA events; the ceiling this card reaches)."""
    a = torch.randn(n, n, device=ctx.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=ctx.device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n ** 3 * repeats / (start.elapsed_time(end) / 1e3)


def device_peak(ctx: Context) -> float:
    return peak_flops(torch.cuda.get_device_name(ctx.device), "bf16") if ctx.cuda else 0.0


def stage_d(ctx: Context) -> None:
    s = ctx.shapes
    cfg = model_config("transformer", s.model_params, s.mfu_len, s)
    table = ctx.table(f"Transformer ~{format_count(s.model_params)} at L={s.mfu_len}: the trainer's step (bf16 autocast, "
                      f"{'torch.compile' if ctx.args.compile else 'eager'}, fused AdamW), median of up to "
                      f"{ctx.args.steps} timed steps", CELL_COLUMNS, CELL_TEXT)
    table.plan("transformer", arch="transformer")
    peak = device_peak(ctx)
    measured = math.nan
    if ctx.cuda:
        measured = matmul_rate(ctx)
        table.footer.append(f"\nMFU uses the datasheet dense bf16 peak {peak / 1e12:.0f} TFLOP/s; an 8192^3 bf16 "
                            f"matmul measured {measured / 1e12:.0f} TFLOP/s here just before.")
    cell = Cell("transformer", cfg, micro=s.mfu_sequences)
    try:
        run_cell(cell, ctx, ctx.deadlines.remaining() - 0.5)
    finally:
        fill_cell(table, cell, peak)
        mfu = cell.mfu(peak)
        if cell.step_times and ctx.cuda and measured == measured:
            table.footer.append(f"MFU against the measured matmul: {100 * cell.mfu(measured):.1f}%")
        judge(ctx.targets["mfu"], mfu, 0.35, f"{100 * mfu:.1f}%" if mfu == mfu else "-", gpu=ctx.cuda,
              why="" if cell.mode in ("compiled", "") or not ctx.args.compile else cell.mode)
        if not ctx.cuda and cell.step_times:
            ctx.targets["mfu"].value = f"{cell.tokens_per_s:,.0f} tok/s"


def stage_e(ctx: Context) -> None:
    s = ctx.shapes
    table = ctx.table(f"~{format_count(s.model_params)} non-embedding parameters at L={s.tps_len} (MC: C={s.segment_len}, "
                      f"SSC k={s.top_k}), the same step, {s.tps_sequences} x {s.tps_len} tokens per step",
                      CELL_COLUMNS, CELL_TEXT)
    cells = [Cell(arch, model_config(arch, s.model_params, s.tps_len, s), micro=s.tps_sequences) for arch in TPS_ARCHS]
    for cell in cells:
        table.plan(cell.arch, arch=cell.arch, shape=f"{cell.cfg.n_layers}x{cell.cfg.d_model}", L=str(s.tps_len))
    peak = device_peak(ctx)
    done: dict[str, Cell] = {}
    try:
        for i, cell in enumerate(cells):
            share = (ctx.deadlines.remaining() - 0.5) / (len(cells) - i)
            if share < MIN_STAGE_S:
                table.skip(cell.arch, "not run (stage deadline)")
                continue
            try:
                run_cell(cell, ctx, share)
            except Exception as exc:  # noqa: BLE001 - one cell's failure is reported, the others still run
                report_error(exc)
                cell.note = f"error: {type(exc).__name__}: {str(exc)[:100]}"
            torch._dynamo.reset()
            release(ctx)
            fill_cell(table, cell, peak)
            done[cell.arch] = cell
    finally:
        ratio_lines(ctx, table, done)


def ratio_lines(ctx: Context, table: Table, done: dict[str, Cell]) -> None:
    """The two target ratios under the table, with the modes of the cells they divide."""
    pairs = {"grm_vs_transformer": ("swla+grm", "transformer", 1.0), "ssc_vs_swla": ("swla+ssc", "swla", 0.8)}
    table.footer.append("")
    for key, (num, den, bar) in pairs.items():
        a, b = done.get(num), done.get(den)
        if a is None or b is None or not a.step_times or not b.step_times:
            missing = ", ".join(n for n, c in ((num, a), (den, b)) if c is None or not c.step_times)
            table.footer.append(f"{num} / {den} tokens/s: not run ({missing} has no timed steps)")
            judge(ctx.targets[key], math.nan, bar, "-", gpu=ctx.cuda, why=f"{missing} not timed")
            continue
        ratio = a.tokens_per_s / b.tokens_per_s
        modes = "" if a.mode == b.mode else f" (modes differ: {num} {a.mode}, {den} {b.mode})"
        table.footer.append(f"{num} / {den} tokens/s: {ratio:.2f} (target >= {bar}){modes}")
        judge(ctx.targets[key], ratio, bar, f"{ratio:.2f}", gpu=ctx.cuda, why=modes.strip())


STAGES: dict[str, Callable[[Context], None]] = {"a": stage_a, "b": stage_b, "c": stage_c, "d": stage_d, "e": stage_e}


def run_stage(key: str, ctx: Context, deadline: float) -> None:
    """Run one stage under its hard deadline and print its tables, finished or not."""
    print(f"\n## ({key}) {STAGE_TITLES[key]}", flush=True)
    left = deadline - time.monotonic()
    if left < MIN_STAGE_S:
        print(f"stage ({key}) not run: its deadline was already reached ({left:+.0f} s left of the "
              f"{ctx.args.budget_s:.0f} s budget)", flush=True)
        explain_not_run(ctx, key, "its deadline was reached before it started")
        return
    first_table = len(ctx.tables)
    started = time.monotonic()
    failed = ""
    with ctx.deadlines.limit(left, f"stage {key}") as limit:
        try:
            STAGES[key](ctx)
        except Exception as exc:  # noqa: BLE001 - a broken stage must not stop the others
            report_error(exc)
            failed = f"{type(exc).__name__}: {str(exc)[:160]}"
        except DeadlineExpired as exc:
            if exc.token is limit:
                raise  # the stage's own deadline: `limit` records it
            # a nested region's alarm that fired just as the region ended and escaped its `with`
            ctx.deadlines.prune(limit)
            failed = f"a nested deadline fired late ({exc.token.label})"
    unfinished = ("not run (stage deadline)" if limit.expired else
                  f"not run (stage failed: {failed})" if failed else "not run")
    for table in ctx.tables[first_table:]:
        print("\n" + table.render(unfinished), flush=True)
    took = time.monotonic() - started
    explain_not_run(ctx, key, "stopped at its deadline" if limit.expired else f"failed: {failed[:60]}" if failed else "")
    if limit.expired:
        print(f"\nstage ({key}) stopped at its deadline after {took:.0f} s: rows marked 'not run' did not finish",
              flush=True)
    elif failed:
        print(f"\nstage ({key}) failed after {took:.0f} s: {failed}", flush=True)
    else:
        print(f"\nstage ({key}): {took:.1f} s", flush=True)


def explain_not_run(ctx: Context, key: str, why: str) -> None:
    """Say on each of stage `key`'s targets left NOT RUN without a reason why it was not run."""
    for target in ctx.targets.values():
        if target.text.startswith(f"({key})") and target.verdict == "NOT RUN" and not target.why and why:
            target.why = f"stage ({key}) {why}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny CPU version of every stage (the CI smoke test)")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="total seconds from the script's start; stage deadlines at "
                             + ", ".join(f"({k}) {v * 100:.0f}%%" for k, v in STAGE_ENDS.items()) + " of it")
    parser.add_argument("--stages", default="abcde", help="which stages to run (the others print a line saying so)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per cell (default 8 on GPU, 2 on CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the model in (d) and (e) (default: on with CUDA, off with --cpu)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-budget-frac", type=float, default=0.8,
                        help="share of a cell's time that its compilation may take before it runs eagerly")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda and not args.cpu:
        print("No CUDA device: running the tiny CPU version of every stage (--cpu).")
    shapes = GPU_SHAPES if cuda else CPU_SHAPES
    args.steps = args.steps or shapes.steps
    args.compile = cuda if args.compile is None else args.compile
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    else:  # tiny shapes gain nothing from more threads, and on a shared machine OpenMP threads that wait
        torch.set_num_threads(1)  # for each other cost 10-50x (measured here on 2 loaded cores)
    ctx = Context(args, shapes, device, Deadlines(), make_targets())
    end = START + args.budget_s
    print(f"# GPU check ({'CUDA' if cuda else 'CPU smoke'}): budget {args.budget_s:.0f} s from start, "
          f"{time.monotonic() - START:.1f} s spent importing; stage deadlines at "
          + ", ".join(f"({k}) {STAGE_ENDS[k] * args.budget_s:.0f} s" for k in STAGE_ENDS), flush=True)
    if not ctx.deadlines.enabled:
        print("(no SIGALRM here: deadlines only stop cells from starting)")

    def hang() -> None:  # the main thread is stuck inside a C call past every deadline
        print(f"\nwatchdog: still running {time.monotonic() - START:.0f} s after the start (budget "
              f"{args.budget_s:.0f} s); a call did not return. Exiting with what was measured." +
              render_targets(ctx.targets), flush=True)
        os._exit(3)

    watchdog = threading.Timer(max(end + 30 - time.monotonic(), 1.0), hang)
    watchdog.daemon = True
    watchdog.start()
    try:
        ctx.bench = kernel_bench()
        for key in STAGE_ENDS:
            if key not in args.stages:
                print(f"\n## ({key}) {STAGE_TITLES[key]}\nstage ({key}) not run: not selected (--stages {args.stages})")
                explain_not_run(ctx, key, "not selected")
                continue
            run_stage(key, ctx, START + STAGE_ENDS[key] * args.budget_s)
    finally:
        ctx.deadlines.disarm()
        watchdog.cancel()
    print(render_targets(ctx.targets))
    print(f"\ntotal {time.monotonic() - START:.0f} s (budget {args.budget_s:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
