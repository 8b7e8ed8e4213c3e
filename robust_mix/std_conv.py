"""Twins of timm's weight-standardising convolutions that cache the standardised weight.

Used by :func:`robust_mix.fastpath.cache_frozen_weights`, which imports this module only once timm's
layers are loaded (importing timm costs seconds). Each twin computes the weight exactly as timm
1.0.9's layer does (``tests/test_fastpath.py`` checks bit-for-bit equality against the original
class) and keeps it in the non-persistent buffer ``standardized_weight``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import std_conv


class _CachedStandardization:
    """Mixin for weight-standardising convolutions: the effective weight is computed by the layer's
    own ``_standardize`` once and reused while its inputs (``weight``, ``gain``) are unchanged."""

    standardized_weight: Optional[torch.Tensor]
    #: A cache of the weight, filled by the first forward pass: no part of what the layer computes
    #: (:func:`robust_mix.fingerprint.model_code_fingerprint` leaves it out).
    _volatile_state = ("standardized_weight", "_cache_key")

    def _frozen_inputs(self) -> list[torch.Tensor]:
        return [self.weight] + ([self.gain] if hasattr(self, "gain") else [])

    def effective_weight(self) -> torch.Tensor:
        """The standardised weight; cached unless a gradient must flow into the raw weight."""
        inputs = self._frozen_inputs()
        if torch.compiler.is_compiling() or any(t.requires_grad for t in inputs):
            return self._standardize()  # traced as part of a compiled graph / differentiated
        key = tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in inputs)
        if self.standardized_weight is None or key != self._cache_key:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable under autograd
                self.standardized_weight = self._standardize()
            self._cache_key = key
        return self.standardized_weight


class CachedStdConv2d(_CachedStandardization, std_conv.StdConv2d):
    """timm's ``StdConv2d`` (BiT) with its standardised weight cached."""

    def _standardize(self) -> torch.Tensor:
        return F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                            momentum=0., eps=self.eps).reshape_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class CachedStdConv2dSame(_CachedStandardization, std_conv.StdConv2dSame):
    """timm's ``StdConv2dSame`` (TF "SAME" padding) with its standardised weight cached."""

    _standardize = CachedStdConv2d._standardize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_pad:
            x = std_conv.pad_same(x, self.kernel_size, self.stride, self.dilation)
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class CachedScaledStdConv2d(_CachedStandardization, std_conv.ScaledStdConv2d):
    """timm's ``ScaledStdConv2d`` (NFNets) with its scaled standardised weight cached."""

    def _standardize(self) -> torch.Tensor:
        return F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                            weight=(self.gain * self.scale).view(-1), training=True, momentum=0.,
                            eps=self.eps).reshape_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class CachedScaledStdConv2dSame(_CachedStandardization, std_conv.ScaledStdConv2dSame):
    """timm's ``ScaledStdConv2dSame`` with its scaled standardised weight cached."""

    _standardize = CachedScaledStdConv2d._standardize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_pad:
            x = std_conv.pad_same(x, self.kernel_size, self.stride, self.dilation)
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


#: Layer class -> its cached twin. Exact classes only: a subclass may compute something else.
CACHED_LAYERS: dict[type, type] = {
    std_conv.StdConv2d: CachedStdConv2d,
    std_conv.StdConv2dSame: CachedStdConv2dSame,
    std_conv.ScaledStdConv2d: CachedScaledStdConv2d,
    std_conv.ScaledStdConv2dSame: CachedScaledStdConv2dSame,
}
