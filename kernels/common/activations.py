"""Activations of an MLP memory and their derivatives, in PyTorch (the references use these)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from scaling.errors import UserInputError

ACTIVATIONS = ("silu", "gelu")


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise UserInputError("activation", f"unknown MLP memory activation {name!r}",
                             f"use one of {', '.join(ACTIVATIONS)}")
    return name


def activate(name: str, h: torch.Tensor) -> torch.Tensor:
    return F.silu(h) if name == "silu" else F.gelu(h)


def activation_grad(name: str, h: torch.Tensor) -> torch.Tensor:
    """d act / d h, elementwise."""
    if name == "silu":
        s = torch.sigmoid(h)
        return s * (1 + h * (1 - s))
    cdf = 0.5 * (1 + torch.erf(h / math.sqrt(2.0)))
    return cdf + h * torch.exp(-0.5 * h * h) / math.sqrt(2 * math.pi)
