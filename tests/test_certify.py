"""Certificates of the mixture (PAPER.md section 4): formulas, conditions, soundness, CLI."""
import json
import re
import math
import uuid

import pytest
import torch
from scipy.stats import beta, norm
from torch import nn

from robust_mix import BackboneConfig, MixedClassifier, ModelConfig, PolicyConfig, build_adaptive_policy, register_model
from robust_mix.backbones import save_backbone
from robust_mix.certify import (SOFTMAX_LIPSCHITZ, alpha_lower_bound, certified_accuracy, certify_lipschitz,
                                certify_smoothing, clopper_pearson_lower, clopper_pearson_upper,
                                estimate_smoothed, lipschitz_bound, lipschitz_radius, margin,
                                robust_probs_lipschitz, smoothing_radius)
import robust_mix.validate
from robust_mix.certification import certify_model
from robust_mix.cli import main
from conftest import make_tiny

_QUICK = dict(n0=4, n=8, radii=[0.0], progress=False)


# -- the Lipschitz form -------------------------------------------------------------------------
def test_margin_of_label_and_of_top_class():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    torch.testing.assert_close(margin(probs, torch.tensor([0, 0])), torch.tensor([0.5, -0.5]))
    torch.testing.assert_close(margin(probs), torch.tensor([0.5, 0.3]))


def test_lipschitz_radius_hand_computed():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.95, 0.05, 0.0], [0.7, 0.2, 0.1]])
    radius = lipschitz_radius(probs, torch.tensor([0, 0, 1]), 0.8, 0.5)
    # (a * mu + a - 1) / (2 a L): (0.8*0.5 - 0.2)/0.8 = 0.25; (0.8*0.9 - 0.2)/0.8 = 0.65; wrong label: 0
    torch.testing.assert_close(radius, torch.tensor([0.25, 0.65, 0.0], dtype=torch.float64))


def test_lipschitz_radius_per_example_alpha_and_constant():
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.8, 0.2]])
    radius = lipschitz_radius(probs, None, torch.tensor([1.0, 0.75, 0.9]), torch.tensor([1.0, 2.0, 0.5]))
    expected = [1.0 / 2.0, (0.75 + 0.75 - 1) / (2 * 0.75 * 2.0), (0.9 * 0.6 - 0.1) / (2 * 0.9 * 0.5)]
    torch.testing.assert_close(radius, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.49, 0.5])
def test_no_lipschitz_certificate_when_alpha_at_most_half(alpha):
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0]])
    assert torch.all(lipschitz_radius(probs, None, alpha, 0.1) == 0)


@pytest.mark.parametrize("alpha", [0.6, 0.75, 0.9, 0.99])
def test_lipschitz_certificate_exactly_when_margin_exceeds_threshold(alpha):
    threshold = (1 - alpha) / alpha
    mus = torch.tensor([threshold - 1e-3, threshold + 1e-3, min(1.0, threshold + 0.2)], dtype=torch.float64)
    probs = torch.stack([(1 + mus) / 2, (1 - mus) / 2], dim=1)
    radius = lipschitz_radius(probs, None, alpha, 1.0)
    assert radius[0] == 0 and radius[1] > 0 and radius[2] > radius[1]


def test_lipschitz_radius_rejects_bad_inputs():
    probs = torch.tensor([[0.7, 0.3]])
    with pytest.raises(ValueError, match="alpha must lie in"):
        lipschitz_radius(probs, None, 1.5, 1.0)
    for bad in (0.0, -1.0, float("inf"), float("nan"), torch.tensor([float("inf")])):
        with pytest.raises(ValueError, match="lipschitz must be a finite number > 0"):
            lipschitz_radius(probs, None, 0.9, bad)
    with pytest.raises(ValueError, match=r"\(1,\) tensor"):
        lipschitz_radius(probs, None, torch.tensor([0.9, 0.9]), 1.0)


# -- the randomized-smoothing form --------------------------------------------------------------
def test_smoothing_radius_hand_computed():
    p_a = torch.tensor([0.9, 0.9, 0.7])
    radius = smoothing_radius(p_a, torch.tensor([1.0, 0.8, 0.9]), 0.5,
                              p_runner_up_upper=torch.tensor([0.1, 0.1, 0.1]))
    expected = [0.5 * norm.ppf(0.9),  # alpha 1: Cohen et al.'s sigma * PhiInv(pA) when pB = 1 - pA
                0.25 * (norm.ppf(0.72) - norm.ppf(0.28)),
                0.25 * (norm.ppf(0.63) - norm.ppf(0.19))]
    torch.testing.assert_close(radius, torch.tensor(expected, dtype=torch.float64))


def test_smoothing_default_runner_up_bound_gives_sigma_phiinv():
    p_a = torch.tensor([0.6, 0.8, 0.99])
    for alpha in (0.7, 0.9, 1.0):
        expected = [0.25 * norm.ppf(alpha * p) if alpha * p > 0.5 else 0.0 for p in p_a.tolist()]
        torch.testing.assert_close(smoothing_radius(p_a, alpha, 0.25), torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("alpha", [0.6, 0.8, 0.95])
def test_smoothing_certificate_iff_mixed_vote_margin_positive(alpha):
    p_a = torch.tensor([0.7, 0.7, 0.7])
    # certified iff a * pA > a * pB + 1 - a
    boundary = 0.7 - (1 - alpha) / alpha
    p_b = torch.tensor([boundary - 1e-3, boundary + 1e-3, 0.0]).clamp(0, 1)
    radius = smoothing_radius(p_a, alpha, 1.0, p_b)
    assert (radius > 0).tolist() == [True, False, 0.7 * alpha > 1 - alpha]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5])
def test_no_smoothing_certificate_when_alpha_at_most_half(alpha):
    assert torch.all(smoothing_radius(torch.tensor([1.0, 0.99, 0.8]), alpha, 0.5) == 0)


def test_certified_accuracy_counts_positive_correct_certificates():
    radius = torch.tensor([0.0, 0.3, 0.6, 1.0])
    correct = torch.tensor([True, True, False, True])
    acc = certified_accuracy(radius, correct, [0.0, 0.3, 0.5, 1.0, 1.5])
    torch.testing.assert_close(acc, torch.tensor([0.5, 0.5, 0.25, 0.25, 0.0], dtype=torch.float64))


# -- confidence bounds --------------------------------------------------------------------------
def test_clopper_pearson_matches_beta_quantiles():
    k = torch.tensor([0, 3, 50, 100])
    lower = clopper_pearson_lower(k, 100, 0.01)
    assert lower[0] == 0
    torch.testing.assert_close(lower[1:], torch.tensor(beta.ppf(0.01, [3, 50, 100], [98, 51, 1]), dtype=torch.float64))
    assert lower[3] == pytest.approx(0.01 ** (1 / 100))
    torch.testing.assert_close(clopper_pearson_upper(k, 100, 0.01), 1 - clopper_pearson_lower(100 - k, 100, 0.01))


class BucketClassifier(nn.Module):
    """Class ``i`` with probability exactly ``probs[i]`` under ``x + N(0, sigma^2)`` at ``x = 0``.

    The first pixel, standardised by ``sigma``, is a standard normal: its quantile buckets are the classes.
    """

    def __init__(self, probs: list[float], sigma: float) -> None:
        super().__init__()
        cumulative = torch.tensor(probs, dtype=torch.float64).cumsum(0)[:-1]
        self.register_buffer("edges", torch.from_numpy(norm.ppf(cumulative.numpy())).float())
        self.sigma = sigma
        self.num_classes = len(probs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)[:, 0] / self.sigma
        return nn.functional.one_hot(torch.bucketize(z, self.edges), self.num_classes).float()


@pytest.mark.parametrize("failure_prob", [0.05, 0.2])
def test_lower_bound_fails_at_most_at_stated_level(failure_prob):
    probs, sigma, repeats, n = [0.55, 0.25, 0.2], 0.5, 20_000, 200
    classifier = BucketClassifier(probs, sigma)
    estimate = estimate_smoothed(classifier, torch.zeros(repeats, 1, 1, 1), sigma=sigma, num_classes=3,
                                 n0=20, n=n, failure_prob=failure_prob, batch_size=100_000,
                                 generator=torch.Generator().manual_seed(1))
    true_p = torch.tensor(probs, dtype=torch.float64)[estimate.top_class]
    failures = (estimate.p_lower > true_p).double().mean().item()
    # binomial std of the failure rate is at most sqrt(0.2 * 0.8 / 20000) ~ 0.0028
    assert failures <= failure_prob + 0.01
    # the bound is informative: the estimated frequency matches, the bound sits near it
    selected = estimate.top_class == 0
    assert selected.double().mean() > 0.6
    freq = estimate.top_count[selected].double() / n
    assert abs(freq.mean().item() - 0.55) < 0.01
    assert 0.55 - estimate.p_lower[selected].mean().item() < 0.1


def test_smoothing_is_reproducible_with_a_seed():
    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.9)
    x = torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    runs = [certify_smoothing(model, x, sigma=0.1, n0=10, n=64, batch_size=bs,
                              generator=torch.Generator().manual_seed(7)) for bs in (1000, 1000)]
    assert torch.equal(runs[0].radius, runs[1].radius) and torch.equal(runs[0].prediction, runs[1].prediction)
    other = certify_smoothing(model, x, sigma=0.1, n0=10, n=64, batch_size=7, progress=True,
                              generator=torch.Generator().manual_seed(8))
    assert other.radius.shape == (5,) and torch.all(other.alpha == 0.9)


def test_smoothing_certifies_a_stable_robust_base_and_abstains_on_a_coin():
    sigma = 0.25
    model = MixedClassifier(make_tiny(0, num_classes=2), BucketClassifier([0.999, 0.001], sigma), alpha=0.9)
    cert = certify_smoothing(model, torch.zeros(4, 1, 2, 2), sigma=sigma, n0=10, n=500,
                             generator=torch.Generator().manual_seed(0))
    assert torch.all(cert.prediction == 0) and torch.all(cert.radius > 0)
    # pA_lower <= 0.999 -> radius <= sigma * PhiInv(0.9 * 0.999)
    assert torch.all(cert.radius <= sigma * norm.ppf(0.9 * 0.999))
    coin = MixedClassifier(make_tiny(0, num_classes=2), BucketClassifier([0.5, 0.5], sigma), alpha=1.0)
    cert = certify_smoothing(coin, torch.zeros(4, 1, 2, 2), sigma=sigma, n0=10, n=500,
                             generator=torch.Generator().manual_seed(0))
    assert torch.all(cert.prediction == -1) and torch.all(cert.radius == 0)


# -- Lipschitz bounds of architectures ----------------------------------------------------------
def _exact_l2_norm(net: nn.Module, shape: tuple[int, ...]) -> float:
    """Largest singular value of a piecewise-linear net's Jacobian at a point (its local gain)."""
    jac = torch.autograd.functional.jacobian(lambda v: net(v.view(1, *shape)).flatten(),
                                             torch.randn(math.prod(shape), dtype=torch.float64))
    return torch.linalg.matrix_norm(jac, ord=2).item()


@pytest.mark.parametrize("layer", [
    nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Conv2d(2, 4, 5, padding=2),
    nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Conv2d(2, 3, 3, padding=2, dilation=2),
    nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), nn.AvgPool2d(2), nn.AvgPool2d(3, stride=1, padding=1),
    nn.MaxPool2d(3, stride=1, padding=1),
])
def test_layer_bound_is_at_least_the_exact_operator_norm(layer):
    torch.manual_seed(0)
    layer = layer.double().eval()
    channels = getattr(layer, "in_channels", 2)
    exact = max(_exact_l2_norm(layer, (channels, 8, 8)) for _ in range(3))
    bound = lipschitz_bound(layer)
    assert bound >= exact * (1 - 1e-9)
    if isinstance(layer, nn.Conv2d):
        assert bound <= 4 * exact  # sound but not vacuous


def test_sequential_bound_is_product_and_covers_the_network():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4).eval()
    bn.running_var.uniform_(0.5, 2.0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), bn, nn.ReLU(), nn.MaxPool2d(2),
                        nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.LeakyReLU(0.1)),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).double().eval()
    parts = [lipschitz_bound(m) for m in net]
    assert lipschitz_bound(net) == pytest.approx(math.prod(parts))
    assert parts[1] == pytest.approx((1 / torch.sqrt(bn.running_var.double() + bn.eps)).max().item())
    assert lipschitz_bound(net[-1]) == pytest.approx(torch.linalg.matrix_norm(net[-1].weight, ord=2).item())
    assert lipschitz_bound(net) >= max(_exact_l2_norm(net, (1, 8, 8)) for _ in range(5))


def test_unsupported_architectures_ask_for_a_constant():
    with pytest.raises(ValueError, match="pass lipschitz="):
        lipschitz_bound(make_tiny(0))
    class StandardisedConv(nn.Conv2d):
        def forward(self, x):
            w = (self.weight - self.weight.mean()) / self.weight.std()
            return self._conv_forward(x, w, self.bias)

    with pytest.raises(ValueError, match="cannot bound StandardisedConv"):
        lipschitz_bound(nn.Sequential(StandardisedConv(1, 1, 3)))
    with pytest.raises(ValueError, match="padding_mode 'reflect'"):
        lipschitz_bound(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="pass lipschitz="):
        certify_lipschitz(MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.9), torch.rand(2, 1, 8, 8))


def test_robust_probs_lipschitz_includes_temperature_normalisation_and_norm():
    from robust_mix import InputConfig

    robust = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    model = MixedClassifier(make_tiny(0), robust, alpha=0.9, rob_scale=3.0,
                            robust_input=InputConfig(mean=(0.5,), std=(0.25,)))
    spectral = torch.linalg.matrix_norm(robust[1].weight.detach(), ord=2).item()
    l2 = robust_probs_lipschitz(model, (1, 4, 4))
    assert l2 == pytest.approx(SOFTMAX_LIPSCHITZ * 3.0 * 4.0 * spectral, rel=1e-6)
    assert robust_probs_lipschitz(model, (1, 4, 4), "linf") == pytest.approx(4.0 * l2)


# -- soundness against attacks ------------------------------------------------------------------
def pgd_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: torch.Tensor, steps: int = 40,
           restarts: int = 8, seed: int = 0) -> torch.Tensor:
    """``(B,)`` True where some restart of l2 PGD inside ``radius`` changes the mixture's prediction."""
    gen = torch.Generator().manual_seed(seed)
    xr, yr = x.repeat(restarts, 1, 1, 1), y.repeat(restarts)
    rr = radius.float().repeat(restarts).view(-1, 1, 1, 1)
    unit = lambda v: v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)  # noqa: E731
    delta = unit(torch.randn(xr.shape, generator=gen)) * rr * torch.rand(len(xr), 1, 1, 1, generator=gen)
    for _ in range(steps):
        delta.requires_grad_(True)
        log_probs = model(xr + delta)
        others = log_probs.scatter(1, yr[:, None], float("-inf")).max(dim=1).values
        grad, = torch.autograd.grad((log_probs.gather(1, yr[:, None]).squeeze(1) - others).sum(), delta)
        with torch.no_grad():
            delta = delta - 2.5 * rr / steps * unit(grad)
            delta = delta * torch.clamp(rr / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1), max=1)
    with torch.no_grad():
        assert torch.all(delta.flatten(1).norm(dim=1) <= rr.flatten() * (1 + 1e-5))
        return (model(xr + delta).argmax(dim=1) != yr).view(restarts, -1).any(dim=0)


def test_pgd_inside_the_certified_radius_never_flips_a_certified_prediction():
    torch.manual_seed(0)
    robust = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 4))
    standard = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
    with torch.no_grad():
        standard[1].weight.mul_(20)  # a sharp, arbitrary standard model the attack can exploit
    model = MixedClassifier(standard, robust, alpha=0.8, rob_scale=5.0)
    x = torch.rand(400, 1, 6, 6)  # raw images in [0, 1], the model's input contract
    cert = certify_lipschitz(model, x)  # bound computed by the library, l2
    certified = cert.radius > 0
    assert certified.sum() > 100
    x, y, r = x[certified], cert.prediction[certified], cert.radius[certified]
    with torch.no_grad():
        assert torch.equal(model(x).argmax(dim=1), y)
    assert not pgd_l2(model, x, y, r).any()
    # the same attack is strong enough to break many points a few radii out
    assert pgd_l2(model, x, y, 6 * r).double().mean() > 0.1


# -- adaptive ratios and model checks -----------------------------------------------------------
def adaptive_model(alpha_range=(0.6, 0.95)) -> MixedClassifier:
    model = MixedClassifier(make_tiny(0), make_tiny(1, scale=30.0), alpha=0.5)
    config = PolicyConfig(standard_layers=["stage1", "stage2"], robust_layers=["stage1", "stage2"],
                          widths=[8, 16], blocks=1, input_shape=(1, 16, 16), gamma_scale=2.0,
                          alpha_range=alpha_range)
    model.alpha = build_adaptive_policy(model, config)
    return model.eval()


def test_adaptive_certificate_uses_applied_or_lower_alpha(images):
    model = adaptive_model()
    with torch.no_grad():
        _, applied = model(images, return_alpha=True)
    assert applied.std() > 0
    cert = certify_lipschitz(model, images, lipschitz=0.05)
    torch.testing.assert_close(cert.alpha, applied.double())
    probs = torch.softmax(model.robust(images).double(), dim=1)  # the certificates take it in float64
    torch.testing.assert_close(cert.radius, lipschitz_radius(probs, None, applied, 0.05))
    lower = certify_lipschitz(model, images, lipschitz=0.05, alpha="lower")
    assert alpha_lower_bound(model) == 0.6 and torch.all(lower.alpha == 0.6)
    assert torch.all(lower.radius <= cert.radius) and torch.any(cert.radius > 0)
    smooth = certify_smoothing(model, images, sigma=0.1, n0=5, n=20, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(smooth.alpha, applied.double())


def test_logit_mixing_has_no_certificate(images):
    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.9, mixing="logit")
    with pytest.raises(ValueError, match="probability mixing"):
        certify_lipschitz(model, images, lipschitz=1.0)


def test_mixednuts_robust_map_has_no_certificate(images):
    from robust_mix.nuts import NonlinearLogitMap

    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.9, robust_map=NonlinearLogitMap(1.0, 2.0, -0.5))
    with pytest.raises(ValueError, match="MixedNUTS"):
        certify_lipschitz(model, images, lipschitz=1.0)


# -- command line -------------------------------------------------------------------------------
@pytest.fixture
def tiny_timm_model(tmp_path, scratch_registry) -> str:
    import timm

    paths = {}
    for role, seed in (("standard", 0), ("robust", 1)):
        torch.manual_seed(seed)
        net = timm.create_model("test_efficientnet", num_classes=10, in_chans=1)
        paths[role] = str(save_backbone(net, tmp_path / f"{role}.safetensors", "timm/test_efficientnet",
                                        {"num_classes": 10, "in_chans": 1}))
    name = f"certify-test-{uuid.uuid4().hex[:8]}"
    register_model(ModelConfig(name=name, standard=BackboneConfig(paths["standard"]),
                               robust=BackboneConfig(paths["robust"]), alpha=0.8,
                               dataset="fashion-mnist", num_classes=10))
    return name


def test_cli_writes_report_and_plot(tiny_timm_model, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["certify", tiny_timm_model, "--sigma", "0.25", "--n", "40", "--n0", "8", "--radii", "0", "0.1",
                 "0.5", "--alphas", "0.6", "0.9", "--dataset", "fashion-mnist", "--n-examples", "6",
                 "--out", str(out), "--no-progress", "--seed", "3"])
    assert code == 0
    report = json.loads((out / "certify.json").read_text())
    assert [c["alpha"] for c in report["curves"]] == [0.6, 0.9, 1.0]
    assert report["n_examples"] == 6 and report["n"] == 40 and report["norm"] == "l2"
    for curve in report["curves"]:
        acc = curve["certified_accuracy"]
        assert len(acc) == 3 and all(a >= b for a, b in zip(acc, acc[1:]))
    # radii grow with alpha on every example (same Monte Carlo samples for all ratios)
    ex = report["examples"]
    assert all(a <= b <= c for a, b, c in zip(ex["radius@0.6"], ex["radius@0.9"], ex["radius@1.0"]))
    png = (out / "certify.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
    assert "robust base (alpha = 1)" in capsys.readouterr().out
    # same seed, same report
    main(["certify", tiny_timm_model, "--sigma", "0.25", "--n", "40", "--n0", "8", "--radii", "0", "0.1", "0.5",
          "--alphas", "0.6", "0.9", "--n-examples", "6", "--out", str(tmp_path / "again"), "--no-progress",
          "--seed", "3"])
    again = json.loads((tmp_path / "again" / "certify.json").read_text())
    assert again["examples"] == report["examples"]


def test_cli_lipschitz_method_matches_the_radius_formula(tiny_timm_model, tmp_path):
    out = tmp_path / "lip"
    assert main(["certify", tiny_timm_model, "--method", "lipschitz", "--lipschitz", "0.5", "--alphas", "0.7",
                 "--radii", "0", "0.2", "--n-examples", "6", "--out", str(out)]) == 0
    report = json.loads((out / "certify.json").read_text())
    assert report["lipschitz"] == 0.5 and report["method"] == "lipschitz"
    mu = torch.tensor(report["examples"]["robust_margin"], dtype=torch.float64)
    expected = torch.where(0.7 * mu >= 0.3, (0.7 * mu - 0.3) / (2 * 0.7 * 0.5), torch.zeros_like(mu))
    torch.testing.assert_close(torch.tensor(report["examples"]["radius@0.7"], dtype=torch.float64), expected,
                               atol=1e-5, rtol=0)


def test_ratios_given_as_ints_or_tensors_are_labelled_and_written_as_what_they_are(images, tmp_path):
    """alphas=[0] was labelled 'alpha = 0 (per example)' (an int is no float), alphas=[1] added a second robust-base
    curve unless it compared equal, and a tensor ratio broke certify.json."""
    from robust_mix.certification import certify_model, write_certification

    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.6)
    labels = torch.arange(len(images)) % 10
    result = certify_model(model, images, labels, sigma=0.25, n0=5, n=10, progress=False, radii=[0.0],
                           alphas=[0, torch.tensor(0.8), torch.full((len(images),), 0.9), 1])
    labelled = [(c["alpha"], c["label"]) for c in result.report["curves"]]
    # a float32 0.8 is 0.800000011920929, and is labelled as what it is (':g' wrote it as 0.8, like a ratio of 0.8)
    assert labelled == [(0.0, "alpha = 0"), (0.800000011920929, "alpha = 0.800000011920929"),
                        ([0.8999999761581421] * len(images), "alpha = given per example"),
                        (1.0, "robust base (alpha = 1)")]
    written = json.loads(write_certification(tmp_path, result)["json"].read_text())
    assert [c["label"] for c in written["curves"]] == [label for _, label in labelled]


@pytest.mark.parametrize("bad", [0, 0.0, -2.0, float("inf"), float("nan"), torch.tensor([1.0, float("inf")])])
def test_a_lipschitz_constant_that_is_not_positive_and_finite_is_refused_not_replaced(images, bad):
    """certify_model(lipschitz=0) silently used the library's bound (``0 or bound``): 0 is no 'unset', None is."""
    from robust_mix.certification import certify_model

    robust = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))  # a base the library can bound
    model = MixedClassifier(make_tiny(0), robust, alpha=0.9).eval()
    labels = torch.arange(len(images)) % 10
    kwargs = dict(method="lipschitz", radii=[0.0], progress=False)
    assert certify_model(model, images, labels, lipschitz=None, **kwargs).report  # None: the library's bound
    if not isinstance(bad, torch.Tensor):
        with pytest.raises(ValueError, match=r"lipschitz must be a finite number > 0.*None.*library's bound"):
            certify_model(model, images, labels, lipschitz=bad, **kwargs)
    with pytest.raises(ValueError, match=r"lipschitz must be a finite number > 0.*None.*library's bound"):
        certify_lipschitz(model, images, lipschitz=bad)


@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: certify_model(m, x, y, method="smoothing", norm="linf", **_QUICK),
     r"norm='linf' applies to method='lipschitz' \(--method lipschitz\); randomized smoothing certifies l2 radii"),
    (lambda m, x, y: certify_model(m, x, y, method="smoothing", lipschitz=2.0, **_QUICK),
     r"lipschitz=2.0 applies to method='lipschitz'.*pass method='lipschitz'"),
    (lambda m, x, y: certify_model(m, x, y, method="lipschitz", lipschitz=2.0, norm="foo", **_QUICK),
     r"norm must be one of \['l2', 'linf'\], got 'foo'$"),
    (lambda m, x, y: certify_model(m, x, y, method="lipschitz", norm="Linf", **_QUICK),
     r"got 'Linf' \(certificates write norms in lower case: did you mean 'linf'\?\)"),
    (lambda m, x, y: certify_lipschitz(m, x, lipschitz=2.0, norm="L2"), r"got 'L2'.*did you mean 'l2'"),
    (lambda m, x, y: robust_probs_lipschitz(m, x.shape[1:], norm="l_inf"), r"got 'l_inf'.*did you mean 'linf'"),
], ids=["smoothing with norm linf", "smoothing with a constant", "unknown norm with a constant", "Linf",
        "certify_lipschitz L2", "robust_probs_lipschitz l_inf"])
def test_a_norm_or_constant_the_certificate_would_not_use_is_refused(images, call, match):
    """The smoothing certificate took norm='linf' and lipschitz= and wrote an l2 report without a word, and a
    Lipschitz constant given with any norm (``'foo'``, the harness's ``'Linf'``) was recorded under that name."""
    robust = nn.Sequential(nn.Flatten(), nn.Linear(256, 10))
    model = MixedClassifier(make_tiny(0), robust, alpha=0.9).eval()
    with pytest.raises(robust_mix.validate.InvalidInputError, match=match):
        call(model, images, torch.arange(len(images)) % 10)


def test_cli_smoothing_with_a_lipschitz_norm_is_one_error_line(tiny_timm_model, tmp_path, capsys):
    code = main(["certify", tiny_timm_model, "--norm", "linf", "--n-examples", "2", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "randomized smoothing certifies l2 radii" in err and "Traceback" not in err
    assert not (tmp_path / "c" / "certify.json").exists()


@pytest.mark.parametrize("radii, match", [
    ([], r"radii is empty; give at least one radius"),  # crashed after sampling: 'stack expects a non-empty TensorList'
    ([float("nan"), 0.1], r"every one of radii must be a finite number >= 0, got nan"),  # wrote NaN, then no plot
    ([-1.0], r"got -1.0"),
    (0.5, r"radii must be a list of radii such as \[0, 0.25, 0.5\], got 0.5 \(float\)"),
])
def test_bad_radii_are_refused_before_any_sampling(images, radii, match, monkeypatch):
    from robust_mix import certification

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before the radii were checked")

    monkeypatch.setattr(certification, "estimate_smoothed", no_sampling)
    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.6)
    with pytest.raises(ValueError, match=match):
        certification.certify_model(model, images, torch.arange(len(images)) % 10, sigma=0.25, radii=radii,
                                    progress=False)


def test_radii_are_reported_sorted_once_each(images, tmp_path):
    from robust_mix.certification import certify_model, write_certification

    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.6)
    result = certify_model(model, images, torch.arange(len(images)) % 10, sigma=0.25, n0=5, n=10, progress=False,
                           radii=[0.5, 0.0, 0.5])
    assert result.report["radii"] == [0.0, 0.5]
    assert all(len(c["certified_accuracy"]) == 2 for c in result.report["curves"])
    assert json.loads(write_certification(tmp_path, result)["json"].read_text())["radii"] == [0.0, 0.5]


def test_cli_prepares_imagenet_images_as_the_entry_states(tmp_path, scratch_registry, monkeypatch):
    """`certify` loaded ImageNet with the default Res256Crop224 whatever the entry's preprocessing (MixedNUTS:
    BicubicRes256Crop224), and took fashion-mnist unless --dataset was given: other images than benchmark's."""
    import timm

    from conftest import write_fake_imagenet

    import robust_mix.cli.certify as certify_cli
    from robust_mix.data import load_dataset

    write_fake_imagenet(tmp_path / "data", 2)  # only the images asked for
    paths = {}
    for role, seed in (("standard", 0), ("robust", 1)):
        torch.manual_seed(seed)
        net = timm.create_model("test_efficientnet", num_classes=1000)
        paths[role] = str(save_backbone(net, tmp_path / f"{role}.safetensors", "timm/test_efficientnet",
                                        {"num_classes": 1000}))
    name = f"certify-imagenet-{uuid.uuid4().hex[:8]}"
    register_model(ModelConfig(name=name, standard=BackboneConfig(paths["standard"]),
                               robust=BackboneConfig(paths["robust"]), alpha=0.8, dataset="imagenet", eps=4 / 255,
                               num_classes=1000, input_shape=[3, 224, 224], preprocessing="BicubicRes256Crop224"))
    seen = []
    real = certify_cli.certify_model
    monkeypatch.setattr(certify_cli, "certify_model", lambda model, images, *a, **k: seen.append(images)
                        or real(model, images, *a, **k))
    args = ["certify", name, "--n", "4", "--n0", "2", "--n-examples", "2", "--data-dir", str(tmp_path / "data"),
            "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "own")]) == 0
    report = json.loads((tmp_path / "own" / "certify.json").read_text())
    assert report["dataset"] == "imagenet" and report["preprocessing"] == "BicubicRes256Crop224"
    bicubic, _ = load_dataset("imagenet", "test", 2, tmp_path / "data", preprocessing="BicubicRes256Crop224")
    bilinear, _ = load_dataset("imagenet", "test", 2, tmp_path / "data")
    assert torch.equal(seen[0], bicubic) and not torch.equal(seen[0], bilinear)
    assert main([*args, "--preprocessing", "Res256Crop224", "--out", str(tmp_path / "given")]) == 0  # given wins
    assert torch.equal(seen[1], bilinear)
    assert json.loads((tmp_path / "given" / "certify.json").read_text())["preprocessing"] == "Res256Crop224"
    assert main(["certify", name, "--dataset", "fashion-mnist", "--preprocessing", "Res224", "--out",
                 str(tmp_path / "bad")]) != 0


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_lipschitz_default_radii_span_the_radii_certified_not_sigma(norm):
    """The default radii were 0 to 4 sigma whatever the method: Lipschitz radii (an linf one especially) lie far
    below, so every curve read 0 beyond r = 0 although points were certified."""
    from robust_mix.certification import certify_model

    torch.manual_seed(0)
    robust = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 4))
    model = MixedClassifier(nn.Sequential(nn.Flatten(), nn.Linear(36, 4)), robust, alpha=0.8, rob_scale=5.0)
    x = torch.rand(20, 1, 6, 6)
    labels = model.robust(x).argmax(dim=1)
    report = certify_model(model, x, labels, method="lipschitz", norm=norm, progress=False).report
    largest = max(max(report["examples"][f"radius@{c['alpha']}"]) for c in report["curves"])
    assert largest > 0
    radii = report["radii"]
    assert radii[0] == 0 and len(radii) == 9 and largest <= radii[-1] <= 1.1 * largest
    robust_base = report["curves"][-1]["certified_accuracy"]
    assert sum(a > 0 for a in robust_base[1:]) >= 4  # the curve is drawn, not a wall at r = 0
    # the given radii are kept; smoothing keeps its sigma grid
    assert certify_model(model, x, labels, method="lipschitz", norm=norm, radii=[0, 0.5],
                         progress=False).report["radii"] == [0.0, 0.5]


def test_several_per_example_ratios_keep_their_own_radii_and_labels(images):
    """Two (N,) tensors of ratios were both written under examples['radius@given'] (the first one's radii lost)
    and both labelled 'alpha = given per example' in the table and the plot."""
    from robust_mix.certification import certify_model

    model = MixedClassifier(make_tiny(0), make_tiny(1, scale=30.0), alpha=0.6)
    labels = torch.arange(len(images)) % 10
    low, high = torch.full((len(images),), 0.7), torch.full((len(images),), 0.95)
    report = certify_model(model, images, labels, sigma=0.25, n0=5, n=20, progress=False, radii=[0.0],
                           alphas=[low, high]).report
    labels_written = [c["label"] for c in report["curves"]]
    assert len(set(labels_written)) == 3
    ex = report["examples"]
    alone = certify_model(model, images, labels, sigma=0.25, n0=5, n=20, progress=False, radii=[0.0],
                          alphas=[low]).report["examples"]
    assert ex["radius@given"] == alone["radius@given"]
    assert ex["radius@given#2"] != ex["radius@given"] and max(ex["radius@given#2"]) > 0


def test_nan_probabilities_are_refused_not_read_as_abstentions():
    """A NaN margin or probability bound compared false everywhere: the example 'abstained' (radius 0) and the
    certified accuracy dropped without a word about the model's NaN."""
    with pytest.raises(ValueError, match=r"robust_probs must be probabilities in \[0, 1\]; rows \[1\]"):
        lipschitz_radius(torch.tensor([[0.7, 0.3], [float("nan"), 0.5]]), None, 0.9, 1.0)
    with pytest.raises(ValueError, match=r"p_top_lower must be probabilities in \[0, 1\]; rows \[0\]"):
        smoothing_radius(torch.tensor([float("nan"), 0.9]), 0.9, 0.25)
    with pytest.raises(ValueError, match="p_runner_up_upper must be probabilities"):
        smoothing_radius(torch.tensor([0.9]), 0.9, 0.25, p_runner_up_upper=torch.tensor([1.5]))


class _NanOnSome(nn.Module):
    """Logits of a linear model, NaN for images whose first pixel is above 0.5."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return torch.where(x.flatten(1)[:, :1] > 0.5, torch.full_like(out, float("nan")), out)


def test_a_robust_base_returning_nan_is_named_by_the_lipschitz_certificates():
    from robust_mix.certification import certify_model

    model = MixedClassifier(nn.Sequential(nn.Flatten(), nn.Linear(36, 4)), _NanOnSome(), alpha=0.9).eval()
    x = torch.rand(6, 1, 6, 6)
    x[:, 0, 0, 0] = torch.tensor([0.1, 0.9, 0.2, 0.3, 0.95, 0.4])
    with pytest.raises(ValueError, match=r"the robust base returned NaN or inf scores for examples \[1, 4\]"):
        certify_lipschitz(model, x, lipschitz=1.0)
    with pytest.raises(ValueError, match=r"the robust base returned NaN or inf scores for examples \[1, 4\]"):
        certify_model(model, x, torch.zeros(6, dtype=torch.long), method="lipschitz", lipschitz=1.0, progress=False)


def test_an_interrupted_smoothing_certification_resumes_to_the_same_report(images, tmp_path, monkeypatch):
    """certify kept no partial state: Ctrl-C after hours of sampling lost every sample drawn."""
    from robust_mix.certification import _SamplingState, certify_model

    monkeypatch.setattr(_SamplingState, "every_s", 0.0)  # save after every forward pass
    model = MixedClassifier(make_tiny(0), make_tiny(1, scale=30.0), alpha=0.8)
    x, labels = images[:5], torch.arange(5)
    kwargs = dict(sigma=0.25, n0=4, n=12, batch_size=8, progress=False, radii=[0.0, 0.1])
    full = certify_model(model, x, labels, **kwargs).report
    forward, calls = model.robust.forward, []

    def interrupted(z):
        calls.append(len(z))
        if len(calls) == 12:  # the base logits, the 4 selection passes, 6 of the 12 estimation passes
            raise KeyboardInterrupt
        return forward(z)

    monkeypatch.setattr(model.robust, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        certify_model(model, x, labels, state_dir=tmp_path / "state", **kwargs)
    calls.clear()
    monkeypatch.setattr(model.robust, "forward", lambda z: (calls.append(len(z)), forward(z))[1])
    again = certify_model(model, x, labels, state_dir=tmp_path / "state", **kwargs).report
    assert len(calls) == 1 + 6  # the base logits, then only the estimation passes not drawn before
    assert again["examples"] == full["examples"] and again["curves"] == full["curves"]
    # the state is for these settings only
    with pytest.raises(ValueError, match=r"holds the samples of another certification \(differs in \['n'\]\)"):
        certify_model(model, x, labels, state_dir=tmp_path / "state", **{**kwargs, "n": 13})
    with pytest.raises(ValueError, match=r"differs in \['images'\]"):
        certify_model(model, images[1:6], labels, state_dir=tmp_path / "state", **kwargs)


def test_cli_certify_says_how_to_resume(tiny_timm_model, tmp_path, capsys, monkeypatch):
    from robust_mix import certification

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(certification, "estimate_smoothed", interrupt)
    code = main(["certify", tiny_timm_model, "--n", "4", "--n0", "2", "--n-examples", "2", "--no-progress",
                 "--out", str(tmp_path / "out")])
    assert code != 0
    assert f"saved under {tmp_path / 'out'}/state" in capsys.readouterr().err


def test_too_few_samples_to_certify_anything_is_said(images, caplog):
    """n = 5 at failure_prob 0.001 bounds every top-class probability below 1/2: the report was all zeros and
    every example abstained, with nothing saying that no sample count this small could do better."""
    import logging

    from robust_mix.certification import certify_model

    model = MixedClassifier(make_tiny(0), make_tiny(1, scale=30.0), alpha=0.8)
    labels = torch.arange(len(images)) % 10
    with caplog.at_level(logging.WARNING, logger="robust_mix.certification"):
        report = certify_model(model, images, labels, sigma=0.25, n0=2, n=5, progress=False, radii=[0.0]).report
    assert all(c["abstain_rate"] == 1.0 for c in report["curves"])
    assert "no example can be certified at any ratio" in caplog.text and "use n >= 10" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robust_mix.certification"):
        certify_model(model, images, labels, sigma=0.25, n0=2, n=10, progress=False, radii=[0.0])
    assert "no example can be certified" not in caplog.text


def test_a_failed_certificate_write_leaves_the_earlier_files_whole(images, tmp_path):
    """write_certification replaced certify.json, then failed on the plot: the new numbers sat beside the old
    picture (or none)."""
    from robust_mix.certification import certify_model, write_certification

    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.6)
    labels = torch.arange(len(images)) % 10
    result = certify_model(model, images, labels, sigma=0.25, n0=5, n=10, progress=False, radii=[0.0], alphas=[0.6])
    write_certification(tmp_path, result)
    before = (tmp_path / "certify.json").read_bytes()
    (tmp_path / "certify.png").unlink()
    (tmp_path / "certify.png").mkdir()  # the picture cannot be written
    result.report["seconds"] = -1.0
    with pytest.raises(IsADirectoryError):
        write_certification(tmp_path, result)
    assert (tmp_path / "certify.json").read_bytes() == before


def _add_one_vote(t):
    t = t["counts"].clone()
    t[0, 0] += 1
    return t


def _move_one_vote(t):
    """A vote moved from a class without any to the top class: the sum adds up, one count is -1."""
    t = t["counts"].clone()
    empty = int((t[0] == 0).nonzero()[0])
    t[0, empty] -= 1
    t[0, t[0].argmax()] += 1
    return t


@pytest.mark.parametrize("edit, match", [
    # a vote added: the top class's count, so the certified radius, higher than any sampling gave
    (lambda t, m: ({**t, "counts": _add_one_vote(t)}, m), r"estimation counts of example\(s\) \[0\] .* do not add up"),
    (lambda t, m: ({**t, "counts": _move_one_vote(t)}, m), r"estimation counts of example\(s\) \[0\] are negative"),
    (lambda t, m: ({**t, "counts": t["counts"].double()}, m), r"estimation counts are \(5, 10\) float64, not"),
    (lambda t, m: ({**t, "counts": t["counts"][:3]}, m), r"estimation counts are \(3, 10\) int64, not \(5, 10\)"),
    (lambda t, m: ({k: v for k, v in t.items() if k != "selection"}, m), r"selection counts are NoneType"),
    (lambda t, m: ({k: v for k, v in t.items() if k != "generator_state"}, m), r"noise generator state cannot be"),
    (lambda t, m: (t, {**m, "phase": "finished"}), r"its phase is 'finished'"),
    (lambda t, m: (t, {**m, "next_start": "3"}), r"next example 3 is not a multiple of the group size 5"),
    (lambda t, m: (t, {**m, "done": "x"}), r"samples drawn so far, 'x', are not in \[0, 12\)"),
    (lambda t, m: (t, {k: v for k, v in m.items() if k != "done"}), r"samples drawn so far, None"),
])
def test_a_tampered_smoothing_state_is_refused_naming_the_file(images, tmp_path, monkeypatch, edit, match):
    """The saved samples were trusted as they were: a vote added to a count certified a radius no sampling gave,
    and a missing tensor or metadata field was a KeyError."""
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    from robust_mix.certification import _SamplingState, certify_model

    monkeypatch.setattr(_SamplingState, "every_s", 0.0)
    model = MixedClassifier(make_tiny(0), make_tiny(1, scale=30.0), alpha=0.8)
    x, labels = images[:5], torch.arange(5)
    kwargs = dict(sigma=0.25, n0=4, n=12, batch_size=8, progress=False, radii=[0.0, 0.1])
    forward, calls = model.robust.forward, []

    def interrupted(z):
        calls.append(len(z))
        if len(calls) == 12:
            raise KeyboardInterrupt
        return forward(z)

    monkeypatch.setattr(model.robust, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        certify_model(model, x, labels, state_dir=tmp_path / "state", **kwargs)
    monkeypatch.setattr(model.robust, "forward", forward)
    path = tmp_path / "state" / _SamplingState.FILE
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["phase"] == "estimation" and meta["done"] == "6"
    tensors, meta = edit(load_file(str(path)), meta)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(robust_mix.validate.InvalidInputError,
                       match=rf"smoothing_state\.safetensors holds samples that cannot be resumed from: .*{match}.*"
                             "delete it to start over"):
        certify_model(model, x, labels, state_dir=tmp_path / "state", **kwargs)


def test_a_resume_progress_that_does_not_add_up_is_refused_by_estimate_smoothed(images):
    from robust_mix.certify import SmoothingProgress

    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(3, 10, dtype=torch.int64)
    counts[:, 0] = 4  # 4 votes each, though the progress says 2 samples were drawn
    bad = SmoothingProgress("selection", 0, 2, counts, None, generator.get_state())
    with pytest.raises(robust_mix.validate.InvalidInputError, match=r"resume= cannot be continued from: its selection "
                                                                     r"counts of example\(s\) \[0, 1, 2\]"):
        estimate_smoothed(make_tiny(0), images[:3], sigma=0.25, num_classes=10, n0=4, n=8, batch_size=8,
                          generator=generator, resume=bad)


@pytest.mark.parametrize("change,match", [
    ({"norm": "l3"}, r"norm"),
    ({"sigma": float("nan")}, r"sigma must be a finite number > 0, got nan"),
    ({"failure_prob": 2.0}, r"failure_prob must be a finite number in \(0, 1\), got 2\.0"),
    ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
    ({"n": "1000"}, r"n must be an integer, got '1000'"),
    ({"seconds": 1e300}, r"seconds must be a finite number of seconds in \[0, "),
    ({"curves": [{"alpha": 2.0, "label": "x", "certified_accuracy": [0.5]}]}, r"curve 0 alpha .* got 2\.0"),
    ({"curves": [{"alpha": 0.5, "label": "x", "certified_accuracy": [0.5], "abstain_rate": 1.5}]},
     r"curve 0 abstain_rate must be a finite number in \[0, 1\], got 1\.5"),
])
def test_the_leaderboard_reads_a_real_certificate_and_refuses_an_edited_one_naming_the_field(
        images, tmp_path, change, match):
    """certify.json was read for its radii and curves only: a NaN sigma, a failure probability of 2, a negative seed,
    a ratio of 2 or an abstain rate of 1.5 were shown. What certify_model writes (a ratio per example included) is
    read back; each edited field is refused, named with what to do."""
    from robust_mix.certification import certify_model, write_certification
    from robust_mix.leaderboard.inputs import collect

    model = MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.6)
    labels = torch.arange(len(images)) % 10
    for method, kwargs in (("smoothing", dict(sigma=0.25, n0=5, n=10, alphas=[0.8, torch.full((len(images),), 0.9)])),
                           ("lipschitz", dict(lipschitz=2.0, norm="linf"))):
        result = certify_model(model, images, labels, method=method, progress=False, radii=[0.0], **kwargs)
        write_certification(tmp_path / method, result)
    inputs = collect([tmp_path])
    assert not inputs.rejected and len(inputs.certificates) == 2
    path = tmp_path / "smoothing" / "certify.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    inputs = collect([tmp_path])
    assert len(inputs.certificates) == 1 and [r.path for r in inputs.rejected] == [path]
    assert re.search(match, inputs.rejected[0].reason) and "rerun robust-mix certify" in inputs.rejected[0].reason
