"""Data-dependent gates of each recurrent mixer (names, initial biases, caps); no torch needed."""

from __future__ import annotations

# Online gradient descent on an MLP memory is only stable for a bounded step: the step on W2
# scales with theta * ||GELU(W_in k)||^2 and momentum m amplifies it by 1 / (1 - m). Without these
# caps, training learns its way into an exploding memory (seen at ~50 steps on tiny models),
# hidden from the loss by the per-head output norm until the gradients overflow.
MAX_INNER_LR = 0.1
MAX_MOMENTUM = 0.9

# Gate names per (mixer, memory) and their initial biases (sigmoid space). See PAPER.md:
# SWLA (eq. 28) has a retention a_t and separate write gates beta_t (current token) and
# lambda_t (previous token); DLA (eq. 30) is plain descent on the dot-product objective with a
# learning rate theta_t and no retention; Titans has retention, learning rate and momentum.
GATES: dict[tuple[str, str], dict[str, float]] = {
    ("linear", "matrix"): {},
    ("swla", "matrix"): {"retention": 3.0, "write": 0.0, "write_prev": 0.0},
    ("dla", "matrix"): {"write": 0.0},
    ("dla", "mlp"): {"lr": -2.0},
    ("titans", "mlp"): {"retention": 4.0, "lr": -2.0, "momentum": 0.0},
}
