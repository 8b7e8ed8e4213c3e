"""Attacks of the benchmark harness: AutoAttack stages through ``pyautoattack`` and adaptive
attacks on mixed models (PAPER.md sections 3 and 5).

What runs is an :class:`~robust_mix.protocol.AttackPlan`: a set of suites, each an ordered list of
stages. Within a suite each stage attacks only the examples every earlier stage failed on
(AutoAttack's cascade); suites run independently on the clean-correct examples and an example is
robust only if it survives every suite.

The adaptive stages reuse pyautoattack's APGD (step-size schedule, momentum, restarts, target
selection) and only swap its objective for :func:`robust_mix.losses.adaptive_attack_loss`, which
reads the mixing ratio's ``gamma`` from the model's :class:`~robust_mix.MixedOutput`. For
MixedNUTS models (hard-max standard map) gradients come from the surrogate map and, per example,
the iterate with the smallest margin under the *exact* model is kept (minimum-margin selection).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from robust_mix import threads
from robust_mix.fastpath import frozen_parameters
from robust_mix.losses import adaptive_attack_loss
from robust_mix.mixing import MixedOutput
from robust_mix.nuts import HardMaxMap
from robust_mix.protocol import (DEFAULT_ADAPTIVE_WEIGHT, MIN_CLASSES, MIN_LARGEREPS_ITERATIONS, OPTION_SETTING,
                                 OPTION_STAGES, SETTINGS_GROUP, AttackOptions, AttackPlan, check_options,
                                 class_count_problem, iteration_problem)
from robust_mix.validate import (InvalidInputError, check_adversarial_examples, check_finite_outputs,
                                 check_score_shape)

logger = logging.getLogger(__name__)

def set_apgd_iterations(attack: object, n_iter: int) -> None:
    """Change an APGD attack's iteration count together with its checkpoint schedule.

    pyautoattack derives the step-size checkpoints from ``n_iter`` in ``__init__``; setting
    ``n_iter`` alone afterwards would keep the 100-iteration schedule.
    """
    attack.n_iter = attack.n_iter_orig = int(n_iter)
    attack.n_iter_2 = max(int(0.22 * n_iter), 1)
    attack.n_iter_min = max(int(0.06 * n_iter), 1)
    attack.size_decr = max(int(0.03 * n_iter), 1)


def compute_dtype(model: nn.Module) -> Optional[torch.dtype]:
    """The floating dtype of ``model``'s first floating-point parameter (``None`` without one)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


class Float32View(nn.Module):
    """A model of any floating dtype (float32, float64, float16, bfloat16) as the attacks need it: float32
    images in, float32 scores out (for a float32 model returning float32 scores it passes them through).

    pyautoattack converts every image it attacks with ``.float()`` and its projections write float32
    tensors, so a float64 model met float32 images (refused by the model, or a dtype error) and a
    float64 output broke FAB's projection. Here images are cast to ``dtype`` on the way in and every
    floating output (log-probabilities, ``gamma``, the bases' logits) to float32 on the way out; the
    model itself computes in its own dtype, as in deployment.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype
        if hasattr(model, "forward_all"):  # OutputRecorder reads the whole MixedOutput where there is one
            self.forward_all = self._forward_all

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _as_float32(self.model(x.to(self.dtype)))

    def _forward_all(self, x: torch.Tensor) -> MixedOutput:
        out = self.model.forward_all(x.to(self.dtype))
        return dataclasses.replace(out, **{f.name: _as_float32(getattr(out, f.name))
                                           for f in dataclasses.fields(out)})


def _as_float32(value: Any) -> Any:
    """A floating tensor as float32 (other values as they are)."""
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def float32_view(model: nn.Module) -> Float32View:
    """``model`` as the attacks query it (:class:`Float32View`; float32 scores even from a float32 model that
    returns float64 or float16 ones)."""
    return Float32View(model, compute_dtype(model) or torch.float32)


def check_differentiable(x: torch.Tensor, scores: torch.Tensor, what: str) -> torch.Tensor:
    """``scores`` when autograd can reach ``x`` from them, as the gradient attacks (APGD, FAB) need.

    Raises:
        robust_mix.validate.InvalidInputError: ``x`` asks for a gradient but ``scores`` has none (a forward that runs
            under ``torch.no_grad()`` or detaches its input), which failed inside pyautoattack with "element 0 of
            tensors does not require grad".
    """
    if torch.is_grad_enabled() and x.requires_grad and not scores.requires_grad:
        raise InvalidInputError(f"{what} returned scores without a gradient for its input (does forward run under "
                                "torch.no_grad() or call .detach()?); the gradient attacks (APGD, FAB) need one: take "
                                "them out of forward, or run only the score-based 'square' attack")
    return scores


class FiniteOutputGuard(nn.Module):
    """Wraps the classifier the attacks query: a NaN/inf output inside an attack is an error.

    A model that returns NaN on perturbed inputs would otherwise break the attack's search silently
    and look robust. ``context`` (set per stage) names the attack and its examples in the error.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.context = "an attack"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        what = f"the model, during {self.context},"
        return check_finite_outputs(check_differentiable(x, check_score_shape(self.model(x), len(x), what), what), what)


class OutputRecorder(nn.Module):
    """Wraps a classifier for the attacks: returns log-probabilities (or logits) and remembers
    the last full :class:`MixedOutput`, so that a criterion called on those logits can read
    ``gamma``. Plain classifiers get a ``MixedOutput`` with ``gamma=None``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.last: Optional[MixedOutput] = None
        self.last_input: Optional[torch.Tensor] = None
        self.context = "an attack"

    def full_output(self, x: torch.Tensor) -> MixedOutput:
        """The model's :class:`MixedOutput` for ``x`` ``(B, C, H, W)``."""
        if hasattr(self.model, "forward_all"):
            return self.model.forward_all(x)
        logits = check_score_shape(self.model(x), len(x), f"the model, during {self.context},")
        alpha = torch.ones(logits.shape[0], device=logits.device)
        return MixedOutput(F.log_softmax(logits.float(), dim=1), alpha, None, None, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, what = self.full_output(x), f"the model, during {self.context},"
        check_finite_outputs(check_differentiable(x, out.log_probs, what), what)
        self.last, self.last_input = out, x
        return out.log_probs

    def output_for(self, log_probs: torch.Tensor) -> MixedOutput:
        """The recorded output whose ``log_probs`` is ``log_probs`` (guards against stale reads)."""
        if self.last is None or self.last.log_probs is not log_probs:
            raise RuntimeError("the adaptive criterion got logits that were not produced by the "
                               "recording wrapper's last forward pass")
        return self.last


def is_mixednuts(model: nn.Module) -> bool:
    """True for models whose standard base goes through the hard-max map (MixedNUTS)."""
    return isinstance(getattr(model, "standard_map", None), HardMaxMap)


class MarginTracker:
    """Per example, the iterate with the smallest exact-model margin seen so far.

    ``margin = log p_y - max_{i != y} log p_i`` under the model without gradients (the exact
    hard-max map for MixedNUTS). ``x`` and ``y`` are the attacked batch ``(B, C, H, W)``, ``(B,)``.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.y = model, y
        self.x_min = x.detach().clone()
        self.margin = torch.full((len(y),), float("inf"), device=y.device)

    @torch.no_grad()
    def exact_margin(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` margins of the exact model at ``x``."""
        log_probs = self.model(x.detach()).float()
        true = log_probs.gather(1, self.y[:, None])[:, 0]
        others = log_probs.scatter(1, self.y[:, None], float("-inf"))
        return true - others.max(dim=1).values

    def update(self, x: torch.Tensor) -> None:
        """Keep ``x``'s rows where their margin is below the best so far."""
        margin = self.exact_margin(x)
        better = margin < self.margin
        self.margin = torch.where(better, margin, self.margin)
        self.x_min[better] = x.detach()[better]


class _CompositeObjective:
    """Mixin for pyautoattack's APGD classes: the adaptive composite objective, optional
    minimum-margin selection. Expects ``self.model`` to be an :class:`OutputRecorder`."""

    weight: float = DEFAULT_ADAPTIVE_WEIGHT
    select_min_margin: bool = False
    #: BCE on the calibration-free ratio logit (:func:`robust_mix.losses.adaptive_attack_loss`); off by
    #: default (the paper's objective, on the calibrated gamma); set it on a runner's adaptive attacks.
    unscaled: bool = False
    _tracker: Optional[MarginTracker] = None

    def composite_loss(self, log_probs: torch.Tensor, y: torch.Tensor,
                       targets: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(1 - w) * (CE or targeted DLR) + w * BCE(gamma, 1)`` per example ``(B,)`` (``gamma``
        unscaled when :attr:`unscaled`)."""
        out = self.model.output_for(log_probs)
        if self._tracker is not None:
            self._tracker.update(self.model.last_input)
        return adaptive_attack_loss(out, y, weight=self.weight, targets=targets, unscaled=self.unscaled)

    def attack_single_run(self, x, y, x_init=None):
        if not self.select_min_margin:
            return super().attack_single_run(x, y, x_init)
        self._tracker = MarginTracker(self.model.model, x, y)
        try:
            x_best, _, loss_best, _ = super().attack_single_run(x, y, x_init)
            tracker = self._tracker
        finally:
            self._tracker = None
        with torch.no_grad():
            still_correct = self.model.model(tracker.x_min).argmax(dim=1) == y
        return x_best, still_correct, loss_best, tracker.x_min


def _apgd_classes() -> tuple[type, type]:
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    class AdaptiveAPGD(_CompositeObjective, APGDAttack):
        """APGD on the composite cross-entropy objective.

        pyautoattack builds its CE criterion inline; its ``"dlr"`` loss is the one routed through
        an overridable method, so that route carries the composite objective.
        """

        def __init__(self, model: OutputRecorder, **kwargs) -> None:
            super().__init__(model, loss="dlr", **kwargs)

        def dlr_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.composite_loss(x, y)

    class AdaptiveAPGDTargeted(_CompositeObjective, APGDAttack_targeted):
        """Targeted APGD-DLR whose objective really includes ``w * BCE(gamma, 1)`` (the authors'
        targeted variant dropped it)."""

        def dlr_loss_targeted(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.composite_loss(x, y, targets=self.y_target)

    return AdaptiveAPGD, AdaptiveAPGDTargeted


# -- attacks that produce training data ----------------------------------------------------------
LossFn = Callable[[torch.Tensor], torch.Tensor]


def pgd(loss_fn: LossFn, x: torch.Tensor, eps: Union[float, torch.Tensor], steps: int,
        step_size: Union[float, torch.Tensor, None] = None, random_start: bool = True,
        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """l_inf PGD maximising ``loss_fn(x_adv)`` (per-example ``(B,)`` losses) within ``eps`` of ``x``.

    The attack of PGD and TRADES adversarial training and of the recipes' per-epoch validation.

    Args:
        loss_fn: images ``(B, C, H, W)`` -> per-example losses ``(B,)`` to maximise.
        x: clean images in ``[0, 1]``.
        eps: radius, a float or per-example ``(B,)``.
        steps: iterations (0 returns the random start, or ``x``).
        step_size: per-step size (float or ``(B,)``); default ``2.5 * eps / steps``.
        random_start: start uniformly inside the ball.
        generator: CPU generator for the random start (reproducible runs).

    Returns:
        ``(B, C, H, W)`` adversarial images, detached.
    """
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    eps_t = eps_t.expand(x.shape[0], 1, 1, 1)
    alpha = (2.5 * eps_t / max(1, steps) if step_size is None
             else torch.as_tensor(step_size, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1))
    x_adv = x.detach().clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1
        x_adv = (x_adv + noise * eps_t).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(loss_fn(x_adv).sum(), x_adv)
        with torch.no_grad():
            x_adv = x_adv + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps_t), x + eps_t).clamp(0, 1)
    return x_adv.detach()


def adaptive_apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: Union[float, torch.Tensor],
                  n_iter: int, weight: Union[float, torch.Tensor] = DEFAULT_ADAPTIVE_WEIGHT,
                  targets: Optional[torch.Tensor] = None, seed: int = 0) -> torch.Tensor:
    """One l_inf APGD run on the adaptive composite objective, with per-example radii, weights and targets.

    The same APGD classes as the harness's adaptive stages (pyautoattack's step-size schedule and
    momentum, the objective of :func:`robust_mix.losses.adaptive_attack_loss`):
    ``(1 - w) * CE + w * BCE(gamma, 1)``, or targeted DLR towards ``targets`` in place of CE.
    Unlike a harness stage, every example is attacked (not only the still-correct ones) and the
    iterate with the highest objective is returned: training data for the mixing network, which
    must see strong attacks on correctly *and* wrongly classified inputs alike.

    Args:
        model: raw ``[0, 1]`` images in; a :class:`~robust_mix.MixedClassifier` for the ``gamma`` term.
        x, y: ``(B, C, H, W)`` clean images and ``(B,)`` labels.
        eps: radius, a float or ``(B,)`` per-example radii.
        n_iter: APGD iterations (the step-size checkpoints scale with it).
        weight: ``w``, a float or ``(B,)``.
        targets: ``(B,)`` target classes for the targeted variant; ``None``: untargeted.
        seed: seeds the random start; the caller's global RNG state is left as it was.

    Returns:
        ``(B, C, H, W)`` adversarial images, detached, each within its own radius of ``x``.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    adaptive_ce, adaptive_t = _apgd_classes()
    batch = x.shape[0]
    radius = torch.as_tensor(eps, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1).expand(batch, 1, 1, 1)
    recorder = OutputRecorder(model)
    common = dict(n_iter=int(n_iter), norm="Linf", eps=radius.clone(), seed=seed, device=x.device, logger=logger)
    if targets is None:
        attack = adaptive_ce(recorder, **common)
    else:
        attack = adaptive_t(recorder, n_target_classes=1, **common)
        attack.y_target = targets.to(x.device)
    attack.weight = torch.as_tensor(weight, dtype=torch.float32, device=x.device).expand(batch).clone()
    x = x.detach().float()
    attack.init_hyperparam(x)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x_best, _, _, _ = attack.attack_single_run(x, y.to(x.device))
    return x_best.detach()


class StageRunner:
    """Runs single attack stages on batches, with exactly AutoAttack's settings.

    The AutoAttack stages use the sub-attacks of a ``pyautoattack.AutoAttack`` configured for
    ``plan.version``; the adaptive stages use APGD objects with the same constants.

    Args:
        model: the classifier (raw ``[0, 1]`` images in, logits or log-probabilities out).
        plan: the attack plan (only its ``version`` matters here).
        norm, eps: threat model.
        device: where the attacks run.
        options: budget overrides (tests).
    """

    def __init__(self, model: nn.Module, plan: AttackPlan, *, norm: str, eps: float,
                 device: Union[str, torch.device], options: Optional[AttackOptions] = None) -> None:
        from pyautoattack import AutoAttack

        self.model, self.norm, self.eps = model, norm, eps
        self.options = check_options(options)
        attacked = float32_view(model)  # pyautoattack attacks float32 images
        self.guard = FiniteOutputGuard(attacked)
        self.autoattack = AutoAttack(self.guard, norm=norm, eps=eps, version=plan.version, device=device, seed=0)
        self.recorder = OutputRecorder(attacked)
        adaptive_ce, adaptive_t = _apgd_classes()
        apgd = self.autoattack.apgd
        common = dict(norm=norm, eps=eps, device=device, seed=0, rho=.75, eot_iter=apgd.eot_iter, n_iter=100,
                      use_largereps=apgd.use_largereps, logger=self.autoattack.logger)
        self.adaptive_ce = adaptive_ce(self.recorder, n_restarts=self.autoattack.apgd.n_restarts, **common)
        self.adaptive_t = adaptive_t(self.recorder, n_restarts=self.autoattack.apgd_targeted.n_restarts,
                                     n_target_classes=self.autoattack.apgd_targeted.n_target_classes,
                                     **common)
        nuts = is_mixednuts(model)
        for attack in (self.adaptive_ce, self.adaptive_t):
            attack.weight = DEFAULT_ADAPTIVE_WEIGHT  # the protocol's; options.adaptive_weight is an override
            attack.select_min_margin = nuts
        self._leaderboard_settings = self.attack_settings()  # before the overrides: the protocol's own budgets
        self._apply_options()
        self._stages: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
            "apgd-ce": lambda x, y: self._apgd(self.autoattack.apgd, "ce", x, y),
            "apgd-dlr": lambda x, y: self._apgd(self.autoattack.apgd, "dlr", x, y),
            "apgd-t": lambda x, y: self.autoattack.apgd_targeted.perturb(x, y),
            "fab": lambda x, y: self._fab(False, x, y),
            "fab-t": lambda x, y: self._fab(True, x, y),
            "square": lambda x, y: self.autoattack.square.perturb(x, y),
            "adaptive-apgd-ce": lambda x, y: self.adaptive_ce.perturb(x, y),
            "adaptive-apgd-t": lambda x, y: self.adaptive_t.perturb(x, y),
        }

    def check_classes(self, stages: Sequence[str], num_classes: int) -> None:
        """Refuse ``stages`` that cannot run on a model scoring ``num_classes`` classes, before any work.

        The DLR loss reads the third-largest score (``apgd-dlr``: at least 3 classes), the targeted DLR
        loss the fourth (``apgd-t``, ``adaptive-apgd-t``: at least 4), and the targeted attacks aim at the
        ``n_target_classes`` classes after the top one (at most ``num_classes - 1``); pyautoattack only
        warns about these and then fails with an ``IndexError`` in the middle of the run.

        Raises:
            robust_mix.validate.InvalidInputError: naming the stage, what it needs and how to run anyway.
        """
        aa = self.autoattack
        targets = {"apgd-t": aa.apgd_targeted.n_target_classes, "fab-t": aa.fab.n_target_classes,
                   "adaptive-apgd-t": self.adaptive_t.n_target_classes}
        for stage in stages:
            problem = class_count_problem(stage, num_classes, targets.get(stage))
            if problem is None:
                continue
            if num_classes < MIN_CLASSES.get(stage, 2):
                raise InvalidInputError(f"{problem}; leave {stage} out of the attack (e.g. "
                                        "attack='apgd-ce,fab,square')")
            raise InvalidInputError(
                f"{problem}; pass options=AttackOptions(n_target_classes={num_classes - 1}) (--n-target-classes "
                f"{num_classes - 1}: every other class, as the leaderboard's 9 are on 10-class data sets)")

    def check_iterations(self, stages: Sequence[str]) -> None:
        """Refuse an iteration budget (``options.n_iter``) too small for an APGD stage among ``stages``, before
        any work (:func:`robust_mix.protocol.iteration_problem`: under L1 pyautoattack runs APGD in rounds at 3, 2
        and 1 times eps).

        Raises:
            robust_mix.validate.InvalidInputError: naming the stage, the budget and the least it needs.
        """
        aa = self.autoattack
        apgds = {"apgd-ce": aa.apgd, "apgd-dlr": aa.apgd, "apgd-t": aa.apgd_targeted,
                 "adaptive-apgd-ce": self.adaptive_ce, "adaptive-apgd-t": self.adaptive_t}
        least = MIN_LARGEREPS_ITERATIONS
        for stage in stages:
            attack = apgds.get(stage)
            problem = attack and iteration_problem(stage, attack.n_iter_orig, attack.use_largereps, self.norm)
            if problem:
                raise InvalidInputError(f"{problem}; pass options=AttackOptions(n_iter={least}) or more "
                                        f"(--n-iter {least})")

    def budget_changes(self, stages: Sequence[str]) -> dict[str, object]:
        """The budget overrides (``options``) that change the budget of one of ``stages``: an override that no stage
        among them uses (``n_queries`` without Square), or that sets a budget to the value the protocol gives it
        (``n_target_classes=9`` on a 10-class model under Linf, ``n_iter=100``), changes nothing and is left out."""
        changed = {}
        for key, value in self.options.overrides(stages).items():
            groups = {SETTINGS_GROUP[stage] for stage in stages if stage in OPTION_STAGES[key]}
            setting = OPTION_SETTING.get(key, key)
            if any(self._leaderboard_settings[group].get(setting) != self.attack_settings()[group].get(setting)
                   for group in groups):
                changed[key] = value
        return changed

    def _apply_options(self) -> None:
        opts, aa = self.options, self.autoattack
        apgds = (aa.apgd, aa.apgd_targeted, self.adaptive_ce, self.adaptive_t)
        if opts.n_iter is not None:
            for attack in apgds:
                set_apgd_iterations(attack, opts.n_iter)
            aa.fab.n_iter = opts.n_iter
        if opts.n_restarts is not None:
            for attack in (aa.apgd, self.adaptive_ce):
                attack.n_restarts = opts.n_restarts
        if opts.n_target_classes is not None:
            for attack in (aa.apgd_targeted, self.adaptive_t, aa.fab):
                attack.n_target_classes = opts.n_target_classes
        if opts.n_queries is not None:
            aa.square.n_queries = opts.n_queries
        if opts.eot_iter is not None:
            for attack in (aa.apgd, self.adaptive_ce, self.adaptive_t):
                attack.eot_iter = opts.eot_iter
        for attack in (self.adaptive_ce, self.adaptive_t):
            attack.weight = opts.adaptive_weight

    def _apgd(self, attack: object, loss: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        attack.loss = loss
        return attack.perturb(x, y)

    def _fab(self, targeted: bool, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fab = self.autoattack.fab
        fab.targeted = targeted
        if targeted:
            fab.n_restarts = 1  # as AutoAttack does for FAB-T
        return fab.perturb(x, y)

    def run(self, stage: str, x: torch.Tensor, y: torch.Tensor, seed: int,
            examples: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Attack one batch ``x`` ``(B, C, H, W)``, ``y`` ``(B,)`` with ``stage``; returns ``x_adv`` (float32, as
        pyautoattack computes it, whatever the model's dtype).

        ``examples`` (the batch's example numbers) name the batch if the model returns NaN/inf or the stage
        returns invalid points.

        Raises:
            robust_mix.validate.InvalidAdversarialExampleError: the stage returned points outside the threat
                model (farther than ``eps`` from their clean images under ``norm``, or outside ``[0, 1]``),
                naming the stage, the examples and the largest perturbation against ``eps``.
        """
        if stage not in self._stages:
            raise ValueError(f"unknown attack stage {stage!r}; known: {list(self._stages)}")
        where = f" on examples {list(examples)[:8]}{' ...' if len(examples) > 8 else ''}" if examples is not None else ""
        self.guard.context = self.recorder.context = f"the {stage} attack{where}"
        threads.rebalance()  # another run may have started (or ended) since the last batch
        aa = self.autoattack
        for attack in (aa.apgd, aa.apgd_targeted, aa.fab, aa.square, self.adaptive_ce, self.adaptive_t):
            attack.seed = seed
        x = x.float()  # as pyautoattack attacks them (Square keeps the dtype given)
        with torch.no_grad(), frozen_parameters(self.model):  # input gradients only
            x_adv = self._stages[stage](x, y)
        return check_adversarial_examples(x_adv, x, self.norm, self.eps, f"the {stage} attack", examples)

    def attack_settings(self) -> dict[str, dict[str, object]]:
        """The constants each attack runs with, for the report (the labels of :mod:`robust_mix.formatting` read them).

        ``"adaptive"`` holds both adaptive stages' constants: ``n_restarts`` is the adaptive APGD-CE's (the
        targeted one restarts once per target, as APGD-T), ``eot_iter`` both stages'."""
        aa = self.autoattack
        return {
            "apgd": {"n_iter": aa.apgd.n_iter, "n_restarts": aa.apgd.n_restarts, "eot_iter": aa.apgd.eot_iter},
            "apgd-t": {"n_iter": aa.apgd_targeted.n_iter, "n_restarts": aa.apgd_targeted.n_restarts,
                       "n_target_classes": aa.apgd_targeted.n_target_classes},
            "fab": {"n_iter": aa.fab.n_iter, "n_restarts": aa.fab.n_restarts,
                    "n_target_classes": aa.fab.n_target_classes},
            "square": {"n_queries": aa.square.n_queries, "p_init": aa.square.p_init},
            # EOT and restarts are APGD's (EOT 20 under attack="rand", 5 restarts of the CE stage under L1)
            "adaptive": {"n_iter": self.adaptive_ce.n_iter, "n_restarts": self.adaptive_ce.n_restarts,
                         "eot_iter": self.adaptive_ce.eot_iter, "bce_weight": self.adaptive_ce.weight,
                         "n_target_classes": self.adaptive_t.n_target_classes,
                         "min_margin_selection": self.adaptive_ce.select_min_margin},
        }
