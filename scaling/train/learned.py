"""Did a finished run learn anything? The one rule, shared by the trial (which records it) and the
report (which leaves such runs out of every fit, saying why).

A model that predicts every token uniformly has a loss of ln(vocab_size) nats per token (5.55 for
mcscale's 256 byte ids), and any trained model beats that on real text within a few steps. A run
that finished its budget with a validation loss no better than that (or not finite) learned
nothing, whatever its status says: at lr 30 runs "completed" at 91-542 nats, and fitting them
predicted a 70B loss of 3.4e17. Such a run is a finding about the learning rate, not a point on a
scaling law.
"""

from __future__ import annotations

import math
from typing import Any


def uniform_loss(vocab_size: int) -> float:
    """Loss in nats per token of the uniform predictor over `vocab_size` ids."""
    return math.log(vocab_size)


def not_learned_reason(val_loss: Any, vocab_size: int | None) -> str | None:
    """Why a finished run with this validation loss learned nothing, or None when it learned."""
    try:
        value = float(val_loss)
    except (TypeError, ValueError):
        return f"learned nothing: validation loss {val_loss!r} is not a number"
    if not math.isfinite(value):
        return f"learned nothing: validation loss is {value} (not finite)"
    if vocab_size and vocab_size > 1 and value >= uniform_loss(vocab_size):
        return (f"learned nothing: validation loss {value:.4g} nats is no better than the uniform predictor's "
                f"ln {vocab_size} = {uniform_loss(vocab_size):.2f}")
    return None
