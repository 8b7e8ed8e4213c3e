"""Validation of recipe configs: the one place that says which values a recipe accepts.

:func:`check_recipe` runs at the boundary (the CLI and every ``train_*`` entry point, before any
file is written), so inner code trusts its config. Rules are data: a field name, a test and
what was expected; cross-field rules follow. The error names the field, the value, what was
expected and how to change it (``--set field=value``).

When the project-wide validation layer (``robust_mix/validate.py``) lands, the predicates here
are the part to express through it; the rule table stays the recipe's contract.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Optional

from robust_mix.train.config import (BACKBONE_METHODS, PRECISIONS, AdaSmoothRecipe, BackboneRecipe,
                                     MixedNutsRecipe, RecipeConfig, Schedule)
from robust_mix.train.policy_calibration import calibration_spec


def _int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def positive_int(value: Any) -> bool:
    return _int(value) and value >= 1


def non_negative_int(value: Any) -> bool:
    return _int(value) and value >= 0


def positive(value: Any) -> bool:
    return _real(value) and value > 0


def non_negative(value: Any) -> bool:
    return _real(value) and value >= 0


def unit_interval(value: Any) -> bool:
    return _real(value) and 0 <= value <= 1


def optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or test(value)


def nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def one_of(options: tuple[str, ...]) -> Callable[[Any], bool]:
    return lambda value: value in options


def calib_attack_name(value: Any) -> bool:
    try:
        calibration_spec(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def nonempty_list(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, (list, tuple)) and len(value) > 0 and all(test(v) for v in value)


# (field, test, what is expected) per recipe type; inherited rules apply to subclasses.
_RULES: dict[type, list[tuple[str, Callable[[Any], bool], str]]] = {
    Schedule: [
        ("epochs", positive_int, "a positive integer"),
        ("batch_size", positive_int, "a positive integer (the global batch of one optimizer step)"),
        ("accumulation", positive_int, "a positive integer"),
        ("max_steps_per_epoch", optional(positive_int), "null or a positive integer"),
        ("lr", positive, "a positive number"),
        ("weight_decay", non_negative, "a number >= 0"),
        ("warmup_epochs", non_negative, "a number >= 0"),
        ("grad_clip", optional(positive), "null or a positive number"),
        ("precision", one_of(PRECISIONS), f"one of {list(PRECISIONS)}"),
        ("seed", non_negative_int, "an integer >= 0"),
    ],
    BackboneRecipe: [
        ("arch", lambda v: isinstance(v, str) and v.startswith("timm/") and len(v) > 5, "'timm/<arch>'"),
        ("arch_kwargs", lambda v: isinstance(v, dict), "a JSON object of timm.create_model arguments"),
        ("dataset", nonempty_str, "a data set name (robust_mix.data.available_datasets())"),
        ("method", one_of(BACKBONE_METHODS), f"one of {list(BACKBONE_METHODS)}"),
        ("eps", optional(positive), "null or a positive number"),
        ("attack_steps", positive_int, "a positive integer"),
        ("attack_step_size", optional(positive), "null or a positive number"),
        ("trades_beta", non_negative, "a number >= 0"),
        ("eval_attack_steps", positive_int, "a positive integer"),
        ("eval_subset", positive_int, "a positive integer"),
        ("augment", lambda v: isinstance(v, bool), "true or false"),
        ("augment_shift", non_negative_int, "an integer >= 0"),
        ("train_subset", optional(positive_int), "null or a positive integer"),
        ("val_subset", optional(positive_int), "null or a positive integer"),
    ],
    AdaSmoothRecipe: [
        ("standard", nonempty_str, "a base reference ('timm/...', 'robustbench/...', a .safetensors file)"),
        ("robust", nonempty_str, "a base reference ('timm/...', 'robustbench/...', a .safetensors file)"),
        ("std_scale", positive, "a positive number"),
        ("rob_scale", positive, "a positive number"),
        ("eps", positive, "a positive number (the threat model's l_inf radius, e.g. 0.03137 for 8/255)"),
        ("n_targets", lambda v: _int(v) and 0 <= v <= 9, "an integer from 0 to 9 (targeted examples per image)"),
        ("eps_lo", positive, "a positive number"),
        ("eps_hi", positive, "a positive number"),
        ("w_max", unit_interval, "a number in [0, 1]"),
        ("iter_df", positive, "a positive number (degrees of freedom of the chi-square)"),
        ("iter_min", positive_int, "a positive integer"),
        ("iter_max", positive_int, "a positive integer"),
        ("buffer_subset", optional(positive_int), "null or a positive integer"),
        ("buffer_shard", positive_int, "a positive integer"),
        ("buffer_rounds", positive_int, "a positive integer"),
        ("c_bce", non_negative, "a number >= 0"),
        ("c_ce", non_negative, "a number >= 0"),
        ("c_prod", non_negative, "a number >= 0"),
        ("clean_weight", positive, "a positive number"),
        ("ratio_bn_momentum", unit_interval, "a number in [0, 1]"),
        ("val_subset", lambda v: _int(v) and v >= 2, "an integer >= 2"),
        ("calib_images", positive_int, "a positive integer"),
        ("calib_attack_steps", positive_int, "a positive integer"),
        ("calib_attack", calib_attack_name, "'pgd', 'autoattack' or a harness attack spec such as 'standard'"),
        ("calib_keep", lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]"),
        ("calib_alpha_lo", nonempty_list(unit_interval), "a non-empty list of numbers in [0, 1]"),
        ("calib_gamma_scale", nonempty_list(positive), "a non-empty list of positive numbers"),
        ("calib_gamma_bias", nonempty_list(_real), "a non-empty list of numbers"),
    ],
    MixedNutsRecipe: [
        ("robust", nonempty_str, "a base reference"),
        ("eps", positive, "a positive number"),
        ("val_images", positive_int, "a positive integer"),
        ("attack_steps", positive_int, "a positive integer"),
        ("beta", lambda v: _real(v) and 0 < v < 100, "a number in (0, 100)"),
        ("ln_k", positive_int, "a positive integer"),
        ("scales", nonempty_list(positive), "a non-empty list of positive numbers"),
        ("powers", nonempty_list(positive), "a non-empty list of positive numbers"),
        ("biases", nonempty_list(_real), "a non-empty list of numbers"),
        ("batch_size", positive_int, "a positive integer"),
        ("seed", non_negative_int, "an integer >= 0"),
    ],
}


def _fail(config: RecipeConfig, name: str, expected: str, value: Optional[Any] = None) -> ValueError:
    shown = getattr(config, name.split(".")[0]) if value is None else value
    return ValueError(f"{type(config).__name__} field {name}={shown!r} is invalid: expected {expected}; "
                      f"change it with --set {name}=...")


def check_recipe(config: RecipeConfig) -> RecipeConfig:
    """Raise ``ValueError`` naming the first invalid field of ``config``; return ``config`` when valid."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a recipe config, got {type(config).__name__}")
    for cls in type(config).__mro__:
        for name, test, expected in _RULES.get(cls, []):
            if not test(getattr(config, name)):
                raise _fail(config, name, expected)
    if isinstance(config, Schedule) and config.batch_size % config.accumulation:
        raise _fail(config, "batch_size", f"a multiple of accumulation={config.accumulation}")
    if isinstance(config, BackboneRecipe) and config.method != "standard" and config.eps is None:
        raise _fail(config, "eps", f"a positive number: method {config.method!r} attacks at that radius")
    if isinstance(config, AdaSmoothRecipe):
        if config.eps_lo > config.eps_hi:
            raise _fail(config, "eps_lo", f"at most eps_hi={config.eps_hi}")
        if config.iter_min > config.iter_max:
            raise _fail(config, "iter_min", f"at most iter_max={config.iter_max}")
        if config.epochs % config.buffer_rounds:
            raise _fail(config, "buffer_rounds", f"a divisor of epochs={config.epochs}")
        for side in ("standard_layers", "robust_layers"):
            if not getattr(config.policy, side):
                raise _fail(config, f"policy.{side}", "the names of the base's feature layers (one per stage, "
                            "earliest first), e.g. [\"layer1\",\"layer2\"]", value=[])
        if len(config.policy.standard_layers) != len(config.policy.robust_layers):
            raise _fail(config, "policy.robust_layers",
                        f"as many layers as policy.standard_layers ({len(config.policy.standard_layers)})")
        if not config.policy.widths or not all(positive_int(w) for w in config.policy.widths):
            raise _fail(config, "policy.widths", "a non-empty list of positive integers", value=config.policy.widths)
    return config
