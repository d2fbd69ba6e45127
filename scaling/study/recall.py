"""The recall phase: spec `recall:` block -> trials that train each architecture on MQAR itself.

Why a phase of its own: a language model ladder small enough for a laptop never learns to
recall (MQAR accuracy stays at chance in every ladder run), yet recall is what Memory Caching
is about - a fixed-size memory forgets, cached segment states restore what it lost. Trained
on the task itself (the Zoology protocol, Arora et al. 2023), models of a few ten thousand
parameters separate: attention recalls almost perfectly, a fixed-size recurrent memory does
not, and caching sits in between or above depending on the segment length C. Each trial is
an architecture x segment length x width x context length x seed; its result is the held-out
MQAR accuracy, plotted against parameters and against the exact state/cache bytes per
sequence (`scaling.models.flops.sequence_bytes`) - what caching buys and what it costs.

The trials are ordinary `PlannedTrial`s with phase ``recall``: the same Ray Tune driver,
MLflow runs and Parquet rows as the ladder, resumable the same way (stable trial ids and
config hashes). Width, context length and bytes travel as tags (MLflow) and inside the
stored config (Parquet), from which the report recomputes the bytes with the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scaling.data.recall import MQARSpec
from scaling.errors import UserInputError
from scaling.models.architectures import parse_architecture
from scaling.models.config import ModelConfig
from scaling.models.flops import sequence_bytes
from scaling.models.ladder import count_params
from scaling.spec import ArchitectureSettings, RecallSettings, StudySpec
from scaling.study.execution import TrialResources, trial_resources
from scaling.study.plan import PlannedTrial, _corpus, config_hash
from scaling.train import TrialConfig

PHASE = "recall"


def chance_levels(recall: RecallSettings) -> dict[str, float]:
    """Accuracy without recall, three ways. `in_context` (the honest floor, the report's chance
    line): guessing among the sequence's values not yet answered - each answered query reveals its
    value as the next input, and a model learns this long before it binds keys to values, so the
    i-th of q queries over n pairs is right with probability 1 / (n - i); `one_of_pairs`: 1 / n;
    `vocabulary`: 1 / value_vocab."""
    n, q = recall.mqar.n_pairs, recall.mqar.queries
    return {"in_context": sum(1.0 / (n - i) for i in range(q)) / q, "one_of_pairs": 1.0 / n,
            "vocabulary": 1.0 / recall.mqar.value_vocab}


def mqar_spec(recall: RecallSettings, seq_len: int) -> MQARSpec:
    m = recall.mqar
    return MQARSpec(n_pairs=m.n_pairs, n_queries=m.queries, key_vocab=m.key_vocab, value_vocab=m.value_vocab,
                    seq_len=seq_len)


def recall_model(recall: RecallSettings, arch: ArchitectureSettings, segment: int | str | None, width: int,
                 seq_len: int) -> ModelConfig:
    """The model of one recall trial: `recall.layers` layers of `width`, heads of `recall.head_dim`,
    a vocabulary just large enough for the task's filler, keys and values."""
    parsed = parse_architecture(arch.name)
    fields: dict[str, Any] = dict(vocab_size=mqar_spec(recall, seq_len).vocab_needed, d_model=width,
                                  n_heads=width // recall.head_dim, n_layers=recall.layers, seq_len=seq_len,
                                  chunk_len=min(recall.chunk_len, seq_len), memory_expansion=arch.memory_expansion,
                                  **parsed.config_fields())
    if parsed.caching != "none":
        fields.update(top_k=arch.top_k, segment_mode=arch.segment_mode, online_gate_init=arch.online_gate_init)
        if segment == "log":
            fields.update(segmentation="log", segment_len=arch.log_base)
        else:
            fields.update(segment_len=int(segment))  # type: ignore[arg-type]
    return ModelConfig(**fields)


def _resources(spec: StudySpec, model: ModelConfig) -> TrialResources:
    """One worker whatever the ladder's big rungs hold: a recall model is tiny (at most one GPU, or
    a share of one)."""
    shape = trial_resources(spec, model)
    return TrialResources(shape.cpus, min(1.0, shape.gpus), 1, shape.accelerator_type, shape.gpu_memory_bytes)


def _trial_config(spec: StudySpec, recall: RecallSettings, model: ModelConfig, seed: int,
                  resources: TrialResources) -> TrialConfig:
    every = recall.eval_every_steps or max(1, recall.steps // 4)
    trainer = spec.trainer
    return TrialConfig(
        model=model, corpus=_corpus(spec), task="mqar", mqar=mqar_spec(recall, model.seq_len),
        tokens=recall.steps * recall.batch_size * model.seq_len, batch_tokens=recall.batch_size * model.seq_len,
        lr=recall.lr, weight_decay=recall.weight_decay, warmup_fraction=recall.warmup_fraction,
        min_lr_ratio=spec.optimizer.min_lr_ratio, grad_clip=spec.optimizer.grad_clip, seed=seed,
        eval_every_steps=min(every, recall.steps), mqar_eval_batch=recall.eval_examples,
        threads=max(1, int(resources.cpus)), device=trainer.device, precision=trainer.precision,
        compile=trainer.compile, workers=1)


@dataclass(frozen=True)
class RecallShape:
    """What a recall trial is, beyond its series: the axes of the recall plots."""

    width: int
    seq_len: int
    params_nonembed: int
    state_bytes: float
    cache_bytes: float

    @property
    def sequence_bytes(self) -> float:
        return self.state_bytes + self.cache_bytes


def recall_shape(model: ModelConfig) -> RecallShape:
    nbytes = sequence_bytes(model)
    return RecallShape(model.d_model, model.seq_len, count_params(model)["params_nonembed"], nbytes.state_bytes,
                       nbytes.cache_bytes)


def plan_recall(spec: StudySpec) -> list[PlannedTrial]:
    """Every recall trial of the spec (none without a `recall:` block), in spec order."""
    recall = spec.recall
    if recall is None:
        return []
    seeds = recall.seeds or spec.seeds
    trials: list[PlannedTrial] = []
    for arch in recall.architectures:
        name = parse_architecture(arch.name).name
        for segment in (arch.segment_lens or [None]):
            for seq_len in recall.seq_lens:
                for width in recall.widths:
                    model = recall_model(recall, arch, segment, width, seq_len)
                    resources = _resources(spec, model)
                    for seed in seeds:
                        config = _trial_config(spec, recall, model, seed, resources)
                        trials.append(_planned(name, segment, width, seq_len, seed, config, resources))
    ids = [t.trial_id for t in trials]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise UserInputError("recall.architectures", f"the recall block lists the same trial twice ({repeated[0]})",
                             "list each architecture and segment length once")
    return trials


def _planned(arch: str, segment: int | str | None, width: int, seq_len: int, seed: int, config: TrialConfig,
             resources: TrialResources) -> PlannedTrial:
    seg = "-" if segment is None else str(segment)
    series = arch if segment is None else f"{arch}@C{segment}"
    model = config.model
    n_segments = model.n_segments() if model.caching != "none" else 1
    shape = recall_shape(model)
    size_label = f"d{width}"
    trial_id = (f"{PHASE}-{arch.replace('+', '_')}-C{seg if segment is not None else 'na'}-L{seq_len}-{size_label}"
                f"-s{seed}").lower()
    digest = config_hash(config)
    tags = {"architecture": arch, "mixer": model.mixer, "memory": model.memory, "strategy": model.caching,
            "segment_len": seg, "n_segments": str(n_segments), "size_label": size_label,
            "params_nonembed": str(shape.params_nonembed), "seed": str(seed), "phase": PHASE, "series": series,
            "config_hash": digest, "context_len": str(seq_len), "d_model": str(width),
            "state_bytes": f"{shape.state_bytes:.0f}", "cache_bytes": f"{shape.cache_bytes:.0f}",
            "sequence_bytes": f"{shape.sequence_bytes:.0f}"}
    return PlannedTrial(trial_id=trial_id, phase=PHASE, arch=arch, series=series, size_label=size_label,
                        target_params=float(shape.params_nonembed), segment_len=seg, n_segments=n_segments,
                        seed=seed, config=config, config_hash=digest, tags=tags, resources=resources)
