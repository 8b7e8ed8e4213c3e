"""MixedNUTS output maps and their calibration (PAPER.md section 5)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from robust_mix.config import NutsConfig

from robust_mix.nuts import HardMaxMap, NonlinearLogitMap, build_output_maps, standardize_topk
from robust_mix.train.config import MixedNutsRecipe
from robust_mix.train.mixednuts import calibrate_nuts
from robust_mix.validate import InvalidInputError


def test_standardize_topk_uses_top_k_statistics():
    z = torch.tensor([[5.0, 3.0, 1.0, -10.0]])
    top = torch.tensor([5.0, 3.0, 1.0])
    expected = (z - top.mean()) / (top.var() + 1e-8).sqrt()
    torch.testing.assert_close(standardize_topk(z, 3), expected)
    torch.testing.assert_close(standardize_topk(z, 250), (z - z.mean()) / (z.var() + 1e-8).sqrt())


def test_nonlinear_map_matches_formula():
    z = torch.randn(4, 12, generator=torch.Generator().manual_seed(0))
    s, p, c = 0.6, 3.5, -2.1
    u = F.gelu(standardize_topk(z, 250) + c)
    expected = F.log_softmax(s * u.sign() * u.abs() ** p, dim=1)
    torch.testing.assert_close(NonlinearLogitMap(s, p, c)(z), expected)


def test_hardmax_is_exact_without_grad_and_smooth_with_grad():
    z = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))
    exact = HardMaxMap()(z).exp()
    assert torch.equal(exact, F.one_hot(z.argmax(1), 10).float())
    zg = z.clone().requires_grad_(True)
    surrogate = HardMaxMap(surrogate_scale=10.0)(zg)
    assert torch.equal(surrogate.argmax(1), z.argmax(1))
    surrogate[:, 0].sum().backward()
    assert zg.grad.abs().sum() > 0
    torch.testing.assert_close(HardMaxMap()(z.clone().requires_grad_(True)).exp(), exact, atol=1e-4, rtol=0)


def test_very_large_logits_are_standardised_not_flattened_to_uniform():
    """The top-k variance of logits around 1e20 overflowed float32 to inf: every class became equally likely."""
    z = torch.tensor([[2.0, 1.0, -3.0, 0.5]])
    expected = standardize_topk(z, 250)
    for size in (1e20, 1e30, 1e-30):
        torch.testing.assert_close(standardize_topk(z * size, 250), expected if size > 1 else torch.zeros_like(z),
                                   atol=1e-5, rtol=1e-5)
    robust_map = NonlinearLogitMap(1.0, 1.0, 0.0)
    torch.testing.assert_close(robust_map(z * 1e20), robust_map(z), atol=1e-5, rtol=1e-5)
    assert torch.equal(standardize_topk(torch.zeros(1, 5), 250), torch.zeros(1, 5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_give_the_float32_maps(dtype):
    """float16 ties gave 0/0 (1e-8 is 0 in float16) and the surrogate's 1e6 multiple overflowed: NaN probabilities."""
    z = torch.tensor([[3.0, 3.0, 3.0, 3.0], [1.0, 2.0, 3.0, -2.0], [200.0, -200.0, 0.0, 5.0]])
    half = z.to(dtype)
    robust_map = NonlinearLogitMap(5.0, 4.0, -1.1)
    out = robust_map(half)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, robust_map(half.float()))
    surrogate = HardMaxMap()(half.clone().requires_grad_(True))
    assert not torch.isnan(surrogate).any() and torch.equal(surrogate.argmax(1)[1:], z.argmax(1)[1:])
    assert torch.equal(HardMaxMap()(half).exp(), F.one_hot(half.argmax(1), 4).float())


@pytest.mark.parametrize("make", [lambda: NonlinearLogitMap(5.0, 4.0, -1.1, ln_k=1), lambda: HardMaxMap(ln_k=1),
                                  lambda: standardize_topk(torch.randn(2, 5), 1),
                                  lambda: build_output_maps(NutsConfig(5.0, 4.0, -1.1, ln_k=1)),
                                  lambda: MixedNutsRecipe(ln_k=1)])
def test_ln_k_of_one_is_refused_not_turned_into_nan(make):
    """k = 1 has no variance: every MixedNUTS probability was NaN."""
    with pytest.raises(InvalidInputError, match="ln_k must be an integer >= 2"):
        make()


GRID = SimpleNamespace(scales=[0.5, 2.0], powers=[1.0, 2.0], biases=[-1.0, 0.0], beta=98.5, ln_k=250)


def test_calibration_does_not_count_tied_logits_as_correct():
    """A robust base with constant logits was 'correct' on class 0 (argmax picks the first tie): q = 0, a = 1."""
    labels = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match="no attacked validation input is classified correctly.*a tie"):
        calibrate_nuts(torch.zeros(6, 4), labels, torch.zeros(6, 4), labels, GRID)
    # a tie among the clean inputs is a mistake the robust base makes, so it counts in the objective
    adv = torch.tensor([[4.0, 1.0, 0.0, 0.0]] * 5 + [[0.5, 0.0, 0.0, 0.0]])
    clean = torch.cat([torch.zeros(3, 4), torch.tensor([[3.0, 0.0, 0.0, 0.0]] * 3)])
    _, _, table = calibrate_nuts(clean, labels, adv, labels, GRID)
    assert table["clean_error"] == 0.5


def test_calibration_names_non_finite_logits_not_the_grid():
    """NaN logits of the robust base were reported as 'every (s, p, c) of the grid gave non-finite margins;
    narrow the grid', sending the user to the wrong knob."""
    labels = torch.zeros(4, dtype=torch.long)
    good = torch.tensor([[5.0, 0.0, 0.0]] * 4)
    bad = good.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite logits on 1 clean validation input\(s\) \(rows \[2\]\)"):
        calibrate_nuts(bad, labels, good, labels, GRID)
    with pytest.raises(ValueError, match=r"on 1 attacked validation input"):
        calibrate_nuts(good, labels, bad, labels, GRID)


@pytest.mark.parametrize("make,match", [
    (lambda: NonlinearLogitMap(-5.0, 4.0, -1.1), "scale must be a finite number > 0"),
    (lambda: NonlinearLogitMap(5.0, 0.0, -1.1), "power must be a finite number > 0"),
    (lambda: NonlinearLogitMap(5.0, 4.0, float("nan")), "bias must be a finite number"),
    (lambda: build_output_maps(NutsConfig(5.0, -1.0, -1.1)), "power must be a finite number > 0"),
    (lambda: MixedNutsRecipe(scales=[0.5, -0.5]), "scales must be a finite number > 0"),
    (lambda: MixedNutsRecipe(powers=[0.0]), "powers must be a finite number > 0"),
    (lambda: MixedNutsRecipe(biases=[float("inf")]), "biases must be a finite number"),
])
def test_a_map_that_reverses_or_flattens_the_robust_ranking_is_refused(make, match):
    """s < 0 turned the robust base's most likely class into its least likely one, silently; p = 0 made every
    class with u > 0 equally likely; a NaN bias gave NaN probabilities."""
    with pytest.raises(InvalidInputError, match=match):
        make()


def test_a_model_config_with_a_negative_nuts_scale_is_refused():
    from robust_mix.config import ModelConfig

    with pytest.raises(InvalidInputError, match="scale must be a finite number > 0"):
        ModelConfig(name="x", standard="a", robust="b", alpha=0.9, nuts=NutsConfig(-0.6, 3.5, -2.1)).validate()
