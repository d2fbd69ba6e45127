"""Data layer of a trial: corpora, tokenizers, batches and recall tasks.

- `corpus`: `CorpusSpec` -> `load_corpus` -> `TokenCorpus` (built-in default, local or S3 text,
  JSONL, Parquet, memory-mapped token shards), with a fixed train/validation split;
- `tokenizers`: raw bytes (default) or a Hugging Face tokenizer.json, each with per-token byte
  lengths for bits per byte;
- `batches`: training windows as a pure function of (seed, step), fixed evaluation windows;
- `recall`: MQAR and needle-in-a-haystack, deterministic from a seed.
"""

from scaling.data.batches import eval_windows, sample_batch
from scaling.data.corpus import CorpusSpec, TokenCorpus, load_corpus
from scaling.data.recall import (MQARSpec, NeedleExample, mqar_accuracy, mqar_batch, needle_accuracy,
                                 needle_examples)
from scaling.data.tokenizers import Tokenizer, load_tokenizer

__all__ = ["CorpusSpec", "TokenCorpus", "load_corpus", "Tokenizer", "load_tokenizer", "sample_batch",
           "eval_windows", "MQARSpec", "mqar_batch", "mqar_accuracy", "NeedleExample", "needle_examples",
           "needle_accuracy"]
