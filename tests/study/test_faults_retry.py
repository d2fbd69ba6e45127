"""The store's retries, without Ray: a real S3 server behind a proxy cut for a few seconds.

With $MCSCALE_STORAGE_RETRY_SECONDS=20 the S3 filesystem's own retries give up within a second
(3 attempts), so what bridges a 4 s outage is the store's backoff loop; with 0 the same write fails
at once with a clear storage error. The S3 filesystem handed to Ray keeps its retry strategy
when pickled (pyarrow's own S3FileSystem drops it).
"""

from __future__ import annotations

import pickle
import threading

import pytest

from scaling.data.s3_retry import RetryingS3FileSystem, attempts_for
from scaling.errors import UserInputError
from scaling.study.storage_fs import resolve_storage
from scaling.study.store import ResultStore
from tests.study.faults_support import CuttableProxy


def test_a_short_outage_is_bridged_by_the_store_and_no_retries_fails_clearly(s3_server, monkeypatch):
    bucket = s3_server.make_bucket()
    proxy = CuttableProxy(s3_server.host, s3_server.port)
    try:
        monkeypatch.setenv("MCSCALE_STORAGE_RETRY_SECONDS", "20")
        store = ResultStore(f"s3://{bucket}/studies", "retry", proxy.endpoint)
        assert store.retry_seconds == 20 and store.storage.fs.retry_attempts == 3
        store.write_json("study.json", {"status": "running"})
        proxy.cut()
        restored = threading.Event()
        threading.Timer(4.0, lambda: (proxy.restore(), restored.set())).start()
        store.write_json("study.json", {"status": "written through the outage"})
        assert restored.is_set()  # the write returned only after the proxy came back
        assert ResultStore(f"s3://{bucket}/studies", "retry", s3_server.endpoint).read_json("study.json") == \
            {"status": "written through the outage"}

        impatient = ResultStore(f"s3://{bucket}/studies", "retry", proxy.endpoint, retry_seconds=0)
        proxy.cut()
        with pytest.raises(UserInputError) as err:
            impatient.write_json("study.json", {"status": "lost"})
        assert err.value.field == "storage"
    finally:
        proxy.close()


def test_the_s3_filesystem_keeps_its_retries_when_pickled(s3_server, monkeypatch):
    monkeypatch.setenv("MCSCALE_STORAGE_RETRY_SECONDS", "300")
    fs = resolve_storage("s3://any/prefix", s3_server.endpoint).fs
    assert isinstance(fs, RetryingS3FileSystem) and fs.retry_attempts == attempts_for(300) == 20
    again = pickle.loads(pickle.dumps(fs))
    assert isinstance(again, RetryingS3FileSystem) and again.retry_attempts == 20
