"""Numbers as people read them in tables and reports: compact scientific notation and byte sizes.

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
