"""A clean terminal (issue 24): library log lines that are not about the study (MLflow creating its
database, Ray's token notice) stay off stderr unless `--verbose`, while mcscale's own warnings stay."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import sys, warnings
from scaling.cli.common import quiet_libraries
quiet_libraries(show={show})
from mlflow.tracking import MlflowClient
MlflowClient("sqlite:///{db}").search_experiments()
import logging
logging.getLogger("ray._private.authentication.authentication_token_setup").warning("Token authentication is disabled")
warnings.warn("a warning of mcscale's own", UserWarning)
"""


def _stderr(tmp_path, show: bool) -> str:  # noqa: ANN001
    db = tmp_path / f"mlflow-{show}.db"
    # a clean environment: an in-process CLI test may have set the quiet level in this process's env
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_LOGGING_LEVEL", "MCSCALE_VERBOSE", "PYTHONWARNINGS")}
    result = subprocess.run([sys.executable, "-c", CODE.format(show=show, db=db)], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_library_chatter_is_hidden_by_default_and_shown_with_verbose(tmp_path):
    quiet = _stderr(tmp_path, show=False)
    assert "INFO" not in quiet and "Token authentication" not in quiet
    assert "a warning of mcscale's own" in quiet  # ours is never silenced
    loud = _stderr(tmp_path, show=True)
    assert "Creating initial MLflow database tables" in loud and "Token authentication" in loud
