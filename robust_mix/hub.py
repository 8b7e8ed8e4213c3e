"""Share mixed models: one folder format for saving, loading and the Hugging Face Hub.

A saved model is a folder (or Hub repo) with three files:

- ``config.json``: :meth:`ModelConfig.to_dict` plus ``format_version`` and ``provenance``. Base
  models are named by architecture (``timm/...``, ``robustbench/...``) with their resolved input
  contracts, so rebuilding needs none of the bases' original weight sources.
- ``model.safetensors``: every tensor of the model (both bases, the mixing network, BN state).
- ``README.md``: the model card (:mod:`robust_mix.cards`).

>>> model.save_pretrained("out/my-mix")
>>> same = MixedClassifier.from_pretrained("out/my-mix")
>>> model.push_to_hub("org/my-mix", benchmark="report.json")
>>> load_model("hf-hub:org/my-mix")
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from robust_mix.backbones import (BackboneNotFoundError, load_weights_strict, is_offline, read_backbone_spec,
                                  resolve_input_config)
from robust_mix.cards import ReportSummary, read_benchmark, render_card
from robust_mix.config import BackboneConfig, InputConfig, ModelConfig
from robust_mix.io import atomic_write_text, load_state_dict, save_state_dict

if TYPE_CHECKING:
    from huggingface_hub import RepoUrl

    from robust_mix.mixing import MixedClassifier

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
HUB_PREFIX = "hf-hub:"

Benchmark = Union[ReportSummary, str, Path, None]


# -- the config that travels with the weights ---------------------------------------------------
def portable_config(model: "MixedClassifier", config: Optional[ModelConfig] = None
                    ) -> tuple[ModelConfig, dict[str, Any]]:
    """The model's current state as a config that rebuilds its architecture anywhere.

    Mixing constants (alpha, policy, temperatures) are read from the model, so changes made after
    building (``model.alpha = 0.8``) are saved. ``.safetensors`` base references become the
    architecture they record; input contracts are the ones the model applies.

    Args:
        model: the mixed model.
        config: its config when ``model.config`` is ``None`` (a model built by hand).

    Returns:
        The config, and the provenance (the base references and weight sources it came from).

    Raises:
        ValueError: no config, or a config without both base references.
    """
    base = config if config is not None else model.config
    if base is None:
        raise ValueError("this MixedClassifier has no ModelConfig (it was built by hand), so nothing says how "
                         "to rebuild its base models; pass config=ModelConfig(name=..., "
                         "standard=BackboneConfig('timm/<arch>', kwargs=...), robust=...) naming their "
                         "architectures, or build the model with robust_mix.build_model / load_model")
    if base.standard is None or base.robust is None:
        raise ValueError(f"config {base.name!r} does not name both base models (standard={base.standard}, "
                         f"robust={base.robust}); pass config= with both architecture references")
    policy = model.policy.config if model.policy is not None else None
    portable = dataclasses.replace(
        copy.deepcopy(base),
        standard=_portable_backbone(base.standard, model.standard, model.standard_input.config),
        robust=_portable_backbone(base.robust, model.robust, model.robust_input.config),
        alpha=None if model.is_adaptive else model.alpha, policy=copy.deepcopy(policy),
        mixing=model.mixing, std_scale=model.std_scale, rob_scale=model.rob_scale,
        num_classes=model.num_classes, weights={})
    from robust_mix import __version__

    provenance = {"standard": base.standard.ref, "robust": base.robust.ref,
                  "weights": dict(base.weights), "robust_mix_version": __version__}
    return portable, provenance


def _portable_backbone(backbone: BackboneConfig, module: torch.nn.Module, contract: InputConfig) -> BackboneConfig:
    """Name the architecture (not a weight file) and pin the input contract actually applied."""
    ref, kwargs = backbone.ref, dict(backbone.kwargs)
    if ref.endswith(".safetensors"):
        spec = _backbone_file_spec(Path(ref))
        ref, kwargs = spec["ref"], {**spec.get("kwargs", {}), **kwargs}
    portable = dataclasses.replace(backbone, ref=ref, kwargs=kwargs, checkpoint=None,
                                   input=copy.deepcopy(contract))
    if resolve_input_config(portable, module) != contract:
        # The rebuilt reference would get a default normalisation (timm's mean/std) that this model
        # never applied; an explicit identity normalisation keeps the inputs bit for bit.
        portable.input = dataclasses.replace(portable.input, mean=(0.0,), std=(1.0,))
    return portable


def _backbone_file_spec(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BackboneNotFoundError(
            f"the base model was loaded from {path}, which no longer exists, and config.json must name its "
            "architecture: restore the file, or pass config= whose base reference is 'timm/<arch>' or "
            "'robustbench/...' with the constructor kwargs")
    return read_backbone_spec(path)


def read_config(path: Union[str, Path]) -> tuple[ModelConfig, dict[str, Any]]:
    """Read a saved ``config.json``; returns the config and its provenance.

    Raises:
        ValueError: not JSON, not written by robust_mix, a newer format, or unknown fields.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it may be truncated: save or download it again") from err
    if not isinstance(data, dict) or "format_version" not in data:
        raise ValueError(f"{path} is not a robust_mix config (no 'format_version'); save models with "
                         "model.save_pretrained(folder)")
    data = dict(data)
    version = data.pop("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {version!r}; this robust_mix reads versions up to "
                         f"{FORMAT_VERSION}: upgrade robust_mix")
    provenance = data.pop("provenance", {})
    try:
        return ModelConfig.from_dict(data), provenance
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err


# -- save / load -----------------------------------------------------------------------------------
def save_pretrained(model: "MixedClassifier", save_directory: Union[str, Path], *,
                    config: Optional[ModelConfig] = None, benchmark: Benchmark = None,
                    repo_id: Optional[str] = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory``.

    Args:
        model: the mixed model (any device; tensors are saved from the CPU).
        save_directory: the folder, created if needed; each file is written atomically.
        config: the model's config when ``model.config`` is ``None``.
        benchmark: a benchmark report (path or :class:`ReportSummary`) for the model card.
        repo_id: the Hub repo the folder is for (named in the card's usage example).

    Returns:
        The folder.
    """
    portable, provenance = portable_config(model, config)
    if repo_id is not None:
        portable.weights = {"hf_hub_id": repo_id}
    benchmark = _as_benchmark(benchmark)
    if benchmark is not None:
        _check_benchmark(portable, benchmark)
    folder = Path(save_directory)
    usage = None if repo_id else ("from robust_mix import MixedClassifier\n\n"
                                  f"model = MixedClassifier.from_pretrained({json.dumps(str(folder))})\n"
                                  "log_probs = model(images)")
    card = render_card(portable, benchmark=benchmark, repo_id=repo_id, provenance=provenance, usage=usage)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    save_state_dict(state, folder / WEIGHTS_NAME,
                    metadata={"format": "pt", "robust_mix.format_version": str(FORMAT_VERSION)})
    record = {"format_version": FORMAT_VERSION, **portable.to_dict(), "provenance": provenance}
    atomic_write_text(folder / CONFIG_NAME, json.dumps(record, indent=2) + "\n")
    atomic_write_text(folder / CARD_NAME, card)
    logger.info("saved %s (%d tensors) to %s", portable.name, len(state), folder)
    return folder


def from_pretrained(source: Union[str, Path], *, device: Union[str, torch.device, None] = None,
                    revision: Optional[str] = None, cache_dir: Union[str, Path, None] = None,
                    token: Union[str, bool, None] = None, local_files_only: Optional[bool] = None,
                    force_download: bool = False, pretrained: bool = True,
                    **overrides: Any) -> "MixedClassifier":
    """Rebuild a saved mixed model from a folder, a Hub repo id or the Hub cache.

    The architectures are built without their original weight sources; every tensor then comes
    from ``model.safetensors``, strictly (a missing, unexpected or mis-shaped tensor is an error).

    Args:
        source: a folder written by :func:`save_pretrained`, ``"org/name"`` or ``"hf-hub:org/name"``.
        device: where to put the model.
        revision, cache_dir, token, force_download: passed to ``huggingface_hub.hf_hub_download``.
        local_files_only: read the Hub cache only; default: on when ``HF_HUB_OFFLINE`` or
            ``ROBUST_MIX_OFFLINE`` is set.
        pretrained: ``False`` builds the architecture only (``model.safetensors`` is not read).
        **overrides: config fields to change before building (``alpha=0.9``, ``alpha_range=...``).

    Raises:
        FileNotFoundError: no such folder, repo or file (offline: not in the cache).
        ValueError: a corrupt file, a config naming an unknown architecture, or tensors that do
            not match the architecture.
    """
    from robust_mix.registry import apply_overrides, build_model

    config_path = _fetch(source, CONFIG_NAME, revision, cache_dir, token, local_files_only, force_download)
    config, _ = read_config(config_path)
    if overrides:
        config = apply_overrides(config, overrides)
    try:
        model = build_model(config, pretrained=False)
    except ValueError as err:
        raise ValueError(f"cannot rebuild the model described by {config_path}: {err}") from err
    if pretrained:
        weights = _fetch(source, WEIGHTS_NAME, revision, cache_dir, token, local_files_only, force_download)
        _load_all_tensors(model, weights)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _load_all_tensors(model: "MixedClassifier", path: Path) -> None:
    state = load_state_dict(path)
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:  # a model saved in half precision loads in half precision
        model.to(dtypes.pop())
    try:
        load_weights_strict(model, state, str(path))
    except RuntimeError as err:  # torch reports tensors of another shape this way
        raise ValueError(f"{path} does not match the architecture in {CONFIG_NAME}: {err}") from err


def _fetch(source: Union[str, Path], filename: str, revision: Optional[str], cache_dir: Union[str, Path, None],
           token: Union[str, bool, None], local_files_only: Optional[bool], force_download: bool) -> Path:
    """The local path of ``filename`` from a folder, or from a Hub repo through its cache."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    from huggingface_hub.utils import validate_repo_id

    text = str(source)
    repo_id = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else None
    if repo_id is None:
        folder = Path(text).expanduser()
        if folder.is_dir():
            path = folder / filename
            if not path.is_file():
                raise FileNotFoundError(f"{folder} has no {filename} (it has {sorted(p.name for p in folder.iterdir())}); "
                                        "save models with model.save_pretrained(folder)")
            return path
        if folder.exists():
            raise ValueError(f"{folder} is a file; give the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        repo_id = text
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise FileNotFoundError(f"{text!r} is neither a folder nor a Hugging Face repo id ('org/name'): {err}") from err
    offline = is_offline() if local_files_only is None else local_files_only
    where = f"hf-hub:{repo_id}" + (f"@{revision}" if revision else "")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, token=token,
                                    local_files_only=offline, force_download=force_download))
    except LocalEntryNotFoundError as err:
        cache = cache_dir or constants.HF_HUB_CACHE
        why = "downloads are off (HF_HUB_OFFLINE / ROBUST_MIX_OFFLINE)" if offline else "the Hub could not be reached"
        raise FileNotFoundError(
            f"{filename} of {where} is not in the Hugging Face cache ({cache}) and {why}. Download it once "
            f"online (robust_mix.load_model('hf-hub:{repo_id}') or `hf download {repo_id}`), or load a "
            f"saved folder by path. ({err.__class__.__name__})") from err
    except RevisionNotFoundError as err:
        raise FileNotFoundError(f"{where}: no such revision") from err
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(f"no Hub repo {repo_id!r} and no local folder of that name; a private or gated "
                                "repo needs token=... (or `hf auth login`)") from err
    except EntryNotFoundError as err:
        raise FileNotFoundError(f"{where} has no {filename}: it was not saved with robust_mix "
                                "(model.save_pretrained / model.push_to_hub)") from err


# -- push -----------------------------------------------------------------------------------------
def push_to_hub(model: "MixedClassifier", repo_id: str, *, private: Optional[bool] = None,
                token: Union[str, bool, None] = None, benchmark: Benchmark = None,
                config: Optional[ModelConfig] = None, commit_message: Optional[str] = None,
                revision: Optional[str] = None, create_pr: bool = False) -> "RepoUrl":
    """Upload the model to a Hub repo (created if needed) with its config and model card.

    Args:
        model: the mixed model.
        repo_id: ``"org/name"`` (``"name"`` goes to the token owner's namespace).
        private: visibility of a newly created repo (``None``: the Hub's default); an existing
            repo keeps its visibility.
        token: a Hub token (default: ``HF_TOKEN`` or the saved login).
        benchmark: a benchmark report whose results go into the card and its ``model-index``.
        config: the model's config when ``model.config`` is ``None``.
        commit_message, revision, create_pr: passed to ``HfApi.upload_folder``.

    Returns:
        The repo's URL (``.repo_id`` is the resolved id).
    """
    from huggingface_hub import HfApi

    portable_config(model, config)  # fail before creating a repo
    benchmark = _as_benchmark(benchmark)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="robust-mix-push-") as tmp:
        save_pretrained(model, tmp, config=config, benchmark=benchmark, repo_id=url.repo_id)
        api.upload_folder(repo_id=url.repo_id, folder_path=tmp, repo_type="model", revision=revision,
                          commit_message=commit_message or "Upload mixed model with robust_mix",
                          create_pr=create_pr)
    logger.info("pushed to %s", url)
    return url


def _as_benchmark(benchmark: Benchmark) -> Optional[ReportSummary]:
    return read_benchmark(benchmark) if isinstance(benchmark, (str, Path)) else benchmark


def _check_benchmark(config: ModelConfig, benchmark: ReportSummary) -> None:
    """Warn when a report describes another model or setting than the config."""
    norm = lambda s: str(s).lower().replace("-", "").replace("_", "")  # noqa: E731
    if benchmark.model not in (config.name, *config.aliases):
        logger.warning("benchmark report %s is for model %r, not %r", benchmark.source, benchmark.model,
                       config.name)
    if config.dataset != "custom" and norm(benchmark.dataset) != norm(config.dataset):
        logger.warning("benchmark report %s is on %r, the model is for %r", benchmark.source,
                       benchmark.dataset, config.dataset)
    if config.eps is not None and benchmark.eps is not None and abs(benchmark.eps - config.eps) > 1e-6:
        logger.warning("benchmark report %s uses eps %g, the model's config says %g", benchmark.source,
                       benchmark.eps, config.eps)
