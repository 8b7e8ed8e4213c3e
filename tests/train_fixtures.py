"""Shared pieces of the training tests: synthetic Fashion-MNIST-shaped data, tiny timm bases, tiny recipes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robust_mix import data
from robust_mix.backbones import save_backbone
from robust_mix.config import PolicyConfig
from robust_mix.train import AdaSmoothRecipe, BackboneRecipe, build_backbone

TINY = {"in_chans": 1, "num_classes": 10, "layers": [1, 1, 1, 1], "channels": [4, 8, 8, 8],
        "stem_width": 4, "stem_type": "deep"}


def synthetic_arrays(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images whose brightness depends on the class, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = np.clip(rng.uniform(0, 0.3, (n, 28, 28)) + labels[:, None, None] / 14, 0, 1)
    return (images * 255).round().astype(np.uint8), labels.astype(np.int64)


@pytest.fixture
def tiny_data(monkeypatch):
    """'fashion-mnist' opens 96 synthetic images for every split (train and val alike)."""
    images, labels = synthetic_arrays()
    monkeypatch.setitem(data._OPENERS, "fashion-mnist",
                        lambda split, data_dir: data.ImageArrayDataset(images, labels, num_classes=10))
    return images, labels


def tiny_backbone_recipe(**fields) -> BackboneRecipe:
    values = dict(arch="timm/resnet18", arch_kwargs=dict(TINY), dataset="fashion-mnist", eps=0.1, epochs=1,
                  batch_size=16, lr=1e-2, val_subset=32, eval_subset=16, attack_steps=2, eval_attack_steps=2)
    values.update(fields)
    return BackboneRecipe(**values)


def tiny_policy() -> PolicyConfig:
    return PolicyConfig(standard_layers=["layer1", "layer2"], robust_layers=["layer1", "layer2"],
                        widths=[8, 8], blocks=1, input_shape=(1, 28, 28))


@pytest.fixture
def tiny_bases(tmp_path):
    """Two tiny random timm ResNets saved as self-describing files: ``[standard, robust]`` paths."""
    paths = []
    for seed, name in ((0, "std"), (1, "rob")):
        model = build_backbone(dataclasses.replace(tiny_backbone_recipe(), seed=seed))
        paths.append(str(save_backbone(model, tmp_path / f"{name}.safetensors", ref="timm/resnet18", kwargs=TINY)))
    return paths


def tiny_adasmooth(bases: list[str], **fields) -> AdaSmoothRecipe:
    values = dict(standard=bases[0], robust=bases[1], dataset="fashion-mnist", eps=0.1, policy=tiny_policy(),
                  n_targets=2, iter_df=3.0, iter_min=2, iter_max=2, buffer_subset=32, buffer_shard=12,
                  epochs=1, batch_size=8, accumulation=1, lr=1e-3, warmup_epochs=0.0, precision="fp32",
                  val_subset=8, calib_images=16, calib_attack_steps=2, calib_alpha_lo=[0.0, 0.5],
                  calib_gamma_scale=[1.0], calib_gamma_bias=[0.0, 1.0], ratio_bn_momentum=0.1,
                  c_bce=1.0, c_ce=0.5, c_prod=0.1)
    values.update(fields)
    return AdaSmoothRecipe(**values)
