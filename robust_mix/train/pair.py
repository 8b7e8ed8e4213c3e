"""A recipe's base pair: its data set, its two frozen bases checked against that data set, the composite.

A pair must classify the data set's label set and accept its images (through each base's input
adapter: resize, normalisation); anything else is an error that says which base and what to set,
raised before a run writes anything.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from robust_mix.backbones import as_backbone_config, load_backbone, resolve_input_config
from robust_mix.config import BackboneConfig, InputConfig
from robust_mix.data import dataset_key
from robust_mix.distributed import DistContext
from robust_mix.mixing import MixedClassifier, build_adaptive_policy
from robust_mix.preprocess import InputAdapter
from robust_mix.train.config import AdaSmoothRecipe


def resolve_dataset(dataset: str, robust: str) -> str:
    """The recipe's data set: ``dataset``, or the robust base's RobustBench data set when empty."""
    if dataset:
        return dataset_key(dataset)
    parts = robust.split("/")
    if parts[0] == "robustbench" and len(parts) == 4:
        return dataset_key(parts[1])
    raise ValueError(f"dataset is empty and the robust base {robust!r} is not a 'robustbench/<dataset>/...' "
                     "reference; set it with --set dataset=<name>")


def load_base(ref: str, contract: InputConfig, dist: DistContext, sample: torch.Tensor, classes: int,
              role: str) -> tuple[nn.Module, InputConfig]:
    """One base on ``dist.device`` and its input contract, checked on a data-set image ``(1, C, H, W)``:
    it must accept it (through its adapter) and return ``classes`` logits."""
    model = load_backbone(as_backbone_config(ref)).to(dist.device)
    contract = resolve_input_config(BackboneConfig(ref=ref, input=contract), model)
    with torch.no_grad():
        try:
            out = model(InputAdapter(contract).to(dist.device)(sample))
        except RuntimeError as err:
            raise ValueError(f"the {role} base {ref} does not accept the data set's {tuple(sample.shape[1:])} "
                             f"images ({err}); give it an input adapter, e.g. --set {role}_input.input_size=[H,W]"
                             ) from None
    if out.ndim != 2 or out.shape[1] != classes:
        raise ValueError(f"the {role} base {ref} returns {tuple(out.shape[1:])} outputs per image but the data set "
                         f"has {classes} classes; both bases must classify the data set's label set")
    return model, contract


def build_mixed(config: AdaSmoothRecipe, sample: torch.Tensor, classes: int,
                dist: DistContext = DistContext()) -> MixedClassifier:
    """Two frozen bases (checked against a data-set image ``(1, C, H, W)`` and its class count) with a
    fresh mixing network (seeded), on ``dist.device``.

    Raises:
        ValueError: a base does not accept the images, or the class counts differ, or the policy's
            ``input_shape`` is not the data set's.
    """
    if tuple(config.policy.input_shape) != tuple(sample.shape[1:]):
        raise ValueError(f"policy.input_shape={list(config.policy.input_shape)} but the data set's images are "
                         f"{list(sample.shape[1:])}; set --set policy.input_shape={list(sample.shape[1:])}")
    standard, std_input = load_base(config.standard, config.standard_input, dist, sample, classes, "standard")
    robust, rob_input = load_base(config.robust, config.robust_input, dist, sample, classes, "robust")
    model = MixedClassifier(standard, robust, alpha=0.5, std_scale=config.std_scale, rob_scale=config.rob_scale,
                            standard_input=std_input, robust_input=rob_input, num_classes=classes)
    torch.manual_seed(config.seed)
    model.alpha = build_adaptive_policy(model.to(dist.device), dataclasses.replace(config.policy))
    model.policy.bn.momentum = config.ratio_bn_momentum
    return model.to(dist.device)


def policy_state(model: MixedClassifier) -> dict[str, torch.Tensor]:
    """The ``policy.*`` tensors of a mixed model (what ``policy.safetensors`` holds)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith("policy.")}
