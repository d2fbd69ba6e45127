"""`StudySpec`: a scaling study described once in YAML, validated here and nowhere else.

Every error names the YAML path of the offending field and the fix, e.g.
``architectures[2].segment_lens[0]: segment length 48 does not divide data.seq_len 256. Fix: ...``
so a user can correct the spec without reading code. `load_spec` turns pydantic's
ValidationError and YAML syntax errors into `UserInputError` (exit 2 at the CLI).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional
from urllib.parse import urlparse

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from scaling.errors import UserInputError
from scaling.models.architectures import parse_architecture
# The ladder's blocks live in scaling.spec_ladder; imported here so `from scaling.spec import X` keeps working.
from scaling.spec_ladder import BudgetSettings, LadderSettings, ShapeOverride  # noqa: F401 - re-exported
from scaling.spec_ladder import StrictBlock as _Strict
from scaling.spec_ladder import check_seeds_at, seeds_at_value
from scaling.spec_ladder import size_value as _size

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_NESTED_FIELD = re.compile(r"^((?:[a-z_]+)?(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): (.*)$", re.S)


def _refuse_secret(value: Optional[str]) -> Optional[str]:
    """A URI field must not carry a password: the spec is stored with the study (spec.yaml) and travels
    with cluster jobs (scaling.redact). The error never repeats the value."""
    from scaling.redact import uri_has_secret

    if value is not None and uri_has_secret(value):
        raise ValueError("the URI carries a password or key, which would be stored with the study (spec.yaml) "
                         "and sent with cluster jobs; leave it out of the spec: set the whole tracking URI in "
                         "$MLFLOW_TRACKING_URI where the study runs (read from the environment, never stored), "
                         "or use $MLFLOW_TRACKING_USERNAME / $MLFLOW_TRACKING_PASSWORD for a server, $PGPASSWORD "
                         "or ~/.pgpass for PostgreSQL, and the AWS credential variables for S3")
    return value


_MLFLOW_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks", "databricks-uc",
                   "uc")


def _endpoint(value: Optional[str]) -> Optional[str]:
    """An S3 endpoint as `scaling.data.sources.s3_filesystem` reads it (http(s)://host[:port], scheme optional)."""
    if value is None:
        return None
    parsed = urlparse(value if "://" in value else f"https://{value}")
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        parsed = None  # type: ignore[assignment]
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not an http(s) endpoint URL; write it as http://host:port or https://host "
                         "(leave it out for AWS)")
    return value


class CorpusSettings(_Strict):
    source: str = Field(default="builtin", min_length=1)
    format: Literal["auto", "text", "jsonl", "parquet", "tokens"] = "auto"
    text_field: str = "text"
    tokenizer: str = "bytes"
    s3_endpoint: Optional[str] = None
    max_bytes: Optional[int] = Field(default=None, gt=0)

    @field_validator("source", "tokenizer", "s3_endpoint")
    @classmethod
    def _no_secret(cls, value: Optional[str]) -> Optional[str]:
        return _refuse_secret(value)

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint(cls, value: Optional[str]) -> Optional[str]:
        return _endpoint(value)


class MQARSettings(_Strict):
    n_pairs: int = Field(default=8, ge=1)
    n_queries: int = Field(default=8, ge=1)
    key_vocab: int = Field(default=64, ge=2)
    value_vocab: int = Field(default=64, ge=2)


class NeedleSettings(_Strict):
    lengths: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    depths: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9])
    kind: Literal["passkey", "number", "uuid"] = "passkey"

    @field_validator("depths")
    @classmethod
    def _depths(cls, depths: list[float]) -> list[float]:
        if any(not 0.0 <= d <= 1.0 for d in depths):
            raise ValueError("depths are fractions of the context: use values in [0, 1]")
        return depths


class EvalSettings(_Strict):
    every_steps: int = Field(default=50, ge=1)
    val_windows: int = Field(default=16, ge=1)
    mqar: Optional[MQARSettings] = None
    needle: Optional[NeedleSettings] = None


class DataSettings(_Strict):
    corpus: CorpusSettings = Field(default_factory=CorpusSettings)
    seq_len: int = Field(default=256, ge=8)
    # Model vocabulary; default: the tokenizer's size (256 for bytes). Set it to plan a study whose
    # tokenizer file lives only on the cluster (a padded size such as 50304 is fine).
    vocab_size: Optional[int] = Field(default=None, ge=2)
    evals: EvalSettings = Field(default_factory=EvalSettings)


class ArchitectureSettings(_Strict):
    """One architecture of the study; `segment_lens` expands into one series per C."""

    name: str
    segment_lens: list[int | Literal["log"]] = Field(default_factory=list)
    log_base: int = Field(default=64, ge=1)  # the finest (newest) log segment's length when a segment length is `log`
    top_k: int = Field(default=2, ge=1)
    segment_mode: Literal["checkpoint", "independent"] = "checkpoint"
    memory_expansion: int = Field(default=4, ge=1)
    # The online-memory gate bias of GRM / Soup / SSC (scaling.models.config.online_gate_rule): left
    # out, log(3 x the caches a token's gate covers); 0 is the paper's plain softmax.
    online_gate_init: Optional[float] = Field(default=None, allow_inf_nan=False)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        try:
            return parse_architecture(name).name
        except UserInputError as exc:
            raise ValueError(f"{exc.problem}; {exc.fix}") from None

    @field_validator("segment_lens")
    @classmethod
    def _unique_segments(cls, lens: list) -> list:
        if len(set(lens)) != len(lens):
            raise ValueError("segment lengths repeat; list each once")
        return lens


class OptimizerSettings(_Strict):
    lr: float = Field(default=3e-3, gt=0)
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1)
    weight_decay: float = Field(default=0.1, ge=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    grad_clip: float = Field(default=1.0, gt=0)
    batch_tokens: int = Field(default=8192, ge=1)
    # How a learning rate tuned at the proxy width carries to width d: lr * (d_proxy / d) ** exponent.
    lr_width_exponent: float = Field(default=1.0, ge=0)


class SearchRange(_Strict):
    low: float = Field(gt=0)
    high: float = Field(gt=0)
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> "SearchRange":
        if self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        return self


class TuneSettings(_Strict):
    proxy_size: float
    samples: int = Field(default=8, ge=1)
    tokens: float
    lr: SearchRange = Field(default_factory=lambda: SearchRange(low=1e-3, high=3e-2))
    warmup_fraction: Optional[SearchRange] = None
    weight_decay: Optional[SearchRange] = None
    grace_period_steps: int = Field(default=10, ge=1)
    reduction_factor: int = Field(default=3, ge=2)

    @field_validator("proxy_size", "tokens", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> float:
        return _size(value)


class TrainerSettings(_Strict):
    """How every trial trains: device, precision, micro-batches, compilation, parallelism."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when the trial holds a GPU
    precision: Literal["fp32", "bf16"] = "fp32"
    # Tokens per forward/backward on one worker: a multiple of seq_len dividing each worker's share
    # of batch_tokens; `auto` takes the largest that the memory estimate fits in the trial's GPU.
    micro_batch_tokens: Optional[int | Literal["auto"]] = None
    compile: Optional[bool] = None  # torch.compile; default on for cuda, off for cpu
    parallelism: Literal["ddp", "fsdp"] = "ddp"  # across a multi-worker trial's workers
    # Recompute each block in backward (saves activations, costs ~1 extra forward); `auto`: only
    # for trials that would not fit their GPU otherwise.
    activation_checkpointing: bool | Literal["auto"] = False
    peak_tflops: Optional[float] = Field(default=None, gt=0)  # per device, overrides the MFU table
    assumed_mfu: float = Field(default=0.35, gt=0, le=1)  # `mcscale plan`'s device-hours assume this MFU

    @field_validator("micro_batch_tokens")
    @classmethod
    def _micro(cls, value: Any) -> Any:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be a positive number of tokens (a multiple of data.seq_len) or auto")
        return value


class ResourceShape(_Strict):
    """What one trial holds. gpus_per_trial > 1 runs the trial on that many workers (1 GPU each)."""

    cpus_per_trial: float = Field(default=1.0, gt=0)  # per worker when the trial has several workers
    gpus_per_trial: float = Field(default=0.0, ge=0)  # fractional (< 1) lets small trials share a GPU
    workers_per_trial: Optional[int] = Field(default=None, ge=1)  # default: max(1, gpus_per_trial)
    accelerator_type: Optional[str] = None  # Ray accelerator type, e.g. H100 or A100-80G
    gpu_memory_gb: Optional[float] = Field(default=None, gt=0)  # default: from accelerator_type

    @model_validator(mode="after")
    def _workers(self) -> "ResourceShape":
        gpus, workers = self.gpus_per_trial, self.workers_per_trial
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(f"gpus_per_trial: {gpus} is more than one GPU but not a whole number; use 1, 2, 4, 8 "
                             "(one worker each) or a fraction below 1 to share a GPU")
        if workers is not None and workers > 1 and gpus not in (0, workers):
            raise ValueError(f"gpus_per_trial: {workers} workers need {workers} GPUs (one each) or none (CPU); "
                             f"set gpus_per_trial: {workers} or 0")
        if workers == 1 and gpus > 1:
            raise ValueError(f"workers_per_trial: one worker cannot use {gpus:g} GPUs; set workers_per_trial: "
                             f"{int(gpus)} or leave it out")
        return self

    @property
    def workers(self) -> int:
        if self.workers_per_trial is not None:
            return self.workers_per_trial
        return max(1, int(self.gpus_per_trial))


class SizeResources(_Strict):
    """Resources for the ladder rungs of at least `min_params` non-embedding parameters."""

    min_params: float
    cpus_per_trial: Optional[float] = Field(default=None, gt=0)
    gpus_per_trial: Optional[float] = Field(default=None, ge=0)
    workers_per_trial: Optional[int] = Field(default=None, ge=1)
    accelerator_type: Optional[str] = None
    gpu_memory_gb: Optional[float] = Field(default=None, gt=0)

    @field_validator("min_params", mode="before")
    @classmethod
    def _min(cls, value: Any) -> float:
        return _size(value)


class ResourceSettings(ResourceShape):
    by_size: list[SizeResources] = Field(default_factory=list)  # first match, largest min_params first

    @model_validator(mode="after")
    def _overrides_valid(self) -> "ResourceSettings":
        for i, override in enumerate(self.by_size):
            try:
                self.merged(override)
            except ValueError as exc:
                raise ValueError(f"by_size[{i}]: {exc}") from None
        return self

    def merged(self, override: SizeResources) -> ResourceShape:
        fields = {k: getattr(self, k) for k in ResourceShape.model_fields}
        fields.update({k: v for k, v in override.model_dump().items() if k != "min_params" and v is not None})
        if override.gpus_per_trial is not None and override.workers_per_trial is None:
            fields["workers_per_trial"] = None  # the worker count follows the override's GPUs
        return ResourceShape(**fields)

    def for_params(self, params_nonembed: float) -> ResourceShape:
        """The resources of a trial of `params_nonembed` parameters (the largest matching override)."""
        matches = [o for o in self.by_size if params_nonembed >= o.min_params]
        if not matches:
            return ResourceShape(**{k: getattr(self, k) for k in ResourceShape.model_fields})
        return self.merged(max(matches, key=lambda o: o.min_params))


class FitSettings(_Strict):
    law: Literal["power", "chinchilla"] = "power"
    x: Literal["compute", "params"] = "compute"
    shared_E: bool = True
    bootstrap: int = Field(default=200, ge=0)
    target_sizes: list[float] = Field(default_factory=lambda: [1.3e9, 7e9, 70e9])
    backtest_holdout_sizes: int = Field(default=1, ge=0)

    @field_validator("target_sizes", mode="before")
    @classmethod
    def _targets(cls, values: Any) -> list[float]:
        if not isinstance(values, list) or not values:
            raise ValueError("give a non-empty list of sizes to extrapolate to, e.g. [1.3B, 7B, 70B]")
        return [_size(v) for v in values]


class RecallMQARSettings(_Strict):
    """The MQAR task the recall phase trains and scores on (scaling.data.recall.MQARSpec)."""

    n_pairs: int = Field(default=8, ge=1)
    n_queries: Optional[int] = Field(default=None, ge=1)  # default: every pair is queried
    key_vocab: int = Field(default=16, ge=1)
    value_vocab: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> "RecallMQARSettings":
        if self.queries > self.n_pairs:
            raise ValueError(f"n_queries: {self.queries} queries but only {self.n_pairs} pairs; each query asks a "
                             f"distinct key, so use n_queries <= {self.n_pairs}")
        for name in ("key_vocab", "value_vocab"):
            if getattr(self, name) < self.n_pairs:
                raise ValueError(f"{name}: {self.n_pairs} distinct keys and values cannot be drawn from "
                                 f"{getattr(self, name)} ids; use {name} >= {self.n_pairs}")
        return self

    @property
    def queries(self) -> int:
        return self.n_pairs if self.n_queries is None else self.n_queries


class RecallSettings(_Strict):
    """The recall phase (scaling.study.recall): each architecture trained on MQAR itself at several
    widths and context lengths, as in Zoology (Arora et al. 2023), where recall separates attention
    from fixed-size recurrent memories at a few hundred thousand parameters."""

    architectures: list[ArchitectureSettings] = Field(min_length=1)  # segment_lens: C at these contexts
    widths: list[int] = Field(min_length=1)  # d_model of each model; multiples of head_dim
    head_dim: int = Field(default=8, ge=1)
    layers: int = Field(default=2, ge=1)
    seq_lens: list[int] = Field(default_factory=lambda: [64], min_length=1)  # context lengths L
    # Scan block; for MLP memories (dla, titans) also the online-gradient mini-batch, the same with and
    # without caching, so an MLP memory's segment lengths must be multiples of it (the ladder uses 64).
    chunk_len: int = Field(default=8, ge=1)
    mqar: RecallMQARSettings = Field(default_factory=RecallMQARSettings)
    steps: int = Field(default=800, ge=1)
    batch_size: int = Field(default=32, ge=1)  # sequences per optimiser step
    lr: float = Field(default=1e-2, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1)
    eval_examples: int = Field(default=256, ge=1)  # held-out sequences scored at each evaluation
    eval_every_steps: Optional[int] = Field(default=None, ge=1)  # default: 4 evaluations per run
    seeds: Optional[list[int]] = Field(default=None, min_length=1)  # default: the study's seeds

    @model_validator(mode="after")
    def _consistent(self) -> "RecallSettings":
        for i, width in enumerate(self.widths):
            if width < self.head_dim or width % self.head_dim:
                raise ValueError(f"widths[{i}]: {width} is not a multiple of head_dim {self.head_dim}; use e.g. "
                                 f"{max(self.head_dim, width - width % self.head_dim)}")
        need = 2 * self.mqar.n_pairs + 2 * self.mqar.queries
        for j, length in enumerate(self.seq_lens):
            if length < need:
                raise ValueError(f"seq_lens[{j}]: {self.mqar.n_pairs} pairs and {self.mqar.queries} queries take "
                                 f"{need} tokens, more than {length}; use seq_lens >= {need} or fewer pairs")
        for i, arch in enumerate(self.architectures):
            parsed = parse_architecture(arch.name)
            if parsed.caching == "none" and arch.segment_lens:
                raise ValueError(f"architectures[{i}].segment_lens: {arch.name} does not cache segments; remove "
                                 "segment_lens or add a strategy such as +grm")
            if parsed.caching != "none" and not arch.segment_lens:
                raise ValueError(f"architectures[{i}].segment_lens: {arch.name} needs at least one segment length, "
                                 "e.g. segment_lens: [16]")
            for k, c in enumerate(arch.segment_lens):
                c_tokens = arch.log_base if c == "log" else c
                for length in self.seq_lens:
                    if c_tokens < 1 or (c != "log" and length % c_tokens) or c_tokens > length:
                        raise ValueError(f"architectures[{i}].segment_lens[{k}]: segment length {c_tokens} does not "
                                         f"divide the context length {length}; use a divisor of every seq_lens entry")
                    chunk = min(self.chunk_len, length)
                    if parsed.config_fields().get("memory") == "mlp" and c_tokens % chunk:
                        raise ValueError(f"architectures[{i}].segment_lens[{k}]: {arch.name} learns its MLP memory "
                                         f"in chunks of {chunk} tokens (recall.chunk_len); use a multiple of it")
        return self


class StudySpec(_Strict):
    name: str
    description: str = ""
    data: DataSettings = Field(default_factory=DataSettings)
    architectures: list[ArchitectureSettings] = Field(default_factory=list)  # the ladder's
    ladder: Optional[LadderSettings] = None  # optional only in a recall-only study
    budget: Optional[BudgetSettings] = None
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field(default_factory=lambda: [0], min_length=1)
    # Extra seeds of chosen ladder rungs: {size: [seeds]}; such a rung trains `seeds` and these (each once).
    seeds_at: dict[float, list[int]] = Field(default_factory=dict)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    tune: Optional[TuneSettings] = None
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    concurrency: int = Field(default=2, ge=1)
    storage: str = "./mcscale-runs"
    s3_endpoint: Optional[str] = None
    tracking_uri: Optional[str] = None
    fit: FitSettings = Field(default_factory=FitSettings)
    recall: Optional[RecallSettings] = None  # the recall phase (MQAR-trained models), run before the ladder

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not NAME_PATTERN.match(name):
            raise ValueError("use 1-63 lowercase letters, digits and dashes, starting with a letter or digit "
                             "(it becomes a path, an S3 key and an MLflow experiment name)")
        return name

    @field_validator("storage", "s3_endpoint", "tracking_uri")
    @classmethod
    def _no_secret(cls, value: Optional[str]) -> Optional[str]:
        return _refuse_secret(value)

    @field_validator("storage")
    @classmethod
    def _storage(cls, storage: str) -> str:
        text = storage.strip()
        if not text:
            raise ValueError("is empty; give a local folder (e.g. ./mcscale-runs) or s3://bucket/prefix")
        if text.startswith("s3://"):
            if not text[len("s3://"):].split("/", 1)[0]:
                raise ValueError(f"{storage!r} names no bucket; write s3://bucket or s3://bucket/prefix")
        elif "://" in text and not text.startswith("file://"):
            raise ValueError(f"{storage!r} uses a scheme mcscale cannot store results on; give a local folder "
                             "or s3://bucket/prefix")
        return storage

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint(cls, value: Optional[str]) -> Optional[str]:
        return _endpoint(value)

    @field_validator("tracking_uri")
    @classmethod
    def _tracking(cls, uri: Optional[str]) -> Optional[str]:
        if uri is None:
            return None
        if not uri.strip():
            raise ValueError("is blank; leave it out to use $MLFLOW_TRACKING_URI or the study's own SQLite store")
        scheme = urlparse(uri).scheme.split("+", 1)[0]
        if scheme not in _MLFLOW_SCHEMES:
            raise ValueError(f"scheme {scheme or '(none)'!r} is not an MLflow tracking store; use http(s)://host:port "
                             "(a tracking server), sqlite:///path/mlflow.db or postgresql+psycopg2://...")
        return uri

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds repeat: list each seed once")
        return seeds

    @field_validator("seeds_at", mode="before")
    @classmethod
    def _seeds_at(cls, value: Any) -> dict[float, list[int]]:
        return seeds_at_value(value)

    @model_validator(mode="after")
    def _segments_fit(self) -> "StudySpec":
        self._ladder_or_recall()
        check_seeds_at(self.seeds_at, self.ladder)
        seq_len = self.data.seq_len
        for i, arch in enumerate(self.architectures):
            caching = parse_architecture(arch.name).caching
            if caching == "none" and arch.segment_lens:
                raise ValueError(f"architectures[{i}].segment_lens: {arch.name} does not cache segments; "
                                 "remove segment_lens or add a strategy such as +grm")
            if caching != "none" and not arch.segment_lens:
                raise ValueError(f"architectures[{i}].segment_lens: {arch.name} needs at least one segment "
                                 "length, e.g. segment_lens: [64, 128]")
            for j, c in enumerate(arch.segment_lens):
                where = f"architectures[{i}].log_base" if c == "log" else f"architectures[{i}].segment_lens[{j}]"
                if c == "log":
                    if arch.log_base > seq_len:
                        raise ValueError(f"architectures[{i}].log_base: {arch.log_base} exceeds data.seq_len {seq_len}")
                    c = arch.log_base
                elif c < 1 or seq_len % c:
                    raise ValueError(f"architectures[{i}].segment_lens[{j}]: segment length {c} does not divide "
                                     f"data.seq_len {seq_len}; use a divisor such as {_divisor_hint(seq_len)}")
                chunk = min(64, seq_len)  # the MLP memory's online mini-batch (scaling.study.plan)
                if parse_architecture(arch.name).config_fields().get("memory") == "mlp" and c % chunk:
                    raise ValueError(f"{where}: {arch.name} learns its MLP memory "
                                     f"online in chunks of {chunk} tokens, and caching must not change that; "
                                     f"use a multiple of {chunk}, e.g. {max(chunk, c - c % chunk)}")
        needle = self.data.evals.needle
        if needle is not None:
            for j, length in enumerate(needle.lengths):
                if length > seq_len:
                    raise ValueError(f"data.evals.needle.lengths[{j}]: {length} exceeds data.seq_len {seq_len}; "
                                     "the needle task cannot fit")
        self._check_trainer()
        if self.optimizer.batch_tokens < seq_len or self.optimizer.batch_tokens % seq_len:
            raise ValueError(f"optimizer.batch_tokens: {self.optimizer.batch_tokens} is not a whole number of "
                             f"sequences of {seq_len} tokens; use a multiple of data.seq_len, e.g. "
                             f"{max(1, self.optimizer.batch_tokens // seq_len) * seq_len}")
        self._check_vocab()
        return self

    def _check_vocab(self) -> None:
        """The model's vocabulary must hold the byte tokenizer's 256 ids and the MQAR task's keys and values."""
        vocab = self.data.vocab_size
        if vocab is not None and self.data.corpus.tokenizer == "bytes" and vocab < 256:
            raise ValueError(f"data.vocab_size: {vocab} is below the byte tokenizer's 256 ids; use 256 or more, "
                             "or leave it out")
        mqar = self.data.evals.mqar
        if mqar is not None:
            room = vocab if vocab is not None else (256 if self.data.corpus.tokenizer == "bytes" else None)
            if room is not None and 1 + mqar.key_vocab + mqar.value_vocab > room:
                raise ValueError(f"data.evals.mqar: the filler, {mqar.key_vocab} keys and {mqar.value_vocab} values "
                                 f"do not fit the model's {room}-token vocabulary; use key_vocab + value_vocab <= "
                                 f"{room - 1}")


    def _ladder_or_recall(self) -> None:
        if self.ladder is None and self.recall is None:
            raise ValueError("ladder: required field is missing; add ladder: {sizes: [...]} (with architectures and "
                             "a budget), or a recall: block for a recall-only study")
        if self.ladder is not None and not self.architectures:
            raise ValueError("architectures: the ladder needs at least one architecture; list e.g. "
                             "architectures: [{name: transformer}, {name: swla+grm, segment_lens: [64]}]")
        if self.ladder is not None and self.budget is None:
            raise ValueError("budget: required field is missing; add budget: {tokens_per_param: 20} for the ladder")
        if self.ladder is None and (self.architectures or self.budget is not None):
            raise ValueError("ladder: architectures and budget describe a ladder, but there is none; add ladder: "
                             "{sizes: [...]} or remove them (the recall block lists its own architectures)")

    def _check_trainer(self) -> None:
        shapes = [("resources", self.resources)] + [(f"resources.by_size[{i}]", self.resources.merged(o))
                                                     for i, o in enumerate(self.resources.by_size)]
        micro = self.trainer.micro_batch_tokens
        for where, shape in shapes:
            if shape.gpus_per_trial > 0 and self.trainer.device == "cpu":
                raise ValueError(f"trainer.device: cpu, but {where} asks for {shape.gpus_per_trial:g} GPU(s) per "
                                 "trial, which would sit idle; use device: auto (or cuda), or set gpus_per_trial: 0")
            sequences = self.optimizer.batch_tokens // self.data.seq_len
            if sequences % shape.workers:
                raise ValueError(f"optimizer.batch_tokens: {sequences} sequences per step do not split over the "
                                 f"{shape.workers} workers of {where}; use a multiple of {shape.workers * self.data.seq_len}"
                                 " tokens")
            if isinstance(micro, int):
                share = sequences // shape.workers
                if micro % self.data.seq_len or share % (micro // self.data.seq_len or 1) or micro < self.data.seq_len:
                    raise ValueError(f"trainer.micro_batch_tokens: {micro} must be a multiple of data.seq_len "
                                     f"({self.data.seq_len}) that divides each worker's {share * self.data.seq_len} "
                                     f"tokens per step ({where}); use e.g. {self.data.seq_len} or auto")


def _divisor_hint(seq_len: int) -> str:
    return ", ".join(str(d) for d in (32, 64, 128, 256, 512) if d < seq_len and seq_len % d == 0) or "1"


_UNION_TAGS = {"bool", "int", "float", "str", "list", "dict"}  # pydantic's names of union members in an error's loc


def _format_validation_error(error: ValidationError, source: str) -> UserInputError:
    first = error.errors()[0]
    loc = [p for p in first["loc"] if not (isinstance(p, str) and (p in _UNION_TAGS or p.startswith(("literal[",
                                                                                                   "function-"))))]
    path = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return UserInputError(path, "unknown field", f"remove it or check its spelling ({source})")
    if first["type"] == "missing":
        return UserInputError(path, "required field is missing", f"add {path} to {source}")
    if path == "" and message.startswith(("architectures", "data.", "optimizer.", "trainer.", "resources", "ladder",
                                          "budget", "seeds_at")):
        field_name, _, rest = message.partition(": ")
        problem, _, fix = rest.partition("; ")
        return UserInputError(field_name, problem, fix or "see the study spec documentation in studies/")
    nested = _NESTED_FIELD.match(message)
    if path and nested:  # a block's own validator names the field inside the block
        joined = f"{path}{nested[1]}" if nested[1].startswith("[") else f"{path}.{nested[1]}"
        field_name, problem, fix = joined, nested[2], ""
        problem, _, fix = problem.partition("; ")
        return UserInputError(field_name, problem, fix or f"correct {field_name} in {source}")
    extra = f" ({len(error.errors()) - 1} more problem(s) after this one)" if len(error.errors()) > 1 else ""
    return UserInputError(path or "spec", message + extra, f"correct {path or 'the spec'} in {source}")


def parse_spec(data: Any, source: str = "the spec") -> StudySpec:
    if not isinstance(data, dict):
        raise UserInputError("spec", f"{source} is not a mapping of fields", "write the study as YAML key: value pairs")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise _format_validation_error(exc, source) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently,
    so `name:` repeated at the end of a spec would rename the study without a word)."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201 - PyYAML's signature
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_spec_text(text: str | bytes, source: str, field: str = "SPEC") -> StudySpec:
    """Validate a spec given as YAML text (a file's content, a stored spec.yaml); bad text, bad YAML
    and bad fields are all `UserInputError`s naming `source`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserInputError(field, f"{source} is not UTF-8 text (byte {exc.start} is {text[exc.start]:#04x}), so it "
                                 "is not a YAML spec", "pass a YAML study spec, e.g. studies/quickstart.yaml, "
                                 "saved as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        raise UserInputError(field, f"{source} is not valid YAML{where}" + (f" ({problem})" if problem else ""),
                             "fix the YAML syntax there") from None
    return parse_spec(data, source=source)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec; every problem is a `UserInputError` naming the field."""
    spec_path = Path(path)
    if not spec_path.is_file():
        raise UserInputError("SPEC", f"no study spec at {spec_path}" + (" (that is a folder)" if spec_path.is_dir()
                                                                          else ""),
                             "pass the path of a YAML file, e.g. studies/quickstart.yaml")
    try:
        raw = spec_path.read_bytes()
    except OSError as exc:
        raise UserInputError("SPEC", f"cannot read {spec_path}: {exc.strerror or exc}",
                             "check the file's permissions") from None
    return parse_spec_text(raw, source=str(spec_path))
