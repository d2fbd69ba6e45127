"""Where a study's results live: a local folder or an S3 prefix, both reached through `pyarrow.fs`.

`resolve_storage("./mcscale-runs")` and `resolve_storage("s3://bucket/prefix")` give the same kind of
`Storage` value: a pyarrow filesystem plus a base path on it, so the result store reads and writes
with one code path. S3 endpoints come from the explicit argument, else `$MCSCALE_S3_ENDPOINT`, else
`$AWS_ENDPOINT_URL` (pyarrow's `S3FileSystem` ignores that variable itself, so it is passed on as
`endpoint_override`). Region `$AWS_REGION` / `$AWS_DEFAULT_REGION`, else us-east-1 when an
endpoint is given.

Credentials are resolved where the filesystem is used, never stored in it: the filesystem is
built without keys, so the AWS SDK's default chain (`$AWS_ACCESS_KEY_ID` / `$AWS_SECRET_ACCESS_KEY`
/ `$AWS_SESSION_TOKEN`, profiles, instance roles) finds them on each node. This matters because
Ray Tune pickles its storage filesystem (tuner.pkl, the search state in the bucket): a filesystem
built with explicit keys would write them there in plain text.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from scaling.data.sources import s3_endpoint, s3_filesystem as _s3_filesystem  # noqa: F401 - re-exported
from scaling.errors import UserInputError

STORAGE_FIX = ("give a local folder (e.g. ./mcscale-runs) or s3://bucket/prefix; for S3 set the endpoint "
               "(s3_endpoint, $MCSCALE_S3_ENDPOINT or $AWS_ENDPOINT_URL) and the credentials "
               "($AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY)")


def s3_filesystem(endpoint: str | None):
    """The corpus loader's S3 filesystem, with errors naming the study's `s3_endpoint` setting, retrying
    transient errors for $MCSCALE_STORAGE_RETRY_SECONDS (scaling.data.s3_retry)."""
    from scaling.data.s3_retry import attempts_for, storage_retry_seconds

    return _s3_filesystem(endpoint, field="s3_endpoint", retry_attempts=attempts_for(storage_retry_seconds()))


@dataclass
class Storage:
    """A base location on a pyarrow filesystem: `path` is an absolute local path or `bucket/prefix`."""

    fs: object  # pyarrow.fs.FileSystem
    path: str
    is_s3: bool
    endpoint: str | None = None

    @property
    def uri(self) -> str:
        """What the user sees: an absolute local path or s3://bucket/prefix."""
        return f"s3://{self.path}" if self.is_s3 else self.path

    def join(self, *parts: str) -> "Storage":
        path = "/".join([self.path.rstrip("/"), *[p.strip("/") for p in parts if p]])
        return Storage(self.fs, path, self.is_s3, self.endpoint)

    def uri_of(self, path: str) -> str:
        return f"s3://{path}" if self.is_s3 else path

    # ------------------------------------------------------------------ file operations
    def info(self, path: str):
        return self.fs.get_file_info(path)

    def is_file(self, path: str) -> bool:
        from pyarrow import fs as pafs

        return self.info(path).type == pafs.FileType.File

    def is_dir(self, path: str) -> bool:
        from pyarrow import fs as pafs

        return self.info(path).type == pafs.FileType.Directory

    def list_dir(self, path: str) -> list:
        """FileInfo entries directly under `path` ([] when it does not exist)."""
        from pyarrow import fs as pafs

        try:
            return list(self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read_bytes(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        if not self.is_file(path):
            return None
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file. Locally through a hidden temp name and an atomic rename; S3 puts are atomic."""
        parent = path.rsplit("/", 1)[0]
        if self.is_s3:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        Path(parent).mkdir(parents=True, exist_ok=True)
        name = path.rsplit("/", 1)[1]
        tmp = f"{parent}/.{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def resolve_storage(storage: str, s3_endpoint_url: str | None = None, field: str = "storage") -> Storage:
    """`storage` as a `Storage`: a local folder (relative paths are made absolute) or s3://bucket/prefix."""
    from pyarrow import fs as pafs

    if not isinstance(storage, str) or not storage.strip():
        raise UserInputError(field, f"{storage!r} is not a storage location", STORAGE_FIX)
    storage = storage.strip()
    if storage.startswith("s3://"):
        rest = storage[len("s3://"):]
        bucket = rest.split("/", 1)[0]
        rest = rest.rstrip("/")
        if not bucket:
            raise UserInputError(field, f"{storage!r} names no bucket", "write s3://bucket or s3://bucket/prefix")
        endpoint = s3_endpoint(s3_endpoint_url)
        return Storage(s3_filesystem(endpoint), rest, True, endpoint)
    if "://" in storage and not storage.startswith("file://"):
        raise UserInputError(field, f"{storage!r} uses a scheme mcscale cannot store results on", STORAGE_FIX)
    if storage.startswith("file://"):
        storage = urlparse(storage).path
    path = os.path.abspath(os.path.expanduser(storage))
    return Storage(pafs.LocalFileSystem(), path, False, None)
