"""Training corpora: one token stream with a fixed train/validation split.

`load_corpus(CorpusSpec(...))` accepts

- `"builtin"`: the running Python's standard-library sources (see `scaling.data.builtin`);
- a local file, folder (all files below it, hidden ones skipped) or glob (`data/**/*.jsonl`);
- `s3://bucket/key`, `s3://bucket/prefix` or `s3://bucket/prefix/*.parquet`, on AWS or any
  S3-compatible store (see `scaling.data.sources` for endpoint and credentials).

Formats (`format: auto` picks by extension, `.gz` allowed for text and JSONL):

- `text` (.txt .md .rst .py and other source/markup extensions): one document per file;
- `jsonl` (.jsonl .ndjson .json): one document per record, the text in `text_field`
  (a .json file holding one array of records works too);
- `parquet` (.parquet .pq): one document per row, the text in column `text_field`;
- `tokens` (.bin .npy): pre-tokenized ids, memory-mapped and never copied into memory. `.bin`
  is headerless little-endian `token_dtype` (uint16 when the vocabulary fits, else uint32), or
  the llm.c / modded-nanogpt format (a 256 x int32 header with magic 20240520). `.npy` is any
  1-D integer array. (`max_bytes` caps text only: shards are memory-mapped, nothing is read
  up front except one pass checking that every id is inside the vocabulary.)

In a folder or glob under `auto`, files with other extensions are skipped (and counted in the
description); text, JSONL and Parquet files may be mixed, token shards may not be mixed with text.

Text documents are joined with a blank line into one stream and tokenized; the stream is cached
(`scaling.data.cache`) keyed by the files' sizes and modification times, the tokenizer and the
split, so the many trials of a study tokenize once. The split is fixed: the last `val_fraction`
of the token stream is validation (by document order, so it is the tail of the last documents).
The built-in corpus splits by file instead (see its module). Token shards split the same way,
except when shard names say which is which: shards whose name has a `val` / `valid` /
`validation` part (`val.bin`, `fineweb_val_000000.bin`) are the validation split and the others
training, whatever `val_fraction` says. Several shards on one side are concatenated into one
cached file (streamed, never held in memory); S3 shards are downloaded to the cache first.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

import numpy as np

from scaling.data import builtin as builtin_corpus
from scaling.data.cache import cached_arrays, entry_dir, load_arrays, store_entry
from scaling.data.sources import Source, SourceFile, read_bytes, resolve_source
from scaling.data.tokenizers import Tokenizer, encode_documents, load_tokenizer
from scaling.errors import UserInputError

FORMATS = ("auto", "text", "jsonl", "parquet", "tokens")
TOKEN_DTYPES = ("auto", "uint16", "uint32")
TEXT_EXTENSIONS = frozenset({
    ".txt", ".text", ".md", ".markdown", ".rst", ".org", ".tex", ".py", ".pyi", ".c", ".h", ".cc", ".cpp",
    ".hpp", ".java", ".js", ".ts", ".go", ".rs", ".rb", ".sh", ".html", ".htm", ".xml", ".css", ".yaml",
    ".yml", ".toml", ".cfg", ".ini", ".csv", ".tsv", ".log"})
JSONL_EXTENSIONS = frozenset({".jsonl", ".ndjson", ".json"})
PARQUET_EXTENSIONS = frozenset({".parquet", ".pq"})
TOKEN_EXTENSIONS = frozenset({".bin", ".npy"})
LLMC_MAGIC, LLMC_HEADER_INTS = 20240520, 256
_VAL_NAME = re.compile(r"(^|[_\-.])(val|valid|validation)([_\-.]|$)")
_CHUNK = 1 << 24  # elements per pass when scanning or copying token shards


@dataclass(frozen=True)
class CorpusSpec:
    source: str = "builtin"  # "builtin" | local path | glob | folder | "s3://bucket/key-or-prefix-or-glob"
    format: str = "auto"  # auto | text | jsonl | parquet | tokens
    text_field: str = "text"  # JSONL field / Parquet column holding the text
    tokenizer: str = "bytes"  # "bytes" or a Hugging Face tokenizer.json path
    s3_endpoint: str | None = None  # e.g. "http://127.0.0.1:9000"; else $MCSCALE_S3_ENDPOINT / $AWS_ENDPOINT_URL
    val_fraction: float = 0.05  # fixed, deterministic validation share
    token_dtype: str = "auto"  # .bin shards: uint16 | uint32 (auto: uint16 if the vocabulary fits)
    max_bytes: int | None = None  # cap on the text read (quick runs, tests)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UserInputError("corpus.format", f"unknown corpus format {self.format!r}",
                                 f"use one of {', '.join(FORMATS)}")
        if self.token_dtype not in TOKEN_DTYPES:
            raise UserInputError("corpus.token_dtype", f"unknown token dtype {self.token_dtype!r}",
                                 f"use one of {', '.join(TOKEN_DTYPES)}")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0.0 <= float(self.val_fraction) < 1.0:
            raise UserInputError("corpus.val_fraction", f"val_fraction must lie in [0, 1), got {self.val_fraction!r}",
                                 "use e.g. 0.05 (5% of the corpus for validation)")
        if self.max_bytes is not None and (isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int)
                                           or self.max_bytes <= 0):
            raise UserInputError("corpus.max_bytes", f"max_bytes must be a positive integer, got {self.max_bytes!r}",
                                 "remove it to read the whole corpus, or give a byte count such as 1000000")
        if not isinstance(self.text_field, str) or not self.text_field:
            raise UserInputError("corpus.text_field", f"expected a field name, got {self.text_field!r}",
                                 "name the JSONL field / Parquet column holding the text, e.g. text")


@dataclass
class TokenCorpus:
    train: np.ndarray  # 1-D integer tokens (np.memmap for token shards and cached text; never copied)
    val: np.ndarray
    tokenizer: Tokenizer
    description: str  # what, how many documents / bytes / tokens, and the split


# ----------------------------------------------------------------------------- helpers
def _suffix(name: str) -> str:
    """Extension deciding the format: `.jsonl` for `x.jsonl.gz`."""
    parts = PurePosixPath(name.lower()).suffixes
    if parts and parts[-1] == ".gz":
        parts = parts[:-1]
    return parts[-1] if parts else ""


def _format_of(name: str) -> str | None:
    ext = _suffix(name)
    for fmt, exts in (("text", TEXT_EXTENSIONS), ("jsonl", JSONL_EXTENSIONS), ("parquet", PARQUET_EXTENSIONS),
                      ("tokens", TOKEN_EXTENSIONS)):
        if ext in exts:
            return fmt
    return None


def _split_point(n: int, val_fraction: float) -> int:
    """Index where validation starts: the last ceil(val_fraction * n) tokens (at least 1 if val_fraction > 0)."""
    if val_fraction <= 0 or n == 0:
        return n
    n_val = max(1, int(np.ceil(val_fraction * n)))
    return max(0, n - n_val)


def _count(n: int) -> str:
    return f"{n:,}"


def _check_min_tokens(train: np.ndarray, min_tokens: int, what: str) -> None:
    if len(train) < min_tokens:
        raise UserInputError(
            "corpus.source",
            f"{what} has {len(train):,} training tokens, shorter than one sequence ({min_tokens:,} tokens "
            "= seq_len + 1)",
            "use a larger corpus (or raise corpus.max_bytes / lower corpus.val_fraction), or a shorter model.seq_len")


def _check_ids(arr: np.ndarray, vocab_size: int, uri: str, tokenizer_name: str) -> None:
    """Every id in [0, vocab_size), scanned in chunks so a memory map is never read whole at once."""
    if np.issubdtype(arr.dtype, np.unsignedinteger) and np.iinfo(arr.dtype).max < vocab_size:
        return
    for start in range(0, len(arr), _CHUNK):
        chunk = arr[start:start + _CHUNK]
        lo, hi = int(chunk.min()), int(chunk.max())
        if hi >= vocab_size or lo < 0:
            bad = hi if hi >= vocab_size else lo
            raise UserInputError(
                "corpus.tokenizer",
                f"token shard {uri} holds token id {bad}, outside the vocabulary of tokenizer {tokenizer_name} "
                f"({vocab_size} ids)",
                "load it with the tokenizer that produced it (corpus.tokenizer), or check corpus.token_dtype "
                "(a wrong dtype reads garbage ids)")


# ----------------------------------------------------------------------------- text documents
def _jsonl_records(data: bytes, uri: str, text_field: str) -> Iterator[str]:
    stripped = data.lstrip()
    if stripped.startswith(b"["):
        try:
            records = json.loads(data)
        except ValueError as exc:
            raise UserInputError("corpus.source", f"{uri} is not valid JSON ({exc})",
                                 "fix the file, or write it as JSON Lines (one object per line)") from None
        numbered = enumerate(records, 1)
        where = "record"
    else:
        def parse() -> Iterator[tuple[int, object]]:
            for n, line in enumerate(data.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    yield n, json.loads(line)
                except ValueError as exc:
                    raise UserInputError("corpus.source", f"{uri} line {n} is not valid JSON ({exc})",
                                         "fix the file: JSON Lines needs one JSON object per line") from None
        numbered = parse()
        where = "line"
    for n, record in numbered:
        if not isinstance(record, dict) or text_field not in record:
            fields = sorted(record)[:10] if isinstance(record, dict) else type(record).__name__
            raise UserInputError("corpus.text_field",
                                 f"{uri} {where} {n} has no field {text_field!r} (it has: {fields})",
                                 "set corpus.text_field to the field holding the document text")
        value = record[text_field]
        if value is None:
            continue
        if not isinstance(value, str):
            raise UserInputError("corpus.text_field",
                                 f"{uri} {where} {n}: field {text_field!r} is a {type(value).__name__}, not text",
                                 "set corpus.text_field to the field holding the document text")
        yield value


def _parquet_texts(source: Source, f: SourceFile, text_field: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        handle = source.fs.open_input_file(f.path)
        pf = pq.ParquetFile(handle)
    except (OSError, pa.ArrowException) as exc:
        raise UserInputError("corpus.source", f"{f.uri} is not a readable Parquet file ({exc})",
                             "check the file (or set corpus.format if it is not Parquet)") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise UserInputError("corpus.text_field", f"{f.uri} has no column {text_field!r} (it has: {names[:10]})",
                             "set corpus.text_field to the column holding the document text")
    col_type = pf.schema_arrow.field(text_field).type
    if not (pa.types.is_string(col_type) or pa.types.is_large_string(col_type)
            or pa.types.is_string_view(col_type)):
        raise UserInputError("corpus.text_field", f"{f.uri}: column {text_field!r} has type {col_type}, not text",
                             "set corpus.text_field to the column holding the document text")
    try:
        for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
            for value in batch.column(0).to_pylist():
                if value is not None:
                    yield value
    except (OSError, pa.ArrowException) as exc:
        raise UserInputError("corpus.source", f"{f.uri} is a damaged Parquet file ({exc})",
                             "re-write or remove the file") from None


def _documents(source: Source, files: list[tuple[SourceFile, str]], text_field: str,
               max_bytes: int | None) -> tuple[list[bytes], int, bool]:
    """Documents as UTF-8 bytes in file order; (documents, files read, cut short by max_bytes)."""
    docs: list[bytes] = []
    total = 0
    for n_read, (f, fmt) in enumerate(files, 1):
        if fmt == "text":
            # read one byte past the cap so a cut is noticed
            limit = None if max_bytes is None or f.name.endswith(".gz") else max_bytes - total + 1
            texts: Iterator[bytes] = iter([_maybe_gunzip(read_bytes(source, f, limit), f)])
        elif fmt == "jsonl":
            data = _maybe_gunzip(read_bytes(source, f), f)
            texts = (t.encode("utf-8") for t in _jsonl_records(data, f.uri, text_field))
        else:
            texts = (t.encode("utf-8") for t in _parquet_texts(source, f, text_field))
        for doc in texts:
            if max_bytes is not None and total + len(doc) > max_bytes:
                if max_bytes > total:
                    docs.append(doc[: max_bytes - total])
                return docs, n_read, True
            docs.append(doc)
            total += len(doc)
    return docs, len(files), False


def _maybe_gunzip(data: bytes, f: SourceFile) -> bytes:
    if not f.name.lower().endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise UserInputError("corpus.source", f"{f.uri} is not valid gzip ({exc})",
                             "re-compress or remove it") from None


def _sniff_text(source: Source, f: SourceFile) -> bool:
    head = read_bytes(source, f, 1 << 16)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 4  # only a character cut at the end of the sample
    return True


def _classify(source: Source, fmt: str) -> tuple[list[tuple[SourceFile, str]], int]:
    """(file, format) for each corpus file, and how many files were skipped (auto, unknown extension)."""
    if fmt != "auto":
        return [(f, fmt) for f in source.files], 0
    chosen, skipped = [], 0
    for f in source.files:
        kind = _format_of(f.name)
        if kind is None and source.kind == "file":
            if _sniff_text(source, f):
                kind = "text"
            else:
                raise UserInputError("corpus.format", f"cannot tell the format of {f.uri} from its name "
                                     "and it is not UTF-8 text",
                                     "set corpus.format to text, jsonl, parquet or tokens")
        if kind is None:
            skipped += 1
            continue
        chosen.append((f, kind))
    if not chosen:
        raise UserInputError("corpus.source", f"{source.spec!r} holds no corpus files ({skipped} file(s) with "
                             "extensions that are not text, JSONL, Parquet or token shards)",
                             "set corpus.format to read them anyway, or point corpus.source at the corpus files")
    kinds = {k for _, k in chosen}
    if "tokens" in kinds and len(kinds) > 1:
        raise UserInputError("corpus.format", f"{source.spec!r} mixes token shards with text files",
                             "point corpus.source at one kind (e.g. a glob such as dir/*.bin), or set corpus.format")
    return chosen, skipped


def _load_text(spec: CorpusSpec, source: Source, files: list[tuple[SourceFile, str]], skipped: int,
               tokenizer: Tokenizer, min_tokens: int) -> TokenCorpus:
    material = {"v": 1, "files": [(f.uri, f.size, f.mtime, k) for f, k in files], "text_field": spec.text_field,
                "tokenizer": getattr(tokenizer, "fingerprint", tokenizer.name), "max_bytes": spec.max_bytes}

    def build() -> tuple[dict[str, np.ndarray], dict]:
        docs, n_read, cut = _documents(source, files, spec.text_field, spec.max_bytes)
        n_bytes = sum(len(d) for d in docs)
        if n_bytes == 0:
            raise UserInputError("corpus.source", f"corpus {spec.source!r} is empty (no text in "
                                 f"{len(files)} file(s))", "point corpus.source at files with text in them")
        tokens = encode_documents(docs, tokenizer)
        return {"tokens": tokens}, {"documents": len(docs), "bytes": n_bytes, "files_read": n_read, "cut": cut}

    arrays, meta, _ = cached_arrays("text", material, ("tokens",), build)
    tokens = arrays["tokens"]
    split = _split_point(len(tokens), spec.val_fraction)
    train, val = tokens[:split], tokens[split:]
    kinds = sorted({k for _, k in files})
    where = f"{source.kind} {spec.source!r}" + (f" ({skipped} other file(s) skipped)" if skipped else "")
    cap = f", cut at max_bytes={spec.max_bytes:,}" if meta["cut"] else ""
    description = (f"{'/'.join(kinds)} corpus from {where}: {meta['files_read']} file(s), {meta['documents']:,} "
                   f"documents, {meta['bytes']:,} bytes{cap} -> {len(tokens):,} tokens ({tokenizer.name}); "
                   f"split: last {spec.val_fraction:.1%} of the token stream is validation: "
                   f"{len(train):,} train / {len(val):,} validation tokens")
    _check_min_tokens(train, min_tokens, f"corpus {spec.source!r}")
    return TokenCorpus(train, val, tokenizer, description)


# ----------------------------------------------------------------------------- token shards
@dataclass(eq=False)
class _Shard:
    file: SourceFile
    local_path: str | None  # where to memory-map it (None: `data` holds it in memory)
    dtype: np.dtype
    offset: int
    length: int
    data: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self.data is not None:
            return self.data
        if self.file.name.lower().endswith(".npy"):
            return _open_npy(self.local_path, self.file.uri)
        return np.memmap(self.local_path, dtype=self.dtype, mode="r", offset=self.offset, shape=(self.length,))


def _open_npy(path: str, uri: str) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserInputError("corpus.source", f"{uri} is not a loadable .npy token array ({exc})",
                             "re-write it with numpy.save of a 1-D integer array, or remove it") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        shape = getattr(arr, "shape", None)
        dtype = getattr(arr, "dtype", None)
        raise UserInputError("corpus.source", f"{uri} holds a {dtype} array of shape {shape}, not 1-D integer tokens",
                             "save the token ids as a 1-D integer array")
    return arr


def _bin_layout(head: bytes, size: int, dtype: np.dtype, uri: str) -> tuple[np.dtype, int, int]:
    """(dtype, byte offset, token count) of a .bin shard; recognises the llm.c header."""
    if len(head) >= 4 * LLMC_HEADER_INTS and int(np.frombuffer(head[:4], "<i4")[0]) == LLMC_MAGIC:
        header = np.frombuffer(head[: 4 * LLMC_HEADER_INTS], "<i4")
        version, n = int(header[1]), int(header[2])
        dt = {1: np.dtype("<u2"), 2: np.dtype("<u4")}.get(version)
        if dt is None or n < 0 or 4 * LLMC_HEADER_INTS + n * dt.itemsize > size:
            raise UserInputError("corpus.source", f"{uri} has an llm.c token header (version {version}, {n} tokens) "
                                 f"that does not match its size of {size} bytes",
                                 "re-write or remove the damaged shard")
        return dt, 4 * LLMC_HEADER_INTS, n
    if size == 0:
        raise UserInputError("corpus.source", f"token shard {uri} is empty", "remove it or write tokens into it")
    if size % dtype.itemsize:
        raise UserInputError("corpus.source", f"token shard {uri} has {size} bytes, not a multiple of "
                             f"{dtype.itemsize} ({dtype.name}): truncated or written with another dtype",
                             "re-write the shard, or set corpus.token_dtype to the dtype it was written with")
    return dtype, 0, size // dtype.itemsize


def _local_copy(source: Source, f: SourceFile) -> str | None:
    """A local path holding the shard: itself, or an S3 download in the cache (None: no cache)."""
    if not source.is_s3:
        return f.path
    path = entry_dir("s3-shards", {"uri": f.uri, "size": f.size, "mtime": f.mtime})
    if path is None:
        return None
    target = path / "shard"
    if (path / "meta.json").exists() and target.is_file() and target.stat().st_size == f.size:
        return str(target)

    def write(tmp) -> None:
        from pyarrow import fs as pafs
        try:
            pafs.copy_files(f.path, str(tmp / "shard"), source_filesystem=source.fs,
                            destination_filesystem=pafs.LocalFileSystem())
        except OSError as exc:
            raise UserInputError("corpus.source", f"cannot download {f.uri} ({exc})",
                                 "check the URI, endpoint and credentials") from None
        (tmp / "meta.json").write_text(json.dumps({"uri": f.uri}))

    return str(target) if store_entry(path, write) and target.is_file() else None


def _open_shard(source: Source, f: SourceFile, bin_dtype: np.dtype) -> _Shard:
    local = _local_copy(source, f)
    is_npy = f.name.lower().endswith(".npy")
    if local is None:  # S3 without a writable cache: hold the shard in memory
        raw = read_bytes(source, f)
        if is_npy:
            try:
                data = np.load(io.BytesIO(raw), allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise UserInputError("corpus.source", f"{f.uri} is not a loadable .npy token array ({exc})",
                                     "re-write it with numpy.save of a 1-D integer array") from None
            if data.ndim != 1 or not np.issubdtype(data.dtype, np.integer):
                raise UserInputError("corpus.source", f"{f.uri} is not a 1-D integer array",
                                     "save the token ids as a 1-D integer array")
            return _Shard(f, None, data.dtype, 0, len(data), data)
        dt, off, n = _bin_layout(raw[: 4 * LLMC_HEADER_INTS], len(raw), bin_dtype, f.uri)
        return _Shard(f, None, dt, off, n, np.frombuffer(raw, dtype=dt, count=n, offset=off))
    if is_npy:
        arr = _open_npy(local, f.uri)
        return _Shard(f, local, arr.dtype, 0, len(arr))
    with open(local, "rb") as fh:
        head = fh.read(4 * LLMC_HEADER_INTS)
    dt, off, n = _bin_layout(head, os.path.getsize(local), bin_dtype, f.uri)
    return _Shard(f, local, dt, off, n)


def _join(shards: list[_Shard], role: str) -> tuple[np.ndarray, bool]:
    """One array over the shards: the memory map itself for one shard, else a cached concatenation."""
    if len(shards) == 1:
        return shards[0].array(), False
    dtype = np.result_type(*[s.dtype for s in shards])
    total = sum(s.length for s in shards)
    material = {"v": 1, "role": role, "dtype": dtype.str,
                "shards": [(s.file.uri, s.file.size, s.file.mtime, s.dtype.str, s.offset, s.length) for s in shards]}
    path = entry_dir("token-concat", material)
    if path is not None:
        hit = load_arrays(path, ("tokens",))
        if hit is not None:
            return hit[0]["tokens"], True

        def write(tmp) -> None:
            out = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=dtype, shape=(total,))
            pos = 0
            for s in shards:
                arr = s.array()
                for start in range(0, len(arr), _CHUNK):
                    chunk = arr[start:start + _CHUNK]
                    out[pos:pos + len(chunk)] = chunk
                    pos += len(chunk)
            out.flush()
            del out
            (tmp / "meta.json").write_text(json.dumps({"tokens": total}))

        if store_entry(path, write):
            hit = load_arrays(path, ("tokens",))
            if hit is not None:
                return hit[0]["tokens"], True
    return np.concatenate([np.asarray(s.array()) for s in shards]), True  # no cache: in memory


def _load_tokens(spec: CorpusSpec, source: Source, files: list[SourceFile], skipped: int,
                 tokenizer: Tokenizer, min_tokens: int) -> TokenCorpus:
    if spec.token_dtype == "auto":
        bin_dtype = np.dtype("<u2") if tokenizer.vocab_size <= 1 << 16 else np.dtype("<u4")
    else:
        bin_dtype = np.dtype(spec.token_dtype).newbyteorder("<")
    shards = [_open_shard(source, f, bin_dtype) for f in files]
    for s in shards:
        if s.length == 0:
            raise UserInputError("corpus.source", f"token shard {s.file.uri} is empty", "remove it or fill it")
        _check_ids(s.array(), tokenizer.vocab_size, s.file.uri, tokenizer.name)
    is_val = [bool(_VAL_NAME.search(PurePosixPath(s.file.name.lower()).stem)) for s in shards]
    val_shards = [s for s, v in zip(shards, is_val) if v]
    train_shards = [s for s, v in zip(shards, is_val) if not v]
    n_total = sum(s.length for s in shards)
    if val_shards and train_shards:
        train, _ = _join(train_shards, "train")
        val, _ = _join(val_shards, "val")
        split_text = (f"split by shard name: {len(train_shards)} train shard(s) / {len(val_shards)} validation "
                      f"shard(s) (val/valid/validation in the name), {len(train):,} train / {len(val):,} "
                      "validation tokens")
    else:
        tokens, _ = _join(shards, "all")
        split = _split_point(len(tokens), spec.val_fraction)
        train, val = tokens[:split], tokens[split:]
        split_text = (f"split: last {spec.val_fraction:.1%} of the token stream is validation: "
                      f"{len(train):,} train / {len(val):,} validation tokens")
    dtypes = ", ".join(sorted({s.dtype.name for s in shards}))
    where = f"{source.kind} {spec.source!r}" + (f" ({skipped} other file(s) skipped)" if skipped else "")
    description = (f"token shards from {where}: {len(shards)} shard(s) ({dtypes}), {n_total:,} tokens "
                   f"({tokenizer.name}, vocab {tokenizer.vocab_size:,}); {split_text}")
    _check_min_tokens(train, min_tokens, f"corpus {spec.source!r}")
    return TokenCorpus(train, val, tokenizer, description)


# ----------------------------------------------------------------------------- built-in
def _load_builtin(spec: CorpusSpec, tokenizer: Tokenizer, min_tokens: int) -> TokenCorpus:
    if spec.format not in ("auto", "text"):
        raise UserInputError("corpus.format", f"the built-in corpus is text, not {spec.format!r}",
                             "leave corpus.format at auto (or text) for source: builtin")
    material = {"v": 1, "builtin": builtin_corpus.identity(), "val_fraction": float(spec.val_fraction),
                "max_bytes": spec.max_bytes, "tokenizer": getattr(tokenizer, "fingerprint", tokenizer.name)}

    def build() -> tuple[dict[str, np.ndarray], dict]:
        docs = builtin_corpus.builtin_documents(spec.val_fraction, spec.max_bytes)
        arrays = {"train": encode_documents(docs.train, tokenizer), "val": encode_documents(docs.val, tokenizer)}
        meta = {"train_files": len(docs.train_files), "val_files": len(docs.val_files),
                "bytes": sum(map(len, docs.train)) + sum(map(len, docs.val)), "cut": docs.truncated}
        return arrays, meta

    arrays, meta, _ = cached_arrays("builtin", material, ("train", "val"), build)
    train, val = arrays["train"], arrays["val"]
    if len(train) + len(val) == 0:
        raise UserInputError("corpus.source", "the built-in corpus came out empty (no standard-library sources found)",
                             "give a corpus source (a text file, folder, glob or s3:// URI)")
    cap = f", cut at max_bytes={spec.max_bytes:,}" if meta["cut"] else ""
    description = (f"built-in corpus: Python {platform.python_version()} standard-library sources, "
                   f"{meta['train_files'] + meta['val_files']} files, {meta['bytes']:,} bytes{cap} -> "
                   f"{len(train) + len(val):,} tokens ({tokenizer.name}); split by file (hash of the path): "
                   f"{meta['train_files']} train files / {len(train):,} tokens, {meta['val_files']} validation "
                   f"files / {len(val):,} tokens")
    _check_min_tokens(train, min_tokens, "the built-in corpus")
    return TokenCorpus(train, val, tokenizer, description)


# ----------------------------------------------------------------------------- entry point
def load_corpus(spec: CorpusSpec, min_tokens: int = 0) -> TokenCorpus:
    """Load, tokenize (or memory-map) and split a corpus. Bad input raises `UserInputError`."""
    if not isinstance(spec, CorpusSpec):
        raise TypeError(f"load_corpus takes a CorpusSpec, got {type(spec).__name__}")
    tokenizer = load_tokenizer(spec.tokenizer, field="corpus.tokenizer")
    if spec.source == "builtin":
        return _load_builtin(spec, tokenizer, min_tokens)
    source = resolve_source(spec.source, spec.s3_endpoint)
    classified, skipped = _classify(source, spec.format)
    if classified[0][1] == "tokens":
        return _load_tokens(spec, source, [f for f, _ in classified], skipped, tokenizer, min_tokens)
    return _load_text(spec, source, classified, skipped, tokenizer, min_tokens)


__all__ = ["CorpusSpec", "TokenCorpus", "load_corpus"]
