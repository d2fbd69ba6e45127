"""Numbers as people read them in tables and reports: compact scientific notation, byte sizes,
losses, intervals, signed differences and percentages.

One place, so `mcscale fit`, `mcscale models` and the report print the same value the same way.
"""

from __future__ import annotations

import math


def sci(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, exponents without padding or '+' (1.34e9); 'n/a' for missing values."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}g}"
    return text.replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def byte_size(value: float) -> str:
    """Bytes in binary units with 3 significant digits (2.52 GiB)."""
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


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
