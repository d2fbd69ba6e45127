"""The calibration suite: leave-top-rung-out backtests on the public scaling-law data.

Prints, for the plain bootstrap intervals (``before``: what mcscale printed until the calibrated
intervals landed) and for the calibrated, form-averaged intervals (``after``), the coverage of
nominal 50/80/90/95% intervals per family and pooled, the interval score, and mean/max held-out
errors, then whether the issue's targets are met. Both methods run in one process on the same
26 backtests (191 held-out points), so the tables compare like with like. See
`scaling.fit.suite` for the cases and the scores.

Run: ``python benchmarks/calibration.py`` (about 3-5 minutes on 2 cores);
``--ci`` runs the small part the tests run; ``--method after`` skips the reference.
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
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
