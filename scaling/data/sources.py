"""Where corpus files live: a local file, folder or glob, or the same on S3 (`s3://bucket/...`).

S3 goes through `pyarrow.fs.S3FileSystem`. Its endpoint comes from `CorpusSpec.s3_endpoint`, else
`$MCSCALE_S3_ENDPOINT`, else `$AWS_ENDPOINT_URL` (pyarrow itself ignores that variable), so an
S3-compatible store (MinIO, Ceph, moto) works by URL alone. Credentials: `$AWS_ACCESS_KEY_ID` /
`$AWS_SECRET_ACCESS_KEY` / `$AWS_SESSION_TOKEN` when set, else the AWS SDK's default chain
(profiles, instance roles). Region: `$AWS_REGION` / `$AWS_DEFAULT_REGION`, else us-east-1 when an
endpoint is given.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from scaling.errors import UserInputError

GLOB_CHARS = set("*?[")
S3_FIX = ("check the URI, the endpoint (corpus.s3_endpoint, $MCSCALE_S3_ENDPOINT or $AWS_ENDPOINT_URL) "
          "and the AWS credentials ($AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY)")


@dataclass(frozen=True)
class SourceFile:
    uri: str  # what the user sees: a local path or s3://bucket/key
    path: str  # the path on `Source.fs`: an absolute local path, or bucket/key
    size: int
    mtime: str  # modification time as text (nanoseconds locally); part of cache keys

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Source:
    spec: str
    is_s3: bool
    files: list[SourceFile]
    fs: object  # pyarrow.fs.FileSystem
    kind: str  # "file" | "folder" | "glob"


def s3_endpoint(explicit: str | None) -> str | None:
    """The S3 endpoint URL to use: explicit, else $MCSCALE_S3_ENDPOINT, else $AWS_ENDPOINT_URL, else None (AWS)."""
    for value in (explicit, os.environ.get("MCSCALE_S3_ENDPOINT"), os.environ.get("AWS_ENDPOINT_URL")):
        if value:
            return value
    return None


def s3_filesystem(endpoint: str | None, field: str = "corpus.s3_endpoint", retry_attempts: int = 3):
    """A pyarrow S3FileSystem for `endpoint` (e.g. "http://127.0.0.1:9000") or AWS when None.

    pyarrow ignores $AWS_ENDPOINT_URL, so the endpoint is passed explicitly; credentials and region
    come from the usual AWS environment variables. `field` names the setting in error messages.
    """
    from scaling.data.s3_retry import RetryingS3FileSystem  # keeps its retries when Ray pickles it

    kwargs: dict = {"connect_timeout": 10, "request_timeout": 60}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UserInputError(field, f"{endpoint!r} is not an http(s) endpoint URL",
                                 "write it as http://host:port or https://host")
        kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
        kwargs["scheme"] = parsed.scheme
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ("us-east-1" if endpoint else None)
    if region:
        kwargs["region"] = region
    # No explicit keys: the AWS SDK's default chain ($AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY /
    # $AWS_SESSION_TOKEN, profiles, instance roles) resolves them wherever the filesystem is used. A
    # filesystem built with keys carries them when pickled (Ray Tune stores its storage filesystem in
    # tuner.pkl and the search state in the bucket), so keys never go into the constructor.
    return RetryingS3FileSystem(retry_attempts, **kwargs)


def _hidden(rel_parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__pycache__" for p in rel_parts)


def _resolve_local(spec: str) -> Source:
    from pyarrow import fs as pafs

    expanded = os.path.expanduser(spec)
    local = pafs.LocalFileSystem()

    def entry(p: str) -> SourceFile:
        st = os.stat(p)
        return SourceFile(uri=p, path=os.path.abspath(p), size=st.st_size, mtime=str(st.st_mtime_ns))

    if GLOB_CHARS & set(expanded):
        matches = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
        if not matches:
            raise UserInputError("corpus.source", f"no files match the glob {spec!r}",
                                 "check the pattern (use ** for sub-folders) and that the files exist")
        return Source(spec, False, [entry(p) for p in matches], local, "glob")
    path = Path(expanded)
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path).parts)),
                       key=lambda p: p.relative_to(path).as_posix())
        if not files:
            raise UserInputError("corpus.source", f"folder {spec!r} holds no files",
                                 "put the corpus files in it or point corpus.source elsewhere")
        return Source(spec, False, [entry(str(p)) for p in files], local, "folder")
    if path.is_file():
        return Source(spec, False, [entry(str(path))], local, "file")
    raise UserInputError("corpus.source", f"{spec!r} does not exist",
                         "give an existing file, folder, glob or s3:// URI, or 'builtin' for the built-in corpus")


def _resolve_s3(spec: str, endpoint: str | None) -> Source:
    from pyarrow import fs as pafs

    rest = spec[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UserInputError("corpus.source", f"{spec!r} names no bucket", "write s3://bucket/key, prefix or glob")
    fs = s3_filesystem(endpoint)

    def entries(infos) -> list[SourceFile]:
        out = [SourceFile(uri=f"s3://{i.path}", path=i.path, size=int(i.size or 0),
                          mtime=str(i.mtime_ns if i.mtime_ns is not None else ""))
               for i in infos if i.type == pafs.FileType.File]
        return sorted(out, key=lambda f: f.path)

    try:
        if GLOB_CHARS & set(key):
            first = min(key.index(c) for c in GLOB_CHARS if c in key)
            base = key[:first].rsplit("/", 1)[0] if "/" in key[:first] else ""
            infos = fs.get_file_info(pafs.FileSelector(f"{bucket}/{base}".rstrip("/"), recursive=True,
                                                       allow_not_found=True))
            pattern = f"{bucket}/{key}"
            files = [f for f in entries(infos) if fnmatch.fnmatchcase(f.path, pattern)]
            if not files:
                raise UserInputError("corpus.source", f"no objects match the glob {spec!r}",
                                     "check the bucket, prefix and pattern")
            return Source(spec, True, files, fs, "glob")
        info = fs.get_file_info(f"{bucket}/{key}".rstrip("/"))
        if info.type == pafs.FileType.File:
            return Source(spec, True, entries([info]), fs, "file")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
            files = [f for f in entries(infos)
                     if not _hidden(tuple(f.path[len(info.path):].strip("/").split("/")))]
            if not files:
                raise UserInputError("corpus.source", f"{spec!r} holds no objects",
                                     "upload the corpus there or point corpus.source elsewhere")
            return Source(spec, True, files, fs, "folder")
    except UserInputError:
        raise
    except (OSError, ValueError) as exc:
        raise UserInputError("corpus.source", f"cannot access {spec!r} ({exc})", S3_FIX) from None
    raise UserInputError("corpus.source", f"{spec!r} does not exist", S3_FIX)


def resolve_source(spec: str, endpoint: str | None = None) -> Source:
    """The files a corpus source names, in a deterministic (sorted) order."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserInputError("corpus.source", f"expected a path, glob or s3:// URI, got {spec!r}",
                             "give a corpus source, or 'builtin' for the built-in corpus")
    if spec.startswith("s3://"):
        return _resolve_s3(spec, s3_endpoint(endpoint))
    if "://" in spec:
        raise UserInputError("corpus.source", f"unsupported URI scheme in {spec!r}",
                             "use a local path, a glob or an s3:// URI")
    return _resolve_local(spec)


def read_bytes(source: Source, f: SourceFile, limit: int | None = None) -> bytes:
    """A file's bytes (at most `limit`)."""
    try:
        if not source.is_s3:
            with open(f.path, "rb") as fh:
                return fh.read() if limit is None else fh.read(limit)
        with source.fs.open_input_stream(f.path) as stream:
            return stream.read() if limit is None else stream.read(limit)
    except OSError as exc:
        raise UserInputError("corpus.source", f"cannot read {f.uri} ({exc})",
                             S3_FIX if source.is_s3 else "check that the file exists and is readable") from None
