"""What the fault tests share: a tiny study, its driver as a real process, a TCP proxy that can be cut,
and the counts an operator takes after a fault (trials, Parquet rows, MLflow runs, metric steps).

The proxy is test infrastructure on loopback, not a fake: it forwards bytes to the real S3 server and,
when cut, closes its listening socket and every open connection, so clients get "connection refused"
exactly as from a server that went away.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from scaling.spec import parse_spec
from scaling.study.plan import plan_ladder
from scaling.study.store import ResultStore
from scaling.study.tracking import StudyTracker

STUDY_TIMEOUT_S = 420
EVERY_STEPS = 10
STEPS = 40  # 40K tokens at 1,024 tokens a step


def fault_spec(name: str, storage: str, sizes: tuple[str, ...] = ("20K", "40K", "80K"), **extra) -> dict:
    """One series at three sizes, 40 steps each, eval every 10: small, but long enough to cut into."""
    spec = {
        "name": name,
        "data": {"corpus": {"source": "builtin", "max_bytes": 400_000}, "seq_len": 128,
                 "evals": {"every_steps": EVERY_STEPS, "val_windows": 2}},
        "architectures": [{"name": "transformer"}],
        "ladder": {"sizes": list(sizes), "head_dim": 16},
        "budget": {"tokens": f"{STEPS}K"},
        "optimizer": {"batch_tokens": 1024},
        "resources": {"cpus_per_trial": 1},
        "concurrency": 2,
        "storage": storage,
    }
    spec.update(extra)
    return spec


def write_spec(folder: Path, spec: dict) -> Path:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def planned_ids(spec: dict) -> list[str]:
    return sorted(p.trial_id for p in plan_ladder(parse_spec(spec)))


class Driver:
    """`python -m scaling ARGS` as a process of its own (its own session), output kept in files."""

    def __init__(self, folder: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.out_path, self.err_path = folder / "driver.out", folder / "driver.err"
        self.started = time.monotonic()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "scaling", *args], cwd=folder, stdout=out,
                                            stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def wait(self, timeout_s: float = STUDY_TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
            raise AssertionError(f"the driver ran past {timeout_s:.0f} s:\n{self.tail()}") from None

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def tail(self, n: int = 3000) -> str:
        return f"--- stdout\n{self.stdout[-n:]}\n--- stderr\n{self.stderr[-n:]}"


def wait_until(condition: Callable[[], bool], what: str, driver: Driver | None = None,
               timeout_s: float = STUDY_TIMEOUT_S, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001 - not there yet (a half-written file, a server starting)
            pass
        if driver is not None and driver.process.poll() is not None:
            raise AssertionError(f"the driver ended (rc {driver.process.returncode}) before {what}:\n{driver.tail()}")
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{driver.tail()}" if driver else ""))


def statuses(store: ResultStore) -> list[str]:
    trials = store.read_trials()
    return list(trials["status"]) if len(trials) else []


# ============================================================================ what an operator counts
@dataclass
class Counts:
    planned: int
    completed: int
    parquet_rows: int
    duplicate_rows: int
    runs: int
    duplicate_runs: int
    open_runs: int  # trial runs not FINISHED (RUNNING, SCHEDULED, KILLED, FAILED)
    duplicate_steps: int  # metric points logged twice at one step (val_loss, train_loss_step)
    missing_steps: int  # points missing from 1..total (train_loss_step) and every..total (val_loss)
    curve_rows_duplicated: int

    def as_line(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.__dict__.items())


def count(spec: dict, store: ResultStore, tracker: StudyTracker) -> Counts:
    """Trials, Parquet rows, MLflow runs and metric steps of a study, as an operator would count them."""
    planned = planned_ids(spec)
    trials = store.read_trials()
    curves = store.read_curves()
    runs = tracker.runs()
    runs = runs[runs["tags.mcscale.role"] == "trial"] if len(runs) else runs
    dup_steps = missing = 0
    total_steps = dict(zip(trials["trial_id"], trials["total_steps"])) if len(trials) else {}
    every = spec["data"]["evals"]["every_steps"]
    for run_id, trial_id in zip(runs["run_id"], runs["tags.trial_id"]) if len(runs) else []:
        total = int(total_steps.get(trial_id, STEPS))
        for key, expected in (("val_loss", set(range(every, total + 1, every))),
                              ("train_loss_step", set(range(1, total + 1)))):
            steps = [m.step for m in tracker.client.get_metric_history(run_id, key)]
            dup_steps += len(steps) - len(set(steps))
            missing += len(expected - set(steps))
    return Counts(
        planned=len(planned),
        completed=int((trials["status"] == "completed").sum()) if len(trials) else 0,
        parquet_rows=len(trials),
        duplicate_rows=int(trials["trial_id"].duplicated().sum()) if len(trials) else 0,
        runs=len(runs),
        duplicate_runs=int(runs["tags.trial_id"].duplicated().sum()) if len(runs) else 0,
        open_runs=int((runs["status"] != "FINISHED").sum()) if len(runs) else 0,
        duplicate_steps=dup_steps,
        missing_steps=missing,
        curve_rows_duplicated=int(curves.duplicated(["trial_id", "step", "metric"]).sum()) if len(curves) else 0,
    )


def uninterrupted(spec: dict) -> Counts:
    """The counts of the same study run without a fault: every planned trial once, complete in MLflow."""
    n = len(planned_ids(spec))
    return Counts(planned=n, completed=n, parquet_rows=n, duplicate_rows=0, runs=n, duplicate_runs=0, open_runs=0,
                  duplicate_steps=0, missing_steps=0, curve_rows_duplicated=0)


# ============================================================================ a TCP proxy that can be cut
class CuttableProxy:
    """Forwards 127.0.0.1:port to an upstream server; `cut()` refuses connections until `restore()`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0
        self._listen()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by cut()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
                self.connections += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
                with self._lock:
                    self._open.discard(s)

    def cut(self) -> None:
        """Refuse new connections (nothing listens on the port) and reset every open one."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            live = list(self._open)
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self) -> None:
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.cut()
