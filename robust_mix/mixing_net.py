"""The mixing network of adaptive smoothing (PAPER.md section 2), sized from the features it is given."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, 1x1 shortcut when shapes change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
                         if stride != 1 or in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The released mixing networks take the identity shortcut after the pre-activation too.
        shortcut = out if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


def _stage(in_channels: int, out_channels: int, stride: int, blocks: int) -> nn.Sequential:
    layers = [PreActBlock(in_channels, out_channels, stride)]
    layers += [PreActBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class MixingNetwork(nn.Module):
    """Regresses one scalar ``gamma_raw`` per input from both base models' intermediate features.

    Features of the two models at the same stage are concatenated along channels. The earliest
    stage goes through a strided residual stage; every later stage is added in through a 1x1
    convolution; more strided residual stages, global average pooling and a bias-free linear layer
    follow. With BiT-M-R152x2 + WRN-70-16 features and ``widths=(512, 768, 1024)`` this is the
    released CIFAR architecture (about 67.8 M parameters).

    Args:
        stage_shapes: ``(C, H, W)`` of the concatenated features at each tapped stage, earliest first.
        widths: output channels of the residual stages.
        blocks: residual blocks per stage.
    """

    def __init__(self, stage_shapes: Sequence[tuple[int, int, int]], widths: Sequence[int],
                 blocks: int = 2) -> None:
        super().__init__()
        if not stage_shapes:
            raise ValueError("the mixing network needs at least one feature stage")
        if not widths:
            raise ValueError("the mixing network needs at least one width")
        self.stage_shapes = [tuple(s) for s in stage_shapes]
        first_c, first_h, _ = self.stage_shapes[0]
        stride = max(1, first_h // self.stage_shapes[1][1]) if len(self.stage_shapes) > 1 else 2
        self.stages = nn.ModuleList([_stage(first_c, widths[0], stride, blocks)])
        self.stages.extend(_stage(a, b, 2, blocks) for a, b in zip(widths[:-1], widths[1:]))
        self.lateral = nn.ModuleList(nn.Conv2d(c, widths[0], 1, bias=False)
                                     for c, _, _ in self.stage_shapes[1:])
        self.linear = nn.Linear(widths[-1], 1, bias=False)

    @classmethod
    def from_features(cls, standard: Sequence[torch.Tensor], robust: Sequence[torch.Tensor],
                      widths: Sequence[int], blocks: int = 2) -> "MixingNetwork":
        """Size the network from example features of both models (lists of ``(B, C, H, W)``)."""
        if len(standard) != len(robust):
            raise ValueError(f"need the same number of feature stages from both models, got "
                             f"{len(standard)} (standard) and {len(robust)} (robust)")
        shapes = []
        for i, (fs, fr) in enumerate(zip(standard, robust)):
            if fs.ndim != 4 or fr.ndim != 4:
                raise ValueError(f"stage {i}: the mixing network needs (B, C, H, W) feature maps, got "
                                 f"{tuple(fs.shape)} and {tuple(fr.shape)}; tap convolutional stages")
            h, w = min(fs.shape[2], fr.shape[2]), min(fs.shape[3], fr.shape[3])
            shapes.append((fs.shape[1] + fr.shape[1], h, w))
        return cls(shapes, widths, blocks)

    @staticmethod
    def _concat(fs: torch.Tensor, fr: torch.Tensor) -> torch.Tensor:
        size = (min(fs.shape[2], fr.shape[2]), min(fs.shape[3], fr.shape[3]))
        fs = fs if tuple(fs.shape[2:]) == size else F.adaptive_avg_pool2d(fs, size)
        fr = fr if tuple(fr.shape[2:]) == size else F.adaptive_avg_pool2d(fr, size)
        return torch.cat([fs, fr.to(fs.dtype)], dim=1)

    def forward(self, standard: Sequence[torch.Tensor], robust: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-stage feature lists of both models -> ``gamma_raw`` of shape ``(B,)``."""
        feats = [self._concat(fs, fr) for fs, fr in zip(standard, robust)]
        out = self.stages[0](feats[0])
        for lateral, f in zip(self.lateral, feats[1:]):
            extra = lateral(f)
            if extra.shape[2:] != out.shape[2:]:
                extra = F.adaptive_avg_pool2d(extra, out.shape[2:])
            out = out + extra
        for stage in self.stages[1:]:
            out = stage(out)
        return self.linear(out.mean(dim=(2, 3))).reshape(-1)
