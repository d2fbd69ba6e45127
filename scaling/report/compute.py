"""Exact FLOPs and bytes of a study's series at sizes and context lengths it never trained.

Why: "compute" on the report's axes and in its compute-optimal comparisons must be what each
architecture really costs (`scaling.models.flops`: attention's L x L products, the Memory
Caching read term, the gates), not 6 N D. Each series is shaped at any size with the study's own
ladder rule, so the extrapolated model is the architecture that was measured.
"""

from __future__ import annotations

import numpy as np

from scaling.models.flops import attention_kv_cache_bytes, forward_flops, sequence_bytes
from scaling.models.ladder import count_params
from scaling.report.schema import ContextCost
from scaling.spec import StudySpec
from scaling.study.plan import SeriesModel, model_at

#: sizes (non-embedding parameters) at which a series' FLOPs per token are counted exactly
TABLE_SIZES = tuple(float(v) for v in np.geomspace(1e3, 1e14, 23))
#: context lengths of the report's cost-per-token section
CONTEXT_LENGTHS = tuple(2 ** k for k in range(10, 18))  # 1K .. 128K tokens


class SeriesFlops:
    """Training FLOPs per token of one series as a function of non-embedding parameters.

    Counted exactly at `TABLE_SIZES` (the ladder's shape at each size), interpolated linearly in
    log-log between them and extrapolated along the end segments: exact at the table's sizes and
    smooth between, which is what the compute-optimal search needs (it differentiates log f).
    Vectorised, so `scaling.fit.compare.FlopsModel` can tabulate it in one call.
    """

    def __init__(self, spec: StudySpec, model: SeriesModel, seq_len: int | None = None,
                 sizes: tuple[float, ...] = TABLE_SIZES) -> None:
        self.series = model.series
        self.seq_len = seq_len or spec.data.seq_len
        self.__name__ = f"exact training FLOPs/token of {model.series} at L={self.seq_len} (scaling.models.flops)"
        counted = []
        for size in sizes:
            cfg = model_at(spec, size, model.base)
            counted.append(forward_flops(cfg, self.seq_len).training)
        self._log_n = np.log(np.asarray(sizes, dtype=float))
        self._log_f = np.log(np.asarray(counted, dtype=float))

    def __call__(self, params_nonembed: np.ndarray | float) -> np.ndarray:
        log_n = np.log(np.asarray(params_nonembed, dtype=float))
        out = np.interp(log_n, self._log_n, self._log_f)
        lo_slope = (self._log_f[1] - self._log_f[0]) / (self._log_n[1] - self._log_n[0])
        hi_slope = (self._log_f[-1] - self._log_f[-2]) / (self._log_n[-1] - self._log_n[-2])
        out = np.where(log_n < self._log_n[0], self._log_f[0] + lo_slope * (log_n - self._log_n[0]), out)
        out = np.where(log_n > self._log_n[-1], self._log_f[-1] + hi_slope * (log_n - self._log_n[-1]), out)
        return np.exp(out)


def context_costs(spec: StudySpec, models: dict[str, SeriesModel], size: float,
                  lengths: tuple[int, ...] = CONTEXT_LENGTHS) -> list[ContextCost]:
    """Per series, inference cost per token and memory per sequence at each context length,
    for the model of `size` non-embedding parameters; the Transformer KV cache of the same width
    and depth goes beside each row so the cache sizes can be read against it."""
    rows: list[ContextCost] = []
    for series, model in models.items():
        for length in lengths:
            cfg = model_at(spec, size, model.base).replace(seq_len=length)
            flops = forward_flops(cfg, length)
            held = sequence_bytes(cfg, length)
            rows.append(ContextCost(
                series=series, seq_len=int(length), params_nonembed=float(count_params(cfg)["params_nonembed"]),
                forward_flops_per_token=float(flops.forward), cached_read_flops_per_token=float(flops.cached_read),
                state_bytes=float(held.state_bytes), cache_bytes=float(held.cache_bytes),
                transformer_kv_cache_bytes=float(attention_kv_cache_bytes(cfg, length)),
            ))
    return rows
