"""Adaptive-attack and mixing-network losses (PAPER.md section 3)."""
import pytest
import torch
import torch.nn.functional as F

from robust_mix.losses import (adaptive_attack_loss, dlr_loss, dlr_loss_targeted, mixing_training_loss,
                               ratio_bce)
from robust_mix.mixing import MixedOutput


def output(gamma=None):
    log_probs = F.log_softmax(torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 3.0, 1.0, 0.2]]), dim=1)
    return MixedOutput(log_probs, torch.tensor([0.7, 0.9]), gamma, None, None)


def test_attack_loss_adds_the_ratio_term():
    labels = torch.tensor([0, 1])
    gamma = torch.tensor([1.0, -2.0])
    plain = adaptive_attack_loss(output(), labels, weight=0.3)
    torch.testing.assert_close(plain, F.nll_loss(output().log_probs, labels, reduction="none"))
    mixed = adaptive_attack_loss(output(gamma), labels, weight=0.3)
    expected = 0.7 * plain + 0.3 * F.softplus(-gamma)
    torch.testing.assert_close(mixed, expected)


def test_targeted_attack_loss_also_uses_the_ratio_term():
    """The authors' targeted variant dropped the composite loss; ours keeps it."""
    labels, targets = torch.tensor([0, 1]), torch.tensor([2, 3])
    gamma = torch.tensor([0.5, 0.5])
    main = dlr_loss_targeted(output().log_probs, labels, targets)
    loss = adaptive_attack_loss(output(gamma), labels, weight=torch.tensor([0.0, 0.4]), targets=targets)
    torch.testing.assert_close(loss, torch.stack([main[0], 0.6 * main[1] + 0.4 * F.softplus(-gamma[1])]))


def test_unscaled_attack_loss_uses_the_calibration_free_logit():
    labels = torch.tensor([0, 1])
    unscaled = torch.tensor([0.2, -1.0])
    gamma = 8.0 * unscaled + 10.0
    out = MixedOutput(output().log_probs, torch.tensor([0.7, 0.9]), gamma, None, None, unscaled)
    plain = F.nll_loss(out.log_probs, labels, reduction="none")
    torch.testing.assert_close(adaptive_attack_loss(out, labels, weight=0.3, unscaled=True),
                               0.7 * plain + 0.3 * F.softplus(-unscaled))
    torch.testing.assert_close(adaptive_attack_loss(out, labels, weight=0.3),
                               0.7 * plain + 0.3 * F.softplus(-gamma))
    # an output without an unscaled logit falls back to gamma
    torch.testing.assert_close(adaptive_attack_loss(output(gamma), labels, weight=0.3, unscaled=True),
                               0.7 * plain + 0.3 * F.softplus(-gamma))


def test_maximising_the_ratio_term_lowers_alpha():
    gamma = torch.tensor([0.3], requires_grad=True)
    ratio_bce(gamma, 1.0).sum().backward()
    assert gamma.grad.item() < 0, "ascent on BCE(gamma, 1) must decrease gamma, i.e. alpha"


def test_dlr_is_shift_and_scale_invariant():
    z = torch.randn(5, 10, generator=torch.Generator().manual_seed(0))
    y = torch.arange(5)
    torch.testing.assert_close(dlr_loss(z, y), dlr_loss(3 * z + 7, y))


def test_mixing_training_loss_formula():
    labels = torch.tensor([0, 1])
    gamma = torch.tensor([1.0, -1.0])
    is_adv = torch.tensor([True, False])
    out = output(gamma)
    bce = F.binary_cross_entropy_with_logits(gamma, is_adv.float(), reduction="none")
    ce = F.nll_loss(out.log_probs, labels, reduction="none")
    expected = (1.0 * bce + 0.5 * ce + 0.1 * bce * ce).mean()
    got = mixing_training_loss(out, labels, is_adv, c_bce=1.0, c_ce=0.5, c_prod=0.1)
    torch.testing.assert_close(got, expected)
    weighted = mixing_training_loss(out, labels, is_adv, c_bce=1.0, c_ce=0.5, c_prod=0.1,
                                    sample_weight=torch.tensor([1.0, 2.0]))
    per = 1.0 * bce + 0.5 * ce + 0.1 * bce * ce
    torch.testing.assert_close(weighted, (per[0] + 2 * per[1]) / 3)
    with pytest.raises(ValueError, match="adaptive model"):
        mixing_training_loss(output(), labels, is_adv, c_bce=1, c_ce=0, c_prod=0)
