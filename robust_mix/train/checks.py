"""Validation of recipe configs at the boundary: the rules that need the whole recipe.

Every recipe checks its own fields' types and ranges when it is built
(:data:`robust_mix.train.config.RECIPE_RULES` through :func:`robust_mix.validate.check_fields`,
the project's one validation layer). :func:`check_recipe` runs those again (a field may have been
set afterwards) and adds what one field cannot say: required fields the generic recipes leave
empty, and relations between fields. The CLI and every ``train_*`` entry point call it before
any file is written, so inner code trusts its config. Each error names the field, the value,
what was expected and how to change it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from robust_mix.data import NotEnoughExamplesError, open_dataset
from robust_mix.train.config import (RECIPE_RULES, AdaSmoothRecipe, BackboneRecipe, MixedNutsRecipe, RecipeConfig,
                                     Schedule)
from robust_mix.train.policy_calibration import calibration_spec
from robust_mix.validate import InvalidInputError, check_fields, check_real


def _require(ok: bool, config: RecipeConfig, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise InvalidInputError(f"{type(config).__name__}: {name} must be {expected}, got {value!r}; "
                                f"set it with --set {name}=...")


def _schedule(config: Schedule) -> None:
    _require(config.batch_size % config.accumulation == 0, config, "batch_size", config.batch_size,
             f"a multiple of accumulation={config.accumulation} (the global batch splits into micro-batches)")
    _require(config.warmup_epochs <= config.epochs, config, "warmup_epochs", config.warmup_epochs,
             f"at most epochs={config.epochs} (a longer warm-up never reaches lr and never decays)")


def _backbone(config: BackboneRecipe) -> None:
    _require(config.arch.startswith("timm/") and len(config.arch) > 5, config, "arch", config.arch,
             "'timm/<arch>', the architecture to train")
    _require(bool(config.dataset.strip()), config, "dataset", config.dataset,
             "a data set name (robust_mix.data.available_datasets())")
    _require(config.method == "standard" or config.eps is not None, config, "eps", config.eps,
             f"a positive number: method {config.method!r} attacks at that radius")


def _bases(config: Any) -> None:
    for side in ("standard", "robust") if isinstance(config, AdaSmoothRecipe) else ("robust",):
        value = getattr(config, side)
        _require(bool(value.strip()), config, side, value,
                 "a base reference ('timm/...', 'robustbench/<dataset>/<threat>/<Name>', a .safetensors file); "
                 f"or pass --{side}")
    _require(config.eps is not None, config, "eps", config.eps,
             "the threat model's l_inf radius (e.g. 0.03137 for 8/255)")


def _adasmooth(config: AdaSmoothRecipe) -> None:
    _bases(config)
    _require(config.eps_lo <= config.eps_hi, config, "eps_lo", config.eps_lo, f"at most eps_hi={config.eps_hi}")
    _require(config.iter_min <= config.iter_max, config, "iter_min", config.iter_min,
             f"at most iter_max={config.iter_max}")
    _require(config.epochs % config.buffer_rounds == 0, config, "buffer_rounds", config.buffer_rounds,
             f"a divisor of epochs={config.epochs} (each round trains as many epochs)")
    _require(config.val_subset >= 2, config, "val_subset", config.val_subset,
             "at least 2 (the mixing network's BatchNorm needs batches of 2)")
    for side in ("standard_layers", "robust_layers"):
        layers = getattr(config.policy, side)
        _require(bool(layers), config, f"policy.{side}", layers,
                 "the names of the base's feature layers, one per stage, earliest first, e.g. [\"layer1\",\"layer2\"]")
    _require(len(config.policy.standard_layers) == len(config.policy.robust_layers), config, "policy.robust_layers",
             config.policy.robust_layers, f"as many layers as policy.standard_layers ({config.policy.standard_layers})")
    _require(bool(config.policy.widths), config, "policy.widths", config.policy.widths, "a non-empty list")
    for name in ("calib_alpha_lo", "calib_gamma_scale", "calib_gamma_bias"):
        _require(bool(getattr(config, name)), config, name, getattr(config, name), "a non-empty list (the grid)")
    calibration_spec(config.calib_attack)
    if config.init_policy.strip():
        _require(Path(config.init_policy).expanduser().is_file(), config, "init_policy", config.init_policy,
                 "an existing policy.safetensors file (the mixing network of an earlier run), or empty")


def _mixednuts(config: MixedNutsRecipe) -> None:
    _bases(config)
    check_real("beta", config.beta, low=0.0, high=100.0, low_open=True, high_open=True)
    for name in ("scales", "powers", "biases"):
        _require(bool(getattr(config, name)), config, name, getattr(config, name), "a non-empty list (the grid)")


#: The whole-recipe rules of each recipe type (its bases' rules run too).
_RECIPE_CHECKS = {Schedule: _schedule, BackboneRecipe: _backbone, AdaSmoothRecipe: _adasmooth,
                  MixedNutsRecipe: _mixednuts}


def recipe_split(config: RecipeConfig, dataset: str, split: str, field: str) -> Dataset:
    """The first ``getattr(config, field)`` images of ``dataset``'s ``split`` (all when the field is ``None``).

    Every recipe opens its images here, before its run folder is written to, so that a count beyond the split
    (``buffer_subset``, ``calib_images``, ``val_images``, ...) is refused by its field's name before any work,
    never silently cut to the split's size.

    Raises:
        InvalidInputError: the field asks for more images than the split has.
    """
    count = getattr(config, field)
    try:
        return open_dataset(dataset, split, count)
    except NotEnoughExamplesError as err:
        raise InvalidInputError(f"{type(config).__name__}: {field}={count} is more than the split holds (asked for "
                                f"{err.asked} examples but {dataset} {split} has {err.available}); set it with "
                                f"--set {field}=... (at most {err.available})") from None


def check_recipe(config: RecipeConfig) -> RecipeConfig:
    """Raise ``InvalidInputError`` naming the first invalid field of ``config``; return ``config`` when valid."""
    check_fields(config, RECIPE_RULES)
    for cls in reversed(type(config).__mro__):
        if cls in _RECIPE_CHECKS:
            _RECIPE_CHECKS[cls](config)
    return config
