"""Input adapters: raw ``[0, 1]`` images in, each base model's expected input out."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robust_mix.config import InputConfig


class InputAdapter(nn.Module):
    """Resize and normalise a batch for one base model; differentiable, so attacks see through it.

    Args:
        config: the base model's input contract. An empty config is the identity.

    Shapes:
        ``(B, C, H, W)`` in, ``(B, C, H', W')`` out with ``(H', W') = config.input_size``.
    """

    def __init__(self, config: InputConfig | None = None) -> None:
        super().__init__()
        self.config = config or InputConfig()
        mean, std = self.config.mean, self.config.std
        if (mean is None) != (std is None):
            raise ValueError("InputConfig needs both mean and std, or neither")
        if std is not None and any(s <= 0 for s in std):
            raise ValueError(f"InputConfig.std must be positive, got {std}")
        self.register_buffer("mean", None if mean is None else torch.tensor(mean).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", None if std is None else torch.tensor(std).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            align = False if self.config.interpolation in ("bilinear", "bicubic") else None
            x = F.interpolate(x, size=tuple(size), mode=self.config.interpolation,
                              align_corners=align, antialias=self.config.antialias)
        if self.mean is not None:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x

    def extra_repr(self) -> str:
        c = self.config
        return f"input_size={c.input_size}, interpolation={c.interpolation}, mean={c.mean}, std={c.std}"
