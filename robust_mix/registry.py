"""The model registry: names (and aliases) to :class:`ModelConfig` entries, nothing else.

Entries are data; :meth:`robust_mix.MixedClassifier.from_config` is the one place a config
becomes a model, and :func:`robust_mix.load_model` ties the two together.

>>> list_models("cifar100-*")
>>> get_model_config("fmnist-adasmooth").policy.alpha_range
>>> model_label(get_model_config("fmnist-robust").with_overrides({"alpha": 0.9}))  # 'fmnist-robust,alpha=0.9'
"""
from __future__ import annotations

import copy
import difflib
import fnmatch
import logging
from typing import Any, Callable, Optional, Union

from robust_mix.config import ModelConfig, check_entry_name, config_overrides, override_text, split_overrides

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, ModelConfig] = {}
_ALIASES: dict[str, str] = {}
Listener = Callable[[ModelConfig], None]
_LISTENERS: list[Listener] = []


def register_model(entry: Union[ModelConfig, Callable[[], ModelConfig]]) -> Any:
    """Add a zoo entry. Use on a :class:`ModelConfig` or as a decorator on a function returning one.

    The registry keeps a copy: changing the config afterwards does not change the entry.

    Raises:
        ValueError: the name or an alias is already taken, or cannot be written as a NAME
            (:func:`robust_mix.config.check_entry_name`), or a listener (:func:`on_register`, such as the timm
            mirror) refuses the entry; the entry is then not registered.
    """
    config = entry() if callable(entry) and not isinstance(entry, ModelConfig) else entry
    if not isinstance(config, ModelConfig):
        raise TypeError(f"register_model needs a ModelConfig, got {type(config).__name__}")
    config = copy.deepcopy(config)
    for key in (config.name, *config.aliases):
        check_entry_name(key)
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"model name {key!r} is already registered")
    _REGISTRY[config.name] = config
    _ALIASES.update({alias: config.name for alias in config.aliases})
    try:
        for listener in list(_LISTENERS):
            listener(copy.deepcopy(config))
    except Exception:
        del _REGISTRY[config.name]
        for alias in config.aliases:
            _ALIASES.pop(alias, None)
        raise
    return entry


def on_register(listener: Listener, *, replay: bool = True) -> None:
    """Call ``listener(config)`` for every entry registered from now on (and, with ``replay``, for
    those already registered): how other registries (timm's) mirror this one."""
    _LISTENERS.append(listener)
    if replay:
        for config in list(_REGISTRY.values()):
            listener(copy.deepcopy(config))


def list_models(pattern: str = "*", include_aliases: bool = False) -> list[str]:
    """Registered names matching a shell-style wildcard ``pattern`` (case-insensitive), sorted."""
    names = list(_REGISTRY) + (list(_ALIASES) if include_aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower()))


def is_model(name: str) -> bool:
    """True if ``name`` (or an alias) is registered."""
    return name in _REGISTRY or name in _ALIASES


def canonical_name(name: str) -> str:
    """The entry's registered name for a name or alias (``KeyError`` if unknown, see :func:`get_model_config`)."""
    return get_model_config(name).name


def get_model_config(name: str) -> ModelConfig:
    """A copy of the entry's config; unknown names raise ``KeyError`` listing the closest ones."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise KeyError(unknown_model_message(name))
    return copy.deepcopy(_REGISTRY[key])


def unknown_model_message(name: str) -> str:
    """``unknown model 'x'; did you mean [...]?``: the closest registered names."""
    names = list(_REGISTRY) + list(_ALIASES)
    by_lower = {n.lower(): n for n in names}  # names are case-sensitive; suggest across case
    close = [by_lower[n] for n in difflib.get_close_matches(name.lower(), list(by_lower), n=5, cutoff=0.4)]
    hint = f"; did you mean {close}?" if close else "; see robust_mix.list_models()"
    return f"unknown model {name!r}{hint}"


def model_label(config: ModelConfig) -> str:
    """What a report calls the model ``config`` builds, in the NAME syntax that loads it again: the entry's name
    plus ``,key=value`` for each field that differs from the registered entry of that name
    (``"fmnist-robust,alpha=0.9"``); the name alone for the entry itself or a config no entry is registered as.

    The one name of a model in reports (``benchmark()``), and what a report is matched against
    (:func:`report_names`, :func:`labelled_config`).
    """
    entry = _REGISTRY.get(config.name)
    return config.name if entry is None else config.name + override_text(config_overrides(entry, config))


def report_names(config: ModelConfig) -> tuple[str, ...]:
    """The model names a report of ``config`` may carry: its :func:`model_label`, written with the entry's name or an
    alias; and the bare name and aliases, which reports written before labels carried overrides hold (their config
    fingerprint then tells which configuration they evaluated)."""
    suffix = model_label(config)[len(config.name):]
    names = [config.name + suffix, *(alias + suffix for alias in config.aliases), config.name, *config.aliases]
    return tuple(dict.fromkeys(names))


def labelled_config(label: str) -> Optional[ModelConfig]:
    """The config a report's model label (:func:`model_label`, ``"fmnist-robust,alpha=0.9"``) names: the registered
    entry with the label's overrides; ``None`` when its name is not a registered entry or alias.

    Raises:
        robust_mix.validate.InvalidInputError: an override is malformed or not a config field.
    """
    head, overrides = split_overrides(label)
    if not is_model(head):
        return None
    config = get_model_config(head)
    return config.with_overrides(overrides) if overrides else config
