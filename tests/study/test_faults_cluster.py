"""A two-node Ray cluster on loopback whose worker node dies mid-study: the study still completes once.

The head is `ray start --head --block` with every port on 127.0.0.1 (token authentication on); the
second node (its own temp dir and ports, 1 CPU) joins through Ray's node API with node IP 127.0.0.1,
the call `ray start` itself makes (`ray start --address 127.0.0.1:...` rewrites 127.0.0.1 to the
interface address in Ray 2.60; see STACK-NOTES.md). Head and worker have 1 CPU each, so the two
concurrent trials run one per node; once both train, the worker node's raylet is SIGKILLed. Tune
reruns or restores the lost trial on the head; the counts equal those of an uninterrupted run.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from scaling.study.store import ResultStore
from scaling.study.tracking import StudyTracker
from tests.study.faults_support import Driver, count, fault_spec, uninterrupted, wait_until, write_spec
from tests.study.test_submit import BIN, _base_env, _free_ports, _our_processes, _stop_cluster

READY_TIMEOUT_S = 150.0

JOIN = """\
import sys, time, ray._private.node as node, ray._private.parameter as parameter
gcs, temp_dir, manager, objects, metrics, agent_grpc, agent_http, runtime_env, low, high = sys.argv[1:]
params = parameter.RayParams(node_ip_address="127.0.0.1", gcs_address=gcs, num_cpus=1, temp_dir=temp_dir,
                             node_manager_port=int(manager), object_manager_port=int(objects),
                             metrics_export_port=int(metrics), metrics_agent_port=int(agent_grpc),
                             dashboard_agent_listen_port=int(agent_http), runtime_env_agent_port=int(runtime_env),
                             min_worker_port=int(low), max_worker_port=int(high),
                             object_store_memory=100_000_000)
node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True, connect_only=False)
print("joined", flush=True)
while True:
    time.sleep(1)
"""


def _alive_nodes(env: dict[str, str], gcs: str) -> int:
    probe = subprocess.run([sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1], "
                            "logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))", gcs],
                           capture_output=True, text=True, env=env, timeout=60)
    return int(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 else 0


@pytest.fixture
def two_nodes():
    token = secrets.token_hex(32)
    head_dir = Path(tempfile.mkdtemp(prefix="mcs-h-", dir="/tmp"))  # short: Ray's socket paths are limited
    worker_dir = Path(tempfile.mkdtemp(prefix="mcs-w-", dir="/tmp"))
    env = _base_env()
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    (gcs, dashboard, client, agent_http, agent_grpc, runtime_env, metrics, manager, objects) = _free_ports(9)
    head_log = head_dir.parent / f"{head_dir.name}.log"
    with open(head_log, "wb") as log:
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
             "--include-dashboard=false", "--num-cpus=1", "--object-store-memory=150000000",
             "--disable-usage-stats", f"--temp-dir={head_dir}", f"--ray-client-server-port={client}",
             f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
             f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
             f"--node-manager-port={manager}", f"--object-manager-port={objects}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=head_dir,
            start_new_session=True)
    worker = None
    try:
        address = f"127.0.0.1:{gcs}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while _alive_nodes(env, address) < 1:
            assert head.poll() is None and time.monotonic() < deadline, head_log.read_text(errors="replace")[-3000:]
            time.sleep(1)
        ports = [str(p) for p in _free_ports(6)]
        low = 20000 + secrets.randbelow(20000)
        worker_log = worker_dir.parent / f"{worker_dir.name}.log"
        with open(worker_log, "wb") as log:
            worker = subprocess.Popen([sys.executable, "-c", JOIN, address, str(worker_dir), *ports, str(low),
                                       str(low + 50)], stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=env, cwd=worker_dir, start_new_session=True)
        while _alive_nodes(env, address) < 2:
            assert worker.poll() is None and time.monotonic() < deadline, worker_log.read_text(errors="replace")[-3000:]
            time.sleep(1)
        yield address, env, worker_dir
    finally:
        if worker is not None:
            for proc in _our_processes(token, worker_dir, worker.pid):
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            if worker.poll() is None:
                worker.kill()
            worker.wait(timeout=30)
        _stop_cluster(head, token, head_dir)
        shutil.rmtree(worker_dir, ignore_errors=True)
        worker_dir.parent.joinpath(f"{worker_dir.name}.log").unlink(missing_ok=True)
        assert not _our_processes(token, head_dir, head.pid), "Ray processes leaked"


def _raylet(temp_dir: Path) -> psutil.Process:
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "raylet" in cmdline.split(" ")[0] and str(temp_dir) in cmdline:
            return proc
    raise AssertionError(f"no raylet runs under {temp_dir}")


def _training_on(raylet: psutil.Process) -> bool:
    """Whether a worker under `raylet` is running a trial (Ray titles it ray::ImplicitFunc...)."""
    for child in raylet.children(recursive=True):
        try:
            if "ImplicitFunc" in " ".join(child.cmdline()):
                return True
        except psutil.Error:
            continue
    return False


def test_worker_node_killed_mid_study_the_study_completes_with_every_trial_once(tmp_path, two_nodes):
    address, env, worker_dir = two_nodes
    storage = tmp_path / "runs"
    spec = fault_spec("fault-node", str(storage), budget={"tokens": "80K"})  # 80 steps: time to kill mid-trial
    store = ResultStore(str(storage), spec["name"])
    raylet = _raylet(worker_dir)
    driver = Driver(tmp_path, "run", str(write_spec(tmp_path, spec)), "--address", address, "--no-report",
                    env=env)
    wait_until(lambda: _training_on(raylet) and "running" in set(store.read_trials()["status"]),
               "a trial training on the worker node", driver, poll_s=0.2)
    raylet.send_signal(signal.SIGKILL)
    wait_until(lambda: not raylet.is_running() or raylet.status() == psutil.STATUS_ZOMBIE, "the raylet gone",
               timeout_s=30)  # not our child: its parent (the node process) reaps it
    assert driver.wait() == 0, driver.tail()
    counts = count(spec, store, StudyTracker(f"sqlite:///{storage / spec['name'] / 'mlflow.db'}", spec["name"]))
    print(f"after a worker node died: {counts.as_line()}")
    assert counts == uninterrupted(spec)
    trials = store.read_trials()
    assert (trials["step"] == trials["total_steps"]).all() and (trials["total_steps"] == 79).all()
