"""Shared fixtures: tiny real models, no downloads."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

pytest_plugins = ["train_fixtures"]  # tiny_data, tiny_bases: the training tests' fixtures


@pytest.fixture(autouse=True, scope="session")
def _one_thread_and_private_claims(tmp_path_factory):
    """Commands run in tests use one thread (the machine is shared) and register their thread claims
    in a private folder, invisible to robust_mix runs outside the test session."""
    from robust_mix import threads

    saved = {k: os.environ.get(k) for k in (threads.ENV_VAR, threads.RUNTIME_ENV_VAR)}
    os.environ.setdefault(threads.ENV_VAR, "1")
    os.environ[threads.RUNTIME_ENV_VAR] = str(tmp_path_factory.mktemp("thread-claims"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class TinyCNN(nn.Module):
    """Two conv stages and a linear head; ``stage1``/``stage2`` are tap points for a mixing network."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 8) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stage1 = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.stage1(x)).mean(dim=(2, 3)))


def write_fake_imagenet(root, n: int, seed: int = 0) -> list[str]:
    """The first ``n`` images of RobustBench's ImageNet test list, as noisy 300x280 JPEGs under ``root/val``
    (noise, so that bilinear and bicubic resizing give different pixels); returns their ids."""
    import numpy as np
    from PIL import Image

    from robust_mix.data import imagenet_test_ids

    rng = np.random.default_rng(seed)
    ids = imagenet_test_ids()[:n]
    for name in ids:
        path = root / "val" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (280, 300, 3), dtype=np.uint8)).save(path, quality=95)
    return ids


def make_tiny(seed: int, num_classes: int = 10, scale: float = 4.0, **kwargs) -> TinyCNN:
    """A TinyCNN with a sharpened head so its predictions depend on the input."""
    torch.manual_seed(seed)
    model = TinyCNN(num_classes, **kwargs)
    with torch.no_grad():
        model.head.weight.mul_(scale)
    return model.eval()


@pytest.fixture
def standard() -> TinyCNN:
    return make_tiny(0)


@pytest.fixture
def robust() -> TinyCNN:
    return make_tiny(1)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def scratch_registry(monkeypatch):
    """Entries registered during a test disappear afterwards, from the registry and from timm's."""
    from robust_mix import registry
    from robust_mix.timm_plugin import isolated_timm_registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    with isolated_timm_registry():
        yield
