"""The fast path for frozen bases (robust_mix.fastpath): exact, invisible to state_dict, invalidated on change."""
from __future__ import annotations

import copy
import functools
import io
import pickle

import pytest
import torch
from timm.layers import GroupNormAct, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame
from timm.models.resnetv2 import ResNetV2

import robust_mix
from robust_mix import fastpath
from robust_mix.std_conv import CachedStdConv2d
from robust_mix.protocol import AttackOptions
from test_benchmark import EPS, TemplateNet, fmnist

torch.set_num_threads(1)

LAYERS = [lambda: StdConv2d(3, 8, 3, eps=1e-8), lambda: StdConv2dSame(3, 8, 3, stride=2),
          lambda: ScaledStdConv2d(3, 8, 3), lambda: ScaledStdConv2dSame(3, 8, 3, stride=2)]


def tiny_bit(seed: int = 0) -> ResNetV2:
    """A BiT-style ResNet-v2 (weight-standardised convolutions, GroupNorm) for 1x28x28 images."""
    torch.manual_seed(seed)
    model = ResNetV2(layers=[1, 1, 1, 1], channels=(32, 32, 64, 64), num_classes=10, in_chans=1, stem_type="fixed",
                     conv_layer=functools.partial(StdConv2d, eps=1e-8),
                     norm_layer=functools.partial(GroupNormAct, num_groups=8))
    with torch.no_grad():
        model.head.fc.weight.mul_(20.0)
    return model.eval()


@pytest.mark.parametrize("make", LAYERS)
def test_cached_layer_is_bit_identical_and_invisible_to_state_dict(make):
    torch.manual_seed(0)
    original = make().requires_grad_(False)
    cached = copy.deepcopy(original)
    assert fastpath.cache_frozen_weights(cached) == 1 and isinstance(cached, type(original))
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    out, out_cached = original(x), cached(x)
    assert torch.equal(out, out_cached)
    grad, = torch.autograd.grad(out.square().sum(), x)
    grad_cached, = torch.autograd.grad(cached(x).square().sum(), x)
    assert torch.equal(grad, grad_cached)
    assert list(cached.state_dict()) == list(original.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(cached.state_dict().values(), original.state_dict().values()))
    assert cached.standardized_weight is not None  # ... and it was used


def test_cache_follows_weight_changes_and_gradients():
    torch.manual_seed(0)
    layer = StdConv2d(3, 4, 3, eps=1e-8).requires_grad_(False)
    fastpath.cache_frozen_weights(layer)
    x = torch.randn(1, 3, 5, 5)
    before = layer(x)
    with torch.no_grad():
        layer.weight.mul_(-1.0).add_(0.3)  # in place, as load_state_dict does
    changed = layer(x)
    with fastpath.original_layers(layer):
        assert type(layer) is StdConv2d
        assert torch.equal(changed, layer(x))
    assert type(layer) is CachedStdConv2d and not torch.equal(before, changed)
    layer.load_state_dict({"weight": torch.randn(4, 3, 3, 3)})
    with fastpath.original_layers(layer):
        reloaded = layer(x)
    assert torch.equal(layer(x), reloaded)
    layer.double()  # a dtype change recomputes
    assert layer(x.double()).dtype == torch.float64
    layer.float().requires_grad_(True)  # a trainable weight gets its gradient through the standardisation
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_cached_layer_survives_pickle_and_inference_mode():
    layer = StdConv2d(3, 4, 3).requires_grad_(False)
    fastpath.cache_frozen_weights(layer)
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    with torch.inference_mode():
        first = layer(x.detach())  # the cache is filled under inference mode ...
    layer(x).sum().backward()  # ... and still usable where autograd records
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert type(again) is CachedStdConv2d and torch.equal(again(x.detach()), first)
    assert type(pickle.loads(pickle.dumps(layer))) is CachedStdConv2d


def bit_mix() -> robust_mix.MixedClassifier:
    return robust_mix.MixedClassifier(tiny_bit(), TemplateNet(1, 2.0), alpha=0.5)


def test_mixed_classifier_caches_its_bases_and_the_harness_flags_are_unchanged():
    model = bit_mix()
    cached = [m for m in model.modules() if isinstance(m, CachedStdConv2d)]
    assert len(cached) == sum(isinstance(m, StdConv2d) for m in model.modules()) > 5
    reference = tiny_bit()
    assert list(model.standard.state_dict()) == list(reference.state_dict())  # names and tensors as timm's
    x, y = fmnist(8)
    kwargs = dict(images=x, labels=y, eps=EPS, batch_size=8, attack="apgd-ce,apgd-t,square", device="cpu",
                  options=AttackOptions(n_iter=8, n_target_classes=2, n_queries=20))
    fast = robust_mix.benchmark(model, **kwargs)
    with fastpath.original_layers(model):
        slow = robust_mix.benchmark(model, **kwargs)
    assert (fast.clean_flags, fast.stage_accuracy, fast.robust_flags) == \
           (slow.clean_flags, slow.stage_accuracy, slow.robust_flags)
    assert 0 < fast.clean_accuracy and fast.robust_accuracy < fast.clean_accuracy  # a real, attackable model


POOLS = [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2), dict(kernel_size=3, stride=1),
         dict(kernel_size=3, stride=2, ceil_mode=True), dict(kernel_size=2, stride=2, dilation=2, padding=1)]


@pytest.mark.parametrize("kwargs", POOLS)
def test_fast_pooling_is_bit_identical_with_ties_and_nan(kwargs):
    torch.manual_seed(0)
    x = torch.relu(torch.randn(3, 16, 15, 13))  # after a ReLU: many tied zeros
    x[0, :, 2:6, 2:6] = 0.5  # tied positive maxima
    x[1, 3, 4, 4] = float("nan")
    original = torch.nn.MaxPool2d(**kwargs)
    fast = torch.nn.MaxPool2d(**kwargs)
    assert fastpath.fast_pooling(fast) == 1 and isinstance(fast, fastpath.ForwardNHWCMaxPool2d)
    with torch.no_grad():
        expected, got = original(x), fast(x)
    assert got.is_contiguous() and torch.equal(expected.isnan(), got.isnan())
    assert torch.equal(expected.nan_to_num(), got.nan_to_num())
    # with autograd recording: the original kernel, the same gradient
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    weight = torch.randn_like(expected).nan_to_num()
    (original(xa).nan_to_num() * weight).sum().backward()
    (fast(xb).nan_to_num() * weight).sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    with torch.inference_mode():  # channels-last inputs (the opt-in path) pass through unchanged
        nhwc = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(fast(nhwc).nan_to_num(), expected.nan_to_num())


def test_zoo_bases_pool_fast_and_the_outputs_match_the_original_layers():
    model = robust_mix.load_model("fmnist-adasmooth")
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert pools and all(type(m) is fastpath.ForwardNHWCMaxPool2d for m in pools)
    x, _ = fmnist(16)
    with torch.no_grad():
        fast = model(x)
        with fastpath.original_layers(model):
            assert all(type(m) is torch.nn.MaxPool2d for m in pools)
            slow = model(x)
    assert torch.equal(fast, slow)
    assert all(type(m) is fastpath.ForwardNHWCMaxPool2d for m in pools)  # switched back
    assert not any("Forward" in key for key in model.state_dict())


def test_attacks_leave_trainable_weights_alone_and_find_the_same_examples(monkeypatch):
    """FAB-T's backward() no longer computes gradients of the mixing network's weights; the
    adversarial examples (gradients of the input) are the same as with the weights trainable."""
    import contextlib

    from robust_mix import attacks
    from test_attacks import adaptive_model, runner_for

    x, y = fmnist(6)
    model = adaptive_model()
    assert any(p.requires_grad for p in model.policy.parameters())
    runner = runner_for(model, n_iter=4, n_target_classes=2)
    frozen = runner.run("fab-t", x, y, seed=3)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.policy.parameters())  # restored
    monkeypatch.setattr(attacks, "frozen_parameters", lambda m: contextlib.nullcontext(m))
    trainable = runner.run("fab-t", x, y, seed=3)
    assert any(p.grad is not None for p in model.policy.parameters())  # what the freezing avoids
    assert torch.equal(frozen, trainable)


def test_channels_last_keeps_values_names_hooks_and_saving(tmp_path):
    """The opt-in NHWC path: the same state (values and names), the mixing network's feature taps
    still fire, outputs within rounding of the default path, and a save of it reloads exactly."""
    from test_attacks import adaptive_model

    model, twin = adaptive_model(), adaptive_model()
    x, _ = fmnist(6)
    with torch.no_grad():
        before = model.forward_all(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert fastpath.channels_last(model) is model
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                         for w in convs if w.shape[1] > 1 and w.shape[2:] != (1, 1))
    after_state = model.state_dict()
    assert list(after_state) == list(state) and all(torch.equal(after_state[k], v) for k, v in state.items())
    with torch.no_grad():
        after = model.forward_all(x)
    assert after.log_probs.dtype == before.log_probs.dtype
    assert (after.log_probs.exp() - before.log_probs.exp()).abs().max() < 1e-5
    assert (after.gamma - before.gamma).abs().max() < 1e-4
    robust_mix.io.save_state_dict(model.state_dict(), tmp_path / "m.safetensors")
    twin.load_state_dict(robust_mix.io.load_state_dict(tmp_path / "m.safetensors"))
    with torch.no_grad():
        assert torch.equal(twin.forward_all(x).log_probs, before.log_probs)


def test_channels_last_cli_flag_builds_nhwc_models():
    import argparse

    from robust_mix.cli.benchmark import model_factory

    build = model_factory(argparse.Namespace(channels_last=True, model_dir=None), "fmnist-robust")
    nhwc = pickle.loads(pickle.dumps(build))()  # a worker process receives the factory pickled
    plain = model_factory(argparse.Namespace(channels_last=False, model_dir=None), "fmnist-robust")()
    conv = next(m.weight for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    x, _ = fmnist(4)
    with torch.no_grad():
        assert (nhwc(x).exp() - plain(x).exp()).abs().max() < 1e-5


@pytest.mark.slow  # dynamo traces the model (tens of seconds)
def test_compile_model_keeps_names_hooks_and_outputs():
    """The plumbing of --compile, with torch.compile's eager backend (the default inductor takes minutes)."""
    from test_attacks import adaptive_model

    # frames dynamo compiled for other instances of these classes in earlier tests (it does not guard on module
    # hooks) would be reused here and skip the feature taps: start from an empty cache
    torch._dynamo.reset()
    model = adaptive_model()
    x, _ = fmnist(4)
    with torch.no_grad():
        before = model.forward_all(x[:3])
    names = list(model.state_dict())
    assert fastpath.compile_model(model, x, backend="eager") > 0
    assert list(model.state_dict()) == names
    with torch.no_grad():
        after = model.forward_all(x[:3])  # another batch size; the mixing network's feature taps still fire
    assert torch.equal(after.log_probs, before.log_probs) and torch.equal(after.gamma, before.gamma)
