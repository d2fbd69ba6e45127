"""How the report writes a number: losses, intervals, signed differences, percentages, and
whether a compared difference is resolved.

Why one module: the verdict, the in-range section, the document's tables and the CLI's summary
must print the same value the same way; each imports this rather than each other.
"""

from __future__ import annotations

import math

from scaling.report.schema import VersusRow


#: decimals of a recall accuracy in percent, everywhere the report prints one (text, tables, figures)
ACCURACY_DIGITS = 1


def loss(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def interval(low: float | None, high: float | None, fmt=loss) -> str:  # noqa: ANN001
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "no interval (no bootstrap)"
    return f"{fmt(low)} to {fmt(high)}"


def signed(value: float | None) -> str:
    """A loss difference: 3 decimals, or 2 significant digits when it is smaller than 0.001."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if abs(value) >= 1e-3 or value == 0 else f"{value:+.1e}"


def percent(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def resolved(v: VersusRow) -> bool:
    """The difference's calibrated interval at the family-wise level (every series x target
    compared, Bonferroni) excludes zero; the plain 95% interval where no family level exists."""
    low, high = (v.family_low, v.family_high) if v.family_low is not None else (v.low, v.high)
    return low is not None and high is not None and (high < 0 or low > 0)
