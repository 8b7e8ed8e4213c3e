"""robust_mix's models in timm's registry, which is how timm and RobustBench reach them by name.

Neither library discovers plugins: ``import robust_mix`` (which imports this module) must come
first. From then on

- every registry entry on one of RobustBench's data sets and threat models, the zoo's and those
  registered later with :func:`~robust_mix.registry.register_model`, is the timm model
  :func:`~robust_mix.timm_config.timm_name` (``robustmix_<method>_<dataset>_<threat>``), which
  ``robustbench.utils.load_model("RobustMix-<method>", dataset=..., threat_model=...)`` finds;
- ``robustmix_saved`` (:data:`~robust_mix.timm_config.SAVED_ARCHITECTURE`) rebuilds the folders
  ``save_pretrained`` writes, for ``timm.create_model("hf-hub:org/name", pretrained=True)``;
- ``timm.create_model(name, checkpoint_path=...)`` (RobustBench's ``custom_checkpoint=``) reads a
  ``save_pretrained`` folder or its ``model.safetensors`` for these models and for ``hf-hub:`` repos of saved
  mixes, never a pickle;
- a RobustBench name of a robust_mix entry asked for with a data set or threat model it does not
  have is an error naming those it has; so is a robust_mix name given to ``timm.create_model`` that
  is not a timm model (a registry name, an entry on a data set RobustBench does not know), and a registry or
  timm name given to RobustBench's ``load_model`` (it is told the entry's RobustBench name).

Every factory builds through :meth:`MixedClassifier.from_config` (the one builder) and returns the
model in eval mode with a timm ``pretrained_cfg``. ``timm.list_pretrained("robustmix*")`` lists the entries
whose ``pretrained=True`` loads every part's weights (:func:`lists_as_pretrained`),
although their ``pretrained_cfg`` names no ``url``, ``file`` or ``hf_hub_id``: timm's own loader fetches one
state dict from those, and a mix reads two or three files its factory fetches itself
(:func:`robust_mix._compat.mark_timm_pretrained`). ``robustmix_saved`` is listed by ``timm.list_models`` only:
it has weights only as an ``hf-hub:`` repo. Weights come from the ``model_dir`` given to
``robustbench.utils.load_model`` (which RobustBench itself does not pass to timm models:
:func:`robust_mix._compat.robustbench_model_dir`), else :func:`~robust_mix.weights.default_model_dir`
(``$ROBUST_MIX_MODEL_DIR`` or RobustBench's default ``./models``), fetched with RobustBench's
downloader when online. Keyword arguments of ``timm.create_model`` other than ``num_classes`` and ``in_chans`` (the
model's own counts only) are config overrides (``alpha=0.9``, ``alpha_range=(0.8, 1.0)``), as in
:func:`robust_mix.load_model`; timm's architecture options (``features_only``, ``global_pool``, ...:
:data:`TIMM_ARCHITECTURE_ARGS`) are refused, saying why.
timm 1.0.9 drops keyword arguments that are None, so ``alpha=None`` never arrives and the entry's own alpha is
kept: to get the adaptive policy use the entry as registered, or ``robust_mix.load_model(name, alpha=None)``.

>>> import robust_mix
>>> robustbench.utils.load_model("RobustMix-AdaSmooth", dataset="cifar100", threat_model="Linf")
>>> timm.create_model("robustmix_adasmooth_cifar100_linf", pretrained=True)
"""
from __future__ import annotations

import contextlib
import functools
import logging
import sys
from typing import Any, Callable, Iterator, Mapping, Optional

from robust_mix import _compat
from robust_mix.config import ModelConfig, override_fields
from robust_mix.hub import CONFIG_NAME, HUB_PREFIX, fetch_file, load_saved_tensors
from robust_mix.mixing import MixedClassifier
from robust_mix.registry import get_model_config, is_model, list_models, on_register
from robust_mix.timm_config import (PREFIX, SAVED_ARCHITECTURE, has_pretrained_weights, robustbench_name,
                                    robustbench_timm_name, timm_name)
from robust_mix.timm_config import pretrained_cfg as timm_pretrained_cfg  # timm's factories take a `pretrained_cfg`
from robust_mix.validate import InvalidInputError, InvalidInputTypeError, parse_json, spelled_alike
from robust_mix.weights import default_model_dir

logger = logging.getLogger(__name__)

#: Attribute of each entry's timm factory naming the registry entry it builds.
ENTRY_ATTRIBUTE = "robust_mix_entry"
#: ``pretrained_cfg`` keys through which timm would load weights; robust_mix's factories read none of them.
WEIGHT_KEYS = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename")
#: ``pretrained_cfg`` keys stating the model's input contract and classes, fixed by the model itself.
CONTRACT_KEYS = ("mean", "std", "input_size", "fixed_input_size", "num_classes")
#: Keyword arguments of timm's own architectures (``timm.create_model(name, features_only=True)``), and loading options
#: this timm hands on to the model (``cache_dir``, ``revision``), which a mix does not take, with what to do instead;
#: ``in_chans`` is taken when it is the model's own channel count.
_FEATURES = ("a mix returns class scores only, not feature maps or pooled features; create the base you want features "
             "of with timm itself (model.standard and model.robust are the bases)")
TIMM_ARCHITECTURE_ARGS: dict[str, str] = {
    **dict.fromkeys(("features_only", "out_indices", "feature_cfg", "feature_cls", "output_stride"), _FEATURES),
    **dict.fromkeys(("global_pool", "drop_rate", "drop_path_rate", "drop_block_rate", "pretrained_strict"),
                    "a mix's layers are its bases' as they were trained and saved; change a base with timm and mix "
                    "it (robust_mix.load_model('mix', standard=..., robust=...))"),
    **dict.fromkeys(("img_size", "in_chans"),
                    "a mix takes the images its bases were trained on (its pretrained_cfg's input_size); resize or "
                    "convert the images instead (timm.data.create_transform(**timm.data.resolve_data_config({}, "
                    "model=model)))"),
    # loading options of newer timm or of huggingface_hub, which this timm hands on to the model as arguments
    "cache_dir": ("this timm's create_model does not take cache_dir and handed it on to the model; an hf-hub: repo is "
                  "read from the Hugging Face cache (set HF_HUB_CACHE or HF_HOME before starting Python), or give "
                  "the cache to robust_mix.MixedClassifier.from_pretrained('hf-hub:org/name', cache_dir=...); a "
                  "registry entry reads its weights from ROBUST_MIX_MODEL_DIR (RobustBench's model_dir)"),
    "revision": ("timm takes the revision in the name: timm.create_model('hf-hub:org/name@<branch, tag or commit>', "
                 "pretrained=True)"),
}
#: timm's convention: ``timm.models.register_model`` reads a model's pretrained_cfg from its module's ``default_cfgs``.
default_cfgs: dict[str, dict[str, Any]] = {}
#: The public names; timm's ``register_model`` appends each model it registers from this module.
__all__ = ["claims_checkpoint", "entry_of", "explain_timm_name", "explain_unknown", "is_mirrored",
           "isolated_timm_registry", "lists_as_pretrained", "mirror", "robustbench_scope", "robustbench_zoo_names"]


# -- what RobustBench knows ------------------------------------------------------------------------------
def robustbench_scope() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """RobustBench's data sets (``cifar10``, ...) and threat models (``Linf``, ...)."""
    _compat.import_robustbench()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return tuple(d.value for d in BenchmarkDataset), tuple(t.value for t in ThreatModel)


@functools.lru_cache(maxsize=None)
def robustbench_zoo_names() -> dict[str, str]:
    """The timm names RobustBench's ``load_model`` tries for its own zoo entries -> ``"<dataset>/<threat>/<id>"``."""
    _compat.import_robustbench()
    from robustbench.model_zoo import model_dicts

    return {robustbench_timm_name(rb_id, dataset.value, threat.value): f"{dataset.value}/{threat.value}/{rb_id}"
            for dataset, by_threat in model_dicts.items() for threat, entries in by_threat.items()
            for rb_id in entries}


def is_mirrored(config: ModelConfig) -> bool:
    """True for entries on a data set and threat model RobustBench knows: those become timm models."""
    datasets, threat_models = robustbench_scope()
    return config.dataset in datasets and config.threat_model in threat_models


def _check_spelling(config: ModelConfig) -> None:
    """Refuse an entry whose data set or threat model is one of RobustBench's spelled otherwise (``"CIFAR10"``,
    ``"cifar_100"``, ``"linf"``): it would silently not become a timm model, and RobustBench would not find it.

    Raises:
        robust_mix.validate.InvalidInputError: naming RobustBench's spelling.
    """
    for field, value, known in zip(("dataset", "threat_model"), (config.dataset, config.threat_model),
                                   robustbench_scope()):
        match = spelled_alike(str(value), known)
        if match is not None and match != value:
            raise InvalidInputError(f"entry {config.name!r} has {field}={value!r}, RobustBench's {match!r} spelled "
                                    f"otherwise: write {field}={match!r} (RobustBench and timm reach an entry by "
                                    "its data set and threat model exactly as RobustBench spells them)")


def entry_of(model_name: str) -> Optional[str]:
    """The registry entry a timm model name builds, or ``None`` for other names."""
    timm = _compat.import_timm()
    _, name = timm.models.parse_model_name(model_name)
    name = name.split(".", 1)[0]
    return getattr(timm.models.model_entrypoint(name), ENTRY_ATTRIBUTE, None) if timm.is_model(name) else None


# -- registration -------------------------------------------------------------------------------------------
def mirror(config: ModelConfig) -> None:
    """Register an entry with timm if RobustBench knows its data set and threat model (an
    :func:`~robust_mix.registry.on_register` listener).

    Raises:
        ValueError: its timm name is not a plain name, is one RobustBench uses for its own zoo, or is
            taken in timm already; or its data set or threat model is RobustBench's spelled otherwise.
    """
    _check_spelling(config)
    if not is_mirrored(config):
        return
    name = timm_name(config)
    _check_free(name, f"entry {config.name!r}")
    default_cfgs[name] = timm_pretrained_cfg(config, name)
    _register(_entry_factory(config.name, name))
    if lists_as_pretrained(config):
        _compat.mark_timm_pretrained(name)


def lists_as_pretrained(config: ModelConfig) -> bool:
    """Whether timm lists the entry as pretrained (``timm.list_pretrained``): ``pretrained=True`` loads trained
    tensors for every part (:func:`~robust_mix.timm_config.has_pretrained_weights`), and a base taken with timm's
    own weights (``timm/<arch>[.<tag>]`` without a file) is one timm has weights for."""
    if not has_pretrained_weights(config):
        return False
    timm = _compat.import_timm()
    for base in (config.standard, config.robust):
        if base.weights is None and base.ref.startswith("timm/"):
            try:
                cfg = timm.models.get_pretrained_cfg(base.ref[len("timm/"):])
            except RuntimeError:  # a tag timm does not have: pretrained=True fails
                return False
            if cfg is None or not cfg.has_weights:
                return False
    return True
    logger.debug("registered %s with timm as %s", config.name, name)


def _check_free(name: str, what: str) -> None:
    shadowed = robustbench_zoo_names().get(name)
    if shadowed is not None:
        raise ValueError(f"{what} would be the timm model {name!r}, which robustbench.utils.load_model also asks "
                         f"timm for when it loads RobustBench's own {shadowed}: rename the entry")
    if _compat.import_timm().is_model(name):
        owner = entry_of(name)
        raise ValueError(f"{what} would be the timm model {name!r}, which timm has already "
                         f"({'for the entry ' + repr(owner) if owner else 'a timm architecture'}): rename the entry")


def _register(factory: Callable[..., MixedClassifier]) -> None:
    globals()[factory.__name__] = factory  # timm lists it in this module's __all__, as its own model modules
    _compat.import_timm().models.register_model(factory)


def _entry_factory(entry: str, name: str) -> Callable[..., MixedClassifier]:
    def factory(pretrained: bool = False, pretrained_cfg: Any = None,
                pretrained_cfg_overlay: Optional[dict[str, Any]] = None, num_classes: Optional[int] = None,
                **overrides: Any) -> MixedClassifier:
        if isinstance(pretrained_cfg, str):  # timm passes the tag of 'name.tag' as pretrained_cfg
            raise ValueError(f"{name} has no pretrained tag {pretrained_cfg!r} ({name}.{pretrained_cfg} or "
                             f"pretrained_cfg={pretrained_cfg!r}): it has one pretrained config and no tags; name it "
                             f"{name!r} and change the config's fields with pretrained_cfg_overlay={{...}}")
        if pretrained_cfg is not None:
            raise ValueError(f"{name} has one pretrained config and no tags, got pretrained_cfg={pretrained_cfg!r}; "
                             "change its fields with pretrained_cfg_overlay={...}")
        config = get_model_config(entry)
        config = config.with_overrides(_config_overrides(name, overrides)) if overrides else config
        _check_num_classes(name, config, config.num_classes, num_classes)  # stated: before anything is built
        model_dir = _compat.robustbench_model_dir() or default_model_dir()  # RobustBench's model_dir, when given
        cfg = _overlaid(name, timm_pretrained_cfg(config, name), pretrained_cfg_overlay)
        _check_in_chans(name, cfg, overrides.get("in_chans"))
        model = MixedClassifier.from_config(config, model_dir=model_dir, pretrained=pretrained)
        _check_num_classes(name, config, model.num_classes, num_classes)  # else the bases' count
        if cfg.get("num_classes") is None:
            cfg["num_classes"] = model.num_classes
        return _as_timm_model(model, cfg)

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__doc__ = (f"robust_mix's {entry!r} (RobustBench name {robustbench_name(get_model_config(entry))!r}), "
                       "built by MixedClassifier.from_config; keyword arguments are config overrides.")
    setattr(factory, ENTRY_ATTRIBUTE, entry)
    return factory


def robustmix_saved(pretrained: bool = False, pretrained_cfg: Any = None,
                    pretrained_cfg_overlay: Optional[dict[str, Any]] = None, num_classes: Optional[int] = None,
                    **overrides: Any) -> MixedClassifier:
    """A model saved with ``save_pretrained``, rebuilt from its Hub repo's ``config.json`` (timm's
    ``hf-hub:`` loader passes the repo as ``pretrained_cfg["hf_hub_id"]``); keyword arguments are
    config overrides."""
    cfg = pretrained_cfg.to_dict() if hasattr(pretrained_cfg, "to_dict") else dict(pretrained_cfg or {})
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}  # JSON lists, as timm's tuples
    if not cfg.get("hf_hub_id"):
        raise ValueError(f"{SAVED_ARCHITECTURE} is the architecture of models saved with save_pretrained and it "
                         "reads their config.json: create one with timm.create_model('hf-hub:org/name', "
                         "pretrained=True) after import robust_mix, or robust_mix.load_model('local-dir:PATH') "
                         "for a folder")
    repo_id, _, revision = cfg["hf_hub_id"].partition("@")
    name = f"hf-hub:{cfg['hf_hub_id']}"
    overlaid = _overlaid(name, cfg, pretrained_cfg_overlay)
    config_overrides = _config_overrides(name, overrides)
    _check_in_chans(name, overlaid, overrides.get("in_chans"))
    model = MixedClassifier.from_pretrained(HUB_PREFIX + repo_id, revision=revision or None, pretrained=pretrained,
                                            **config_overrides)
    _check_num_classes(f"hf-hub:{cfg['hf_hub_id']}", model.config, model.num_classes, num_classes)
    return _as_timm_model(model, overlaid)


def _config_overrides(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``timm.create_model``'s keyword arguments that are config overrides; ``in_chans`` is left for
    :func:`_check_in_chans`.

    Raises:
        robust_mix.validate.InvalidInputTypeError: an argument of timm's own architectures
            (:data:`TIMM_ARCHITECTURE_ARGS`: ``features_only``, ``global_pool``, ...), or any other that is not a
            config field, naming it and what to do (a ``TypeError``, as timm's models raise for arguments they
            do not take, and a ``ValueError``).
    """
    fields = override_fields()
    other = [k for k in kwargs if k not in fields and k != "in_chans"]
    if other:
        key = other[0]
        hint = TIMM_ARCHITECTURE_ARGS.get(key, "it is neither a config field nor an option robust_mix's models take")
        raise InvalidInputTypeError(f"{name}: timm.create_model(..., {key}={kwargs[key]!r}) is not supported by "
                                    f"robust_mix's models: {hint}. Their keyword arguments are config overrides "
                                    f"({list(fields)}) and num_classes (checked against the model's)")
    return {k: v for k, v in kwargs.items() if k != "in_chans"}


def _check_in_chans(name: str, cfg: dict[str, Any], in_chans: Any) -> None:
    """Take ``in_chans`` (which timm users pass for every model) when it is the channel count of the model's
    ``input_size``; refuse any other, as timm cannot change a mix's first layers.

    Raises:
        robust_mix.validate.InvalidInputError: ``in_chans`` is not the model's channel count, or the model states
            none.
    """
    if in_chans is None:
        return
    size = cfg.get("input_size")
    channels = size[0] if isinstance(size, (tuple, list)) and size else None
    if channels is None or isinstance(in_chans, bool) or in_chans != channels:
        takes = f"takes {channels}-channel images (input_size {tuple(size)})" if channels else "states no input size"
        raise InvalidInputError(f"{name} {takes}; timm.create_model(..., in_chans={in_chans!r}) cannot change that: "
                                f"{TIMM_ARCHITECTURE_ARGS['in_chans']}")


def _check_num_classes(name: str, config: ModelConfig, count: Optional[int], num_classes: Optional[int]) -> None:
    """Refuse ``timm.create_model``'s ``num_classes`` (RobustBench passes the data set's) when the model classifies
    ``count`` classes; ``count`` ``None`` (an entry that leaves the count to its bases, before they are built) is
    not checked."""
    if num_classes is not None and count is not None and num_classes != count:
        hint = (f" (timm's num_classes=0, a model without its classifier, is not available: {_FEATURES})"
                if num_classes == 0 else "")
        raise ValueError(f"{name} classifies {count} classes ({config.dataset}), num_classes={num_classes} "
                         "was asked for; a mixed model's classes come from its base models: mix bases with that "
                         f"many classes (robust_mix.load_model('mix', standard=..., robust=...)){hint}")


def _overlaid(name: str, cfg: dict[str, Any], overlay: Optional[dict[str, Any]]) -> dict[str, Any]:
    """``cfg`` with ``timm.create_model``'s ``pretrained_cfg_overlay`` applied, refusing the keys it cannot change.

    Raises:
        robust_mix.validate.InvalidInputError: the overlay names a weight source (robust_mix reads no weights
            through ``pretrained_cfg``: the file would be ignored), or changes the input contract or the
            classes (timm's data transforms follow ``pretrained_cfg``, so images would be normalised twice or
            resized to a shape the model refuses, while the model itself stays as it is).
        robust_mix.validate.InvalidInputTypeError: the overlay is not a dict (it failed with an ``AttributeError``).
    """
    if overlay is not None and not isinstance(overlay, Mapping):
        raise InvalidInputTypeError(f"{name}: pretrained_cfg_overlay must be a dict of pretrained_cfg fields (e.g. "
                                    f"{{'crop_pct': 0.9}}), got {type(overlay).__name__} {overlay!r}")
    overlay = {k: tuple(v) if isinstance(v, list) else v for k, v in (overlay or {}).items()}  # timm's tuples
    weights = sorted(k for k in WEIGHT_KEYS if overlay.get(k) is not None and overlay[k] != cfg.get(k))
    if weights:
        raise InvalidInputError(
            f"{name}: pretrained_cfg_overlay sets {weights}, a weight source, but robust_mix models read no weights "
            "through timm's pretrained_cfg (it would be ignored); to load a model's tensors from a file pass "
            "checkpoint_path=<a save_pretrained folder or its model.safetensors>")
    changed = sorted(k for k in CONTRACT_KEYS if k in overlay and overlay[k] != cfg.get(k))
    if changed:
        stated = {k: cfg.get(k) for k in changed}
        raise InvalidInputError(
            f"{name}: pretrained_cfg_overlay changes {changed}, which state what the model itself takes and returns "
            f"({stated}: raw [0, 1] images, normalised inside the model); timm's data transforms would follow the "
            "overlay while the model stays as it is. Leave them out (interpolation, crop_pct and crop_mode may "
            "change)")
    return {**cfg, **overlay}


def _as_timm_model(model: MixedClassifier, cfg: dict[str, Any]) -> MixedClassifier:
    model.pretrained_cfg = cfg  # also its default_cfg, timm's older name, which RobustBench reads
    return model.eval()


# -- custom checkpoints and RobustBench's errors -------------------------------------------------------------
def _read_checkpoint(model: MixedClassifier, path: str) -> None:
    load_saved_tensors(model, path, expected=model.pretrained_cfg["architecture"])


def claims_checkpoint(model_name: str) -> bool:
    """True for the timm names whose ``checkpoint_path`` robust_mix reads (never unpickled): its registry entries,
    and ``hf-hub:`` repos whose ``config.json`` names :data:`~robust_mix.timm_config.SAVED_ARCHITECTURE` (a
    ``save_pretrained`` folder shared on the Hub), which timm would otherwise ``torch.load`` with
    ``weights_only=False``. A repo whose ``config.json`` cannot be read is left to timm, which names the problem."""
    if entry_of(model_name) is not None:
        return True
    timm = _compat.import_timm()
    source, repo = timm.models.parse_model_name(model_name)
    if source != "hf-hub":
        return False
    try:
        _, architecture, _ = timm.models.load_model_config_from_hf(repo)
    except Exception:  # noqa: BLE001 - not found, offline, not JSON: timm's own create_model says which
        return False
    return architecture == SAVED_ARCHITECTURE


def explain_unknown(model_name: str, dataset: str, threat_model: str) -> Optional[str]:
    """Why RobustBench found no model ``model_name`` for ``dataset``/``threat_model``, when the name is
    robust_mix's (``RobustMix-...``); ``None`` for other names."""
    timm = _compat.import_timm()
    ours = [get_model_config(entry) for entry in map(entry_of, timm.list_models(f"{PREFIX}_*")) if entry]
    key = model_name.lower().replace("-", "_")
    matches = [c for c in ours if robustbench_name(c).lower().replace("-", "_") == key]
    if not matches:
        other = _other_name_of_ours(model_name)
        if other is not None:
            return other
        if not key.startswith(f"{PREFIX}_"):
            return None
        known = sorted(f"{robustbench_name(c)} ({c.dataset}, {c.threat_model})" for c in ours)
        return (f"robust_mix has no entry RobustBench calls {model_name!r}; the RobustBench names of robust_mix's "
                f"entries are {known} (robust_mix.list_models() lists every entry)")
    if robustbench_timm_name(model_name, dataset, threat_model) in {timm_name(c) for c in matches}:
        return None  # the model exists: RobustBench's KeyError came from elsewhere
    has = "; ".join(f"dataset={c.dataset!r}, threat_model={c.threat_model!r} (entry {c.name!r})" for c in matches)
    return (f"RobustBench name {model_name!r} is robust_mix's for {has}, not for dataset={dataset!r}, "
            f"threat_model={threat_model!r}: pass one of those")


def _other_name_of_ours(model_name: str) -> Optional[str]:
    """What to pass to RobustBench's ``load_model`` when ``model_name`` is another name of a robust_mix entry: its
    registry name or alias (in any case, ``"CIFAR100-AdaSmooth"``) or its timm name; ``None`` for other names.
    RobustBench answered these with a bare ``KeyError: 'cifar100-adasmooth'``."""
    entry = entry_of(model_name) if model_name.isidentifier() else None
    kind = "timm name"
    if entry is None:
        by_lower = {n.lower(): n for n in list_models(include_aliases=True)}
        entry, kind = by_lower.get(model_name.lower()), "registry name"
    if entry is None:
        return None
    config = get_model_config(entry)
    if not is_mirrored(config):
        return (f"{model_name!r} is robust_mix's {kind} of {config.name!r}, an entry on {config.dataset!r}, which "
                f"RobustBench does not know: load it with robust_mix.load_model({config.name!r})")
    return (f"{model_name!r} is robust_mix's {kind} of {config.name!r}; RobustBench calls it "
            f"{robustbench_name(config)!r}: robustbench.utils.load_model({robustbench_name(config)!r}, "
            f"dataset={config.dataset!r}, threat_model={config.threat_model!r})")


def explain_timm_name(model_name: str) -> Optional[str]:
    """Why timm has no model ``model_name`` when it names a robust_mix entry (``"cifar100-adasmooth"``,
    ``"fmnist-robust"``, also after a ``"robust_mix/"``-like prefix) or looks like one of its timm names
    (``robustmix_...``), or why timm could not build an ``hf-hub:`` repo of a saved mix (:func:`_explain_saved_repo`);
    ``None`` for other names."""
    if model_name.startswith(HUB_PREFIX):
        return _explain_saved_repo(model_name)
    timm = _compat.import_timm()
    entry = model_name.rsplit("/", 1)[-1]
    candidates = [n for n in (model_name, entry) if n]
    for name in candidates:
        if is_model(name):
            config = get_model_config(name)
            if is_mirrored(config):
                return (f"{name!r} is robust_mix's registry name; its timm model is {timm_name(config)!r} "
                        f"(RobustBench name {robustbench_name(config)!r})")
            return (f"{name!r} is a robust_mix entry on {config.dataset!r}, which RobustBench does not know, so it is "
                    f"not a timm model: load it with robust_mix.load_model({config.name!r})")
    if entry.lower().replace("-", "_").startswith(f"{PREFIX}_"):  # also a RobustBench name, 'RobustMix-AdaSmooth'
        return (f"robust_mix has no timm model {entry!r}; its timm models are {timm.list_models(f'{PREFIX}_*')} "
                "(after import robust_mix; entries on other data sets, such as fashion-mnist, load with "
                "robust_mix.load_model)")
    return None


def _explain_saved_repo(name: str) -> Optional[str]:
    """Why timm cannot build ``hf-hub:`` repo ``name`` when its ``config.json`` is a robust_mix save whose
    ``architecture`` (the key timm builds from) is not :data:`~robust_mix.timm_config.SAVED_ARCHITECTURE`: edited, or
    left out by a save whose preprocessing has no timm form. timm failed with ``KeyError: 'architecture'``, or built
    the architecture named and failed inside it. A ``config.json`` that cannot be fetched is explained as
    :func:`~robust_mix.hub.fetch_file` does (which repo and revision, which cache, offline or not, a repo cached under
    another case or at other revisions). ``None`` when the config is not such a save or is not JSON."""
    try:
        data = parse_json(fetch_file(name, CONFIG_NAME).read_text())
    except FileNotFoundError as err:  # not in the cache (offline), no such repo or revision: timm's own error named
        return str(err)  # neither the repo nor the cache
    except Exception:  # noqa: BLE001 - not JSON, not a repo id: timm's own error stands
        return None
    if not isinstance(data, dict) or "format_version" not in data or data.get("architecture") == SAVED_ARCHITECTURE:
        return None
    has = f"names architecture {data['architecture']!r}" if "architecture" in data else "has no 'architecture'"
    return (f"the config.json of {name} is a robust_mix save, which timm builds with the architecture "
            f"{SAVED_ARCHITECTURE!r}, but it {has} (the file was edited, or the model's preprocessing has no timm "
            f"form); load it with robust_mix.load_model({name!r}), or save and push the model again")


# -- tests ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def isolated_timm_registry() -> Iterator[None]:
    """Entries mirrored into timm inside the block are gone from timm (and from this module) after it."""
    module = sys.modules[__name__]
    names, public, cfgs = set(vars(module)), list(__all__), dict(default_cfgs)
    with _compat.preserve_timm_registry():
        try:
            yield
        finally:
            for name in set(vars(module)) - names:
                delattr(module, name)
            __all__[:] = public
            default_cfgs.clear()
            default_cfgs.update(cfgs)


def _install() -> None:
    assert robustmix_saved.__name__ == SAVED_ARCHITECTURE
    _check_free(SAVED_ARCHITECTURE, "robust_mix's architecture of saved models")
    _register(robustmix_saved)
    _compat.add_checkpoint_reader(claims_checkpoint, _read_checkpoint)
    _compat.add_unknown_model_explainer(explain_unknown)
    _compat.add_timm_name_explainer(explain_timm_name)
    _compat.check_benchmark_arguments()
    _compat.check_clean_accuracy_arguments()
    on_register(mirror)


_install()
