"""Live metrics and the Grafana dashboard, against a real study on real Ray (and a real Prometheus).

One module-scoped run: a driver process starts embedded Ray with a metrics export port (as
`ray start --metrics-export-port` does on a cluster node) and runs a tiny two-trial study, while
this process scrapes the endpoint every second and Debian's `prometheus` scrapes it too. Then:

* every PromQL query of every panel and template variable of `dashboards/mcscale-study.json`
  parses (template variables substituted) and names only metrics the scrape showed - or, for
  GPU panels on this CPU machine, metrics Ray's own reporter agent defines for GPU nodes;
* the trial metrics carry the study / series / size / trial labels of the planned trials, and
  the driver's trials-by-state gauge ends with every trial COMPLETED;
* Prometheus answers every panel query over the study's time window with data (GPU panels
  excepted, for lack of a GPU).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from scaling.spec import parse_spec
from scaling.study.metrics import EXPORT_PREFIX, TRIAL_GAUGES, exported_names
from scaling.study.plan import plan_ladder
from tests.conftest import _end_process_group, free_port

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "mcscale-study.json"
STUDY = "metrics-probe"
STUDY_TIMEOUT_S = 400
# Substitutions for Grafana's template variables: "All" of a multi-value variable is its allValue.
VARIABLES = {"$__rate_interval": "20s", "$__interval": "5s", "$study": STUDY, "$series": ".*", "$size": ".*",
             "$trial": ".*", "$SessionName": ".+", "$Instance": ".+"}

DRIVER = """
import os, sys, time, logging
import ray
from rich.console import Console
from scaling.spec import load_spec
from scaling.study.tune import run_study
ray.init(num_cpus=2, include_dashboard=False, _metrics_export_port=int(sys.argv[2]), log_to_driver=False,
         logging_level=logging.WARNING)
run_study(load_spec(sys.argv[1]), console=Console(file=open(os.devnull, "w")), report=False)
time.sleep(float(sys.argv[3]))  # let Ray's exporter publish the driver's last values before the node goes
"""


def tiny_spec(storage: Path) -> dict:
    """Two small trials, long enough (~1 min) for Ray's metrics agent to come up and export several evals."""
    return {
        "name": STUDY,
        "data": {"corpus": {"source": "builtin", "max_bytes": 400_000}, "seq_len": 128,
                 "evals": {"every_steps": 20, "val_windows": 2}},
        "architectures": [{"name": "transformer"}, {"name": "swla+grm", "segment_lens": [32]}],
        "ladder": {"sizes": ["20K"], "head_dim": 16},
        "budget": {"tokens": "300K"},
        "optimizer": {"batch_tokens": 1024},
        "resources": {"cpus_per_trial": 1},
        "concurrency": 2,
        "storage": str(storage),
    }


# ============================================================================ the dashboard's queries
def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query-type template variable."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = query.removeprefix("label_values(").rsplit(",", 1)[0]  # label_values(SELECTOR, label)
            out.append((f"variable {variable['name']}", inner))
    return out


def substitute(query: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):  # $__rate_interval before $__interval ...
        query = query.replace(name, VARIABLES[name])
    assert "$" not in query, f"unsubstituted template variable in {query}"
    return query


def metric_names(query: str) -> set[str]:
    """Every metric a PromQL query selects (parsed with promql-parser, not matched by regex)."""
    import promql_parser

    names: set[str] = set()

    def visit(node) -> None:  # noqa: ANN001
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            assert name, f"a selector without a metric name in {query}"
            names.add(name)

    promql_parser.walk(promql_parser.parse(query), visit)
    return names


def ray_gpu_metric_names() -> set[str]:
    """GPU metrics Ray's own reporter agent defines (exported only by nodes that have GPUs)."""
    from ray.dashboard.modules.reporter.reporter_agent import METRICS_GAUGES

    return {EXPORT_PREFIX + name for name in METRICS_GAUGES if "gpu" in name or "gram" in name}


def test_dashboard_queries_parse_and_flag_unknown_metrics():
    """The query checker itself: it finds the metric names, and a misspelt one is not in the scrape set."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 12
    names = set().union(*(metric_names(substitute(q)) for _, q in queries))
    assert {"ray_mcscale_trial_val_loss", "ray_mcscale_study_trials", "ray_node_gpus_utilization"} <= names
    assert metric_names('rate(ray_mcscale_trial_evals_totl{study="x"}[1m]) / on() ray_node_gram_used') == {
        "ray_mcscale_trial_evals_totl", "ray_node_gram_used"}
    assert set(exported_names()) - names == set(), "an exported metric that no panel shows"


def test_dashboard_imports_beside_rays_own():
    """Same data-source variable as Ray's generated dashboards, but its own uid and unique panel ids."""
    from pathlib import Path as _Path

    import ray.dashboard.modules.metrics.dashboards as ray_dashboards

    dashboard = json.loads(DASHBOARD.read_text())
    ray_uids = {json.loads(p.read_text()).get("uid") for p in _Path(ray_dashboards.__file__).parent.glob("*.json")}
    assert dashboard["uid"] not in ray_uids and "rayDefaultDashboard" in ray_uids
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == "${datasource}" and all(t["datasource"] == "${datasource}"
                                                              for t in panel["targets"])
    titles = " | ".join(p["title"] for p in dashboard["panels"])
    for wanted in ("Trials by state", "Throughput", "MFU", "Validation loss", "Training loss", "GPU utilisation",
                   "GPU memory"):
        assert wanted in titles, (wanted, titles)


# ============================================================================ the live run
@dataclass
class Scrapes:
    names: set[str] = field(default_factory=set)
    labels: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # metric -> label sets seen
    states: dict[str, float] = field(default_factory=dict)  # last value per state of the study
    count: int = 0
    errors: int = 0


@dataclass
class LiveRun:
    scrapes: Scrapes
    planned: list
    prometheus_url: str | None
    started: float
    ended: float
    driver_log: str


def _scrape_forever(url: str, scrapes: Scrapes, stop: threading.Event) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            scrapes.errors += 1
            continue
        scrapes.count += 1
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                scrapes.names.add(sample.name)
                if sample.name.startswith("ray_mcscale_"):
                    seen = scrapes.labels.setdefault(sample.name, [])
                    if sample.labels not in seen:
                        seen.append(dict(sample.labels))
                if sample.name == "ray_mcscale_study_trials" and sample.labels.get("study") == STUDY:
                    scrapes.states[sample.labels["state"]] = sample.value


def _start_prometheus(folder: Path, target_port: int) -> tuple[subprocess.Popen, str] | None:
    binary = os.environ.get("MCSCALE_PROMETHEUS", "prometheus")
    if shutil.which(binary) is None:
        if os.environ.get("MCSCALE_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"{binary} not found but MCSCALE_REQUIRE_PROMETHEUS=1 (apt-get install -y prometheus)")
        return None
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                      "scrape_configs": [{"job_name": "ray", "static_configs": [
                                          {"targets": [f"127.0.0.1:{target_port}"]}]}]}))
    port = free_port()
    log = open(folder / "prometheus.log", "wb")
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
    _end_process_group(process)
    raise RuntimeError(f"prometheus did not become ready: {(folder / 'prometheus.log').read_text()[-3000:]}")


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metrics")
    spec_dict = tiny_spec(folder / "runs")
    spec_path = folder / f"{STUDY}.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict, sort_keys=False))
    planned = plan_ladder(parse_spec(spec_dict))
    metrics_port = free_port()
    prometheus = _start_prometheus(folder, metrics_port)
    scrapes, stop = Scrapes(), threading.Event()
    poller = threading.Thread(target=_scrape_forever, args=(f"http://127.0.0.1:{metrics_port}/metrics", scrapes, stop),
                              daemon=True)
    env = dict(os.environ, RAY_metrics_report_interval_ms="1000", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    started = time.time()
    poller.start()
    try:
        driver = subprocess.run([sys.executable, "-c", DRIVER, str(spec_path), str(metrics_port), "8"], env=env,
                                cwd=folder, capture_output=True, text=True, timeout=STUDY_TIMEOUT_S)
        ended = time.time()
        stop.set()
        poller.join(timeout=10)
        assert driver.returncode == 0, driver.stderr[-4000:]
        yield LiveRun(scrapes, planned, prometheus[1] if prometheus else None, started, ended,
                      driver.stdout + driver.stderr)
    finally:
        stop.set()
        if prometheus:
            _end_process_group(prometheus[0])


@pytest.mark.slow
def test_every_panel_query_names_an_exported_metric(live_run):
    scrapes = live_run.scrapes
    assert scrapes.count > 10, f"too few scrapes ({scrapes.count}, {scrapes.errors} failed)"
    gpu_only = ray_gpu_metric_names()
    missing = []
    for where, query in dashboard_queries(json.loads(DASHBOARD.read_text())):
        for name in metric_names(substitute(query)):
            if name not in scrapes.names and name not in gpu_only:
                missing.append(f"{where}: {name}")
    assert not missing, "queries naming metrics that were never exported:\n" + "\n".join(missing)
    assert set(exported_names()) <= scrapes.names, set(exported_names()) - scrapes.names


@pytest.mark.slow
def test_trial_metrics_carry_the_planned_labels_and_states_end_completed(live_run):
    labels = live_run.scrapes.labels
    expected = {(p.series, p.size_label, p.trial_id) for p in live_run.planned}
    for name in [EXPORT_PREFIX + n for n in TRIAL_GAUGES]:
        seen = {(s["series"], s["size"], s["trial"]) for s in labels[name] if s.get("study") == STUDY}
        assert seen == expected, (name, seen, expected)
    steps = [s for s in labels["ray_mcscale_trial_step"] if s.get("study") == STUDY]
    assert steps and all(set(s) >= {"study", "series", "size", "trial"} for s in steps)
    states = live_run.scrapes.states
    assert states.get("COMPLETED") == len(live_run.planned), states
    assert states.get("RUNNING") == 0 and states.get("ERROR") == 0, states


def _query_range(url: str, query: str, start: float, end: float) -> list:
    params = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "2s"})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=30) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.slow
def test_prometheus_returns_data_for_every_panel(live_run):
    if live_run.prometheus_url is None:
        pytest.skip("Debian's prometheus is not installed here (.ci/run installs it and requires this test)")
    gpu_only = ray_gpu_metric_names()
    dashboard = json.loads(DASHBOARD.read_text())
    empty, checked = [], 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            query = substitute(target["expr"])
            if metric_names(query) & gpu_only:
                continue  # no GPU on this machine: checked by name against Ray's reporter above
            checked += 1
            if not _query_range(live_run.prometheus_url, query, live_run.started, live_run.ended + 5):
                empty.append(f"{panel['title']!r} {target['refId']}: {query}")
    assert checked >= 10
    assert not empty, "panels without data in Prometheus:\n" + "\n".join(empty)
    loss = _query_range(live_run.prometheus_url, substitute(dashboard["panels"][3]["targets"][0]["expr"]),
                        live_run.started, live_run.ended + 5)
    assert {r["metric"]["trial"] for r in loss} == {p.trial_id for p in live_run.planned}
