"""The mixed classifier and its mixing-ratio policies (PAPER.md section 1).

``f(x) = log((1 - a(x)) * softmax(s_g * g(x)) + a(x) * softmax(s_h * h(x)))`` with ``g`` the
standard and ``h`` the robust base model; ``a`` is a fixed float or comes from an
:class:`AdaptiveAlpha` policy that reads both models' intermediate features.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import logging
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from robust_mix.backbones import as_backbone_config, load_backbone, resolve_input_config, weight_sources
from robust_mix.config import BackboneConfig, InputConfig, MixingMode, ModelConfig, PolicyConfig, WeightsConfig
from robust_mix.convert import load_weights
from robust_mix.fastpath import cache_frozen_weights, fast_pooling
from robust_mix.features import FeatureTap
from robust_mix.hub import HubMixin
from robust_mix.mixing_net import MixingNetwork
from robust_mix.nuts import build_output_maps
from robust_mix.preprocess import InputAdapter
from robust_mix.timm_config import SAVED_ARCHITECTURE, raw_images_cfg
from robust_mix.timm_config import pretrained_cfg as timm_pretrained_cfg
from robust_mix.weights import check_model_dir, prefetch, read_weights
from robust_mix.validate import (InvalidInputError, check_agreement, check_alpha, check_alpha_range, check_bool,
                                 check_device, check_images, check_scores)

logger = logging.getLogger(__name__)

_MIXING_MODES = ("prob", "logit")


def mix_log_probs(standard_logits: torch.Tensor, robust_logits: torch.Tensor, alpha: torch.Tensor,
                  *, mode: MixingMode = "prob", std_scale: float = 1.0, rob_scale: float = 1.0,
                  standard_map: Optional[nn.Module] = None,
                  robust_map: Optional[nn.Module] = None,
                  log_weights: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """Mix two logit batches into log-probabilities.

    Args:
        standard_logits, robust_logits: ``(B, K)``.
        alpha: ``(B,)`` ratios in ``[0, 1]`` (weight of the robust model).
        mode: ``"prob"`` mixes probabilities (the paper's method), ``"logit"`` mixes logits.
        std_scale, rob_scale: logit temperatures, applied first.
        standard_map, robust_map: optional maps from scaled logits to log-probabilities
            (MixedNUTS); ``log_softmax`` when ``None``. Probability mixing only.
        log_weights: ``(log(1 - a), log(a))``, each ``(B,)``, computed by the caller more exactly than from
            ``alpha`` (:meth:`AdaptiveAlpha.log_weights`: a ratio within rounding of 0 or 1); probability mixing
            only. ``None``: :func:`log_mix_weights` of ``alpha``.

    Returns:
        ``(B, K)`` log mixed probabilities, computed in float32 (float64 for float64 logits) with
        ``logaddexp`` so that confident models never produce ``log(0)``.
    """
    dtype = at_least_float32(standard_logits.dtype, robust_logits.dtype)
    g = standard_logits.to(dtype) * std_scale
    h = robust_logits.to(dtype) * rob_scale
    a = alpha.to(dtype).reshape(-1, 1)
    if mode == "logit":
        return F.log_softmax((1 - a) * g + a * h, dim=1)
    log_rest, log_a = log_mix_weights(a) if log_weights is None else log_weights
    return torch.logaddexp(log_rest.to(dtype).reshape(-1, 1) + base_log_probs(g, standard_map),
                           log_a.to(dtype).reshape(-1, 1) + base_log_probs(h, robust_map))


def log_mix_weights(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log(1 - a), log(a))`` of ratios ``a`` in ``[0, 1]``, with finite gradients at both ends.

    At ``a = 1`` (``a = 0``) the first (second) is ``-inf``, as the mix's term it weighs vanishes; ``log1p(-a)`` and
    ``log(a)`` differentiate to ``-inf`` there, and times that term's zero share of the mix the gradient of ``a``
    (and of every input it depends on) was NaN. Here the vanished term passes no gradient to ``a``.
    """
    top, bottom = alpha >= 1, alpha <= 0
    inf = torch.full_like(alpha, float("-inf"))
    return (torch.where(top, inf, torch.log1p(-torch.where(top, torch.zeros_like(alpha), alpha))),
            torch.where(bottom, inf, torch.log(torch.where(bottom, torch.ones_like(alpha), alpha))))


def _log(value: float) -> float:
    """``log(value)`` of a float in ``[0, 1]``, ``-inf`` at 0."""
    return math.log(value) if value > 0 else float("-inf")


def fixed_log_weights(alpha: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log(1 - a), log(a))`` of a fixed ratio, computed in float64 from the float itself, as ``(B,)`` tensors of
    ``like``'s batch, dtype and device: a ratio such as MixedNUTS' 0.99875 is not rounded to ``like``'s dtype first
    (float32's nearest ``a`` moves ``log(1 - a)`` by 2e-5)."""
    batch = (like.shape[0],)
    rest = float("-inf") if alpha >= 1 else math.log1p(-alpha)
    return (torch.full(batch, rest, dtype=like.dtype, device=like.device),
            torch.full(batch, _log(alpha), dtype=like.dtype, device=like.device))


def at_least_float32(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype the mixing arithmetic runs in: float32, or float64 when an input is float64."""
    return functools.reduce(torch.promote_types, dtypes, torch.float32)


def base_log_probs(scaled_logits: torch.Tensor, output_map: Optional[nn.Module]) -> torch.Tensor:
    """One base model's log-probabilities: its output map, or ``log_softmax``."""
    return F.log_softmax(scaled_logits, dim=1) if output_map is None else output_map(scaled_logits)


class RatioNorm(nn.BatchNorm1d):
    """The BatchNorm of the mixing ratio, whose statistics stay in float32 (or wider).

    The ratio arithmetic runs in at least float32 (:func:`at_least_float32`), so a model moved to
    bfloat16 or float16 (``model.to(torch.bfloat16)``) keeps this layer's running mean and variance
    as they were, on the new device, instead of rounding them (and failing on the float32 ratio).
    """

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        kept = {k: b for k, b in self._buffers.items() if b is not None and b.is_floating_point()}
        super()._apply(fn, recurse)
        for key, old in kept.items():
            new = self._buffers[key]
            if new is not None and new.is_floating_point() and new.dtype.itemsize < 4:
                self._buffers[key] = old.to(device=new.device)
        return self


class AdaptiveAlpha(nn.Module):
    """Input-dependent mixing ratio: mixing network -> BatchNorm -> affine -> sigmoid -> range.

    ``gamma = BN(M(features)) * gamma_scale + gamma_bias``, ``alpha = sigmoid(gamma)``; in eval mode
    (or when ``scale_alpha`` is True) ``alpha = lo + (hi - lo) * alpha``. In training mode the raw
    output is clamped to the batch mean +/- 0.6 batch std before the BatchNorm (bounds not
    differentiated), as in the authors' recipe.

    Args:
        network: maps ``(standard_features, robust_features)`` to ``(B,)`` raw gammas.
        config: the constants (feature layers, gamma scale/bias, alpha range).
    """

    def __init__(self, network: nn.Module, config: PolicyConfig) -> None:
        super().__init__()
        self.network = network
        self.config = config
        self.bn = RatioNorm(1, affine=False, momentum=0.01)
        self.alpha_range = config.alpha_range
        self.scale_alpha: Optional[bool] = None

    @property
    def alpha_range(self) -> tuple[float, float]:
        """Eval-time range ``(lo, hi)`` of alpha; assignable at inference time."""
        return self.config.alpha_range

    @alpha_range.setter
    def alpha_range(self, value: Sequence[float]) -> None:
        self.config.alpha_range = check_alpha_range(value)

    def forward(self, standard: Sequence[torch.Tensor],
                robust: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature lists -> ``(alpha, gamma, unscaled)``, each ``(B,)`` float32 (float64 for a float64 model).

        ``unscaled`` is ``BN(M(features))`` before ``gamma_scale`` and ``gamma_bias``: the
        calibration-free ratio logit (see :attr:`MixedOutput.gamma_unscaled`).
        """
        batch = next((len(f) for f in (*standard, *robust)), None)
        if self.training and batch is not None and batch < 2:  # before the network, whose BatchNorm says less
            raise InvalidInputError(f"the adaptive policy is in training mode, and training the mixing network needs "
                                    f"batches of at least 2 inputs (its BatchNorm uses batch statistics), got {batch}; "
                                    "call model.eval() to predict (any batch size), or train on larger batches")
        if self.config.detach_features:
            standard = [f.detach() for f in standard]
            robust = [f.detach() for f in robust]
        gamma = self.network(standard, robust)
        gamma = gamma.to(at_least_float32(gamma.dtype)).reshape(-1, 1)
        if self.training:
            with torch.no_grad():
                mean, std = gamma.mean(), gamma.std()
            gamma = torch.clamp(gamma, min=mean - 0.6 * std, max=mean + 0.6 * std)
        unscaled = self.bn(gamma)
        gamma = unscaled * self.config.gamma_scale + self.config.gamma_bias
        alpha = self.squeeze(torch.sigmoid(gamma))
        return alpha.reshape(-1), gamma.reshape(-1), unscaled.reshape(-1)

    @property
    def squeezes(self) -> bool:
        """Whether outputs are squeezed into ``alpha_range``: in eval mode, unless ``scale_alpha`` says otherwise."""
        return (not self.training) if self.scale_alpha is None else bool(self.scale_alpha)

    def squeeze(self, alpha: torch.Tensor) -> torch.Tensor:
        """The eval-time rule, written once: ``lo + (hi - lo) * alpha`` for ``alpha`` in ``[0, 1]``
        when :attr:`squeezes`, else ``alpha`` unchanged."""
        if not self.squeezes:
            return alpha
        lo, hi = self.config.alpha_range
        return lo + (hi - lo) * alpha

    def log_weights(self, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log(1 - a), log(a))`` of the ratio ``a`` this policy gives for ``gamma`` (:meth:`forward`'s), each
        ``(B,)``, computed from ``gamma`` in log space.

        ``a`` itself is rounded: ``sigmoid(gamma)`` is 1 in float32 from ``gamma`` ~ 17 on, so a range ending at 1
        (``(0.96, 1.0)``) gave ``a = 1`` exactly, ``log(1 - a) = -inf`` (the standard model's share lost, however
        confident the robust one was against a class) and NaN input gradients (``0 * inf`` where that term
        vanished); likewise ``a = 0`` below ``gamma`` ~ -103 with a range starting at 0. Here
        ``a = lo + (hi - lo) * s`` and ``1 - a = (1 - hi) + (hi - lo) * (1 - s)`` are summed as logs, with
        ``log s`` and ``log(1 - s)`` from ``logsigmoid``: exact, and finite gradients everywhere.
        """
        up, down = F.logsigmoid(gamma), F.logsigmoid(-gamma)  # log s, log(1 - s)
        if not self.squeezes:
            return down, up
        lo, hi = self.config.alpha_range
        if hi <= lo:  # one ratio for every input
            return fixed_log_weights(lo, gamma)
        width = math.log(hi - lo)
        rest = float("-inf") if hi >= 1 else math.log1p(-hi)
        return (torch.logaddexp(torch.full_like(down, rest), down + width),
                torch.logaddexp(torch.full_like(up, _log(lo)), up + width))

    @property
    def lowest_alpha(self) -> float:
        """The smallest ratio the policy can apply to any input (``lo``, or 0 when not squeezing)."""
        return float(self.squeeze(torch.zeros((), dtype=torch.float64)))


@dataclass
class MixedOutput:
    """Everything one forward pass of :class:`MixedClassifier` computes (all ``(B, ...)``).

    ``gamma`` is ``None`` for a fixed ratio; base logits are ``None`` when a fixed ratio of
    exactly 0 or 1 skipped that model. ``gamma_unscaled`` is the policy's ratio logit before the
    calibrated ``gamma_scale`` and ``gamma_bias`` (``gamma = gamma_unscaled * scale + bias``):
    an attack that pushes it down (``adaptive_attack_loss(..., unscaled=True)``) cannot have its
    objective saturated by any choice of those constants; ``None`` for a fixed ratio.
    """

    log_probs: torch.Tensor
    alpha: torch.Tensor
    gamma: Optional[torch.Tensor]
    standard_logits: Optional[torch.Tensor]
    robust_logits: Optional[torch.Tensor]
    gamma_unscaled: Optional[torch.Tensor] = None


def _check_scale(name: str, value: float) -> float:
    """``value`` as a float when it is a positive finite number (a temperature), else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


#: Why timm's classifier-head calls (``reset_classifier``, ``get_classifier``) do not apply to a mix.
_NO_HEAD = ("a MixedClassifier has no classifier head of its own: its class scores mix those of its two bases "
            "(model.standard, model.robust), each with its own head")


class MixedClassifier(nn.Module, HubMixin):
    """A standard and a robust classifier mixed into one model that returns log-probabilities.

    Built in eval mode. Both base models are frozen and stay in eval mode; only an adaptive
    policy can train. Work that depends only on their frozen weights is cached
    (:func:`robust_mix.fastpath.cache_frozen_weights`) and their max-pooling layers take the faster
    NHWC kernel when no gradient is recorded (:func:`robust_mix.fastpath.fast_pooling`); outputs and
    ``state_dict()`` are unchanged. Raw ``[0, 1]`` images go in: each base model gets its own :class:`InputAdapter`.

    Args:
        standard: the accurate base classifier ``g`` (returns ``(B, K)`` logits).
        robust: the robust base classifier ``h`` (returns ``(B, K)`` logits).
        alpha: a fixed ratio in ``[0, 1]`` (0 = standard only, 1 = robust only) or an
            :class:`AdaptiveAlpha` policy.
        mixing: ``"prob"`` (default) or ``"logit"``.
        std_scale, rob_scale: logit temperatures ``s_g`` and ``s_h`` (positive).
        standard_input, robust_input: input contracts of the two base models.
        standard_map, robust_map: optional logits -> log-probabilities maps replacing the softmax
            (MixedNUTS, see :mod:`robust_mix.nuts`).
        num_classes: expected number of classes; checked against both models' outputs.
        config: the :class:`ModelConfig` this model was built from, kept for saving and reports.

    Example:
        >>> model = MixedClassifier(standard, robust, alpha=0.9)
        >>> log_probs, alpha = model(images, return_alpha=True)
        >>> model.alpha = 0.8  # move along the trade-off without rebuilding
    """

    def __init__(self, standard: nn.Module, robust: nn.Module,
                 alpha: Union[float, AdaptiveAlpha] = 0.5, *, mixing: MixingMode = "prob",
                 std_scale: float = 1.0, rob_scale: float = 1.0,
                 standard_input: Optional[InputConfig] = None,
                 robust_input: Optional[InputConfig] = None,
                 num_classes: Optional[int] = None,
                 standard_map: Optional[nn.Module] = None,
                 robust_map: Optional[nn.Module] = None,
                 config: Optional[ModelConfig] = None) -> None:
        super().__init__()
        self.standard = standard.eval().requires_grad_(False)
        self.robust = robust.eval().requires_grad_(False)
        for base in (self.standard, self.robust):
            cache_frozen_weights(base)  # exact: outputs and state_dict() unchanged
            fast_pooling(base)  # exact: the same maxima, NHWC kernel when no gradient is recorded
        self.standard_input = InputAdapter(standard_input)
        self.robust_input = InputAdapter(robust_input)
        self.standard_map = standard_map
        self.robust_map = robust_map
        self.mixing = mixing
        self.std_scale = std_scale
        self.rob_scale = rob_scale
        self.num_classes = self._check_num_classes(num_classes)
        self.config = config
        self._timm_cfg: Optional[tuple[Optional[ModelConfig], dict[str, Any]]] = None  # see pretrained_cfg
        self._timm_cfg_set = False
        self.policy: Optional[AdaptiveAlpha] = None
        self._fixed_alpha: Optional[float] = None
        self._taps: Optional[tuple[FeatureTap, FeatureTap]] = None
        self.alpha = alpha
        self.eval()  # an inference model by default; call .train() to fit a policy

    def _check_num_classes(self, num_classes: Optional[int]) -> Optional[int]:
        """The class count the built base models declare (``num_classes`` attributes) and ``num_classes`` agree on."""
        return check_agreement(
            "class counts", {"the standard model's num_classes": getattr(self.standard, "num_classes", None),
                             "the robust model's num_classes": getattr(self.robust, "num_classes", None),
                             "num_classes": num_classes},
            "both base models must classify the same label set, and num_classes must be their class count "
            "(leave it out to take the bases')")

    # -- the mixing rule: checked when set, so that a changed model still saves a loadable config -------------
    @property
    def mixing(self) -> MixingMode:
        """``"prob"`` or ``"logit"``: what the ratio mixes."""
        return self._mixing

    @mixing.setter
    def mixing(self, value: MixingMode) -> None:
        if value not in _MIXING_MODES:
            raise ValueError(f"mixing must be one of {_MIXING_MODES}, got {value!r}")
        if value == "logit" and (self.standard_map is not None or self.robust_map is not None):
            raise ValueError("output maps (MixedNUTS) apply to probability mixing only; use mixing='prob'")
        self._mixing = value

    @property
    def std_scale(self) -> float:
        """Temperature ``s_g`` of the standard base's logits (positive, finite)."""
        return self._std_scale

    @std_scale.setter
    def std_scale(self, value: float) -> None:
        self._std_scale = _check_scale("std_scale", value)

    @property
    def rob_scale(self) -> float:
        """Temperature ``s_h`` of the robust base's logits (positive, finite)."""
        return self._rob_scale

    @rob_scale.setter
    def rob_scale(self, value: float) -> None:
        self._rob_scale = _check_scale("rob_scale", value)

    # -- the mixing ratio ------------------------------------------------------------------
    @property
    def alpha(self) -> Union[float, AdaptiveAlpha]:
        """The fixed ratio (a float), or the adaptive policy when it is in charge."""
        return self.policy if self._fixed_alpha is None else self._fixed_alpha

    @alpha.setter
    def alpha(self, value: Union[float, AdaptiveAlpha, None]) -> None:
        """Set a fixed ratio, install an :class:`AdaptiveAlpha`, or (``None``) return to the policy."""
        if isinstance(value, AdaptiveAlpha):
            self._install_policy(value)
            self._fixed_alpha = None
        elif value is None:
            if self.policy is None:
                raise InvalidInputError("alpha=None means 'the adaptive policy', but this model has none; set a "
                                        "float alpha in [0, 1] (or install a policy: model.alpha = AdaptiveAlpha(...))")
            self._fixed_alpha = None
        else:
            self._fixed_alpha = check_alpha(value)

    def __setattr__(self, name: str, value: object) -> None:
        # nn.Module would register an AdaptiveAlpha assigned to `alpha` as a submodule and
        # bypass the property; route it through the setter instead.
        if name == "alpha":
            type(self).alpha.fset(self, value)
        else:
            super().__setattr__(name, value)

    @property
    def is_adaptive(self) -> bool:
        """True when the adaptive policy (not a fixed float) sets the ratio."""
        return self._fixed_alpha is None

    def _install_policy(self, policy: AdaptiveAlpha) -> None:
        if self._taps is not None:
            for tap in self._taps:
                tap.remove()
        self.policy = policy.train(self.training)
        self._taps = (FeatureTap(self.standard, policy.config.standard_layers),
                      FeatureTap(self.robust, policy.config.robust_layers))

    def train(self, mode: bool = True) -> "MixedClassifier":
        """Train mode for the policy only: the frozen base models always stay in eval mode."""
        super().train(mode)
        self.standard.eval()
        self.robust.eval()
        return self

    # -- forward ---------------------------------------------------------------------------
    def base_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both base models' raw logits for raw images ``x`` of shape ``(B, C, H, W)``."""
        return self.standard(self.standard_input(x)), self.robust(self.robust_input(x))

    @torch.no_grad()
    def check_base_outputs(self, x: torch.Tensor) -> None:
        """One pass of both base models on raw images ``x``: each must return ``(B, K)`` logits, not probabilities.

        The mixture's own output is log-probabilities whatever its bases return, so a base ending in a softmax
        passes every check of the mixture, and is then mixed as if its probabilities were logits (a flat softmax
        of them): another model than the one meant, with other predictions and weaker gradients for the attacks.
        The harness calls this once, before any work (a check on every forward pass would cost the attacks a
        device synchronisation per query). The certificates do not: randomized smoothing counts only the robust
        base's votes, which a hard (one-hot) classifier gives as well as logits.

        Raises:
            robust_mix.validate.InvalidInputError: naming the base and saying to return logits.
        """
        self._check_input(x)
        for which, base, adapter in (("standard", self.standard, self.standard_input),
                                     ("robust", self.robust, self.robust_input)):
            check_scores(base(adapter(x)), len(x), what=f"the {which} base model")

    def features(self, x: torch.Tensor, standard_layers: Sequence[str],
                 robust_layers: Sequence[str]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Intermediate features of both base models at the named layers (for sizing a policy)."""
        taps = FeatureTap(self.standard, standard_layers), FeatureTap(self.robust, robust_layers)
        try:
            with taps[0].capture() as out_s, taps[1].capture() as out_r:
                self.base_logits(x)
            return taps[0].collect(out_s), taps[1].collect(out_r)
        finally:
            for tap in taps:
                tap.remove()

    def forward_all(self, x: torch.Tensor) -> MixedOutput:
        """Full forward pass: log-probabilities, per-example alpha and gamma, base logits."""
        self._check_input(x)
        batch = x.shape[0]
        if self._fixed_alpha is not None and self._fixed_alpha in (0.0, 1.0):
            return self._single_model(x, robust=self._fixed_alpha == 1.0)
        if self._fixed_alpha is not None:
            g, h = self.base_logits(x)
            self._check_logits(g, h)
            alpha = torch.full((batch,), self._fixed_alpha, device=g.device, dtype=at_least_float32(g.dtype, h.dtype))
            gamma = unscaled = None
            log_weights = fixed_log_weights(self._fixed_alpha, alpha)
        else:
            tap_s, tap_r = self._taps
            with tap_s.capture() as out_s, tap_r.capture() as out_r:
                g, h = self.base_logits(x)
            alpha, gamma, unscaled = self.policy(tap_s.collect(out_s), tap_r.collect(out_r))
            log_weights = self.policy.log_weights(gamma)
        self._check_logits(g, h)
        log_probs = mix_log_probs(g, h, alpha, mode=self.mixing, std_scale=self.std_scale,
                                  rob_scale=self.rob_scale, standard_map=self.standard_map,
                                  robust_map=self.robust_map, log_weights=log_weights)
        return MixedOutput(log_probs.to(torch.promote_types(g.dtype, h.dtype)), alpha, gamma, g, h, unscaled)

    def _single_model(self, x: torch.Tensor, robust: bool) -> MixedOutput:
        logits = self.robust(self.robust_input(x)) if robust else self.standard(self.standard_input(x))
        self._check_logits(logits, logits)
        scale = self.rob_scale if robust else self.std_scale
        alpha = torch.full((x.shape[0],), float(robust), device=logits.device, dtype=at_least_float32(logits.dtype))
        output_map = self.robust_map if robust else self.standard_map
        log_probs = base_log_probs(logits.to(at_least_float32(logits.dtype)) * scale, output_map).to(logits.dtype)
        return MixedOutput(log_probs, alpha, None, None if robust else logits,
                           logits if robust else None)

    def forward(self, x: torch.Tensor, return_alpha: bool = False
                ) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Raw images ``(B, C, H, W)`` in ``[0, 1]`` -> log mixed probabilities ``(B, K)``.

        With ``return_alpha=True`` also returns the per-example ratio ``(B,)`` actually applied (a bool: a string
        such as ``"no"`` is refused, not read as true).
        """
        return_alpha = check_bool("return_alpha", return_alpha)
        out = self.forward_all(x)
        return (out.log_probs, out.alpha) if return_alpha else out.log_probs

    def __prepare_scriptable__(self) -> "MixedClassifier":
        """``torch.jit.script(model)``: refused, naming what compiles a mix instead.

        TorchScript cannot compile the mix's forward (its input checks and mixing rule are Python); without this it
        failed inside TorchScript's compiler on one of them ("Comprehension ifs are not supported yet").

        Raises:
            NotImplementedError: always, naming ``torch.export``, ``torch.jit.trace`` and ``torch.compile``.
        """
        raise NotImplementedError(
            "torch.jit.script cannot compile a MixedClassifier (its forward checks its inputs in Python, which "
            "TorchScript does not support; TorchScript is deprecated in torch 2.x): export it with "
            "torch.export.export(model, (images,)), trace it with torch.jit.trace(model, images) (for that image "
            "shape), or compile it with torch.compile(model)")

    def reset_classifier(self, num_classes: int = 0, *args: Any, **kwargs: Any) -> None:
        """timm's call to replace a model's classifier head: refused, since a mix has no head of its own.

        Raises:
            NotImplementedError: always, saying what to do instead.
        """
        raise NotImplementedError(
            f"reset_classifier({num_classes!r}): {_NO_HEAD}; to classify other classes, mix two bases with that many "
            "classes (robust_mix.load_model('mix', standard=..., robust=...)) and train its mixing network again, as "
            "the mix's ratio was fitted to the bases' heads")

    def get_classifier(self) -> nn.Module:
        """timm's call for a model's classifier head: refused, since a mix has no head of its own.

        Raises:
            NotImplementedError: always, naming the bases' heads instead.
        """
        raise NotImplementedError(f"get_classifier(): {_NO_HEAD}; the bases' heads are "
                                  "model.standard.get_classifier() and model.robust.get_classifier() for timm bases")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's call for a model's unpooled features: refused, since a mix has no features of its own.

        Raises:
            NotImplementedError: always, naming what gives features instead.
        """
        raise NotImplementedError(
            f"forward_features(): {_NO_HEAD}, so it has no features of its own; model.features(x, standard_layers, "
            "robust_layers) returns the named layers' outputs of both bases, and a timm base's own features are "
            "model.standard.forward_features(model.standard_input(x)) (each base takes the images as its own "
            "input adapter prepares them)")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """timm's call to apply a model's classifier head to its features: refused, since a mix has no head.

        Raises:
            NotImplementedError: always, saying what to call instead.
        """
        raise NotImplementedError(f"forward_head(): {_NO_HEAD}; call the model on raw [0, 1] images (model(x)) for "
                                  "the mixed class scores, or a base's own forward_head for its features")

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg``: the preprocessing the model expects, which ``timm.data.resolve_data_config({},
        model=model)`` and ``timm.data.create_transform`` follow.

        Models built by timm's factories carry the one timm gave them; any other (``robust_mix.load_model``,
        ``from_pretrained``, :meth:`from_config`) states its config's (:func:`robust_mix.timm_config.pretrained_cfg`,
        with the architecture that rebuilds a ``save_pretrained`` folder): raw ``[0, 1]`` images (``mean`` 0,
        ``std`` 1, since the model normalises inside), its ``input_size`` and its RobustBench preprocessing's
        resize and crop. A model built without a config states only ``mean`` 0 and ``std`` 1 (timm's defaults for
        the rest). Without it timm would assume ImageNet's mean and std and normalise the images a second time.

        Raises:
            ValueError: the config's RobustBench preprocessing has no timm form (timm's transform would prepare
                other images than the model was evaluated on), naming the transform to use instead.
        """
        if self._timm_cfg_set:
            return self._timm_cfg[1]
        if self._timm_cfg is None or self._timm_cfg[0] is not self.config:  # derived once per config
            try:
                cfg = (timm_pretrained_cfg(self.config, SAVED_ARCHITECTURE) if self.config is not None
                       else {"architecture": None, **raw_images_cfg()})
            except ValueError as err:
                raise ValueError(f"{err}: timm.data.create_transform would prepare other images than the model "
                                 "takes; prepare them with robust_mix.data.imagenet_transform("
                                 f"{self.config.preprocessing!r})") from err
            self._timm_cfg = (self.config, cfg)
        return self._timm_cfg[1]

    @pretrained_cfg.setter
    def pretrained_cfg(self, value: dict[str, Any]) -> None:
        self._timm_cfg, self._timm_cfg_set = (self.config, value), True

    @property
    def default_cfg(self) -> dict[str, Any]:
        """timm's older name of :attr:`pretrained_cfg` (the same dict), which RobustBench reads."""
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, value: dict[str, Any]) -> None:
        self.pretrained_cfg = value

    @property
    def input_shape(self) -> Optional[tuple[int, int, int]]:
        """The raw input contract ``(C, H, W)`` from the config, or ``None`` when none is declared."""
        return None if self.config is None or self.config.input_shape is None else tuple(self.config.input_shape)

    @property
    def device(self) -> Optional[torch.device]:
        """Where the base models' weights are (inputs must be there too), ``None`` without weights."""
        return next((p.device for p in self.standard.parameters()), None)

    @property
    def dtype(self) -> Optional[torch.dtype]:
        """The floating dtype of the base models' weights (inputs must have it), ``None`` without weights."""
        return next((p.dtype for p in self.standard.parameters() if p.is_floating_point()), None)

    def current_config(self, config: Optional[ModelConfig] = None) -> Optional[ModelConfig]:
        """The config (``config``, else the model's own) with the mixing constants the model applies
        now (after ``model.alpha = 0.8``, a changed ``alpha_range`` or temperature), or ``None``
        for a model built without one."""
        base = config if config is not None else self.config
        if base is None:
            return None
        return dataclasses.replace(
            copy.deepcopy(base), alpha=None if self.is_adaptive else self._fixed_alpha,
            policy=copy.deepcopy(self.policy.config) if self.policy is not None else None, mixing=self.mixing,
            std_scale=self.std_scale, rob_scale=self.rob_scale)

    def _check_input(self, x: torch.Tensor) -> None:
        # shape, dtype and device only: a value scan on every forward pass would slow the attacks down; the
        # harness checks values once at its boundary
        check_images(x, self.input_shape, dtype=self.dtype, check_values=False, device=self.device)

    def _check_logits(self, g: torch.Tensor, h: torch.Tensor) -> None:
        for which, out in (("standard", g), ("robust", h)):
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"base models must return a (B, K) tensor of logits, got {type(out).__name__} from "
                                f"the {which} model; wrap it so that forward returns the logits only")
        if g.ndim != 2 or h.ndim != 2:
            raise ValueError(f"base models must return (B, K) logits, got {tuple(g.shape)} (standard) "
                             f"and {tuple(h.shape)} (robust)")
        if g.shape[1] != h.shape[1] or (self.num_classes is not None and g.shape[1] != self.num_classes):
            raise ValueError(f"class counts do not match: the standard model returns {g.shape[1]} "
                             f"classes, the robust model {h.shape[1]}"
                             + (f", expected {self.num_classes}" if self.num_classes else "")
                             + "; both must classify the same label set")

    # -- the one builder: a config becomes a model here and nowhere else ---------------------------
    @classmethod
    def from_config(cls, config: ModelConfig, *, model_dir: Union[str, Path, None] = None,
                    device: Union[str, torch.device, None] = None, pretrained: bool = True) -> "MixedClassifier":
        """Build the mixed model a :class:`ModelConfig` describes, in eval mode.

        Every weight file the config names is fetched (or found missing, with a clear error) before
        anything is built; each base then gets its weights, and the adaptive policy its tensors
        (``config.weights``).

        Args:
            config: the entry; both base models must be set.
            model_dir: RobustBench's checkpoint folder (default ``$ROBUST_MIX_MODEL_DIR`` or ``./models``; ``~`` is
                the home folder).
            device: where to put the model (one that does not exist here is refused before anything is built).
            pretrained: load weights; ``False`` builds the architecture with random weights (a bool).

        Raises:
            ValueError: a base is missing, ``alpha`` is ``None`` without an adaptive policy, or a
                weight file does not fit.
            robust_mix.validate.InvalidInputTypeError: ``pretrained`` is not a bool, or ``model_dir`` not a path.
            robust_mix.validate.InvalidInputError: ``device`` is not a device name or not present here, or the
                config contradicts what its bases state they take or return (an ``input_shape`` of other
                channels than their ``in_chans``, a ``num_classes`` or ``labels`` of another class count;
                :meth:`ModelConfig.validate`); before any download or build.
            robust_mix.weights.WeightsNotFoundError: a weight file is missing and cannot be fetched.
        """
        device = check_device(device) if device is not None else None
        pretrained = check_bool("pretrained", pretrained)
        model_dir = check_model_dir(model_dir)
        if config.standard is None or config.robust is None:
            raise ValueError(f"{config.name!r} needs both base models: pass standard='timm/...' and "
                             "robust='robustbench/<dataset>/<threat>/<Name>' (or .safetensors paths)")
        standard_config, robust_config = as_backbone_config(config.standard), as_backbone_config(config.robust)
        config.validate(bases=(standard_config, robust_config))  # before any download or build
        if pretrained:
            sources = weight_sources(standard_config) + weight_sources(robust_config)
            prefetch(sources + ([config.weights] if config.weights is not None else []), model_dir)
        standard = load_backbone(standard_config, model_dir=model_dir, pretrained=pretrained)
        robust = load_backbone(robust_config, model_dir=model_dir, pretrained=pretrained)
        maps = build_output_maps(config.nuts) if config.nuts is not None else (None, None)
        model = cls(standard, robust, alpha=0.5 if config.alpha is None else config.alpha,
                    standard_map=maps[0], robust_map=maps[1],
                    mixing=config.mixing, std_scale=config.std_scale, rob_scale=config.rob_scale,
                    standard_input=resolve_input_config(standard_config, standard),
                    robust_input=resolve_input_config(robust_config, robust),
                    num_classes=config.num_classes, config=config)
        if config.policy is not None:
            model.alpha = build_adaptive_policy(model, config.policy)
            if config.alpha is not None:
                model.alpha = config.alpha
        if pretrained and config.weights is not None:
            if model.policy is None:
                raise ValueError(f"{config.name!r}: weights {config.weights.describe()} are for an adaptive policy, "
                                 "and the config has none")
            _load_policy_weights(model, config.weights, model_dir)
        if device is not None:
            model = model.to(device)
        return model.eval()

    def portable_config(self, config: Optional[ModelConfig] = None) -> ModelConfig:
        """The model as it is now, as a config that rebuilds its architecture anywhere.

        The :meth:`current_config`, with the base models named by architecture without weight
        sources (a saved model carries all its tensors) and the input contracts the model applies
        pinned.

        Args:
            config: the config to start from when the model has none (built by hand).

        Raises:
            ValueError: no config naming both base models.
        """
        current = self.current_config(config)
        if current is None or current.standard is None or current.robust is None:
            raise ValueError("this MixedClassifier has no ModelConfig naming both base models (it was built by "
                             "hand), so nothing says how to rebuild them; build it with "
                             "MixedClassifier.from_config / robust_mix.load_model, or pass config="
                             "ModelConfig(name=..., standard=BackboneConfig('timm/<arch>', kwargs=...), robust=...)")
        return dataclasses.replace(
            copy.deepcopy(current),
            standard=_portable_backbone(current.standard, self.standard, self.standard_input.config),
            robust=_portable_backbone(current.robust, self.robust, self.robust_input.config),
            num_classes=self.num_classes, weights=None)

    def check_savable(self) -> None:
        """Refuse to save a model with NaN in a tensor (its outputs would be NaN), or whose floating tensors are not
        all of one dtype (the one most of them have; the ratio's BatchNorm statistics: at least float32, as
        ``model.to(dtype)`` leaves them): a part moved to another dtype on its own (``model.robust.half()``). Such a
        model cannot run (its parts pass each other tensors of one dtype), and loading rebuilds every part in one
        dtype, so its save could never be loaded.

        Raises:
            robust_mix.validate.InvalidInputError: naming the tensors holding NaN or of another dtype, and what to do.
        """
        kept = {f"{name}.{key}" if name else key for name, module in self.named_modules()
                if isinstance(module, RatioNorm) for key in module._buffers}
        state = {**dict(self.named_parameters()), **dict(self.named_buffers())}
        broken = [key for key, t in state.items() if t.is_floating_point() and bool(torch.isnan(t.detach()).any())]
        if broken:
            raise InvalidInputError(
                f"{len(broken)} of this model's tensors hold NaN: {broken[:4]}; every output it gives is NaN there (a "
                "fine-tuning that diverged?). Save the model from before that, or train again with a smaller "
                "learning rate; nothing was written")
        floating = {key: t.dtype for key, t in state.items() if t.is_floating_point()}
        counts = collections.Counter(dtype for key, dtype in floating.items() if key not in kept)
        if not counts:
            return
        dtype = counts.most_common(1)[0][0]
        off = [f"{key} ({str(d).removeprefix('torch.')})" for key, d in floating.items()
               if d != (at_least_float32(dtype) if key in kept else dtype)]
        if off:
            raise InvalidInputError(
                f"most of this model's tensors are {str(dtype).removeprefix('torch.')}, but {len(off)} are of another "
                f"dtype: {off[:4]}; a part moved on its own to another dtype cannot run with the others, and its save "
                f"could not be loaded. Move the whole model, model.to({dtype}) (or the dtype wanted), then save; "
                "nothing was written")

    def extra_repr(self) -> str:
        alpha = "adaptive" if self.is_adaptive else self._fixed_alpha
        return (f"alpha={alpha}, mixing={self.mixing}, std_scale={self.std_scale}, "
                f"rob_scale={self.rob_scale}")


def build_adaptive_policy(model: MixedClassifier, config: PolicyConfig) -> AdaptiveAlpha:
    """Create an :class:`AdaptiveAlpha` whose mixing network is sized from ``model``'s features.

    The feature shapes are probed with one zero image of shape ``config.input_shape``, in the model's dtype;
    the network is built on the model's device and in its dtype (a float64 model gets a float64 policy).
    """
    param = next(model.standard.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = model.dtype or torch.float32
    with torch.no_grad():
        probe = torch.zeros((1, *config.input_shape), device=device, dtype=dtype)
        std_feats, rob_feats = model.features(probe, config.standard_layers, config.robust_layers)
    network = MixingNetwork.from_features(std_feats, rob_feats, config.widths, config.blocks)
    logger.info("mixing network: %d stage(s) of features %s, %.2f M parameters",
                len(network.stage_shapes), network.stage_shapes,
                sum(p.numel() for p in network.parameters()) / 1e6)
    return AdaptiveAlpha(network, config).to(device=device, dtype=dtype)


def _portable_backbone(backbone: BackboneConfig, module: nn.Module, contract: InputConfig) -> BackboneConfig:
    """Name the architecture (not a weight source) and pin the input contract actually applied."""
    architecture = as_backbone_config(backbone)
    portable = dataclasses.replace(architecture, weights=None, input=copy.deepcopy(contract))
    if resolve_input_config(portable, module) != contract:
        # Without its weight source the rebuilt reference would get timm's default normalisation,
        # which this model never applied; an explicit identity keeps the inputs bit for bit.
        portable.input = dataclasses.replace(portable.input, mean=(0.0,), std=(1.0,))
    return portable


def _load_policy_weights(model: MixedClassifier, weights: WeightsConfig,
                         model_dir: Union[str, Path, None]) -> None:
    """The policy's tensors: another layout through its format, or ``policy.*`` keys of the model."""
    if weights.format is not None:
        load_weights(model.policy, weights, model_dir, what="the adaptive policy")
        return
    state = read_weights(weights, model_dir)
    own = model.state_dict()
    unexpected = sorted(set(state) - {k for k in own if k.startswith("policy.")})
    missing = sorted(k for k in own if k.startswith("policy.") and k not in state)
    if unexpected or missing:
        raise ValueError(f"{weights.describe()} does not match the model's adaptive policy: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]} (it must hold the policy.* tensors of "
                         "MixedClassifier.state_dict())")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{weights.describe()} does not match the model's adaptive policy: {err}") from err
