"""MixedNUTS output maps (PAPER.md section 5): training-free nonlinear mixing.

``f(x) = log((1 - a) * onehot(argmax g(x)) + a * softmax(M_h(h(x))))`` with
``M_h(z) = s * sign(u) * |u|^p``, ``u = GELU(LN_k(z) + c)``. Both maps return log-probabilities
and plug into :class:`robust_mix.MixedClassifier` as ``standard_map`` / ``robust_map``.
They compute on the input's device in at least float32 (float64 stays float64), as
:func:`robust_mix.mixing.mix_log_probs` does: no float64 round trips, no device hops, and half-precision
logits neither overflow (``|u|^p``, the surrogate's large multiple) nor lose the variance's ``1e-8`` floor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robust_mix.config import NutsConfig
from robust_mix.validate import check_ln_k, check_real, positive_float


def _working(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` in at least float32 (float16/bfloat16 overflow in the maps: a variance over 65504, ``|u|^p``)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def standardize_topk(logits: torch.Tensor, k: int) -> torch.Tensor:
    """``(z - mean) / sqrt(var + 1e-8)`` with mean and (unbiased) variance over each row's top-``k`` logits.

    Shapes: ``(B, K)`` -> ``(B, K)`` in at least float32; ``k >= K`` uses all classes; ``k`` must be at least 2.
    Each row is divided by its largest magnitude first, so the variance of very large logits (``1e20``) does not
    overflow to ``inf`` (which made every class equally likely) and the result is the formula's. The scaled floor
    ``1e-8 / size^2`` underflows to 0 in float32 from ``size`` ~ 1e19 on, so the denominator is taken as
    ``hypot(sqrt(var), 1e-4 / size)``, the same number without the square (a row of equal logits that large was
    ``0 / 0 = NaN``).
    """
    k = check_ln_k("ln_k", k)
    z = _working(logits)
    size = z.abs().amax(dim=1, keepdim=True)
    size = torch.where(size > 0, size, torch.ones_like(size))  # a row of zeros stays zeros
    z = z / size
    top = z if k >= z.shape[1] else z.topk(k, dim=1).values
    mean = top.mean(dim=1, keepdim=True)
    var = top.var(dim=1, keepdim=True)
    # (z - mean) / sqrt(var + 1e-8) of the unscaled row, written for the scaled one; sqrt(var) is taken only where
    # var > 0 (its derivative is inf at 0, and 0 * inf a NaN gradient for a row of equal logits)
    spread = torch.where(var > 0, torch.where(var > 0, var, torch.ones_like(var)).sqrt(), torch.zeros_like(var))
    return (z - mean) / torch.hypot(spread, 1e-4 / size)


class NonlinearLogitMap(nn.Module):
    """The robust base's map ``log_softmax(s * sign(u) * |u|^p)``, ``u = GELU(LN_k(z) + c)``; ``s > 0``, ``p > 0``,
    ``c`` finite, ``k >= 2``."""

    def __init__(self, scale: float, power: float, bias: float, ln_k: int = 250) -> None:
        super().__init__()
        # s <= 0 reverses or erases the robust base's ranking, p <= 0 flattens it: refused, not mapped
        self.scale, self.power = positive_float("scale", scale), positive_float("power", power)
        self.bias, self.ln_k = check_real("bias", bias), check_ln_k("ln_k", ln_k)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` logits -> ``(B, K)`` log-probabilities (at least float32)."""
        u = F.gelu(standardize_topk(logits, self.ln_k) + self.bias)
        # |u|^p differentiates to p |u|^(p - 1), inf at u = 0 for p < 1 (GELU of a low logit is 0 in float32), and
        # times sign(0) = 0 that was a NaN gradient; from the smallest normal float on the value is the same
        magnitude = u.abs().clamp_min(torch.finfo(u.dtype).tiny).pow(self.power)
        return F.log_softmax(self.scale * u.sign() * magnitude, dim=1)

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
        self.surrogate_scale, self.ln_k = float(surrogate_scale), check_ln_k("ln_k", ln_k)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` logits -> ``(B, K)`` log-probabilities in at least float32 (0 at the argmax, ``-inf``
        elsewhere when exact)."""
        if logits.requires_grad:
            return F.log_softmax(self.surrogate_scale * standardize_topk(logits, self.ln_k), dim=1)
        onehot = F.one_hot(logits.argmax(dim=1), logits.shape[1]).to(_working(logits).dtype)
        return onehot.log()


def build_output_maps(config: NutsConfig) -> tuple[nn.Module, nn.Module]:
    """``(standard_map, robust_map)`` for a MixedNUTS config."""
    return (HardMaxMap(config.surrogate_scale, config.ln_k),
            NonlinearLogitMap(config.scale, config.power, config.bias, config.ln_k))
