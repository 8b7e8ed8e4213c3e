"""The one place where third-party quirks are papered over.

- **AutoAttack's name.** RobustBench 1.1.1 imports ``autoattack`` (``AutoAttack``,
  ``autoattack.state.EvaluationState``), but the package index ships AutoAttack as ``pyautoattack``,
  with another interface. :func:`alias_autoattack` registers modules under the old names whose
  ``AutoAttack`` and ``EvaluationState`` are the interface RobustBench calls, implemented on
  pyautoattack (:mod:`robust_mix._compat_autoattack`); the other submodules are pyautoattack's.
  It runs when this module is imported, before robustbench can be.
- **Quiet imports.** timm 1.0.9 decorates a class in ``timm/models/hrnet.py`` with
  ``torch.jit.interface``, which torch 2.14 deprecates with a ``FutureWarning`` at import time;
  RobustBench's ``loaders.py`` imports ``pkg_resources``, which warns that it is deprecated.
  :func:`import_timm` and :func:`import_robustbench` import them with exactly those warnings silenced.
- **Safe custom checkpoints.** ``timm.create_model(name, checkpoint_path=...)`` (what RobustBench's
  ``load_model(..., custom_checkpoint=...)`` calls) loads the file with ``torch.load(weights_only=False)``,
  an unpickle, and cannot read a folder. :func:`add_checkpoint_reader` lets a plugin read the
  checkpoints of its own models instead.
- **RobustBench's bare KeyError.** ``robustbench.utils.load_model`` answers a name it has no model
  for with ``KeyError: 'name'``. :func:`add_unknown_model_explainer` lets a plugin turn that into a
  message naming what exists. Its ``'linf' is not a valid ThreatModel`` (a data set or threat model spelled
  otherwise) becomes an error listing RobustBench's names and the one meant, and a ``model_dir`` that is no path
  is named (:func:`_check_robustbench_names`).
- **RobustBench's lost model_dir.** ``robustbench.utils.load_model(name, model_dir=...)`` does not pass
  ``model_dir`` on when ``name`` is a timm model. While that call runs, :func:`robustbench_model_dir`
  gives the ``model_dir`` its caller passed, for a plugin's timm factories to read their files from.
- **RobustBench's benchmark() arguments.** A data set or threat model spelled otherwise is named with the one meant
  (as for ``load_model``), ``robustbench.eval.benchmark(device="cpu")`` stops with a bare
  ``NotImplementedError`` (a string is a ``Sequence``, read as several devices), a GPU that is not there
  fails deep in torch, a model of another label set than ``dataset`` is scored silently (near 0 %), and a
  model left in training mode only draws a warning while its BatchNorm layers use (and update) batch statistics,
  and an ``aa_state_path`` that cannot be written fails only after the clean pass; a model in float64 or half
  precision fails in the clean pass, asking for images of its dtype that the caller never handles.
  :func:`check_benchmark_arguments` checks these before any data is loaded.
- **RobustBench's data, offline.** Test images RobustBench cannot download or find (CIFAR offline: a bare
  ``URLError``; ImageNet's ``val/``, ImageNet-C: a ``FileNotFoundError``, the latter after the clean pass; a Zenodo
  download of CIFAR-10-C: ``ConnectionError``) are an error saying where to put the files
  (:func:`check_benchmark_arguments`).
- **RobustBench's clean_accuracy() arguments.** ``robustbench.utils.clean_accuracy`` computes a number from any
  images and labels (labels of shape ``(N, 1)`` counted ``N`` times each, 0-255 pixels) and runs a model in
  training mode; :func:`check_clean_accuracy_arguments` checks them first.
- **timm's registry cannot forget.** :func:`preserve_timm_registry` restores it after a block (tests).
- **timm lists as pretrained only what timm downloads.** ``timm.list_pretrained`` (``list_models(pretrained=True)``)
  lists a model only when its ``pretrained_cfg`` has a ``url``, ``file`` or ``hf_hub_id``: a single state dict
  that timm's own ``load_pretrained`` fetches and loads (``torch.load`` for a url or file). A plugin model whose
  factory loads its weights itself has none of these, and stating one would send timm's loader (or anyone who
  reads the cfg) to a file that is not that model's state dict. :func:`mark_timm_pretrained` lists such a model
  as pretrained in timm's registry without a weight source in its ``pretrained_cfg``.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import importlib
import inspect
import sys
import types
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Optional

_TIMM_JIT_WARNING = r"`torch\.jit\.interface` is deprecated"
_PKG_RESOURCES_WARNING = r"pkg_resources is deprecated"
#: pyautoattack's submodules, importable under ``autoattack.`` as they are.
_AUTOATTACK_SUBMODULES = ("autopgd_base", "fab_pt", "square", "checks", "other_utils")

#: ``(claims(model_name), load(model, checkpoint_path))`` pairs, see :func:`add_checkpoint_reader`.
CheckpointReader = tuple[Callable[[str], bool], Callable[[Any, str], None]]
_CHECKPOINT_READERS: list[CheckpointReader] = []
#: ``explain(model_name, dataset, threat_model) -> message or None``, see :func:`add_unknown_model_explainer`.
Explainer = Callable[[str, str, str], Optional[str]]
_EXPLAINERS: list[Explainer] = []
#: ``explain(model_name) -> message or None`` for names timm does not know, see :func:`add_timm_name_explainer`.
TimmExplainer = Callable[[str], Optional[str]]
_TIMM_EXPLAINERS: list[TimmExplainer] = []
#: ``model_dir`` given to the ``robustbench.utils.load_model`` call now running (see :func:`robustbench_model_dir`).
_ROBUSTBENCH_MODEL_DIR: contextvars.ContextVar[Optional[Path]] = contextvars.ContextVar("robustbench_model_dir",
                                                                                       default=None)


class UnknownTimmModelError(RuntimeError):
    """A name timm has no model for, or an ``hf-hub:`` repo it could not build, explained by a plugin (a
    ``RuntimeError``, as timm's ``Unknown model``)."""


class UnknownModelError(KeyError):
    """A model name RobustBench has no model for; the message says what exists (a ``KeyError``, as RobustBench's)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# -- AutoAttack -----------------------------------------------------------------------------------
def alias_autoattack() -> None:
    """Make ``import autoattack`` give RobustBench's AutoAttack interface on ``pyautoattack``, unless a
    real ``autoattack`` is installed."""
    if "autoattack" in sys.modules:
        return
    try:
        importlib.import_module("autoattack.state")
        return
    except ImportError:
        pass
    sys.modules.pop("autoattack", None)
    from robust_mix import _compat_autoattack as interface

    package = _module("autoattack", AutoAttack=interface.AutoAttack,
                      __version__=importlib.import_module("pyautoattack").__version__)
    package.__path__ = []  # a package: ``import autoattack.x`` finds the submodules in sys.modules
    submodules = {"autoattack": _module("autoattack.autoattack", AutoAttack=interface.AutoAttack),
                  "state": _module("autoattack.state", EvaluationState=interface.EvaluationState),
                  **{sub: importlib.import_module(f"pyautoattack.{sub}") for sub in _AUTOATTACK_SUBMODULES}}
    sys.modules["autoattack"] = package
    for sub, module in submodules.items():
        sys.modules[f"autoattack.{sub}"] = module
        setattr(package, sub, module)


def _module(name: str, **attributes: Any) -> ModuleType:
    module = types.ModuleType(name, "RobustBench's AutoAttack interface on pyautoattack (robust_mix._compat)")
    module.__dict__.update(attributes)
    return module


# -- quiet imports ------------------------------------------------------------------------------------
def import_timm() -> ModuleType:
    """``timm``, imported without torch's ``torch.jit.interface`` deprecation warning (see module doc).

    Call it before importing robustbench, which imports timm itself.
    """
    if "timm" not in sys.modules:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_TIMM_JIT_WARNING, category=FutureWarning)
            importlib.import_module("timm")
    return sys.modules["timm"]


def import_robustbench() -> ModuleType:
    """``robustbench`` (its ``utils``, ``eval`` and ``data`` modules loaded), imported without the
    warnings of timm's and RobustBench's own imports (see module doc)."""
    import_timm()
    if "robustbench.eval" not in sys.modules:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_PKG_RESOURCES_WARNING, category=UserWarning)
            for name in ("robustbench", "robustbench.utils", "robustbench.data", "robustbench.eval"):
                importlib.import_module(name)
    package = sys.modules["robustbench"]
    for sub in ("utils", "data", "eval"):  # an earlier failed `import robustbench` leaves them unset
        setattr(package, sub, sys.modules[f"robustbench.{sub}"])
    return package


def _wrap_once(owners: list[ModuleType], name: str, make: Callable[[Callable], Callable]) -> None:
    """Replace function ``name`` in every module of ``owners`` by ``make(original)``, once."""
    original = getattr(owners[0], name)
    if getattr(original, "__robust_mix_wrapped__", False):
        return
    wrapped = make(original)
    wrapped.__robust_mix_wrapped__ = True
    for owner in owners:
        if getattr(owner, name, None) is original:
            setattr(owner, name, wrapped)


def _checking_arguments(check: Callable[[dict[str, Any]], None]) -> Callable[[Callable], Callable]:
    """A :func:`_wrap_once` maker: the wrapped function binds its call (defaults applied), ``check`` reads and may
    replace the arguments in place (raising on bad ones), then the original runs with them."""
    def make(original: Callable) -> Callable:
        signature = inspect.signature(original)

        @functools.wraps(original)
        def checked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            check(bound.arguments)
            return original(*bound.args, **bound.kwargs)

        return checked

    return make


# -- timm: checkpoints that are never unpickled ----------------------------------------------------------
def add_checkpoint_reader(claims: Callable[[str], bool], load: Callable[[Any, str], None]) -> None:
    """Read ``timm.create_model(name, checkpoint_path=path)``'s checkpoint with ``load(model, path)``
    for every model name that ``claims(name)``.

    Such a model is created with ``pretrained=False`` (the checkpoint replaces every tensor, so
    released weight files are not needed), then ``load`` reads ``path``. Other models keep timm's
    behaviour.
    """
    timm = import_timm()
    from timm.models import _factory

    _CHECKPOINT_READERS.append((claims, load))
    _wrap_once([timm, timm.models, _factory], "create_model", _create_model_with_readers)


def add_timm_name_explainer(explain: TimmExplainer) -> None:
    """When ``timm.create_model(name)`` finds no model ``name`` (or fails for an ``hf-hub:`` name, whose repo's
    ``config.json`` may name an architecture timm cannot build it with), ask ``explain(name)`` for a message; a message
    replaces timm's error (a bare ``RuntimeError('Unknown model (...)')``, ``KeyError: 'architecture'``) by an
    :class:`UnknownTimmModelError`, ``None`` keeps it."""
    timm = import_timm()
    from timm.models import _factory

    _TIMM_EXPLAINERS.append(explain)
    _wrap_once([timm, timm.models, _factory], "create_model", _create_model_with_readers)


def _create_model_with_readers(original: Callable) -> Callable:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def create_model(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        path = bound.arguments.get("checkpoint_path") or ""
        name = bound.arguments["model_name"]
        load = next((load for claims, load in _CHECKPOINT_READERS if claims(name)), None) if path else None
        try:
            if load is None:
                return original(*args, **kwargs)
            bound.arguments["checkpoint_path"] = ""
            bound.arguments["pretrained"] = False
            model = original(*bound.args, **bound.kwargs)
        except Exception as err:
            hub_repo = str(name).startswith("hf-hub:")  # a repo's config.json timm could not build from
            if isinstance(err, UnknownTimmModelError) or not (
                    hub_repo or isinstance(err, RuntimeError) and str(err).startswith("Unknown model")):
                raise
            message = next((m for m in (explain(str(name)) for explain in _TIMM_EXPLAINERS) if m), None)
            if message is None:
                raise
            raise UnknownTimmModelError(f"{err}: {message}") from err
        load(model, str(path))
        return model

    return create_model


# -- RobustBench: names it has no model for ---------------------------------------------------------------
def add_unknown_model_explainer(explain: Explainer) -> None:
    """When ``robustbench.utils.load_model`` finds no model, ask ``explain(model_name, dataset,
    threat_model)`` (values such as ``"cifar10"``, ``"Linf"``) for a message; a message replaces
    RobustBench's bare ``KeyError`` by an :class:`UnknownModelError`, ``None`` keeps it."""
    robustbench = import_robustbench()
    _EXPLAINERS.append(explain)
    _wrap_once([robustbench.utils, robustbench, robustbench.eval], "load_model", _load_model_with_explanations)


def _load_model_with_explanations(original: Callable) -> Callable:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def load_model(*args: Any, **kwargs: Any) -> Any:
        from robust_mix.validate import check_path

        bound = signature.bind(*args, **kwargs)
        _check_robustbench_names(bound.arguments)
        given_dir = check_path("model_dir", bound.arguments.get("model_dir"),
                               "a folder path holding RobustBench's checkpoints")
        token = _ROBUSTBENCH_MODEL_DIR.set(given_dir)
        try:
            return original(*args, **kwargs)
        except KeyError as err:
            if isinstance(err, UnknownModelError):
                raise
            bound.apply_defaults()
            given = bound.arguments
            threat = given.get("norm") or given["threat_model"]
            values = [getattr(v, "value", v) for v in (given["model_name"], given["dataset"], threat)]
            for explain in _EXPLAINERS:
                message = explain(*(str(v) for v in values))
                if message:
                    raise UnknownModelError(message) from err
            raise
        finally:
            _ROBUSTBENCH_MODEL_DIR.reset(token)

    return load_model


def _check_robustbench_names(given: dict[str, Any], call: str = "load_model") -> None:
    """``robustbench.utils.load_model``'s or ``benchmark()``'s (``call``) ``dataset`` and ``threat_model`` (or
    ``norm``): RobustBench's enum members, or their values exactly. RobustBench answered ``"linf"`` or ``"CIFAR100"``
    with ``'linf' is not a valid ThreatModel``, naming neither the values it takes nor the one meant; ``benchmark()``
    given a data set or threat model that only robust_mix's harness evaluates (``"L1"``, ``"fashion-mnist"``) is
    pointed to :func:`robust_mix.benchmark`.

    Raises:
        robust_mix.validate.InvalidInputError: a name RobustBench does not have, listing those it has (and the one
            spelled otherwise, when one is: the names are case-sensitive).
        robust_mix.validate.InvalidInputTypeError: not a string or an enum member.
    """
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    from robust_mix.validate import THREAT_MODELS, InvalidInputError, InvalidInputTypeError, spelled_alike

    for key, kind in (("dataset", BenchmarkDataset), ("threat_model", ThreatModel), ("norm", ThreatModel)):
        value = given.get(key)
        if value is None or isinstance(value, kind):
            continue
        values = [member.value for member in kind]
        if not isinstance(value, str):
            raise InvalidInputTypeError(f"{key}={value!r} ({type(value).__name__}): RobustBench's {call} takes "
                                        f"one of {values} or a {kind.__name__} member")
        if value in values:
            continue
        same = spelled_alike(value, values)
        hint = f": RobustBench's names are case-sensitive, did you mean {same!r}?" if same else ""
        if not same and call == "benchmark()":
            harness = spelled_alike(value, THREAT_MODELS) if kind is ThreatModel else _harness_dataset(value)
            if harness:
                hint = (f"; robust_mix's own harness evaluates {harness}: robust_mix.benchmark(model, "
                        f"{'threat_model' if kind is ThreatModel else 'dataset'}={harness!r}, ...)")
        raise InvalidInputError(f"RobustBench has no {key} {value!r}; it has {values}{hint}")


def _harness_dataset(name: str) -> Optional[str]:
    """The data set robust_mix's harness reads ``name`` as (:func:`robust_mix.protocol.canonical_dataset`), ``None``
    for one it does not evaluate either."""
    from robust_mix.protocol import LEADERBOARD_EXAMPLES, canonical_dataset

    try:
        dataset = canonical_dataset(name)
    except ValueError:
        return None
    return dataset if dataset in LEADERBOARD_EXAMPLES else None


def robustbench_model_dir() -> Optional[Path]:
    """The ``model_dir`` passed to the ``robustbench.utils.load_model`` call that is running now, if it was
    given (``None`` outside such a call, or when the caller left RobustBench's default): RobustBench itself
    does not pass it to the timm models it creates."""
    return _ROBUSTBENCH_MODEL_DIR.get()


# -- RobustBench: benchmark()'s arguments ------------------------------------------------------------------
def check_benchmark_arguments() -> None:
    """Make ``robustbench.eval.benchmark`` check its ``device`` and the model's class count before any work.

    - ``device`` may be a name (``"cpu"``, ``"cuda:0"``), read as a ``torch.device``; one that does not
      exist here is refused (:func:`robust_mix.validate.check_device`). A list of devices, which RobustBench
      has not implemented, is refused with a message instead of a bare ``NotImplementedError``.
    - a model that says how many classes it scores (``model.num_classes``) must score as many as
      ``dataset`` has: a CIFAR-10 model evaluated on CIFAR-100 labels would be scored without complaint.
    - a model that states its input shape (``model.input_shape``) must take ``dataset``'s CIFAR images: a
      Fashion-MNIST model failed only after the data set was downloaded and loaded.
    - a model with BatchNorm layers in training mode is refused (RobustBench only warns): its predictions
      would depend on the batch, and every forward pass would change its running statistics; so is a model whose
      tensors are on the ``meta`` device (:func:`robust_mix.validate.check_materialized`), here and in
      ``clean_accuracy()``.
    - a model that declares a dtype other than float32 (``model.dtype``) is refused: RobustBench's images and
      pyautoattack's attacks are float32 (:func:`robust_mix._compat_autoattack.check_float32_model`).
    - ``eps`` must be a budget of the threat model (``8/255``, not ``8``) and given, checked before the data are
      loaded; a corruption benchmark takes none.
    - ``aa_state_path`` and ``log_path`` must name a file (not a folder) whose folder exists or can be created, and
      is writable (:func:`robust_mix.validate.check_writable_dir`, which creates it); RobustBench would fail writing
      them only after loading the data and scoring the clean pass.
    - a corruption benchmark (``threat_model="corruptions"``) RobustBench 1.1.1 cannot finish is refused: CIFAR's
      (its loaders do not take the arguments ``benchmark()`` passes) and any without AlexNet's reference results in
      ``model_info/`` under the working folder.
    - a corruption benchmark whose images are not on disk (``ImageNet-C``, ``ImageNet-3DCC`` under
      ``corruptions_data_dir`` or ``data_dir``) is refused before any work: RobustBench never downloads them, and
      failed after the clean pass. Test images RobustBench cannot load or download (CIFAR offline, ImageNet's ``val/``
      absent) and a failed Zenodo download (CIFAR-10-C, CIFAR-100-C) are errors saying where to put the files
      (:class:`robust_mix.data.DatasetNotFoundError`), not a bare ``URLError`` or ``ConnectionError``.
    - ImageNet images are prepared with a robust_mix model's own preprocessing when none is given; without one
      (and without a ``model_name`` RobustBench knows) the call is refused naming the choices.
    - ``dataset`` and ``threat_model`` must be RobustBench's names (``"linf"`` is refused naming ``"Linf"``, where
      RobustBench said only ``'linf' is not a valid ThreatModel``); ``"L1"`` and Fashion-MNIST, which only
      robust_mix's harness evaluates, are refused pointing to :func:`robust_mix.benchmark`.
    - ``n_examples`` (or ``None``, the whole test set) and ``batch_size`` must be whole numbers >= 1, and
      ``to_disk=True`` needs a ``model_name`` (RobustBench asked for it after the whole evaluation), a writable
      ``model_info/<dataset>/<threat_model>/`` and, where the results file exists, one that is JSON (RobustBench failed
      writing them after the whole evaluation).
    """
    robustbench = import_robustbench()
    _wrap_once([robustbench.eval, robustbench], "benchmark", _checking_arguments(_check_benchmark_call))
    _wrap_once([robustbench.eval, robustbench.data], "load_clean_dataset", _explaining_missing_clean_data)
    _wrap_once([robustbench.data], "zenodo_download", _explaining_failed_zenodo_download)


def _check_benchmark_call(given: dict[str, Any]) -> None:
    """The checks of RobustBench's ``benchmark()`` on its bound arguments (see :func:`check_benchmark_arguments`)."""
    from robust_mix._compat_autoattack import _benchmark_file, _check_benchmark_mode, check_float32_model
    from robust_mix.validate import check_materialized

    _check_robustbench_names({"dataset": given["dataset"], "threat_model": given["threat_model"]}, "benchmark()")
    if given["device"] is not None:
        given["device"] = _benchmark_device(given["device"])
    _check_benchmark_counts(given)
    _check_benchmark_classes(given["model"], given["dataset"])
    _check_benchmark_input(given["model"], given["dataset"])
    given["preprocessing"] = _benchmark_preprocessing(given["model"], given["dataset"], given["model_name"],
                                                      given["preprocessing"])
    _check_benchmark_eps(given["eps"], given["threat_model"], given["model"], given["dataset"])
    _check_benchmark_corruptions(given["dataset"], given["threat_model"], given["data_dir"],
                                 given["corruptions_data_dir"])
    _check_benchmark_mode(given["model"])
    check_materialized(given["model"])
    check_float32_model(given["model"])
    _check_benchmark_to_disk(given["to_disk"], given["model_name"], given["dataset"], given["threat_model"])
    for name, what, example in (("aa_state_path", "state file", "aa_state.json"),
                                ("log_path", "log file", "autoattack.log")):
        if given[name] is not None:
            given[name] = _benchmark_file(name, given[name], what, example)


def _benchmark_device(device: Any) -> Any:
    """``benchmark()``'s device as a ``torch.device`` that exists here (see :func:`check_benchmark_arguments`)."""
    from robust_mix.validate import InvalidInputError, check_device

    if isinstance(device, (list, tuple)):
        raise InvalidInputError(f"device={device!r}: RobustBench's benchmark() evaluates on one device (several are "
                                "not implemented in RobustBench 1.1.1); pass one, e.g. device='cuda:0'")
    return check_device(device)


def _check_benchmark_counts(given: dict[str, Any]) -> None:
    """``n_examples`` (``None``: the whole test set) and ``batch_size`` must be whole numbers >= 1, and ``n_examples``
    at most the images RobustBench evaluates of ``dataset`` (:data:`robust_mix.protocol.LEADERBOARD_EXAMPLES`: the
    CIFAR test sets, its 5,000 ImageNet images): RobustBench slices the test set with ``n_examples`` (``-1`` silently
    dropped the last image, ``0`` failed after the data were loaded, 20,000 evaluated CIFAR's 10,000 without a word)
    and divides by ``batch_size``."""
    from robust_mix.protocol import LEADERBOARD_EXAMPLES
    from robust_mix.validate import InvalidInputError, positive_int

    if given["n_examples"] is not None:
        given["n_examples"] = positive_int("n_examples", given["n_examples"])
        dataset = getattr(given["dataset"], "value", given["dataset"])
        available = LEADERBOARD_EXAMPLES.get(dataset) if isinstance(dataset, str) else None
        if available is not None and given["n_examples"] > available:
            raise InvalidInputError(f"n_examples={given['n_examples']}, but RobustBench evaluates at most {available:,} "
                                    f"{dataset} test images; pass n_examples <= {available} (or None: all of them)")
    given["batch_size"] = positive_int("batch_size", given["batch_size"])


def _benchmark_preprocessing(model: Any, dataset: Any, model_name: Any, preprocessing: Any) -> Any:
    """``benchmark()``'s ImageNet preprocessing: the one given, else a robust_mix model's own (its config's
    ``preprocessing``, e.g. ``BicubicRes256Crop224``), else RobustBench's choice by ``model_name``.

    RobustBench stopped with a bare ``Exception`` ("Preprocessing should be specified ...") for a robust_mix ImageNet
    model passed without ``model_name``, although the model states its preprocessing; with an unknown ``model_name``
    or preprocessing name (``"Res256crop224"``) it stopped with a bare ``KeyError``.

    Raises:
        robust_mix.validate.InvalidInputError: a preprocessing name RobustBench does not have (any data set), or
            ImageNet, and neither a preprocessing, nor a model that states one, nor a ``model_name`` RobustBench or
            timm knows.
    """
    from robustbench.data import PREPROCESSINGS
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    from robust_mix.validate import InvalidInputError, InvalidInputTypeError, spelled_alike

    names = sorted(str(k) for k in PREPROCESSINGS if k is not None)
    if preprocessing is not None and not callable(preprocessing):
        if not isinstance(preprocessing, str):
            raise InvalidInputTypeError(f"preprocessing={preprocessing!r} ({type(preprocessing).__name__}): pass one "
                                        f"of RobustBench's names {names} or a transform (a callable)")
        if preprocessing not in PREPROCESSINGS:  # RobustBench: a bare KeyError
            same = spelled_alike(preprocessing, names)
            raise InvalidInputError(f"RobustBench has no preprocessing {preprocessing!r}; it has {names}"
                                    + (f" (names are case-sensitive: did you mean {same!r}?)" if same else ""))
    try:
        dataset_ = BenchmarkDataset(dataset)
    except ValueError:
        return preprocessing  # RobustBench's own error names the data sets
    if preprocessing is not None or dataset_ != BenchmarkDataset.imagenet:
        return preprocessing
    from robust_mix.data import stated_preprocessing

    own = stated_preprocessing(dataset_.value, getattr(model, "config", None))
    if isinstance(own, str) and own in PREPROCESSINGS:
        return own
    timm = import_timm()
    known = isinstance(model_name, str) and (
        any(model_name in by_name for by_name in model_dicts[dataset_].values())
        or any(timm.is_model(f"{model_name.lower().replace('-', '_')}_{dataset_.value}_{t.value.lower()}")
               for t in ThreatModel))
    if not known:
        raise InvalidInputError(f"dataset='imagenet' needs to know how its test images are resized and cropped: pass "
                                f"preprocessing= one of {names} (the model's own), or model_name= of a RobustBench "
                                f"or robust_mix ImageNet model (got model_name={model_name!r})")
    return preprocessing


def _check_benchmark_corruptions(dataset: Any, threat_model: Any, data_dir: Any = "./data",
                                 corruptions_data_dir: Any = None) -> None:
    """Refuse RobustBench's corruption benchmarks where RobustBench 1.1.1's ``benchmark()`` cannot finish them, before
    the data are loaded and the clean pass is scored:

    - CIFAR-10-C and CIFAR-100-C: ``benchmark()`` calls their loaders with ``prepr=``, which they do not take (a
      ``TypeError`` after the clean pass);
    - any: the mean corruption error is computed against AlexNet's results, read from
      ``model_info/<dataset>/corruptions/unaggregated_results[_3d].csv`` under the working folder (a RobustBench
      checkout); without that file ``benchmark()`` fails with ``KeyError: 'AlexNet'`` after every corruption set has
      been evaluated.

    Raises:
        robust_mix.validate.InvalidInputError: naming the cause and the file.
    """
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    from robust_mix.validate import InvalidInputError

    try:
        dataset_, threat = BenchmarkDataset(dataset), ThreatModel(threat_model)
    except ValueError:
        return  # RobustBench's own errors name the data sets and threat models
    if threat not in (ThreatModel.corruptions, ThreatModel.corruptions_3d):
        return
    what = f"threat_model={threat.value!r} on dataset={dataset_.value!r}"
    if dataset_ != BenchmarkDataset.imagenet:
        raise InvalidInputError(f"{what}: RobustBench 1.1.1's benchmark() cannot load the CIFAR corruption sets (it "
                                "passes them prepr=, which their loaders do not take: a TypeError after the clean "
                                "pass); evaluate the corrupted images with robustbench.data.load_cifar10c / "
                                "load_cifar100c and robustbench.utils.clean_accuracy instead")
    name = "unaggregated_results_3d.csv" if threat == ThreatModel.corruptions_3d else "unaggregated_results.csv"
    reference = Path("model_info") / dataset_.value / "corruptions" / name
    if not reference.is_file():
        raise InvalidInputError(f"{what}: RobustBench's benchmark() compares with AlexNet's results, read from "
                                f"{str(reference)!r} under the working folder ({str(Path.cwd())!r}), which is not "
                                "there: it would fail only after evaluating every corruption set; run it from a "
                                "RobustBench checkout, which has that file")
    _check_corruption_folders(dataset_, threat, Path(corruptions_data_dir or data_dir))


def _check_corruption_folders(dataset: Any, threat: Any, root: Path) -> None:
    """Refuse an ImageNet corruption benchmark whose images are not under ``root``: RobustBench reads every corruption
    and severity from ``root/<ImageNet-C or ImageNet-3DCC>/<corruption>/<severity>/`` and never downloads them; a
    missing folder failed with a ``FileNotFoundError`` only after the clean pass and the corruptions before it."""
    from robustbench.data import CORRUPTIONS_DICT, CORRUPTIONS_DIR_NAMES

    from robust_mix.data import DatasetNotFoundError

    folder = root / CORRUPTIONS_DIR_NAMES[dataset][threat]
    missing = [f"{corruption}/{severity}" for corruption in CORRUPTIONS_DICT[dataset][threat]
               for severity in range(1, 6) if not (folder / corruption / str(severity)).is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"threat_model={threat.value!r} on dataset={dataset.value!r} reads {folder.name} from {str(folder)!r} "
            f"(<corruption>/<severity 1-5>/<class>/<image>), but {len(missing)} of its folders are not there (such as "
            f"{missing[0]!r}); RobustBench does not download {folder.name}, and nothing was evaluated: download and "
            f"extract it there yourself, or pass corruptions_data_dir= the folder that holds {folder.name}/")


def _check_benchmark_to_disk(to_disk: Any, model_name: Any, dataset: Any = None, threat_model: Any = None) -> None:
    """``to_disk=True`` needs ``model_name`` (the file the results go to), a ``model_info/<dataset>/<threat_model>``
    folder under the working folder that can be written (created here), and, where that file exists already, one
    RobustBench can read and update: RobustBench found out each only after the whole evaluation, whose results were
    then lost."""
    import json

    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    from robust_mix.validate import InvalidInputError, check_bool, check_writable_dir

    if not check_bool("to_disk", to_disk):
        return
    if not isinstance(model_name, str) or not model_name.strip():
        raise InvalidInputError(f"to_disk=True writes the results to model_info/<dataset>/<threat_model>/<model_name>"
                                f".json, but model_name={model_name!r}; pass model_name='...' (RobustBench would ask "
                                "for it only after the whole evaluation, and its results would be lost)")
    try:
        dataset_, threat = BenchmarkDataset(dataset), ThreatModel(threat_model)
    except ValueError:
        return  # refused by the names' check
    folder = Path("model_info") / dataset_.value / ("corruptions" if threat == ThreatModel.corruptions_3d
                                                    else threat.value)
    path = folder / f"{model_name}.json"
    check_writable_dir(path.parent, "folder to_disk=True writes to")
    if path.exists():
        try:
            json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise InvalidInputError(f"to_disk=True updates {str(path)!r}, which RobustBench cannot read ({err}): it "
                                    "would fail after the whole evaluation; move it away or fix it (nothing has been "
                                    "computed yet)") from err


def _check_benchmark_classes(model: Any, dataset: Any) -> None:
    """Refuse a model whose ``num_classes`` differs from ``dataset``'s class count (RobustBench's ``DATASET_CLASSES``)."""
    from robustbench.model_zoo.enums import BenchmarkDataset
    from robustbench.utils import DATASET_CLASSES

    from robust_mix.validate import InvalidInputError

    count = getattr(model, "num_classes", None)
    try:
        dataset_ = BenchmarkDataset(dataset)
    except ValueError:
        return  # RobustBench's own error names the data sets
    expected = DATASET_CLASSES.get(dataset_)
    if not isinstance(count, int) or isinstance(count, bool) or expected is None or count == expected:
        return
    config = getattr(model, "config", None)
    own = getattr(config, "dataset", None)
    if own == dataset_.value:  # the entry says this data set, its bases score another count: no other data set fits
        hint = f"its config says {own!r} but its bases score {count} classes; mix bases of {dataset_.value}"
    else:
        known = own in [d.value for d in BenchmarkDataset]
        other = f"dataset={own!r}" if known else "the data set it was trained on"
        hint = f"pass {other}, or a model of {dataset_.value}"
    raise InvalidInputError(f"the model scores {count} classes, but dataset={dataset_.value!r} has {expected}: its "
                            "labels would be read as the model's classes and the accuracies would be meaningless; "
                            + hint)


def _check_benchmark_eps(eps: Any, threat_model: Any, model: Any = None, dataset: Any = None) -> None:
    """Refuse a budget that is no budget of ``threat_model`` (``eps=8`` meaning 8/255; under L2 or L1 one larger than
    the distance between any two of ``dataset``'s CIFAR images, :func:`robust_mix.validate.check_eps_within_images`),
    or none at all, before the data are loaded (:func:`robust_mix.validate.check_eps`; AutoAttack refused the first
    only after the clean pass, RobustBench the second too). A corruption benchmark takes no eps (RobustBench's own rule,
    which it did not enforce: it ignored the eps and recorded it with ``to_disk=True``); ImageNet's image size, set by
    the preprocessing, is checked by the attack."""
    from robust_mix.formatting import format_eps
    from robust_mix.validate import (CORRUPTION_THREAT_MODELS, InvalidInputError, check_eps, check_eps_within_images,
                                     check_threat_model)

    try:
        threat = check_threat_model(threat_model)
    except InvalidInputError:
        corruption = getattr(threat_model, "value", threat_model)
        if eps is not None and corruption in CORRUPTION_THREAT_MODELS:  # RobustBench: "must not be specified"
            raise InvalidInputError(f"eps={eps!r} with threat_model={corruption!r}: a corruption benchmark measures "
                                    "accuracy on corrupted images, with no attack and no budget (RobustBench ignored "
                                    "eps there, and to_disk=True recorded it); leave eps out") from None
        return
    if eps is not None:
        eps = check_eps(eps, threat)
        if getattr(dataset, "value", dataset) in ("cifar10", "cifar100"):
            check_eps_within_images(eps, threat, _CIFAR_IMAGES)
        return
    config = getattr(model, "config", None)
    own = getattr(config, "eps", None) if getattr(config, "threat_model", None) == threat else None
    hint = (f"this model's entry is evaluated at eps={format_eps(own, threat)}" if isinstance(own, float)
            else "e.g. eps=8/255 for CIFAR Linf")
    raise InvalidInputError(f"threat_model={threat!r} needs an attack budget: pass eps ({hint}); RobustBench would "
                            "ask for it only after loading the data and scoring the clean pass")


#: The ``(C, H, W)`` of RobustBench's CIFAR test images (ImageNet's follow the preprocessing benchmark() is given).
_CIFAR_IMAGES = (3, 32, 32)


def _check_benchmark_input(model: Any, dataset: Any) -> None:
    """Refuse a model whose declared input contract (``model.input_shape``, as
    :class:`robust_mix.MixedClassifier` states it) is not the shape of ``dataset``'s CIFAR images
    (see :func:`check_benchmark_arguments`)."""
    from robustbench.model_zoo.enums import BenchmarkDataset

    from robust_mix.validate import InvalidInputError

    shape = getattr(model, "input_shape", None)
    try:
        dataset_ = BenchmarkDataset(dataset)
    except ValueError:
        return  # RobustBench's own error names the data sets
    if dataset_ == BenchmarkDataset.imagenet or not isinstance(shape, (tuple, list)) or len(shape) != 3:
        return
    if tuple(shape) != _CIFAR_IMAGES:
        own = getattr(getattr(model, "config", None), "dataset", None)
        raise InvalidInputError(
            f"the model takes {tuple(shape)} images (its input_shape), but dataset={dataset_.value!r}'s test images "
            f"are {_CIFAR_IMAGES}: every image would be refused after the data set is loaded; pass a model of "
            f"{dataset_.value}" + (f", or evaluate this {own} model with robust_mix.benchmark(model)"
                                   if own and own != "custom" else ""))


def _explaining_missing_clean_data(original: Callable) -> Callable:
    """``robustbench.data.load_clean_dataset`` whose failure to find or download the test images (an ``OSError``:
    ``URLError`` offline, ``FileNotFoundError`` for ImageNet's ``val/``) is a
    :class:`robust_mix.data.DatasetNotFoundError` saying where the files go (see :func:`check_benchmark_arguments`)."""
    @functools.wraps(original)
    def load_clean_dataset(dataset: Any, n_examples: Any, data_dir: Any, prepr: Any) -> Any:
        try:
            return original(dataset, n_examples, data_dir, prepr)
        except OSError as err:
            from robust_mix.data import DatasetNotFoundError

            raise DatasetNotFoundError(f"RobustBench could not load the {getattr(dataset, 'value', dataset)} test "
                                       f"images from data_dir={str(data_dir)!r} ({err}); nothing was evaluated: "
                                       f"{_clean_data_hint(dataset, Path(data_dir))}") from err

    return load_clean_dataset


def _clean_data_hint(dataset: Any, data_dir: Path) -> str:
    """Where RobustBench reads ``dataset``'s test images under ``data_dir``, and how they get there."""
    import torchvision
    from robustbench.model_zoo.enums import BenchmarkDataset

    if dataset == BenchmarkDataset.imagenet:
        return ("RobustBench never downloads ImageNet; put the ILSVRC2012 validation images in "
                f"{str(data_dir / 'val')!r} (one folder per class named by its WordNet id, e.g. "
                "val/n09468604/ILSVRC2012_val_00015253.JPEG: RobustBench reads the 5,000 its "
                "helper_files/imagenet_test_image_ids.txt lists), or pass data_dir= the folder that holds val/")
    cls = torchvision.datasets.CIFAR10 if dataset == BenchmarkDataset.cifar_10 else torchvision.datasets.CIFAR100
    return (f"torchvision downloads it when online; offline, extract {cls.filename} into {str(data_dir)!r} (it holds "
            f"{cls.base_folder}/), or pass data_dir= the folder that holds {cls.base_folder}/")


def _explaining_failed_zenodo_download(original: Callable) -> Callable:
    """``robustbench.data.zenodo_download`` (CIFAR-10-C, CIFAR-100-C) whose network failure (``requests``'
    ``ConnectionError``, an ``OSError``) is a :class:`robust_mix.data.DatasetNotFoundError` saying what to fetch and
    where to put it."""
    @functools.wraps(original)
    def zenodo_download(record_id: str, filenames_to_download: Any, save_dir: Path) -> None:
        try:
            return original(record_id, filenames_to_download, save_dir)
        except OSError as err:
            from robust_mix.data import DatasetNotFoundError

            names = ", ".join(sorted(filenames_to_download))
            raise DatasetNotFoundError(f"RobustBench could not download {names} from Zenodo record {record_id} ({err});"
                                       f" download it elsewhere and extract it into {str(save_dir)!r}, where "
                                       "RobustBench reads it without downloading") from err

    return zenodo_download


def check_clean_accuracy_arguments() -> None:
    """Make ``robustbench.utils.clean_accuracy`` (also ``robustbench.eval``'s, which ``benchmark()`` calls) check its
    arguments before the first batch; it computed a number from whatever it was given.

    - images ``x`` and labels ``y`` as :func:`robust_mix.validate.check_examples` wants them, and for a module as it
      declares them (:func:`robust_mix.validate.check_model_examples`: ``input_shape``, class count, dtype):
      labels of shape ``(N, 1)`` were broadcast against the ``(N,)`` predictions and counted ``N`` times each,
      0-255 or normalised pixels, labels beyond the classes and other label counts gave a silent accuracy, no
      images divided by zero;
    - a model whose BatchNorm layers are in training mode is refused, as ``benchmark()`` refuses it: each batch
      would be normalised with its own statistics and written into the running ones;
    - ``batch_size`` must be a whole number >= 1 and ``device`` one that exists here (a name is read as a
      ``torch.device``).
    """
    robustbench = import_robustbench()
    _wrap_once([robustbench.utils, robustbench.eval], "clean_accuracy", _checking_arguments(_check_clean_accuracy_call))


def _check_clean_accuracy_call(given: dict[str, Any]) -> None:
    """The checks of RobustBench's ``clean_accuracy()`` on its bound arguments (see
    :func:`check_clean_accuracy_arguments`)."""
    import torch

    from robust_mix._compat_autoattack import _check_benchmark_mode
    from robust_mix.validate import check_examples, check_materialized, check_model_examples, positive_int

    model = check_materialized(given["model"])
    if isinstance(model, torch.nn.Module):
        _check_benchmark_mode(model, "clean_accuracy()")
        given["x"], given["y"] = check_model_examples(model, given["x"], given["y"])
    else:
        given["x"], given["y"] = check_examples(given["x"], given["y"])
    positive_int("batch_size", given["batch_size"])
    if given["device"] is not None:
        given["device"] = _benchmark_device(given["device"])


# -- timm's registry, restored ----------------------------------------------------------------------------
def mark_timm_pretrained(model_name: str) -> None:
    """List the registered timm model ``model_name`` (no tag) in ``timm.list_pretrained`` and
    ``timm.models.is_model_pretrained``: its factory loads weights when ``pretrained=True`` although its
    ``pretrained_cfg`` names no weight source for timm (see module doc)."""
    import_timm()
    from timm.models import _registry

    if model_name not in _registry._model_entrypoints:
        raise ValueError(f"{model_name!r} is not a timm model: register it before marking it pretrained")
    _registry._model_has_pretrained.add(model_name)


#: The tables of ``timm.models._registry`` that ``register_model`` writes.
_TIMM_TABLES = ("_module_to_models", "_model_to_module", "_model_entrypoints", "_model_has_pretrained",
                "_model_default_cfgs", "_model_pretrained_cfgs", "_model_with_tags",
                "_module_to_deprecated_models", "_deprecated_models")


@contextlib.contextmanager
def preserve_timm_registry() -> Iterator[None]:
    """Models registered with timm inside the block are gone after it (timm has no way to unregister)."""
    import_timm()
    from timm.models import _registry

    saved = {name: _copy_table(getattr(_registry, name)) for name in _TIMM_TABLES}
    try:
        yield
    finally:
        for name, table in saved.items():  # in place: timm's functions hold the tables by name
            current = getattr(_registry, name)
            current.clear()
            current.update(table)


def _copy_table(table: Any) -> Any:
    """A copy one level deep: ``register_model`` adds to the sets and lists inside the tables too."""
    copied = copy.copy(table)
    if isinstance(copied, dict):
        for key, value in copied.items():
            if isinstance(value, (set, list, dict)):
                copied[key] = copy.copy(value)
    return copied


alias_autoattack()
