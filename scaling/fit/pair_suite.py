"""Backtests of *differences* between two series on the public data: pairs of variants trained
side by side on one grid, their difference predicted beyond the fitted part.

Why: the calibration suite (`scaling.fit.suite`) checks intervals of losses; the report's
verdicts rest on intervals of differences between series (GRM minus Transformer). Those are drawn
jointly (`ModelAverage.loss_draws`: one form and one bootstrap resample for both series, drift
correlated as their nested errors are), and nothing had checked them. The public data hold no
pairs of architectures on one ladder, but they hold pairs of variants on one grid, which is the
same statistical situation (two series, the same sizes and budgets, one question: by how much
does one beat the other beyond the data):

* Gadre et al.: the same models trained on C4, RedPajama and RefinedWeb, all scored on C4
  validation; fit the runs up to 411M parameters, predict the larger ones (as the suite does);
* the isoFLOP collection: Marin's Llama-2 ladder on three corpora (comma, DCLM, Nemotron), the top
  budget held out;
* Porian et al.: one corpus, configurations differing in one training choice (warm-up length,
  learning-rate decay, tuned hyperparameters), the top budget held out.

Each pair is fitted jointly (two groups, nothing shared: the variants may have different floors),
calibrated, and at each held-out (N, D) both variants ran, the actual difference of the two
losses is compared with the calibrated interval of a new pair of runs' difference and, for
reference, with the plain bootstrap's (the same resample for both series).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from scaling.fit.calibration import calibrate
from scaling.fit.data import FitData, make_fit_data
from scaling.fit.estimate import FitOptions
from scaling.fit.laws import CHINCHILLA
from scaling.fit.published import data_file
from scaling.fit.suite import LEVELS

PAIR_FAMILIES: tuple[str, ...] = ("gadre", "isoflops", "porian")
_GADRE_LARGEST_FITTED = 411_616_256
_MARIN = ("marin_202603__comma__llama_2", "marin_202603__dclm__llama_2", "marin_202603__nemotron__llama_2")
#: Porian configurations compared in pairs: each pair differs in one training choice.
_PORIAN_PAIRS = (
    ("summary_df|rw|base|long|kaplan|standard|val", "summary_df|rw|base|short|kaplan|standard|val"),
    ("summary_df|rw|base|short|kaplan|standard|val", "summary_df|rw|base|short|chinchilla|standard|val"),
    ("summary_df|rw|base|short|chinchilla|standard|val", "summary_df|rw|tuned|short|const|standard|val"),
    ("summary_df_owt2|owt2|base|long|kaplan|standard|val", "summary_df_owt2|owt2|base|short|kaplan|standard|val"),
    ("summary_df_owt2|owt2|base|short|kaplan|standard|val", "summary_df_owt2|owt2|base|short|chinchilla|standard|val"),
    ("summary_df_owt2|owt2|base|short|chinchilla|standard|val", "summary_df_owt2|owt2|tuned|short|const|standard|val"),
)
#: The small part CI runs (seconds): one Gadre pair.
CI_PAIRS: tuple[str, ...] = ("gadre/c4_original-rw_original",)


@dataclass(frozen=True)
class PairCase:
    """Two variants ("a", "b") on one grid: points, which to fit, and the held-out matched pairs
    (row of a, row of b at the same N and D)."""

    family: str
    name: str
    data: FitData
    fit_mask: np.ndarray
    pairs: tuple[tuple[int, int], ...]

    @property
    def key(self) -> str:
        return f"{self.family}/{self.name}"


def _case(family: str, name: str, frame: pd.DataFrame, n: str, d: str, loss: str, held: np.ndarray,
          unit: str | None = None) -> PairCase | None:
    """``frame`` holds both variants (column ``variant``: "a" or "b"); ``held``: rows to predict."""
    nn, dd = frame[n].to_numpy(float), frame[d].to_numpy(float)
    data = make_fit_data({"params_nonembed": nn, "tokens": dd, "flops": 6.0 * nn * dd}, frame[loss].to_numpy(float),
                         group=frame["variant"].to_numpy(object),
                         unit=None if unit is None else (frame["variant"] + ":" + frame[unit].astype(str)).to_numpy(object))
    key = list(zip(np.round(np.log(nn), 6), np.round(np.log(dd), 6)))
    rows_b = {k: i for i, k in enumerate(key) if held[i] and frame["variant"].iat[i] == "b"}
    pairs = tuple((i, rows_b[k]) for i, k in enumerate(key) if held[i] and frame["variant"].iat[i] == "a" and k in rows_b)
    return PairCase(family, name, data, ~held, pairs) if pairs else None


def _label(frame: pd.DataFrame, column: str, a: str, b: str) -> pd.DataFrame:
    part = frame[frame[column].isin([a, b])].copy()
    part["variant"] = np.where(part[column] == a, "a", "b")
    return part.reset_index(drop=True)


def pair_cases(families: Sequence[str] = PAIR_FAMILIES, only: Sequence[str] | None = None) -> list[PairCase]:
    """Every pair case of ``families`` (or those whose ``family/name`` key is in ``only``)."""
    out: list[PairCase | None] = []
    if "gadre" in families:
        df = pd.read_csv(data_file("gadre2024_final_losses.csv"))
        for a, b in itertools.combinations(sorted(df["dataset"].unique()), 2):
            part = _label(df, "dataset", a, b)
            out.append(_case("gadre", f"{a}-{b}", part, "params_no_embed", "tokens", "loss_c4_val",
                             part["params"].to_numpy() > _GADRE_LARGEST_FITTED, unit="name"))
    if "isoflops" in families:
        df = pd.read_csv(data_file("isoflops_collection.csv"))
        df = df[~df["outlier"].astype(bool)]
        for a, b in itertools.combinations(_MARIN, 2):
            part = _label(df, "experiment", a, b)
            short = "-".join(x.split("__")[1] for x in (a, b))
            out.append(_case("isoflops", short, part, "params", "tokens", "loss",
                             part["budget"].to_numpy() >= part["budget"].max()))
    if "porian" in families:
        df = pd.read_csv(data_file("porian2024_isoflop_points.csv"))
        for a, b in _PORIAN_PAIRS:
            part = _label(df, "config", a, b)
            short = a.split("|")[1] + ":" + "-".join("|".join(x.split("|")[2:5]) for x in (a, b))
            out.append(_case("porian", short, part, "n", "t", "loss", part["flops"].to_numpy() >= part["flops"].max()))
    return [c for c in out if c is not None and (only is None or c.key in only)]


@dataclass
class PairResult:
    case: str
    family: str
    actual: np.ndarray  # loss of a minus loss of b, per held-out pair
    calibrated: dict[float, tuple[np.ndarray, np.ndarray]]
    bootstrap: dict[float, tuple[np.ndarray, np.ndarray]]
    seconds: float


def run_pairs(selected: Sequence[PairCase], bootstrap: int = 200, levels: Sequence[float] = LEVELS, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> list[PairResult]:
    """Calibrate each pair on its fitted part and predict its held-out differences."""
    out = []
    for case in selected:
        start = time.perf_counter()
        model = calibrate(case.data.subset(case.fit_mask), CHINCHILLA, options=FitOptions(bootstrap=bootstrap, seed=seed))
        ia = np.array([i for i, _ in case.pairs])
        ib = np.array([j for _, j in case.pairs])
        X = {k: case.data.features[k][ia] for k in ("params_nonembed", "tokens", "flops")}
        draws = model.loss_draws(["a", "b"], {"a": X, "b": X}, 4000, seed, new_run=True)
        diff = draws["a"] - draws["b"]
        res = model.primary
        boot = None
        if res.n_bootstrap:
            with np.errstate(all="ignore"):
                boot = np.atleast_2d(res.predict_draws("a", X)) - np.atleast_2d(res.predict_draws("b", X))
        cal, plain = {}, {}
        for lv in levels:
            tail = (1.0 - lv) / 2.0
            cal[lv] = tuple(np.nanquantile(diff, [tail, 1.0 - tail], axis=0))  # type: ignore[assignment]
            if boot is not None:
                plain[lv] = tuple(np.nanquantile(boot, [tail, 1.0 - tail], axis=0))  # type: ignore[assignment]
        actual = case.data.loss[ia] - case.data.loss[ib]
        out.append(PairResult(case.key, case.family, actual, cal, plain, time.perf_counter() - start))
        if progress:
            progress(case.key)
    return out


def pair_coverage(results: Sequence[PairResult], which: str = "calibrated",
                  levels: Sequence[float] = LEVELS) -> dict[str, dict[float, float]]:
    """Share of held-out differences inside their interval, per family and family-weighted."""
    families = [f for f in PAIR_FAMILIES if any(r.family == f for r in results)]
    out: dict[str, dict[float, float]] = {}
    for fam in families:
        rows = [r for r in results if r.family == fam and getattr(r, which)]
        if not rows:
            continue
        actual = np.concatenate([r.actual for r in rows])
        out[fam] = {}
        for lv in levels:
            low = np.concatenate([getattr(r, which)[lv][0] for r in rows])
            high = np.concatenate([getattr(r, which)[lv][1] for r in rows])
            out[fam][lv] = float(((actual >= low) & (actual <= high)).mean())
    if out:
        out["weighted"] = {lv: float(np.mean([c[lv] for c in out.values()])) for lv in levels}
    return out


def format_pairs(results: Sequence[PairResult], levels: Sequence[float] = LEVELS) -> str:
    """Plain-text table: coverage of held-out differences, calibrated and plain bootstrap."""
    n_pairs = {f: sum(r.actual.size for r in results if r.family == f) for f in PAIR_FAMILIES}
    n_cases = {f: sum(1 for r in results if r.family == f) for f in PAIR_FAMILIES}
    lines = ["DIFFERENCES: held-out differences between two variants on one grid (a new pair of runs)",
             f"{'family':<10}{'cases':>6}{'pairs':>7}  {'interval':<11}" + "".join(f"{f'cov {lv:.0%}':>9}" for lv in levels)]
    for which in ("calibrated", "bootstrap"):
        for fam, cov in pair_coverage(results, which, levels).items():
            cases = sum(n_cases.values()) if fam == "weighted" else n_cases[fam]
            pairs = sum(n_pairs.values()) if fam == "weighted" else n_pairs[fam]
            lines.append(f"{fam:<10}{cases:>6}{pairs:>7}  {which:<11}" + "".join(f"{cov[lv]:>9.0%}" for lv in levels))
    for which in ("calibrated", "bootstrap"):
        widths = [np.median(getattr(r, which)[0.95][1] - getattr(r, which)[0.95][0])
                  for r in results if 0.95 in getattr(r, which)]
        if widths:
            lines.append(f"median width of the 95% {which} interval of a difference: {np.median(widths):.4f} nats")
    mean_abs = np.mean([np.abs(r.actual).mean() for r in results]) if results else float("nan")
    lines.append(f"(mean |difference| of the held-out pairs {mean_abs:.4f} nats; "
                 f"{sum(r.seconds for r in results):.1f} s of fitting)")
    return "\n".join(lines)
