"""What mcscale exposes on the network: embedded Ray only on loopback, and `mcscale ui`'s MLflow
server gone when the UI is stopped.

Both start the real thing the way a user does (`init_ray` in a fresh driver process; `mcscale
ui` as a command) and look at the sockets the operating system reports (psutil), because the
point is what actually listens, not what the code asked for.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

# A driver that starts embedded Ray with mcscale's own init_ray, runs one task (so a worker exists)
# and prints every listening address of itself and the processes it started.
_PROBE = textwrap.dedent("""
    import json, os, psutil, ray
    from scaling.study.tune import init_ray
    init_ray()
    ray.get(ray.remote(lambda: os.getpid()).remote())
    me = psutil.Process()
    pids = {me.pid} | {c.pid for c in me.children(recursive=True)}
    listening = [[c.laddr.ip, c.laddr.port, c.pid] for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in pids]
    node_ip = ray._private.worker._global_node.node_ip_address
    ray.shutdown()
    print("PROBE " + json.dumps({"listening": listening, "node_ip": node_ip}))
""")


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def test_embedded_ray_listens_on_loopback_only():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    temp = tempfile.mkdtemp(prefix="mcs-ray-")  # short: Ray's unix socket paths must stay under ~107 bytes
    env.update(RAY_TMPDIR=temp, RAY_AUTH_MODE=env.get("RAY_AUTH_MODE", "disabled"))
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    line = next((l for l in done.stdout.splitlines() if l.startswith("PROBE ")), None)
    assert done.returncode == 0 and line, done.stdout[-2000:] + done.stderr[-4000:]
    probe = json.loads(line[len("PROBE "):])
    assert probe["node_ip"] == "127.0.0.1"
    assert len(probe["listening"]) >= 3, probe  # GCS, raylet, the driver's and the worker's core workers, agents
    exposed = [entry for entry in probe["listening"] if not _loopback(entry[0])]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.5)
    return False


def test_ui_stops_its_mlflow_server_on_sigterm(tmp_path: Path):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "mlflow.db").write_bytes(b"")  # MLflow creates its tables in an empty SQLite file
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "scaling", "ui", "study", "--storage", str(tmp_path), "--port",
                           str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_listening(port, ui, timeout_s=180), ui.communicate(timeout=30)[0][-3000:]
        server = psutil.Process(ui.pid).children(recursive=True)
        assert server, "the UI runs its MLflow server as a child"
        ui.send_signal(signal.SIGTERM)
        output, _ = ui.communicate(timeout=60)
        assert ui.returncode == 128 + signal.SIGTERM, output[-3000:]
        _, alive = psutil.wait_procs(server, timeout=15)
        assert not alive, f"left serving: {[p.pid for p in alive]}"
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "the port still answers"
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
