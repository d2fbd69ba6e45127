"""On-disk cache for tokenized corpora: `$MCSCALE_CACHE`, else `$XDG_CACHE_HOME/mcscale`, else
`~/.cache/mcscale`. `MCSCALE_CACHE=off` disables it.

An entry is a folder named by a hash of everything that determines its content (source files
with sizes and modification times, tokenizer fingerprint, split, caps). It is built in a
temporary sibling folder and renamed into place, so concurrent trials (Ray runs many on one
node) never see half an entry; if two build the same entry at once, the second rename loses and
its copy is discarded. Any failure to write (read-only home, full disk) only costs speed: the
caller falls back to building in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)
CACHE_ENV = "MCSCALE_CACHE"
_OFF = {"off", "none", "0", "false", "no", ""}


def cache_root() -> Path | None:
    """The cache folder, or None when caching is disabled."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mcscale"


def entry_key(material: dict[str, Any]) -> str:
    blob = json.dumps(material, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def entry_dir(kind: str, material: dict[str, Any]) -> Path | None:
    root = cache_root()
    return None if root is None else root / kind / entry_key(material)


def load_arrays(path: Path, names: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """Memory-map `<name>.npy` for each name plus `meta.json`, or None if the entry is absent/damaged."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r") for n in names}
    except (OSError, ValueError):
        return None
    return arrays, meta


def store_entry(path: Path, write: Callable[[Path], None]) -> bool:
    """Build an entry with `write(tmp_folder)` and move it to `path` atomically. True when it is in place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        log.info("mcscale cache not writable (%s); continuing without it", exc)
        return False
    try:
        write(tmp)
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished the same entry first
            if not (path / "meta.json").exists():
                raise
        return True
    except OSError as exc:
        log.info("could not write mcscale cache entry %s (%s); continuing without it", path, exc)
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_arrays(folder: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr, allow_pickle=False)
    (folder / "meta.json").write_text(json.dumps(meta, sort_keys=True, default=str))


def cached_arrays(kind: str, material: dict[str, Any], names: tuple[str, ...],
                  build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]]
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """Arrays for `material`: memory-mapped from the cache when present, else built (and cached if possible).

    Returns (arrays, meta, from_cache).
    """
    path = entry_dir(kind, material)
    if path is not None:
        hit = load_arrays(path, names)
        if hit is not None:
            return hit[0], hit[1], True
    arrays, meta = build()
    if path is not None and store_entry(path, lambda tmp: save_arrays(tmp, arrays, meta)):
        hit = load_arrays(path, names)
        if hit is not None:
            return hit[0], hit[1], False
    return arrays, meta, False
