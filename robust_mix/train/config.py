"""Recipe configs: everything a training run computes from, as data, saved as ``recipe.json``.

A recipe is a dataclass. The fields of :class:`Schedule` (epochs, global batch, accumulation,
optimizer, warm-up + cosine schedule, clipping, precision, seed) are shared by every recipe that
runs the training loop; each recipe adds its own. Library defaults are generic (the authors'
method constants where there are some); data-set defaults live with the zoo entries that use
them (``robust_mix/zoo/fmnist_recipes.py``), and named presets (:data:`PRESETS`) bundle a
configuration such as the authors' CIFAR-100 one.

How a run is executed without changing what it computes (device, data-loader workers, how
often to checkpoint, progress) is not part of the recipe (:class:`robust_mix.train.loop.RunOptions`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from robust_mix.config import CONFIG_RULES, InputConfig, PolicyConfig, from_dict
from robust_mix.io import atomic_write_text
from robust_mix.validate import (InvalidInputError, check_choice, check_eps, check_fields, check_fraction,
                                 check_input_file, check_int, check_real, check_seed, non_negative_float, parse_json,
                                 positive_float, positive_int)

PathLike = Union[str, Path]
logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
BACKBONE_METHODS = ("standard", "pgd", "trades")
MAX_TARGETS = 9  # targeted buffer examples per image: the authors' top-2 .. top-10


def _floats(check):  # a rule for a list of numbers, each checked by ``check``
    return lambda name, values: [check(name, v) for v in values]


def _int_up_to(top: int, shown: str, meaning: str) -> Callable[[str, Any], int]:
    """A rule for a whole number from 0 to ``top`` (written ``shown`` in the message, with its ``meaning``)."""
    def rule(name: str, value: Any) -> int:
        number = check_int(name, value, minimum=0)
        if number > top:
            raise InvalidInputError(f"{name} must be an integer from 0 to {shown} ({meaning}), got {value}")
        return number
    return rule


#: Type-independent range rules of recipe fields, by field name at any depth (types are checked from the
#: annotations by :func:`robust_mix.validate.check_fields`); the nested configs' own rules included.
#: Every recipe checks itself with them when built; :func:`robust_mix.train.checks.check_recipe` adds the
#: rules that need the whole recipe.
RECIPE_RULES = {
    **CONFIG_RULES,
    **dict.fromkeys(("epochs", "batch_size", "accumulation", "max_steps_per_epoch", "attack_steps",
                     "eval_attack_steps", "eval_subset", "train_subset", "val_subset", "iter_min", "iter_max",
                     "buffer_subset", "buffer_shard", "buffer_rounds", "calib_images", "calib_attack_steps",
                     "val_images", "blocks"), positive_int),
    **dict.fromkeys(("lr", "attack_step_size", "grad_clip", "iter_df", "eps_lo", "eps_hi", "clean_weight"),
                    positive_float),
    **dict.fromkeys(("weight_decay", "warmup_epochs", "c_bce", "c_ce", "c_prod", "trades_beta"), non_negative_float),
    **dict.fromkeys(("w_max", "calib_keep", "ratio_bn_momentum"), check_fraction),
    "calib_alpha_lo": _floats(check_fraction), "calib_gamma_scale": _floats(positive_float),
    # MixedNUTS' grid: s > 0 and p > 0 (a negative s reversed the robust base's ranking, p <= 0 erased it)
    "calib_gamma_bias": _floats(check_real), "scales": _floats(positive_float), "powers": _floats(positive_float),
    "biases": _floats(check_real),
    "seed": check_seed,
    "augment_shift": lambda name, value: check_int(name, value, minimum=0),
    "n_targets": _int_up_to(MAX_TARGETS, str(MAX_TARGETS),
                            "targeted examples per image: the authors' top-2 .. top-10 classes"),
    "precision": lambda name, value: check_choice(name, value, PRECISIONS),
    "method": lambda name, value: check_choice(name, value, BACKBONE_METHODS),
    "eps": lambda name, value: check_eps(value, name=name),
}


class _Checked:
    """Recipes check their fields' types and ranges when built (``BackboneRecipe(epochs=-1)`` is an error)."""

    def __post_init__(self) -> None:
        check_fields(self, RECIPE_RULES)


@dataclass
class Schedule(_Checked):
    """The training loop's settings, shared by every trained recipe.

    Attributes:
        epochs: passes over the training data.
        batch_size: the *global* batch of one optimizer step, over all processes and accumulation
            micro-batches (each process computes ``batch_size / (world_size * accumulation)`` at a time).
        accumulation: micro-batches whose gradients add up to one step.
        max_steps_per_epoch: cap on optimizer steps per epoch (``None``: the whole data set).
        lr, weight_decay: AdamW.
        warmup_epochs: linear warm-up length, then cosine decay to 0 over the remaining steps.
        grad_clip: gradient-norm clip (``None``: none).
        precision: ``"fp32"``, ``"bf16"`` (autocast, also on CPUs) or ``"fp16"`` (autocast and a
            gradient scaler); trained weights stay float32.
        seed: the one seed every random stream (initialisation, data order, per-rank augmentation
            and attacks) is derived from.
    """

    epochs: int = 10
    batch_size: int = 128
    accumulation: int = 1
    max_steps_per_epoch: Optional[int] = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    grad_clip: Optional[float] = None
    precision: str = "fp32"
    seed: int = 0


@dataclass
class BackboneRecipe(Schedule):
    """Training of a base classifier: standard, PGD adversarial (Madry et al.) or TRADES (Zhang et al.).

    Attributes:
        arch: ``timm/<arch>``; ``arch_kwargs`` go to ``timm.create_model`` (``num_classes``, ``in_chans``...).
        dataset: a :func:`robust_mix.data.open_dataset` name.
        method: ``"standard"``, ``"pgd"`` or ``"trades"``.
        eps: l_inf radius of the training and validation attacks (``pgd``, ``trades``).
        attack_steps, attack_step_size: PGD of the training attack (random start); step size
            ``None``: ``2.5 * eps / attack_steps``.
        trades_beta: weight of TRADES' KL term.
        eval_attack_steps, eval_subset: per-epoch validation PGD (steps, first val images) for
            model selection of adversarial methods.
        augment, augment_shift: random shifts of up to ``augment_shift`` pixels (zero padding)
            and horizontal flips.
        train_subset, val_subset: first images of the train / val splits used (``None``: all).
    """

    arch: str = ""
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    method: str = "standard"
    eps: Optional[float] = None
    attack_steps: int = 10
    attack_step_size: Optional[float] = None
    trades_beta: float = 6.0
    eval_attack_steps: int = 10
    eval_subset: int = 1000
    augment: bool = False
    augment_shift: int = 2
    train_subset: Optional[int] = None
    val_subset: Optional[int] = None


@dataclass
class AdaSmoothRecipe(Schedule):
    """Adaptive smoothing: the mixing network trained on two frozen base models (PAPER.md section 3).

    First a *buffer*: for every clean training image, one untargeted APGD-CE example and targeted
    APGD-DLR examples towards the composite's top-2 .. top-(1 + ``n_targets``) classes, each
    generated against the whole composite (mixing network included, unscaled alpha) with the
    adaptive objective ``(1 - w) * (CE or targeted DLR) + w * BCE(gamma, 1)``, ``w ~ U(0, w_max)``
    per example, radius ``eps * U(eps_lo, eps_hi)`` per example, random start, and an iteration
    count ``clip(round(chi2(iter_df)), iter_min, iter_max)`` per generated batch. Then the mixing
    network trains on clean:adversarial pairs 1:1 (every buffer example with its clean image). With
    ``buffer_rounds > 1`` the buffer is regenerated against the current network at the start of each
    of that many equal parts of the training.

    Attributes:
        standard, robust: base references (``timm/...``, ``robustbench/...``, ``.safetensors`` files).
        standard_input, robust_input: input adapters (resize, normalisation) of the bases; timm's
            mean/std are filled in for ``timm/`` references that declare them.
        std_scale, rob_scale: logit temperatures of the mix.
        dataset: data set name; empty: the robust base's RobustBench data set.
        eps: l_inf radius of the threat model.
        policy: the mixing network (feature layers, widths); gamma scale/bias and alpha range are
            calibrated afterwards (``calib_*``).
        buffer_subset: first training images with a buffer (``None``: all).
        init_policy: a ``policy.safetensors`` of an earlier run (same bases, same ``policy`` layout) to start
            from, e.g. to continue a trained network with more buffer rounds; empty: a fresh, seeded network.
        buffer_shard: images per buffer shard file (the unit of resuming and of work per process).
        c_bce, c_ce, c_prod, clean_weight: :func:`robust_mix.losses.mixing_training_loss` constants.
        ratio_bn_momentum: momentum of the ratio's ``BatchNorm1d`` while training (authors: 0.01).
        val_subset: validation images attacked each epoch (same attack distribution, fixed seed,
            against the current network) for the loss, detection accuracies and alpha statistics.
        calib_*: the grid of :func:`robust_mix.train.policy_calibration.calibrate_policy`. Changing
            only ``calib_*`` fields and rerunning a finished run recalibrates it without retraining.
    """

    standard: str = ""
    robust: str = ""
    standard_input: InputConfig = field(default_factory=InputConfig)
    robust_input: InputConfig = field(default_factory=InputConfig)
    std_scale: float = 1.0
    rob_scale: float = 1.0
    dataset: str = ""
    eps: Optional[float] = None
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(standard_layers=[], robust_layers=[]))
    n_targets: int = 9
    eps_lo: float = 0.4
    eps_hi: float = 1.1
    w_max: float = 0.4
    iter_df: float = 75.0
    iter_min: int = 1
    iter_max: int = 300
    buffer_subset: Optional[int] = None
    buffer_shard: int = 256
    buffer_rounds: int = 1
    init_policy: str = ""
    c_bce: float = 1.5
    c_ce: float = 0.0
    c_prod: float = 0.2
    clean_weight: float = 1.0
    ratio_bn_momentum: float = 0.01
    val_subset: int = 1000
    calib_images: int = 1000
    calib_attack_steps: int = 10
    calib_attack: str = "pgd"
    calib_keep: float = 0.95
    calib_alpha_lo: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8])
    calib_gamma_scale: list[float] = field(default_factory=lambda: [1.0, 2.0])
    calib_gamma_bias: list[float] = field(default_factory=lambda: [0.0])
    epochs: int = 3
    batch_size: int = 160
    accumulation: int = 4
    lr: float = 5e-5
    weight_decay: float = 1e-5
    warmup_epochs: float = 0.1
    grad_clip: Optional[float] = 10.0


@dataclass
class MixedNutsRecipe(_Checked):
    """MixedNUTS calibration (PAPER.md section 5) of ``robust``'s output map on the validation split.

    Attributes:
        standard, robust: base references; only the robust base's margins enter the calibration (the standard
            base, when given, is checked against the data set before any work, as the robust one is).
        dataset: data set name; empty: the robust base's RobustBench data set.
        val_images: validation images used (disjoint from the test set).
        attack_steps: APGD-CE steps (pyautoattack) against the robust base for the attacked margins.
        beta: ``q`` is the ``(100 - beta)``-th percentile of margins of correctly classified attacked inputs.
        ln_k: ``k`` of the top-k standardisation.
        scales, powers, biases: the grid of ``(s, p, c)``.
    """

    standard: str = ""
    robust: str = ""
    dataset: str = ""
    eps: Optional[float] = None
    val_images: int = 1000
    attack_steps: int = 100
    beta: float = 98.5
    ln_k: int = 250
    scales: list[float] = field(default_factory=lambda: [round(0.25 * 2 ** (i / 1.5), 4) for i in range(8)])
    powers: list[float] = field(default_factory=lambda: [round(1.0 + 0.5 * i, 2) for i in range(8)])
    biases: list[float] = field(default_factory=lambda: [round(-2.5 + 0.35 * i, 2) for i in range(8)])
    batch_size: int = 250
    seed: int = 0


RecipeConfig = Union[BackboneRecipe, AdaSmoothRecipe, MixedNutsRecipe]
RECIPE_TYPES: tuple[type, ...] = (BackboneRecipe, AdaSmoothRecipe, MixedNutsRecipe)

#: Named configurations, per recipe type: field values applied over a recipe (``--preset NAME``).
#: ``paper``: the authors' CIFAR-100 "edm" configuration (PAPER.md section 3); ``cpu``: the
#: scaled-down one the Fashion-MNIST zoo is trained with on two CPU cores. docs/training.md has
#: both side by side. The base models, data set, eps and feature layers stay the caller's.
PRESETS: dict[type, dict[str, dict[str, Any]]] = {
    AdaSmoothRecipe: {
        "paper": {
            "n_targets": 9, "iter_df": 75.0, "iter_min": 1, "iter_max": 300, "eps_lo": 0.4, "eps_hi": 1.1,
            "w_max": 0.4, "buffer_subset": None, "buffer_rounds": 1,
            "c_bce": 1.5, "c_ce": 0.0, "c_prod": 0.2, "clean_weight": 1.0, "ratio_bn_momentum": 0.01,
            "std_scale": 2.0, "rob_scale": 1.0, "policy.widths": [512, 768, 1024], "policy.blocks": 2,
            "epochs": 3, "batch_size": 160, "accumulation": 4, "lr": 5e-5, "weight_decay": 1e-5,
            "warmup_epochs": 0.1, "grad_clip": 10.0, "precision": "fp16",
        },
        "cpu": {
            "n_targets": 3, "iter_df": 10.0, "iter_min": 5, "iter_max": 20, "eps_lo": 0.4, "eps_hi": 1.1,
            "w_max": 0.4, "buffer_subset": 16000, "buffer_rounds": 2,
            "c_bce": 1.0, "c_ce": 0.5, "c_prod": 0.1, "clean_weight": 1.0, "ratio_bn_momentum": 0.1,
            "epochs": 4, "batch_size": 64, "accumulation": 1, "lr": 1e-3, "weight_decay": 1e-5,
            "warmup_epochs": 0.3, "grad_clip": 10.0, "precision": "fp32", "val_subset": 512,
        },
    },
}


def preset_names(recipe_type: type) -> list[str]:
    """The presets defined for a recipe type."""
    return sorted(PRESETS.get(recipe_type, {}))


def apply_preset(config: RecipeConfig, name: str) -> RecipeConfig:
    """A copy of ``config`` with the preset's values; an unknown preset names the known ones."""
    presets = PRESETS.get(type(config), {})
    if name not in presets:
        known = preset_names(type(config))
        raise ValueError(f"unknown preset {name!r} for {type(config).__name__}; "
                         + (f"known presets: {known}" if known else "this recipe has no presets"))
    return apply_values(config, presets[name])


def preset_differences(config: RecipeConfig, name: str) -> dict[str, tuple[Any, Any]]:
    """The preset's fields on which ``config`` differs from it: ``{field: (preset value, config value)}``.

    ``preset_differences(recipe, "paper")`` says what a recipe scaled relative to the authors' configuration.
    """
    apply_preset(config, name)  # an unknown preset is the same clear error
    data = recipe_dict(config)
    differences = {}
    for key, expected in PRESETS[type(config)][name].items():
        value: Any = data
        for part in key.split("."):
            value = value[part]
        if value != json.loads(json.dumps(expected)):
            differences[key] = (expected, value)
    return differences


def recipe_from_dict(cls: type, data: Mapping[str, Any]) -> RecipeConfig:
    """Rebuild a recipe config from JSON data (nested dataclasses included); unknown fields are an error.

    Recipes saved before a field existed load with that field's default; a legacy
    ``BackboneRecipe`` ``"adversarial": true`` reads as ``"method": "pgd"``.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    data = dict(data)
    if cls is BackboneRecipe and "adversarial" in data:
        adversarial = data.pop("adversarial")
        data.setdefault("method", "pgd" if adversarial else "standard")
    return from_dict(cls, data)


def recipe_dict(config: RecipeConfig) -> dict[str, Any]:
    """The JSON form of a recipe (tuples as lists), as ``recipe.json`` holds it."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def save_recipe(config: RecipeConfig, path: PathLike) -> None:
    """Write a recipe config as JSON, atomically."""
    atomic_write_text(path, json.dumps(recipe_dict(config), indent=2) + "\n")


def load_recipe(cls: type, path: PathLike) -> RecipeConfig:
    """Read a ``recipe.json`` written by :func:`save_recipe`.

    Raises:
        FileNotFoundError: no such file.
        robust_mix.validate.InvalidInputError: a folder (a run folder's ``recipe.json`` is named), not JSON, or a
            field unknown, missing, of another type or out of range (naming the file, the field and its value).
    """
    path = check_input_file(path, "recipe file", inside="recipe.json")
    try:
        data = parse_json(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{path} is not valid JSON ({err}); it may be truncated: write it again with "
                                "save_recipe (robust-mix train writes it into its run folder)") from None
    try:
        return recipe_from_dict(cls, data)
    except InvalidInputError as err:  # a field of another type or out of range: the recipe checks itself when built
        raise type(err)(f"{path}: {err}; correct the field, or write the recipe again with save_recipe") from None
    except (TypeError, ValueError) as err:  # not an object, unknown or missing fields
        raise InvalidInputError(f"{path}: {err}; write the recipe again with save_recipe") from None


def apply_values(config: RecipeConfig, values: Mapping[str, Any]) -> RecipeConfig:
    """A copy of ``config`` with dotted fields replaced: ``{"epochs": 3, "policy.widths": [32, 64]}``."""
    data = recipe_dict(config)
    for key, value in values.items():
        target, parts = data, key.split(".")
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                raise ValueError(f"unknown setting {key!r} for {type(config).__name__}")
            target = target[part]
        if parts[-1] not in target:
            raise ValueError(f"unknown setting {key!r} for {type(config).__name__}; valid: {sorted(target)}")
        target[parts[-1]] = copy.deepcopy(value)
    return recipe_from_dict(type(config), data)


def _overlapping(a: str, b: str) -> bool:  # the same field, or one nested in the other
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def parse_settings(settings: Sequence[str], given: Sequence[str] = ()) -> dict[str, Any]:
    """``["epochs=3", "policy.widths=[32,64]"]`` -> ``{"epochs": 3, "policy.widths": [32, 64]}``.

    Values are parsed as JSON when they parse, else kept as strings. A field set again (``lr=1e-3 ... lr=1e-4``,
    ``policy={...}`` then ``policy.widths=...``, or one of ``given``: fields a command-line flag already sets,
    e.g. ``--precision``) takes the later value, as command lines do, and a warning names both.
    """
    values: dict[str, Any] = {}
    for item in settings:
        if "=" not in item:
            raise ValueError(f"settings look like key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = parse_json(raw)
        except json.JSONDecodeError:
            value = raw
        for earlier in [*values, *given]:
            if _overlapping(key, earlier):
                source = f"--set {earlier}={json.dumps(values[earlier])}" if earlier in values else f"--{earlier}"
                logger.warning("setting %s=%s given again: it replaces the earlier %s", key, json.dumps(value),
                               source)
        values.pop(key, None)  # the later value, in the later position
        values[key] = value
    return values


def apply_settings(config: RecipeConfig, settings: Sequence[str]) -> RecipeConfig:
    """``["epochs=3", "policy.widths=[32,64]"]`` -> a copy of ``config`` with those fields replaced
    (:func:`parse_settings`: JSON values, each field once)."""
    return apply_values(config, parse_settings(settings))
