"""benchmarks/gpu_check.py: its CPU mode runs every stage on a bare machine; deadlines stop what overruns.

The GPU machine has torch, triton and numpy but none of the service packages, so the CPU smoke
run makes ray, mlflow, pydantic, optuna, yaml, boto3, typer, rich, scipy and pandas unimportable
and checks that every stage prints its table and the targets block prints every target. The
deadline machinery (a stage or a compile cut off, with a line for every row not run) is tested
in-process on a fake stage and a tiny model.
"""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
BLOCKED = ("ray", "mlflow", "pydantic", "optuna", "yaml", "boto3", "botocore", "typer", "rich", "scipy", "pandas")
TARGET_TEXTS = ("cached-read kernels get bf16", "host syncs in one training step", "every op's fwd+grads",
                "gather time / op time", "gather peak / op peak", "MFU", "swla+grm / transformer",
                "swla+ssc / swla", "base scan bwd per chunk")


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mcscale_gpu_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def section(out: str, key: str) -> str:
    """The text of stage `key`: from its header to the next stage's (or the targets block)."""
    start = out.index(f"## ({key})")
    following = [out.index(h, start + 1) for h in ("\n## (", "\n## targets") if h in out[start + 1:]]
    return out[start:min(following)]


def table_rows(text: str, names: tuple[str, ...]) -> dict[str, list[str]]:
    """First-column name -> whitespace-split cells of the rows that start with one of `names`."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] in names and cells[0] not in rows:  # the table's row, not a later line naming it
            rows[cells[0]] = cells
    return rows


@pytest.mark.slow
def test_cpu_mode_runs_every_stage_without_the_service_packages():
    runner = (f"import runpy, sys; sys.modules.update({{m: None for m in {BLOCKED!r}}}); "
              f"sys.argv = ['gpu_check.py', '--cpu']; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=300, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "CPU smoke" in out and time.monotonic() - started < 300

    a = section(out, "a")
    assert "torch" in a and "triton" in a and "fla-core" in a and "cached-read backend" in a
    probes = ("transformer", "swla", "swla+grm", "swla+ssc", "titans+grm")
    syncs = a[a.index("host syncs in one training step"):]
    rows = table_rows(syncs, probes)
    assert set(rows) == set(probes) and all(r[1].isdigit() for r in rows.values())
    dtypes = a[a.index("dtypes each function received"):a.index("host syncs in one training step")]
    for op in ("gated_cached_read", "ssc_cached_read", "mlp_cached_read", "MatrixMemory.scan", "MLPMemory.scan"):
        assert re.search(rf"{re.escape(op)}\s+\S+=(bf16|fp32)", dtypes), op  # each op seen with its dtypes

    b = table_rows(section(out, "b"), ("grm", "residual", "ssc(k=3)", "mlp-grm", "mlp-ssc(k=3)", "mlp-paper-form",
                                       "swla-scan"))
    assert len(b) == 7 and section(out, "b").count(" ok") == 14  # 6 read ops + the base scan x bf16 and fp32
    c = table_rows(section(out, "c"), ("grm", "ssc(k=2)", "mlp-grm", "mlp-ssc(k=2)"))
    assert len(c) == 4 and all(math.isfinite(float(r[3].rstrip("x"))) for r in c.values())  # speedup column
    d = table_rows(section(out, "d"), ("transformer",))
    assert float(d["transformer"][9].replace(",", "")) > 0  # tokens/s
    e = table_rows(section(out, "e"), ("transformer", "swla", "swla+grm", "swla+ssc"))
    assert len(e) == 4 and all(float(r[9].replace(",", "")) > 0 for r in e.values())
    assert "swla+grm / transformer tokens/s:" in out and "swla+ssc / swla tokens/s:" in out

    targets = out[out.index("## targets"):]
    for text in TARGET_TEXTS:
        line = next(line for line in targets.splitlines() if text in line)
        assert re.search(r"\b(PASS|FAIL|NOT RUN)\b", line), line
    assert "stage (e):" in out and "not run" not in section(out, "e")


def test_a_stage_past_its_deadline_is_stopped_and_its_rows_say_not_run(gpu_check, capsys):
    ctx = gpu_check.Context(gpu_check.parse_args(["--cpu"]), gpu_check.CPU_SHAPES, gpu_check.torch.device("cpu"),
                            gpu_check.Deadlines(), gpu_check.make_targets())

    def slow_stage(ctx) -> None:
        table = ctx.table("fake table", ("cell", "value"))
        for name in ("first", "second", "third"):
            table.plan(name, cell=name)
        table.fill("first", cell="first", value="1")
        time.sleep(30)

    gpu_check.STAGES["z"], gpu_check.STAGE_TITLES["z"] = slow_stage, "a stage that overruns"
    try:
        started = time.monotonic()
        gpu_check.run_stage("z", ctx, time.monotonic() + 1.5)
        assert time.monotonic() - started < 10  # cut at its deadline, not after the 30 s sleep
        gpu_check.run_stage("z", ctx, time.monotonic() - 1)  # no time left: not started at all
    finally:
        del gpu_check.STAGES["z"], gpu_check.STAGE_TITLES["z"]
        ctx.deadlines.disarm()
    out = capsys.readouterr().out
    rows = table_rows(out, ("first", "second", "third"))
    assert rows["first"][1] == "1"
    assert " ".join(rows["second"][-4:]) == "not run (stage deadline)" == " ".join(rows["third"][-4:])
    assert "stage (z) stopped at its deadline" in out and "stage (z) not run: its deadline was already reached" in out


def test_nested_deadlines_cut_the_region_whose_time_is_up(gpu_check):
    deadlines = gpu_check.Deadlines()
    try:
        with deadlines.limit(5.0, "outer") as outer:
            with deadlines.limit(0.2, "inner") as inner:
                time.sleep(5)
            assert inner.expired and not outer.expired
            with deadlines.limit(0.2, "second inner") as second:
                pass
            assert not second.expired
        with deadlines.limit(0.3, "outer") as outer:
            with deadlines.limit(5.0, "inner") as inner:
                time.sleep(5)
        assert outer.expired and not inner.expired  # the outer's alarm passes through the inner region
    finally:
        deadlines.disarm()


@pytest.mark.slow
def test_a_compile_past_its_budget_falls_back_to_eager_and_is_timed(gpu_check):
    args = gpu_check.parse_args(["--cpu", "--compile", "--compile-backend", "eager", "--compile-budget-frac", "0.002"])
    args.steps = 2
    ctx = gpu_check.Context(args, gpu_check.CPU_SHAPES, gpu_check.torch.device("cpu"), gpu_check.Deadlines(),
                            gpu_check.make_targets())
    cfg = gpu_check.model_config("transformer", 1e5, 64, gpu_check.CPU_SHAPES)
    try:
        cut = gpu_check.Cell("transformer", cfg, micro=1)
        gpu_check.run_cell(cut, ctx, share_s=20.0)  # a 0.04 s compile budget: dynamo cannot finish
        args.compile_budget_frac = 0.9
        compiled = gpu_check.Cell("transformer", cfg, micro=1)
        gpu_check.run_cell(compiled, ctx, share_s=60.0)
    finally:
        ctx.deadlines.disarm()
    assert cut.mode.startswith("eager (compile >") and len(cut.step_times) == 2 and cut.tokens_per_s > 0
    assert compiled.mode == "compiled" and len(compiled.step_times) == 2 and compiled.compile_s >= 0
