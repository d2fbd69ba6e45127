"""The built-in default corpus: the running Python's own standard-library sources.

Real text (code, comments and docstrings written by people) that is on every machine with
Python and needs no download, so `mcscale run studies/quickstart.yaml` trains on something real
out of the box.

What it is
    Every `.py` file under `sysconfig.get_paths()["stdlib"]`, except test suites and generated or
    bundled material: folders named `test`, `tests`, `idle_test` or `__pycache__` anywhere,
    `site-packages` / `dist-packages` (installed packages, which differ between machines),
    `idlelib`, `turtledemo`, `pydoc_data` (a generated 0.7 MB dictionary of help text),
    `encodings` (mostly generated codec tables), `config-*` build folders, and files named
    `test_*.py`. Files are read as bytes in sorted order of their relative POSIX paths and
    joined with a blank line (b"\\n\\n"); the result is deterministic for a given Python
    installation. All of it is UTF-8 (PEP 3120), so any tokenizer can read it.

Split
    By file, fixed: a file is validation when the first 8 bytes of SHA-256 of its relative path,
    read as a fraction of 2**64, fall below `val_fraction` (5% by default). Hashing the path (not
    the file's position) keeps a file on the same side when other files come or go between Python
    versions. With `max_bytes`, the training files are read in order until
    `max_bytes * (1 - val_fraction)` bytes and the validation files until the rest (the last file
    read is cut), so a small cap still has both sides.

Size (measured on CPython 3.11.7, Linux x86-64, val_fraction 0.05)
    528 files, 9,117,486 bytes -> 9,118,538 tokens with the byte tokenizer (the extra 1,052 are
    the b"\\n\\n" separators): 500 files / 8,814,471 tokens train, 28 files / 304,067 tokens
    validation. (A 4,096-token byte-level BPE turns it into about 2.6M tokens.) Reading the files
    takes about half a second; tokenizing with a BPE takes longer (~17 s for the whole corpus on
    2 cores), so the result is cached under the mcscale cache folder (see `scaling.data.cache`),
    keyed by the Python version and build, the stdlib path, the tokenizer, `val_fraction` and
    `max_bytes`; later loads memory-map it in milliseconds. Without a usable cache it is simply
    built in memory.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from scaling.errors import UserInputError

# Bump when the file selection or the joining changes, so stale cache entries are not reused.
SELECTION_VERSION = 1
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages",
                           "idlelib", "turtledemo", "pydoc_data", "encodings"})


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _included(rel: Path) -> bool:
    parts = rel.parts
    if any(p in EXCLUDED_DIRS or p.startswith("config-") for p in parts[:-1]):
        return False
    return not rel.name.startswith("test_")


def builtin_files(root: Path | None = None) -> list[str]:
    """Relative POSIX paths of the corpus files, sorted."""
    root = stdlib_root() if root is None else root
    if not root.is_dir():
        raise UserInputError("corpus.source", f"the Python standard library folder {str(root)!r} is missing, "
                             "so the built-in corpus cannot be built",
                             "give a corpus source (a text file, folder, glob or s3:// URI)")
    rels = []
    for folder, dirs, names in os.walk(root):
        # prune excluded folders instead of walking site-packages' thousands of files
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith("config-")]
        for name in names:
            if name.endswith(".py"):
                rel = Path(folder, name).relative_to(root)
                if _included(rel) and (root / rel).is_file():
                    rels.append(rel.as_posix())
    return sorted(rels)


def is_validation(rel: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big")
    return h / 2**64 < val_fraction


def identity() -> dict[str, str | int]:
    """What the built-in corpus's content depends on (the cache key)."""
    return {"python": sys.version, "implementation": platform.python_implementation(),
            "stdlib": str(stdlib_root()), "selection": SELECTION_VERSION}


@dataclass
class BuiltinDocuments:
    train: list[bytes]
    val: list[bytes]
    train_files: list[str]
    val_files: list[str]
    truncated: bool  # max_bytes cut the reading short


def _read(root: Path, rels: list[str], cap: int | None) -> tuple[list[bytes], list[str], bool]:
    """Read files in order until `cap` bytes; returns (documents, names, whether the cap cut anything)."""
    docs, names, total = [], [], 0
    for rel in rels:
        if cap is not None and total >= cap:
            return docs, names, True
        data = (root / rel).read_bytes()
        cut = cap is not None and total + len(data) > cap
        if cut:
            data = data[: cap - total]
        docs.append(data)
        names.append(rel)
        total += len(data)
        if cut:
            return docs, names, True
    return docs, names, False


def builtin_documents(val_fraction: float = 0.05, max_bytes: int | None = None) -> BuiltinDocuments:
    """The corpus files' bytes, split into training and validation documents."""
    root = stdlib_root()
    rels = builtin_files(root)
    val_rels = [r for r in rels if is_validation(r, val_fraction)]
    train_rels = [r for r in rels if not is_validation(r, val_fraction)]
    if val_fraction > 0 and not val_rels:  # only possible with a tiny val_fraction: keep the split non-empty
        val_rels, train_rels = train_rels[-1:], train_rels[:-1]
    train_cap = val_cap = None
    if max_bytes is not None:
        val_cap = int(round(max_bytes * val_fraction)) if val_rels else 0
        if val_fraction > 0:
            val_cap = max(1, val_cap)
        train_cap = max(1, max_bytes - val_cap)
    train, train_names, cut_train = _read(root, train_rels, train_cap)
    val, val_names, cut_val = _read(root, val_rels, val_cap)
    return BuiltinDocuments(train, val, train_names, val_names, cut_train or cut_val)
