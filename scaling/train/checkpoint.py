"""Trial checkpoints: atomic, device-agnostic, with the metric history.

Every tensor is saved on the CPU and loaded with `map_location="cpu"`, then copied into a
model and optimiser that already live on the resumed trial's device, so a trial checkpointed
on a GPU resumes on a CPU and the reverse.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from scaling.errors import UserInputError

CHECKPOINT_FILE = "trial.pt"


def to_cpu(tree: Any) -> Any:
    """A copy of a (nested) state dict with every tensor on the CPU."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu")
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


def save_checkpoint(directory: Path, payload: dict[str, Any]) -> None:
    """Write then rename, so a crash mid-write never leaves a torn checkpoint behind."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".trial-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        torch.save(to_cpu(payload), tmp)
        os.replace(tmp, directory / CHECKPOINT_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    summary = {k: v for k, v in payload["metrics"].items() if isinstance(v, (int, float, str))}
    (directory / "summary.json.tmp").write_text(json.dumps(summary, indent=2, sort_keys=True))
    os.replace(directory / "summary.json.tmp", directory / "summary.json")


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The checkpoint in `directory` with every tensor on the CPU, or None when there is none."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt checkpoint is bad input, not a crash
        raise UserInputError("checkpoint_dir", f"cannot read checkpoint {path}: {exc}",
                             "delete the damaged checkpoint to start over") from None
