"""MixedNUTS output maps (PAPER.md section 5): training-free nonlinear mixing.

``f(x) = log((1 - a) * onehot(argmax g(x)) + a * softmax(M_h(h(x))))`` with
``M_h(z) = s * sign(u) * |u|^p``, ``u = GELU(LN_k(z) + c)``. Both maps return log-probabilities
and plug into :class:`robust_mix.MixedClassifier` as ``standard_map`` / ``robust_map``.
All in the input's dtype and device: no float64 round trips, no device hops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robust_mix.config import NutsConfig


def standardize_topk(logits: torch.Tensor, k: int) -> torch.Tensor:
    """``(z - mean) / sqrt(var + 1e-8)`` with mean and (unbiased) variance over each row's top-``k`` logits.

    Shapes: ``(B, K)`` -> ``(B, K)``; ``k >= K`` uses all classes.
    """
    top = logits if k >= logits.shape[1] else logits.topk(k, dim=1).values
    mean = top.mean(dim=1, keepdim=True)
    var = top.var(dim=1, keepdim=True)
    return (logits - mean) / (var + 1e-8).sqrt()


class NonlinearLogitMap(nn.Module):
    """The robust base's map ``log_softmax(s * sign(u) * |u|^p)``, ``u = GELU(LN_k(z) + c)``."""

    def __init__(self, scale: float, power: float, bias: float, ln_k: int = 250) -> None:
        super().__init__()
        self.scale, self.power, self.bias, self.ln_k = float(scale), float(power), float(bias), int(ln_k)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` logits -> ``(B, K)`` log-probabilities."""
        u = F.gelu(standardize_topk(logits, self.ln_k) + self.bias)
        return F.log_softmax(self.scale * u.sign() * u.abs().pow(self.power), dim=1)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, power={self.power}, bias={self.bias}, ln_k={self.ln_k}"


class HardMaxMap(nn.Module):
    """The standard base's map: ``log(onehot(argmax z))``, with a smooth surrogate for gradients.

    The exact one-hot has no gradient, so when the logits are part of an autograd graph the map
    returns ``log_softmax(surrogate_scale * LN_k(z))`` instead, which has the same argmax and is
    numerically one-hot; attacks then see a usable gradient.
    """

    def __init__(self, surrogate_scale: float = 1e6, ln_k: int = 250) -> None:
        super().__init__()
        self.surrogate_scale, self.ln_k = float(surrogate_scale), int(ln_k)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` logits -> ``(B, K)`` log-probabilities (0 at the argmax, ``-inf`` elsewhere when exact)."""
        if logits.requires_grad:
            return F.log_softmax(self.surrogate_scale * standardize_topk(logits, self.ln_k), dim=1)
        onehot = F.one_hot(logits.argmax(dim=1), logits.shape[1]).to(logits.dtype)
        return onehot.log()


def build_output_maps(config: NutsConfig) -> tuple[nn.Module, nn.Module]:
    """``(standard_map, robust_map)`` for a MixedNUTS config."""
    return (HardMaxMap(config.surrogate_scale, config.ln_k),
            NonlinearLogitMap(config.scale, config.power, config.bias, config.ln_k))
