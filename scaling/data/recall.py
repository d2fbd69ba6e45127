"""Recall tasks, deterministic from a seed: multi-query associative recall and needle-in-a-haystack.

MQAR (Zoology / Based, Arora et al. 2023-24) measures exactly what Memory Caching claims to
improve: how many key-value bindings a fixed-size recurrent memory can hold and retrieve. A
sequence writes `n_pairs` bindings and then queries `n_queries` of the keys:

    k1 v1 k2 v2 ... kn vn  . . kq vq . . . kr vr . .        (. = filler token 0)

At a query key's position the model must output that key's value (the target there; -100
everywhere else), and the value also follows as the next input, as in language modelling, so
one forward pass scores every query. Token ids: 0 is the filler, keys are 1..key_vocab,
values key_vocab+1..key_vocab+value_vocab (disjoint ranges, so the model needs
1 + key_vocab + value_vocab <= vocab_size). Within a sequence keys are distinct and values are
distinct (drawn without replacement, as in Zoology), queried keys are distinct, and the
queries sit at uniformly random even offsets after the bindings (Zoology draws the gaps from a
power law; uniform gaps make long- and short-range queries equally likely).

Needle-in-a-haystack (passkey retrieval, Mohtashami & Jaggi 2023; RULER's single needles):
a sentence holding a random secret (a 5-digit passkey, a 7-digit "magic number" or a UUID-like
hex string) is hidden at relative depth d of real corpus text (the validation split), followed
by a question and the answer, in exactly `length` tokens:

    [haystack: round(d * H) tokens] [needle] [rest of haystack] [question] [answer]

where H = length - |needle| - |question| - |answer| tokens of haystack (depth is relative to
the haystack, as in the usual NIAH plots). The haystack is a contiguous window of the
validation tokens at a seeded random offset, cut at token level. Scoring is teacher-forced
exact match: an example is correct when the argmax at every answer position equals the answer
token, which is the same as greedy decoding producing the whole answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from scaling.data.tokenizers import Tokenizer
from scaling.errors import UserInputError

IGNORE_INDEX = -100
FILLER = 0
NEEDLE_KINDS = ("passkey", "number", "uuid")


def _rng(*values: int) -> np.random.Generator:
    return np.random.default_rng([int(v) % (1 << 64) for v in values])


def _positive_int(value: object, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserInputError(field, f"must be a positive integer, got {value!r}", "give a whole number >= 1")


# ----------------------------------------------------------------------------- MQAR
@dataclass(frozen=True)
class MQARSpec:
    n_pairs: int = 8  # key-value pairs written before the queries
    n_queries: int = 8  # queries after the pairs (<= n_pairs, each queries a distinct key)
    key_vocab: int = 64  # keys are ids 1..key_vocab
    value_vocab: int = 64  # values are ids key_vocab+1..key_vocab+value_vocab
    seq_len: int = 64  # total length: pairs, then queries, padded with filler (id 0)

    def __post_init__(self) -> None:
        for name in ("n_pairs", "n_queries", "key_vocab", "value_vocab", "seq_len"):
            _positive_int(getattr(self, name), f"mqar.{name}")
        if self.n_queries > self.n_pairs:
            raise UserInputError("mqar.n_queries", f"{self.n_queries} queries but only {self.n_pairs} pairs: "
                                 "each query asks for a distinct key", f"use n_queries <= {self.n_pairs}")
        if self.n_pairs > self.key_vocab:
            raise UserInputError("mqar.key_vocab", f"{self.n_pairs} distinct keys cannot be drawn from a key "
                                 f"vocabulary of {self.key_vocab}", f"use key_vocab >= {self.n_pairs}")
        if self.n_pairs > self.value_vocab:
            raise UserInputError("mqar.value_vocab", f"{self.n_pairs} distinct values cannot be drawn from a value "
                                 f"vocabulary of {self.value_vocab}", f"use value_vocab >= {self.n_pairs}")
        need = 2 * self.n_pairs + 2 * self.n_queries
        if need > self.seq_len:
            raise UserInputError("mqar.seq_len", f"{self.n_pairs} pairs and {self.n_queries} queries take "
                                 f"{need} tokens (2 each), more than seq_len {self.seq_len}",
                                 f"use seq_len >= {need} or fewer pairs/queries")

    @property
    def vocab_needed(self) -> int:
        """Smallest model vocabulary that holds the filler, the keys and the values."""
        return 1 + self.key_vocab + self.value_vocab


def mqar_batch(spec: MQARSpec, batch_size: int, seed: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, L) int64, targets (B, L) int64): targets are -100 except at query-key positions,
    where they hold the queried key's value. A pure function of its arguments."""
    _positive_int(batch_size, "batch_size")
    if spec.vocab_needed > vocab_size:
        raise UserInputError("mqar.key_vocab", f"MQAR needs {spec.vocab_needed} token ids (filler + {spec.key_vocab} "
                             f"keys + {spec.value_vocab} values) but the model has vocab_size {vocab_size}",
                             f"use key_vocab + value_vocab <= {vocab_size - 1} or a larger model.vocab_size")
    rng = _rng(seed, 0x4D514152)  # "MQAR": a stream of its own for a seed shared with other samplers
    B, n, q, L = batch_size, spec.n_pairs, spec.n_queries, spec.seq_len
    keys = np.argsort(rng.random((B, spec.key_vocab)), axis=1)[:, :n] + 1
    values = np.argsort(rng.random((B, spec.value_vocab)), axis=1)[:, :n] + 1 + spec.key_vocab
    queried = np.argsort(rng.random((B, n)), axis=1)[:, :q]  # which pairs are asked, in asking order
    n_slots = (L - 2 * n) // 2
    slots = np.sort(np.argsort(rng.random((B, n_slots)), axis=1)[:, :q], axis=1)
    positions = 2 * n + 2 * slots  # (B, q) query-key positions

    inputs = np.full((B, L), FILLER, dtype=np.int64)
    targets = np.full((B, L), IGNORE_INDEX, dtype=np.int64)
    inputs[:, 0:2 * n:2] = keys
    inputs[:, 1:2 * n:2] = values
    rows = np.arange(B)[:, None]
    q_keys = np.take_along_axis(keys, queried, axis=1)
    q_values = np.take_along_axis(values, queried, axis=1)
    inputs[rows, positions] = q_keys
    inputs[rows, positions + 1] = q_values
    targets[rows, positions] = q_values
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def mqar_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of the target positions (targets != -100) whose argmax equals the target."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)} (+ vocab)")
    mask = targets != IGNORE_INDEX
    n = int(mask.sum())
    if n == 0:
        raise ValueError("no target positions (every target is -100)")
    predicted = logits.argmax(dim=-1)
    return float((predicted[mask] == targets[mask]).sum()) / n


# ----------------------------------------------------------------------------- needle in a haystack
@dataclass(frozen=True)
class NeedleExample:
    tokens: torch.Tensor  # (length,) int64: haystack with the needle, question, answer
    answer_start: int  # index of the first answer token
    length: int
    depth: float  # requested relative depth of the needle in the haystack
    kind: str
    secret: str = ""  # the hidden value (the answer tokens decode to " " + secret)
    needle_start: int = 0  # index of the needle's first token
    needle_tokens: int = 0  # how many tokens the needle sentence takes
    haystack_tokens: int = 0  # H: corpus tokens around the needle (needle_start = round(depth * H))


_TEMPLATES = {
    "passkey": ("\nThe pass key is {s}. Remember it. {s} is the pass key.\n",
                "\nWhat is the pass key? The pass key is"),
    "number": ("\nOne of the special magic numbers is {s}. Remember it.\n",
               "\nWhat is the special magic number? The special magic number is"),
    "uuid": ("\nThe special magic uuid is {s}. Remember it.\n",
             "\nWhat is the special magic uuid? The special magic uuid is"),
}


def _secret(kind: str, rng: np.random.Generator) -> str:
    if kind == "passkey":
        return str(int(rng.integers(10_000, 100_000)))
    if kind == "number":
        return str(int(rng.integers(1_000_000, 10_000_000)))
    h = "".join("0123456789abcdef"[i] for i in rng.integers(0, 16, size=32))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _answer_ids(tokenizer: Tokenizer, question: str, answer: str) -> tuple[np.ndarray, np.ndarray]:
    """Question and answer ids; the answer as tokenized in context when that splits cleanly."""
    q_ids = np.asarray(tokenizer.encode(question), dtype=np.int64)
    joint = np.asarray(tokenizer.encode(question + answer), dtype=np.int64)
    k = len(q_ids)
    if len(joint) > k and np.array_equal(joint[:k], q_ids) and tokenizer.decode(joint[k:]) == answer:
        return q_ids, joint[k:]
    return q_ids, np.asarray(tokenizer.encode(answer), dtype=np.int64)


def _cost(tokenizer: Tokenizer, kind: str, secret: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    needle, question = _TEMPLATES[kind]
    needle_ids = np.asarray(tokenizer.encode(needle.format(s=secret)), dtype=np.int64)
    q_ids, a_ids = _answer_ids(tokenizer, question, " " + secret)
    return needle_ids, q_ids, a_ids


def needle_examples(haystack: np.ndarray, tokenizer: Tokenizer, lengths: Sequence[int], depths: Sequence[float],
                    seed: int, kind: str = "passkey", seq_len: int | None = None,
                    samples_per_depth: int = 1) -> list[NeedleExample]:
    """One example per (length, depth, sample), in that order; each a pure function of
    (seed, length, depth, sample index, kind) and the haystack."""
    if kind not in NEEDLE_KINDS:
        raise UserInputError("needle_kind", f"unknown needle kind {kind!r}", f"use one of {', '.join(NEEDLE_KINDS)}")
    _positive_int(samples_per_depth, "needle_samples")
    depths = [float(d) for d in depths]
    if not depths and lengths:
        raise UserInputError("needle_depths", "no depths given", "give relative depths such as [0.1, 0.5, 0.9]")
    for d in depths:
        if not 0.0 <= d <= 1.0:
            raise UserInputError("needle_depths", f"depth {d} is outside [0, 1]",
                                 "give relative depths between 0 (start) and 1 (end of the haystack)")
    haystack = np.asarray(haystack).reshape(-1)
    for length in lengths:
        _positive_int(length, "needle_lengths")
        if seq_len is not None and length > seq_len:
            raise UserInputError("needle_lengths", f"needle length {length} exceeds seq_len {seq_len}: "
                                 "the needle task cannot fit", f"use lengths <= {seq_len}")
    if lengths and len(haystack) < max(lengths):
        raise UserInputError("needle_lengths", f"the haystack (validation split: {len(haystack):,} tokens) is shorter "
                             f"than the longest needle length {max(lengths)}",
                             "use shorter needle lengths, a larger corpus or a larger corpus.val_fraction")
    kind_code = NEEDLE_KINDS.index(kind)
    examples = []
    for length in lengths:
        for depth in depths:
            for sample in range(samples_per_depth):
                rng = _rng(seed, length, round(depth * 1_000_000), sample, kind_code, 0x4E45)
                secret = _secret(kind, rng)
                needle_ids, q_ids, a_ids = _cost(tokenizer, kind, secret)
                overhead = len(needle_ids) + len(q_ids) + len(a_ids)
                hay_len = length - overhead
                if hay_len < 1:
                    raise UserInputError("needle_lengths", f"needle length {length} is too short to hold the "
                                         f"needle, question and answer ({overhead} tokens with the "
                                         f"{tokenizer.name} tokenizer) plus any haystack",
                                         f"use lengths of at least {overhead + 1} (a few times that for a real "
                                         "haystack)")
                offset = int(rng.integers(0, len(haystack) - hay_len + 1))
                hay = np.asarray(haystack[offset: offset + hay_len], dtype=np.int64)
                cut = int(round(depth * hay_len))
                tokens = np.concatenate([hay[:cut], needle_ids, hay[cut:], q_ids, a_ids])
                assert len(tokens) == length
                examples.append(NeedleExample(
                    tokens=torch.from_numpy(tokens), answer_start=length - len(a_ids), length=length, depth=depth,
                    kind=kind, secret=secret, needle_start=cut, needle_tokens=len(needle_ids),
                    haystack_tokens=hay_len))
    return examples


@torch.no_grad()
def needle_hits(model_logits_fn: Callable[[torch.Tensor], torch.Tensor],
                examples: Sequence[NeedleExample]) -> list[bool]:
    """Teacher-forced exact match per example. `model_logits_fn` maps (B, T) int64 inputs to
    (B, T, vocab) logits; examples of one length run as one batch of whole examples - the
    validated needle length, not length - 1 (which no segment or chunk length divides, and
    which would give log-segmented models another partition than the one trained at that
    length). The last position's logits are not read; a causal model's earlier logits do not
    depend on the last token."""
    hits = [False] * len(examples)
    by_length: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        by_length.setdefault(ex.length, []).append(i)
    for length, idx in by_length.items():
        inputs = torch.stack([examples[i].tokens for i in idx])
        logits = model_logits_fn(inputs)
        for row, i in enumerate(idx):
            ex = examples[i]
            answer = ex.tokens[ex.answer_start:]
            predicted = logits[row, ex.answer_start - 1: length - 1].argmax(-1)
            hits[i] = bool(torch.equal(predicted.to(answer.dtype), answer))
    return hits


def needle_accuracy(model_logits_fn: Callable[[torch.Tensor], torch.Tensor],
                    examples: Sequence[NeedleExample]) -> dict[int, float]:
    """Exact-match accuracy per needle length (over depths and samples)."""
    per_length: dict[int, list[bool]] = {}
    for ex, hit in zip(examples, needle_hits(model_logits_fn, examples)):
        per_length.setdefault(ex.length, []).append(hit)
    return {length: float(np.mean(h)) for length, h in sorted(per_length.items())}
