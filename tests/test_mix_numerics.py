"""The mixed models' numbers against PAPER.md's formulas, re-derived here in float64 (NumPy, not torch).

Inputs are chosen to be hard: base models confident up to |logit| ~ 1e4, ratios within float32's rounding of a
range end of 0 or 1, equal logits, one example against a batch; gradients are taken through the wrappers the
attacks query (:class:`robust_mix.attacks.StageRunner`'s).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robust_mix import MixedClassifier, PolicyConfig, build_adaptive_policy
from robust_mix.attacks import StageRunner
from robust_mix.certify import smoothing_radius
from robust_mix.config import NutsConfig
from robust_mix.losses import adaptive_attack_loss
from robust_mix.mixing import mix_log_probs
from robust_mix.nuts import HardMaxMap, NonlinearLogitMap, build_output_maps, standardize_topk
from robust_mix.protocol import resolve_attack
from conftest import make_tiny


# -- the spec's formulas in float64 ------------------------------------------------------------
def ref_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def ref_mix(lp_g: np.ndarray, lp_h: np.ndarray, log_rest: np.ndarray, log_a: np.ndarray) -> np.ndarray:
    """``log((1 - a) * p_g + a * p_h)`` from log-probabilities and the logs of both weights (no underflow)."""
    return np.logaddexp(log_rest[:, None] + lp_g, log_a[:, None] + lp_h)


def ref_ratio_logs(gamma: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """``(log(1 - a), log(a))`` for ``a = lo + (hi - lo) * sigmoid(gamma)``, written with ``1 - a = (1 - hi) +
    (hi - lo) * sigmoid(-gamma)`` so that neither log is lost to rounding."""
    s_up = np.exp(-np.logaddexp(0.0, -gamma))    # sigmoid(gamma)
    s_down = np.exp(-np.logaddexp(0.0, gamma))   # sigmoid(-gamma)
    with np.errstate(divide="ignore"):
        return np.log((1 - hi) + (hi - lo) * s_down), np.log(lo + (hi - lo) * s_up)


def ref_nuts_robust(z: np.ndarray, s: float, p: float, c: float, k: int) -> np.ndarray:
    from scipy.special import erf

    top = -np.sort(-z, axis=1)[:, :min(k, z.shape[1])]
    ln = (z - top.mean(axis=1, keepdims=True)) / np.sqrt(top.var(axis=1, ddof=1, keepdims=True) + 1e-8)
    x = ln + c
    u = x * 0.5 * (1 + erf(x / math.sqrt(2)))
    return ref_log_softmax(s * np.sign(u) * np.abs(u) ** p)


def confident(seed: int, largest: float = 1e4, images: torch.Tensor | None = None) -> torch.nn.Module:
    """A tiny CNN whose logits on ``images`` reach ``largest`` in magnitude (its head scaled up)."""
    model = make_tiny(seed)
    images = probe_images() if images is None else images
    with torch.no_grad():
        size = model(images).abs().max()
        model.head.weight.mul_(largest / size)
        model.head.bias.mul_(largest / size)
    return model


def probe_images(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def adaptive(alpha_range: tuple[float, float], gamma_bias: float, largest: float = 1e4) -> MixedClassifier:
    model = MixedClassifier(confident(0, largest), confident(1, largest), alpha=0.5, std_scale=2.0, rob_scale=0.3)
    config = PolicyConfig(standard_layers=["stage1", "stage2"], robust_layers=["stage1", "stage2"], widths=[8, 16],
                          blocks=1, input_shape=(1, 16, 16), gamma_scale=2.0, gamma_bias=gamma_bias,
                          alpha_range=alpha_range)
    model.alpha = build_adaptive_policy(model, config)
    with torch.no_grad():  # running statistics that are not the identity
        model.policy.bn.running_mean.fill_(0.3)
        model.policy.bn.running_var.fill_(4.0)
    return model.eval()


def reference_adaptive(model: MixedClassifier, x: torch.Tensor) -> np.ndarray:
    """The spec's adaptive mixture in float64 from the mixing network's raw output and the bases' logits."""
    config = model.policy.config
    with torch.no_grad():
        feats = model.features(x, config.standard_layers, config.robust_layers)
        raw = model.policy.network(*feats).double().numpy()
        g, h = (t.double().numpy() for t in model.base_logits(x))
    bn = model.policy.bn
    gamma = ((raw - bn.running_mean.double().item()) / math.sqrt(bn.running_var.double().item() + bn.eps)
             * config.gamma_scale + config.gamma_bias)
    log_rest, log_a = ref_ratio_logs(gamma, *config.alpha_range)
    return ref_mix(ref_log_softmax(model.std_scale * g), ref_log_softmax(model.rob_scale * h), log_rest, log_a)


# -- adaptive smoothing -------------------------------------------------------------------------
@pytest.mark.parametrize("alpha_range, gamma_bias", [
    ((0.84, 0.99), 1.3),     # CIFAR-100 edm's constants
    ((0.96, 1.0), 40.0),     # CIFAR-10 edm's range, ratio within 1e-17 of 1: a rounds to 1 in float32
    ((0.0, 1.0), 40.0),      # unsqueezed range, sigmoid(gamma) = 1 in float32
    ((0.0, 1.0), -120.0),    # sigmoid(gamma) = 0 in float32
    ((0.0, 0.0), 3.0),       # a range of one ratio, 0
    ((1.0, 1.0), 3.0),       # ... and 1
    ((0.9, 0.9), -3.0),
])
def test_adaptive_mixture_is_the_formula_in_float64(alpha_range, gamma_bias):
    """a ~ 1 - 1e-19 rounded to 1: log(1 - a) was -inf, dropping the standard model's share, which is the class
    score wherever the confident robust model puts e^-1000 on a class."""
    model, x = adaptive(alpha_range, gamma_bias), probe_images()
    with torch.no_grad():
        out = model(x)
    expected = reference_adaptive(model, x)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=2e-6, atol=1e-4)


@pytest.mark.parametrize("alpha_range, gamma_bias", [((0.96, 1.0), 40.0), ((0.0, 1.0), 40.0), ((0.0, 1.0), -120.0),
                                                     ((0.9, 1.0), 16.0), ((0.84, 0.99), 1.3)])
def test_attack_gradients_are_finite_and_nonzero_when_the_ratio_saturates(alpha_range, gamma_bias):
    """With a ratio rounded to exactly 1 (or 0) the input gradient was NaN (0 * inf in log1p(-a)'s derivative):
    APGD stepped along sign(NaN), and training the mixing network on such a batch made its weights NaN."""
    model, x = adaptive(alpha_range, gamma_bias), probe_images()
    y = torch.arange(len(x)) % 10
    runner = StageRunner(model, resolve_attack("standard", adaptive=True), norm="Linf", eps=8 / 255, device="cpu")
    for wrapper, loss in ((runner.guard, lambda out: F.cross_entropy(out, y)),
                          (runner.recorder, lambda out: adaptive_attack_loss(runner.recorder.last, y,
                                                                             weight=0.3).sum())):
        xs = x.clone().requires_grad_(True)
        loss(wrapper(xs)).backward()
        assert torch.isfinite(xs.grad).all(), f"{type(wrapper).__name__}: NaN input gradient"
        assert (xs.grad.flatten(1).abs().sum(dim=1) > 0).all(), f"{type(wrapper).__name__}: a zero input gradient"


def test_training_the_mixing_network_on_a_saturated_batch_gives_finite_gradients():
    model = adaptive((0.0, 1.0), 0.0).train()
    with torch.no_grad():
        model.policy.config.gamma_bias = 60.0  # every ratio rounds to 1 in float32
    x, y = probe_images(), torch.arange(6) % 10
    out = model.forward_all(x)
    F.nll_loss(out.log_probs, y).backward()
    grads = [p.grad for p in model.policy.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1e-30, 1 - 1e-7, 0.5])
def test_mix_log_probs_has_finite_gradients_for_ratios_at_the_ends(alpha):
    g = torch.tensor([[3.0, 0.0, -2.0]], requires_grad=True)
    h = torch.tensor([[0.0, 2.0, -1.0]], requires_grad=True)
    a = torch.tensor([alpha], requires_grad=True)
    out = mix_log_probs(g, h, a)
    out[0, 0].backward()
    for t in (g, h, a):
        assert torch.isfinite(t.grad).all()
    with np.errstate(divide="ignore"):
        expected = ref_mix(ref_log_softmax(g.detach().double().numpy()), ref_log_softmax(h.detach().double().numpy()),
                           np.log1p(-np.array([np.float32(alpha)], dtype=np.float64)),
                           np.log(np.array([np.float32(alpha)], dtype=np.float64)))
    np.testing.assert_allclose(out.detach().double().numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-9), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_other_dtypes_mix_their_own_logits_by_the_formula(dtype, rtol):
    """A model moved to another dtype mixes the logits its bases give in that dtype as the formula says (the ratio
    in at least float32), and takes only images of its dtype."""
    model = adaptive((0.96, 1.0), 40.0, largest=1e3).to(dtype)
    x = probe_images().to(dtype)
    with torch.no_grad():
        out = model(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    np.testing.assert_allclose(out.double().numpy(), reference_adaptive(model, x), rtol=rtol, atol=rtol)
    if dtype != torch.float32:
        with pytest.raises(TypeError, match=f"convert them with images.to\\({dtype}\\)"):
            model(probe_images())


def test_results_do_not_depend_on_the_batch_in_eval_mode():
    model, x = adaptive((0.84, 0.99), 1.3), probe_images(7)
    with torch.no_grad():
        full = model.forward_all(x)
        alone = [model.forward_all(x[i:i + 1]) for i in range(len(x))]
    torch.testing.assert_close(torch.cat([o.log_probs for o in alone]), full.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([o.alpha for o in alone]), full.alpha)


# -- fixed ratios and temperatures --------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.9987500602493457, 0.98603, 0.5, 1e-6, 0.0, 1.0])
def test_a_fixed_ratio_is_not_rounded_to_float32_before_its_logs(alpha):
    """MixedNUTS' a = 0.99875006 became float32's 0.99875003, moving log(1 - a) (the whole score of a class the
    robust model rules out) by 2.4e-5."""
    x = probe_images()
    model = MixedClassifier(confident(0), confident(1), alpha=alpha, std_scale=1.2, rob_scale=0.3)
    with torch.no_grad():
        out = model(x).double().numpy()
        g, h = (t.double().numpy() for t in model.base_logits(x))
    n = len(x)
    with np.errstate(divide="ignore"):
        expected = ref_mix(ref_log_softmax(1.2 * g), ref_log_softmax(0.3 * h), np.full(n, np.log1p(-alpha)),
                           np.full(n, np.log(alpha)))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_the_ratio_has_one_dtype_whatever_its_value(alpha, dtype):
    """A fixed ratio of 0 or 1 (one base alone) was reported in float32 where any other was float64."""
    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=alpha).to(dtype)
    out = model.forward_all(probe_images().to(dtype))
    assert out.alpha.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert out.log_probs.dtype == dtype


# -- MixedNUTS --------------------------------------------------------------------------------------
NUTS = [(5.0, 4.0, -1.1), (0.6115753843212784, 3.571428571428571, -2.142857142857143), (0.02354, 2.7143, -0.2857)]


def nuts(alpha: float = 0.9987500602493457, spc=NUTS[0], largest: float = 1e4) -> MixedClassifier:
    s, p, c = spc
    maps = build_output_maps(NutsConfig(scale=s, power=p, bias=c, ln_k=250))
    return MixedClassifier(confident(0, largest), confident(1, largest), alpha=alpha, standard_map=maps[0],
                           robust_map=maps[1]).eval()


@pytest.mark.parametrize("alpha", [0.9987500602493457, 0.0, 1.0])
@pytest.mark.parametrize("spc", NUTS)
def test_mixednuts_is_the_formula_in_float64(spc, alpha):
    model, x = nuts(alpha, spc=spc), probe_images()
    with torch.no_grad():
        out = model(x).double().numpy()
        g, h = (t.double().numpy() for t in model.base_logits(x))
    with np.errstate(divide="ignore"):
        onehot = np.log(np.eye(g.shape[1])[g.argmax(axis=1)])
        expected = ref_mix(onehot, ref_nuts_robust(h, *spc, 250), np.full(len(x), np.log1p(-alpha)),
                           np.full(len(x), np.log(alpha)))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spc", NUTS)
def test_mixednuts_attack_gradients_are_finite_and_nonzero_for_confident_models(spc):
    model, x = nuts(spc=spc), probe_images()
    y = torch.arange(len(x)) % 10
    runner = StageRunner(model, resolve_attack("standard"), norm="Linf", eps=8 / 255, device="cpu")
    xs = x.clone().requires_grad_(True)
    F.cross_entropy(runner.guard(xs), y).backward()
    assert torch.isfinite(xs.grad).all()
    assert (xs.grad.flatten(1).abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize("value", [1e4, 1e20, 1e30, -3e38])
def test_equal_logits_of_any_size_standardise_to_zero(value):
    """A row of equal logits from 1e20 on gave NaN: the variance floor 1e-8 / size^2 underflowed to 0 in float32,
    and (z - mean) / sqrt(var + floor) was 0 / 0."""
    z = torch.full((2, 5), value)
    torch.testing.assert_close(standardize_topk(z, 250), torch.zeros(2, 5))
    assert torch.isfinite(NonlinearLogitMap(5.0, 4.0, -1.1)(z)).all()


@pytest.mark.parametrize("value", [0.0, 3.0, 1e20])
@pytest.mark.parametrize("make", [lambda: NonlinearLogitMap(5.0, 4.0, -1.1), lambda: HardMaxMap()])
def test_equal_logits_give_finite_map_gradients(value, make):
    """The gradient the attacks take through both MixedNUTS maps at a row of equal logits (the variance is 0)."""
    z = torch.full((2, 5), value, requires_grad=True)
    out = make()(z)
    out[:, 1].sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(z.grad).all()


def test_huge_logits_outside_the_top_k_stay_finite_and_ordered():
    """The top-k are equal, the rest lower: the formula's (z - mean) / sqrt(0 + 1e-8) is huge, not -inf."""
    z = torch.cat([torch.full((1, 250), 1e20), torch.full((1, 50), -1e20)], dim=1)
    out = standardize_topk(z, 250)
    assert torch.isfinite(out).all()
    expected = (-2e20) / math.sqrt(1e-8)
    torch.testing.assert_close(out[0, 250:].double(), torch.full((50,), expected, dtype=torch.float64), rtol=1e-5,
                               atol=0)
    assert (out[0, :250] == 0).all()


@pytest.mark.parametrize("power", [0.5, 0.9, 2.7])
def test_nuts_map_gradients_are_finite_where_gelu_underflows(power):
    """GELU of a very low standardised logit is 0 in float32, and |u|^p with p < 1 differentiates to inf there:
    0 * inf gave NaN gradients."""
    z = torch.randn(2, 300, generator=torch.Generator().manual_seed(0)) * 3
    z[:, :20] = -1000.0
    z.requires_grad_(True)
    out = NonlinearLogitMap(0.05, power, -0.3, 250)(z)
    out[:, 0].sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    expected = ref_nuts_robust(z.detach().double().numpy(), 0.05, power, -0.3, 250)
    np.testing.assert_allclose(out.detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)


# -- certificates -----------------------------------------------------------------------------------
@pytest.mark.parametrize("p_runner_up", [1e-20, 1e-12, 1e-300])
def test_smoothing_radius_with_a_tiny_runner_up_bound_is_finite(p_runner_up):
    """Phi^-1 was sqrt(2) * erfinv(2p - 1), and 2p - 1 rounds to -1 for p below 1e-17: an infinite radius."""
    scipy_stats = pytest.importorskip("scipy.stats")
    radius = smoothing_radius(torch.tensor([0.9], dtype=torch.float64), 1.0, 0.5,
                              torch.tensor([p_runner_up], dtype=torch.float64))
    expected = 0.25 * (scipy_stats.norm.ppf(0.9) - scipy_stats.norm.ppf(p_runner_up))
    assert math.isfinite(radius.item())
    assert radius.item() == pytest.approx(expected, rel=1e-12)


def _constant_logits(bias: list[float]) -> torch.nn.Module:
    layer = torch.nn.Linear(256, len(bias))
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.tensor(bias))
    return torch.nn.Sequential(torch.nn.Flatten(), layer).eval()


def test_lipschitz_certificates_take_the_margin_in_float64():
    """softmax in float32 rounded p = 1 - 4e-9 up to 1 for logits 20 apart: a margin (and radius) overstated."""
    from robust_mix.certification import certify_model
    from robust_mix.certify import certify_lipschitz

    model = MixedClassifier(_constant_logits([0.0, 5.0]), _constant_logits([20.0, 0.0]), alpha=0.9)
    x = probe_images(2)
    mu = math.tanh(10.0)  # p_0 - p_1 of softmax([20, 0])
    certificate = certify_lipschitz(model, x, alpha=0.9, lipschitz=1.0)
    expected = (0.9 * mu + 0.9 - 1) / (2 * 0.9 * 1.0)
    np.testing.assert_allclose(certificate.radius.numpy(), expected, rtol=1e-12, atol=0)
    report = certify_model(model, x, torch.zeros(2, dtype=torch.long), method="lipschitz", lipschitz=1.0,
                           alphas=[0.9], progress=False).report
    np.testing.assert_allclose(report["examples"]["robust_margin"], mu, rtol=1e-12, atol=0)
