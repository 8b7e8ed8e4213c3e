"""The model contract, for every registered entry: what RobustBench and AutoAttack require of a model.

Each entry is built with random weights (``pretrained=False``) at its own input shape, with its own
mixing constants (ratio or adaptive policy, temperatures, MixedNUTS maps, input contracts). Entries
whose bases are RobustBench's released architectures (the paper's, hundreds of millions of
parameters) get timm's tiny test architectures as stand-in bases, with the entry's input contracts
and the policy read from the stand-ins' first two stages: the contract is about robust_mix's code
path, and tests/test_paper_models.py checks the real architectures. ``mix`` gets the stand-ins as
the bases it is composed of.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import warnings
from pathlib import Path
from typing import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyautoattack import checks
from robust_mix import BackboneConfig, ModelConfig, build_model, get_model_config, list_models

PACKAGE = Path(__file__).resolve().parents[1] / "robust_mix"
BATCH = 2
STAND_IN_STANDARD = ("timm/test_byobnet", ["stages.0", "stages.1"])  # BiT's stage names, 0.2 M parameters
STAND_IN_ROBUST = ("timm/test_efficientnet", ["blocks.0", "blocks.1"])  # 0.1 M parameters
COMPOSITION = dict(num_classes=10, input_shape=(3, 32, 32))  # what `mix` is tested with


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def uses_released_architectures(config: ModelConfig) -> bool:
    return any(base.weights is not None and base.weights.source == "robustbench"
               for base in (config.standard, config.robust))


def contract_config(name: str) -> ModelConfig:
    """The entry as built here: itself, or with stand-in bases (see the module docstring)."""
    config = get_model_config(name)
    if config.standard is None:
        return config.with_overrides({**COMPOSITION, "standard": stand_in(STAND_IN_STANDARD, BackboneConfig("x"), 10),
                                      "robust": stand_in(STAND_IN_ROBUST, BackboneConfig("x"), 10)})
    if not uses_released_architectures(config):
        return config
    changes = {"standard": stand_in(STAND_IN_STANDARD, config.standard, config.num_classes),
               "robust": stand_in(STAND_IN_ROBUST, config.robust, config.num_classes), "weights": None}
    if config.policy is not None:
        changes["policy"] = dataclasses.replace(config.policy, standard_layers=STAND_IN_STANDARD[1],
                                                robust_layers=STAND_IN_ROBUST[1], widths=[8, 8, 8], blocks=1)
    return dataclasses.replace(config, **changes)


def stand_in(arch: tuple[str, list[str]], base: BackboneConfig, num_classes: int) -> BackboneConfig:
    return dataclasses.replace(base, ref=arch[0], kwargs={"num_classes": num_classes}, weights=None)


@contextlib.contextmanager
def cuda_forbidden() -> Iterator[None]:
    def refuse(*args, **kwargs):
        raise AssertionError(".cuda() was called: models must run where they are put (.to(device))")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "cuda", refuse)
        mp.setattr(nn.Module, "cuda", refuse)
        yield


@pytest.fixture(scope="module", params=list_models())
def built(request):
    name = request.param
    config = contract_config(name)
    torch.manual_seed(0)
    with cuda_forbidden():
        model = build_model(config, pretrained=False)
    x = torch.rand(BATCH, *config.input_shape, generator=torch.Generator().manual_seed(1))
    return name, config, model, x


def test_no_cuda_calls_in_the_package_source():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{n}" for path in sorted(PACKAGE.rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"\.cuda\(", line)]
    assert not offenders, offenders


def test_loaded_in_eval_mode(built):
    _, _, model, _ = built
    assert not any(module.training for module in model.modules())


def test_forward_is_one_deterministic_batch_of_class_scores(built):
    _, config, model, x = built
    with cuda_forbidden(), torch.no_grad():
        out, again = model(x), model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (BATCH, config.num_classes)
    assert torch.isfinite(out).all()
    assert torch.equal(out, again)


def test_every_input_gets_a_gradient(built):
    _, _, model, x = built
    x = x.clone().requires_grad_(True)
    with cuda_forbidden():
        out = model(x)
    F.cross_entropy(out, out.detach().argmin(1)).backward()  # towards the least likely class
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_pyautoattack_checks_raise_no_warning(built):
    _, config, model, x = built
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), model(x).detach().argmax(1)).backward()
    y = model(x).argmax(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks.check_randomized(model, x.detach(), y, bs=BATCH)
        n_classes = checks.check_range_output(model, x.detach())
        checks.check_dynamic(model, x.detach(), is_tf_model=False)
        checks.check_zero_gradients(x.grad)
        checks.check_n_classes(n_classes, ["apgd-ce", "apgd-t", "fab-t", "square"], min(9, n_classes - 1),
                               min(9, n_classes - 1))
    assert [str(w.message) for w in caught] == []


def test_to_moves_every_tensor(built):
    name, config, model, x = built
    strays = [f"{module_name}.{key}" for module_name, module in model.named_modules()
              for key, value in vars(module).items() if isinstance(value, torch.Tensor)]
    assert not strays, f"tensors outside parameters and buffers are not moved by .to(): {strays}"
    model = model.to(torch.float64)
    try:
        tensors = list(model.parameters()) + list(model.buffers())
        assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())
        with torch.no_grad():
            out = model(x.double())
        assert out.dtype == torch.float64 and out.shape == (BATCH, config.num_classes)
    finally:
        model.to(torch.float32)
    model = model.to("cpu")
    assert all(t.device.type == "cpu" for t in list(model.parameters()) + list(model.buffers()))
