"""Losses of adaptive smoothing (PAPER.md section 3): the adaptive attack's and the mixing network's.

Both take a :class:`robust_mix.MixedOutput` so that the mixing ratio's ``gamma`` is part of the
objective: an attack that ignores it under-estimates the robustness gap of an adaptive model.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from robust_mix.mixing import MixedOutput


def dlr_loss(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Untargeted difference-of-logits-ratio loss (Croce & Hein 2020), ``(B, K), (B,) -> (B,)``."""
    z_sorted, idx_sorted = log_probs.sort(dim=1)
    true = log_probs.gather(1, labels[:, None])[:, 0]
    top_is_true = (idx_sorted[:, -1] == labels).float()
    best_other = z_sorted[:, -2] * top_is_true + z_sorted[:, -1] * (1 - top_is_true)
    return -(true - best_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def dlr_loss_targeted(log_probs: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss (to maximise), ``(B, K), (B,), (B,) -> (B,)``."""
    z_sorted, _ = log_probs.sort(dim=1)
    true = log_probs.gather(1, labels[:, None])[:, 0]
    target = log_probs.gather(1, targets[:, None])[:, 0]
    return -(true - target) / (z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12)


def ratio_bce(gamma: torch.Tensor, target: Union[float, torch.Tensor]) -> torch.Tensor:
    """``BCE(sigmoid(gamma), target)`` per example, from the pre-sigmoid ``gamma`` ``(B,)``."""
    target = torch.as_tensor(target, dtype=gamma.dtype, device=gamma.device).expand_as(gamma)
    return F.binary_cross_entropy_with_logits(gamma, target, reduction="none")


def adaptive_attack_loss(out: MixedOutput, labels: torch.Tensor, *, weight: Union[float, torch.Tensor] = 0.0,
                         targets: Optional[torch.Tensor] = None, unscaled: bool = False) -> torch.Tensor:
    """The adaptive attack's objective, per example (to maximise).

    ``(1 - w) * main + w * BCE(gamma, 1)``, where ``main`` is cross-entropy, or the targeted DLR
    loss when ``targets`` are given. Maximising ``BCE(gamma, 1)`` drives the ratio towards the
    standard model, whose accuracy an attacker can exploit. Without a ``gamma`` (fixed ratio) the
    objective is ``main`` alone.

    With ``unscaled``, the BCE term takes the calibration-free logit ``out.gamma_unscaled`` in place
    of ``gamma``. The gradient of ``BCE(gamma, 1)`` fades like ``exp(-gamma)`` deep in the robust
    region, so a steep calibrated policy (large ``gamma_scale`` and ``gamma_bias``) would mute the
    very term that pushes the ratio down: an attack blunted by a monotone rescaling. The default
    is the paper's objective on the calibrated ``gamma`` (the harness's adaptive stages and the
    training buffer); ``unscaled`` is the opt-in variant for steep policies.

    Args:
        out: the model's :class:`MixedOutput`.
        labels: ``(B,)`` true classes.
        weight: ``w`` in ``[0, 1]``, a float or ``(B,)`` per-example weights.
        targets: ``(B,)`` target classes for the targeted variant.
        unscaled: use ``out.gamma_unscaled`` (when the output has one) for the BCE term.
    """
    if targets is None:
        main = F.nll_loss(out.log_probs, labels, reduction="none")
    else:
        main = dlr_loss_targeted(out.log_probs, labels, targets)
    if out.gamma is None:
        return main
    gamma = out.gamma_unscaled if unscaled and out.gamma_unscaled is not None else out.gamma
    w = torch.as_tensor(weight, dtype=main.dtype, device=main.device)
    return (1 - w) * main + w * ratio_bce(gamma, 1.0)


def mixing_training_loss(out: MixedOutput, labels: torch.Tensor, is_adversarial: torch.Tensor, *,
                         c_bce: float, c_ce: float, c_prod: float,
                         sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The mixing network's training loss (scalar mean over the batch).

    ``L = c_bce * BCE(gamma, t) + c_ce * CE(f(x), y) + c_prod * BCE * CE`` per example, with
    ``t = 1`` for adversarial and ``0`` for clean inputs.

    Args:
        out: the model's :class:`MixedOutput` (needs an adaptive policy: ``out.gamma`` set).
        labels: ``(B,)`` true classes.
        is_adversarial: ``(B,)`` bool or 0/1.
        sample_weight: optional ``(B,)`` weights (e.g. a larger weight on clean examples).
    """
    if out.gamma is None:
        raise ValueError("the mixing training loss needs an adaptive model (out.gamma is None)")
    bce = ratio_bce(out.gamma, is_adversarial.float())
    ce = F.nll_loss(out.log_probs, labels, reduction="none")
    loss = c_bce * bce + c_ce * ce + c_prod * bce * ce
    if sample_weight is not None:
        return (loss * sample_weight).sum() / sample_weight.sum()
    return loss.mean()
