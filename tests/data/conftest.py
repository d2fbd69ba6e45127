"""Shared fixtures for the data-layer tests: a private cache folder, small text helpers."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mcscale-cache")


@pytest.fixture(autouse=True)
def private_cache(session_cache, monkeypatch):
    """Every test caches into a folder of the test session, never the user's ~/.cache."""
    monkeypatch.setenv("MCSCALE_CACHE", str(session_cache))
    for name in ("MCSCALE_S3_ENDPOINT", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return session_cache


SAMPLE_TEXT = (
    "Memory Caching keeps a recurrent memory's update rule unchanged and only changes how it is read.\n"
    "The sequence is cut into segments; the state at the end of each segment is frozen and kept.\n"
    "Un café, s'il vous plaît — naïve façade, Ελληνικά, 日本語のテキスト, emoji 🙂 too.\n"
) * 20
