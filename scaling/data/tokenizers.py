"""Tokenizers: raw UTF-8 bytes (the default) or a Hugging Face `tokenizers` JSON file.

Every tokenizer carries `token_bytes`, the UTF-8 byte length of each token id, so validation
loss converts to bits per byte whatever the tokenizer (bits-per-byte is comparable across
vocabularies; loss per token is not):

    bpb = sum(nats) / ln 2 / sum(token_bytes[targets])

How `token_bytes` is computed:

- `bytes`: every id is one byte.
- byte-level BPE (a `ByteLevel` decoder, as in GPT-2 / Llama-3 / most modern BPEs): exact. The
  token's string in the vocabulary is mapped back through GPT-2's byte-to-unicode table, so a
  token holding half of a multi-byte character counts its true byte count (decoding it alone
  would give U+FFFD, three bytes).
- SentencePiece-style (`Metaspace` / `ByteFallback` decoders): from the vocabulary string with
  "▁" counted as a space and `<0xNN>` byte tokens as one byte. Exact except that the space a
  Metaspace decoder strips at the very start of a text is counted (one byte per document).
- anything else (WordPiece, ...): `len(decode([id]).encode())`, an approximation (e.g. WordPiece
  inserts spaces between words that no single-token decode shows).
- special tokens (added tokens marked special: `<|endoftext|>`, `</s>`, ...) count 0 bytes:
  they are not text.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from scaling.errors import UserInputError

BYTES_NAME = "bytes"


@runtime_checkable
class Tokenizer(Protocol):
    name: str
    vocab_size: int
    token_bytes: np.ndarray  # (vocab_size,) int64: UTF-8 byte length of each token id

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...


class ByteTokenizer:
    """Raw UTF-8 bytes: vocab 256, no training, no file, nothing unknown."""

    name = BYTES_NAME
    vocab_size = 256
    fingerprint = "bytes-v1"

    def __init__(self) -> None:
        self.token_bytes = np.ones(256, dtype=np.int64)

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def encode_bytes(self, data: bytes) -> np.ndarray:
        """Tokens of raw bytes without decoding them (the corpus path: identical to encode for UTF-8)."""
        return np.frombuffer(data, dtype=np.uint8)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"byte token ids must lie in [0, 255], got range [{arr.min()}, {arr.max()}]")
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table (used by ByteLevel BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}
_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def _component_types(node: object) -> set[str]:
    """All `type` names in a (possibly nested Sequence) decoder / pre-tokenizer JSON node."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            found.add(node["type"])
        for value in node.values():
            found |= _component_types(value)
    elif isinstance(node, list):
        for value in node:
            found |= _component_types(value)
    return found


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer loaded from its JSON file."""

    def __init__(self, path: Path, field: str = "tokenizer") -> None:
        import tokenizers  # the Hugging Face library (absolute import: not this module)

        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UserInputError(field, f"cannot read tokenizer file {str(path)!r} ({exc.strerror or exc})",
                                 "point it at a readable tokenizer.json, or use 'bytes'") from None
        try:
            self._tok = tokenizers.Tokenizer.from_str(raw.decode("utf-8"))
            spec = json.loads(raw)
        except Exception as exc:  # tokenizers raises a bare Exception on invalid JSON / schema
            raise UserInputError(field, f"{str(path)!r} is not a valid Hugging Face tokenizers JSON file ({exc})",
                                 "give the tokenizer.json written by tokenizers' Tokenizer.save(), "
                                 "or use 'bytes'") from None
        self.path = path
        self.name = f"hf:{path.name}" if path.name != "tokenizer.json" else f"hf:{path.parent.name}/{path.name}"
        self.fingerprint = "hf-" + hashlib.sha256(raw).hexdigest()[:24]
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        if self.vocab_size <= 0:
            raise UserInputError(field, f"tokenizer {str(path)!r} has an empty vocabulary",
                                 "give a trained tokenizer, or use 'bytes'")
        self.decoder_types = _component_types(spec.get("decoder"))
        self.token_bytes = self._compute_token_bytes(spec)

    def _compute_token_bytes(self, spec: dict) -> np.ndarray:
        special = {t["id"] for t in spec.get("added_tokens") or [] if t.get("special")}
        out = np.zeros(self.vocab_size, dtype=np.int64)
        byte_level = "ByteLevel" in self.decoder_types
        metaspace = bool({"Metaspace", "ByteFallback"} & self.decoder_types)
        added = {t["id"] for t in spec.get("added_tokens") or []}
        fallback_ids = [i for i in range(self.vocab_size) if i not in special]
        if not byte_level and not metaspace:
            decoded = self._tok.decode_batch([[i] for i in fallback_ids], skip_special_tokens=False)
            for i, text in zip(fallback_ids, decoded):
                out[i] = len(text.encode("utf-8"))
            return out
        for i in fallback_ids:
            piece = self._tok.id_to_token(i)
            if piece is None:
                continue
            if i in added:  # added non-special tokens are stored as plain text
                out[i] = len(piece.encode("utf-8"))
            elif byte_level and all(c in _UNICODE_TO_BYTE for c in piece):
                out[i] = len(piece)  # one character per byte
            elif metaspace and _BYTE_FALLBACK.match(piece):
                out[i] = 1
            else:
                out[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
        return out

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"HFTokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


def load_tokenizer(name_or_path: str = BYTES_NAME, field: str = "tokenizer") -> Tokenizer:
    """`"bytes"` (default) or the path of a Hugging Face `tokenizers` JSON file (or a folder holding
    `tokenizer.json`). A missing, unreadable or invalid file raises `UserInputError(field, ...)`."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise UserInputError(field, f"expected a tokenizer name or path, got {name_or_path!r}",
                             "use 'bytes' or the path of a tokenizer.json file")
    if name_or_path == BYTES_NAME:
        return ByteTokenizer()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        candidate = path / "tokenizer.json"
        if not candidate.is_file():
            raise UserInputError(field, f"folder {name_or_path!r} holds no tokenizer.json",
                                 "point it at the tokenizer.json file itself, or use 'bytes'")
        path = candidate
    if not path.exists():
        raise UserInputError(field, f"no tokenizer named {name_or_path!r} and no such file",
                             "use 'bytes' (raw UTF-8 bytes) or the path of a Hugging Face tokenizer.json file")
    return HFTokenizer(path, field=field)


DOC_SEPARATOR = b"\n\n"  # written between documents when a corpus is concatenated into one stream
_ENCODE_CHUNK = 1 << 20  # split long documents at a newline near every MiB before BPE encoding


def storage_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type holding every id of a vocabulary."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def _pieces(doc: bytes) -> list[bytes]:
    if len(doc) <= _ENCODE_CHUNK:
        return [doc]
    out, start = [], 0
    while start < len(doc):
        end = min(start + _ENCODE_CHUNK, len(doc))
        if end < len(doc):
            cut = doc.rfind(b"\n", start, end)
            end = cut + 1 if cut > start else end
        out.append(doc[start:end])
        start = end
    return out


def encode_documents(docs: Sequence[bytes], tokenizer: Tokenizer) -> np.ndarray:
    """One token stream: the documents in order, `DOC_SEPARATOR` between them, in `storage_dtype`.

    The byte tokenizer takes the raw bytes as they are. Other tokenizers decode each document as
    UTF-8 (invalid bytes become U+FFFD) and encode it; documents over a MiB are encoded in pieces
    cut after a newline, which changes nothing for tokenizers whose pre-tokenizer splits there.
    """
    dtype = storage_dtype(tokenizer.vocab_size)
    if isinstance(tokenizer, ByteTokenizer):
        return np.frombuffer(DOC_SEPARATOR.join(docs), dtype=np.uint8).copy()
    sep = np.asarray(tokenizer.encode(DOC_SEPARATOR.decode()), dtype=dtype)
    encode_batch = getattr(tokenizer, "encode_batch", None)
    texts: list[str] = []
    owner: list[int] = []  # document index of each piece
    for i, doc in enumerate(docs):
        for piece in _pieces(doc):
            texts.append(piece.decode("utf-8", errors="replace"))
            owner.append(i)
    encoded: list[np.ndarray] = []
    start = 0
    while start < len(texts):  # batches of about 8 MiB: parallel in the Rust encoder, bounded memory
        end, size = start, 0
        while end < len(texts) and (end == start or size < 8 * _ENCODE_CHUNK):
            size += len(texts[end])
            end += 1
        chunk = texts[start:end]
        out = encode_batch(chunk) if encode_batch else [tokenizer.encode(t) for t in chunk]
        encoded.extend(np.asarray(e, dtype=dtype) for e in out)
        start = end
    parts: list[np.ndarray] = []
    for k, (ids, doc) in enumerate(zip(encoded, owner)):
        if k and doc != owner[k - 1]:
            parts.append(sep)
        parts.append(ids)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
