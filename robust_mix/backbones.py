"""Base classifiers by reference: ``timm/...`` or ``robustbench/...`` architectures and their weights.

One table maps a reference's scheme to the function that builds its architecture; where the
weights come from is a :class:`~robust_mix.config.WeightsConfig` (``BackboneConfig.weights``),
loaded by :func:`robust_mix.convert.load_weights`. Nothing here knows individual models.

- ``"timm/<arch>[.<tag>]"``: ``timm.create_model``; without ``weights``, timm's own pretrained
  source for the tag (the Hugging Face Hub and its cache).
- ``"robustbench/<dataset>/<threat>/<Name>"``: RobustBench's architecture; without ``weights``,
  RobustBench's checkpoint read from (or downloaded into) ``<model_dir>/<dataset>/<threat>/<Name>.pt``.
- ``"/path/to/model.safetensors"``: a file written by :func:`save_backbone`, which records its own
  architecture; :func:`as_backbone_config` turns it into the architecture plus ``weights=file``.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Optional, Union

from torch import nn

from robust_mix._compat import import_timm
from robust_mix.config import BackboneConfig, InputConfig, WeightsConfig, from_dict
from robust_mix.convert import load_weights
from robust_mix.io import save_state_dict
from robust_mix.validate import InvalidInputTypeError, parse_json
from robust_mix.weights import (WeightsNotFoundError, default_model_dir, fetch_robustbench_files,
                                robustbench_entry, robustbench_files, verify_weights_file)

logger = logging.getLogger(__name__)

BackboneRef = Union[str, BackboneConfig]
Builder = Callable[[BackboneConfig], nn.Module]

META_KEY = "robust_mix.backbone"
#: The error for missing base-model weights (the name the API has always used).
BackboneNotFoundError = WeightsNotFoundError


def as_backbone_config(ref: Union[BackboneRef, dict]) -> BackboneConfig:
    """Accept a reference string, a dict or a :class:`BackboneConfig`; a ``.safetensors`` file
    written by :func:`save_backbone` becomes the architecture it records plus ``weights=file``."""
    if isinstance(ref, str):
        ref = BackboneConfig(ref=ref)
    elif isinstance(ref, dict):
        ref = from_dict(BackboneConfig, ref)
    elif not isinstance(ref, BackboneConfig):
        raise TypeError(f"a backbone reference must be a string, dict or BackboneConfig, got {type(ref).__name__}")
    if not ref.ref.endswith(".safetensors"):
        _scheme(ref.ref)
        return ref
    path = Path(ref.ref).expanduser()
    if not path.is_file():
        raise BackboneNotFoundError(f"backbone file not found: {ref.ref} (looked at {path.resolve()})")
    spec = read_backbone_spec(path)
    return dataclasses.replace(ref, ref=spec["ref"], kwargs={**spec.get("kwargs", {}), **ref.kwargs},
                               weights=ref.weights or WeightsConfig(file=str(path.resolve())))


def _scheme(ref: str) -> str:
    scheme, sep, _ = ref.partition("/")
    if not sep or scheme not in _BUILDERS:
        raise ValueError(f"unknown backbone reference {ref!r}: expected 'timm/<arch>[.<tag>]', "
                         "'robustbench/<dataset>/<threat>/<Name>' or a path ending in .safetensors")
    return scheme


def load_backbone(ref: Union[BackboneRef, dict], *, model_dir: Union[str, Path, None] = None,
                  pretrained: bool = True) -> nn.Module:
    """Build a base classifier from its reference, in eval mode, on the CPU.

    Args:
        ref: a reference string or :class:`BackboneConfig`.
        model_dir: RobustBench's checkpoint folder (default :func:`~robust_mix.weights.default_model_dir`).
        pretrained: load weights; ``False`` gives the randomly initialised architecture.

    Raises:
        BackboneNotFoundError: weights are missing and cannot be fetched; names the file expected.
        ValueError: the reference or architecture name is unknown, or a weight file is refused.
    """
    config = as_backbone_config(ref)
    model_dir = Path(model_dir or default_model_dir())
    scheme = _scheme(config.ref)
    if pretrained and config.weights is None:
        return _DEFAULT_SOURCES[scheme](config, model_dir).eval()
    model = _BUILDERS[scheme](config)
    if pretrained:
        load_weights(model, config.weights, model_dir, what=config.ref)
    return model.eval()


def weight_sources(ref: Union[BackboneRef, dict]) -> list[WeightsConfig]:
    """The weight files a base reads: its ``weights``, or for a RobustBench reference the entry's own
    file(s). timm's own pretrained weights are timm's to fetch (``[]``)."""
    config = as_backbone_config(ref)
    if config.weights is not None:
        return [config.weights]
    if _scheme(config.ref) != "robustbench":
        return []
    dataset, threat, name = parse_robustbench_ref(config.ref)
    entry = f"{dataset}/{threat}/{name}"
    files = robustbench_files(dataset, threat, name, default_model_dir())
    return [WeightsConfig(robustbench=entry, index=i if len(files) > 1 else None) for i in range(len(files))]


def resolve_input_config(config: BackboneConfig, model: nn.Module) -> InputConfig:
    """The backbone's input contract: the config's own, with timm's mean/std filled in when absent.

    timm's ``pretrained_cfg`` normalisation describes timm's own pretrained weights, so it is
    filled in only for a timm reference whose weights come from timm (``config.weights is None``);
    weights from elsewhere (a file, the package, the Hub) follow the config's contract alone.
    """
    contract = config.input
    pretrained_cfg = getattr(model, "pretrained_cfg", None)
    if contract.mean is None and config.weights is None and config.ref.startswith("timm/") and pretrained_cfg:
        mean, std = pretrained_cfg.get("mean"), pretrained_cfg.get("std")
        if mean is not None and std is not None:
            return InputConfig(input_size=contract.input_size, interpolation=contract.interpolation,
                               mean=tuple(mean), std=tuple(std), antialias=contract.antialias)
    return contract


def save_backbone(model: nn.Module, path: Union[str, Path], ref: str,
                  kwargs: Optional[dict] = None) -> Path:
    """Save ``model``'s weights as a self-describing ``.safetensors`` file.

    The architecture reference (``ref``, e.g. ``"timm/resnet18"``) and constructor ``kwargs`` go
    into the file's metadata, so ``load_backbone(path)`` rebuilds the model on its own.

    Raises:
        ValueError: ``ref`` and ``kwargs`` build an architecture whose tensors are not ``model``'s (kwargs left
            out, such as ``num_classes`` or ``in_chans``, or another architecture), or ``kwargs`` are not JSON
            values; nothing is written (the file could never be loaded).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"backbone files must end in .safetensors, got {path}")
    if ref.endswith(".safetensors"):
        raise ValueError("ref must name an architecture ('timm/...' or 'robustbench/...'), not a file")
    _scheme(ref)
    try:
        meta = {META_KEY: json.dumps({"ref": ref, "kwargs": kwargs or {}})}
    except TypeError as err:
        raise InvalidInputTypeError(f"save_backbone's kwargs must be JSON values (numbers, strings, lists, dicts), "
                                    f"to be recorded in {path}: {err}") from None
    state = model.state_dict()
    _check_rebuilds(BackboneConfig(ref=ref, kwargs=dict(kwargs or {})), state, path)
    save_state_dict(state, path, metadata=meta)
    return path


def _check_rebuilds(config: BackboneConfig, state: dict, path: Path) -> None:
    """Refuse to record ``config`` for tensors ``state`` that the architecture it builds does not have.

    Raises:
        ValueError: missing or unexpected tensor names, or other shapes, naming a few and what to pass.
    """
    import torch

    build = _BUILDERS[_scheme(config.ref)]
    what = f"{config.ref} with kwargs {config.kwargs}"
    try:
        try:
            with torch.device("meta"):  # shapes only: no memory, no initialisation
                built = build(config).state_dict()
        except (NotImplementedError, RuntimeError):  # an architecture that computes while it is built
            built = build(config).state_dict()
    except TypeError as err:
        raise InvalidInputTypeError(f"cannot build {what} to check the tensors for {path}: {err}") from None
    missing, unexpected = sorted(set(built) - set(state)), sorted(set(state) - set(built))
    shapes = sorted(k for k in set(built) & set(state) if tuple(built[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        found = "; ".join(f"{label} {names[:4]}" + (f" (+{len(names) - 4})" if len(names) > 4 else "")
                          for label, names in (("missing", missing), ("unexpected", unexpected),
                                               ("of other shapes", shapes)) if names)
        raise ValueError(f"{what} does not build this model, so {path} could never be loaded (tensors {found}); "
                         "pass the ref and the constructor kwargs the model was built with (e.g. num_classes, "
                         "in_chans); nothing was written")


# -- timm --------------------------------------------------------------------------------------
def _timm_name(config: BackboneConfig) -> str:
    timm = import_timm()

    name = config.ref[len("timm/"):]
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        raise ValueError(f"timm has no architecture {arch!r}; closest: {close}")
    return name


def _build_timm(config: BackboneConfig) -> nn.Module:
    timm = import_timm()

    return timm.create_model(_timm_name(config), pretrained=False, **config.kwargs)


def _timm_pretrained(config: BackboneConfig, model_dir: Path) -> nn.Module:
    timm = import_timm()

    name = _timm_name(config)
    source = timm.models.get_pretrained_cfg(name)
    where = {k: getattr(source, k, None) for k in ("hf_hub_id", "url", "file")} if source else {}
    where = {k: v for k, v in where.items() if v}
    if not where:
        raise BackboneNotFoundError(
            f"timm lists no pretrained weights for {name!r}; give the backbone weights=WeightsConfig(file=...) "
            "(or hub=...), or pretrained=False for random initialisation")
    try:
        return timm.create_model(name, pretrained=True, **config.kwargs)
    except Exception as err:  # timm raises hub, HTTP and file errors alike
        hub = where.get("hf_hub_id")
        hint = (f"put the Hugging Face repo {hub!r} (model.safetensors) into the hub cache "
                f"(HF_HOME, currently {os.environ.get('HF_HOME', '~/.cache/huggingface')})" if hub
                else f"download {where}")
        raise BackboneNotFoundError(
            f"could not fetch pretrained weights for {config.ref} ({err.__class__.__name__}: {err}). "
            f"Offline, {hint}, or give the backbone weights=WeightsConfig(file='/path/to/weights').") from err


# -- RobustBench -------------------------------------------------------------------------------
def parse_robustbench_ref(ref: str) -> tuple[str, str, str]:
    """``"robustbench/<dataset>/<threat>/<Name>"`` -> ``(dataset, threat, name)``."""
    parts = ref.split("/")
    if len(parts) != 4:
        raise ValueError(f"RobustBench references look like 'robustbench/<dataset>/<threat>/<Name>', got {ref!r}")
    return parts[1], parts[2], parts[3]


def _build_robustbench(config: BackboneConfig) -> nn.Module:
    return robustbench_entry(*parse_robustbench_ref(config.ref))["model"]()


def _robustbench_pretrained(config: BackboneConfig, model_dir: Path) -> nn.Module:
    import_timm()  # robustbench imports timm: quietly first
    from robustbench.utils import load_model as rb_load_model

    dataset, threat, name = parse_robustbench_ref(config.ref)
    robustbench_entry(dataset, threat, name)  # unknown names: a clear error before anything else
    files = robustbench_files(dataset, threat, name, model_dir)
    fetch_robustbench_files(config.ref, files)
    for path, _ in files:
        verify_weights_file(path, WeightsConfig(file=str(path)))
    # RobustBench's own loader knows each entry's checkpoint quirks (wrappers, prefixes, filters).
    return rb_load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat)


_BUILDERS: dict[str, Builder] = {"timm": _build_timm, "robustbench": _build_robustbench}
_DEFAULT_SOURCES: dict[str, Callable[[BackboneConfig, Path], nn.Module]] = {
    "timm": _timm_pretrained, "robustbench": _robustbench_pretrained}


# -- self-describing safetensors files ---------------------------------------------------------
def read_backbone_spec(path: Path) -> dict:
    """The architecture a :func:`save_backbone` file records: ``{"ref": ..., "kwargs": {...}}``.

    Raises:
        ValueError: the file is not readable safetensors, or records no architecture, or a record that is not
            ``{"ref": "<architecture reference>", "kwargs": {...}}`` (the file names it).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file ({err}); it may be truncated: "
                         "write or download it again") from err
    if META_KEY not in meta:
        raise ValueError(f"{path} does not say which architecture it holds (no {META_KEY!r} metadata); "
                         "write it with robust_mix.backbones.save_backbone, or reference the architecture "
                         "('timm/<arch>') with weights=WeightsConfig(file=<file>)")
    how = ("write it with robust_mix.backbones.save_backbone, or reference the architecture ('timm/<arch>') with "
           "weights=WeightsConfig(file=<file>)")
    try:
        spec = parse_json(meta[META_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: its {META_KEY!r} metadata is not JSON ({err}); {how}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("ref"), str) or spec["ref"].endswith(".safetensors"):
        raise ValueError(f"{path}: its {META_KEY!r} metadata must be {{\"ref\": \"timm/<arch>\" or "
                         f"\"robustbench/<dataset>/<threat>/<Name>\", \"kwargs\": {{...}}}}, got "
                         f"{meta[META_KEY][:200]!r}; {how}")
    if not isinstance(spec.get("kwargs", {}), dict):
        raise ValueError(f"{path}: the 'kwargs' of its {META_KEY!r} metadata must be a JSON object of constructor "
                         f"arguments, got {spec['kwargs']!r}; {how}")
    return spec
