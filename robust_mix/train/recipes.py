"""Named recipes: ``robust-mix train NAME`` resolves NAME here, the way ``load_model`` resolves a zoo name.

The library registers one generic recipe per method (``standard``, ``pgd``, ``trades``,
``adasmooth``, ``mixednuts``: library defaults, the caller supplies the data set and models);
then the zoo's configured ones (:data:`robust_mix.zoo.TRAINING_RECIPES`: ``fmnist-standard``, ...),
each a generic recipe, an optional preset and field values. A named recipe is data: a config and
one line of help.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass

from robust_mix.train.config import (AdaSmoothRecipe, BackboneRecipe, MixedNutsRecipe, RecipeConfig, apply_preset,
                                     apply_values)
from robust_mix.zoo import TRAINING_RECIPES


@dataclass
class NamedRecipe:
    """A registered recipe: its name, default config and a one-line description."""

    name: str
    config: RecipeConfig
    help: str


_RECIPES: dict[str, NamedRecipe] = {}


def register_recipe(name: str, config: RecipeConfig, help: str) -> NamedRecipe:
    """Add a named recipe; a taken name is an error."""
    if name in _RECIPES:
        raise ValueError(f"recipe {name!r} is already registered")
    entry = NamedRecipe(name, copy.deepcopy(config), help)
    _RECIPES[name] = entry
    return entry


def list_recipes() -> list[str]:
    """Registered recipe names, sorted."""
    return sorted(_RECIPES)


def get_recipe(name: str) -> NamedRecipe:
    """A copy of the named recipe; an unknown name lists the closest ones."""
    if name not in _RECIPES:
        close = difflib.get_close_matches(name, list(_RECIPES), n=5, cutoff=0.4)
        raise KeyError(f"unknown recipe {name!r}" + (f"; did you mean {close}?" if close else "")
                       + f" (known: {list_recipes()})")
    return copy.deepcopy(_RECIPES[name])


register_recipe("standard", BackboneRecipe(method="standard"),
                "standard training of a timm classifier (set arch, arch_kwargs, dataset)")
register_recipe("pgd", BackboneRecipe(method="pgd"),
                "PGD adversarial training of a timm classifier (set arch, arch_kwargs, dataset, eps)")
register_recipe("trades", BackboneRecipe(method="trades"),
                "TRADES adversarial training of a timm classifier (set arch, arch_kwargs, dataset, eps)")
register_recipe("adasmooth", AdaSmoothRecipe(),
                "adaptive-smoothing mixing network on two frozen bases (--standard, --robust, --preset paper|cpu)")
register_recipe("mixednuts", MixedNutsRecipe(),
                "MixedNUTS calibration of the robust base's output map (--standard, --robust)")


def _configured(entry: dict) -> RecipeConfig:
    config = get_recipe(entry["recipe"]).config
    if entry.get("preset"):
        config = apply_preset(config, entry["preset"])
    return apply_values(config, entry.get("set", {}))


for _name, _entry in TRAINING_RECIPES.items():
    register_recipe(_name, _configured(_entry), _entry["help"])
