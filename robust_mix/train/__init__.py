"""Training and calibration recipes, one loop for all of them, on one process or many (torchrun).

Each concept has one home:

- :mod:`~robust_mix.train.config`: recipe configs (data, saved as ``recipe.json``) and presets;
- :mod:`~robust_mix.train.checks`: which values a recipe accepts;
- :mod:`~robust_mix.train.recipes`: named recipes (``robust-mix train NAME``);
- :mod:`~robust_mix.train.loop`: the one epoch loop (steps, schedule, accumulation, clipping,
  mixed precision, DDP, checkpoint/resume, logging, progress);
- :mod:`~robust_mix.train.run_dir`: the run folder (recipe, checkpoint, history, log);
- :mod:`~robust_mix.train.backbone`: base-model recipes (standard, PGD, TRADES);
- :mod:`~robust_mix.train.pair`, :mod:`~robust_mix.train.buffer`, :mod:`~robust_mix.train.adasmooth`:
  the adaptive-smoothing recipe (base pair, adversarial buffer, mixing-network training);
- :mod:`~robust_mix.train.policy_calibration`: the policy's constants;
- :mod:`~robust_mix.train.mixednuts`: MixedNUTS calibration;
- :mod:`~robust_mix.train.precision`, :mod:`~robust_mix.train.batchnorm`, :mod:`~robust_mix.train.evaluation`.

>>> from robust_mix.train import get_recipe, run_recipe
>>> run_recipe(get_recipe("fmnist-standard").config, "runs/fmnist/standard")
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from robust_mix.distributed import DistContext
from robust_mix.train.adasmooth import train_adasmooth
from robust_mix.train.backbone import build_backbone, train_backbone
from robust_mix.train.checks import check_recipe
from robust_mix.train.config import (PRESETS, AdaSmoothRecipe, BackboneRecipe, MixedNutsRecipe, RecipeConfig,
                                     Schedule, apply_preset, apply_settings, apply_values, load_recipe,
                                     preset_names, recipe_from_dict, save_recipe)
from robust_mix.train.evaluation import accuracy, autoattack_accuracy, pgd_accuracy
from robust_mix.train.loop import RunOptions, TrainingDivergedError, fit
from robust_mix.train.mixednuts import calibrate_mixednuts
from robust_mix.train.recipes import NamedRecipe, get_recipe, list_recipes, register_recipe
from robust_mix.train.run_dir import RecipeMismatchError, RunFileError, read_history

#: What runs each recipe type: one table, no branching on names.
RUNNERS: dict[type, Callable[..., dict[str, Any]]] = {
    BackboneRecipe: train_backbone,
    AdaSmoothRecipe: train_adasmooth,
    MixedNutsRecipe: calibrate_mixednuts,
}


def run_recipe(config: RecipeConfig, out: str, dist: Optional[DistContext] = None,
               options: Optional[RunOptions] = None) -> dict[str, Any]:
    """Run a recipe config into the folder ``out`` (resuming what is there); its last record or result."""
    return RUNNERS[type(config)](config, out, dist=dist, options=options)


__all__ = [
    "PRESETS", "RUNNERS", "AdaSmoothRecipe", "BackboneRecipe", "MixedNutsRecipe", "NamedRecipe", "RecipeConfig",
    "RecipeMismatchError", "RunFileError", "RunOptions", "Schedule", "TrainingDivergedError", "accuracy",
    "apply_preset", "apply_settings", "apply_values", "autoattack_accuracy", "build_backbone", "calibrate_mixednuts", "check_recipe", "fit", "get_recipe",
    "list_recipes", "load_recipe", "pgd_accuracy", "preset_names", "read_history", "recipe_from_dict",
    "register_recipe", "run_recipe", "save_recipe", "train_adasmooth", "train_backbone",
]
