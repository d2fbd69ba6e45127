"""LayerNorm without affine parameters, forward and backward, for the MLP-read references.

The paper's deep memory normalises each segment's MLP output, M_i(z) = z + g * LN(W2_i act(W1_i z)),
so the norm sits inside the sum over segments; the references recompute it per segment in the
backward rather than saving a (token, segment) copy. eps matches scaling.models.memory.LN_EPS
and torch's layer_norm default.
"""

from __future__ import annotations

import torch

LN_EPS = 1e-5


def normalise(o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(LN(o), 1 / std) over the last dimension (biased variance, as torch.layer_norm)."""
    centred = o - o.mean(-1, keepdim=True)
    rstd = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + LN_EPS)
    return centred * rstd, rstd


def normalise_backward(n: torch.Tensor, rstd: torch.Tensor, grad_n: torch.Tensor) -> torch.Tensor:
    """d loss / d o from d loss / d LN(o), given n = LN(o) and rstd."""
    return rstd * (grad_n - grad_n.mean(-1, keepdim=True) - n * (grad_n * n).mean(-1, keepdim=True))
