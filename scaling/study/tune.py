"""The Ray Tune driver: runs a study's `tune` and `ladder` phases on embedded Ray or a cluster.

Division of labour (why it is split this way):
* Trials (Ray workers) only train: `run_trial` with a reporter that calls `tune.report` with
  the trial's checkpoint directory. A restored trial copies its checkpoint back and resumes.
* The driver does all bookkeeping in one process, through a `tune.Callback`: the Parquet rows and
  curves first (the source of truth, written with retries), then the MLflow writes, handed to the
  study's durable outbox (`scaling.study.outbox`) so that MLflow being slow or down never blocks or
  fails the study; closing runs with the right status - including trials ASHA stops (code after a
  trial's last report may never run) and trials that error. One writer means no SQLite lock
  contention and no duplicated rows.
* A trial's MLflow run is found by its stable trial id (and config hash), so a restored or retried
  trial, a restarted driver or a replayed record logs to the trial's own run - never a second one.
* SIGINT / SIGTERM stop the study cleanly: Tune saves its state, unfinished trials' runs are closed
  KILLED, study.json says `interrupted`, no report is made and `mcscale resume` finishes the study.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

from scaling.study.metrics import export_trial_metrics, export_trial_states
from scaling.study.mlflow_location import real_uri, remember
from scaling.study.plan import PlannedTrial, config_hash, plan_ladder, plan_tune, tune_series
from scaling.study.store import ResultStore, curve_rows, is_extra_metric, trial_row
from scaling.study.identity import claim as claim_spec
from scaling.study.mlflow_location import STATE_KEY as MLFLOW_STATE_KEY, artifact_env, resolve_location
from scaling.study.outbox import MlflowOutbox, open_outbox
from scaling.study.progress import StudyProgress, notify as notify_progress
from scaling.study.tracking import StudyTracker, fail_fast_mlflow_calls, probe_tracking
from scaling.errors import UserInputError
from scaling.spec import StudySpec
from scaling.train import STATUS_COMPLETED, STATUS_DIVERGED, TrialConfig, check_inputs, run_trial

RUN_ID_FILE = "mlflow_run_id"
OBJECTIVE = "objective"  # validation loss; a large finite number for diverged trials (Optuna rejects NaN)
DIVERGED_OBJECTIVE = 1e9


# ----------------------------------------------------------------------------- the trainable
def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and k != "train_loss_steps"}


def tune_result(metrics: dict[str, Any], trial_id: str, run_id: str) -> dict[str, Any]:
    """A trial's metrics as the Tune result the driver's bookkeeping reads (scalars, objective, ids)."""
    out = _scalar_metrics(metrics)
    val = metrics.get("val_loss")
    out[OBJECTIVE] = float(val) if val is not None and math.isfinite(val) else DIVERGED_OBJECTIVE
    out["trial_key"] = trial_id
    out["mlflow_run_id"] = run_id
    out["train_loss_steps_json"] = json.dumps(metrics.get("train_loss_steps", []))
    return out


def exported_result(metrics: dict[str, Any], trial_id: str, run_id: str, study: str, series: str,
                    size: str) -> dict[str, Any]:
    """`tune_result`, also exported as live Prometheus metrics (once per trial: by the main worker
    of a multi-worker trial, whose workers all report the same numbers)."""
    out = tune_result(metrics, trial_id, run_id)
    if _is_main_worker():
        export_trial_metrics(out, study, series, size, trial_id)
    return out


def _is_main_worker() -> bool:
    try:
        import ray.train

        return ray.train.get_context().get_world_rank() == 0
    except Exception:  # noqa: BLE001 - not inside a Ray Train worker: a one-worker trial
        return True


def study_trainable(params: dict[str, Any], trials: dict[str, dict[str, Any]] | None = None,
                    template: PlannedTrial | None = None, train_storage: tuple[str, Any] | None = None,
                    study: str = "") -> None:
    """Ray Tune function trainable: one mcscale trial, resumable from its Tune checkpoint.

    A trial with several workers runs as a Ray Train TorchTrainer launched from here (its
    checkpoints live in Train's storage, `train_storage`); a one-worker trial trains in this
    process on the CPUs or GPU the trial holds.
    """
    from ray import tune

    if template is not None:  # tune phase: hyperparameters sampled by Optuna around the template
        overrides = {k: float(v) for k, v in params.items() if k in ("lr", "warmup_fraction", "weight_decay")}
        planned = replace(template, config=replace(template.config, **overrides))
        trial_id = f"{template.trial_id}-{tune.get_context().get_trial_id()}"
        run_id = ""
    else:
        entry = trials[params["trial_id"]]  # type: ignore[index]
        planned, trial_id, run_id = entry["planned"], params["trial_id"], entry.get("run_id", "")

    formatter = functools.partial(exported_result, trial_id=trial_id, run_id=run_id, study=study,
                                  series=planned.series, size=planned.size_label)
    if planned.config.workers > 1:
        from scaling.train.multiworker import WorkerResources, run_multiworker_trial

        assert planned.resources is not None and train_storage is not None
        res = planned.resources
        run_multiworker_trial(planned.config, formatter,
                              WorkerResources(res.cpus, res.gpus_per_worker, res.accelerator_type),
                              name=trial_id, storage_path=train_storage[0], storage_filesystem=train_storage[1])
        return

    workdir = Path(tempfile.mkdtemp(prefix=f"mcscale-{trial_id[:40]}-"))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        checkpoint.to_directory(str(workdir))
        stored = workdir / RUN_ID_FILE
        if stored.exists():
            run_id = stored.read_text().strip() or run_id
    (workdir / RUN_ID_FILE).write_text(run_id)
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    config: TrialConfig = replace(planned.config, checkpoint_dir=str(workdir), threads=max(1, int(cpus)))

    def reporter(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        tune.report(formatter(metrics), checkpoint=tune.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)

    try:
        run_trial(config, reporter=reporter)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ----------------------------------------------------------------------------- driver bookkeeping
@dataclass
class TrialView:
    """What the live table shows about one trial."""

    trial_key: str
    arch: str
    size_label: str
    n_segments: int
    state: str = "PENDING"
    step: int = 0
    total_steps: int = 0
    loss: float = float("nan")


class StudyCallback(Callback):
    """Driver-side `tune.Callback`: Parquet rows and curves, then MLflow (through the outbox), progress.

    Ray pickles callbacks into the experiment state and hands them back on `Tuner.restore`, so
    this object carries only plain settings and builds its store and outbox lazily.
    """

    def __init__(self, phase: str, storage: str, study: str, s3_endpoint: str | None, tracking_uri: str,
                 planned: dict[str, PlannedTrial], run_ids: dict[str, str] | None = None,
                 template: PlannedTrial | None = None) -> None:
        # Only the redacted URI is kept (Ray pickles this object into tuner.pkl); the driver process
        # that runs the study was given the real one and finds it with `real_uri`.
        self.settings = dict(phase=phase, storage=storage, study=study, s3_endpoint=s3_endpoint,
                             tracking_uri=remember(tracking_uri))
        self.planned, self.template = planned, template
        self.run_ids = run_ids or {}  # unused since the outbox finds runs by trial id; kept for old pickles
        self._book: _Bookkeeper | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_book"] = None
        return state

    @property
    def book(self) -> "_Bookkeeper":
        if self._book is None:
            s = self.settings
            self._book = _Bookkeeper(s["phase"], ResultStore(s["storage"], s["study"], s["s3_endpoint"]),
                                     open_outbox(s["storage"], s["study"], real_uri(s["tracking_uri"])), self.planned,
                                     self.template)
            _BOOKS.append(self._book)
        return self._book

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
        self.book.on_result(trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
        self.book.on_complete(trial)

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
        self.book.on_error(trial)

    def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001
        self.book.on_start(trial)

    def on_step_end(self, iteration, trials, **info):  # noqa: ANN001
        _INTERRUPTS.poll()
        views, keys = self.book.views, self.book.ray_to_key  # mcscale's state where known, else Tune's
        export_trial_states(self.settings["study"], [views[keys[t.trial_id]].state if keys.get(t.trial_id) in views
                                                     else t.status for t in trials])


_BOOKS: list["_Bookkeeper"] = []  # the bookkeepers of this driver's phases (to close runs on an interrupt)


class _Bookkeeper:
    def __init__(self, phase: str, store: ResultStore, outbox: MlflowOutbox,
                 planned: dict[str, PlannedTrial], template: PlannedTrial | None = None):
        self.phase, self.store, self.outbox = phase, store, outbox
        self.planned, self.template = planned, template
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.views: dict[str, TrialView] = {}
        self.ray_to_key: dict[str, str] = {}
        self.finished: dict[str, str] = {}
        self.described: set[str] = set()

    # -- identity -------------------------------------------------------------
    def _key(self, trial: Any, result: dict[str, Any] | None = None) -> str:
        if result and result.get("trial_key"):
            self.ray_to_key[trial.trial_id] = result["trial_key"]
        if trial.trial_id in self.ray_to_key:
            return self.ray_to_key[trial.trial_id]
        if self.template is None:
            key = trial.config.get("trial_id", trial.trial_id)
        else:
            key = f"{self.template.trial_id}-{trial.trial_id}"
        self.ray_to_key[trial.trial_id] = key
        return key

    def _planned(self, key: str, trial: Any) -> PlannedTrial:
        if key in self.planned:
            planned = self.planned[key]
        else:
            assert self.template is not None
            overrides = {k: float(v) for k, v in trial.config.items() if k in ("lr", "warmup_fraction", "weight_decay")}
            config = replace(self.template.config, **overrides)
            planned = replace(self.template, trial_id=key, config=config, config_hash=config_hash(config),
                              tags=dict(self.template.tags, config_hash=config_hash(config)))
            self.planned[key] = planned
        if key not in self.described:  # what the outbox needs to create the trial's MLflow run
            self.outbox.trial(key, self.phase, planned.tags, planned.config.to_dict())
            self.described.add(key)
        return planned

    def _view(self, key: str, planned: PlannedTrial) -> TrialView:
        if key not in self.views:
            self.views[key] = TrialView(key, planned.arch, planned.size_label, planned.n_segments)
        return self.views[key]

    # -- events: the store first, then MLflow through the outbox (which never blocks) ---------------
    def on_start(self, trial: Any) -> None:
        key = self._key(trial)
        planned = self._planned(key, trial)
        self.outbox.trial_status(key, "RUNNING")
        view = self._view(key, planned)
        view.state = "RUNNING"
        self._notify()

    def on_result(self, trial: Any, result: dict[str, Any]) -> None:
        key = self._key(trial, result)
        planned = self._planned(key, trial)
        metrics = recorded_metrics(result)
        history = self.history.setdefault(key, [])
        history[:] = [h for h in history if h.get("step") != metrics.get("step")] + [metrics]
        self.last[key] = metrics
        self.store.write_trial(key, trial_row(key, self.phase, planned.tags, metrics, planned.config.to_dict()))
        self.outbox.trial_metrics(key, dict(metrics, train_loss_steps=json.loads(result.get("train_loss_steps_json",
                                                                                            "[]"))),
                                  int(metrics.get("step", 0)))
        view = self._view(key, planned)
        view.state, view.step = "RUNNING", int(metrics.get("step", 0))
        view.total_steps = int(metrics.get("total_steps", 0))
        view.loss = float(metrics.get("val_loss", metrics.get("train_loss", float("nan"))))
        self._notify()

    def _close(self, trial: Any, status: str) -> None:
        key = self._key(trial)
        planned = self._planned(key, trial)
        metrics = dict(self.last.get(key, {}))
        if status in ("stopped", "interrupted"):
            metrics["status"] = status
        self.store.write_trial(key, trial_row(key, self.phase, planned.tags, metrics or {"status": status},
                                              planned.config.to_dict()))
        history = self._full_history(key, trial)
        if history:
            self.store.write_curves(key, curve_rows(key, history))
        self.outbox.trial_artifact(key, "summary", {"trial_id": key, "status": status, **metrics})
        self.outbox.trial_finished(key, status)
        self.finished[key] = status
        self._view(key, planned).state = status.upper()
        self._notify()

    def _full_history(self, key: str, trial: Any) -> list[dict[str, Any]]:
        """Eval history: from the trial's checkpoint when there is one (complete across restores)."""
        checkpoint = getattr(trial, "checkpoint", None)
        if checkpoint is not None:
            try:
                with checkpoint.as_directory() as folder:
                    import torch

                    state = torch.load(Path(folder) / "trial.pt", map_location="cpu", weights_only=False)
                    return [{k: v for k, v in h.items() if not isinstance(v, (list, dict))} for h in state["history"]]
            except Exception:  # fall back to what the driver saw
                pass
        return self.history.get(key, [])

    def on_complete(self, trial: Any) -> None:
        key = self._key(trial)
        status = self.last.get(key, {}).get("status", "stopped")
        if status not in (STATUS_COMPLETED, STATUS_DIVERGED):
            status = "stopped"  # ended by the scheduler (ASHA) before its budget
        self._close(trial, status)

    def on_error(self, trial: Any) -> None:
        self._close(trial, "error")

    def close_interrupted(self, keys: list[str]) -> int:
        """The study was interrupted: each of `keys` this phase saw but did not finish is recorded
        `interrupted` (its row keeps the last metrics; its run is closed KILLED); `mcscale resume`
        reruns it from its checkpoint. Returns how many were closed."""
        closed = 0
        for key in keys:
            if key in self.finished or key not in self.planned:
                continue
            planned = self._planned(key, None)
            if key in self.last:
                metrics = dict(self.last[key], status="interrupted")
                self.store.write_trial(key, trial_row(key, self.phase, planned.tags, metrics,
                                                      planned.config.to_dict()))
            self.outbox.trial_finished(key, "interrupted")
            self.finished[key] = "interrupted"
            if key in self.views:
                self.views[key].state = "INTERRUPTED"
            closed += 1
        return closed

    def _notify(self) -> None:
        notify_progress(self)


def recorded_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """What the driver records of a Tune result (trial row, curves, MLflow): the trial's standard
    metrics, needle accuracies and the evaluation's diagnostics (scaling.study.store.is_extra_metric);
    not Tune's own bookkeeping keys."""
    return {k: v for k, v in result.items() if k in _TRIAL_METRIC_KEYS or is_extra_metric(k)}


_TRIAL_METRIC_KEYS = {
    "step", "tokens", "flops", "train_seconds", "wall_seconds", "tokens_per_second", "flops_per_second",
    "status", "train_loss", "val_loss", "val_bpb", "mqar_acc", "diverged_step", "lr", "params_nonembed",
    "params_total", "total_steps", "flops_per_token", "mfu", "device_memory_peak_bytes", "checkpoint_seconds",
    "workers", "device", "precision", "resumed_from_step",
}


# ----------------------------------------------------------------------------- storage for Ray
def ray_storage(spec: StudySpec) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for RunConfig: a local folder or bucket/prefix on S3."""
    if spec.storage.startswith("s3://"):
        from scaling.study.storage_fs import resolve_storage

        resolved = resolve_storage(spec.storage, spec.s3_endpoint)
        return f"{resolved.path}/{spec.name}/ray", resolved.fs
    return str(Path(spec.storage).expanduser().resolve() / spec.name / "ray"), None


# ----------------------------------------------------------------------------- phases
def quiet_ray_output() -> None:
    """mcscale draws its own live table; Ray's and MLflow's chatter would scroll it away."""
    import logging

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    for name in ("ray", "ray.tune", "ray.train", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def init_ray(address: str | None = None) -> None:
    """Embedded Ray with this machine's CPUs by default; `address` joins a running cluster.

    Authentication follows Ray's own default and environment (RAY_AUTH_MODE, RAY_AUTH_TOKEN):
    the embedded instance generates its token; for a cluster set the same mode everywhere.
    """
    import logging

    import ray

    from scaling.study.ray_credentials import keep_credentials_out_of_ray

    quiet_ray_output()
    keep_credentials_out_of_ray()  # trials take credentials from their node, not from a logged runtime env
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        return
    with _loopback_node():
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)


#: Ray's switch between a one-machine instance on 127.0.0.1 and a cluster node on the interface address
#: (ray._private.ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR; "0" is Ray's default on macOS and Windows).
RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_node():
    """Embedded Ray on loopback only: its GCS, raylet, workers and agents listen on 127.0.0.1.

    Why: on Linux Ray binds every port to the machine's interface address (or all interfaces),
    protected only by its token; the embedded default needs nobody else to reach it. Ray offers
    no ray.init option for this (`_node_ip_address="127.0.0.1"` is rewritten to the interface
    address); its one-machine mode is chosen by `RAY_CLUSTER_ENV=0`, read when `ray` is imported,
    so both the variable (for the processes Ray starts) and the imported constant are set for the
    start and restored after it. A user who sets the variable themselves keeps their choice.
    """
    from ray._private import ray_constants

    if os.environ.get(RAY_CLUSTER_ENV) is not None:
        yield
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[RAY_CLUSTER_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        os.environ.pop(RAY_CLUSTER_ENV, None)
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _resources(planned: dict[str, PlannedTrial], template: PlannedTrial | None = None) -> Callable[[dict], dict]:
    """Per-trial Ray resources: each rung asks for its own (the 8K and the 1.3B model of one
    ladder do not need the same hardware)."""
    def request(config: dict[str, Any]) -> dict[str, float]:
        trial = template if template is not None else planned[config["trial_id"]]
        assert trial.resources is not None
        return trial.resources.tune_request()

    return request


def _train_storage(spec: StudySpec) -> tuple[str, Any]:
    """Where multi-worker trials keep their Ray Train runs and checkpoints."""
    storage_path, filesystem = ray_storage(spec)
    return f"{storage_path}/train", filesystem


def _run_config(spec: StudySpec, name: str, callback: StudyCallback):
    from ray import tune

    storage_path, filesystem = ray_storage(spec)
    return tune.RunConfig(name=name, storage_path=storage_path, storage_filesystem=filesystem, verbose=0,
                          failure_config=tune.FailureConfig(max_failures=2),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=[callback])


def _restorable(spec: StudySpec, name: str) -> tuple[str, Any] | None:
    from ray.tune import Tuner

    storage_path, filesystem = ray_storage(spec)
    path = f"{storage_path}/{name}"
    if filesystem is None:
        return (path, None) if Tuner.can_restore(path) else None
    return (path, filesystem) if Tuner.can_restore(path, storage_filesystem=filesystem) else None


def run_tune_phase(spec: StudySpec, store: ResultStore, outbox: MlflowOutbox) -> dict[str, dict[str, float]]:
    """Per architecture: Optuna search of the learning rate (and optionally warmup / weight decay)
    at the proxy size, with ASHA stopping the hopeless early. Returns arch -> best settings."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    assert spec.tune is not None
    tuned: dict[str, dict[str, float]] = store.read_json("tuned.json") or {}
    outbox.phase_started("tune")
    for arch, segment in tune_series(spec):
        template = plan_tune(spec, arch, segment)
        if template.arch in tuned:
            continue
        space: dict[str, Any] = {"lr": _domain(spec.tune.lr)}
        if spec.tune.warmup_fraction is not None:
            space["warmup_fraction"] = _domain(spec.tune.warmup_fraction)
        if spec.tune.weight_decay is not None:
            space["weight_decay"] = _domain(spec.tune.weight_decay)
        name = f"tune-{template.arch.replace('+', '_')}"
        callback = StudyCallback("tune", spec.storage, spec.name, spec.s3_endpoint, outbox.tracking_uri, {},
                                 template=template)
        trainable = tune.with_resources(tune.with_parameters(study_trainable, template=template,
                                                             train_storage=_train_storage(spec), study=spec.name),
                                        _resources({}, template))
        every = spec.data.evals.every_steps
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=OBJECTIVE, mode="min",
                                  grace_period=max(1, spec.tune.grace_period_steps // every),
                                  reduction_factor=spec.tune.reduction_factor)
        restore = _restorable(spec, name)
        if restore is not None:
            tuner = tune.Tuner.restore(restore[0], trainable, resume_errored=True, storage_filesystem=restore[1])
        else:
            tuner = tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(
                search_alg=OptunaSearch(metric=OBJECTIVE, mode="min", seed=spec.seeds[0]), scheduler=scheduler,
                num_samples=spec.tune.samples, max_concurrent_trials=spec.concurrency, reuse_actors=True),
                run_config=_run_config(spec, name, callback))
        results = _fit(tuner, "tune", store, outbox, {}, template)
        best = results.get_best_result(metric=OBJECTIVE, mode="min", scope="all")
        settings = {k: float(best.config[k]) for k in space}
        settings["proxy_width"] = float(template.config.model.d_model)
        settings["objective"] = float(best.metrics.get(OBJECTIVE, float("nan")))
        tuned[template.arch] = settings
        store.write_json("tuned.json", tuned)
    outbox.phase_finished("tune")
    return tuned


def _domain(rng: Any):
    from ray import tune

    return tune.loguniform(rng.low, rng.high) if rng.log else tune.uniform(rng.low, rng.high)


def finished_trials(store: ResultStore) -> dict[str, str]:
    """trial_id -> config hash of the trials the store already holds as finished."""
    table = store.read_trials()
    if table.empty:
        return {}
    done = table[table["status"].isin([STATUS_COMPLETED, STATUS_DIVERGED])]
    return dict(zip(done["trial_id"], done["config_hash"]))


def run_ladder_phase(spec: StudySpec, store: ResultStore, outbox: MlflowOutbox,
                     tuned: dict[str, dict[str, float]] | None, phase: str = "ladder",
                     planned: list[PlannedTrial] | None = None) -> list[PlannedTrial]:
    """The full grid, each trial trained to its budget; finished trials are never rerun.

    `phase`/`planned` run another grid the same way (the recall phase: scaling.study.recall)."""
    from ray import tune

    planned = plan_ladder(spec, tuned) if planned is None else planned
    done = finished_trials(store)
    todo = [p for p in planned if done.get(p.trial_id) != p.config_hash]
    outbox.phase_started(phase)
    if todo:
        for p in todo:  # each run exists (SCHEDULED) before Tune starts, once MLflow answers
            outbox.trial(p.trial_id, phase, p.tags, p.config.to_dict())
            outbox.trial_status(p.trial_id, "SCHEDULED")
        # Every planned trial stays addressable: a restored Tune experiment can hold a trial that the
        # store already saw finish (the driver died between the two records); it re-reports and ends.
        table = {p.trial_id: {"planned": p, "run_id": ""} for p in planned}
        by_id = {p.trial_id: p for p in planned}
        callback = StudyCallback(phase, spec.storage, spec.name, spec.s3_endpoint, outbox.tracking_uri, by_id)
        trainable = tune.with_resources(tune.with_parameters(study_trainable, trials=table,
                                                             train_storage=_train_storage(spec), study=spec.name),
                                        _resources(by_id))
        restore = _restorable(spec, phase)
        if restore is not None:
            tuner = tune.Tuner.restore(restore[0], trainable, resume_errored=True, storage_filesystem=restore[1])
        else:
            tuner = tune.Tuner(trainable, param_space={"trial_id": tune.grid_search([p.trial_id for p in todo])},
                               tune_config=tune.TuneConfig(max_concurrent_trials=spec.concurrency, reuse_actors=True),
                               run_config=_run_config(spec, phase, callback))
        _fit(tuner, phase, store, outbox, by_id, None, [p.trial_id for p in todo])
    outbox.phase_finished(phase)
    return planned


# ----------------------------------------------------------------------------- interrupts
class StudyInterrupted(Exception):
    """SIGINT or SIGTERM stopped the study; what ran is recorded and `mcscale resume` finishes it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class _Interrupts:
    """SIGINT/SIGTERM handling of the driver (main thread only).

    Inside `Tuner.fit` a signal only sets a flag; the next Tune loop step (`on_step_end`) asks Tune
    to stop the way its own Ctrl-C does (its SIGUSR1 handler: save the experiment state, stop the
    trials, return), and `_fit` then closes what ran and raises `StudyInterrupted`. Tune's own
    SIGINT handler is switched off (TUNE_DISABLE_SIGINT_HANDLER): it would end the phase as if it
    were complete. Outside `fit` the signal raises `StudyInterrupted` at once. A second signal
    while stopping raises at once as well.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_fit = False
        self.asked_tune = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for signum in (signal.SIGINT, signal.SIGTERM):  # again after ray.init, which sets its own SIGTERM
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        first = self.signum is None
        if first:
            self.signum = signum
        if not self.in_fit or not first:
            raise StudyInterrupted(self.signum)

    def poll(self) -> None:
        """Called from the Tune loop: forward a pending interrupt to Tune's own stop."""
        if self.signum is None or self.asked_tune:
            return
        self.asked_tune = True
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if callable(tune_stop):
            tune_stop(signal.SIGUSR1, None)


_INTERRUPTS = _Interrupts()


def _fit(tuner: Any, phase: str, store: ResultStore, outbox: MlflowOutbox, planned: dict[str, PlannedTrial],
         template: PlannedTrial | None, keys: list[str] | None = None):
    """`tuner.fit()`, turned into `StudyInterrupted` (with unfinished trials closed) on a signal."""
    _INTERRUPTS.in_fit, _INTERRUPTS.asked_tune = True, False
    try:
        if _INTERRUPTS.signum is not None:
            raise StudyInterrupted(_INTERRUPTS.signum)
        results = tuner.fit()
    finally:
        _INTERRUPTS.in_fit = False
    if _INTERRUPTS.signum is not None:
        books = [b for b in _BOOKS if b.phase == phase and b.store.root == store.root]
        book = books[-1] if books else _Bookkeeper(phase, store, outbox, dict(planned), template)
        book.close_interrupted(keys if keys is not None else list(book.planned))
        raise StudyInterrupted(_INTERRUPTS.signum)
    return results


# ----------------------------------------------------------------------------- the study
@dataclass
class StudySummary:
    name: str
    root: str
    tracking_uri: str  # redacted: what may be printed
    tuned: dict[str, dict[str, float]] | None
    trials: Any  # pandas.DataFrame of the store's trial rows
    seconds: float
    report: Any = None  # scaling.report.Report when the report stage ran
    report_files: Any = None  # scaling.report.ReportFiles
    report_error: str | None = None  # why no report could be made (too few finished sizes, ...)
    interrupted: int | None = None  # the signal that stopped the study (SIGINT, SIGTERM), else None
    planned: int = 0  # trials the ladder plans
    mlflow_pending: int = 0  # MLflow records still waiting in the outbox (tracking store unreachable)
    mlflow_problem: str | None = None  # why they wait
    outbox: str = ""  # where they wait


MLFLOW_DRAIN_S = 120.0  # how long the end of a study waits for a reachable tracking store to catch up


def run_study(spec: StudySpec, address: str | None = None, spec_text: str | None = None,
              console: Any | None = None, report: bool = True, extend: bool = False) -> StudySummary:
    """Run (or continue) a whole study: tune, ladder, then the fit and report. Idempotent: a finished
    trial never reruns; the report is remade from whatever the store holds. A spec that differs from
    the study's recorded one is refused unless `extend` and it only adds trials (scaling.study.identity).

    MLflow is never a reason to wait or fail: its writes go through the study's outbox; an
    unreachable tracking store is detected in seconds, said on stderr, and replayed later. A
    SIGINT / SIGTERM returns a summary with `interrupted` set (study.json: `interrupted`, no report).
    """
    import time

    from rich.console import Console

    from scaling.study.plan import planned_steps

    started = time.perf_counter()
    console = console or Console()
    from scaling.study.cost import preflight

    from scaling.study.recall import PHASE as RECALL, plan_recall

    planned = plan_ladder(spec) or plan_recall(spec)  # a recall-only study has no ladder
    cost = preflight(spec)  # a trial that cannot fit its GPUs fails here, before anything is recorded
    check_inputs(planned[0].config)  # and so does bad data
    console.print(f"plan: {cost}", highlight=False, soft_wrap=True)
    store = ResultStore(spec.storage, spec.name, spec.s3_endpoint)
    claim_spec(store, spec, spec_text, extend)
    state = store.read_json("study.json") or {}
    location = resolve_location(store.root, spec.name, state, spec.tracking_uri)
    for key, value in artifact_env(store.root, store.storage.endpoint).items():
        os.environ.setdefault(key, value)  # MLflow uploads artifacts to the study's S3 endpoint
    quiet_ray_output()
    fail_fast_mlflow_calls()
    uri = location.uri
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if location.recorded and env_uri and remember(env_uri) != location.shown:
        console.print(f"note: the study records its MLflow runs at {location.shown}; $MLFLOW_TRACKING_URI "
                      f"({remember(env_uri)}) is not used for it.", highlight=False, soft_wrap=True)
    outbox = _open_study_outbox(spec, uri, location.artifact_location)
    problem = probe_tracking(uri)
    if problem is None:
        try:  # a tracking store that answers but refuses the study (a deleted experiment) is bad input
            StudyTracker(uri, spec.name, artifact_location=location.artifact_location)
        except UserInputError:
            outbox.close()
            raise
        except Exception as exc:  # noqa: BLE001 - it answered the probe, then failed: treat as down
            problem = f"{type(exc).__name__}: {str(exc)[:300]}"
    state.update(name=spec.name, status="running")
    for stale in ("interrupted_by", "error"):
        state.pop(stale, None)
    state[MLFLOW_STATE_KEY] = location.as_state()  # where this study's MLflow data lives, from any folder
    store.write_json("study.json", state)
    if problem is not None:
        _warn(f"MLflow is not reachable ({problem}). The study runs on: results go to {store.root} as always, "
              f"and MLflow's records wait in {outbox.path}, replayed as soon as the tracking store answers "
              f"(or by `mcscale sync {spec.name}`).")
    summary = StudySummary(spec.name, store.root, location.shown, None, None, 0.0, planned=len(planned), outbox=str(outbox.path))
    _INTERRUPTS.signum = None
    _INTERRUPTS.install()
    recall_trials = plan_recall(spec)  # first: the recall curves lead the report
    unfinished = ([RECALL] if recall_trials else []) + (["tune"] if spec.tune is not None else []) + ["ladder"]
    try:
        init_ray(address)
        _INTERRUPTS.install()
        if recall_trials:
            with StudyProgress(console, f"{spec.name}: recall phase",
                               {p.trial_id: planned_steps(p) for p in recall_trials}):
                run_ladder_phase(spec, store, outbox, None, phase=RECALL, planned=recall_trials)
            unfinished.remove(RECALL)
        tuned = None
        if spec.tune is not None:
            steps = {plan_tune(spec, a, s).trial_id: 0 for a, s in tune_series(spec)}
            with StudyProgress(console, f"{spec.name}: tune phase", steps):
                tuned = run_tune_phase(spec, store, outbox)
            unfinished.remove("tune")
        summary.tuned = tuned
        planned = plan_ladder(spec, tuned)
        summary.planned = len(planned) + len(recall_trials)
        if planned:  # a recall-only study has no ladder
            with StudyProgress(console, f"{spec.name}: ladder phase",
                               {p.trial_id: planned_steps(p) for p in planned}):
                run_ladder_phase(spec, store, outbox, tuned)
        unfinished.remove("ladder")
        trials = store.read_trials()
        state.update(status="ladder-complete", trials=int(len(trials)))
        store.write_json("study.json", state)
        summary.trials = trials
        if report:
            _report_stage(spec, store, _report_tracker(outbox, uri, spec.name, location.artifact_location), console, state, summary)
    except StudyInterrupted as exc:
        summary.interrupted = exc.signum
        for phase in unfinished:
            outbox.phase_finished(phase, "KILLED")
        state.update(status="interrupted", interrupted_by=signal.Signals(exc.signum).name)
        summary.trials = store.read_trials()
        state["trials"] = int(len(summary.trials))
        store.write_json("study.json", state)
    except BaseException as exc:
        state.update(status="failed", error=f"{type(exc).__name__}: {str(exc)[:500]}")
        try:
            store.write_json("study.json", state)
        except Exception:  # noqa: BLE001 - the original error is the one to see
            pass
        raise
    finally:
        _INTERRUPTS.uninstall()
    _catch_up(outbox, uri)
    summary.mlflow_pending = outbox.pending()
    summary.mlflow_problem = outbox.stats.offline_reason
    summary.seconds = time.perf_counter() - started
    return summary


def _catch_up(outbox: MlflowOutbox, uri: str) -> bool:
    """Let the outbox replay what it holds, for up to MLFLOW_DRAIN_S, if the tracking store answers now
    (the background thread may be between two probes); at once when it does not. True when empty."""
    return outbox.drain(MLFLOW_DRAIN_S if probe_tracking(uri) is None else 0)


def _report_tracker(outbox: MlflowOutbox, uri: str, study: str, artifact_location: str | None) -> StudyTracker | None:
    """A tracker for the report run once the outbox has caught up; None (report to the store only,
    with a warning) while the tracking store is unreachable."""
    if not _catch_up(outbox, uri):
        _warn("the report goes to the study's storage only: MLflow is not reachable "
              f"({outbox.stats.offline_reason}); `mcscale report {study}` logs it once it is.")
        return None
    try:
        return StudyTracker(uri, study, artifact_location=artifact_location)
    except Exception as exc:  # noqa: BLE001 - MLflow went away between the two calls
        _warn(f"the report goes to the study's storage only: MLflow failed ({type(exc).__name__}).")
        return None


def _open_study_outbox(spec: StudySpec, uri: str, artifact_location: str | None = None) -> MlflowOutbox:
    from scaling.study.outbox import OutboxBusy

    try:
        return open_outbox(spec.storage, spec.name, uri, artifact_location=artifact_location)
    except OutboxBusy as exc:
        raise UserInputError("name", f"study {spec.name!r} is being run by another mcscale process ({exc})",
                             "wait for it to end (or stop it), or give this study another name") from None


def _warn(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def _report_stage(spec: StudySpec, store: ResultStore, tracker: StudyTracker | None, console: Any, state: dict,
                  summary: StudySummary) -> None:
    """Fit, backtest and report. A study whose results cannot be fitted yet (too few finished sizes)
    still ends well: the reason is recorded in study.json and shown, and `mcscale report` retries.
    Without a reachable tracking store (`tracker` None) the report is only written to the store."""
    from scaling.report.inputs import StudyResults
    from scaling.report.stage import make_report

    results = StudyResults(spec.name, store.root, spec, summary.trials, store.read_curves())
    try:
        summary.report, summary.report_files = make_report(store, console, tracker=tracker, results=results,
                                                           use_mlflow=tracker is not None)
    except UserInputError as exc:
        summary.report_error = str(exc)
        state.update(status="ladder-complete", report_error=summary.report_error)
    else:
        state.pop("report_error", None)
        state.update(status="complete", report=summary.report_files.uri("report.html"))
    store.write_json("study.json", state)
