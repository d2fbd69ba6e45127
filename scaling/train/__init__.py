"""One training trial: `run_trial(TrialConfig)`, resumable, on CPU or GPU, one worker or many.

Modules, one job each: `config` (TrialConfig), `device` (device, precision, memory),
`batches` (data per step, prefetching), `optim` (AdamW and schedule), `checkpoint`,
`evaluate`, `distributed` (DDP / FSDP inside a trial), `multiworker` (a trial as a Ray Train
TorchTrainer), `throughput` (peak FLOP/s, MFU), `memory` (the per-GPU memory estimate) and
`loop` (the step loop).
"""

from scaling.train.batches import check_inputs
from scaling.train.checkpoint import CHECKPOINT_FILE, load_checkpoint
from scaling.train.config import STATUS_COMPLETED, STATUS_DIVERGED, STATUS_RUNNING, TrialConfig, TrialResult
from scaling.train.loop import Reporter, StepCallback, run_trial

__all__ = ["CHECKPOINT_FILE", "STATUS_COMPLETED", "STATUS_DIVERGED", "STATUS_RUNNING", "Reporter", "StepCallback",
           "TrialConfig", "TrialResult", "check_inputs", "load_checkpoint", "run_trial"]
