"""BatchNorm statistics over all processes, so N processes train what one process would.

In training mode a BatchNorm normalises with the statistics of its batch. Under DDP each process
sees ``1/N`` of the global batch, so plain BatchNorm would use different (noisier) statistics than
one process on the whole batch. :func:`synchronize_batchnorm` swaps every BatchNorm of the trained
module for one whose batch statistics are summed over all ranks: torch's ``SyncBatchNorm`` on GPUs,
:class:`AllReduceBatchNorm` on CPUs (torch's refuses CPU tensors). Eval mode (frozen bases, attacks,
validation) uses the running statistics and needs no communication.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from robust_mix.distributed import DistContext


class _SumOverRanks(torch.autograd.Function):
    """``all_reduce(SUM)`` with a gradient: the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = grad.clone()
        dist.all_reduce(total)
        return total


class AllReduceBatchNorm(_BatchNorm):
    """BatchNorm (any dimensionality) whose training-mode statistics are all-reduced over the process group.

    Per channel, ``sum``, ``sum of squares`` and the count are summed over ranks with a
    differentiable all-reduce, so the gradient is that of the global batch too. Running statistics
    are updated with the unbiased global variance, as ``nn.BatchNorm*`` does on one process.
    Same parameters, buffers and state-dict keys as the module it replaces.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        x = input.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        stats = _SumOverRanks.apply(stats)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum)
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var.dtype))
        shape = [1, channels] + [1] * (input.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, AllReduceBatchNorm):
        new = AllReduceBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        return new.to(next(iter(module.state_dict().values())).device) if module.state_dict() else new
    for name, child in module.named_children():
        setattr(module, name, _convert_cpu(child))
    return module


def synchronize_batchnorm(module: nn.Module, dist_context: DistContext) -> nn.Module:
    """Replace the BatchNorms of ``module`` (in place where possible) by rank-synchronised ones.

    A no-op on one process. Returns the module to use (the same object unless ``module`` is
    itself a BatchNorm).
    """
    if not dist_context.distributed:
        return module
    if dist_context.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)
