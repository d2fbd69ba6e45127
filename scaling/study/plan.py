"""Spec -> trials: the `tune` proxy runs and the `ladder` grid, each a fully specified TrialConfig.

Trial ids are stable functions of what the trial is (phase, architecture, segment length,
size, seed), so a resumed or re-run study addresses the same rows and MLflow runs instead of
creating new ones. The config hash covers the whole trial config: two trials with the same id
but different settings (an edited spec) are told apart.

Learning-rate transfer across sizes (documented rule): a learning rate tuned at the proxy
width d_proxy is used at width d as lr * (d_proxy / d) ** optimizer.lr_width_exponent
(exponent 1 is muP's rule for Adam on hidden matrices; 0 keeps the tuned value everywhere).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from scaling.data.corpus import CorpusSpec
from scaling.data.recall import MQARSpec
from scaling.models.architectures import parse_architecture
from scaling.models.config import ModelConfig
from scaling.models.ladder import format_count, honoured_shape, shape_for_params
from scaling.spec import ArchitectureSettings, StudySpec
from scaling.spec_ladder import seeds_for
from scaling.study.execution import TrialResources, execution_fields, trial_resources
from scaling.train import TrialConfig


@dataclass(frozen=True)
class PlannedTrial:
    trial_id: str
    phase: str  # "tune" or "ladder"
    arch: str  # canonical architecture name, e.g. swla+grm
    series: str  # the curve this trial belongs to, e.g. swla+grm@C64
    size_label: str
    target_params: float
    segment_len: str  # "64", "log" or "-" for architectures without caching
    n_segments: int
    seed: int
    config: TrialConfig
    config_hash: str
    tags: dict[str, str] = field(default_factory=dict)
    resources: TrialResources | None = None  # what the trial asks Ray for (per rung)


def config_hash(config: TrialConfig) -> str:
    payload = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _absolute(path: str) -> str:
    """Ray runs trials in their own folders, so local paths are pinned to where the user stands."""
    if path in ("builtin", "bytes") or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def _corpus(spec: StudySpec) -> CorpusSpec:
    c = spec.data.corpus
    return CorpusSpec(source=_absolute(c.source), format=c.format, text_field=c.text_field,
                      tokenizer=_absolute(c.tokenizer), s3_endpoint=c.s3_endpoint or spec.s3_endpoint,
                      max_bytes=c.max_bytes)


def planned_steps(trial: PlannedTrial) -> int:
    """Optimiser steps the trial will take (for progress bars and ETAs)."""
    from scaling.models.ladder import count_params

    cfg = trial.config
    budget = cfg.tokens if cfg.tokens is not None else int(cfg.tokens_per_param * count_params(cfg.model)["params_nonembed"])
    return max(1, math.ceil(budget / (cfg.batch_size() * cfg.model.seq_len)))


def _vocab_size(spec: StudySpec) -> int:
    if spec.data.vocab_size is not None:
        return spec.data.vocab_size
    if spec.data.corpus.tokenizer == "bytes":
        return 256
    from scaling.data.tokenizers import load_tokenizer

    return load_tokenizer(spec.data.corpus.tokenizer).vocab_size


def scan_chunk_tokens(seq_len: int) -> int:
    """The chunk-parallel scan's block length for a study at `seq_len` (the same with or without MC)."""
    return min(64, seq_len)


def _model_base(spec: StudySpec, arch: ArchitectureSettings, segment: int | str | None, vocab: int) -> ModelConfig:
    parsed = parse_architecture(arch.name)
    fields: dict[str, Any] = dict(vocab_size=vocab, d_model=spec.ladder.head_dim, n_heads=1,
                                  seq_len=spec.data.seq_len, chunk_len=scan_chunk_tokens(spec.data.seq_len),
                                  memory_expansion=arch.memory_expansion, **parsed.config_fields())
    if parsed.caching != "none":
        fields.update(top_k=arch.top_k, segment_mode=arch.segment_mode, online_gate_init=arch.online_gate_init)
        if segment == "log":
            fields.update(segmentation="log", segment_len=arch.log_base)
        else:
            fields.update(segment_len=int(segment))  # type: ignore[arg-type]
        # The scan chunk stays the base memory's (64): caching must not change an MLP memory's inner
        # loop; the spec refuses an MLP-memory C that is not a multiple of it.
    return ModelConfig(**fields)


def _trial_config(spec: StudySpec, model: ModelConfig, seed: int, lr: float, tokens: float | None,
                  tokens_per_param: float | None, overrides: dict[str, float] | None = None) -> TrialConfig:
    opt = spec.optimizer
    ev = spec.data.evals
    mqar = None
    if ev.mqar is not None:
        mqar = MQARSpec(n_pairs=ev.mqar.n_pairs, n_queries=ev.mqar.n_queries, key_vocab=ev.mqar.key_vocab,
                        value_vocab=ev.mqar.value_vocab, seq_len=spec.data.seq_len)
    needle = ev.needle
    resources = trial_resources(spec, model)
    fields: dict[str, Any] = dict(
        model=model, corpus=_corpus(spec), tokens=None if tokens is None else int(tokens),
        tokens_per_param=tokens_per_param, batch_tokens=opt.batch_tokens, lr=lr, min_lr_ratio=opt.min_lr_ratio,
        warmup_fraction=opt.warmup_fraction, weight_decay=opt.weight_decay, grad_clip=opt.grad_clip, seed=seed,
        eval_every_steps=ev.every_steps, eval_windows=ev.val_windows, mqar=mqar,
        needle_lengths=tuple(needle.lengths) if needle else (), needle_depths=tuple(needle.depths) if needle else (0.5,),
        needle_kind=needle.kind if needle else "passkey", threads=max(1, int(resources.cpus)),
        **execution_fields(spec, model, resources))
    fields.update(overrides or {})
    return TrialConfig(**fields)


def _segment_label(segment: int | str | None) -> str:
    return "-" if segment is None else str(segment)


def _series(arch: str, segment: int | str | None) -> str:
    return arch if segment is None else f"{arch}@C{segment}"


def _n_segments(model: ModelConfig) -> int:
    return model.n_segments() if model.caching != "none" else 1


@dataclass(frozen=True)
class SeriesModel:
    """One curve of the study (an architecture at one segment length) and its size-free model config."""

    series: str
    arch: str
    segment_len: str
    base: ModelConfig


def series_models(spec: StudySpec) -> dict[str, SeriesModel]:
    """Every series of the ladder with the base config its rungs are shaped from (in spec order).

    The report needs the exact model of a series at sizes the study never trained (1.3B, 70B) to
    count its FLOPs and cache bytes; shaping it with the study's own ladder rule keeps it the
    architecture that was measured.
    """
    vocab = _vocab_size(spec)
    out: dict[str, SeriesModel] = {}
    for arch in spec.architectures:
        name = parse_architecture(arch.name).name
        for segment in (arch.segment_lens or [None]):
            series = _series(name, segment)
            out[series] = SeriesModel(series, name, _segment_label(segment), _model_base(spec, arch, segment, vocab))
    return out


def model_at(spec: StudySpec, size: float, base: ModelConfig) -> ModelConfig:
    """The model config of the ladder rung for `size` (non-embedding parameters) built on `base`."""
    return _rung(spec, size, base).config


def tune_series(spec: StudySpec) -> list[tuple[ArchitectureSettings, int | str | None]]:
    """One tuning target per architecture: its first segment length (or none)."""
    return [(a, a.segment_lens[0] if a.segment_lens else None) for a in spec.architectures]


def plan_tune(spec: StudySpec, arch: ArchitectureSettings, segment: int | str | None) -> PlannedTrial:
    """The proxy-size trial template that the tune phase samples hyperparameters around."""
    assert spec.tune is not None
    vocab = _vocab_size(spec)
    rung = _rung(spec, spec.tune.proxy_size, _model_base(spec, arch, segment, vocab), field="tune.proxy_size")
    config = _trial_config(spec, rung.config, spec.seeds[0], spec.optimizer.lr, spec.tune.tokens, None)
    name = parse_architecture(arch.name).name
    return _planned("tune", name, segment, format_count(spec.tune.proxy_size), spec.tune.proxy_size,
                    spec.seeds[0], config, trial_resources(spec, rung.config))


def _rung(spec: StudySpec, size: float, base: ModelConfig, field: str | None = None):
    """The ladder's shape for `size`: an explicit override from the spec, else the ladder rule (which
    refuses, naming `field`, a size it cannot honour when `field` is given)."""
    from scaling.models.ladder import LadderRung, count_params

    for shape in spec.ladder.shapes:
        if shape.size == size:
            cfg = base.replace(n_layers=shape.n_layers, d_model=shape.d_model,
                               n_heads=shape.d_model // spec.ladder.head_dim, mlp_hidden=0)
            counts = count_params(cfg)
            return LadderRung(size, cfg, counts["params_nonembed"], counts["params_total"])
    if field is None:  # a size the report asks about (targets, tables): any size, no refusal
        return shape_for_params(size, base, spec.ladder.head_dim, spec.ladder.aspect, spec.ladder.aspect_weight)
    return honoured_shape(size, base, spec.ladder.head_dim, spec.ladder.aspect, spec.ladder.aspect_weight, field=field)


def plan_ladder(spec: StudySpec, tuned: dict[str, dict[str, float]] | None = None) -> list[PlannedTrial]:
    """The grid architecture x segment length x size x seed, with tuned settings carried across sizes.

    A rung listed in `seeds_at` trains `seeds` and its extra seeds (each once); the others `seeds`.

    `tuned` maps architecture name -> {"lr": ..., optional "warmup_fraction", "weight_decay",
    "proxy_width": d_model of the proxy}.
    """
    if spec.ladder is None:  # a recall-only study
        return []
    vocab = _vocab_size(spec)
    trials: list[PlannedTrial] = []
    for arch in spec.architectures:
        name = parse_architecture(arch.name).name
        for segment in (arch.segment_lens or [None]):
            base = _model_base(spec, arch, segment, vocab)
            shapes: dict[tuple[int, int], float] = {}
            for i, size in enumerate(spec.ladder.sizes):
                rung = _rung(spec, size, base, field=f"ladder.sizes[{i}]")
                shape = (rung.config.n_layers, rung.config.d_model)
                if shape in shapes:
                    from scaling.errors import UserInputError

                    raise UserInputError(
                        "ladder.sizes", f"{format_count(shapes[shape])} and {format_count(size)} give the same "
                        f"{name} shape ({shape[0]} layers x {shape[1]})",
                        "spread the sizes further apart, or use a smaller ladder.head_dim or ladder.aspect_weight")
                shapes[shape] = size
                lr, overrides = spec.optimizer.lr, {}
                if tuned and name in tuned:
                    best = tuned[name]
                    ratio = best.get("proxy_width", rung.config.d_model) / rung.config.d_model
                    lr = best["lr"] * ratio ** spec.optimizer.lr_width_exponent
                    overrides = {k: best[k] for k in ("warmup_fraction", "weight_decay") if k in best}
                for seed in seeds_for(size, spec.seeds, spec.seeds_at):
                    config = _trial_config(spec, rung.config, seed, lr, spec.budget.tokens,
                                           spec.budget.tokens_per_param, overrides)
                    trials.append(_planned("ladder", name, segment, format_count(size), size, seed, config,
                                           trial_resources(spec, rung.config)))
    ids = [t.trial_id for t in trials]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        from scaling.errors import UserInputError

        raise UserInputError("architectures", f"the spec lists the same trial twice ({duplicates[0]})",
                             "list each architecture and segment length once")
    return trials


def _planned(phase: str, arch: str, segment: int | str | None, size_label: str, size: float, seed: int,
             config: TrialConfig, resources: TrialResources) -> PlannedTrial:
    seg = _segment_label(segment)
    safe_arch = arch.replace("+", "_")
    trial_id = f"{phase}-{safe_arch}-C{seg if segment is not None else 'na'}-{size_label}-s{seed}".lower()
    model = config.model
    from scaling.models.ladder import count_params

    params = count_params(model)["params_nonembed"]
    tags = {"architecture": arch, "mixer": model.mixer, "memory": model.memory, "strategy": model.caching,
            "segment_len": seg, "n_segments": str(_n_segments(model)), "size_label": size_label,
            "params_nonembed": str(params), "seed": str(seed), "phase": phase, "series": _series(arch, segment)}
    digest = config_hash(config)
    tags["config_hash"] = digest
    return PlannedTrial(trial_id=trial_id, phase=phase, arch=arch, series=_series(arch, segment),
                        size_label=size_label, target_params=size, segment_len=seg,
                        n_segments=_n_segments(model), seed=seed, config=config, config_hash=digest, tags=tags,
                        resources=resources)
