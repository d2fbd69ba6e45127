"""S3 filesystems that keep retrying transient errors for a bounded time, also after pickling.

Why: pyarrow's `S3FileSystem` retries a refused connection 3 times in under a second by default,
and it drops its `retry_strategy` when pickled - and Ray pickles the storage filesystem into every
trial (checkpoint uploads) and into the experiment state. A study whose S3 endpoint refuses
connections for a minute must ride that out, so the filesystem mcscale builds is this subclass,
which pickles its construction arguments and rebuilds itself with the same retry strategy.

AWS's "standard" strategy (exponential backoff with jitter, each wait capped at 20 s) is used;
measured here against a refused port: 3 attempts gave up after 0.8 s, 8 after 53 s, so each attempt
past the sixth adds about 20 s (`attempts_for`).
"""

from __future__ import annotations

import math
import os

from pyarrow import fs as pafs

RETRY_ENV = "MCSCALE_STORAGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 300.0  # transient storage errors are retried this long before a study gives up
_FIRST_SIX_ATTEMPTS_S = 25.0
_CAPPED_WAIT_S = 20.0


def storage_retry_seconds() -> float:
    """How long transient storage errors are retried: $MCSCALE_STORAGE_RETRY_SECONDS, else 300 s."""
    raw = os.environ.get(RETRY_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        from scaling.errors import UserInputError

        raise UserInputError(RETRY_ENV, f"{raw!r} is not a number of seconds",
                             "set it to how long storage errors may be retried, e.g. 300") from None
    return max(0.0, value)


def attempts_for(retry_seconds: float) -> int:
    """Attempts of AWS's standard retry strategy that span about `retry_seconds` of refused connections."""
    if retry_seconds <= _FIRST_SIX_ATTEMPTS_S:
        return 3
    return 6 + math.ceil((retry_seconds - _FIRST_SIX_ATTEMPTS_S) / _CAPPED_WAIT_S)


class RetryingS3FileSystem(pafs.S3FileSystem):
    """`pyarrow.fs.S3FileSystem` with AWS's standard retries (`attempts`), kept across pickling."""

    def __init__(self, attempts: int = 3, **kwargs) -> None:  # noqa: ANN003 - S3FileSystem's own keywords
        super().__init__(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts), **kwargs)
        self._mcscale_args = dict(kwargs, attempts=attempts)

    @property
    def retry_attempts(self) -> int:
        return int(self._mcscale_args["attempts"])

    def __reduce__(self):
        return (_rebuild, (self._mcscale_args,))


def _rebuild(args: dict) -> RetryingS3FileSystem:
    return RetryingS3FileSystem(**args)
