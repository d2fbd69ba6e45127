"""A trial on several workers: a Ray Train `TorchTrainer` launched from inside a Tune trial.

This is the pattern Ray documents for Tune + Train V2: the Tune trial function is a light
driver that builds a TorchTrainer and calls `fit()`; the trainer's workers (each holding its
CPUs and, on a cluster, one GPU) run `run_trial` as one data-parallel group, and Ray's
`TuneReportCallback` forwards rank 0's reports to the Tune trial, so the study's driver-side
bookkeeping sees one trial like any other. A trainer is never passed into `Tuner`.

Fault tolerance: the main worker's checkpoint is reported to Ray Train, which keeps it in the
study's storage (`<study>/ray/train/<trial>`). When a worker dies, Train restarts the group
(`FailureConfig.max_failures`) and every worker resumes from that checkpoint; when the whole
Tune trial restarts (a study resumed after its driver died), a trainer with the same name and
storage restores the same checkpoint. A trial never starts again from step 0 once it has one.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from scaling.train.config import TrialConfig

ResultFormatter = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class WorkerResources:
    """What each worker of a multi-worker trial holds."""

    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    accelerator_type: str | None = None
    max_failures: int = 3


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: resume from Train's checkpoint, train, report collectively."""
    import ray.train

    from scaling.train.distributed import WorkerGroup
    from scaling.train.loop import run_trial

    config: TrialConfig = loop_config["config"]
    formatter: ResultFormatter = loop_config["formatter"]
    context = ray.train.get_context()
    group = WorkerGroup(context.get_world_rank(), context.get_world_size(), context.get_local_rank())
    workdir = Path(tempfile.mkdtemp(prefix=f"mcscale-worker{group.rank}-"))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        checkpoint.to_directory(str(workdir))

    def reporter(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        # Every worker reports (Train's report is a barrier); only the main worker's folder holds the file.
        saved = ckpt_dir if group.is_main and ckpt_dir and (Path(ckpt_dir) / "trial.pt").exists() else None
        ray.train.report(formatter(metrics), checkpoint=ray.train.Checkpoint.from_directory(saved) if saved else None)

    try:
        run_trial(replace(config, checkpoint_dir=str(workdir)), reporter=reporter, group=group)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_multiworker_trial(config: TrialConfig, formatter: ResultFormatter, resources: WorkerResources,
                          name: str, storage_path: str, storage_filesystem: Any = None) -> None:
    """Run `config` as a Ray Train TorchTrainer from inside the calling Tune trial (blocks until done).

    `formatter` turns the trial's metrics into the result dict the Tune trial reports (it must
    be picklable); `name` and `storage_path` identify the Train run, so a restarted Tune trial
    finds its checkpoint again.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"config": config, "formatter": formatter},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=use_gpu, resources_per_worker=per_worker,
                                     accelerator_type=resources.accelerator_type if use_gpu else None),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_filesystem,
                             failure_config=FailureConfig(max_failures=resources.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1), callbacks=[TuneReportCallback()]),
    )
    trainer.fit()
