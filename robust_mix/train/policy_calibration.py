"""Calibration of the adaptive policy's constants: gamma scale and bias, and the eval-time alpha range.

After the mixing network is trained, its output only ranks inputs; the constants decide how much
of the robust model each rank gets. The rule, on held-out validation images: among the grid
``calib_alpha_lo x calib_gamma_scale x calib_gamma_bias`` (alpha range ``(lo, 1)``), the largest
clean accuracy whose robust accuracy is at least ``calib_keep`` times the robust base's under the
same attack; if none qualifies, the most robust setting. Grid points run side by side in worker
processes (:mod:`robust_mix.parallel`).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from robust_mix.config import PolicyConfig
from robust_mix.mixing import MixedClassifier
from robust_mix.parallel import Job, run_jobs
from robust_mix.protocol import resolve_attack
from robust_mix.stats import clopper_pearson
from robust_mix.train.config import AdaSmoothRecipe, recipe_dict, recipe_from_dict
from robust_mix.threads import usable_cpus
from robust_mix.train.evaluation import accuracy, autoattack_accuracy, pgd_accuracy
from robust_mix.train.loop import ProgressFactory

logger = logging.getLogger(__name__)

#: ``calib_attack`` names that are not harness specs.
CALIBRATION_ALIASES = {"autoattack": "apgd-ce,apgd-t"}
#: Suffix of ``calib_attack`` that adds the harness's adaptive suite (as in the plan name ``"standard+adaptive"``).
ADAPTIVE_SUFFIX = "+adaptive"


def calibration_spec(calib_attack: str) -> tuple[str, bool]:
    """``calib_attack`` as ``(harness attack spec, adaptive suite too)`` (``"pgd"`` stays ``"pgd"``);
    an unknown one is an error."""
    adaptive = calib_attack.endswith(ADAPTIVE_SUFFIX)
    name = calib_attack[: -len(ADAPTIVE_SUFFIX)] if adaptive else calib_attack
    if name == "pgd" and not adaptive:
        return name, False
    spec = CALIBRATION_ALIASES.get(name, name)
    try:
        resolve_attack(spec, adaptive)
    except ValueError as err:
        raise ValueError(f"calib_attack must be 'pgd', 'autoattack' or a harness attack spec such as "
                         f"'standard' (optionally with '{ADAPTIVE_SUFFIX}'), got {calib_attack!r}: {err}") from None
    return spec, adaptive


def measure(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AdaSmoothRecipe,
            adaptive: bool, device: Union[str, torch.device]) -> float:
    """Robust accuracy of ``net`` under the calibration attack (the adaptive suite only when ``adaptive``)."""
    spec, with_adaptive = calibration_spec(config.calib_attack)
    if spec == "pgd":
        return pgd_accuracy(net, images, labels, config.eps, config.calib_attack_steps, device=device)
    return autoattack_accuracy(net, images, labels, config.eps, attack=spec, adaptive=adaptive and with_adaptive,
                               device=device)


def _composite(recipe: dict[str, Any], policy: dict[str, torch.Tensor], sample: torch.Tensor,
               classes: int) -> MixedClassifier:
    from robust_mix.train.pair import build_mixed

    model = build_mixed(recipe_from_dict(AdaSmoothRecipe, recipe), sample, classes)
    model.load_state_dict(policy, strict=False)
    return model.eval()


def _grid_point(recipe: dict[str, Any], policy: dict[str, torch.Tensor], point: Optional[tuple[float, float, float]],
                images: torch.Tensor, labels: torch.Tensor, classes: int, emit: Callable[..., None]) -> dict[str, Any]:
    """One calibration job (run in a worker): the robust base (``point=None``) or the composite at a grid point."""
    config = recipe_from_dict(AdaSmoothRecipe, recipe)
    model = _composite(recipe, policy, images[:1], classes)
    if point is None:
        result = {"robust": measure(model.robust, images, labels, config, adaptive=False, device="cpu")}
    else:
        lo, scale, bias = point
        model.policy.config.alpha_range, model.policy.config.gamma_scale, model.policy.config.gamma_bias = (
            (lo, 1.0), scale, bias)
        result = {"alpha_lo": lo, "gamma_scale": scale, "gamma_bias": bias,
                  "clean": accuracy(model, images, labels), "robust": measure(model, images, labels, config, True, "cpu")}
    emit("done", result["robust"])
    return result


def calibrate_policy(model: MixedClassifier, images: torch.Tensor, labels: torch.Tensor,
                     config: AdaSmoothRecipe, device: Union[str, torch.device] = "cpu", *,
                     workers: Optional[int] = None,
                     progress: Optional[ProgressFactory] = None) -> tuple[PolicyConfig, list[dict[str, Any]]]:
    """Choose gamma scale/bias and the alpha range on validation images ``(N, C, H, W)``, ``(N,)``.

    The composite is attacked end to end (mixing network included; with a ``+adaptive`` attack the
    harness's adaptive suite too, and an image counts only if it survives both); the robust base,
    the reference, under the same attack without the adaptive suite. The grid points and the
    reference are independent jobs, run side by side in ``workers`` processes (default: one per
    usable CPU; on a GPU device, one, in this process). Leaves the chosen constants set on
    ``model.policy``. Each finished job logs a line; ``progress`` (the training's bar factory) also draws
    a bar over the jobs.

    Returns:
        The chosen :class:`PolicyConfig` and the table of every grid point (with the 95 %
        Clopper-Pearson interval of its robust accuracy), then a summary row (``robust_base``,
        ``threshold``, ``picked``).
    """
    policy = model.policy
    base = dataclasses.replace(policy.config)
    points = list(itertools.product(config.calib_alpha_lo, config.calib_gamma_scale, config.calib_gamma_bias))
    classes = model.num_classes or int(labels.max()) + 1
    recipe = recipe_dict(config)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k.startswith("policy.")}
    images, labels = images.cpu(), labels.cpu()
    jobs = [Job(f"calibration {'robust base' if p is None else p}", _grid_point,
                {"recipe": recipe, "policy": state, "point": p, "images": images, "labels": labels, "classes": classes})
            for p in [None, *points]]
    if workers is None:  # calibration runs on rank 0 alone, after training: every usable CPU is its own
        workers = 1 if torch.device(device).type != "cpu" else max(1, min(len(jobs), math.floor(usable_cpus())))
    logger.info("calibration: %d grid point(s) and the robust base on %d val images under %s, %d worker(s)",
                len(points), len(labels), config.calib_attack, workers)
    bar = progress("calibration", len(jobs), 0, len(labels)) if progress else None
    finished = [0]

    def on_event(index: int, kind: str, robust: float) -> None:  # a job is done: its line, and the bar moves
        finished[0] += 1
        logger.info("calibration: %s done (%d/%d): robust %.4f", jobs[index].name.removeprefix("calibration "),
                    finished[0], len(jobs), robust)
        if bar is not None:
            bar.update(1, {"robust": robust})

    try:
        results = run_jobs(jobs, workers=workers, on_event=on_event)
    finally:
        if bar is not None:
            bar.close()
    robust_ref = results[0]["robust"]
    threshold = config.calib_keep * robust_ref
    table = []
    for row in results[1:]:
        k = round(row["robust"] * len(labels))
        low, high = clopper_pearson(k, len(labels))
        table.append({**row, "robust_interval": [low, high], "n": len(labels)})
        logger.info("calibration: %s", table[-1])
    qualified = [row for row in table if row["robust"] >= threshold]
    pick = (max(qualified, key=lambda r: (r["clean"], r["robust"])) if qualified
            else max(table, key=lambda r: (r["robust"], r["clean"])))
    chosen = dataclasses.replace(base, alpha_range=(pick["alpha_lo"], 1.0), gamma_scale=pick["gamma_scale"],
                                 gamma_bias=pick["gamma_bias"])
    policy.config.alpha_range, policy.config.gamma_scale, policy.config.gamma_bias = (
        chosen.alpha_range, chosen.gamma_scale, chosen.gamma_bias)
    logger.info("calibration picked %s (robust base %.4f, threshold %.4f)", pick, robust_ref, threshold)
    table.append({"robust_base": robust_ref, "threshold": threshold, "picked": pick, "attack": config.calib_attack})
    return chosen, table
