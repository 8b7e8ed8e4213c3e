"""What a model name means, and loading it: the one answer for the library and every CLI command.

A name is one of

- a registry name or alias (``"fmnist-adasmooth"``, ``"cifar100/Linf/Bai2023Improving_edm"``);
- ``"hf-hub:org/name"``: a model shared with ``push_to_hub``, through the Hugging Face cache (``@revision``
  pins a branch, tag or commit, as in timm's names);
- ``"local-dir:path"``: a folder written by ``save_pretrained``;
- a ``.json`` file holding a :class:`ModelConfig`;
- ``"package.module:function"``: a function returning a model (models outside the registry);

optionally followed by overrides, ``",key=value"`` each, values read as JSON when they parse
(``"fmnist-robust,alpha=0.9"``, ``"fmnist-adasmooth,alpha_range=[0.8,1.0]"``; ``(0.8,1.0)`` reads as
``[0.8,1.0]``, and ``None``, ``True``, ``False`` as ``null``, ``true``, ``false``). Each key may appear
once; a trailing or doubled ``,`` is an error.

>>> load_model("fmnist-robust,alpha=0.9")
>>> load_model("mix", standard="timm/resnet18", robust="robustbench/cifar10/Linf/Wong2020Fast", alpha=0.9)
"""
from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import torch
from torch import nn

from robust_mix.config import ModelConfig, override_text, split_overrides
from robust_mix.hub import CONFIG_NAME, HUB_PREFIX, LOCAL_PREFIX, could_be_repo_id, fetch_file, read_config
from robust_mix.mixing import MixedClassifier
from robust_mix.registry import get_model_config, is_model, unknown_model_message
from robust_mix.validate import (InvalidInputError, InvalidInputTypeError, check_bool, check_device,
                                 path_is)

NameKind = Literal["registry", "hub", "local", "config", "factory"]
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class ModelName:
    """A parsed model name: what kind of source, which one, and the overrides to apply.

    Attributes:
        kind: ``"registry"``, ``"hub"``, ``"local"``, ``"config"`` (a ModelConfig JSON file) or
            ``"factory"`` (``module:function``).
        target: the registry name (canonical), repo id, folder, file or ``module:function``.
        overrides: config fields to replace (``{"alpha": 0.9}``).
    """

    kind: NameKind
    target: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short name for tables and reports (``fmnist-robust,alpha=0.9``)."""
        base = {"hub": HUB_PREFIX, "local": LOCAL_PREFIX}.get(self.kind, "") + self.target
        return base + override_text(self.overrides)


def parse_model_name(text: Union[str, Path]) -> ModelName:
    """Split a model name into its source and overrides (see the module docstring).

    A :class:`~pathlib.Path` is a folder written by ``save_pretrained`` (as ``"local-dir:PATH"``), without overrides.

    Raises:
        KeyError: a bare name that is not registered (closest names suggested; a folder or Hub
            repo lookalike is told to use ``local-dir:`` or ``hf-hub:``).
        ValueError: an empty name, a malformed, empty or repeated override, or a prefix naming nothing.
    """
    if isinstance(text, Path):
        return ModelName("local", str(text))
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(f"a model name must be a non-empty string, got {text!r}; see robust_mix.list_models()")
    if text.rstrip().endswith(","):
        raise InvalidInputError(f"model name {text!r} ends in ',': drop it, or add the override after it "
                                "(e.g. 'fmnist-robust,alpha=0.9')")
    head, overrides = split_overrides(text)
    if overrides and head.endswith(","):
        raise InvalidInputError(f"model name {text!r} has an empty override (',,'); separate overrides by one ','")
    prefixes: tuple[tuple[str, NameKind, str], ...] = ((HUB_PREFIX, "hub", "Hub repo ('hf-hub:org/name')"),
                                                       (LOCAL_PREFIX, "local", "folder ('local-dir:PATH')"))
    for prefix, kind, what in prefixes:
        if head.startswith(prefix):
            target = head[len(prefix):].strip()
            if not target:
                raise InvalidInputError(f"model name {text!r} names no {what}")
            return ModelName(kind, target, overrides)
    if is_model(head):
        return ModelName("registry", get_model_config(head).name, overrides)
    if path_is("dir", head) and not could_be_repo_id(head):  # an unambiguous path
        return ModelName("local", head, overrides)
    if head.endswith(".json") and path_is("file", head):  # '~/entry.json' as '~/folder' is read
        return ModelName("config", str(Path(head).expanduser()), overrides)
    if _FACTORY.fullmatch(head):
        return ModelName("factory", head, overrides)
    base, comma, item = head.partition(",")
    if comma and is_model(base.strip()):  # ",alpha", ",=0.9", ",1x=2": not an override, not a model either
        raise InvalidInputError(f"override {item.strip()!r} in {text!r} must look like key=value with key a config "
                                "field name (e.g. 'fmnist-robust,alpha=0.9')")
    hint = ""
    if path_is("dir", head) or "/" in head:
        hint = (f"; for a folder written by save_pretrained use '{LOCAL_PREFIX}{head}', for a Hub repo "
                f"'{HUB_PREFIX}{head}'")
    raise KeyError(f"{unknown_model_message(head)}{hint}")


def load_model(name: Union[str, Path], *, model_dir: Union[str, Path, None] = None,
               device: Union[str, torch.device, None] = None, pretrained: bool = True,
               **overrides: Any) -> nn.Module:
    """Build a model by name (see :func:`parse_model_name`), in eval mode.

    Args:
        name: a registry name or alias (see :func:`robust_mix.list_models`), ``"hf-hub:org/name"``,
            ``"local-dir:path"``, a ModelConfig ``.json`` file or ``"module:function"``, optionally
            with ``",key=value"`` overrides; or a :class:`~pathlib.Path` to a ``save_pretrained`` folder.
        model_dir: RobustBench checkpoint folder for ``robustbench/...`` bases.
        device: where to put the model; one that does not exist here is refused before anything is built.
        pretrained: load weights (``False``: random initialisation, for tests and shapes); a bool.
        **overrides: :class:`ModelConfig` fields (``alpha=0.9``, ``standard="timm/..."``,
            ``rob_scale=...``) or adaptive-policy fields (``alpha_range=(0.8, 1.0)``); they win
            over overrides in ``name``. ``alpha=None`` means the entry's adaptive policy.

    Example:
        >>> load_model("mix", standard="timm/resnet18", robust="robustbench/cifar10/Linf/Wong2020Fast", alpha=0.9)
    """
    parsed = parse_model_name(name)
    device = check_device(device) if device is not None else None
    pretrained = check_bool("pretrained", pretrained)
    overrides = {**parsed.overrides, **overrides}
    if parsed.kind in ("hub", "local"):
        source = (HUB_PREFIX if parsed.kind == "hub" else LOCAL_PREFIX) + parsed.target
        return MixedClassifier.from_pretrained(source, device=device, pretrained=pretrained, **overrides)
    if parsed.kind == "factory":
        if overrides:
            raise ValueError(f"{parsed.target} is a function returning a model; overrides {sorted(overrides)} "
                             "apply to configs only")
        module, _, attr = parsed.target.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise InvalidInputError(f"{parsed.target!r} names no model factory ({err}); a NAME is a registry name, "
                                    "hf-hub:org/name, local-dir:PATH, a ModelConfig .json file or "
                                    "package.module:function") from None
        _check_takes_no_arguments(factory, parsed.target)
        model = factory()
        if not isinstance(model, nn.Module):
            raise InvalidInputTypeError(f"{parsed.target} returned {type(model).__name__}, not a torch.nn.Module; a "
                                        "'module:function' NAME names a function that takes no arguments and returns "
                                        "the model")
        return model.to(device).eval() if device is not None else model.eval()
    config = get_model_config(parsed.target) if parsed.kind == "registry" else ModelConfig.load(parsed.target)
    return build_model(config.with_overrides(overrides) if overrides else config, model_dir=model_dir,
                       device=device, pretrained=pretrained)


def _check_takes_no_arguments(factory: Any, target: str) -> None:
    """Refuse a ``module:function`` factory that cannot be called without arguments (before calling it, so that
    a ``TypeError`` raised inside the factory is never mistaken for this).

    Raises:
        robust_mix.validate.InvalidInputTypeError: ``factory`` is not callable, or has required parameters.
    """
    usage = ("a 'module:function' NAME names a function that takes no arguments and returns the model; wrap the "
             "call in such a function (def make(): return build(...)) and name that")
    if not callable(factory):
        raise InvalidInputTypeError(f"{target} is a {type(factory).__name__}, not a function; {usage}")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have no signature: calling them is the only test
        return
    try:
        signature.bind()
    except TypeError as err:
        raise InvalidInputTypeError(f"{target} needs arguments ({err}); {usage}") from None


def build_model(config: ModelConfig, *, model_dir: Union[str, Path, None] = None,
                device: Union[str, torch.device, None] = None, pretrained: bool = True) -> MixedClassifier:
    """:meth:`MixedClassifier.from_config`, the one builder, under the name the API has always had."""
    return MixedClassifier.from_config(config, model_dir=model_dir, device=device, pretrained=pretrained)


def model_config_of(name: str) -> Optional[ModelConfig]:
    """The config a name refers to, without building a model (``None`` for ``module:function`` factories);
    a saved model's is read from its ``config.json``. It is checked as :meth:`ModelConfig.validate` checks a config
    before building (its overrides too: ``NAME,alpha=2``), so that no caller (``submit``, ``card``) uses one that
    could not be built.

    Raises:
        robust_mix.validate.InvalidInputError: a field of the config or an override is invalid.
    """
    parsed = parse_model_name(name)
    if parsed.kind == "registry":
        config = get_model_config(parsed.target)
    elif parsed.kind == "config":
        config = ModelConfig.load(parsed.target)
    elif parsed.kind in ("hub", "local"):
        prefix = HUB_PREFIX if parsed.kind == "hub" else LOCAL_PREFIX
        config, _ = read_config(fetch_file(prefix + parsed.target, CONFIG_NAME), prefix + parsed.target)
    else:
        return None
    return (config.with_overrides(parsed.overrides) if parsed.overrides else config).validate()  # alpha=2 refused
