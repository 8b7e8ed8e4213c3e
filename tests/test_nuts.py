"""MixedNUTS output maps (PAPER.md section 5)."""
import torch
import torch.nn.functional as F

from robust_mix.nuts import HardMaxMap, NonlinearLogitMap, standardize_topk


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
