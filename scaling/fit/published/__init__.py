"""The public scaling-law measurements shipped with mcscale (see README.md here for sources).

Why shipped: the calibration suite (`scaling.fit.suite`, `benchmarks/calibration.py`) and the
fitting tests check mcscale against numbers nobody in this project produced; shipping them as
package data means a clean clone and an installed `mcscale` both have them.
``MCSCALE_SCALING_DATA`` points elsewhere (e.g. a newer copy) when set.
"""

from __future__ import annotations

import os
from pathlib import Path

from scaling.errors import UserInputError

PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir() -> Path:
    """The directory holding the CSVs: ``MCSCALE_SCALING_DATA`` if set, else the shipped copy."""
    override = os.environ.get("MCSCALE_SCALING_DATA")
    return Path(override) if override else PACKAGE_DIR


def data_file(name: str) -> Path:
    """Path of one published CSV; a clear error when an override directory lacks it."""
    path = data_dir() / name
    if not path.is_file():
        raise UserInputError(
            "MCSCALE_SCALING_DATA", f"the published data file {str(path)!r} is missing",
            "unset MCSCALE_SCALING_DATA to use the copy shipped with mcscale, or point it at a directory "
            "holding the scaling-laws CSVs",
        )
    return path
