"""A broad battery of bad input across every command and spec field: each must end with exit code 2,
a message naming the field, and no traceback.

Every case runs the real `mcscale` app in-process (typer's CliRunner), so the battery costs one
import of the package, not one interpreter per case. Nothing trains, starts Ray or serves: the
entry points past validation (`run_trial`, `run_study`, the MLflow UI child) are replaced by a
guard that fails the case, so a case that slipped through validation shows up as a failure here
rather than as a training run.

The operator of issue 12 tried 136 kinds of bad input; this module tries more (see `CASES`), each
a distinct kind: wrong types, negative/zero/huge/non-finite numbers, unknown and misspelt fields,
missing files, folders for files, binary files, unknown architectures, bad URIs, unreachable
sizes, empty strings, busy and out-of-range ports.
"""

from __future__ import annotations

import copy
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from typer.testing import CliRunner

from scaling.cli.app import app

BASE_SPEC: dict[str, Any] = {
    "name": "bad-input",
    "data": {"seq_len": 64, "evals": {"every_steps": 10, "val_windows": 2}},
    "architectures": [{"name": "transformer"}, {"name": "swla+grm", "segment_lens": [32]}],
    "ladder": {"sizes": ["8K", "16K", "32K"], "head_dim": 8, "aspect": 16, "aspect_weight": 0.2},
    "budget": {"tokens_per_param": 3},
    "optimizer": {"batch_tokens": 256},
}
DELETE = object()


class Sandbox:
    """Files a case needs, under one temporary folder."""

    def __init__(self, root: Path, busy_port: int):
        self.root = root
        self.busy_port = busy_port

    def write(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return str(path)

    def folder(self, name: str = "a-folder") -> str:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def spec(self, changes: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> str:
        """The base spec with `changes` ({"ladder.sizes[0]": value, "budget": DELETE, ...}) applied."""
        data = copy.deepcopy(base or BASE_SPEC)
        for dotted, value in (changes or {}).items():
            _set(data, dotted, value)
        return self.write("spec.yaml", yaml.safe_dump(data, sort_keys=False))

    def study(self, name: str = "stored", spec_text: str | bytes | None = None, mlflow_db: bool = True) -> str:
        """A storage folder holding study `name` (its spec.yaml and an MLflow store file); returns the storage."""
        storage = self.folder("storage")
        self.write(f"storage/{name}/study.json", "{}")
        if spec_text is not None:
            self.write(f"storage/{name}/spec.yaml", spec_text)
        else:
            self.folder(f"storage/{name}")
        if mlflow_db:
            self.write(f"storage/{name}/mlflow.db", b"")
        return storage

    def table(self, text: str) -> str:
        return self.write("table.csv", text)


def _set(data: Any, dotted: str, value: Any) -> None:
    parts: list[str | int] = []
    for piece in dotted.split("."):
        name, *indices = piece.replace("]", "").split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indices)
    target = data
    for part in parts[:-1]:
        if isinstance(part, str) and part not in target:
            target[part] = {}
        target = target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value


@dataclass(frozen=True)
class Case:
    kind: str  # the kind of bad input, unique
    argv: Callable[[Sandbox], list[str]]
    field: str  # what the message must name


def spec_case(kind: str, changes: dict[str, Any], field: str, command: str = "plan") -> Case:
    """A spec with one field made bad, checked by `mcscale plan` (or `run`, which fails before Ray)."""
    extra = ["--no-memory"] if command == "plan" else []
    return Case(kind, lambda s: [command, s.spec(changes), *extra], field)


TUNE = {"proxy_size": "8K", "tokens": "10K"}
CSV = "params_nonembed,tokens,loss\n1e6,2e7,3.1\n2e6,4e7,2.9\n4e6,8e7,2.7\n8e6,1.6e8,2.6\n"
TRAIN = ["train", "--size", "16K", "--head-dim", "8", "--seq-len", "64", "--tokens", "4K", "--batch-tokens", "256"]
MODELS = ["models", "--sizes", "1M"]

CASES: list[Case] = [
    # ---------------------------------------------------------------- spec files (plan, run, submit)
    Case("spec file missing", lambda s: ["plan", str(s.root / "nope.yaml")], "SPEC"),
    Case("spec path is a folder", lambda s: ["plan", s.folder()], "SPEC"),
    Case("spec file binary", lambda s: ["plan", s.write("bin.yaml", bytes(range(256)) * 4)], "SPEC"),
    Case("spec file latin-1 text", lambda s: ["plan", s.write("l1.yaml", "name: caf\xe9\n".encode("latin-1"))], "SPEC"),
    Case("spec file empty", lambda s: ["plan", s.write("empty.yaml", "")], "spec"),
    Case("spec YAML syntax error", lambda s: ["plan", s.write("bad.yaml", "name: [unclosed\n")], "SPEC"),
    Case("spec YAML tab indentation", lambda s: ["plan", s.write("tab.yaml", "name: x\nladder:\n\tsizes: [1M]\n")],
         "SPEC"),
    Case("spec top level is a list", lambda s: ["plan", s.write("list.yaml", "- name: x\n")], "spec"),
    Case("spec top level is a scalar", lambda s: ["plan", s.write("scalar.yaml", "42\n")], "spec"),
    Case("spec duplicate key", lambda s: ["plan", s.write("dup.yaml", Path(s.spec()).read_text()
                                                         + "name: other\n")], "name"),
    Case("run: spec file missing", lambda s: ["run", str(s.root / "nope.yaml")], "SPEC"),
    Case("run: spec file binary", lambda s: ["run", s.write("bin.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")], "SPEC"),
    Case("run: spec path is a folder", lambda s: ["run", s.folder()], "SPEC"),
    spec_case("run: unknown field", {"ladders": {"sizes": [1]}}, "ladders", command="run"),
    Case("submit: spec file binary", lambda s: ["submit", s.write("bin.yaml", b"\xff\xfe\x00bad"), "--kuberay"],
         "SPEC"),
    Case("submit: option of the other route", lambda s: ["submit", s.spec(), "--kuberay", "--address", "x"],
         "--address"),
    # ---------------------------------------------------------------- spec: top level
    spec_case("unknown top-level field", {"ladders": {"sizes": ["1M"]}}, "ladders"),
    spec_case("misspelt nested key", {"budget": {"token_per_param": 3}}, "budget.token_per_param"),
    spec_case("missing name", {"name": DELETE}, "name"),
    spec_case("missing ladder", {"ladder": DELETE}, "ladder"),
    spec_case("missing budget", {"budget": DELETE}, "budget"),
    spec_case("missing architectures", {"architectures": DELETE}, "architectures"),
    spec_case("name with capitals and spaces", {"name": "My Study"}, "name"),
    spec_case("name empty", {"name": ""}, "name"),
    spec_case("name too long", {"name": "x" * 64}, "name"),
    spec_case("name a number", {"name": 123}, "name"),
    spec_case("name with a slash", {"name": "../escape"}, "name"),
    spec_case("description a list", {"description": ["a", "b"]}, "description"),
    spec_case("block null", {"ladder": None}, "ladder"),
    spec_case("block a string", {"data": "big"}, "data"),
    spec_case("concurrency zero", {"concurrency": 0}, "concurrency"),
    spec_case("concurrency a word", {"concurrency": "two"}, "concurrency"),
    spec_case("concurrency fractional", {"concurrency": 1.5}, "concurrency"),
    spec_case("storage empty", {"storage": ""}, "storage"),
    spec_case("storage unknown scheme", {"storage": "ftp://host/path"}, "storage"),
    spec_case("storage s3 without bucket", {"storage": "s3://"}, "storage"),
    spec_case("storage a number", {"storage": 5}, "storage"),
    spec_case("tracking_uri unknown scheme", {"tracking_uri": "mongodb://host/db"}, "tracking_uri"),
    spec_case("tracking_uri empty string", {"tracking_uri": " "}, "tracking_uri"),
    spec_case("s3_endpoint not a URL", {"s3_endpoint": "not a url"}, "s3_endpoint"),
    spec_case("s3_endpoint unknown scheme", {"s3_endpoint": "ftp://127.0.0.1:9000"}, "s3_endpoint"),
    # ---------------------------------------------------------------- spec: architectures
    spec_case("architectures empty", {"architectures": []}, "architectures"),
    spec_case("architectures a string", {"architectures": "transformer"}, "architectures"),
    spec_case("architecture entry a string", {"architectures": ["transformer"]}, "architectures[0]"),
    spec_case("architecture unknown", {"architectures[0].name": "mamba"}, "architectures[0].name"),
    spec_case("architecture name empty", {"architectures[0].name": ""}, "architectures[0].name"),
    spec_case("architecture strategy misspelt", {"architectures[1].name": "swla+grn"}, "architectures[1].name"),
    spec_case("architecture name a number", {"architectures[0].name": 7}, "architectures[0].name"),
    spec_case("architecture listed twice", {"architectures[1]": {"name": "transformer"}}, "architectures"),
    spec_case("architecture unknown key", {"architectures[0].segments": [32]}, "architectures[0].segments"),
    spec_case("segment_lens on a non-caching model", {"architectures[0].segment_lens": [32]},
              "architectures[0].segment_lens"),
    spec_case("segment_lens missing for caching", {"architectures[1].segment_lens": DELETE},
              "architectures[1].segment_lens"),
    spec_case("segment_len not dividing seq_len", {"architectures[1].segment_lens": [48]},
              "architectures[1].segment_lens[0]"),
    spec_case("segment_len zero", {"architectures[1].segment_lens": [0]}, "architectures[1].segment_lens[0]"),
    spec_case("segment_len negative", {"architectures[1].segment_lens": [-32]}, "architectures[1].segment_lens[0]"),
    spec_case("segment_len a word", {"architectures[1].segment_lens": ["long"]}, "architectures[1].segment_lens"),
    spec_case("segment_lens a number", {"architectures[1].segment_lens": 32}, "architectures[1].segment_lens"),
    spec_case("segment_lens repeat", {"architectures[1].segment_lens": [32, 32]}, "architectures[1].segment_lens"),
    spec_case("log_base above seq_len", {"architectures[1].segment_lens": ["log"], "architectures[1].log_base": 128},
              "architectures[1].log_base"),
    spec_case("log_base zero", {"architectures[1].log_base": 0}, "architectures[1].log_base"),
    spec_case("top_k zero", {"architectures[1].top_k": 0}, "architectures[1].top_k"),
    spec_case("segment_mode unknown", {"architectures[1].segment_mode": "parallel"}, "architectures[1].segment_mode"),
    spec_case("memory_expansion zero", {"architectures[1].memory_expansion": 0}, "architectures[1].memory_expansion"),
    spec_case("MLP memory segment not a chunk multiple",
              {"architectures[1]": {"name": "titans+grm", "segment_lens": [32]}}, "architectures[1].segment_lens[0]"),
    # ---------------------------------------------------------------- spec: ladder
    spec_case("ladder sizes empty", {"ladder.sizes": []}, "ladder.sizes"),
    spec_case("ladder sizes a string", {"ladder.sizes": "1M"}, "ladder.sizes"),
    spec_case("ladder size unreadable", {"ladder.sizes[0]": "1Q"}, "ladder.sizes"),
    spec_case("ladder size negative", {"ladder.sizes[0]": -1000}, "ladder.sizes"),
    spec_case("ladder size zero", {"ladder.sizes[0]": 0}, "ladder.sizes"),
    spec_case("ladder size a boolean", {"ladder.sizes[0]": True}, "ladder.sizes"),
    spec_case("ladder size null", {"ladder.sizes[0]": None}, "ladder.sizes"),
    spec_case("ladder size huge", {"ladder.sizes[2]": "1e30"}, "ladder.sizes[2]"),
    spec_case("ladder size infinite", {"ladder.sizes[2]": float("inf")}, "ladder.sizes"),
    spec_case("ladder size below the smallest model", {"ladder.head_dim": 64, "ladder.sizes": ["8K", "1M", "2M"]},
              "ladder.sizes[0]"),
    spec_case("ladder sizes repeat", {"ladder.sizes": ["8K", "8K", "16K"]}, "ladder.sizes"),
    spec_case("ladder sizes giving one shape", {"ladder.sizes": ["32K", "33K", "64K"]}, "ladder.sizes"),
    spec_case("head_dim zero", {"ladder.head_dim": 0}, "ladder.head_dim"),
    spec_case("head_dim a word", {"ladder.head_dim": "big"}, "ladder.head_dim"),
    spec_case("aspect negative", {"ladder.aspect": -16}, "ladder.aspect"),
    spec_case("aspect_weight negative", {"ladder.aspect_weight": -1}, "ladder.aspect_weight"),
    spec_case("shape size not in sizes", {"ladder.shapes": [{"size": "64K", "n_layers": 2, "d_model": 16}]},
              "ladder.shapes"),
    spec_case("shape d_model not a head_dim multiple", {"ladder.shapes": [{"size": "8K", "n_layers": 2, "d_model": 12}]},
              "ladder.shapes"),
    spec_case("shape n_layers zero", {"ladder.shapes": [{"size": "8K", "n_layers": 0, "d_model": 16}]},
              "ladder.shapes[0].n_layers"),
    spec_case("shape missing d_model", {"ladder.shapes": [{"size": "8K", "n_layers": 2}]}, "ladder.shapes[0].d_model"),
    # ---------------------------------------------------------------- spec: budget, seeds
    spec_case("budget both tokens and tokens_per_param", {"budget.tokens": "1M"}, "budget"),
    spec_case("budget neither", {"budget": {}}, "budget"),
    spec_case("budget tokens negative", {"budget": {"tokens": -5}}, "budget.tokens"),
    spec_case("budget tokens a word", {"budget": {"tokens": "lots"}}, "budget.tokens"),
    spec_case("budget tokens_per_param zero", {"budget.tokens_per_param": 0}, "budget.tokens_per_param"),
    spec_case("budget tokens_per_param NaN", {"budget.tokens_per_param": float("nan")}, "budget.tokens_per_param"),
    spec_case("budget tokens_per_param infinite", {"budget.tokens_per_param": float("inf")}, "budget.tokens_per_param"),
    spec_case("seeds empty", {"seeds": []}, "seeds"),
    spec_case("seeds repeat", {"seeds": [0, 0]}, "seeds"),
    spec_case("seeds a word", {"seeds": ["a"]}, "seeds"),
    spec_case("seed negative", {"seeds": [-1]}, "seeds"),
    spec_case("seeds a number", {"seeds": 3}, "seeds"),
    spec_case("seeds_at size not in the ladder", {"seeds_at": {"64K": [0, 1]}}, "seeds_at"),
    spec_case("seeds_at size unreadable", {"seeds_at": {"32Q": [0, 1]}}, "seeds_at"),
    spec_case("seeds_at size listed twice", {"seeds_at": {"32K": [1], 32000: [2]}}, "seeds_at"),
    spec_case("seeds_at seed negative", {"seeds_at": {"32K": [-1]}}, "seeds_at"),
    spec_case("seeds_at seeds repeat", {"seeds_at": {"32K": [1, 2, 1]}}, "seeds_at"),
    spec_case("seeds_at seeds not a list", {"seeds_at": {"32K": 3}}, "seeds_at"),
    spec_case("seeds_at a list", {"seeds_at": [0, 1]}, "seeds_at"),
    # ---------------------------------------------------------------- spec: optimizer
    spec_case("lr zero", {"optimizer.lr": 0}, "optimizer.lr"),
    spec_case("lr negative", {"optimizer.lr": -0.1}, "optimizer.lr"),
    spec_case("lr a word", {"optimizer.lr": "fast"}, "optimizer.lr"),
    spec_case("lr NaN", {"optimizer.lr": float("nan")}, "optimizer.lr"),
    spec_case("lr infinite", {"optimizer.lr": float("inf")}, "optimizer.lr"),
    spec_case("warmup_fraction above 1", {"optimizer.warmup_fraction": 1.5}, "optimizer.warmup_fraction"),
    spec_case("weight_decay negative", {"optimizer.weight_decay": -1}, "optimizer.weight_decay"),
    spec_case("min_lr_ratio above 1", {"optimizer.min_lr_ratio": 2}, "optimizer.min_lr_ratio"),
    spec_case("grad_clip zero", {"optimizer.grad_clip": 0}, "optimizer.grad_clip"),
    spec_case("batch_tokens zero", {"optimizer.batch_tokens": 0}, "optimizer.batch_tokens"),
    spec_case("batch_tokens below one sequence", {"optimizer.batch_tokens": 32}, "optimizer.batch_tokens"),
    spec_case("batch_tokens not a sequence multiple", {"optimizer.batch_tokens": 100}, "optimizer.batch_tokens"),
    spec_case("optimizer unknown key", {"optimizer.momentum": 0.9}, "optimizer.momentum"),
    spec_case("lr_width_exponent negative", {"optimizer.lr_width_exponent": -1}, "optimizer.lr_width_exponent"),
    # ---------------------------------------------------------------- spec: data
    spec_case("seq_len zero", {"data.seq_len": 0}, "data.seq_len"),
    spec_case("seq_len tiny", {"data.seq_len": 4}, "data.seq_len"),
    spec_case("seq_len a word", {"data.seq_len": "long"}, "data.seq_len"),
    spec_case("seq_len fractional", {"data.seq_len": 64.5}, "data.seq_len"),
    spec_case("vocab_size one", {"data.vocab_size": 1}, "data.vocab_size"),
    spec_case("vocab_size below the byte tokenizer", {"data.vocab_size": 100}, "data.vocab_size"),
    spec_case("corpus format unknown", {"data.corpus": {"format": "xml"}}, "data.corpus.format"),
    spec_case("corpus source empty", {"data.corpus": {"source": ""}}, "data.corpus.source"),
    spec_case("corpus unknown key", {"data.corpus": {"path": "x"}}, "data.corpus.path"),
    spec_case("corpus max_bytes zero", {"data.corpus": {"max_bytes": 0}}, "data.corpus.max_bytes"),
    spec_case("corpus tokenizer file missing", {"data.corpus": {"tokenizer": "/nonexistent/tok.json"}},
              "tokenizer"),
    spec_case("corpus s3_endpoint not a URL", {"data.corpus": {"s3_endpoint": "::"}}, "data.corpus.s3_endpoint"),
    spec_case("evals every_steps zero", {"data.evals.every_steps": 0}, "data.evals.every_steps"),
    spec_case("evals val_windows zero", {"data.evals.val_windows": 0}, "data.evals.val_windows"),
    spec_case("mqar n_pairs zero", {"data.evals.mqar": {"n_pairs": 0}}, "data.evals.mqar.n_pairs"),
    spec_case("mqar key_vocab one", {"data.evals.mqar": {"key_vocab": 1}}, "data.evals.mqar.key_vocab"),
    spec_case("mqar vocab above the model's", {"data.evals.mqar": {"key_vocab": 200, "value_vocab": 200}},
              "data.evals.mqar"),
    spec_case("needle length above seq_len", {"data.evals.needle": {"lengths": [128]}}, "data.evals.needle.lengths"),
    spec_case("needle length zero", {"data.evals.needle": {"lengths": [0]}}, "data.evals.needle.lengths"),
    spec_case("needle depth above 1", {"data.evals.needle": {"lengths": [64], "depths": [1.5]}},
              "data.evals.needle.depths"),
    spec_case("needle kind unknown", {"data.evals.needle": {"lengths": [64], "kind": "haystack"}},
              "data.evals.needle.kind"),
    # ---------------------------------------------------------------- spec: tune
    spec_case("tune proxy_size unreadable", {"tune": dict(TUNE, proxy_size="small")}, "tune.proxy_size"),
    spec_case("tune proxy_size unreachable", {"tune": dict(TUNE, proxy_size="1e30")}, "tune.proxy_size"),
    spec_case("tune samples zero", {"tune": dict(TUNE, samples=0)}, "tune.samples"),
    spec_case("tune tokens missing", {"tune": {"proxy_size": "8K"}}, "tune.tokens"),
    spec_case("tune lr range reversed", {"tune": dict(TUNE, lr={"low": 0.1, "high": 0.01})}, "tune.lr"),
    spec_case("tune lr low zero", {"tune": dict(TUNE, lr={"low": 0, "high": 0.01})}, "tune.lr.low"),
    spec_case("tune reduction_factor one", {"tune": dict(TUNE, reduction_factor=1)}, "tune.reduction_factor"),
    spec_case("tune grace_period_steps zero", {"tune": dict(TUNE, grace_period_steps=0)}, "tune.grace_period_steps"),
    # ---------------------------------------------------------------- spec: trainer, resources
    spec_case("trainer device unknown", {"trainer": {"device": "tpu"}}, "trainer.device"),
    spec_case("trainer precision unknown", {"trainer": {"precision": "fp16"}}, "trainer.precision"),
    spec_case("micro_batch_tokens zero", {"trainer": {"micro_batch_tokens": 0}}, "trainer.micro_batch_tokens"),
    spec_case("micro_batch_tokens not a sequence multiple", {"trainer": {"micro_batch_tokens": 100}},
              "trainer.micro_batch_tokens"),
    spec_case("micro_batch_tokens a word", {"trainer": {"micro_batch_tokens": "some"}}, "trainer.micro_batch_tokens"),
    spec_case("parallelism unknown", {"trainer": {"parallelism": "zero3"}}, "trainer.parallelism"),
    spec_case("assumed_mfu above 1", {"trainer": {"assumed_mfu": 2}}, "trainer.assumed_mfu"),
    spec_case("peak_tflops zero", {"trainer": {"peak_tflops": 0}}, "trainer.peak_tflops"),
    spec_case("activation_checkpointing unknown", {"trainer": {"activation_checkpointing": "sometimes"}},
              "trainer.activation_checkpointing"),
    spec_case("compile unknown", {"trainer": {"compile": "maybe"}}, "trainer.compile"),
    spec_case("cpu device with GPUs per trial", {"trainer": {"device": "cpu"}, "resources": {"gpus_per_trial": 1}},
              "trainer.device"),
    spec_case("cpus_per_trial zero", {"resources": {"cpus_per_trial": 0}}, "resources.cpus_per_trial"),
    spec_case("gpus_per_trial negative", {"resources": {"gpus_per_trial": -1}}, "resources.gpus_per_trial"),
    spec_case("gpus_per_trial fractional above one", {"resources": {"gpus_per_trial": 1.5}}, "gpus_per_trial"),
    spec_case("workers_per_trial zero", {"resources": {"workers_per_trial": 0}}, "resources.workers_per_trial"),
    spec_case("workers without matching GPUs", {"resources": {"workers_per_trial": 2, "gpus_per_trial": 1}},
              "gpus_per_trial"),
    spec_case("gpu_memory_gb zero", {"resources": {"gpu_memory_gb": 0}}, "resources.gpu_memory_gb"),
    spec_case("by_size min_params unreadable", {"resources": {"by_size": [{"min_params": "big"}]}},
              "resources.by_size[0].min_params"),
    spec_case("by_size unknown key", {"resources": {"by_size": [{"min_params": "1M", "gpu": 1}]}},
              "resources.by_size[0].gpu"),
    spec_case("batch not splitting over workers", {"resources": {"workers_per_trial": 3}}, "optimizer.batch_tokens"),
    # ---------------------------------------------------------------- spec: fit
    spec_case("spec fit law unknown", {"fit": {"law": "kaplan"}}, "fit.law"),
    spec_case("spec fit x unknown", {"fit": {"x": "tokens"}}, "fit.x"),
    spec_case("spec fit bootstrap negative", {"fit": {"bootstrap": -1}}, "fit.bootstrap"),
    spec_case("spec fit target_sizes unreadable", {"fit": {"target_sizes": ["huge"]}}, "fit.target_sizes"),
    spec_case("spec fit target_sizes a number", {"fit": {"target_sizes": 7}}, "fit.target_sizes"),
    spec_case("spec fit target_sizes empty", {"fit": {"target_sizes": []}}, "fit.target_sizes"),
    spec_case("spec fit backtest_holdout_sizes negative", {"fit": {"backtest_holdout_sizes": -1}},
              "fit.backtest_holdout_sizes"),
    spec_case("spec fit shared_E not a boolean", {"fit": {"shared_E": "perhaps"}}, "fit.shared_E"),
    # ---------------------------------------------------------------- plan
    Case("plan --mfu zero", lambda s: ["plan", s.spec(), "--mfu", "0"], "--mfu"),
    Case("plan --mfu above 1", lambda s: ["plan", s.spec(), "--mfu", "2"], "--mfu"),
    Case("plan --mfu a word", lambda s: ["plan", s.spec(), "--mfu", "high"], "--mfu"),
    # ---------------------------------------------------------------- train
    Case("train size below the smallest model", lambda s: ["train", "--size", "8K"], "--size"),
    Case("train size huge", lambda s: ["train", "--size", "1e30"], "--size"),
    Case("train size unreadable", lambda s: [*TRAIN, "--size", "abc"], "--size"),
    Case("train size negative", lambda s: [*TRAIN, "--size", "-1M"], "--size"),
    Case("train size empty", lambda s: [*TRAIN, "--size", ""], "--size"),
    Case("train arch unknown", lambda s: [*TRAIN, "--arch", "mamba"], "--arch"),
    Case("train arch empty", lambda s: [*TRAIN, "--arch", ""], "--arch"),
    Case("train seq-len zero", lambda s: [*TRAIN, "--seq-len", "0"], "--seq-len"),
    Case("train seq-len negative", lambda s: [*TRAIN, "--seq-len", "-64"], "--seq-len"),
    Case("train seq-len a word", lambda s: [*TRAIN, "--seq-len", "long"], "--seq-len"),
    Case("train tokens unreadable", lambda s: [*TRAIN, "--tokens", "lots"], "--tokens"),
    Case("train tokens zero", lambda s: [*TRAIN, "--tokens", "0"], "--tokens"),
    Case("train tokens-per-param negative", lambda s: [*TRAIN[:-4], "--tokens-per-param", "-2"], "--tokens-per-param"),
    Case("train tokens and tokens-per-param", lambda s: [*TRAIN, "--tokens-per-param", "2"], "--tokens"),
    Case("train batch-tokens zero", lambda s: [*TRAIN, "--batch-tokens", "0"], "--batch-tokens"),
    Case("train batch-tokens below a sequence", lambda s: [*TRAIN, "--batch-tokens", "32"], "--batch-tokens"),
    Case("train lr zero", lambda s: [*TRAIN, "--lr", "0"], "--lr"),
    Case("train lr NaN", lambda s: [*TRAIN, "--lr", "nan"], "--lr"),
    Case("train lr infinite", lambda s: [*TRAIN, "--lr", "inf"], "--lr"),
    Case("train segment-len zero", lambda s: [*TRAIN, "--arch", "swla+grm", "--segment-len", "0"], "--segment-len"),
    Case("train segment-len not dividing", lambda s: [*TRAIN, "--arch", "swla+grm", "--segment-len", "48"],
         "--segment-len"),
    Case("train segmentation unknown", lambda s: [*TRAIN, "--arch", "swla+grm", "--segmentation", "sqrt"],
         "--segmentation"),
    Case("train segment-mode unknown", lambda s: [*TRAIN, "--arch", "swla+grm", "--segment-mode", "both"],
         "--segment-mode"),
    Case("train top-k zero", lambda s: [*TRAIN, "--arch", "swla+ssc", "--top-k", "0"], "--top-k"),
    Case("train head-dim zero", lambda s: [*TRAIN, "--head-dim", "0"], "--head-dim"),
    Case("train data file missing", lambda s: [*TRAIN, "--data", str(s.root / "missing.txt")], "--data"),
    Case("train data a folder without text", lambda s: [*TRAIN, "--data", s.folder("empty-data")], "--data"),
    Case("train format unknown", lambda s: [*TRAIN, "--format", "xml"], "--format"),
    Case("train tokenizer file missing", lambda s: [*TRAIN, "--tokenizer", str(s.root / "tok.json")], "--tokenizer"),
    Case("train task unknown", lambda s: [*TRAIN, "--task", "chat"], "--task"),
    Case("train mqar-pairs negative", lambda s: [*TRAIN, "--mqar-pairs", "-1"], "--mqar-pairs"),
    Case("train needle-lengths unreadable", lambda s: [*TRAIN, "--needle-lengths", "a,b"], "--needle-lengths"),
    Case("train needle length above seq-len", lambda s: [*TRAIN, "--needle-lengths", "128"], "--needle-lengths"),
    Case("train eval-every zero", lambda s: [*TRAIN, "--eval-every", "0"], "--eval-every"),
    Case("train seed negative", lambda s: [*TRAIN, "--seed", "-1"], "--seed"),
    Case("train checkpoint-dir a file", lambda s: [*TRAIN, "--checkpoint-dir", s.write("ckpt", "x")],
         "--checkpoint-dir"),
    Case("train checkpoint-dir under a file", lambda s: [*TRAIN, "--checkpoint-dir", s.write("ckpt2", "x") + "/sub"],
         "--checkpoint-dir"),
    Case("train threads zero", lambda s: [*TRAIN, "--threads", "0"], "--threads"),
    Case("train device unknown", lambda s: [*TRAIN, "--device", "tpu"], "--device"),
    Case("train precision unknown", lambda s: [*TRAIN, "--precision", "fp16"], "--precision"),
    Case("train micro-batch-tokens zero", lambda s: [*TRAIN, "--micro-batch-tokens", "0"], "--micro-batch-tokens"),
    Case("train micro-batch-tokens not a sequence multiple", lambda s: [*TRAIN, "--micro-batch-tokens", "100"],
         "--micro-batch-tokens"),
    Case("train unknown option", lambda s: [*TRAIN, "--learning-rate", "1"], "--learning-rate"),
    # ---------------------------------------------------------------- models
    Case("models size huge", lambda s: ["models", "--sizes", "1e30"], "--sizes"),
    Case("models size below the smallest model", lambda s: ["models", "--sizes", "8K,16K,50K"], "--sizes"),
    Case("models size unreadable", lambda s: ["models", "--sizes", "1M,lots"], "--sizes"),
    Case("models sizes empty", lambda s: ["models", "--sizes", ","], "--sizes"),
    Case("models size zero", lambda s: ["models", "--sizes", "0"], "--sizes"),
    Case("models seq-len zero", lambda s: [*MODELS, "--seq-len", "0"], "--seq-len"),
    Case("models arch unknown", lambda s: [*MODELS, "--arch", "rwkv"], "--arch"),
    Case("models segment-len zero", lambda s: [*MODELS, "--segment-len", "0"], "--segment-len"),
    Case("models segment-len above seq-len", lambda s: [*MODELS, "--seq-len", "256", "--segment-len", "512"],
         "--segment-len"),
    Case("models segmentation unknown", lambda s: [*MODELS, "--segmentation", "sqrt"], "--segmentation"),
    Case("models top-k zero", lambda s: [*MODELS, "--arch", "ssc", "--top-k", "0"], "--top-k"),
    Case("models head-dim zero", lambda s: [*MODELS, "--head-dim", "0"], "--head-dim"),
    Case("models vocab-size zero", lambda s: [*MODELS, "--vocab-size", "0"], "--vocab-size"),
    Case("models chunk-len zero", lambda s: [*MODELS, "--chunk-len", "0"], "--chunk-len"),
    Case("models bytes-per-element zero", lambda s: [*MODELS, "--bytes-per-element", "0"], "--bytes-per-element"),
    # ---------------------------------------------------------------- study commands: resume, ls, show, ui
    Case("resume unknown study", lambda s: ["resume", "ghost", "--storage", s.study()], "STUDY"),
    Case("resume broken spec.yaml", lambda s: ["resume", "stored", "--storage", s.study(spec_text="name: [oops\n")],
         "spec.yaml"),
    Case("resume binary spec.yaml", lambda s: ["resume", "stored", "--storage", s.study(spec_text=b"\xff\xfe\x00\x81")],
         "spec.yaml"),
    Case("resume spec.yaml a list", lambda s: ["resume", "stored", "--storage", s.study(spec_text="- 1\n")],
         "spec.yaml"),
    Case("resume storage unknown scheme", lambda s: ["resume", "x", "--storage", "gopher://h/p"], "storage"),
    Case("ls storage a file", lambda s: ["ls", "--storage", s.write("not-a-folder", "x")], "--storage"),
    Case("ls storage missing", lambda s: ["ls", "--storage", str(s.root / "missing")], "--storage"),
    Case("ls storage unknown scheme", lambda s: ["ls", "--storage", "ftp://host/p"], "storage"),
    Case("ls storage s3 without bucket", lambda s: ["ls", "--storage", "s3://"], "storage"),
    Case("show unknown study", lambda s: ["show", "ghost", "--storage", s.study()], "STUDY"),
    Case("show storage a file", lambda s: ["show", "x", "--storage", s.write("f", "x")], "storage"),
    Case("ui unknown study", lambda s: ["ui", "ghost", "--storage", s.study()], "STUDY"),
    Case("ui port negative", lambda s: ["ui", "stored", "--storage", s.study(), "--port", "-1"], "--port"),
    Case("ui port zero", lambda s: ["ui", "stored", "--storage", s.study(), "--port", "0"], "--port"),
    Case("ui port above 65535", lambda s: ["ui", "stored", "--storage", s.study(), "--port", "70000"], "--port"),
    Case("ui port a word", lambda s: ["ui", "stored", "--storage", s.study(), "--port", "http"], "--port"),
    Case("ui port busy", lambda s: ["ui", "stored", "--storage", s.study(), "--port", str(s.busy_port)], "--port"),
    Case("ui tracking-uri unknown scheme", lambda s: ["ui", "stored", "--tracking-uri", "mongodb://h/db"],
         "--tracking-uri"),
    # ---------------------------------------------------------------- report, advise
    Case("report unknown study", lambda s: ["report", "ghost", "--storage", s.study()], "STUDY"),
    Case("report law unknown", lambda s: ["report", "stored", "--storage", s.study(), "--law", "kaplan"], "--law"),
    Case("report x unknown", lambda s: ["report", "stored", "--storage", s.study(), "--x", "tokens"], "--x"),
    Case("report bootstrap negative", lambda s: ["report", "stored", "--storage", s.study(), "--bootstrap", "-1"],
         "--bootstrap"),
    Case("report target-sizes unreadable", lambda s: ["report", "stored", "--storage", s.study(),
                                                      "--target-sizes", "big"], "--target-sizes"),
    Case("report target-sizes empty", lambda s: ["report", "stored", "--storage", s.study(), "--target-sizes", ","],
         "--target-sizes"),
    Case("report holdout-sizes negative", lambda s: ["report", "stored", "--storage", s.study(),
                                                     "--holdout-sizes", "-1"], "--holdout-sizes"),
    Case("report workers zero", lambda s: ["report", "stored", "--storage", s.study(), "--workers", "0"], "--workers"),
    Case("report storage unknown scheme", lambda s: ["report", "x", "--storage", "ftp://h/p"], "storage"),
    Case("report broken spec.yaml", lambda s: ["report", "stored", "--storage", s.study(spec_text="a: [b\n")],
         "spec.yaml"),
    Case("advise bootstrap zero", lambda s: ["advise", "stored", "--storage", s.study(), "--bootstrap", "0"],
         "--bootstrap"),
    Case("advise device-tflops zero", lambda s: ["advise", "stored", "--storage", s.study(), "--device-tflops", "0"],
         "--device-tflops"),
    Case("advise law unknown", lambda s: ["advise", "stored", "--storage", s.study(), "--law", "x"], "--law"),
    Case("advise unknown study", lambda s: ["advise", "ghost", "--storage", s.study()], "STUDY"),
    # ---------------------------------------------------------------- fit
    Case("fit table missing", lambda s: ["fit", str(s.root / "none.csv")], "DATA"),
    Case("fit table binary", lambda s: ["fit", s.write("t.csv", bytes(range(256)))], "DATA"),
    Case("fit table empty", lambda s: ["fit", s.table("")], "DATA"),
    Case("fit law unknown", lambda s: ["fit", s.table(CSV), "--law", "kaplan"], "--law"),
    Case("fit n-col missing", lambda s: ["fit", s.table(CSV), "--law", "power", "--n-col", "N"], "--n-col"),
    Case("fit loss-col missing", lambda s: ["fit", s.table(CSV), "--loss-col", "val"], "--loss-col"),
    Case("fit loss column not numeric", lambda s: ["fit", s.table(CSV.replace("3.1", "high")), "--law", "power"],
         "loss"),
    Case("fit x unknown", lambda s: ["fit", s.table(CSV), "--law", "power", "--x", "tokens"], "--x"),
    Case("fit bootstrap negative", lambda s: ["fit", s.table(CSV), "--bootstrap", "-1"], "--bootstrap"),
    Case("fit level above 1", lambda s: ["fit", s.table(CSV), "--level", "1.5"], "--level"),
    Case("fit delta zero", lambda s: ["fit", s.table(CSV), "--delta", "0"], "--delta"),
    Case("fit where query invalid", lambda s: ["fit", s.table(CSV), "--fit-where", "loss <"], "--fit-where"),
    Case("fit drop-highest negative", lambda s: ["fit", s.table(CSV), "--drop-highest", "-1"], "--drop-highest"),
    Case("fit workers zero", lambda s: ["fit", s.table(CSV), "--workers", "0"], "--workers"),
    Case("fit share unknown parameter", lambda s: ["fit", s.table(CSV), "--share", "Z"], "--share"),
    Case("fit json into a missing folder", lambda s: ["fit", s.table(CSV), "--law", "power", "--bootstrap", "0",
                                                      "--json", str(s.root / "no" / "such" / "f.json")], "--json"),
    # ---------------------------------------------------------------- jobs: status, logs, stop
    Case("status address without host", lambda s: ["status", "--address", "http://"], "--address"),
    Case("status address port out of range", lambda s: ["status", "--address", "http://127.0.0.1:99999"],
         "--address"),
    Case("logs address refusing", lambda s: ["logs", "job1", "--address", f"http://127.0.0.1:{_closed_port()}"],
         "--address"),
    Case("stop address empty", lambda s: ["stop", "job1", "--address", " "], "--address"),
    # ---------------------------------------------------------------- the command line itself
    Case("unknown command", lambda s: ["frobnicate"], "frobnicate"),
    Case("missing argument", lambda s: ["plan"], "SPEC"),
]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _guard(*_args: Any, **_kwargs: Any) -> None:
    raise AssertionError("bad input got past validation: something started to train, run or serve")


@pytest.fixture(scope="module")
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.fixture
def guarded(monkeypatch):
    """Nothing past validation may run: training, the study driver, the UI's server child."""
    import scaling.cli.study
    import scaling.study.tune
    import scaling.train

    monkeypatch.setattr(scaling.train, "run_trial", _guard)
    monkeypatch.setattr(scaling.study.tune, "run_study", _guard)
    monkeypatch.setattr(scaling.cli.study, "serve_mlflow_ui", _guard, raising=False)
    monkeypatch.setattr(subprocess, "call", _guard)
    monkeypatch.setattr(subprocess, "Popen", _guard)


def test_kinds_are_distinct_and_many():
    kinds = [c.kind for c in CASES]
    assert len(set(kinds)) == len(kinds)
    assert len(kinds) >= 136


def test_the_base_spec_is_valid(tmp_path, busy_port, guarded):
    """Each spec case changes one thing in a valid spec, so the change is what fails."""
    result = CliRunner().invoke(app, ["plan", Sandbox(tmp_path, busy_port).spec(), "--no-memory"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input_is_a_clear_exit_2(case: Case, tmp_path, busy_port, guarded):
    argv = case.argv(Sandbox(tmp_path, busy_port))
    result = CliRunner().invoke(app, argv)
    output = result.output
    assert "Traceback" not in output
    assert isinstance(result.exception, SystemExit) or result.exception is None, repr(result.exception)
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}"
    assert case.field.lower() in output.lower(), output
