"""The shipped Fashion-MNIST zoo: every entry loads offline from package data and behaves as documented."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import robust_mix
from robust_mix.backbones import load_backbone
from robust_mix.io import sha256_file
from robust_mix.weights import package_file
from robust_mix.data import DEBIAN_FASHION_MNIST, load_dataset

ENTRIES = ["fmnist-standard", "fmnist-robust", "fmnist-adasmooth", "fmnist-mixednuts"]


@pytest.fixture(scope="module")
def test_images():
    if not (DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST (dataset-fashion-mnist) not installed")
    return load_dataset("fashion-mnist", "test", n_examples=200)


@pytest.fixture(scope="module")
def models():
    return {name: robust_mix.load_model(name) for name in ENTRIES}


def test_entries_registered_as_data():
    for name in ENTRIES:
        config = robust_mix.get_model_config(name)
        assert config.dataset == "fashion-mnist" and config.eps == 0.1 and config.threat_model == "Linf"
        assert config.labels is not None and len(config.labels) == 10 and config.reported is None
        for base in (config.standard, config.robust):
            assert base.ref.startswith("timm/") and base.weights.package.startswith("zoo/weights/")
            assert sha256_file(package_file(base.weights.package)) == base.weights.sha256
    assert robust_mix.get_model_config("fmnist-standard").alpha == 0.0
    assert robust_mix.get_model_config("fmnist-robust").alpha == 1.0
    adaptive = robust_mix.get_model_config("fmnist-adasmooth")
    assert adaptive.alpha is None and adaptive.policy is not None
    assert sha256_file(package_file(adaptive.weights.package)) == adaptive.weights.sha256
    nuts = robust_mix.get_model_config("fmnist-mixednuts")
    assert nuts.nuts is not None and 0.0 < nuts.alpha < 1.0


def test_outputs_are_log_probabilities(models, test_images):
    x = test_images[0][:16]
    for name, model in models.items():
        with torch.no_grad():
            out = model(x)
        assert out.shape == (16, 10), name
        assert torch.allclose(out.exp().sum(1), torch.ones(16), atol=1e-4), name


def test_standard_entry_is_the_standard_base(models, test_images):
    x = test_images[0][:16]
    base = load_backbone(str(package_file("zoo/weights/fmnist-standard.safetensors")))
    with torch.no_grad():
        assert torch.allclose(models["fmnist-standard"](x), F.log_softmax(base(x), dim=1), atol=1e-5)


def test_adaptive_alpha_varies_within_saved_range(models, test_images):
    model = models["fmnist-adasmooth"]
    lo, hi = robust_mix.get_model_config("fmnist-adasmooth").policy.alpha_range
    with torch.no_grad():
        _, alpha = model(test_images[0], return_alpha=True)
    assert alpha.min() >= lo - 1e-6 and alpha.max() <= hi + 1e-6
    assert alpha.std() > 1e-3


def test_accuracy_sanity(models, test_images):
    x, y = test_images
    for name, model in models.items():
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean().item()
        assert acc > 0.7, f"{name}: accuracy {acc:.3f} on 200 test images"
