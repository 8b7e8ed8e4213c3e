"""Weight files by source: where a :class:`~robust_mix.config.WeightsConfig` points, fetched and verified.

One function answers "which local file holds these weights" for every source (a file shipped in
the package, a local file, a Hugging Face Hub repo, RobustBench's ``model_dir`` layout), and one
reads it: the file is checked before any parser sees it (an HTML page saved in its place, an
empty or truncated file, pickled objects, a SHA-256 that differs), each refusal naming the file,
what was expected and what to do.

Downloads: the Hub through ``huggingface_hub`` (its cache), RobustBench's Google Drive files
through RobustBench's own downloader. ``HF_HUB_OFFLINE=1`` or ``ROBUST_MIX_OFFLINE=1`` turn
downloads off; a missing file is then an error naming the path and where it comes from.
"""
from __future__ import annotations

import difflib
import importlib.resources
import logging
import os
from pathlib import Path
from typing import Optional, Union

import torch

from robust_mix._compat import import_timm
from robust_mix.config import WeightsConfig
from robust_mix.io import load_state_dict, sha256_file, sniff_weights_file
from robust_mix.validate import InvalidInputError, check_path, unwritable_reason

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
DEFAULT_MODEL_DIR = "./models"
_PACKAGE = "robust_mix"


class WeightsNotFoundError(FileNotFoundError):
    """Weights are missing and could not be fetched; the message names the file and its source."""


#: The environment variables that switch downloads off; huggingface_hub reads the first one too.
OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "ROBUST_MIX_OFFLINE")
#: Where RobustBench checkpoints go when no ``model_dir`` is given (else :data:`DEFAULT_MODEL_DIR`).
MODEL_DIR_ENV_VAR = "ROBUST_MIX_MODEL_DIR"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def is_offline() -> bool:
    """True when downloads are switched off (``HF_HUB_OFFLINE=1`` or ``ROBUST_MIX_OFFLINE=1``).

    Raises:
        robust_mix.validate.InvalidInputError: one of them is set to neither a yes (``1``, ``true``, ``yes``, ``on``)
            nor a no (``0``, ``false``, ``no``, ``off``, empty), naming it: ``ROBUST_MIX_OFFLINE=2`` or ``=y`` was
            read as "online" without a word, and a download was tried where none was meant.
    """
    offline = False
    for var in OFFLINE_ENV_VARS:
        value = os.environ.get(var, "").strip().lower()
        if value not in _TRUE + _FALSE:
            raise InvalidInputError(f"environment variable {var}={os.environ[var]!r} is neither a yes "
                                    f"({', '.join(_TRUE)}: downloads off) nor a no ({', '.join(_FALSE[1:])}, or "
                                    "unset: downloads on); set it to one of them")
        offline = offline or value in _TRUE
    return offline


def default_model_dir() -> Path:
    """``$ROBUST_MIX_MODEL_DIR`` (``~`` expanded; empty is unset) or ``./models`` under the working folder: where
    RobustBench checkpoints are kept."""
    configured = os.environ.get(MODEL_DIR_ENV_VAR, "").strip()
    return Path(configured).expanduser() if configured else Path(DEFAULT_MODEL_DIR)


def _model_dir_hint(path: Path) -> str:
    """Where the folder holding ``path`` came from, and how to choose another: the end of a message about a
    checkpoint folder that cannot be written."""
    configured = os.environ.get(MODEL_DIR_ENV_VAR, "").strip()
    if configured and path.is_relative_to(default_model_dir()):
        origin = f"the folder ${MODEL_DIR_ENV_VAR}={configured!r} names"
    elif not configured and path.is_relative_to(Path(DEFAULT_MODEL_DIR)):
        origin = f"the default {DEFAULT_MODEL_DIR}, under the working folder {os.getcwd()}"
    else:
        origin = "the model_dir given"
    return (f"; the checkpoints go to {origin}: set {MODEL_DIR_ENV_VAR} (or pass model_dir=, --model-dir) to a "
            "folder this process can write, or put the files in place yourself")


def _unwritable_folders(paths: list[Path]) -> dict[Path, str]:
    """The folders of ``paths`` that cannot be made or written to (read-only, not this user's), each with why."""
    reasons = {folder: unwritable_reason(folder) for folder in sorted({p.parent for p in paths})}
    return {folder: why for folder, why in reasons.items() if why is not None}


def check_model_dir(model_dir: object) -> Optional[Path]:
    """A ``model_dir`` argument as a folder path (``~`` expanded), ``None`` (or ``""``) kept for the default.

    Raises:
        robust_mix.validate.InvalidInputTypeError: not a ``str`` or ``os.PathLike`` (e.g. a number).
    """
    folder = check_path("model_dir", model_dir, "a folder path holding RobustBench's checkpoints")
    return folder if folder is not None and str(model_dir) else None


def package_file(relative: str) -> Path:
    """A file shipped inside the installed package (``"zoo/weights/x.safetensors"``), as a path."""
    resource = importlib.resources.files(_PACKAGE).joinpath(relative)
    path = Path(str(resource))
    if not path.is_file():
        raise WeightsNotFoundError(f"robust_mix ships no file {relative!r} (looked at {path}); the installation "
                                   "is incomplete: reinstall robust-mix")
    return path


# -- RobustBench's model_dir layout ----------------------------------------------------------------
def robustbench_entry(dataset: str, threat_model: str, name: str) -> dict:
    """RobustBench's model-zoo record (``{"model": constructor, "gdrive_id": ...}``) of an entry.

    Raises:
        ValueError: unknown data set, threat model or name (the closest names are suggested).
    """
    import_timm()  # robustbench imports timm: quietly first (and _compat's autoattack alias is in place)
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        entries = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    except (ValueError, KeyError) as err:
        raise ValueError(f"RobustBench has no {dataset}/{threat_model} models ({err}); data sets: "
                         f"{[d.value for d in BenchmarkDataset]}, threat models: "
                         f"{[t.value for t in ThreatModel]}") from err
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=5)
        raise ValueError(f"RobustBench has no {dataset}/{threat_model} model {name!r}; closest: {close}")
    return entries[name]


def robustbench_files(dataset: str, threat_model: str, name: str, model_dir: PathLike) -> list[tuple[Path, str]]:
    """The checkpoint files RobustBench reads for an entry, each with its Google Drive id.

    Multi-file entries use ``<Name>.pt_m<i>.pt``; entries hosted by timm return ``[]``.
    """
    ids = robustbench_entry(dataset, threat_model, name).get("gdrive_id")
    if ids is None:
        return []
    base = Path(model_dir) / dataset / threat_model / f"{name}.pt"
    if isinstance(ids, list):
        return [(Path(f"{base}_m{i}.pt"), gid) for i, gid in enumerate(ids)]
    return [(base, ids)]


def missing_files_message(what: str, missing: list[tuple[Path, str]], why: str) -> str:
    """The error text for missing RobustBench checkpoint files: each path and its Google Drive source, and what is
    at the path instead (:func:`_in_place_of`)."""
    lines = "\n".join(f"  {p}  <- https://drive.google.com/uc?id={gid}{_in_place_of(p)}" for p, gid in missing)
    return (f"checkpoint file(s) for {what} missing ({why}). Put these files in place "
            f"(RobustBench's layout under model_dir):\n{lines}")


def _in_place_of(path: Path) -> str:
    """What sits where a checkpoint file should (`` (it is a folder)``, a broken link, a file or folder of the layout
    whose name differs only in case, which RobustBench's case-sensitive names never read, a file where a folder of
    the layout should be), or ``""``."""
    if path.is_symlink() and not path.exists():
        return f"  (it is a link to {os.readlink(path)}, which does not exist)"
    if path.is_dir():
        return "  (it is a folder: move it away)"
    missing = path
    while not missing.parent.exists() and missing.parent != missing:  # the first part of the path that is not there
        missing = missing.parent
    if missing.parent.is_file():
        return f"  ({missing.parent} is a file, where the layout has a folder)"
    if missing.parent.is_dir():
        same = sorted(q.name for q in missing.parent.iterdir() if q.name.lower() == missing.name.lower())
        if same:
            return (f"  ({missing.parent} has {same[0]!r}: the layout's names are case-sensitive, rename it "
                    f"{missing.name!r})")
    return ""


def fetch_robustbench_files(what: str, files: list[tuple[Path, str]]) -> None:
    """Download missing files with RobustBench's own downloader, unless offline.

    Raises:
        WeightsNotFoundError: files are missing and downloads are off or failed; the message names
            each file and its Google Drive source.
    """
    missing = [(p, gid) for p, gid in files if not p.is_file()]
    if not missing:
        return
    if is_offline():
        raise WeightsNotFoundError(missing_files_message(what, missing, "downloads are off"))
    blocked = [(p, gid) for p, gid in missing if p.is_dir() or any(parent.is_file() for parent in p.parents)]
    if blocked:  # a download could not be written there: said before any is started
        raise WeightsNotFoundError(missing_files_message(what, blocked, "a download cannot be written there")
                                   + _model_dir_hint(blocked[0][0]))
    unwritable = _unwritable_folders([p for p, _ in missing])
    if unwritable:  # a read-only working folder (./models) was a bare PermissionError from mkdir
        folder, why = next(iter(unwritable.items()))
        raise WeightsNotFoundError(missing_files_message(
            what, [(p, gid) for p, gid in missing if p.parent in unwritable],
            f"a download cannot be written to {folder}: {why}") + _model_dir_hint(folder))
    import_timm()
    from robustbench.utils import download_gdrive_new

    for path, gid in missing:
        logger.info("downloading %s (Google Drive id %s)", path, gid)
        try:
            download_gdrive_new(gid, path)
        except Exception as err:  # gdown raises many kinds
            hint = _model_dir_hint(path) if isinstance(err, PermissionError) else ""
            raise WeightsNotFoundError(missing_files_message(what, missing, f"download failed: {err}")
                                       + hint) from err
    still = [(p, gid) for p, gid in missing if not p.is_file()]
    if still:
        raise WeightsNotFoundError(missing_files_message(what, still, "the download produced no file"))


def _robustbench_file(weights: WeightsConfig, model_dir: PathLike) -> tuple[Path, str]:
    dataset, threat, name = weights.robustbench.split("/")
    files = robustbench_files(dataset, threat, name, model_dir)
    if weights.index is None:
        if len(files) > 1:
            raise ValueError(f"RobustBench entry {weights.robustbench} has {len(files)} files: set "
                             "WeightsConfig.index to the one wanted")
        if not files:
            if weights.download_id is None:
                raise ValueError(f"RobustBench lists no checkpoint file for {weights.robustbench} (timm hosts it); "
                                 "set WeightsConfig.download_id, or use the timm reference")
            files = [(Path(model_dir) / dataset / threat / f"{name}.pt", weights.download_id)]
        path, gid = files[0]
    else:
        if not 0 <= weights.index < len(files):
            raise ValueError(f"RobustBench entry {weights.robustbench} has {len(files)} file(s); "
                             f"WeightsConfig.index {weights.index} is out of range")
        path, gid = files[weights.index]
    return path, weights.download_id or gid


# -- one answer: which local file holds these weights ------------------------------------------------
def resolve_weights(weights: WeightsConfig, model_dir: Optional[PathLike] = None, *,
                    download: bool = True) -> Path:
    """The local file a :class:`WeightsConfig` names, downloaded into its cache or layout if needed.

    Args:
        weights: the source.
        model_dir: RobustBench's checkpoint folder (default :func:`default_model_dir`).
        download: fetch missing files (unless offline); ``False`` only reports where they would go.

    Raises:
        WeightsNotFoundError: the file is missing and cannot be fetched; names the path and source.
    """
    if weights.package is not None:
        return package_file(weights.package)
    if weights.file is not None:
        path = Path(weights.file).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"weight file not found: {path} (from {weights.describe()}); "
                                       "check the path, or point the config at the file")
        return path
    if weights.hub is not None:
        return _hub_file(weights)
    path, gid = _robustbench_file(weights, model_dir or default_model_dir())
    if download:
        fetch_robustbench_files(f"robustbench:{weights.robustbench}", [(path, gid)])
    return path


def _hub_file(weights: WeightsConfig) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    filename = weights.filename or "model.safetensors"
    try:
        return Path(hf_hub_download(weights.hub, filename, revision=weights.revision, local_files_only=is_offline()))
    except LocalEntryNotFoundError as err:
        raise WeightsNotFoundError(
            f"{filename} of hf-hub:{weights.hub} is not in the Hugging Face cache and "
            f"{'downloads are off' if is_offline() else 'the Hub could not be reached'}; download it once online "
            f"(`hf download {weights.hub} {filename}`)") from err
    except Exception as err:  # repository / revision / entry not found
        raise WeightsNotFoundError(f"cannot fetch {filename} of hf-hub:{weights.hub}: {err}") from err


def prefetch(sources: list[WeightsConfig], model_dir: Optional[PathLike] = None) -> None:
    """Make every file of ``sources`` local before anything is built, or fail naming all that are missing.

    RobustBench files are gathered per entry, so one error lists every missing file with its
    Google Drive source; the other sources are resolved one by one.
    """
    model_dir = model_dir or default_model_dir()
    by_entry: dict[str, list[tuple[Path, str]]] = {}
    for weights in sources:
        if weights.robustbench is None:
            resolve_weights(weights, model_dir)
            continue
        file = _robustbench_file(weights, model_dir)
        files = by_entry.setdefault(weights.robustbench, [])
        if file not in files:
            files.append(file)
    for entry, files in by_entry.items():
        fetch_robustbench_files(f"robustbench:{entry}", sorted(files))


def verify_weights_file(path: Path, weights: WeightsConfig) -> None:
    """Check a resolved file before it is parsed: not a web page, and the configured SHA-256.

    Raises:
        ValueError: the file is an HTML page or empty, or its digest differs from ``weights.sha256``.
    """
    sniff_weights_file(path)
    if weights.sha256 is not None:
        actual = sha256_file(path)
        if actual != weights.sha256:
            raise ValueError(f"{path} ({weights.describe()}) has SHA-256 {actual}, expected {weights.sha256}: "
                             "the file is corrupt, truncated or another checkpoint; delete it and fetch it again")


def read_weights(weights: WeightsConfig, model_dir: Optional[PathLike] = None) -> dict[str, torch.Tensor]:
    """Resolve, verify and load the tensors a :class:`WeightsConfig` names (no unpickling).

    The tensors keep the file's own names; converting a foreign layout (``weights.format``) is
    :func:`robust_mix.convert.convert_state_dict`'s job.
    """
    path = resolve_weights(weights, model_dir)
    verify_weights_file(path, weights)
    return load_state_dict(path)
