"""Calibration of the adaptive policy's constants: gamma scale and bias, and the eval-time alpha range.

After the mixing network is trained, its output only ranks inputs; the constants decide how much
of the robust model each rank gets. The rule, on held-out validation images: among the grid
``calib_alpha_lo x calib_gamma_scale x calib_gamma_bias`` (alpha range ``(lo, 1)``), the largest
clean accuracy whose robust accuracy is at least ``calib_keep`` times the robust base's under the
same attack; if none qualifies, the most robust setting.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Any, Callable, Union

import torch
from torch import nn

from robust_mix.protocol import resolve_attack
from robust_mix.config import PolicyConfig
from robust_mix.mixing import MixedClassifier
from robust_mix.train.config import AdaSmoothRecipe
from robust_mix.train.evaluation import accuracy, autoattack_accuracy, pgd_accuracy

logger = logging.getLogger(__name__)

#: ``calib_attack`` names that are not harness specs.
CALIBRATION_ALIASES = {"autoattack": "apgd-ce,apgd-t"}


def calibration_spec(calib_attack: str) -> str:
    """``calib_attack`` as the harness attack spec it names (``"pgd"`` stays ``"pgd"``); an unknown one is an error."""
    if calib_attack == "pgd":
        return calib_attack
    spec = CALIBRATION_ALIASES.get(calib_attack, calib_attack)
    try:
        resolve_attack(spec)
    except ValueError as err:
        raise ValueError(f"calib_attack must be 'pgd', 'autoattack' or a harness attack spec such as "
                         f"'standard', got {calib_attack!r}: {err}") from None
    return spec


def calibration_attack(config: AdaSmoothRecipe, images: torch.Tensor, labels: torch.Tensor,
                       device: Union[str, torch.device]) -> Callable[[nn.Module], float]:
    """The robust-accuracy measure calibration uses: PGD-CE (``"pgd"``) or the harness's attack ``calib_attack``."""
    spec = calibration_spec(config.calib_attack)
    if spec == "pgd":
        return lambda net: pgd_accuracy(net, images, labels, config.eps, config.calib_attack_steps, device=device)
    return lambda net: autoattack_accuracy(net, images, labels, config.eps, attack=spec, device=device)


def calibrate_policy(model: MixedClassifier, images: torch.Tensor, labels: torch.Tensor,
                     config: AdaSmoothRecipe, device: Union[str, torch.device] = "cpu"
                     ) -> tuple[PolicyConfig, list[dict[str, Any]]]:
    """Choose gamma scale/bias and the alpha range on validation images ``(N, C, H, W)``, ``(N,)``.

    The composite is attacked end to end (mixing network included). Leaves the chosen constants
    set on ``model.policy``.

    Returns:
        The chosen :class:`PolicyConfig` and the table of every grid point, then a summary row
        (``robust_base``, ``threshold``, ``picked``).
    """
    policy = model.policy
    base = dataclasses.replace(policy.config)
    robust_accuracy = calibration_attack(config, images, labels, device)
    robust_ref = robust_accuracy(model.robust)
    threshold = config.calib_keep * robust_ref
    logger.info("calibration: robust base %s accuracy %.4f on %d val images; threshold %.4f",
                config.calib_attack, robust_ref, len(labels), threshold)
    table = []
    for lo, scale, bias in itertools.product(config.calib_alpha_lo, config.calib_gamma_scale,
                                             config.calib_gamma_bias):
        policy.config.alpha_range, policy.config.gamma_scale, policy.config.gamma_bias = (lo, 1.0), scale, bias
        clean = accuracy(model, images, labels, device=device)
        robust = robust_accuracy(model)
        table.append({"alpha_lo": lo, "gamma_scale": scale, "gamma_bias": bias, "clean": clean, "robust": robust})
        logger.info("calibration: %s", table[-1])
    qualified = [row for row in table if row["robust"] >= threshold]
    pick = (max(qualified, key=lambda r: (r["clean"], r["robust"])) if qualified
            else max(table, key=lambda r: (r["robust"], r["clean"])))
    chosen = dataclasses.replace(base, alpha_range=(pick["alpha_lo"], 1.0), gamma_scale=pick["gamma_scale"],
                                 gamma_bias=pick["gamma_bias"])
    policy.config.alpha_range, policy.config.gamma_scale, policy.config.gamma_bias = (
        chosen.alpha_range, chosen.gamma_scale, chosen.gamma_bias)
    logger.info("calibration picked %s (robust base %.4f, threshold %.4f)", pick, robust_ref, threshold)
    table.append({"robust_base": robust_ref, "threshold": threshold, "picked": pick})
    return chosen, table
