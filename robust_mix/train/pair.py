"""A recipe's base pair: its data set, its two frozen bases checked against that data set, the composite.

A pair must classify the data set's label set and accept its images (through each base's input
adapter: resize, normalisation); anything else is an error that says which base and what to set,
raised before a run writes anything.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from robust_mix.backbones import as_backbone_config, load_backbone, resolve_input_config
from robust_mix.config import BackboneConfig, ModelConfig
from robust_mix.data import dataset_key
from robust_mix.distributed import DistContext
from robust_mix.io import load_state_dict
from robust_mix.mixing import MixedClassifier, build_adaptive_policy
from robust_mix.preprocess import InputAdapter
from robust_mix.train.evaluation import probe
from robust_mix.train.config import AdaSmoothRecipe
from robust_mix.validate import InvalidInputError


def resolve_dataset(dataset: str, robust: str) -> str:
    """The recipe's data set: ``dataset``, or the robust base's RobustBench data set when empty."""
    if dataset:
        return dataset_key(dataset)
    parts = robust.split("/")
    if parts[0] == "robustbench" and len(parts) == 4:
        return dataset_key(parts[1])
    raise ValueError(f"dataset is empty and the robust base {robust!r} is not a 'robustbench/<dataset>/...' "
                     "reference; set it with --set dataset=<name>")


def check_base(model: nn.Module, adapter: nn.Module, sample: torch.Tensor, classes: int, role: str, ref: str) -> None:
    """A base must accept a data-set image ``(1, C, H, W)`` through its input adapter and return ``classes`` logits."""
    out = probe(model, sample, f"the {role} base {ref} does not accept the data set's {tuple(sample.shape[1:])} "
                f"images; give it an input adapter, e.g. --set {role}_input.input_size=[H,W]", adapter)
    if out.ndim != 2 or out.shape[1] != classes:
        raise ValueError(f"the {role} base {ref} returns {tuple(out.shape[1:])} outputs per image but the data set "
                         f"has {classes} classes; both bases must classify the data set's label set")


def load_base(ref: str, dist: DistContext, sample: torch.Tensor, classes: int, role: str) -> nn.Module:
    """One base alone (MixedNUTS calibrates the robust one), behind its input adapter, checked on ``sample``."""
    model = load_backbone(as_backbone_config(ref)).to(dist.device)
    adapter = InputAdapter(resolve_input_config(BackboneConfig(ref=ref), model)).to(dist.device)
    check_base(model, adapter, sample, classes, role, ref)
    return nn.Sequential(adapter, model).eval()


def mixed_config(config: AdaSmoothRecipe, dataset: str, classes: int) -> ModelConfig:
    """The :class:`~robust_mix.config.ModelConfig` of the composite a recipe trains, at a fixed ratio (the
    policy is installed once the bases have been checked); its input contract is the policy's ``input_shape``."""
    return ModelConfig(name="adasmooth-recipe", dataset=dataset, eps=config.eps, num_classes=classes, alpha=0.5,
                       input_shape=tuple(config.policy.input_shape),
                       standard=BackboneConfig(ref=config.standard, input=copy.deepcopy(config.standard_input)),
                       robust=BackboneConfig(ref=config.robust, input=copy.deepcopy(config.robust_input)),
                       std_scale=config.std_scale, rob_scale=config.rob_scale)


def build_mixed(config: AdaSmoothRecipe, sample: torch.Tensor, classes: int,
                dist: DistContext = DistContext()) -> MixedClassifier:
    """The composite, built by the one builder (``MixedClassifier.from_config``), with a fresh mixing network
    (seeded), on ``dist.device``;
    both bases checked against a data-set image ``(1, C, H, W)`` and its class count.

    Raises:
        ValueError: a base does not accept the images, or the class counts differ, or the policy's
            ``input_shape`` is not the data set's.
    """
    if tuple(config.policy.input_shape) != tuple(sample.shape[1:]):
        raise ValueError(f"policy.input_shape={list(config.policy.input_shape)} but the data set's images are "
                         f"{list(sample.shape[1:])}; set --set policy.input_shape={list(sample.shape[1:])}")
    model = MixedClassifier.from_config(mixed_config(config, resolve_dataset(config.dataset, config.robust), classes),
                                        device=dist.device)
    check_base(model.standard, model.standard_input, sample, classes, "standard", config.standard)
    check_base(model.robust, model.robust_input, sample, classes, "robust", config.robust)
    torch.manual_seed(config.seed)
    model.alpha = build_adaptive_policy(model, copy.deepcopy(config.policy))
    model.policy.bn.momentum = config.ratio_bn_momentum
    return model


def policy_state(model: MixedClassifier) -> dict[str, torch.Tensor]:
    """The ``policy.*`` tensors of a mixed model (what ``policy.safetensors`` holds)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith("policy.")}


def load_initial_policy(model: MixedClassifier, path: str) -> None:
    """Start ``model``'s mixing network from the ``policy.*`` tensors in ``path`` (an earlier run's output).

    Raises:
        InvalidInputError: the file's tensors are not exactly this network's (names or shapes differ):
            it belongs to another ``policy`` layout or other bases.
    """
    state = load_state_dict(Path(path).expanduser())  # '~/runs/...' reaches no shell from a --set value
    own = policy_state(model)
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or extra or reshaped:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", extra), ("other shape", reshaped)) if keys]
        raise InvalidInputError(f"init_policy={path!r} is not a mixing network of this recipe's layout ("
                                f"{'; '.join(parts)}); use the policy.safetensors of a run with the same bases "
                                f"and policy fields, or leave init_policy empty")
    model.load_state_dict({k: v.to(own[k].device, own[k].dtype) for k, v in state.items()}, strict=False)
