"""The model registry: zoo entries are :class:`ModelConfig` data, resolved by one builder.

>>> list_models("cifar100-*")
>>> model = load_model("mix", standard="timm/resnet18", robust="robustbench/cifar10/Linf/Wong2020Fast", alpha=0.9)
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import fnmatch
import logging
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from robust_mix.backbones import (ZOO_DIR, as_backbone_config, default_model_dir, load_backbone,
                                  resolve_input_config)
from robust_mix.config import ModelConfig, PolicyConfig
from robust_mix.io import load_state_dict
from robust_mix.mixing import MixedClassifier, build_adaptive_policy
from robust_mix.nuts import build_output_maps
from robust_mix.validate import InvalidInputTypeError

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, ModelConfig] = {}
_ALIASES: dict[str, str] = {}
# ModelConfig.weights keys whose loader supplies every tensor of the composite, base models included.
WeightSource = Callable[[MixedClassifier, ModelConfig, Path], None]
WeightFetch = Callable[[ModelConfig, Path], None]
_WEIGHT_SOURCES: dict[str, tuple[WeightSource, Optional[WeightFetch]]] = {}

_BUILD_ARGS = ("model_dir", "device", "pretrained")
_BACKBONE_FIELDS = ("standard", "robust")


def register_model(entry: Union[ModelConfig, Callable[[], ModelConfig]]) -> Any:
    """Add a zoo entry. Use on a :class:`ModelConfig` or as a decorator on a function returning one.

    Raises:
        ValueError: the name or an alias is already taken.
    """
    config = entry() if callable(entry) and not isinstance(entry, ModelConfig) else entry
    if not isinstance(config, ModelConfig):
        raise TypeError(f"register_model needs a ModelConfig, got {type(config).__name__}")
    for key in (config.name, *config.aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"model name {key!r} is already registered")
    _REGISTRY[config.name] = config
    _ALIASES.update({alias: config.name for alias in config.aliases})
    return entry


def register_weight_source(scheme: str, loader: WeightSource, fetch: Optional[WeightFetch] = None) -> None:
    """Make ``ModelConfig.weights[scheme]`` name a source holding the whole composite's tensors.

    ``loader(model, config, model_dir)`` fills ``model`` in place (base models included). Entries
    with such a source build their base models without the bases' own pretrained weights.
    ``fetch(config, model_dir)``, if given, runs before anything is built, so that missing files
    fail fast.
    """
    if scheme in _WEIGHT_SOURCES or scheme == "file":
        raise ValueError(f"weight source {scheme!r} is already registered")
    _WEIGHT_SOURCES[scheme] = (loader, fetch)


def list_models(pattern: str = "*", include_aliases: bool = False) -> list[str]:
    """Registered names matching a shell-style wildcard ``pattern`` (case-insensitive), sorted."""
    names = list(_REGISTRY) + (list(_ALIASES) if include_aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower()))


def is_model(name: str) -> bool:
    """True if ``name`` (or an alias) is registered."""
    return name in _REGISTRY or name in _ALIASES


def get_model_config(name: str) -> ModelConfig:
    """A copy of the entry's config; unknown names raise ``KeyError`` listing the closest ones."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY) + list(_ALIASES), n=5, cutoff=0.4)
        hint = f"; did you mean {close}?" if close else "; see robust_mix.list_models()"
        raise KeyError(f"unknown model {name!r}{hint}")
    return copy.deepcopy(_REGISTRY[key])


def apply_overrides(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """Return ``config`` with fields replaced; adaptive-policy fields (e.g. ``alpha_range``) go to the policy."""
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    policy_fields = {f.name for f in dataclasses.fields(PolicyConfig)}
    top, policy = {}, {}
    for key, value in overrides.items():
        if key in _BACKBONE_FIELDS:
            top[key] = as_backbone_config(value)
        elif key in model_fields:
            top[key] = value
        elif key in policy_fields:
            if config.policy is None:
                raise InvalidInputTypeError(f"{key!r} applies to adaptive models only; {config.name!r} has a fixed ratio")
            policy[key] = value
        else:
            raise InvalidInputTypeError(f"unknown override {key!r}; valid: "
                                        f"{sorted(model_fields | policy_fields | set(_BUILD_ARGS))}")
    if policy:
        top["policy"] = dataclasses.replace(config.policy, **policy)
    return dataclasses.replace(config, **top)


def build_model(config: ModelConfig, *, model_dir: Optional[Union[str, Path]] = None,
                device: Union[str, torch.device, None] = None, pretrained: bool = True) -> MixedClassifier:
    """Build a :class:`MixedClassifier` from its config: the one path every entry goes through.

    Raises:
        robust_mix.validate.InvalidInputError: a field has the wrong type or range, or ``alpha`` is
            ``None`` for an entry without an adaptive policy.
    """
    config.validate()
    if config.standard is None or config.robust is None:
        raise ValueError(f"{config.name!r} needs both base models: pass standard='timm/...' and "
                         "robust='robustbench/<dataset>/<threat>/<Name>' (or .safetensors paths)")
    source = next((key for key in config.weights if key in _WEIGHT_SOURCES), None)
    bases_pretrained = pretrained and source is None
    source_dir = Path(model_dir or default_model_dir())
    if source is not None and pretrained and _WEIGHT_SOURCES[source][1] is not None:
        _WEIGHT_SOURCES[source][1](config, source_dir)
    standard = load_backbone(config.standard, model_dir=model_dir, pretrained=bases_pretrained)
    robust = load_backbone(config.robust, model_dir=model_dir, pretrained=bases_pretrained)
    maps = build_output_maps(config.nuts) if config.nuts is not None else (None, None)
    # an adaptive entry's policy needs the built model to size its network; it replaces this ratio below
    model = MixedClassifier(
        standard, robust, alpha=1.0 if config.alpha is None else config.alpha,
        standard_map=maps[0], robust_map=maps[1],
        mixing=config.mixing, std_scale=config.std_scale, rob_scale=config.rob_scale,
        standard_input=resolve_input_config(config.standard, standard),
        robust_input=resolve_input_config(config.robust, robust),
        num_classes=config.num_classes, config=config)
    if config.policy is not None:
        fixed = model.alpha if config.alpha is not None else None
        model.alpha = build_adaptive_policy(model, config.policy)
        if fixed is not None:
            model.alpha = fixed
    weights = config.weights.get("file")
    if weights and pretrained:
        path = Path(weights) if Path(weights).is_absolute() else ZOO_DIR / weights
        _load_mixed_weights(model, load_state_dict(path), str(path))
    if source is not None and pretrained:
        _WEIGHT_SOURCES[source][0](model, config, source_dir)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _load_mixed_weights(model: MixedClassifier, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a file holding some of the model's tensors; the policy's tensors must all be there."""
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in own if k.startswith("policy.") and k not in state)
    if unexpected or missing:
        raise ValueError(f"{source} does not match the model: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{source} does not match the model: {err}") from err


def load_model(name: str, *, model_dir: Optional[Union[str, Path]] = None,
               device: Union[str, torch.device, None] = None, pretrained: bool = True,
               **overrides: Any) -> MixedClassifier:
    """Build a registered mixed model by name.

    Args:
        name: a registry name or alias (see :func:`list_models`), or ``"hf-hub:org/name"`` for a
            model shared with :meth:`MixedClassifier.push_to_hub`.
        model_dir: RobustBench checkpoint folder for ``robustbench/...`` bases.
        device: where to put the model.
        pretrained: load weights (``False``: random initialisation, for tests and shapes).
        **overrides: :class:`ModelConfig` fields (``alpha=0.9``, ``standard="timm/..."``,
            ``rob_scale=...``) or adaptive-policy fields (``alpha_range=(0.8, 1.0)``).

    Example:
        >>> load_model("mix", standard="timm/resnet18", robust="robustbench/cifar10/Linf/Wong2020Fast", alpha=0.9)
    """
    if name.startswith("hf-hub:"):  # a model saved with save_pretrained / push_to_hub
        from robust_mix.hub import from_pretrained  # late: hub imports this module

        return from_pretrained(name, device=device, pretrained=pretrained, **overrides)
    config = apply_overrides(get_model_config(name), overrides)
    return build_model(config, model_dir=model_dir, device=device, pretrained=pretrained)
