"""MixedNUTS calibration (PAPER.md section 5): choose the robust base's output map and the mixing ratio.

On held-out (validation) images, the robust base's margins are computed on clean inputs and on
inputs attacked with APGD-CE. For each ``(s, p, c)`` of a grid, ``q`` is the ``(100 - beta)``-th
percentile of the margins of correctly classified attacked inputs, and the objective is the
fraction of clean inputs that the robust base misclassifies with a margin of at least ``q``
(where the robust model would override a correct standard model). The best triple wins and
``a = 1 / (1 + q)``. Nothing is trained: :func:`calibrate_mixednuts` runs on rank 0 only.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Any, Optional, Union

import torch
from torch import nn

from robust_mix.config import NutsConfig, checked_from_dict
from robust_mix.data import dataset_tensors, num_classes
from robust_mix.distributed import DistContext
from robust_mix.nuts import NonlinearLogitMap
from robust_mix.train.checks import check_recipe, recipe_split
from robust_mix.train.config import MixedNutsRecipe
from robust_mix.train.loop import RunOptions
from robust_mix.train.pair import load_base, resolve_dataset
from robust_mix.train.run_dir import RunDir
from robust_mix.validate import check_alpha

logger = logging.getLogger(__name__)

RESULT_FILE = "nuts.json"


def mapped_margins(logits: torch.Tensor, scale: float, power: float, bias: float, ln_k: int = 250) -> torch.Tensor:
    """Top-1 minus top-2 probability of ``softmax(M_h(logits))``, ``(N, K) -> (N,)``."""
    probs = NonlinearLogitMap(scale, power, bias, ln_k)(logits.float()).exp()
    top2 = probs.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def attacked_margin_inputs(robust: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float,
                           steps: int = 50, batch_size: int = 250, device: Union[str, torch.device] = "cpu",
                           seed: int = 0) -> torch.Tensor:
    """APGD-CE (pyautoattack, highest-loss points) against ``robust``; ``(N, C, H, W)`` in, same out (CPU)."""
    from pyautoattack.autopgd_base import APGDAttack

    attack = APGDAttack(robust, n_iter=steps, norm="Linf", eps=eps, seed=seed, loss="ce", device=device)
    out = []
    for i in range(0, len(labels), batch_size):
        x, y = images[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        out.append(attack.perturb(x, y, best_loss=True).detach().cpu())
    return torch.cat(out)


def calibrate_nuts(clean_logits: torch.Tensor, clean_labels: torch.Tensor, adv_logits: torch.Tensor,
                   adv_labels: torch.Tensor, config: MixedNutsRecipe) -> tuple[NutsConfig, float, dict[str, Any]]:
    """Grid-search ``(s, p, c)`` from robust-base logits on clean and attacked validation inputs.

    An input counts as correctly classified when its label's logit is above every other (a tie is not).

    Args:
        clean_logits, adv_logits: ``(N, K)`` robust-base logits.
        clean_labels, adv_labels: ``(N,)`` true classes.
        config: its ``scales``, ``powers``, ``biases``, ``beta`` and ``ln_k``.

    Returns:
        ``(NutsConfig, alpha, table)`` with ``table["best"]`` the chosen row and ``table["grid"]`` all rows.

    Raises:
        ValueError: non-finite logits (naming the rows), or no attacked input classified correctly.
    """
    for what, logits in (("clean", clean_logits), ("attacked", adv_logits)):
        bad = ~torch.isfinite(logits).all(dim=1)
        if bad.any():
            rows = bad.nonzero().flatten().tolist()
            raise ValueError(f"the robust base returned NaN or infinite logits on {len(rows)} {what} validation "
                             f"input(s) (rows {rows[:8]}{' ...' if len(rows) > 8 else ''}); calibration needs "
                             "finite logits: check the model, its weights and the images")
    clean_wrong = ~_strictly_correct(clean_logits, clean_labels)
    adv_right = _strictly_correct(adv_logits, adv_labels)
    if not adv_right.any():
        raise ValueError("no attacked validation input is classified correctly by the robust base (a tie between "
                         "classes does not count); "
                         "calibration needs a robust model (check eps and the model)")
    rows = []
    for s, p, c in itertools.product(config.scales, config.powers, config.biases):
        adv_m = mapped_margins(adv_logits[adv_right], s, p, c, config.ln_k)
        q = torch.quantile(adv_m.double(), (100 - config.beta) / 100).item()
        clean_m = mapped_margins(clean_logits, s, p, c, config.ln_k)
        objective = (clean_wrong & (clean_m >= q)).float().mean().item()
        if not torch.isfinite(clean_m).all() or not torch.isfinite(adv_m).all():
            continue
        rows.append({"scale": s, "power": p, "bias": c, "q": q, "objective": objective})
    if not rows:
        raise ValueError("every (s, p, c) of the grid gave non-finite margins; narrow the grid")
    # ties: the smaller q gives the robust model more say, so prefer it
    best = min(rows, key=lambda r: (r["objective"], r["q"]))
    nuts = NutsConfig(scale=best["scale"], power=best["power"], bias=best["bias"], ln_k=config.ln_k)
    alpha = 1.0 / (1.0 + best["q"])
    logger.info("MixedNUTS calibration: best %s -> alpha %.5f (%d grid points)", best, alpha, len(rows))
    return nuts, alpha, {"best": {**best, "alpha": alpha}, "grid": rows,
                         "clean_error": clean_wrong.float().mean().item(),
                         "attacked_accuracy": adv_right.float().mean().item()}


def _strictly_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(N,)``: the label's logit is above every other class's. A tie is no correct classification (``argmax``
    would pick the lowest tied index): a robust base with constant logits counted as correct on class 0 and
    calibrated to ``a = 1``."""
    labels = labels.to(logits.device).long().reshape(-1, 1)
    own = logits.gather(1, labels).squeeze(1)
    others = logits.scatter(1, labels, float("-inf")).amax(dim=1)
    return own > others


def _logits(model: nn.Module, images: torch.Tensor, batch_size: int, device: Union[str, torch.device]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, len(images), batch_size)])


def check_result(data: dict[str, Any]) -> None:
    """A ``nuts.json`` as :func:`calibrate_mixednuts` writes it: ``nuts`` (:class:`NutsConfig`'s fields, each in its
    range), ``alpha`` (a ratio in ``[0, 1]``) and ``best`` (the chosen grid row, an object).

    Raises:
        ValueError: naming the field and its value (an ``InvalidInputError`` for a value out of range).
    """
    if set(data) != {"nuts", "alpha", "best"}:
        raise ValueError(f"holds the fields {sorted(data)}, not ['alpha', 'best', 'nuts'] as the run writes them")
    checked_from_dict(NutsConfig, data["nuts"])
    check_alpha(data["alpha"], "alpha")
    if not isinstance(data["best"], dict):
        raise ValueError(f"best must be an object (the chosen grid row), got {data['best']!r}")


def calibrate_mixednuts(config: MixedNutsRecipe, out: str, dist: Optional[DistContext] = None,
                        options: Optional[RunOptions] = None) -> dict[str, Any]:
    """Calibrate MixedNUTS on the validation split; writes ``<out>/nuts.json`` (NutsConfig + alpha).

    Returns:
        ``{"nuts": NutsConfig fields, "alpha": a, "best": the chosen grid row}`` (empty on ranks other than 0).
    """
    dist = dist or DistContext()
    check_recipe(config)
    run = RunDir(out, config, dist, outputs=(RESULT_FILE,))
    try:  # the run folder's lock is released on every way out
        if not dist.is_main:
            return {}
        if run.same_recipe and (run.path / RESULT_FILE).is_file() and (run.path / "calibration.json").is_file():
            # a finished calibration started again (calibration.json is written last)
            logger.info("%s holds the calibration of this recipe: nothing to do", run.path / RESULT_FILE)
            return run.read_json(RESULT_FILE, check_result)
        val = recipe_split(config, resolve_dataset(config.dataset, config.robust), "val", "val_images")
        images, labels = dataset_tensors(val)
        robust = load_base(config.robust, dist, images[:1].to(dist.device), num_classes(val), "robust")
        if config.standard.strip():  # not calibrated, but the mix pairs it with the robust base: it must fit the data
            load_base(config.standard, dist, images[:1].to(dist.device), num_classes(val), "standard")
        run.start()
        clean_logits = _logits(robust, images, config.batch_size, dist.device)
        adv = attacked_margin_inputs(robust, images, labels, config.eps, config.attack_steps,
                                     config.batch_size, dist.device, config.seed)
        adv_logits = _logits(robust, adv, config.batch_size, dist.device)
        nuts, alpha, table = calibrate_nuts(clean_logits, labels, adv_logits, labels, config)
        result = {"nuts": dataclasses.asdict(nuts), "alpha": alpha, "best": table["best"]}
        run.write_json(RESULT_FILE, result)
        run.write_json("calibration.json", table)
        logger.info("MixedNUTS: %s", result)
        return result
    finally:
        run.close()
