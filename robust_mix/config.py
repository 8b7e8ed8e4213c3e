"""Configs as data: everything needed to rebuild a mixed model, saved as JSON beside its weights.

A zoo entry is a :class:`ModelConfig`. It names its two base models by reference
(:class:`BackboneConfig`), carries the mixing constants (fixed ``alpha`` or an adaptive
:class:`PolicyConfig`), the input contract of each base, where weights live, the numbers
the authors reported and how to cite them. No per-model constant lives in code.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from robust_mix.io import atomic_write_text
from robust_mix.validate import (InvalidInputError, InvalidInputTypeError, check_agreement, check_bool, check_alpha,
                                 check_alpha_range, check_choice, check_fields, check_ln_k, check_real,
                                 check_revision, check_threat_model, parse_json, positive_float, positive_int)

MixingMode = Literal["prob", "logit"]


@dataclass
class InputConfig:
    """How raw ``[0, 1]`` images are adapted before a base model sees them.

    Attributes:
        input_size: ``(H, W)`` to resize to, or ``None`` to keep the input size.
        interpolation: ``torch.nn.functional.interpolate`` mode (``"bilinear"``, ``"bicubic"``, ...).
        mean, std: per-channel normalisation, or ``None`` when the model normalises itself.
        antialias: passed to ``interpolate`` (RobustBench's BiT resize uses ``False``).
    """

    input_size: Optional[tuple[int, int]] = None
    interpolation: str = "bilinear"
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    antialias: bool = False


@dataclass
class WeightsConfig:
    """Where one part's weights come from: exactly one source, an optional layout and checksum.

    Sources:
        package: a file shipped inside the installed ``robust_mix`` package, relative to it
            (``"zoo/weights/fmnist-robust.safetensors"``); read through ``importlib.resources``.
        file: a local file (``~`` expanded).
        hub: a Hugging Face Hub repo ``"org/name"``; ``filename`` in it (default
            ``model.safetensors``) at ``revision``, through the Hub cache.
        robustbench: ``"<dataset>/<threat>/<Name>"``, a file of RobustBench's ``model_dir`` layout
            (``<model_dir>/<dataset>/<threat>/<Name>.pt``, or ``.pt_m<index>.pt`` for the ``index``-th
            file of a multi-file entry), downloaded with RobustBench's downloader when online from
            ``download_id`` (default: the Google Drive id RobustBench's model zoo lists).

    Attributes:
        format: the checkpoint layout to convert from (a name in :data:`robust_mix.convert.FORMATS`);
            ``None``: the tensors already carry the target's names.
        sha256: hex digest the file must have; checked on every load when set.
    """

    package: Optional[str] = None
    file: Optional[str] = None
    hub: Optional[str] = None
    robustbench: Optional[str] = None
    filename: Optional[str] = None
    revision: Optional[str] = None
    index: Optional[int] = None
    download_id: Optional[str] = None
    format: Optional[str] = None
    sha256: Optional[str] = None

    def __post_init__(self) -> None:
        given = [name for name in WEIGHT_SOURCES if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"WeightsConfig needs exactly one source of {list(WEIGHT_SOURCES)}, got "
                             f"{given or 'none'}: e.g. WeightsConfig(file='model.safetensors')")
        if self.package is not None:
            check_package_path(self.package)
        if (self.filename is not None or self.revision is not None) and self.hub is None:
            raise ValueError("WeightsConfig.filename and .revision apply to hub= sources only")
        if self.revision is not None:
            check_revision("WeightsConfig.revision", self.revision)
        if (self.index is not None or self.download_id is not None) and self.robustbench is None:
            raise ValueError("WeightsConfig.index and .download_id apply to robustbench= sources only")
        if self.robustbench is not None and len(self.robustbench.split("/")) != 3:
            raise ValueError(f"WeightsConfig.robustbench looks like '<dataset>/<threat>/<Name>', "
                             f"got {self.robustbench!r}")
        if self.sha256 is not None:
            digest = self.sha256.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"WeightsConfig.sha256 must be 64 hex digits, got {self.sha256!r}")
            self.sha256 = digest

    @property
    def source(self) -> str:
        """Which source is set: ``"package"``, ``"file"``, ``"hub"`` or ``"robustbench"``."""
        return next(name for name in WEIGHT_SOURCES if getattr(self, name) is not None)

    def describe(self) -> str:
        """A one-line description for messages and cards (``"hub:org/name/model.safetensors"``)."""
        where = getattr(self, self.source)
        if self.hub is not None:
            where = f"{where}/{self.filename or 'model.safetensors'}" + (f"@{self.revision}" if self.revision else "")
        if self.index is not None:
            where = f"{where} file {self.index}"
        return f"{self.source}:{where}" + (f" ({self.format} layout)" if self.format else "")


def check_package_path(relative: Any) -> str:
    """A ``WeightsConfig.package`` path: relative to the installed package and inside it (``zoo/weights/x``), so that
    a config, which may come from someone else, reads no file elsewhere under the name of a file robust_mix ships.

    Raises:
        robust_mix.validate.InvalidInputError: not a string, empty, absolute (``/``, ``~``, ``C:``), with a ``..`` part,
            a ``\\`` (Windows' separator) or a NUL byte; naming the value and ``file=`` for a file outside the package.
    """
    parts = relative.split("/") if isinstance(relative, str) else []
    if (not isinstance(relative, str) or not relative.strip() or relative.startswith(("/", "~")) or ".." in parts
            or "\\" in relative or "\0" in relative or ":" in parts[0]):
        raise InvalidInputError(f"WeightsConfig.package must be the path of a file shipped inside the robust_mix "
                                f"package, relative to it ('zoo/weights/NAME.safetensors'), got {relative!r}; for a "
                                "file anywhere else use WeightsConfig(file=PATH)")
    return relative


#: The sources a :class:`WeightsConfig` can name, in the order they are documented.
WEIGHT_SOURCES = ("package", "file", "hub", "robustbench")


def as_weights_config(value: Any) -> Optional[WeightsConfig]:
    """``None``, a :class:`WeightsConfig`, or its dict form (``{"file": "policy.safetensors"}``)."""
    if value is None or isinstance(value, WeightsConfig):
        return value
    if isinstance(value, dict):
        return from_dict(WeightsConfig, value)
    raise TypeError(f"weights must be a WeightsConfig or a dict such as {{'file': 'model.safetensors'}}, "
                    f"got {type(value).__name__} {value!r}")


@dataclass
class BackboneConfig:
    """A base classifier: its architecture by reference, and where its weights come from.

    ``ref`` is ``"timm/<arch>[.<tag>]"`` or ``"robustbench/<dataset>/<threat>/<Name>"``; a path to
    a ``.safetensors`` file written by :func:`robust_mix.backbones.save_backbone` is accepted too
    and resolved (by :func:`robust_mix.backbones.as_backbone_config`) into the architecture it
    records plus ``weights=WeightsConfig(file=...)``.

    Attributes:
        ref: the architecture reference, built by :func:`robust_mix.backbones.load_backbone`.
        kwargs: keyword arguments of the architecture's constructor (e.g. ``num_classes``).
        weights: where the weights come from; ``None`` means the reference's own source (timm's
            pretrained weights for the tag, RobustBench's checkpoint for the entry).
        input: the input contract (resize, normalisation).
        license: licence of the weights, for model cards.
    """

    ref: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: Optional[WeightsConfig] = None
    input: InputConfig = field(default_factory=InputConfig)
    license: Optional[str] = None

    def __post_init__(self) -> None:
        self.weights = as_weights_config(self.weights)


@dataclass
class PolicyConfig:
    """Constants of the adaptive mixing ratio (PAPER.md sections 1-2).

    ``alpha(x) = lo + (hi - lo) * sigmoid(BN(M(features)) * gamma_scale + gamma_bias)`` in eval
    mode, with ``(lo, hi) = alpha_range``.

    Attributes:
        standard_layers, robust_layers: module names (``named_modules``) whose outputs feed the
            mixing network, one per stage, earliest first.
        widths: output channels of the mixing network's residual stages.
        blocks: pre-activation residual blocks per stage.
        input_shape: ``(C, H, W)`` of one raw input, used to probe feature shapes when building.
        gamma_scale, gamma_bias: affine map applied after the BatchNorm.
        alpha_range: eval-time ``(lo, hi)`` range of alpha.
        detach_features: stop gradients from alpha into the base models' features.
    """

    standard_layers: list[str]
    robust_layers: list[str]
    widths: list[int] = field(default_factory=lambda: [64, 96, 128])
    blocks: int = 2
    input_shape: tuple[int, int, int] = (3, 32, 32)
    gamma_scale: float = 1.0
    gamma_bias: float = 0.0
    alpha_range: tuple[float, float] = (0.0, 1.0)
    detach_features: bool = False


@dataclass
class NutsConfig:
    """MixedNUTS constants (PAPER.md section 5): the robust map ``s * sign(u) * |u|^p``,
    ``u = GELU(LN_k(z) + c)``, and the hard-max standard map with its gradient surrogate.

    The mixing ratio itself is the model's fixed ``alpha``.
    """

    scale: float
    power: float
    bias: float
    ln_k: int = 250
    surrogate_scale: float = 1e6


@dataclass
class ReportedResult:
    """A leaderboard number as its authors reported it (fractions are percentages here, as on RobustBench).

    ``additional_data``: the model was trained on data beyond its data set's training split (RobustBench's field of
    that name; a base pre-trained on ImageNet-21k counts), as the leaderboard lists it; submissions state it.
    """

    clean_acc: float
    autoattack_acc: float
    n_examples: int
    source: str = ""
    additional_data: bool = False

    def __post_init__(self) -> None:
        check_reported(self)


@dataclass
class ModelConfig:
    """A zoo entry: two base references plus the mixing rule, all as data.

    Attributes:
        name: registry name (``load_model(name)``).
        standard, robust: the two base classifiers; ``None`` only for compositions filled at load.
        alpha: fixed mixing ratio in ``[0, 1]``; ``None`` means the adaptive ``policy`` decides.
        policy: adaptive-ratio constants, or ``None`` for a fixed ratio.
        nuts: MixedNUTS output maps, or ``None`` for temperature-scaled softmax.
        input_shape: the raw input contract ``(C, H, W)``, values in ``[0, 1]``; ``None`` (compositions
            such as ``mix``) declares none, and only the generic image checks apply.
        preprocessing: how test images become ``input_shape`` images, as RobustBench names it
            (:data:`ROBUSTBENCH_PREPROCESSINGS`, e.g. ``"BicubicRes256Crop224"``); ``None``: the data
            set's images as they are (CIFAR).
        mixing: ``"prob"`` (the paper's default) or ``"logit"`` (the baseline).
        std_scale, rob_scale: logit temperatures ``s_g``, ``s_h``.
        weights: where the mixed model's own tensors (its adaptive policy) come from; a file of
            ``MixedClassifier.state_dict()`` keys (``policy.*``), or another layout named by
            ``weights.format``. Base weights are named by the backbones.
        reported: the authors' numbers, or ``None``.
    """

    name: str
    standard: Optional[BackboneConfig] = None
    robust: Optional[BackboneConfig] = None
    dataset: str = "custom"
    threat_model: str = "Linf"
    eps: Optional[float] = None
    num_classes: Optional[int] = None
    input_shape: Optional[tuple[int, int, int]] = None
    preprocessing: Optional[str] = None
    alpha: Optional[float] = 0.5
    policy: Optional[PolicyConfig] = None
    nuts: Optional[NutsConfig] = None
    mixing: MixingMode = "prob"
    std_scale: float = 1.0
    rob_scale: float = 1.0
    weights: Optional[WeightsConfig] = None
    reported: Optional[ReportedResult] = None
    labels: Optional[list[str]] = None
    description: str = ""
    paper: str = ""
    citation: str = ""
    license: str = ""
    aliases: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for role in ("standard", "robust"):
            value = getattr(self, role)
            if isinstance(value, str):
                setattr(self, role, BackboneConfig(ref=value))
            elif isinstance(value, dict):
                setattr(self, role, from_dict(BackboneConfig, value))
        self.weights = as_weights_config(self.weights)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    def validate(self, bases: Optional[tuple[Optional[BackboneConfig], Optional[BackboneConfig]]] = None
                 ) -> "ModelConfig":
        """Check every field's type and range (:data:`CONFIG_RULES`), and that the fields agree with
        each other and with what the base models state they take and return; returns ``self``.

        Agreement: every input shape (``input_shape``, ``policy.input_shape``) has as many channels as
        a base's ``kwargs["in_chans"]``, and ``num_classes``, the number of ``labels`` and a base's
        ``kwargs["num_classes"]`` are one count, wherever they are stated (a base that states
        nothing is not checked here; :class:`~robust_mix.mixing.MixedClassifier` checks the built models).

        Args:
            bases: ``(standard, robust)`` as they will be built (a ``.safetensors`` reference resolved
                into the architecture and kwargs it records); default: the config's own.

        Raises:
            robust_mix.validate.InvalidInputError: naming the field and the offending value, or the
                fields that disagree and their values.
        """
        check_fields(self, CONFIG_RULES)
        if self.alpha is None and self.policy is None:
            raise InvalidInputError(
                f"alpha=None means 'the entry's own adaptive policy', but {self.name!r} has a fixed ratio and no "
                "policy; pass alpha=<a number in [0, 1]>, or leave alpha out to keep the entry's own ratio")
        self._check_agreement(bases if bases is not None else (self.standard, self.robust))
        return self

    def _check_agreement(self, bases: tuple[Optional[BackboneConfig], Optional[BackboneConfig]]) -> None:
        """The input channels and the class counts that the config and its bases state agree (see :meth:`validate`)."""
        stated = {role: base.kwargs for role, base in zip(("standard", "robust"), bases) if base is not None}
        shapes = {"input_shape": self.input_shape,
                  "policy.input_shape": self.policy.input_shape if self.policy is not None else None}
        check_agreement(
            "input channel counts",
            {**{f"{field} {tuple(shape)}": shape[0] for field, shape in shapes.items() if shape is not None},
             **{f"the {role} base's in_chans": kwargs.get("in_chans") for role, kwargs in stated.items()}},
            "the images the model takes go to both base models as they are: give input_shape the bases' channel "
            "count (it only states the contract; the bases are built for their in_chans), or mix bases built for "
            "these images")
        check_agreement(
            "class counts",
            {"num_classes": self.num_classes,
             "labels (one name per class)": len(self.labels) if self.labels is not None else None,
             **{f"the {role} base's num_classes": kwargs.get("num_classes") for role, kwargs in stated.items()}},
            "num_classes, labels and both base models must count the same classes: leave num_classes and labels "
            "out to keep the entry's, give one label per class, or mix bases of that label set")

    def fingerprint(self) -> str:
        """A digest of the fields that decide what the model computes (not its name, texts, licences
        or reported numbers): two configs with the same fingerprint build the same model."""
        data = self.to_dict()
        for key in _DOCUMENTATION_FIELDS:
            data.pop(key, None)
        for role in ("standard", "robust"):
            if data.get(role):
                data[role].pop("license", None)
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Rebuild from :meth:`to_dict` output and check it as :meth:`validate` does (every field's type and range,
        the fields' agreement), so that a config read from a file (:meth:`load`, a saved model's ``config.json``) is
        refused on reading, not when a model is built from it; unknown keys are an error.

        Raises:
            robust_mix.validate.InvalidInputError: naming the field and its value (``eps: NaN``, ``alpha: "0.5"``).
            ValueError: unknown or missing fields.
        """
        return from_dict(cls, data).validate()

    def weight_locations(self) -> list[str]:
        """Where each part comes from, one line each (``"standard base: timm/x, weights package:..."``)."""
        lines = []
        for role in ("standard", "robust"):
            base = getattr(self, role)
            if base is not None:
                weights = base.weights.describe() if base.weights is not None else "the reference's own weights"
                lines.append(f"{role} base: {base.ref}, {weights}")
        if self.weights is not None:
            lines.append(f"adaptive policy: {self.weights.describe()}")
        return lines

    def with_overrides(self, overrides: dict[str, Any]) -> "ModelConfig":
        """A copy with fields replaced; adaptive-policy fields (e.g. ``alpha_range``) go to the policy.

        Base models may be given as reference strings or dicts (``standard="timm/resnet18"``).

        Raises:
            TypeError: an unknown field, or a policy field for an entry without a policy.
        """
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        policy_fields = {f.name for f in dataclasses.fields(PolicyConfig)}
        model_hints, policy_hints = typing.get_type_hints(ModelConfig), typing.get_type_hints(PolicyConfig)
        top: dict[str, Any] = {}
        policy: dict[str, Any] = {}
        for key, value in overrides.items():
            if key in ("standard", "robust"):
                top[key] = (BackboneConfig(ref=value) if isinstance(value, str)
                            else from_dict(BackboneConfig, value) if isinstance(value, dict) else value)
            elif key in model_fields:
                top[key] = _coerce(model_hints[key], value)  # JSON lists -> tuples, dicts -> configs
            elif key in policy_fields:
                if self.policy is None:
                    raise InvalidInputTypeError(f"{key!r} applies to adaptive models only; {self.name!r} has a "
                                                "fixed ratio")
                policy[key] = _coerce(policy_hints[key], value)
            else:
                raise InvalidInputTypeError(f"unknown override {key!r}; valid: {list(override_fields())}")
        if policy:
            top["policy"] = dataclasses.replace(self.policy, **policy)
        return dataclasses.replace(self, **top)

    def save(self, path: str | Path) -> None:
        """Write as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        """Read a config written by :meth:`save`.

        Raises:
            ValueError: the file is not JSON, not a JSON object, the ``config.json`` of a saved model
                folder (load those with ``local-dir:FOLDER``), or holds unknown or missing fields.
        """
        path = Path(path)
        try:
            data = parse_json(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); it may be truncated: write it again") from err
        if isinstance(data, dict) and "format_version" in data:
            raise ValueError(f"{path} is the config.json of a folder written by save_pretrained, which also holds "
                             f"the model's tensors: load the folder, 'local-dir:{path.parent}'")
        try:
            return cls.from_dict(data)
        except InvalidInputError as err:
            raise type(err)(f"{path}: {err}; correct the field in the file, or write it again with "
                            "ModelConfig.save") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err


def override_fields() -> tuple[str, ...]:
    """The keys :meth:`ModelConfig.with_overrides` takes (every ``load_model(name, key=...)`` and
    ``"NAME,key=value"``): the config's fields and the adaptive policy's, sorted."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)} | {f.name for f in dataclasses.fields(PolicyConfig)}
    return tuple(sorted(fields))


#: Where an override starts in a model NAME: a ``,`` followed by ``key=`` (``"fmnist-robust,alpha=0.9"``).
_OVERRIDE = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")
#: Python's spellings of JSON's null, true and false, read as those in an override's value.
_PYTHON_CONSTANTS: dict[str, Any] = {"None": None, "True": True, "False": False}


def split_overrides(text: str) -> tuple[str, dict[str, Any]]:
    """Split ``"NAME,key=value,..."`` into ``NAME`` (stripped) and its overrides, values read as JSON when they
    parse (``(0.8,1.0)`` as ``[0.8,1.0]``; ``None``, ``True``, ``False`` as ``null``, ``true``, ``false``).

    The override syntax of every model NAME (:func:`robust_mix.loading.parse_model_name`) and every report's
    model label (:func:`override_text` writes it).

    Raises:
        robust_mix.validate.InvalidInputError: an override that is not ``key=value``, or a key given twice.
    """
    head, *rest = _OVERRIDE.split(text.strip())
    overrides: dict[str, Any] = {}
    for item in rest:
        key, value = _parse_override(item, text)
        if key in overrides:
            raise InvalidInputError(f"override {key!r} is given twice in {text!r}; give each key once")
        overrides[key] = value
    return head.strip(), overrides


def _parse_override(item: str, text: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise InvalidInputError(f"override {item!r} in {text!r} must look like key=value "
                                "(e.g. 'fmnist-robust,alpha=0.9')")
    if raw.startswith("(") and raw.endswith(")"):  # a Python-style pair, alpha_range=(0.8,1.0): a JSON list
        raw = f"[{raw[1:-1]}]"
    if raw in _PYTHON_CONSTANTS:  # alpha=None as load_model(name, alpha=None) spells it, not the string 'None'
        return key, _PYTHON_CONSTANTS[raw]
    try:
        return key, parse_json(raw)
    except json.JSONDecodeError:
        return key, raw


def override_text(overrides: dict[str, Any]) -> str:
    """``",key=value"`` for each override, values as compact JSON: what :func:`split_overrides` reads back."""
    return "".join(f",{key}={json.dumps(_plain(value), separators=(',', ':'))}" for key, value in overrides.items())


def config_overrides(entry: "ModelConfig", config: "ModelConfig") -> dict[str, Any]:
    """The overrides that turn ``entry`` into ``config`` (``entry.with_overrides(result)`` computes what ``config``
    computes): each field that decides what the model computes and differs, as JSON-ready data; adaptive-policy
    fields one by one (``alpha_range``) where their names are the policy's own. Empty: the same model."""
    mine, theirs = entry.to_dict(), config.to_dict()
    overrides: dict[str, Any] = {}
    top_fields = set(mine)
    for key, value in theirs.items():
        if key in _DOCUMENTATION_FIELDS or mine.get(key) == value:
            continue
        old = mine.get(key)
        if key == "policy" and isinstance(old, dict) and isinstance(value, dict):
            changed = {k: v for k, v in value.items() if old.get(k) != v}
            if not top_fields & set(changed):  # policy.input_shape would be read as the config's input_shape
                overrides.update(changed)
                continue
        if key in ("standard", "robust") and isinstance(value, dict) and \
                value == dataclasses.asdict(BackboneConfig(ref=value["ref"])):
            value = value["ref"]  # a base given by its reference alone: standard="timm/resnet18"
        overrides[key] = value
    return overrides


def check_entry_name(name: Any) -> str:
    """A name or alias that every NAME reader (``robust_mix.parse_model_name``) can reach: a non-empty string
    without surrounding whitespace (names are read stripped), ``','`` (which starts an override) or ``':'`` (which
    starts a source: ``hf-hub:``, ``local-dir:``, ``module:function``).

    Raises:
        robust_mix.validate.InvalidInputError: naming the problem.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"a model name must be a non-empty string, got {name!r}")
    if name != name.strip():
        raise InvalidInputError(f"model name {name!r} begins or ends with whitespace, which is stripped when a name "
                                f"is read; register it as {name.strip()!r}")
    reserved = [c for c in ",:" if c in name]
    if reserved:
        raise InvalidInputError(f"model name {name!r} holds {reserved}: ',' starts an override (NAME,alpha=0.9) and "
                                "':' a source (hf-hub:, local-dir:, module:function), so no NAME could reach the "
                                "entry; use letters, digits, '-', '_', '.' or '/'")
    return name


def _positive_ints(name: str, values: Any) -> None:
    for value in values:
        positive_int(name, value)


def _percentage(name: str, value: Any) -> float:
    return check_real(name, value, low=0.0, high=100.0,
                      expected=" in [0, 100] (a percentage, as RobustBench writes it: 85.21)")


def check_reported(reported: "ReportedResult", name: str = "reported") -> None:
    """The authors' numbers read as percentages that can be: robust accuracy at most clean accuracy (an example
    that survives the attack is classified correctly), and not fractions (``0.85`` would be shown and submitted as
    0.85 %).

    Raises:
        robust_mix.validate.InvalidInputError: naming the field, with the numbers to write instead.
    """
    positive_int(f"{name}.n_examples", reported.n_examples)
    check_bool(f"{name}.additional_data", reported.additional_data)
    clean = _percentage(f"{name}.clean_acc", reported.clean_acc)
    robust = _percentage(f"{name}.autoattack_acc", reported.autoattack_acc)
    if robust > clean:
        raise InvalidInputError(f"{name}.autoattack_acc {reported.autoattack_acc!r} exceeds {name}.clean_acc "
                                f"{reported.clean_acc!r}, but an example robust to the attack is also classified "
                                "correctly: are the two swapped?")
    if clean <= 1:
        raise InvalidInputError(f"{name}.clean_acc is {reported.clean_acc!r} and autoattack_acc "
                                f"{reported.autoattack_acc!r}: reported numbers are percentages (RobustBench's "
                                f"85.21), and these read as fractions; write {100 * clean:g} and {100 * robust:g}")


#: Range rules of config fields, by field name at any depth (types are checked from the annotations).
CONFIG_RULES = {
    "alpha": lambda name, value: check_alpha(value, name),
    "alpha_range": lambda name, value: check_alpha_range(value, name), "eps": positive_float, "num_classes": positive_int,
    "std_scale": positive_float, "rob_scale": positive_float, "input_shape": _positive_ints,
    "input_size": _positive_ints, "widths": _positive_ints, "blocks": positive_int, "ln_k": check_ln_k,
    "surrogate_scale": positive_float, "scale": positive_float, "power": positive_float,
    "bias": lambda name, value: check_real(name, value),
    "std": lambda name, values: [positive_float(name, v) for v in values],
    "mean": lambda name, values: [check_real(name, v) for v in values],
    "preprocessing": lambda name, value: check_choice(name, value, ROBUSTBENCH_PREPROCESSINGS),
    "threat_model": lambda name, value: check_threat_model(value, name),
}

#: RobustBench's names of test-time preprocessings (``robustbench.data.PREPROCESSINGS``), as data.
ROBUSTBENCH_PREPROCESSINGS = ("Res256Crop224", "BicubicRes256Crop224", "Crop288", "Res224")

#: ModelConfig fields that describe a model without changing what it computes.
_DOCUMENTATION_FIELDS = ("name", "description", "paper", "citation", "license", "aliases", "reported", "labels",
                         "preprocessing")


def from_dict(cls: type, data: Any) -> Any:
    """Build dataclass ``cls`` from JSON data (nested dataclasses, tuples); unknown keys are an error."""
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(names)}")
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"{cls.__name__} is missing required field(s) {missing}")
    return cls(**{key: _coerce(hints[key], value) for key, value in data.items()})




def checked_from_dict(cls: type, data: Any) -> Any:
    """:func:`from_dict`, then every field checked against its annotation and :data:`CONFIG_RULES` (as
    :meth:`ModelConfig.validate` checks its nested configs): for a part of a config read back alone (a training
    run's ``policy.json``, ``nuts.json``).

    Raises:
        robust_mix.validate.InvalidInputError: naming the field and its value.
        ValueError, TypeError: not an object of ``cls``'s fields.
    """
    config = from_dict(cls, data)
    check_fields(config, CONFIG_RULES)
    return config


def _coerce(tp: Any, value: Any) -> Any:
    """Turn JSON values back into the annotated type (nested dataclasses, tuples); a numpy scalar or a 0-d tensor
    (``np.float32(0.5)``, ``torch.tensor(0.5)``) becomes the Python number it holds, as a config is written to
    JSON."""
    value = _plain(value)
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if origin is list and isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """The Python number a numpy scalar or a 0-d tensor holds (``.item()``); anything else as it is."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return value.item()
    return value
