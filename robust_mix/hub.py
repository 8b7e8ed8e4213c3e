"""Share mixed models: one folder format for saving, loading and the Hugging Face Hub.

A saved model is a folder (or Hub repo) with three files:

- ``config.json``: :meth:`ModelConfig.to_dict` plus ``format_version`` and ``provenance`` (the
  base references and weight sources it was saved from). Base
  models are named by architecture (``timm/...``, ``robustbench/...``) with their input
  contracts, so rebuilding needs none of the bases' original weight sources. The keys timm's
  ``hf-hub:`` loader reads are written too (``architecture``: :data:`~robust_mix.timm_config.SAVED_ARCHITECTURE`,
  ``pretrained_cfg``, ``model_args``; ``num_classes`` is a config field already), so after
  ``import robust_mix``, ``timm.create_model("hf-hub:org/name", pretrained=True)`` rebuilds the model.
- ``model.safetensors``: every tensor of the model (both bases, the mixing network, BN state).
  Both files carry the save's id (``provenance["save_id"]``, metadata ``robust_mix.save_id``, a
  digest of the config and tensors): a ``config.json`` beside the tensors of another save (an
  interrupted ``save_pretrained`` into a folder holding an older model) is refused on load, and so are files
  whose contents no longer give that id (a field edited or removed by hand, a tensor damaged on disk or in
  transfer); a saved model's settings change through overrides when loading, not by editing the file.
- ``README.md``: the model card (:mod:`robust_mix.cards`).

:class:`HubMixin` gives a model class ``save_pretrained``, ``from_pretrained`` and
``push_to_hub`` over two hooks it must provide: ``portable_config()`` (the model as a config) and
``from_config(config, pretrained=False)`` (the architecture back from a config).

Where a model comes from is always explicit: ``hf-hub:org/name`` is a Hub repo (through the
local cache), ``local-dir:path`` or a :class:`~pathlib.Path` is a folder; a bare string that could
be either is refused, naming both prefixes.

>>> model.save_pretrained("out/my-mix")
>>> same = MixedClassifier.from_pretrained("local-dir:out/my-mix")
>>> model.push_to_hub("org/my-mix", benchmark="report.json")
>>> load_model("hf-hub:org/my-mix")
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

import torch

from robust_mix.cards import check_report_is_for, render_card
from robust_mix.config import ModelConfig
from robust_mix.convert import load_weights_strict
from robust_mix.io import FolderLock, atomic_write_files, load_state_dict, state_dict_bytes
from robust_mix.protocol import canonical_dataset, same_eps
from robust_mix.results import BenchmarkResult, ReportLike, read_report
from robust_mix.timm_config import SAVED_ARCHITECTURE, has_timm_form, pretrained_cfg
from robust_mix.validate import (InvalidInputError, InvalidInputTypeError, check_bool, check_device, check_path,
                                 check_revision, check_writable_dir, parse_json)
from robust_mix.version import __version__
from robust_mix.weights import is_offline

if TYPE_CHECKING:
    from huggingface_hub import RepoUrl

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
HUB_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
#: ``config.json`` keys that are not :class:`ModelConfig` fields.
_RECORD_KEYS = ("format_version", "provenance")
#: Written to both ``config.json`` (``provenance``) and ``model.safetensors`` (metadata) by one save: files of
#: different saves (a save interrupted between its two files) are refused on load.
SAVE_ID_KEY = "robust_mix.save_id"

Source = Union[str, Path]


class HubUnreachableError(ConnectionError):
    """The Hugging Face Hub could not be reached (no network, a wrong ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` set);
    the message names the endpoint and says that nothing was uploaded (a ``ConnectionError``, an ``OSError``)."""


# -- where a saved model comes from ------------------------------------------------------------------
def parse_source(source: Source) -> tuple[str, str]:
    """``("local", folder)`` or ``("hub", repo_id)`` for a saved model's location.

    A :class:`~pathlib.Path`, ``"local-dir:..."`` and strings that can only be paths (absolute,
    ``./...``, ``~/...``, more than one ``/``) are folders; ``"hf-hub:org/name"`` is a Hub repo.

    Raises:
        ValueError: a bare string that could be a folder or a Hub repo id (``"org/name"``).
    """
    if isinstance(source, Path):
        return "local", str(source)
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return "hub", text[len(HUB_PREFIX):]
    if text.startswith(LOCAL_PREFIX):
        return "local", text[len(LOCAL_PREFIX):]
    if could_be_repo_id(text):
        raise ValueError(f"{text!r} could be a local folder or a Hugging Face Hub repo id: say which, with "
                         f"'{LOCAL_PREFIX}{text}' (a folder written by save_pretrained) or '{HUB_PREFIX}{text}' "
                         "(a Hub repo, through the local cache)")
    return "local", text


def could_be_repo_id(text: str) -> bool:
    """True for strings of the Hub's ``name`` or ``org/name`` form (which may also be relative paths)."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", text) is not None and ".." not in text


def fetch_file(source: Source, filename: str, *, revision: Optional[str] = None,
               cache_dir: Union[str, Path, None] = None, token: Union[str, bool, None] = None,
               local_files_only: Optional[bool] = None, force_download: bool = False) -> Path:
    """The local path of ``filename`` of a saved model: in its folder, or from its Hub repo via the cache.

    A Hub source may pin a revision as timm's names do, ``"hf-hub:org/name@revision"`` (a branch, tag or commit),
    the same as ``revision=``.

    Raises:
        FileNotFoundError: no such folder, repo, revision or file (offline: not in the cache).
        ValueError: an ambiguous bare string (see :func:`parse_source`), a file given as a folder, or a revision
            in the name that is empty or differs from ``revision``.
    """
    kind, where = parse_source(source)
    if kind == "hub":
        where, revision = _pinned_revision(where, revision)
    if kind == "local":
        folder = check_path("the saved model's folder", where, "a folder written by save_pretrained")
        if not folder.exists():
            raise FileNotFoundError(f"no folder {folder}; save models with model.save_pretrained(folder), or "
                                    f"load a Hub repo with '{HUB_PREFIX}org/name'")
        if not folder.is_dir():
            raise ValueError(f"{folder} is a file; give the folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        path = folder / filename
        if path.is_symlink() and not path.exists():
            raise FileNotFoundError(f"{path} is a link to {os.readlink(path)}, which does not exist (a copy that "
                                    "kept links into a cache or folder since removed): copy the folder again with "
                                    "the files themselves (cp -L), or save the model again")
        if path.is_dir():
            raise FileNotFoundError(f"{path} is a folder, where {folder} should hold the file {filename}: move the "
                                    "folder away and copy or save the model again (model.save_pretrained(folder))")
        if not path.is_file():
            names = sorted(p.name for p in folder.iterdir())
            held = "it is empty" if not names else "it has " + ", ".join(names[:8]) + (
                f" and {len(names) - 8} more" if len(names) > 8 else "")
            raise FileNotFoundError(f"{folder} has no {filename} ({held}){_other_weights_hint(names, filename)}; "
                                    "save models with model.save_pretrained(folder)")
        return path
    return _hub_download(where, filename, revision, cache_dir, token, local_files_only, force_download)


#: Weight files of other tools' layouts: pickles (never read), and shards of several safetensors files.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _other_weights_hint(names: list[str], filename: str) -> str:
    """Why the weight files a folder has instead of ``model.safetensors`` are not read (``""`` for none)."""
    if filename != WEIGHTS_NAME:
        return ""
    pickles = [n for n in names if n.endswith(_PICKLE_SUFFIXES)]
    shards = [n for n in names if n.endswith(".safetensors") or n.endswith(".safetensors.index.json")]
    hints = []
    if pickles:
        hints.append(f"{pickles[0]} would have to be unpickled, which robust_mix never does")
    if shards:
        hints.append(f"a saved mix is one {WEIGHTS_NAME}, and {shards[0]} is not read in its place")
    return ": " + "; ".join(hints) if hints else ""


def _pinned_revision(repo: str, revision: Optional[str]) -> tuple[str, Optional[str]]:
    """``("org/name", revision)`` for a Hub source ``"org/name"`` or ``"org/name@revision"`` (timm's spelling).

    Raises:
        robust_mix.validate.InvalidInputError: an empty revision after ``@``, one that differs from ``revision``, or
            one that names no git ref (:func:`robust_mix.validate.check_revision`: ``../../x`` read outside the cache).
    """
    repo_id, at, pinned = repo.partition("@")
    if revision is not None:
        check_revision("revision", revision)
    if not at:
        return repo, revision
    if not pinned.strip():
        raise InvalidInputError(f"'{HUB_PREFIX}{repo}' names no revision after '@'; write '{HUB_PREFIX}{repo_id}' "
                                f"(the main branch) or '{HUB_PREFIX}{repo_id}@<branch, tag or commit>'")
    check_revision(f"the revision after '@' in '{HUB_PREFIX}{repo}'", pinned)
    if revision is not None and revision != pinned:
        raise InvalidInputError(f"'{HUB_PREFIX}{repo}' pins revision {pinned!r}, but revision={revision!r} was "
                                "given as well; give the revision once")
    return repo_id, pinned


def _hub_download(repo_id: str, filename: str, revision: Optional[str], cache_dir: Union[str, Path, None],
                  token: Union[str, bool, None], local_files_only: Optional[bool], force_download: bool) -> Path:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{repo_id!r} is not a Hugging Face repo id ('org/name'): {err}") from err
    offline = is_offline() if local_files_only is None else local_files_only
    where = f"{HUB_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, token=token,
                                    local_files_only=offline, force_download=force_download))
    except LocalEntryNotFoundError as err:
        cache = cache_dir or constants.HF_HUB_CACHE
        why = "downloads are off (HF_HUB_OFFLINE / ROBUST_MIX_OFFLINE)" if offline else "the Hub could not be reached"
        raise FileNotFoundError(
            f"{filename} of {where} is not in the Hugging Face cache ({cache}) and {why}."
            f"{cached_in_other_case(cache, repo_id)}{cached_revisions(cache, repo_id, revision)} Download it once "
            f"online (robust_mix.load_model('{where}') or `hf download {repo_id}"
            f"{' --revision ' + revision if revision else ''}`), or load a saved folder with '{LOCAL_PREFIX}path'. "
            f"({err.__class__.__name__})") from err
    except RevisionNotFoundError as err:
        raise FileNotFoundError(f"{where}: no such revision") from err
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(f"no Hub repo {repo_id!r}; a private or gated repo needs token=... "
                                "(or `hf auth login`)") from err
    except EntryNotFoundError as err:
        raise FileNotFoundError(f"{where} has no {filename}: it was not saved with robust_mix "
                                "(model.save_pretrained / model.push_to_hub)") from err


def cached_revisions(cache: Union[str, Path], repo_id: str, revision: Optional[str]) -> str:
    """A sentence naming the revisions of ``repo_id`` the cache holds (its branches and tags, and its commits) when
    ``revision`` was asked for and is not among them, or ``""``: a pinned ``@v2`` missing from a cache that has
    ``main`` is another problem than a repo never downloaded."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    try:
        refs = sorted(str(p.relative_to(repo / "refs")) for p in (repo / "refs").rglob("*") if p.is_file())
        commits = sorted(p.name for p in (repo / "snapshots").iterdir() if p.is_dir())
    except OSError:  # the repo is not in the cache at all
        return ""
    if revision is None or not (refs or commits) or revision in refs or any(c.startswith(revision) for c in commits):
        return ""  # the revision is there (another file of it is missing): fetch_file's sentence says which
    held = ", ".join([f"'{r}'" for r in refs] + [f"commit {c[:12]}" for c in commits])
    return (f" The cache has {HUB_PREFIX}{repo_id} at {held}, not at revision {revision!r}: pin one of those "
            f"('{HUB_PREFIX}{repo_id}@<revision>').")


def cached_in_other_case(cache: Union[str, Path], repo_id: str) -> str:
    """A sentence naming the repos of the cache whose ids differ from ``repo_id`` in case only (the Hub takes
    ``ORG/Name`` for ``org/name``, its cache's folders do not), or ``""``."""
    wanted = "models--" + repo_id.replace("/", "--")
    try:
        same = sorted(p.name for p in Path(cache).iterdir() if p.name.lower() == wanted.lower() and p.name != wanted)
    except OSError:  # no cache folder yet
        return ""
    if not same:
        return ""
    other = same[0][len("models--"):].replace("--", "/")
    return (f" The cache has {HUB_PREFIX}{other}, the repo id spelled in another case: the cache's names are "
            f"case-sensitive, write '{HUB_PREFIX}{other}'.")


# -- config.json ---------------------------------------------------------------------------------------
def read_config(path: Union[str, Path], source: Optional[Source] = None) -> tuple[ModelConfig, dict[str, Any]]:
    """Read a saved ``config.json``; returns the config and its provenance (where it was saved from).

    ``source`` (``"hf-hub:org/name"``, a folder) is what the file was read for, named in what to do when it is not a
    robust_mix save (a plain timm model's repo is loaded with timm).

    Raises:
        ValueError: not JSON, not written by robust_mix, a newer format, or unknown fields.
    """
    path = Path(path)
    try:
        data = parse_json(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it may be truncated: save or download it again") from err
    if not isinstance(data, dict) or "format_version" not in data:
        raise ValueError(f"{path} is not a robust_mix config (no 'format_version'){_not_ours_hint(data, source)}")
    version = data["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {version!r}; this robust_mix reads versions 1 to "
                         f"{FORMAT_VERSION}: upgrade robust_mix")
    provenance = data.get("provenance", {})
    fields = {k: v for k, v in data.items() if k not in _RECORD_KEYS and k not in _TIMM_KEYS}
    if version == 1:
        fields = _upgrade_v1(fields)
    try:
        return ModelConfig.from_dict(fields), provenance
    except InvalidInputError as err:
        raise type(err)(f"{path}: {err}; save the model again with model.save_pretrained(folder), or download it "
                        "again") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err


def _not_ours_hint(data: Any, source: Optional[Source]) -> str:
    """What to do with a ``config.json`` that is not a robust_mix save: a timm model's is loaded with timm; one naming
    robust_mix's architecture without robust_mix's fields was cut down or edited."""
    architecture = data.get("architecture") if isinstance(data, dict) else None
    if architecture == SAVED_ARCHITECTURE:
        return (f": it names robust_mix's architecture {SAVED_ARCHITECTURE!r} but lacks the fields of a robust_mix save "
                "(format_version, the bases, the mixing constants): it was edited or written by another tool; save the "
                "model again with model.save_pretrained(folder) (model.push_to_hub(repo_id) for a Hub repo)")
    if isinstance(architecture, str) and architecture:
        name = str(source) if isinstance(source, str) and source.startswith(HUB_PREFIX) else None
        load = (f"timm.create_model({name!r}, pretrained=True)" if name else
                f"timm.create_model({architecture!r}, pretrained=True, pretrained_cfg_overlay=dict(file=...the "
                f"folder's {WEIGHTS_NAME}))")
        return (f": it is a timm model's config (architecture {architecture!r}), not a mix saved by robust_mix; load "
                f"it with {load}, and to mix it with another classifier give both models to "
                "robust_mix.load_model('mix', standard=..., robust=...)")
    return "; save models with model.save_pretrained(folder)"


#: Keys timm's ``hf-hub:`` loader reads, written beside ours by :func:`_record_text`; not
#: :class:`ModelConfig` fields (timm's fourth key, ``num_classes``, is one).
_TIMM_KEYS = ("architecture", "pretrained_cfg", "model_args")


def _upgrade_v1(fields: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept a ``checkpoint`` per base and a free-form ``weights`` dict, both empty when saved."""
    fields = dict(fields)
    for role in ("standard", "robust"):
        if isinstance(fields.get(role), dict):
            fields[role] = {k: v for k, v in fields[role].items() if k != "checkpoint"}
    fields["weights"] = None
    return fields


def _record_text(config: ModelConfig, provenance: dict[str, Any], repo_id: Optional[str] = None) -> str:
    """The text of a saved model's ``config.json``."""
    # timm's factory for SAVED_ARCHITECTURE reads the config fields itself: model_args stays empty.
    timm_keys = {}
    if has_timm_form(config):
        timm_keys = {"architecture": SAVED_ARCHITECTURE, "model_args": {},
                     "pretrained_cfg": pretrained_cfg(config, SAVED_ARCHITECTURE, hf_hub_id=repo_id)}
    else:
        logger.warning("%s: RobustBench's preprocessing %r has no timm form; the folder will not load through "
                       "timm.create_model('hf-hub:...')", config.name, config.preprocessing)
    record = {"format_version": FORMAT_VERSION, **config.to_dict(), "provenance": provenance, **timm_keys}
    return json.dumps(record, indent=2) + "\n"


def load_saved_tensors(model: torch.nn.Module, checkpoint: Union[str, Path], *, expected: str) -> None:
    """Load every tensor of a saved model into ``model``, strictly; nothing is unpickled.

    Args:
        model: a model built from a config (``model.config``).
        checkpoint: a folder written by ``save_pretrained`` or its ``model.safetensors`` (checked against the
            ``config.json`` beside it), or another ``.safetensors`` file of the model's tensors (read on its own).
        expected: the architecture's name, for messages.

    Raises:
        ValueError: not a folder or ``.safetensors`` file, a folder saved from other base models, or
            tensors that do not match the architecture (names, shapes).
        FileNotFoundError: no such folder or file, or the folder has no ``model.safetensors``.
    """
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {checkpoint} of {expected}: no such folder or file; give a folder "
                                f"written by save_pretrained or its {WEIGHTS_NAME}")
    if path.is_dir():
        weights = path / WEIGHTS_NAME
    elif path.suffix == ".safetensors":
        weights = path
    else:
        raise ValueError(f"checkpoint {checkpoint} of {expected}: expected a folder written by save_pretrained or its "
                         f"{WEIGHTS_NAME} (other files, such as .pt or .pth, would have to be unpickled, which "
                         "robust_mix never does)")
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} of {expected}: no {weights}; save models with "
                                "model.save_pretrained(folder)")
    config_path: Optional[Path] = weights.with_name(CONFIG_NAME)  # the config of this file's save, if it is its
    if weights.name != WEIGHTS_NAME or not config_path.is_file() or getattr(model, "config", None) is None:
        config_path = None  # another .safetensors beside a save's files (mine.safetensors) is read on its own
    if config_path is not None:
        saved, provenance = read_config(config_path)
        _check_same_save(config_path, provenance, weights)
        wanted = model.portable_config()
        if _bases(saved) != _bases(wanted):
            raise ValueError(f"checkpoint {checkpoint} holds {saved.name!r}, a mix of {_bases(saved)}; {expected} "
                             f"is a mix of {_bases(wanted)}: give a checkpoint of the same architecture")
        _check_same_mixing(weights.parent, saved, wanted, expected)
    _load_all_tensors(model, weights, f"{expected} (it is not a checkpoint of that architecture)", config_path)


#: The config fields that say how a mix combines its bases (what ``model.alpha = ...`` and the like change, and
#: :meth:`~robust_mix.MixedClassifier.current_config` records), which a checkpoint's tensors do not carry.
_MIXING_FIELDS = ("alpha", "policy", "mixing", "std_scale", "rob_scale", "nuts")


def _check_same_mixing(folder: Path, saved: ModelConfig, wanted: ModelConfig, expected: str) -> None:
    """Refuse to read the tensors of a saved mix into a model that mixes them otherwise (another alpha, alpha range,
    scale...): the model would silently not be the one saved. timm and RobustBench build the entry as registered.

    Raises:
        ValueError: naming the fields that differ, both values, and the two ways to get the model saved.
    """
    ours, theirs = saved.to_dict(), wanted.to_dict()
    differ = [key for key in _MIXING_FIELDS if ours.get(key) != theirs.get(key)]
    if ours.get("policy") and theirs.get("policy"):  # name the policy's own fields
        differ = [k for k in differ if k != "policy"] + [
            f"policy.{k}" for k in ours["policy"] if ours["policy"][k] != theirs["policy"].get(k)]
    if not differ:
        return
    values = lambda config: {k: _field(config, k) for k in differ}  # noqa: E731
    raise ValueError(f"checkpoint {folder} was saved mixing its bases with {values(ours)}, {expected} mixes them "
                     f"with {values(theirs)}: its tensors alone would make another model than the one saved. Load the "
                     f"saved model itself (robust_mix.load_model({LOCAL_PREFIX + str(folder)!r}), which "
                     "robustbench.eval.benchmark takes), or pass those values to timm.create_model(..., "
                     "checkpoint_path=...) as keyword arguments")


def _field(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _bases(config: ModelConfig) -> list[tuple[str, dict[str, Any]]]:
    return [(base.ref, base.kwargs) for base in (config.standard, config.robust)]


# -- the mixin -------------------------------------------------------------------------------------------
class HubMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for a model class with three hooks:
    ``portable_config(config=None) -> ModelConfig``, ``current_config(config=None) -> ModelConfig`` (what a
    benchmark report of the model records) and ``from_config(config, pretrained=False)``; a fourth,
    :meth:`check_savable`, may refuse a model whose save could not be loaded."""

    config: Optional[ModelConfig]

    def check_savable(self) -> None:
        """Raise when the model as it is should not be saved (its save could not be loaded back, or it computes
        NaN); nothing is written then. The model class says what that means
        (:meth:`robust_mix.MixedClassifier.check_savable`)."""

    def save_pretrained(self, save_directory: Union[str, Path], *, config: Optional[ModelConfig] = None,
                        benchmark: Optional[ReportLike] = None, repo_id: Optional[str] = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory``.

        Args:
            save_directory: the folder, created if needed (``~`` is the home folder, as when loading); the three
                files replace those there all at once (:func:`robust_mix.io.atomic_write_files`): a save that fails or
                is interrupted leaves the model saved there before as it was. The folder is locked while the files
                are written (:class:`robust_mix.io.FolderLock`): a second process saving into it meanwhile is refused.
            config: the model's config when ``model.config`` is ``None`` (a model built by hand).
            benchmark: a benchmark report (a ``report.json`` path or a :class:`BenchmarkResult`) for the model card.
            repo_id: the Hub repo the folder is for (named in the card's usage example).

        Returns:
            The folder.

        Raises:
            robust_mix.validate.InvalidInputError: ``benchmark`` is a report of another model or configuration
                (:func:`robust_mix.cards.check_report_is_for`), or the model could not be loaded back from its save
                (:meth:`check_savable`: a part moved to another dtype on its own, NaN in a tensor); nothing is
                written.
            robust_mix.io.FolderInUseError: another process is saving into (or running in) ``save_directory``,
                named by its pid and host; nothing was written.
        """
        portable = self.portable_config(config)  # no config naming both bases: refused before reading the report
        self.check_savable()
        result, source = self._report_for_card(benchmark, config, portable)
        return self._save(save_directory, config, portable, result, source, repo_id)

    def _save(self, save_directory: Union[str, Path], config: Optional[ModelConfig], portable: ModelConfig,
              result: Optional[BenchmarkResult], source: str, repo_id: Optional[str]) -> Path:
        """:meth:`save_pretrained` with the portable config made and the report read and checked (``None``: no
        results in the card)."""
        original = config if config is not None else self.config
        provenance = {"standard": _describe_base(original.standard), "robust": _describe_base(original.robust),
                      "weights": original.weights.describe() if original.weights is not None else None,
                      "robust_mix_version": __version__}
        if repo_id is not None:
            provenance["hub_repo"] = repo_id
        folder = check_path("save_directory", save_directory, "a folder path")  # '~' as 'local-dir:~/...' is read
        if folder is None:
            raise InvalidInputTypeError("save_directory must be a folder path (str or pathlib.Path), got None")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file and save_pretrained writes a folder ({CONFIG_NAME}, {WEIGHTS_NAME}, "
                             f"{CARD_NAME}): give a folder path, or move the file away")
        check_writable_dir(folder, "save folder")  # a parent that is a file, no permission: before writing
        usage = None if repo_id else ("from robust_mix import MixedClassifier\n\n"
                                      f"model = MixedClassifier.from_pretrained({json.dumps(LOCAL_PREFIX + str(folder))})\n"
                                      "log_probs = model(images)")
        card = render_card(portable, benchmark=result, benchmark_source=source, repo_id=repo_id,
                           provenance=provenance, usage=usage)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        provenance["save_id"] = _save_id(portable.to_dict(), state)
        weights = state_dict_bytes(state, metadata={"format": "pt", "robust_mix.format_version": str(FORMAT_VERSION),
                                                    SAVE_ID_KEY: provenance["save_id"]})
        # all three or none: a save interrupted or failing in a folder holding a model leaves that model loadable;
        # one save at a time: two processes moving their three files in turn would leave a mix of both saves
        with FolderLock(folder, "save folder"):
            atomic_write_files(folder, {WEIGHTS_NAME: weights,
                                        CONFIG_NAME: _record_text(portable, provenance, repo_id), CARD_NAME: card})
        logger.info("saved %s (%d tensors) to %s", portable.name, len(state), folder)
        return folder

    @classmethod
    def from_pretrained(cls, source: Source, *, device: Union[str, torch.device, None] = None,
                        revision: Optional[str] = None, cache_dir: Union[str, Path, None] = None,
                        token: Union[str, bool, None] = None, local_files_only: Optional[bool] = None,
                        force_download: bool = False, pretrained: bool = True, **overrides: Any):
        """Rebuild a saved model from a folder (``local-dir:path`` or a ``Path``) or a Hub repo (``hf-hub:org/name``).

        The architectures are built without their original weight sources; every tensor then
        comes from ``model.safetensors``, strictly (a missing, unexpected or mis-shaped tensor is
        an error).

        Args:
            source: where the model was saved.
            device: where to put the model.
            revision, cache_dir, token, force_download: passed to ``huggingface_hub.hf_hub_download``.
            local_files_only: read the Hub cache only; default: on when ``HF_HUB_OFFLINE`` or
                ``ROBUST_MIX_OFFLINE`` is set.
            pretrained: ``False`` builds the architecture only (``model.safetensors`` is not read).
            **overrides: config fields to change before building (``alpha=0.9``, ``alpha_range=...``).

        Raises:
            FileNotFoundError: no such folder, repo or file (offline: not in the cache).
            ValueError: an ambiguous source, a corrupt file, a config naming an unknown
                architecture, or tensors that do not match the architecture.
            robust_mix.validate.InvalidInputError: ``device`` is not a device name or not present here.
            robust_mix.validate.InvalidInputTypeError: ``pretrained``, ``force_download`` or ``local_files_only``
                is not a bool (``"no"`` would count as True); before any download.
        """
        device = check_device(device) if device is not None else None  # before any download or build
        pretrained, force_download = check_bool("pretrained", pretrained), check_bool("force_download", force_download)
        local_files_only = check_bool("local_files_only", local_files_only, optional=True)
        fetch = dict(revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only,
                     force_download=force_download)
        config_path = fetch_file(source, CONFIG_NAME, **fetch)
        config, provenance = read_config(config_path, source)
        described = f"the architecture in {CONFIG_NAME}"
        if overrides:
            config = config.with_overrides(overrides)
            described += (f" with the overrides {overrides} (a saved model's tensors fit its own architecture: "
                          "overrides may change how it mixes, such as alpha or alpha_range, not the networks)")
        try:
            model = cls.from_config(config, pretrained=False)
        except ValueError as err:
            raise ValueError(f"cannot rebuild the model described by {config_path}"
                             f"{' with the overrides ' + str(overrides) if overrides else ''}: {err}") from err
        if pretrained:
            weights_path = fetch_file(source, WEIGHTS_NAME, **fetch)
            _check_same_save(config_path, provenance, weights_path)
            _load_all_tensors(model, weights_path, described, config_path=config_path)
        if device is not None:
            model = model.to(device)
        return model.eval()

    def push_to_hub(self, repo_id: str, *, private: Optional[bool] = None, token: Union[str, bool, None] = None,
                    benchmark: Optional[ReportLike] = None, config: Optional[ModelConfig] = None,
                    commit_message: Optional[str] = None, revision: Optional[str] = None,
                    create_pr: bool = False) -> "RepoUrl":
        """Upload the model to a Hub repo (created if needed) with its config and model card.

        Args:
            repo_id: ``"org/name"`` (``"name"`` goes to the token owner's namespace).
            private: visibility of a newly created repo (``None``: the Hub's default); an existing
                repo keeps its visibility.
            token: a Hub token (default: ``HF_TOKEN`` or the saved login).
            benchmark: a benchmark report whose results go into the card and its ``model-index``.
            config: the model's config when ``model.config`` is ``None``.
            commit_message, revision, create_pr: passed to ``HfApi.upload_folder``.

        Returns:
            The repo's URL (``.repo_id`` is the resolved id).

        Raises:
            robust_mix.validate.InvalidInputError: ``benchmark`` is a report of another model or configuration
                (:func:`robust_mix.cards.check_report_is_for`); refused before the repo is created.
            HubUnreachableError: the Hub could not be reached (no network, a wrong ``HF_ENDPOINT``,
                ``HF_HUB_OFFLINE`` set), naming the endpoint; nothing was uploaded.
        """
        from huggingface_hub import HfApi

        portable = self.portable_config(config)  # fail before creating a repo
        self.check_savable()
        result, source = self._report_for_card(benchmark, config, portable)  # a report of another model too
        api = HfApi(token=token)
        with _reaching_hub(api.endpoint, repo_id):
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory(prefix="robust-mix-push-") as tmp:
            self._save(tmp, config, portable, result, source, url.repo_id)
            with _reaching_hub(api.endpoint, url.repo_id):
                api.upload_folder(repo_id=url.repo_id, folder_path=tmp, repo_type="model", revision=revision,
                                  commit_message=commit_message or "Upload mixed model with robust_mix",
                                  create_pr=create_pr)
        logger.info("pushed to %s", url)
        return url

    def _report_for_card(self, benchmark: Optional[ReportLike], config: Optional[ModelConfig], portable: ModelConfig
                         ) -> tuple[Optional[BenchmarkResult], str]:
        """The report (and its name) for the card of this model, refused when it is of another model or configuration
        (:func:`robust_mix.cards.check_report_is_for`, as ``robust-mix card NAME --benchmark``).

        A report of this model carries the fingerprint :func:`robust_mix.benchmark` records, the current config's
        (the portable config's, for a model loaded from a save). ``(None, "")`` without one.

        Raises:
            robust_mix.validate.InvalidInputError: a report of another model or configuration; the message says so.
        """
        if benchmark is None:
            return None, ""
        result, source = read_report(benchmark)
        current = self.current_config(config)
        check_report_is_for(current, result, source, fingerprints=list(dict.fromkeys(
            [current.fingerprint(), portable.fingerprint()])),
            rerun=f"benchmark this model (robust_mix.benchmark(model, ...), or robust-mix benchmark {current.name}) "
                  "and pass that report.json")
        _check_benchmark(portable, result, source)
        return result, source


@contextlib.contextmanager
def _reaching_hub(endpoint: str, repo_id: str) -> Iterator[None]:
    """Turn a failure to reach the Hub (huggingface_hub's offline-mode error, httpx's bare ``ConnectError:
    [Errno 111] Connection refused``) into a :class:`HubUnreachableError` naming the endpoint and what to do.
    The Hub's own answers (``HfHubHTTPError``: no token, no access) pass unchanged."""
    import httpx
    from huggingface_hub.errors import OfflineModeIsEnabled

    try:
        yield
    except (OfflineModeIsEnabled, httpx.TransportError) as err:
        why = ("HF_HUB_OFFLINE is set" if isinstance(err, OfflineModeIsEnabled)
               else f"{type(err).__name__}: {err}")
        raise HubUnreachableError(
            f"could not reach the Hugging Face Hub at {endpoint} to push {repo_id!r} ({why}); nothing was uploaded. "
            "Check the network and HF_ENDPOINT (unset HF_HUB_OFFLINE), or save the model now "
            "(model.save_pretrained(FOLDER), robust-mix save NAME FOLDER) and push that folder later "
            f"(robust-mix push local-dir:FOLDER {repo_id})") from err


def _describe_base(base: Any) -> Optional[str]:
    if base is None:
        return None
    weights = getattr(base, "weights", None)
    return base.ref + (f" with weights {weights.describe()}" if weights is not None else "")


def _save_id(fields: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    """A digest of the config's fields (:meth:`ModelConfig.to_dict`, or the same fields read back from
    ``config.json``) and every tensor (names, dtypes, shapes, bytes): the same model saved twice writes the same
    files, a ``config.json`` beside the tensors of another save is found out, and so is a file changed after the
    save (:func:`_check_unchanged`)."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    for key in sorted(state):
        tensor = state[key].contiguous().reshape(-1)
        digest.update(f"{key}:{tensor.dtype}:{tuple(state[key].shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy())  # the buffer itself: no copy of a large model
    return digest.hexdigest()[:32]


def _check_same_save(config_path: Path, provenance: Any, weights_path: Path) -> None:
    """Refuse a ``config.json`` and ``model.safetensors`` written by different saves (both carry the save's id).

    Folders saved before the id existed carry none and are not checked.

    Raises:
        ValueError: the two ids differ.
    """
    config_id = provenance.get("save_id") if isinstance(provenance, dict) else None
    if config_id is None:
        return
    weights_id = _weights_save_id(weights_path)
    if weights_id is not None and weights_id != config_id:
        raise ValueError(f"{config_path} and {weights_path} are from different saves (save ids {config_id} and "
                         f"{weights_id}): a save_pretrained that was interrupted, or files copied from two "
                         "folders; save the model again")


def _check_unchanged(config_path: Path, weights_path: Path, state: dict[str, torch.Tensor]) -> None:
    """Refuse a saved model whose ``config.json`` or tensors changed after ``save_pretrained`` wrote them: their
    contents must still give the save id both files carry (a value edited by hand in ``config.json``, a field
    removed from it, a tensor damaged on disk or in transfer would load as another model, silently). The id of
    ``config.json``, or else the one in the tensors' metadata (an id removed from ``config.json`` with the fields).

    Folders saved before the id existed carry none and are not checked.

    Raises:
        ValueError: the contents no longer give the save id; names the files, what may have happened and what to do.
    """
    data = parse_json(config_path.read_text())  # read_config has read it already: a JSON object
    provenance = data.get("provenance")
    saved_id = provenance.get("save_id") if isinstance(provenance, dict) else None
    if saved_id is None:
        saved_id = _weights_save_id(weights_path)
    if saved_id is None:
        return
    fields = {k: v for k, v in data.items() if k not in _RECORD_KEYS and k not in _TIMM_KEYS}
    if _save_id(fields, state) == saved_id:
        return
    lacking = sorted(set(ModelConfig.__dataclass_fields__) - set(fields))
    lacks = f"; {CONFIG_NAME} lacks the field(s) {lacking}, which save_pretrained writes" if lacking else ""
    raise ValueError(f"{config_path} or {weights_path} changed after save_pretrained wrote them: their contents no "
                     f"longer give the save id {saved_id} both carry{lacks}. A file damaged on disk or in transfer, or "
                     "edited by hand, would load as another model; nothing was loaded. Download or copy the folder "
                     "again (or save the model again); to change a saved model's settings, load it with overrides "
                     "(from_pretrained(..., alpha=0.9), 'local-dir:PATH,alpha=0.9') and save that")


def _weights_save_id(weights_path: Path) -> Optional[str]:
    """The save id in a ``model.safetensors``'s metadata; ``None`` when it has none or cannot be read (then
    :func:`robust_mix.io.load_state_dict` names the problem)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            return (handle.metadata() or {}).get(SAVE_ID_KEY)
    except Exception:  # noqa: BLE001 - safetensors raises its own error types
        return None


def _load_all_tensors(model: torch.nn.Module, path: Path, architecture: str = f"the architecture in {CONFIG_NAME}",
                      config_path: Optional[Path] = None) -> None:
    """Every tensor of ``model`` from ``path``, strictly; a mismatch (names, shapes, dtypes) is a
    ``ValueError`` naming both. With ``config_path`` (the ``config.json`` the model was built from), the two
    files must be as ``save_pretrained`` wrote them (:func:`_check_unchanged`), checked after the names, shapes
    and dtypes."""
    state = load_state_dict(path)
    dtypes = collections.Counter(t.dtype for t in state.values() if t.is_floating_point())
    if dtypes:  # a model saved in half precision loads in half precision; the dtype most tensors have is the
        # model's: an adaptive model in half precision keeps its ratio statistics in float32 (RatioBatchNorm)
        model.to(dtypes.most_common(1)[0][0])
    own = model.state_dict()
    wrong = [f"{k} ({str(v.dtype).removeprefix('torch.')}, the model has {str(own[k].dtype).removeprefix('torch.')})"
             for k, v in state.items() if k in own and v.dtype != own[k].dtype]
    if wrong:  # load_state_dict would cast them silently (integers into floats, half into float)
        raise ValueError(f"{path} does not match {architecture}: tensors of another dtype {wrong[:6]} "
                         f"({len(wrong)}); a file written by save_pretrained holds the model's own dtypes: save it again")
    try:
        load_weights_strict(model, state, str(path))
    except ValueError as err:
        detail = str(err).split(": ", 1)[-1]  # load_weights_strict's text after its own "<path> does not match"
        raise ValueError(f"{path} does not match {architecture}: {detail}") from err
    if config_path is not None:
        _check_unchanged(config_path, path, state)


def _check_benchmark(config: ModelConfig, benchmark: BenchmarkResult, source: str) -> None:
    """Warn when a report of this model evaluated it on another data set or eps than its config states (a report of
    another model or configuration is refused before, by :func:`robust_mix.cards.check_report_is_for`)."""
    if config.dataset != "custom" and canonical_dataset(benchmark.dataset) != canonical_dataset(config.dataset):
        logger.warning("benchmark report %s is on %r, the model is for %r", source,
                       benchmark.dataset, config.dataset)
    if config.eps is not None and benchmark.eps is not None and not same_eps(benchmark.eps, config.eps):
        logger.warning("benchmark report %s uses eps %g, the model's config says %g", source,
                       benchmark.eps, config.eps)
