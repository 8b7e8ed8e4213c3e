"""Base classifiers by reference: ``timm/...``, ``robustbench/...`` or a local ``.safetensors`` file.

One table maps a reference's scheme to its loader; nothing here knows individual models.

- ``"timm/<arch>[.<tag>]"``: ``timm.create_model`` with timm's own pretrained sources (the
  Hugging Face Hub and its cache), or a local ``checkpoint`` file.
- ``"robustbench/<dataset>/<threat>/<Name>"``: RobustBench's architecture and checkpoint,
  read from (or downloaded into) ``<model_dir>/<dataset>/<threat>/<Name>.pt``.
- ``"/path/to/model.safetensors"``: a file written by :func:`save_backbone`, which records
  its own architecture reference in the safetensors metadata. Relative paths that do not exist
  from the working directory are looked up in the package's zoo folder (shipped weights).
"""
from __future__ import annotations

import difflib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import nn

from robust_mix._compat import import_timm
from robust_mix.config import BackboneConfig, InputConfig
from robust_mix.io import load_state_dict, save_state_dict

logger = logging.getLogger(__name__)

BackboneRef = Union[str, BackboneConfig]
Loader = Callable[[BackboneConfig, Path, bool], nn.Module]

META_KEY = "robust_mix.backbone"
ZOO_DIR = Path(__file__).parent / "zoo"  # shipped weights live under ZOO_DIR / "weights"
DEFAULT_MODEL_DIR = "./models"


class BackboneNotFoundError(FileNotFoundError):
    """Weights for a backbone are missing and could not be fetched; the message says what to do."""


def is_offline() -> bool:
    """True when downloads are switched off (``HF_HUB_OFFLINE=1`` or ``ROBUST_MIX_OFFLINE=1``)."""
    return any(os.environ.get(var, "").lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "ROBUST_MIX_OFFLINE"))


def default_model_dir() -> Path:
    """``$ROBUST_MIX_MODEL_DIR`` or ``./models``: where RobustBench checkpoints are kept."""
    return Path(os.environ.get("ROBUST_MIX_MODEL_DIR", DEFAULT_MODEL_DIR))


def as_backbone_config(ref: Union[BackboneRef, dict]) -> BackboneConfig:
    """Accept a reference string, a dict or a :class:`BackboneConfig`."""
    if isinstance(ref, BackboneConfig):
        return ref
    if isinstance(ref, str):
        return BackboneConfig(ref=ref)
    if isinstance(ref, dict):
        from robust_mix.config import _from_dict

        return _from_dict(BackboneConfig, ref)
    raise TypeError(f"a backbone reference must be a string, dict or BackboneConfig, got {type(ref).__name__}")


def _scheme(ref: str) -> str:
    if ref.endswith(".safetensors"):
        return "file"
    scheme, sep, _ = ref.partition("/")
    if not sep or scheme not in _LOADERS:
        raise ValueError(f"unknown backbone reference {ref!r}: expected 'timm/<arch>[.<tag>]', "
                         "'robustbench/<dataset>/<threat>/<Name>' or a path ending in .safetensors")
    return scheme


def load_backbone(ref: Union[BackboneRef, dict], *, model_dir: Union[str, Path, None] = None,
                  pretrained: bool = True) -> nn.Module:
    """Build a base classifier from its reference, in eval mode, on the CPU.

    Args:
        ref: a reference string or :class:`BackboneConfig`.
        model_dir: RobustBench's checkpoint folder (default :func:`default_model_dir`).
        pretrained: load weights; ``False`` gives the randomly initialised architecture.

    Raises:
        BackboneNotFoundError: weights are missing and cannot be fetched; names the file expected.
        ValueError: the reference or architecture name is unknown.
    """
    config = as_backbone_config(ref)
    model = _LOADERS[_scheme(config.ref)](config, Path(model_dir or default_model_dir()), pretrained)
    return model.eval()


def resolve_input_config(config: BackboneConfig, model: nn.Module) -> InputConfig:
    """The backbone's input contract: the config's own, with timm's mean/std filled in when absent."""
    contract = config.input
    pretrained_cfg = getattr(model, "pretrained_cfg", None)
    if contract.mean is None and config.ref.startswith("timm/") and pretrained_cfg:
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
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"backbone files must end in .safetensors, got {path}")
    if _scheme(ref) == "file":
        raise ValueError("ref must name an architecture ('timm/...' or 'robustbench/...'), not a file")
    meta = {META_KEY: json.dumps({"ref": ref, "kwargs": kwargs or {}})}
    save_state_dict(model.state_dict(), path, metadata=meta)
    return path


def load_weights_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` into ``model``; any missing or unexpected tensor is a ``ValueError`` naming ``source``."""
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{source} does not match the architecture: missing tensors "
                         f"{result.missing_keys[:8]}, unexpected tensors {result.unexpected_keys[:8]}")
    return model


# -- timm --------------------------------------------------------------------------------------
def _load_timm(config: BackboneConfig, model_dir: Path, pretrained: bool) -> nn.Module:
    timm = import_timm()

    name = config.ref[len("timm/"):]
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        raise ValueError(f"timm has no architecture {arch!r}; closest: {close}")
    if config.checkpoint:
        model = timm.create_model(name, pretrained=False, **config.kwargs)
        path = Path(config.checkpoint)
        if not path.is_file():
            raise BackboneNotFoundError(f"checkpoint for {config.ref} not found: expected the file {path}")
        return load_weights_strict(model, load_state_dict(path), str(path))
    if not pretrained:
        return timm.create_model(name, pretrained=False, **config.kwargs)
    source = timm.models.get_pretrained_cfg(name)
    where = {k: getattr(source, k, None) for k in ("hf_hub_id", "url", "file")} if source else {}
    where = {k: v for k, v in where.items() if v}
    if not where:
        raise BackboneNotFoundError(
            f"timm lists no pretrained weights for {name!r}; pass checkpoint='/path/to/weights' "
            "in the backbone config, or pretrained=False for random initialisation")
    try:
        return timm.create_model(name, pretrained=True, **config.kwargs)
    except Exception as err:  # timm raises hub, HTTP and file errors alike
        hub = where.get("hf_hub_id")
        hint = (f"put the Hugging Face repo {hub!r} (model.safetensors) into the hub cache "
                f"(HF_HOME, currently {os.environ.get('HF_HOME', '~/.cache/huggingface')})" if hub
                else f"download {where}")
        raise BackboneNotFoundError(
            f"could not fetch pretrained weights for {config.ref} ({err.__class__.__name__}: {err}). "
            f"Offline, {hint}, or set checkpoint='/path/to/weights' in the backbone config.") from err


# -- RobustBench -------------------------------------------------------------------------------
def robustbench_files(dataset: str, threat_model: str, name: str, model_dir: Path) -> list[tuple[Path, str]]:
    """The checkpoint files RobustBench reads for an entry, each with its Google Drive id.

    Multi-file entries use ``<Name>.pt_m<i>.pt``; entries hosted by timm return ``[]``.
    """
    import_timm()  # robustbench imports timm: quietly first (and _compat's autoattack alias is in place)
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    entries = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=5)
        raise ValueError(f"RobustBench has no {dataset}/{threat_model} model {name!r}; closest: {close}")
    ids = entries[name].get("gdrive_id")
    if ids is None:
        return []
    base = model_dir / dataset / threat_model / f"{name}.pt"
    if isinstance(ids, list):
        return [(Path(f"{base}_m{i}.pt"), gid) for i, gid in enumerate(ids)]
    return [(base, ids)]


def _parse_robustbench(ref: str) -> tuple[str, str, str]:
    parts = ref.split("/")
    if len(parts) != 4:
        raise ValueError(f"RobustBench references look like 'robustbench/<dataset>/<threat>/<Name>', got {ref!r}")
    return parts[1], parts[2], parts[3]


def _load_robustbench(config: BackboneConfig, model_dir: Path, pretrained: bool) -> nn.Module:
    import_timm()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model as rb_load_model

    dataset, threat, name = _parse_robustbench(config.ref)
    try:
        BenchmarkDataset(dataset), ThreatModel(threat)
    except ValueError as err:
        raise ValueError(f"{config.ref}: {err}; datasets: {[d.value for d in BenchmarkDataset]}, "
                         f"threat models: {[t.value for t in ThreatModel]}") from err
    files = robustbench_files(dataset, threat, name, model_dir)
    if not pretrained:
        return model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)][name]["model"]()
    if config.checkpoint:
        model = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)][name]["model"]()
        return load_weights_strict(model, load_state_dict(config.checkpoint), config.checkpoint)
    missing = [(p, gid) for p, gid in files if not p.is_file()]
    if missing and is_offline():
        raise BackboneNotFoundError(missing_files_message(config.ref, missing, "downloads are off"))
    try:
        return rb_load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat)
    except Exception as err:
        still = [(p, gid) for p, gid in files if not p.is_file()]
        if still:
            raise BackboneNotFoundError(missing_files_message(config.ref, still, f"download failed: {err}")) from err
        raise


def missing_files_message(ref: str, missing: list[tuple[Path, str]], why: str) -> str:
    """The error text for missing RobustBench checkpoint files: each path and its Google Drive source."""
    lines = "\n".join(f"  {p}  <- https://drive.google.com/uc?id={gid}" for p, gid in missing)
    return (f"checkpoint file(s) for {ref} missing ({why}). Put these files in place "
            f"(RobustBench's layout under model_dir):\n{lines}")


# -- self-describing safetensors files ---------------------------------------------------------
def resolve_file_ref(ref: str) -> Path:
    """A ``.safetensors`` reference as a path: as given, else relative to the shipped zoo folder."""
    path = Path(ref).expanduser()
    if path.is_file() or path.is_absolute():
        return path
    return ZOO_DIR / path


def read_backbone_spec(path: Path) -> dict:
    """The architecture a :func:`save_backbone` file records: ``{"ref": ..., "kwargs": {...}}``.

    Raises:
        ValueError: the file is not readable safetensors, or records no architecture.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from err
    if META_KEY not in meta:
        raise ValueError(f"{path} does not say which architecture it holds (no {META_KEY!r} metadata); "
                         "write it with robust_mix.backbones.save_backbone, or reference the architecture "
                         "('timm/<arch>') with checkpoint=<file>")
    return json.loads(meta[META_KEY])


def _load_file(config: BackboneConfig, model_dir: Path, pretrained: bool) -> nn.Module:
    path = resolve_file_ref(config.ref)
    if not path.is_file():
        raise BackboneNotFoundError(f"backbone file not found: {config.ref} (looked at {Path(config.ref).resolve()} "
                                    f"and {ZOO_DIR / config.ref})")
    spec = read_backbone_spec(path)
    arch = BackboneConfig(ref=spec["ref"], kwargs={**spec.get("kwargs", {}), **config.kwargs})
    model = _LOADERS[_scheme(arch.ref)](arch, model_dir, False)
    if not pretrained:
        return model
    return load_weights_strict(model, load_state_dict(path), str(path))


_LOADERS: dict[str, Loader] = {
    "timm": _load_timm,
    "robustbench": _load_robustbench,
    "file": _load_file,
}
