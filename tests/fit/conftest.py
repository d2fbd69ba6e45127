"""Fixtures for the fitting tests: the published scaling-law data and fits shared across tests.

The data ship with the package (``scaling/fit/published/``; ``MCSCALE_SCALING_DATA`` may point
elsewhere), so every test here always runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.fit import CHINCHILLA, FitOptions, fit, make_fit_data

from scaling.fit.published import data_file


@pytest.fixture(scope="session")
def epoch_csv() -> Path:
    return data_file("epoch_chinchilla_points.csv")


@pytest.fixture(scope="session")
def gadre_csv() -> Path:
    return data_file("gadre2024_final_losses.csv")


@pytest.fixture(scope="session")
def epoch_points(epoch_csv: Path):
    """Epoch AI's 245 Chinchilla points minus the 5 highest losses, D = C / (6 N)."""
    df = pd.read_csv(epoch_csv)
    assert len(df) == 245
    df = df.sort_values("loss", kind="stable").iloc[:-5]
    n = df["Model Size"].to_numpy()
    c = df["Training FLOP"].to_numpy()
    return make_fit_data({"params_nonembed": n, "tokens": c / (6 * n), "flops": c}, df["loss"].to_numpy())


@pytest.fixture(scope="session")
def epoch_fit(epoch_points):
    """Hoffmann's procedure on the 240 points (4,500 starts) with a 200-resample bootstrap."""
    return fit(epoch_points, CHINCHILLA, options=FitOptions(bootstrap=200, seed=0))


def synthetic_design(sizes: int = 6, tokens_per_param=(5, 10, 20, 40, 80)) -> dict[str, np.ndarray]:
    """A small ladder: ``sizes`` model sizes from 10M to 3B, each at several tokens per parameter."""
    n = np.repeat(np.geomspace(1e7, 3e9, sizes), len(tokens_per_param))
    return {"params_nonembed": n, "tokens": n * np.tile(np.asarray(tokens_per_param, float), sizes)}
