"""The calibration suite: leave-top-rung-out backtests on the public scaling-law data.

Prints, for the plain bootstrap intervals (``before``: what mcscale printed until the calibrated
intervals landed) and for the calibrated, form-averaged intervals (``after``), the coverage of
nominal 50/80/90/95% intervals per family and pooled, the interval score, and mean/max held-out
errors, then whether the issue's targets are met. Both methods run in one process on the same
26 backtests (191 held-out points), so the tables compare like with like. See
`scaling.fit.suite` for the cases and the scores.

Run: ``python benchmarks/calibration.py`` (about 10 minutes on 2 idle cores);
``--ci`` runs the small part the tests run; ``--method after`` skips the reference.

``--pairs`` backtests instead the intervals of *differences* between two series: pairs of
variants trained side by side on one grid in the public data (`scaling.fit.pair_suite`: Gadre's
three corpora, Marin's three corpora, Porian's one-choice-apart configurations), calibrated and
plain bootstrap coverage of the held-out differences side by side.

``--quickstart`` times instead the whole calibrated fit of a quickstart-shaped study (the
quickstart spec's 6 series x 5 sizes = 30 runs at 3 tokens/param, written through the real result
store by the report tests' factory, losses from a known law): every form, the nested backtests and
the 200-resample bootstraps, against the plain fit of the same runs, side by side. Target: the
calibrated fit within 60 s on 2 cores.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # tiny problems: BLAS threads only add hand-offs (see fit.py)

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling.fit import suite  # noqa: E402
from scaling.fit.calibration import calibrated_method  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("before", "after", "both"), default="both")
    parser.add_argument("--ci", action="store_true", help="only the small part CI runs")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples per fit")
    parser.add_argument("--families", default=",".join(suite.FAMILIES))
    parser.add_argument("--quickstart", action="store_true", help="time the calibrated fit of a quickstart-shaped study")
    parser.add_argument("--pairs", action="store_true", help="backtest differences between two variants on one grid "
                        "(scaling.fit.pair_suite) instead of losses")
    args = parser.parse_args(argv)
    if args.quickstart:
        return quickstart_timing(args.bootstrap)
    if args.pairs:
        from scaling.fit import pair_suite

        chosen = pair_suite.pair_cases(only=pair_suite.CI_PAIRS if args.ci else None)
        print(f"{len(chosen)} pairs of variants, {sum(len(c.pairs) for c in chosen)} held-out differences", flush=True)
        results = pair_suite.run_pairs(chosen, args.bootstrap,
                                       progress=lambda key: print(f"  done {key}", file=sys.stderr, flush=True))
        print(pair_suite.format_pairs(results))
        return 0
    selected = suite.cases(args.families.split(","), only=suite.CI_CASES if args.ci else None)
    print(f"{len(selected)} backtests, {sum(int(c.holdout_mask.sum()) for c in selected)} held-out points", flush=True)

    def progress(key: str) -> None:
        print(f"  done {key}", file=sys.stderr, flush=True)

    before = after = None
    if args.method in ("before", "both"):
        before = suite.summarise(suite.run_suite(suite.bootstrap_method(args.bootstrap), selected, progress=progress))
        print(suite.format_table(before, "BEFORE: bootstrap prediction intervals (fit spread x resampled residual)"))
    if args.method in ("after", "both"):
        after = suite.summarise(suite.run_suite(calibrated_method(args.bootstrap), selected, progress=progress))
        print(suite.format_table(after, "AFTER: calibrated, form-averaged intervals (scaling.fit.calibration)"))
    result = after or before
    assert result is not None
    print("targets:")
    for name, ok in suite.targets_met(result, before if after is not None else None).items():
        print(f"  {'MET ' if ok else 'MISS'} {name}")
    return 0


def quickstart_timing(bootstrap: int) -> int:
    """Plain fit vs calibrated fit of 30 quickstart-shaped runs, timed in one process."""
    import tempfile
    import time

    import yaml

    from scaling.fit.calibration import calibrate
    from scaling.fit.estimate import FitOptions, fit
    from scaling.report.analysis import ReportOptions, _fit_data
    from scaling.report.inputs import load_study, select_points
    from tests.report.studies import write_study

    root = Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((root / "studies" / "quickstart.yaml").read_text())
    a = {"transformer": 2000.0, "swla": 2300.0, "swla+grm@C32": 1700.0, "swla+grm@C64": 1800.0,
         "swla+ssc@C32": 1900.0, "dla+grm@C64": 2100.0}

    def loss(series: str, flops: float, tokens: float, params: float) -> float:
        return 1.9 + a[series] * flops ** -0.3

    with tempfile.TemporaryDirectory() as tmp:
        store = write_study(tmp, "quickstart", loss=loss, noise=0.01, architectures=spec["architectures"],
                            budget=spec["budget"], fit=spec["fit"])
        results = load_study(store)
        points, _ = select_points(results)
        law = ReportOptions.from_settings(results.fit_settings).the_law
        data = _fit_data(points, law)
        options = FitOptions(bootstrap=bootstrap)
        start = time.perf_counter()
        fit(data, law, shared=["E"], options=options)
        plain = time.perf_counter() - start
        start = time.perf_counter()
        model = calibrate(data, law, shared=["E"], options=options)
        calibrated = time.perf_counter() - start
    nested = sum(len(f.nested) for f in model.forms.values())
    print(f"quickstart-shaped study: {data.n_points} runs, {len(data.groups)} series, {law.name} law in "
          f"{law.features[0]}, shared E, {bootstrap} bootstrap resamples")
    print(f"  plain fit (one form, bootstrap):                      {plain:7.1f} s")
    print(f"  calibrated fit ({len(model.forms)} forms, nested backtests: {nested} points, bootstraps): "
          f"{calibrated:7.1f} s  ({calibrated / plain:.1f}x the plain fit)")
    print(f"  target: calibrated fit within 60 s on 2 cores: {'MET' if calibrated <= 60 else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
