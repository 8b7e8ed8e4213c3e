"""Mixed precision for training: autocast for forward passes and attacks, a gradient scaler for fp16.

Trained weights (a base classifier, the mixing network) stay float32 ("master weights"):
autocast only runs matmuls and convolutions in the lower precision and the optimizer updates
float32 parameters. ``bf16`` works on CPUs too (``torch.autocast("cpu")``); ``fp16`` adds a
``GradScaler`` so small gradients do not underflow.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from robust_mix.train.config import PRECISIONS

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A precision on a device type: ``Precision("bf16", "cpu").autocast()``."""

    name: str = "fp32"
    device_type: str = "cpu"

    def __post_init__(self) -> None:
        if self.name not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.name!r}")

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype (``float32`` for ``fp32``)."""
        return _DTYPES[self.name] or torch.float32

    def autocast(self) -> ContextManager:
        """Autocast context for forward passes (a no-op for ``fp32``)."""
        if _DTYPES[self.name] is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=_DTYPES[self.name])

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for ``fp16`` only (a pass-through otherwise)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.name == "fp16")
