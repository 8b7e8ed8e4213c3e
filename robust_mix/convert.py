"""Released checkpoints in other layouts, converted on load: key renaming as data.

A :class:`CheckpointFormat` says how one source layout (RobustBench's copy of BiT, the official
ConvNeXt-V2 code, RobustBench's mixing network...) maps onto the module we build (a timm
architecture, a RobustBench architecture, our :class:`~robust_mix.mixing_net.MixingNetwork`).
Formats are registered by name in :data:`FORMATS`; nothing here knows individual models. A
:class:`~robust_mix.config.WeightsConfig` names its file's layout in ``format``; the paper's
entries read RobustBench's multi-file checkpoints that way, one file per part::

    standard=BackboneConfig("timm/resnetv2_152x2_bit", weights=WeightsConfig(
        robustbench="cifar100/Linf/Bai2023Improving_edm", index=0, format="bit_rn"))
"""
from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from robust_mix.config import WeightsConfig
from robust_mix.weights import read_weights

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class KeyRule:
    """Rename source keys matching ``pattern`` (a regex anchored at the key's start).

    The matched prefix is replaced by ``replacement`` formatted with the pattern's groups; a group
    with an entry in ``offsets`` is read as an integer and shifted (``unit01`` -> ``blocks.0``).
    """

    pattern: str
    replacement: str
    offsets: tuple[int, ...] = ()

    def apply(self, key: str) -> Optional[str]:
        """The renamed key, or ``None`` when the rule does not match."""
        match = re.match(self.pattern, key)
        if match is None:
            return None
        groups = [str(int(g) + self.offsets[i]) if i < len(self.offsets) else g
                  for i, g in enumerate(match.groups())]
        return self.replacement.format(*groups) + key[match.end():]


@dataclass(frozen=True)
class CheckpointFormat:
    """How a checkpoint layout maps onto the module it is loaded into.

    Attributes:
        name: registry name, used by zoo entries.
        description: what the source layout is.
        rules: renaming rules, first match wins; keys no rule matches keep their name.
        scales: target keys (regex) whose tensors are multiplied by this factor (exact
            reparametrisations, e.g. to carry a different epsilon).
        constants: source keys (regex) that must hold this constant value everywhere and are then
            dropped, because the target applies it elsewhere (e.g. BiT's ``(x - 0.5) / 0.5`` lives
            in the input adapter).
        drop: source keys (regex) the source architecture never uses; dropped.
        keep: target keys (regex) the file may lack; they keep the constructor's values (the
            normalisation constants RobustBench also leaves as constructed).
        filter_fn: ``"module:function"`` applied first as ``function(state, submodule)``, for
            layouts a library already knows how to upgrade (timm's Swin filter, as RobustBench does).
        filter_module: dotted path of the submodule passed to ``filter_fn`` (``""`` = the part).
        prefix: prepended to every key after ``filter_fn`` and before ``rules``.
    """

    name: str
    description: str
    rules: tuple[KeyRule, ...] = ()
    scales: Mapping[str, float] = field(default_factory=dict)
    constants: Mapping[str, float] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    filter_fn: Optional[str] = None
    filter_module: str = ""
    prefix: str = ""


FORMATS: dict[str, CheckpointFormat] = {}


def register_format(fmt: CheckpointFormat) -> CheckpointFormat:
    """Add a checkpoint format to :data:`FORMATS`; names are unique."""
    if fmt.name in FORMATS:
        raise ValueError(f"checkpoint format {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt


def flatten_state(state: Mapping[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts of tensors (``{"model": {...}, "bn": {...}}``) as one flat ``"a.b"`` dict."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            flat.update(flatten_state(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            flat[f"{prefix}{key}"] = value
        else:
            raise ValueError(f"checkpoint entry {prefix}{key!r} is a {type(value).__name__}, not a tensor")
    return flat


def convert_state_dict(state: Mapping[str, Any], fmt: CheckpointFormat, target: nn.Module,
                       source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename ``state`` from ``fmt``'s layout to ``target``'s and check that it fits exactly.

    Tensors whose shape differs from the target's but hold the same number of elements are
    reshaped (``(C,)`` vs ``(1, 1, 1, C)``, linear vs 1x1-conv weights).

    Raises:
        ValueError: a constant does not hold its value, or after conversion tensors are missing,
            unexpected or of the wrong size; the message names them and the format.
    """
    flat = flatten_state(state)
    if fmt.filter_fn:
        module_name, _, func_name = fmt.filter_fn.partition(":")
        func = getattr(importlib.import_module(module_name), func_name)
        flat = dict(func(flat, target.get_submodule(fmt.filter_module)))
    flat = {fmt.prefix + k: v for k, v in flat.items()}
    for pattern, value in fmt.constants.items():
        for key in [k for k in flat if re.fullmatch(pattern, k)]:
            if not torch.allclose(flat[key].float(), torch.full_like(flat[key].float(), value)):
                raise ValueError(f"{source}: {key!r} is expected to be {value} everywhere in format "
                                 f"{fmt.name!r} (the adapter applies it), got {flat[key].flatten()[:4].tolist()}")
            del flat[key]
    out: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        if any(re.fullmatch(p, key) for p in fmt.drop):
            continue
        out[next((new for new in (r.apply(key) for r in fmt.rules) if new is not None), key)] = value
    own = target.state_dict()
    missing = [k for k in own if k not in out and not any(re.fullmatch(p, k) for p in fmt.keep)]
    unexpected = [k for k in out if k not in own]
    if missing or unexpected:
        raise ValueError(f"{source} does not fit {type(target).__name__} through format {fmt.name!r}: "
                         f"missing {missing[:6]} ({len(missing)}), unexpected {unexpected[:6]} "
                         f"({len(unexpected)})")
    for key, value in out.items():
        want = own[key].shape
        if value.shape != want:
            if value.numel() != own[key].numel():
                raise ValueError(f"{source}: {key!r} has shape {tuple(value.shape)}, the model "
                                 f"expects {tuple(want)} (format {fmt.name!r})")
            out[key] = value.reshape(want)
        factor = next((f for pattern, f in fmt.scales.items() if re.fullmatch(pattern, key)), None)
        if factor is not None:
            out[key] = out[key] * factor
    return out


# -- loading a WeightsConfig into a module ---------------------------------------------------------
def _kind(dtype: torch.dtype) -> str:
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating-point"
    return "boolean" if dtype == torch.bool else "integer"


def check_tensor_kinds(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse tensors of another kind than the model's (integers or booleans for floating-point weights, fractions
    for an integer count such as BatchNorm's ``num_batches_tracked``): ``load_state_dict`` would cast them silently,
    and the model would compute with numbers the file never held. Another floating-point precision (a float16 or
    float64 checkpoint for a float32 model) is the same numbers, rounded, and is loaded.

    Raises:
        ValueError: naming ``source``, the tensors (up to 6), their dtypes and the model's, and what to do.
    """
    own = model.state_dict()
    wrong = [f"{key} ({str(value.dtype).removeprefix('torch.')}, the model's is "
             f"{str(own[key].dtype).removeprefix('torch.')})" for key, value in state.items()
             if key in own and isinstance(value, torch.Tensor) and _kind(value.dtype) != _kind(own[key].dtype)]
    if wrong:
        raise ValueError(f"{source} does not match the architecture: {len(wrong)} tensor(s) of another kind than the "
                         f"model's {wrong[:6]}, which loading would cast silently; the file is not a checkpoint of "
                         "this model, or was damaged or edited: fetch the right file again")


def load_weights_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped tensor, or one of another kind
    (:func:`check_tensor_kinds`), is a ``ValueError`` naming ``source``."""
    check_tensor_kinds(model, state, source)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # torch reports tensors of another shape this way
        raise ValueError(f"{source} does not match the architecture: {err}") from err
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{source} does not match the architecture: missing tensors "
                         f"{result.missing_keys[:8]}, unexpected tensors {result.unexpected_keys[:8]}")
    return model


def load_weights(module: nn.Module, weights: WeightsConfig, model_dir: Optional[Path] = None, *,
                 what: str = "model") -> nn.Module:
    """Fill ``module`` from the file ``weights`` names: fetched, verified, converted, loaded strictly.

    With ``weights.format`` the tensors are renamed from that layout first
    (:func:`convert_state_dict`); without it they must carry ``module``'s own names.

    Raises:
        robust_mix.weights.WeightsNotFoundError: the file is missing and cannot be fetched.
        ValueError: the file is refused (web page, corrupt, pickled objects, wrong SHA-256) or its
            tensors do not fit ``module``.
    """
    state = read_weights(weights, model_dir)
    source = f"{weights.describe()} (for {what})"
    if weights.format is None:
        return load_weights_strict(module, flatten_state(state), source)
    if weights.format not in FORMATS:
        raise ValueError(f"{source}: unknown checkpoint format {weights.format!r}; known: {sorted(FORMATS)}")
    converted = convert_state_dict(state, FORMATS[weights.format], module, source=source)
    check_tensor_kinds(module, converted, source)
    module.load_state_dict(converted, strict=False)  # coverage was checked, minus the format's `keep`
    logger.info("loaded %s into %s (format %s, %d tensors)", weights.describe(), what, weights.format, len(converted))
    return module


# -- formats ------------------------------------------------------------------------------------------
_NORMALISATION = (r"(normalize\.)?(mean|std)",)

register_format(CheckpointFormat(
    name="robustbench",
    description="a RobustBench architecture's own state dict (loaded as RobustBench loads it)",
    keep=_NORMALISATION,
))

register_format(CheckpointFormat(
    name="bit_rn",
    description="RobustBench's BiT ResNet-v2 (bit_rn.py / bit_rn_v2.py, root/body/head) -> timm resnetv2",
    rules=(
        KeyRule(r"root\.conv\.", "stem.conv."),
        KeyRule(r"body\.block(\d+)\.unit(\d+)\.downsample\.", "stages.{}.blocks.{}.downsample.conv.", (-1, -1)),
        KeyRule(r"body\.block(\d+)\.unit(\d+)\.gn(\d)\.", "stages.{}.blocks.{}.norm{}.", (-1, -1)),
        KeyRule(r"body\.block(\d+)\.unit(\d+)\.", "stages.{}.blocks.{}.", (-1, -1)),
        KeyRule(r"head\.gn\.", "norm."),
        KeyRule(r"head\.conv\.", "head.fc."),
    ),
    # Weight standardisation is (w - mean) / sqrt(var + eps): RobustBench's eps is 1e-10, timm's
    # 1e-8. Scaling the weights by 10 makes timm's eps act as 1e-10 exactly (the result is
    # otherwise scale-invariant).
    scales={r"(stem\.conv|stages\.\d+\.blocks\.\d+\.(conv\d|downsample\.conv))\.weight": 10.0},
    # bit_rn_v2 stores its (x - 0.5) / 0.5 as parameters; the input adapter applies it instead.
    constants={r"mean": 0.5, r"std": 0.5},
))

register_format(CheckpointFormat(
    name="convnext_v2",
    description="the official ConvNeXt-V2 layout (RobustBench's convnext_v2.py) -> timm convnextv2",
    rules=(
        KeyRule(r"downsample_layers\.0\.", "stem."),
        KeyRule(r"downsample_layers\.(\d+)\.", "stages.{}.downsample."),
        KeyRule(r"stages\.(\d+)\.(\d+)\.dwconv\.", "stages.{}.blocks.{}.conv_dw."),
        KeyRule(r"stages\.(\d+)\.(\d+)\.pwconv1\.", "stages.{}.blocks.{}.mlp.fc1."),
        KeyRule(r"stages\.(\d+)\.(\d+)\.pwconv2\.", "stages.{}.blocks.{}.mlp.fc2."),
        KeyRule(r"stages\.(\d+)\.(\d+)\.grn\.gamma", "stages.{}.blocks.{}.mlp.grn.weight"),
        KeyRule(r"stages\.(\d+)\.(\d+)\.grn\.beta", "stages.{}.blocks.{}.mlp.grn.bias"),
        KeyRule(r"stages\.(\d+)\.(\d+)\.", "stages.{}.blocks.{}."),
        KeyRule(r"norm\.", "head.norm."),
        KeyRule(r"head\.", "head.fc."),
    ),
    # RobustBench's ConvNeXtV2 holds ImageNet mean/std parameters but its forward never uses them.
    drop=(r"mean", r"std"),
))

register_format(CheckpointFormat(
    name="robustbench_swin",
    description="a timm Swin state dict as RobustBench stores it: timm's checkpoint filter, then "
                "the 'model.' prefix of RobustBench's normalising wrapper",
    filter_fn="timm.models.swin_transformer:checkpoint_filter_fn",
    filter_module="model",
    prefix="model.",
    keep=_NORMALISATION,
))

register_format(CheckpointFormat(
    name="mixing_net_v4",
    description="RobustBench's {'model': MixingNetV4 state, 'bn': BatchNorm1d state} -> AdaptiveAlpha",
    rules=(
        KeyRule(r"model\.layers\.(\d+)\.(\d+)\.shortcut\.0\.", "network.stages.{}.{}.shortcut."),
        KeyRule(r"model\.layers\.", "network.stages."),
        KeyRule(r"model\.conv1x1\.", "network.lateral.0."),
        KeyRule(r"model\.linear\.", "network.linear."),
    ),
))
