"""MixedClassifier: the formula of PAPER.md section 1, ratio policies, adapters and errors."""
import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

from robust_mix import AdaptiveAlpha, InputConfig, MixedClassifier, PolicyConfig, build_adaptive_policy
from robust_mix.mixing import mix_log_probs
from conftest import make_tiny


def manual_mix(g, h, a, s_g=1.0, s_h=1.0):
    a = torch.as_tensor(a, dtype=torch.float32).reshape(-1, 1)
    return torch.log((1 - a) * torch.softmax(s_g * g, 1) + a * torch.softmax(s_h * h, 1))


def test_probability_mixing_matches_formula(standard, robust, images):
    model = MixedClassifier(standard, robust, alpha=0.3, std_scale=2.0, rob_scale=0.5)
    expected = manual_mix(standard(images), robust(images), 0.3, 2.0, 0.5)
    torch.testing.assert_close(model(images), expected, atol=1e-6, rtol=1e-5)


def test_logit_mixing_matches_formula(standard, robust, images):
    model = MixedClassifier(standard, robust, alpha=0.3, mixing="logit", std_scale=2.0)
    expected = F.log_softmax(0.7 * 2.0 * standard(images) + 0.3 * robust(images), dim=1)
    torch.testing.assert_close(model(images), expected)
    assert not torch.allclose(model(images), manual_mix(standard(images), robust(images), 0.3, 2.0))


def test_output_is_log_probability(standard, robust, images):
    out = MixedClassifier(standard, robust, alpha=0.6)(images)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(len(images)))


@pytest.mark.parametrize("alpha,base", [(0.0, "standard"), (1.0, "robust")])
def test_endpoints_reproduce_base_models(standard, robust, images, alpha, base):
    model = MixedClassifier(standard, robust, alpha=alpha)
    ref = {"standard": standard, "robust": robust}[base](images)
    assert torch.equal(model(images).argmax(1), ref.argmax(1))
    torch.testing.assert_close(model(images), F.log_softmax(ref, 1))


def test_near_endpoints_match_single_model_path(standard, robust, images):
    """The shortcut at alpha=0 agrees with the general path just above 0."""
    exact = MixedClassifier(standard, robust, alpha=0.0)(images)
    near = MixedClassifier(standard, robust, alpha=1e-7)(images)
    torch.testing.assert_close(exact, near, atol=1e-5, rtol=1e-5)


def test_confident_models_never_give_log_zero(standard, robust, images):
    model = MixedClassifier(standard, robust, alpha=0.5, std_scale=1e4, rob_scale=1e4)
    assert torch.isfinite(model(images)).all()


def test_alpha_changes_at_inference_time(standard, robust, images):
    model = MixedClassifier(standard, robust, alpha=0.2)
    before = model(images)
    model.alpha = 0.9
    assert model.alpha == 0.9
    torch.testing.assert_close(model(images), manual_mix(standard(images), robust(images), 0.9))
    assert not torch.allclose(before, model(images))


def test_return_alpha(standard, robust, images):
    log_probs, alpha = MixedClassifier(standard, robust, alpha=0.4)(images, return_alpha=True)
    assert log_probs.shape == (6, 10) and alpha.shape == (6,)
    assert torch.all(alpha == 0.4)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_alpha_values_raise(standard, robust, bad):
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        MixedClassifier(standard, robust, alpha=bad)
    model = MixedClassifier(standard, robust, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        model.alpha = bad
    assert model.alpha == 0.5


@pytest.mark.parametrize("bad", ["0.5", True, [0.5]])
def test_bad_alpha_types_raise(standard, robust, bad):
    with pytest.raises(TypeError, match="alpha must be a number"):
        MixedClassifier(standard, robust, alpha=bad)


def test_mismatched_class_counts_raise_at_construction(standard):
    with pytest.raises(ValueError, match="class counts do not match"):
        MixedClassifier(standard, make_tiny(1, num_classes=7))


def test_mismatched_class_counts_raise_at_forward(images):
    std, rob = make_tiny(0), make_tiny(1, num_classes=7)
    del std.num_classes, rob.num_classes  # models that do not declare their class count
    model = MixedClassifier(std, rob, alpha=0.5)
    with pytest.raises(ValueError, match="standard model returns 10 classes, the robust model 7"):
        model(images)


class _Pair(torch.nn.Module):
    """A base model that returns ``(logits, features)``, as some codebases' networks do."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner(x), x


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_a_base_model_returning_a_tuple_is_named(standard, robust, images, alpha):
    model = MixedClassifier(_Pair(standard), _Pair(robust), alpha=alpha)
    with pytest.raises(TypeError, match=r"base models must return a \(B, K\) tensor of logits, got tuple"):
        model(images)


def test_bad_settings_raise(standard, robust):
    with pytest.raises(ValueError, match="mixing must be one of"):
        MixedClassifier(standard, robust, mixing="geometric")
    with pytest.raises(ValueError, match="rob_scale must be a positive"):
        MixedClassifier(standard, robust, rob_scale=0.0)


@pytest.mark.parametrize("name, value", [("std_scale", 0.0), ("rob_scale", -1.0), ("rob_scale", float("nan")),
                                         ("std_scale", "2"), ("std_scale", True), ("mixing", "probs")])
def test_settings_changed_after_construction_are_checked_as_at_construction(standard, robust, images, name, value):
    """``model.rob_scale = -1`` was taken as is: the model mixed with it, and save_pretrained wrote a config that
    load_model then refused."""
    model = MixedClassifier(standard, robust, alpha=0.3)
    with pytest.raises(ValueError, match=f"{name} must be"):
        setattr(model, name, value)
    assert (model.std_scale, model.rob_scale, model.mixing) == (1.0, 1.0, "prob")
    model.rob_scale, model.mixing = 2, "logit"
    assert model.rob_scale == 2.0 and isinstance(model.rob_scale, float)
    alpha = torch.full((len(images),), 0.3)
    assert torch.allclose(model(images), mix_log_probs(standard(images), robust(images), alpha, mode="logit",
                                                       rob_scale=2.0))


def test_bad_input_raises(standard, robust):
    model = MixedClassifier(standard, robust)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.rand(1, 16, 16))


def test_gradients_reach_the_input(standard, robust, images):
    model = MixedClassifier(standard, robust, alpha=0.5)
    x = images.clone().requires_grad_(True)
    F.nll_loss(model(x), torch.arange(6) % 10).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_base_models_frozen_and_stay_in_eval(standard, robust):
    model = MixedClassifier(standard, robust).train()
    assert model.training and not model.standard.training and not model.robust.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.standard is standard and model.robust is robust


@pytest.mark.parametrize("batch", [1, 7])
def test_any_batch_size(standard, robust, batch):
    out = MixedClassifier(standard, robust, alpha=0.5)(torch.rand(batch, 1, 16, 16))
    assert out.shape == (batch, 10)


def test_bfloat16(standard, robust, images):
    model = MixedClassifier(standard, robust, alpha=0.5).to(torch.bfloat16)
    out = model(images.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    ref = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.5)(images)
    torch.testing.assert_close(out.float(), ref, atol=0.15, rtol=0.05)


def test_input_adapters_resize_and_normalise(images):
    seen = {}

    class Probe(torch.nn.Module):
        def __init__(self, key):
            super().__init__()
            self.key, self.num_classes = key, 3

        def forward(self, x):
            seen[self.key] = x
            return x.flatten(1)[:, :3]

    cfg = InputConfig(input_size=(32, 32), interpolation="bilinear", mean=(0.5,), std=(0.25,))
    MixedClassifier(Probe("s"), Probe("r"), standard_input=cfg)(images)
    expected = (F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False) - 0.5) / 0.25
    torch.testing.assert_close(seen["s"], expected)
    assert torch.equal(seen["r"], images)


def test_mix_log_probs_rejects_nothing_silently():
    g = torch.tensor([[10.0, 0.0]])
    h = torch.tensor([[0.0, 10.0]])
    out = mix_log_probs(g, h, torch.tensor([0.5]))
    torch.testing.assert_close(out.exp(), torch.tensor([[0.5, 0.5]]), atol=1e-4, rtol=0)


# -- adaptive policy -----------------------------------------------------------------------------
def adaptive_model(alpha_range=(0.2, 0.9), **kw):
    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.5)
    config = PolicyConfig(standard_layers=["stage1", "stage2"], robust_layers=["stage1", "stage2"],
                          widths=[8, 16], blocks=1, input_shape=(1, 16, 16), gamma_scale=2.0,
                          gamma_bias=0.5, alpha_range=alpha_range, **kw)
    model.alpha = build_adaptive_policy(model, config)
    return model


def test_adaptive_alpha_follows_the_formula(images):
    torch.manual_seed(0)
    model = adaptive_model()
    policy = model.policy
    policy.bn.running_mean.fill_(0.3)
    policy.bn.running_var.fill_(2.0)
    out = model.forward_all(images)
    feats = model.features(images, ["stage1", "stage2"], ["stage1", "stage2"])
    raw = policy.network(*feats)
    gamma = (raw - 0.3) / math.sqrt(2.0 + policy.bn.eps) * 2.0 + 0.5
    alpha = 0.2 + 0.7 * torch.sigmoid(gamma)
    torch.testing.assert_close(out.gamma, gamma)
    torch.testing.assert_close(out.alpha, alpha)
    expected = manual_mix(out.standard_logits, out.robust_logits, alpha)
    torch.testing.assert_close(out.log_probs, expected, atol=1e-6, rtol=1e-5)
    assert out.alpha.std() > 0, "the ratio should vary across inputs"
    assert torch.all((out.alpha >= 0.2) & (out.alpha <= 0.9))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_an_adaptive_model_moved_to_another_dtype_keeps_the_ratio_statistics(images, dtype):
    model = adaptive_model().eval()
    model.policy.bn.running_mean.fill_(0.3)
    model.policy.bn.running_var.fill_(2.0)
    with torch.no_grad():
        reference = model.forward_all(images)
        moved = model.to(dtype).forward_all(images.to(dtype))
    stats = (model.policy.bn.running_mean, model.policy.bn.running_var)
    # narrower than float32: the statistics stay float32, exact; float64: they follow the model
    assert all(s.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) for s in stats)
    assert model.policy.bn.running_mean.item() == pytest.approx(0.3, abs=1e-7)
    tolerance = 1e-6 if dtype == torch.float64 else 0.05
    assert (moved.alpha.float() - reference.alpha).abs().max() < tolerance
    assert (moved.log_probs.float().exp() - reference.log_probs.exp()).abs().max() < tolerance


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_a_policy_built_on_a_model_in_another_dtype_matches_one_built_in_float32_and_moved(images, dtype):
    """The probe was a float32 zero image: 'Input type (float) and bias type (double) should be the same'."""
    config = PolicyConfig(standard_layers=["stage1", "stage2"], robust_layers=["stage1", "stage2"], widths=[8, 16],
                          blocks=1, input_shape=(1, 16, 16))
    moved = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.5)
    torch.manual_seed(0)
    moved.alpha = build_adaptive_policy(moved, config)
    moved = moved.to(dtype).eval()
    built = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.5).to(dtype)
    torch.manual_seed(0)
    built.alpha = build_adaptive_policy(built, config)
    built.eval()
    assert {p.dtype for p in built.policy.parameters()} == {dtype}
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), moved.state_dict().values()))
    with torch.no_grad():
        torch.testing.assert_close(built(images.to(dtype)), moved(images.to(dtype)))


def test_adaptive_alpha_range_changes_at_inference(images):
    model = adaptive_model()
    a1 = model(images, return_alpha=True)[1]
    model.policy.alpha_range = (0.8, 1.0)
    a2 = model(images, return_alpha=True)[1]
    torch.testing.assert_close((a1 - 0.2) / 0.7, (a2 - 0.8) / 0.2)
    with pytest.raises(ValueError, match="lo <= hi"):
        model.policy.alpha_range = (0.9, 0.1)


def test_fixed_alpha_overrides_and_returns_to_policy(images):
    model = adaptive_model()
    assert isinstance(model.alpha, AdaptiveAlpha) and model.is_adaptive
    model.alpha = 0.7
    assert model.alpha == 0.7 and torch.all(model(images, return_alpha=True)[1] == 0.7)
    model.alpha = None
    assert model.is_adaptive and model(images, return_alpha=True)[1].std() > 0
    assert "policy" in dict(model.named_children()) and "alpha" not in dict(model.named_children())


def test_none_alpha_without_policy_raises(standard, robust):
    model = MixedClassifier(standard, robust)
    with pytest.raises(ValueError, match="alpha=None means .the adaptive policy., but this model has none"):
        model.alpha = None


def test_training_mode_clamps_and_leaves_alpha_unscaled(images):
    model = adaptive_model(alpha_range=(0.9, 1.0)).train()
    out = model.forward_all(images)
    assert out.alpha.min() < 0.9, "training uses the unscaled sigmoid"
    assert out.gamma.std() < 3.0  # clamped to +/- 0.6 std before BN, times gamma_scale 2
    assert model.policy.bn.running_mean.abs().sum() > 0, "BN statistics update in training"


def test_unscaled_gamma_is_the_logit_before_the_calibrated_constants(images):
    model = adaptive_model()
    model.policy.config.gamma_scale, model.policy.config.gamma_bias = 8.0, 10.0
    out = model.forward_all(images)
    torch.testing.assert_close(out.gamma, out.gamma_unscaled * 8.0 + 10.0)
    model.policy.config.gamma_scale, model.policy.config.gamma_bias = 1.0, 0.0
    torch.testing.assert_close(model.forward_all(images).gamma, out.gamma_unscaled)
    fixed = MixedClassifier(model.standard, model.robust, alpha=0.5).eval()
    assert fixed.forward_all(images).gamma_unscaled is None


def test_gradients_flow_through_the_ratio_into_both_models(images):
    model = adaptive_model()
    x = images.clone().requires_grad_(True)
    out = model.forward_all(x)
    out.alpha.sum().backward()
    assert x.grad.abs().sum() > 0, "the ratio must be differentiable w.r.t. the input"
    assert all(p.grad is not None for p in model.policy.network.parameters())


def test_detached_features_block_input_gradient_through_ratio(images):
    model = adaptive_model(detach_features=True)
    x = images.clone().requires_grad_(True)
    model.forward_all(x).alpha.sum().backward()
    assert x.grad is None or x.grad.abs().sum() == 0


def test_unknown_feature_layer_lists_candidates():
    model = MixedClassifier(make_tiny(0), make_tiny(1))
    config = PolicyConfig(standard_layers=["nope"], robust_layers=["stage1"], input_shape=(1, 16, 16))
    with pytest.raises(ValueError, match=r"layer\(s\) \['nope'\] not found.*stage1"):
        build_adaptive_policy(model, config)


def test_a_deep_copy_of_an_adaptive_model_reads_its_own_features(images):
    """The feature hooks were closures over the original's taps: a deep copy (timm's ModelEmaV3, swa_utils's
    AveragedModel) failed with 'layer(s) ['stage1', 'stage2'] produced no output', pickling failed, and after a
    pass with gradients the copy failed on the non-leaf features the taps still held."""
    model = adaptive_model().eval()
    with torch.no_grad():
        reference = model.forward_all(images)
        twin = copy.deepcopy(model)
        torch.testing.assert_close(twin.forward_all(images).alpha, reference.alpha)
        twin.policy.alpha_range = (0.8, 1.0)  # the copy's policy drives the copy, the original is untouched
        assert twin.forward_all(images).alpha.min() >= 0.8
        torch.testing.assert_close(model.forward_all(images).alpha, reference.alpha)
        buffer = io.BytesIO()
        torch.save(model, buffer)  # whole-model pickling works; reloading it here only because we wrote it
        buffer.seek(0)
        reloaded = torch.load(buffer, weights_only=False)
        torch.testing.assert_close(reloaded.forward_all(images).log_probs, reference.log_probs)
    model.forward_all(images.clone().requires_grad_(True)).log_probs.sum().backward()
    copied_after_backward = copy.deepcopy(model)  # the taps held the last pass's non-leaf features
    torch.testing.assert_close(copied_after_backward.forward_all(images).alpha, reference.alpha)


def test_torchscript_is_refused_naming_what_compiles_a_mix():
    """torch.jit.script failed inside TorchScript's compiler ('Comprehension ifs are not supported yet', on a
    property); export, which the message names, gives the model's own outputs."""
    model = MixedClassifier(make_tiny(0, in_chans=3), make_tiny(1, in_chans=3), alpha=0.7)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NotImplementedError, match=r"torch.jit.script cannot compile a MixedClassifier.*"
                                                  r"torch.export.export\(model, \(images,\)\).*torch.jit.trace"):
        torch.jit.script(model)
    torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), model(x))
