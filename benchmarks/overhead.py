"""Benchmark: what the Ray Tune study driver costs per trial, and how busy two concurrent trials keep 2 cores.

The same N tiny trials (default 6 seeds of a ~30K-parameter Transformer, seq_len 128, 20 steps
of 1,024 tokens, evaluation every 10 steps) run, in one process and one invocation:

(a)  directly and sequentially: ``run_trial(config)`` in this process, for the exact
     ``TrialConfig``s ``plan_ladder`` makes from the study spec (1 torch thread, no checkpoints),
     after a 1-step warm-up trial (the first ``AdamW`` in a process imports
     ``torch._dynamo``, seconds; that warm-up is printed on its own row);
(a') the same, each trial with a checkpoint folder (what the Tune trainable adds: a checkpoint
     written atomically at every evaluation);
(b)  through the study driver: ``run_study`` on a temporary spec (storage and MLflow SQLite in a
     temporary folder) on embedded Ray, concurrency 1, 1 CPU per trial;
(c)  the same with concurrency 2 (two trials at a time on the 2 cores), for CPU utilisation.

Ray is started once, before (b), by ``scaling.study.tune.init_ray`` and its start-up is timed on
its own, so the driver rows exclude it. Per-trial overhead = (wall of (b) - wall of (a)) / N.
"ladder phase" is the ``run_ladder_phase`` call inside ``run_study`` (MLflow runs created, then
``Tuner.fit``); the rest of ``run_study`` is study setup (input check, store, MLflow database).

CPU utilisation: a sampler thread reads ``psutil`` ``cpu_times()`` (user + system, the process's
own threads, not its children) of this process and of every descendant (Ray's GCS, raylet,
agents and worker processes) every ``--sample-interval`` seconds, plus one full snapshot
exactly at the start and end of each window. CPU used in a window = sum over processes of
(last reading - reading at the start, or 0 for a process born inside the window). A process
that exits between two samples loses at most one interval of CPU (Tune keeps its trial actors
alive with ``reuse_actors=True``, so few do). Utilisation = CPU seconds / (window wall x cores).

Run: ``python benchmarks/overhead.py`` (``--quick`` for a smoke run, ``--help`` for options).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from scaling.data.corpus import load_corpus  # noqa: E402
from scaling.models.ladder import format_count  # noqa: E402
from scaling.spec import StudySpec, parse_spec  # noqa: E402
from scaling.study import tune as study_tune  # noqa: E402
from scaling.study.plan import plan_ladder  # noqa: E402
from scaling.train import run_trial  # noqa: E402

CATEGORIES = ("driver", "ray workers", "ray system")


# ----------------------------------------------------------------------------- CPU accounting
SYSTEM_TITLES = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _describe(proc: psutil.Process, me: int) -> tuple[str, str] | None:
    """(category, label): driver (this process), ray workers (trial actors, idle/pre-started workers) or
    ray system; None when the process cannot be read (exiting, zombie)."""
    if proc.pid == me:
        return "driver", "driver (this process)"
    try:
        name, cmd = proc.name(), proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    if not cmd:
        return None
    if name in ("gcs_server", "raylet"):
        return "ray system", name
    if cmd[0].startswith("ray::"):
        return ("ray system" if cmd[0].startswith(SYSTEM_TITLES) else "ray workers"), cmd[0].strip()
    script = next((a for a in cmd[1:] if a.endswith(".py")), "")
    label = os.path.basename(script) or name
    if script.endswith(("default_worker.py", "setup_worker.py")):
        return "ray workers", label
    return "ray system", label  # GCS/raylet helpers, agents, monitors, or a child not yet exec'd


class TreeSampler:
    """Keeps the latest cpu_times of this process and all its descendants, keyed by (pid, start time).

    A process's category and label are re-read at every sample (a worker's title changes as it starts
    and takes a trial); a process counts as a Ray worker only on positive evidence (a ray::<actor>
    title or default_worker.py) and then stays one; a process that cannot be read any more
    (exiting) keeps what it was last seen as.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.me = os.getpid()
        self.root = psutil.Process(self.me)
        self.last: dict[tuple[int, float], tuple[str, float, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def snapshot(self) -> dict[tuple[int, float], tuple[str, float, str]]:
        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        now: dict[tuple[int, float], tuple[str, float, str]] = {}
        for proc in procs:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
                    seen = self.last.get(key)
                    described = _describe(proc, self.me)
                if described is None:
                    described = (seen[0], seen[2]) if seen else ("ray system", f"pid {proc.pid}")
                elif seen and seen[0] == "ray workers" and described[0] != "ray workers":
                    described = ("ray workers", described[1])
                now[key] = (described[0], t.user + t.system, described[1])
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        with self._lock:
            self.last.update(now)
            return dict(self.last)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.snapshot()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Window:
    """CPU used by the process tree between `begin()` and `end()`, by category, plus machine-wide busy time."""

    sampler: TreeSampler
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    procs: list = field(default_factory=list)  # (CPU s, category, label) per process, largest first
    machine_busy: float = 0.0  # fraction of all cores busy (any process) over the window
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def begin(self) -> "Window":
        self._base = self.sampler.snapshot()
        self._sys = psutil.cpu_times()
        self._t0 = time.perf_counter()
        return self

    def end(self) -> "Window":
        self.wall = time.perf_counter() - self._t0
        last = self.sampler.snapshot()
        sys_now = psutil.cpu_times()
        self.cpu = {c: 0.0 for c in CATEGORIES}
        self.procs = []
        for key, (cat, seconds, label) in last.items():
            used = max(0.0, seconds - (self._base[key][1] if key in self._base else 0.0))
            self.cpu[cat] += used
            if used > 0:
                self.procs.append((used, cat, f"{label} [{key[0]}]"))
        self.procs.sort(reverse=True)
        busy = lambda t: t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)  # noqa: E731
        total = lambda t: busy(t) + t.idle + getattr(t, "iowait", 0.0)  # noqa: E731
        self.machine_busy = (busy(sys_now) - busy(self._sys)) / max(1e-9, total(sys_now) - total(self._sys))
        self.load = os.getloadavg()
        return self

    @property
    def total_cpu(self) -> float:
        return sum(self.cpu.values())


# ----------------------------------------------------------------------------- the study
def make_spec(name: str, storage: str, args: argparse.Namespace, concurrency: int) -> StudySpec:
    return parse_spec({
        "name": name,
        "data": {"corpus": {"source": "builtin", "max_bytes": 1_000_000}, "seq_len": args.seq_len,
                 "evals": {"every_steps": args.eval_every, "val_windows": 4}},
        "architectures": [{"name": "transformer"}],
        "ladder": {"sizes": [args.params], "head_dim": 16},
        "seeds": list(range(args.trials)),
        "budget": {"tokens": args.steps * args.batch_tokens},
        "optimizer": {"batch_tokens": args.batch_tokens},
        "resources": {"cpus_per_trial": 1},
        "concurrency": concurrency,
        "storage": storage,
    }, source=name)


@dataclass
class DriverRun:
    label: str
    concurrency: int
    wall: float
    ladder: Window
    train_seconds: float
    trial_wall_seconds: float
    completed: int


def run_driver(spec: StudySpec, label: str, sampler: TreeSampler) -> DriverRun:
    """run_study with the ladder phase timed and CPU-accounted through a wrapper around run_ladder_phase."""
    window = Window(sampler)
    original = study_tune.run_ladder_phase

    def timed_ladder(*a, **k):  # noqa: ANN002, ANN003
        window.begin()
        try:
            return original(*a, **k)
        finally:
            window.end()

    study_tune.run_ladder_phase = timed_ladder
    try:
        t0 = time.perf_counter()
        summary = study_tune.run_study(spec, console=Console(file=io.StringIO(), width=120))
        wall = time.perf_counter() - t0
    finally:
        study_tune.run_ladder_phase = original
    trials = summary.trials
    return DriverRun(label, spec.concurrency, wall, window, float(trials["train_seconds"].sum()),
                     float(trials["wall_seconds"].sum()), int((trials["status"] == "completed").sum()))


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See benchmarks/README.md.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trials", type=int, default=6, help="N: trials (seeds) per run")
    p.add_argument("--params", default="30K", help="target non-embedding parameters of the Transformer")
    p.add_argument("--steps", type=int, default=20, help="optimiser steps per trial")
    p.add_argument("--batch-tokens", type=int, default=1024, help="tokens per optimiser step")
    p.add_argument("--seq-len", type=int, default=128, help="sequence length")
    p.add_argument("--eval-every", type=int, default=10, help="evaluate (and report / checkpoint) every k steps")
    p.add_argument("--sample-interval", type=float, default=0.25, help="seconds between CPU samples")
    p.add_argument("--skip-concurrent", action="store_true", help="skip run (c), concurrency 2")
    p.add_argument("--by-process", action="store_true", help="also print the CPU seconds of each process per window")
    p.add_argument("--keep", action="store_true", help="keep the temporary storage folder (printed)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 trials of 10 steps")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.steps, args.eval_every = 2, 10, 5
    if args.trials < 1 or args.steps < 1:
        p.error("--trials and --steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 200)
    err = Console(stderr=True)
    cores = os.cpu_count() or 1
    load_start = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="mcscale-overhead-"))
    sampler = TreeSampler(args.sample_interval)
    sampler.start()
    import ray

    try:
        spec1 = make_spec("overhead-c1", str(root / "runs"), args, 1)
        planned = plan_ladder(spec1)
        n = len(planned)
        model = planned[0].config.model
        load_corpus(planned[0].config.corpus, min_tokens=model.seq_len + 1)  # tokenize once, outside the timings

        # one-time warm-up of this process (the first AdamW pulls in torch._dynamo: seconds), so (a) is warm;
        # every fresh Ray worker process pays the same once, which is part of the driver's overhead
        t0 = time.perf_counter()
        run_trial(replace(planned[0].config, tokens=args.batch_tokens))
        warmup = time.perf_counter() - t0
        err.log(f"warm-up (1-step trial): {warmup:.2f} s")
        # (a) direct
        direct = Window(sampler).begin()
        direct_metrics = [run_trial(p.config).metrics for p in planned]
        direct.end()
        err.log(f"(a) direct: {n} trials in {direct.wall:.2f} s")
        # (a') direct with checkpoints
        ckpt = Window(sampler).begin()
        for i, p in enumerate(planned):
            run_trial(replace(p.config, checkpoint_dir=str(root / "direct-ckpt" / str(i))))
        ckpt.end()
        err.log(f"(a') direct with checkpoints: {ckpt.wall:.2f} s")

        # Ray start-up, then (b) and (c)
        t0 = time.perf_counter()
        study_tune.init_ray()
        ray_start = time.perf_counter() - t0
        ray_cpus = ray.cluster_resources().get("CPU", 0)
        err.log(f"ray.init: {ray_start:.2f} s ({ray_cpus:g} CPUs)")
        runs = [run_driver(spec1, "(b) run_study, concurrency 1", sampler)]
        err.log(f"(b) driver c=1: {runs[0].wall:.2f} s (ladder {runs[0].ladder.wall:.2f} s)")
        if not args.skip_concurrent:
            spec2 = make_spec("overhead-c2", str(root / "runs"), args, 2)
            runs.append(run_driver(spec2, "(c) run_study, concurrency 2", sampler))
            err.log(f"(c) driver c=2: {runs[1].wall:.2f} s (ladder {runs[1].ladder.wall:.2f} s)")
        t0 = time.perf_counter()
        ray.shutdown()
        ray_stop = time.perf_counter() - t0
    finally:
        sampler.stop()
        if ray.is_initialized():
            ray.shutdown()
        if args.keep:
            err.log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    load_end = os.getloadavg()

    direct_train = sum(m["train_seconds"] for m in direct_metrics)
    direct_trial_wall = sum(m["wall_seconds"] for m in direct_metrics)
    b = runs[0]

    # -- table 1: wall times
    t = Table(title=f"{n} trials of a {format_count(direct_metrics[0]['params_nonembed'])}"
                    f"-param Transformer (d {model.d_model} x {model.n_layers} layers, seq_len {model.seq_len}, "
                    f"{direct_metrics[0]['total_steps']} steps of {args.batch_tokens} tokens, eval every "
                    f"{args.eval_every}), 1 torch thread per trial")
    for col in ("run", "wall s", "wall s / trial", "ladder phase s", "sum train_seconds", "sum trial wall_seconds",
                "overhead s / trial vs (a)", "direct (a) / this"):
        t.add_column(col, justify="left" if col == "run" else "right")
    t.add_row("warm-up: first run_trial in a process (1 step)", f"{warmup:.2f}", "", "", "", "", "", "")
    t.add_row("Ray start-up (init_ray, once)", f"{ray_start:.2f}", "", "", "", "", "", "")
    t.add_row("(a) direct run_trial, sequential", f"{direct.wall:.2f}", f"{direct.wall / n:.2f}", "",
              f"{direct_train:.2f}", f"{direct_trial_wall:.2f}", "0", "1.00")
    t.add_row("(a') direct, with checkpoint dir", f"{ckpt.wall:.2f}", f"{ckpt.wall / n:.2f}", "", "", "",
              f"{(ckpt.wall - direct.wall) / n:+.2f}", f"{direct.wall / ckpt.wall:.2f}")
    for r in runs:
        per_trial = (r.wall - direct.wall) / n
        note = "" if r.concurrency == 1 else " (2 at a time)"
        t.add_row(r.label + note, f"{r.wall:.2f}", f"{r.wall / n:.2f}", f"{r.ladder.wall:.2f}", f"{r.train_seconds:.2f}",
                  f"{r.trial_wall_seconds:.2f}", f"{per_trial:+.2f}", f"{direct.wall / r.wall:.2f}")
    t.add_row("Ray shutdown", f"{ray_stop:.2f}", "", "", "", "", "", "")
    console.print(t)

    # -- table 2: CPU utilisation
    u = Table(title=f"CPU utilisation of this process tree ({cores} cores): CPU seconds / (window wall x {cores})")
    for col in ("window", "wall s", "CPU s driver", "CPU s ray workers", "CPU s ray system", "CPU s total",
                "util total", "util workers", "train_seconds / (wall x cores)", "machine busy (all procs)",
                "load 1 min at end"):
        u.add_column(col, justify="left" if col == "window" else "right")
    rows = [("(a) direct, sequential", direct, direct_train)]
    rows += [(f"{r.label}: ladder phase", r.ladder, r.train_seconds) for r in runs]
    for label, w, train_s in rows:
        u.add_row(label, f"{w.wall:.2f}", f"{w.cpu['driver']:.2f}", f"{w.cpu['ray workers']:.2f}",
                  f"{w.cpu['ray system']:.2f}", f"{w.total_cpu:.2f}", f"{w.total_cpu / (w.wall * cores):.0%}",
                  f"{w.cpu['ray workers'] / (w.wall * cores):.0%}", f"{train_s / (w.wall * cores):.0%}",
                  f"{w.machine_busy:.0%}", f"{w.load[0]:.2f}")
    console.print(u)

    lines = [
        f"Per-trial driver overhead (b): ({b.wall:.2f} - {direct.wall:.2f}) / {n} = {(b.wall - direct.wall) / n:.2f} s; "
        f"ladder phase only: ({b.ladder.wall:.2f} - {direct.wall:.2f}) / {n} = {(b.ladder.wall - direct.wall) / n:.2f} s; "
        f"Ray start-up {ray_start:.2f} s once (not included). Ratio direct / driver (b) = {direct.wall / b.wall:.2f}"
        + (f"; direct / driver (c) = {direct.wall / runs[1].wall:.2f}." if len(runs) > 1 else "."),
        f"Load average (1/5/15 min) at start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, at end "
        f"{load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}; Ray saw {ray_cpus:g} CPUs; "
        f"all {n} trials completed: {all(r.completed == n for r in runs)}.",
        "util = CPU seconds of the process tree (psutil cpu_times user+system, sampled every "
        f"{args.sample_interval:g} s and at the window edges) / (window wall x {cores}); 'ray workers' are processes "
        "titled ray::<actor> or ray::IDLE (trial actors, idle workers); 'ray system' is GCS, raylet, dashboard and "
        "runtime-env agents, monitors; "
        "'driver' is this process (Tune loop, MLflow SQLite, Parquet writes). "
        "train_seconds = run_trial's time inside optimiser steps (no eval, no checkpoint, no start-up). "
        "'machine busy' is system-wide (/proc/stat), other users included.",
    ]
    for line in lines:
        console.print(line, soft_wrap=True)
    if args.by_process:
        for label, w, _ in rows:
            top = ", ".join(f"{lbl} {cat.split()[-1]} {sec:.2f}" for sec, cat, lbl in w.procs[:10])
            console.print(f"CPU s by process, {label}: {top}", soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
