"""Released checkpoints in other layouts, converted on load: key renaming as data.

A :class:`CheckpointFormat` says how one source layout (RobustBench's copy of BiT, the official
ConvNeXt-V2 code, RobustBench's mixing network...) maps onto the module we build (a timm
architecture, a RobustBench architecture, our :class:`~robust_mix.mixing_net.MixingNetwork`).
Formats are registered by name in :data:`FORMATS`; nothing here knows individual models.

The ``"robustbench"`` weight source reads a multi-file RobustBench entry
(``<model_dir>/<dataset>/<threat>/<Name>.pt_m<i>.pt``, downloading missing files with
RobustBench's own functions) into a :class:`~robust_mix.mixing.MixedClassifier`. The zoo entry
says which part each file fills and in which format, as data::

    weights={"robustbench": "cifar100/Linf/Bai2023Improving_edm",
             "m0": "standard:bit_rn", "m1": "robust:robustbench", "m2": "policy:mixing_net_v4"}
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

from robust_mix.backbones import BackboneNotFoundError, missing_files_message, is_offline, robustbench_files
from robust_mix.config import ModelConfig
from robust_mix.io import load_state_dict
from robust_mix.registry import register_weight_source

logger = logging.getLogger(__name__)

#: The parts of a :class:`~robust_mix.mixing.MixedClassifier` a checkpoint file can fill.
PARTS = ("standard", "robust", "policy")


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


# -- the RobustBench multi-file weight source -----------------------------------------------------
def checkpoint_parts(config: ModelConfig, count: int) -> list[tuple[str, CheckpointFormat]]:
    """``(part, format)`` for files ``m0 .. m<count-1>`` from ``config.weights`` (``"part:format"``)."""
    parts = []
    for i in range(count):
        spec = config.weights.get(f"m{i}")
        part, _, fmt = (spec or "").partition(":")
        if part not in PARTS or fmt not in FORMATS:
            raise ValueError(f"{config.name!r}: weights['m{i}'] must be '<part>:<format>' with part in "
                             f"{PARTS} and format in {sorted(FORMATS)}, got {spec!r}")
        parts.append((part, FORMATS[fmt]))
    return parts


def fetch_robustbench_files(ref: str, files: list[tuple[Path, str]]) -> None:
    """Download missing checkpoint files with RobustBench's own function, unless offline.

    Raises:
        BackboneNotFoundError: files are missing and downloads are off or failed; the message
            names each file and its Google Drive source.
    """
    missing = [(p, gid) for p, gid in files if not p.is_file()]
    if not missing:
        return
    if is_offline():
        raise BackboneNotFoundError(missing_files_message(ref, missing, "downloads are off"))
    import robust_mix._compat  # noqa: F401  (robustbench needs the autoattack alias)
    from robustbench.utils import download_gdrive_new

    for path, gid in missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s (Google Drive id %s)", path, gid)
        try:
            download_gdrive_new(gid, path)
        except Exception as err:  # gdown raises many kinds
            raise BackboneNotFoundError(missing_files_message(ref, missing, f"download failed: {err}")) from err
    still = [(p, gid) for p, gid in missing if not p.is_file()]
    if still:
        raise BackboneNotFoundError(missing_files_message(ref, still, "the download produced no file"))


def entry_files(config: ModelConfig, model_dir: Path) -> list[tuple[Path, str]]:
    """RobustBench's checkpoint files (path, Google Drive id) for ``config.weights["robustbench"]``,
    which is ``"<dataset>/<threat>/<Name>"``."""
    dataset, threat, name = config.weights["robustbench"].split("/")
    files = robustbench_files(dataset, threat, name, Path(model_dir))
    if not files:
        raise ValueError(f"{config.name!r}: RobustBench lists no checkpoint files for {dataset}/{threat}/{name}")
    return files


def fetch_entry_files(config: ModelConfig, model_dir: Path) -> None:
    """Make sure ``config``'s RobustBench files are in ``model_dir`` (download, or a clear error)."""
    fetch_robustbench_files(f"robustbench/{config.weights['robustbench']}", entry_files(config, model_dir))


def load_robustbench_weights(model: nn.Module, config: ModelConfig, model_dir: Path) -> None:
    """Fill a :class:`~robust_mix.mixing.MixedClassifier` from RobustBench's files for ``config``.

    ``config.weights["robustbench"]`` is ``"<dataset>/<threat>/<Name>"``; ``weights["m<i>"]`` says
    which part file ``i`` fills and its format. Every part of the model must be covered.
    """
    files = entry_files(config, model_dir)
    parts = checkpoint_parts(config, len(files))
    needed = {p for p in PARTS if getattr(model, p, None) is not None}
    uncovered = needed - {part for part, _ in parts}
    if uncovered:
        raise ValueError(f"{config.name!r}: no checkpoint file fills {sorted(uncovered)}")
    fetch_entry_files(config, model_dir)
    for (path, _), (part, fmt) in zip(files, parts):
        module = getattr(model, part)
        state = convert_state_dict(load_state_dict(path), fmt, module, source=str(path))
        module.load_state_dict(state, strict=False)  # coverage was checked, minus fmt.keep
        logger.info("loaded %s into %s (format %s, %d tensors)", path, part, fmt.name, len(state))


register_weight_source("robustbench", load_robustbench_weights, fetch_entry_files)


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
