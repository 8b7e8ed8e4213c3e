"""Certified robustness of mixed classifiers (PAPER.md section 4).

The mixture ``f = (1 - a) * p_g + a * p_h`` inherits a certificate from its robust part alone:
nothing is assumed about the standard model ``g`` (it may put all its mass on the worst class).
For any class ``i != y`` and perturbation ``delta``,
``f_y - f_i >= -(1 - a) + a * (p_h,y(x + delta) - p_h,i(x + delta))``, so the prediction ``y`` is
certified as long as the robust part keeps a margin above ``(1 - a) / a``. Both forms below need
``a > 1/2``; both hold only for probability mixing (``mixing="prob"``).

**Lipschitz form.** If every component of ``p_h = softmax(s_h * h(x))`` is ``L``-Lipschitz in the
chosen norm and ``mu_h(x) = p_h,y - max_{i != y} p_h,i >= (1 - a) / a``, then ``f`` predicts ``y``
on the whole ball ``||delta|| <= r`` with ``r = (a * mu_h + a - 1) / (2 * a * L)``
(:func:`lipschitz_radius`). :func:`lipschitz_bound` computes ``L`` for plain
``nn.Sequential`` networks (see its docstring for the exact bound).

**Randomized-smoothing form.** The robust part is replaced by the Gaussian-smoothed hard
classifier ``h_i(x) = P[argmax h(x + N(0, sigma^2 I)) = i]`` and the certified object is
``(1 - a) * p_g + a * h``. ``Phi^-1(a * h_y)`` and ``Phi^-1(a * h_i + 1 - a)`` are both
``1/sigma``-Lipschitz in l2 (Gaussian smoothing of functions with values in ``[0, 1]``), which
gives the l2 radius ``r = sigma/2 * (Phi^-1(a * pA) - Phi^-1(a * pB + 1 - a))``
(:func:`smoothing_radius`). :func:`estimate_smoothed` estimates ``pA`` as in Cohen et al. (2019):
``n0`` selection samples pick the top class, ``n`` fresh samples give a one-sided Clopper-Pearson
lower bound ``pA_lower``; the runner-up is bounded by ``pB_upper = 1 - pA_lower`` (the
probabilities sum to one), so one event of probability ``>= 1 - failure_prob`` makes every
radius (for every ``a`` at once, since ``r`` increases with ``a``) sound. With that ``pB_upper``
the radius simplifies to ``sigma * Phi^-1(a * pA_lower)``, positive iff ``pA_lower > 1/(2a)``;
otherwise the example abstains.

**Per-example alpha.** Every function takes ``alpha`` as a float or a ``(B,)`` tensor. The
certificate for ratio ``a`` certifies the mixture whose ratio is at least ``a`` everywhere on the
ball (both radii grow with ``a``). For a fixed-ratio model that is exact. For an adaptive model,
``alpha="applied"`` uses ``a(x)``, the ratio applied to the clean input (``model(x,
return_alpha=True)``): it certifies the mixture with its ratio frozen at ``a(x)``, and the adaptive
model itself only where ``a`` does not drop below ``a(x)`` inside the ball. ``alpha="lower"`` uses
the ratio the policy can never go below (the lower end of its eval-time ``alpha_range``), which
certifies the adaptive model itself.
"""
from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from robust_mix import stats
from robust_mix.progress import show_bars
from robust_mix.mixing import MixedClassifier
from robust_mix.validate import (InvalidInputError, InvalidInputTypeError, check_bool, check_finite_outputs,
                                 check_images, check_labels, check_model, check_open_probability, evaluates_model,
                                 positive_float, positive_int)

logger = logging.getLogger(__name__)

AlphaLike = Union[float, torch.Tensor]
AlphaChoice = Union[float, torch.Tensor, Literal["applied", "lower"]]
Norm = Literal["l2", "linf"]
#: The norms a Lipschitz certificate measures its radii in (randomized smoothing's are l2).
NORMS: tuple[str, ...] = ("l2", "linf")

#: Lipschitz constant of each softmax component in the l2 norm of the logits: the gradient of
#: ``p_i`` is ``p_i (e_i - p)``, whose l2 norm is at most ``sqrt(2) p_i (1 - p_i) <= sqrt(2)/4``
#: (attained with two classes).
SOFTMAX_LIPSCHITZ = math.sqrt(2.0) / 4.0


# -- radius formulas ----------------------------------------------------------------------------
def _as_batch(value: AlphaLike, batch: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """A float or ``(B,)`` tensor as a ``(B,)`` float64 tensor on ``like``'s device."""
    if isinstance(value, torch.Tensor):
        out = value.detach().to(device=like.device, dtype=torch.float64).reshape(-1)
        if out.numel() == 1:
            out = out.expand(batch)
        if out.numel() != batch:
            raise ValueError(f"{name} must be a float or a ({batch},) tensor, got shape {tuple(value.shape)}")
        return out
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}")
    return torch.full((batch,), float(value), dtype=torch.float64, device=like.device)


def _check_alpha_values(alpha: torch.Tensor) -> None:
    if torch.isnan(alpha).any() or (alpha < 0).any() or (alpha > 1).any():
        raise ValueError("alpha must lie in [0, 1] (0 = standard model only, 1 = robust model only)")


def margin(probs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``probs[y] - max_{i != y} probs[i]`` per row: ``(B, K)`` -> ``(B,)``.

    ``labels=None`` uses each row's top class (the margin is then non-negative); given, they are ``(B,)`` class
    indices in ``[0, K)`` (:func:`robust_mix.validate.check_labels`: float labels were truncated, ``2.7`` read as 2).
    """
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (B, K) with K >= 2, got {tuple(probs.shape)}")
    labels = probs.argmax(dim=1) if labels is None else check_labels(labels, probs.shape[1], n=len(probs))
    labels = labels.to(probs.device).long().reshape(-1, 1)
    top = probs.gather(1, labels).squeeze(1)
    others = probs.scatter(1, labels, float("-inf"))
    return top - others.max(dim=1).values


#: What to pass instead of an unusable Lipschitz constant.
_LIPSCHITZ_FIX = ("pass the robust probabilities' Lipschitz constant in the certificate's norm, or None (the default) "
                  "for the library's bound (robust_probs_lipschitz, for Sequential robust bases)")


def check_lipschitz(lipschitz: AlphaLike) -> AlphaLike:
    """A Lipschitz constant a caller gave: a finite number ``> 0`` (as a ``float``), or a ``(B,)`` tensor of them.

    ``None`` means "use the library's bound" and is the caller's to resolve; ``0`` is no such value (a
    0-Lipschitz network is constant), nor is a negative, NaN or infinite one.

    Raises:
        robust_mix.validate.InvalidInputError: naming the value (and the examples, for a tensor) and what to pass.
    """
    if isinstance(lipschitz, torch.Tensor) and lipschitz.numel() != 1:
        values = lipschitz.detach().reshape(-1)
        bad = ~torch.isfinite(values) | (values <= 0)
        if bad.any():
            where = bad.nonzero().flatten().tolist()
            raise InvalidInputError(f"lipschitz must be a finite number > 0 for every example, got "
                                    f"{values[where[0]].item()!r} for examples {where[:8]}"
                                    f"{' ...' if len(where) > 8 else ''}; {_LIPSCHITZ_FIX}")
        return lipschitz
    try:
        return positive_float("lipschitz", lipschitz)
    except InvalidInputError as err:
        raise type(err)(f"{err}; {_LIPSCHITZ_FIX}") from None


def lipschitz_radius(robust_probs: torch.Tensor, labels: Optional[torch.Tensor], alpha: AlphaLike,
                     lipschitz: AlphaLike) -> torch.Tensor:
    """Certified radius of the mixture from the robust probabilities (Lipschitz form).

    ``r = (a * mu_h + a - 1) / (2 * a * L)`` where ``a >= 1/2`` and ``mu_h >= (1 - a)/a``; 0 elsewhere.

    Args:
        robust_probs: ``(B, K)`` robust probabilities ``softmax(s_h * h(x))``.
        labels: ``(B,)`` classes to certify, or ``None`` for the robust base's top class.
        alpha: mixing ratio, a float or ``(B,)``.
        lipschitz: ``L``, a Lipschitz constant of every component of ``p_h`` (float or ``(B,)``),
            in the norm the radius is wanted in; finite and positive (:func:`check_lipschitz`).

    Returns:
        ``(B,)`` float64 radii in the norm of ``L``, 0 where nothing is certified.
    """
    _check_probabilities("robust_probs", robust_probs)
    mu = margin(robust_probs.double(), labels)
    a = _as_batch(alpha, len(mu), mu, "alpha")
    lip = _as_batch(check_lipschitz(lipschitz), len(mu), mu, "lipschitz")
    _check_alpha_values(a)
    certified = (a >= 0.5) & (a * mu >= 1 - a)
    radius = (a * mu + a - 1) / (2 * a.clamp_min(1e-12) * lip)
    return torch.where(certified, radius.clamp_min(0.0), torch.zeros_like(radius))


def _check_probabilities(name: str, values: torch.Tensor) -> None:
    """Refuse NaN, infinite or out-of-range probabilities (a NaN margin or bound compared false everywhere, and
    the example silently 'abstained' instead of the model's fault being named)."""
    bad = ~((values >= 0) & (values <= 1))
    if bad.any():
        rows = (bad.reshape(len(values), -1).any(dim=1) if values.ndim > 1 else bad).nonzero().flatten().tolist()
        more = " ..." if len(rows) > 8 else ""
        raise InvalidInputError(f"{name} must be probabilities in [0, 1]; rows {rows[:8]}{more} hold NaN, infinite "
                                "or out-of-range values (a model that returned NaN logits?)")


def _normal_icdf(p: torch.Tensor) -> torch.Tensor:
    """``Phi^-1(p)``, accurate in both tails (``sqrt(2) * erfinv(2p - 1)`` rounded ``2p - 1`` to -1 below
    ``p`` ~ 1e-17: an infinite radius)."""
    return torch.special.ndtri(p)


def smoothing_radius(p_top_lower: torch.Tensor, alpha: AlphaLike, sigma: float,
                     p_runner_up_upper: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Certified l2 radius of the mixture with a Gaussian-smoothed robust part.

    ``r = sigma/2 * (PhiInv(a * pA) - PhiInv(a * pB + 1 - a))``, certified iff ``a * pA > a * pB + 1 - a``.

    Args:
        p_top_lower: ``(B,)`` lower bounds on the smoothed robust base's probability of the class
            being certified.
        alpha: mixing ratio, a float or ``(B,)``.
        sigma: noise level of the smoothing (l2, in raw image units).
        p_runner_up_upper: ``(B,)`` upper bounds on every other class's probability; default
            ``1 - p_top_lower``, which is sound because the probabilities sum to one.

    Returns:
        ``(B,)`` float64 radii, 0 where nothing is certified.
    """
    positive_float("sigma", sigma)
    p_a = torch.as_tensor(p_top_lower).double().reshape(-1)
    p_b = 1 - p_a if p_runner_up_upper is None else torch.as_tensor(p_runner_up_upper).double().reshape(-1).to(p_a.device)
    if p_b.shape != p_a.shape:
        raise ValueError(f"p_runner_up_upper must have shape {tuple(p_a.shape)}, got {tuple(p_b.shape)}")
    _check_probabilities("p_top_lower", p_a)
    _check_probabilities("p_runner_up_upper", p_b)
    a = _as_batch(alpha, len(p_a), p_a, "alpha")
    _check_alpha_values(a)
    top, runner_up = a * p_a, a * p_b + (1 - a)  # (a * p_b + 1) - a lost a tiny p_b to rounding
    certified = top > runner_up
    radius = sigma / 2 * (_normal_icdf(top) - _normal_icdf(runner_up.clamp(max=1.0)))
    return torch.where(certified, radius, torch.zeros_like(radius))


def certified_accuracy(radius: torch.Tensor, correct: torch.Tensor, radii: Sequence[float]) -> torch.Tensor:
    """Fraction of examples certified correct at each radius: ``(B,)``, ``(B,)`` -> ``(len(radii),)``.

    An example counts at radius ``R`` when its certificate is positive (``radius > 0``), for the
    true label (``correct``), and reaches ``R`` (``radius >= R``). At ``R = 0`` this is the share of
    correct, non-abstained predictions.
    """
    if correct.shape != radius.shape:
        raise InvalidInputError(f"certified_accuracy needs one correct flag per radius (both (B,)), got correct of "
                                f"shape {tuple(correct.shape)} for radii of shape {tuple(radius.shape)}; compare "
                                "predictions with labels of shape (B,), not (B, 1) or one-hot")
    radius = radius.reshape(-1).double()
    ok = correct.reshape(-1).to(radius.device).bool() & (radius > 0)
    if len(radius) == 0:
        raise ValueError("certified_accuracy needs at least one example")
    return torch.stack([(ok & (radius >= float(r))).double().mean() for r in radii])


# -- confidence bounds --------------------------------------------------------------------------
def clopper_pearson_lower(successes: torch.Tensor, trials: int, failure_prob: float) -> torch.Tensor:
    """One-sided Clopper-Pearson lower bound: ``P[p < bound] <= failure_prob`` for each entry.

    ``(B,)`` success counts out of ``trials`` -> ``(B,)`` float64 bounds (0 where no successes);
    the bound itself is :func:`robust_mix.stats.clopper_pearson_lower`.
    """
    bound = stats.clopper_pearson_lower(successes.detach().cpu().double().numpy(), trials, failure_prob)
    return torch.from_numpy(bound).to(successes.device)


def clopper_pearson_upper(successes: torch.Tensor, trials: int, failure_prob: float) -> torch.Tensor:
    """One-sided Clopper-Pearson upper bound: ``P[p > bound] <= failure_prob`` for each entry."""
    return 1 - clopper_pearson_lower(trials - successes, trials, failure_prob)


def _check_failure_prob(failure_prob: float) -> None:
    check_open_probability("failure_prob", failure_prob)


# -- Monte Carlo estimation of the smoothed robust base -----------------------------------------
@dataclass
class SmoothingEstimate:
    """Monte Carlo estimate of a Gaussian-smoothed classifier on a batch (all tensors ``(B,)``).

    Attributes:
        top_class: class picked with the ``n0`` selection samples.
        top_count: how many of the ``n`` estimation samples fell in ``top_class``.
        p_lower: Clopper-Pearson lower bound on ``top_class``'s probability (level ``1 - failure_prob``).
        n0, n, sigma, failure_prob: the settings used.
    """

    top_class: torch.Tensor
    top_count: torch.Tensor
    p_lower: torch.Tensor
    n0: int
    n: int
    sigma: float
    failure_prob: float

    def radius(self, alpha: AlphaLike) -> torch.Tensor:
        """``(B,)`` certified l2 radii of the mixture at ratio ``alpha`` (0 = abstain)."""
        return smoothing_radius(self.p_lower, alpha, self.sigma)

    def prediction(self, alpha: AlphaLike) -> torch.Tensor:
        """``(B,)`` certified class at ratio ``alpha``, ``-1`` where the mixture abstains."""
        return torch.where(self.radius(alpha) > 0, self.top_class, torch.full_like(self.top_class, -1))


@dataclass
class SmoothingProgress:
    """Where :func:`estimate_smoothed` stands, to resume it with the same samples (see its ``on_progress``).

    Attributes:
        phase: ``"selection"`` (the ``n0`` samples) or ``"estimation"`` (the ``n`` samples).
        next_start: the first example of ``phase`` not fully sampled.
        done: how many of its samples the group starting at ``next_start`` has drawn.
        counts: ``(B, K)`` counts of ``phase`` so far (the sampler's own tensor, updated in place as sampling goes
            on: save or copy it in the callback).
        selection: ``(B, K)`` selection counts once that phase is over, else ``None``.
        generator_state: the noise generator's state after the last sampled example.
    """

    phase: str
    next_start: int
    done: int
    counts: torch.Tensor
    selection: Optional[torch.Tensor]
    generator_state: torch.Tensor


def check_progress(progress: Any, n_examples: int, num_classes: int, n0: int, n: int, batch_size: int,
                   generator: torch.Generator) -> None:
    """Refuse a :class:`SmoothingProgress` to resume from (a state file, which may have been edited or damaged) whose
    numbers cannot be a run's with these settings: a phase, position or sample count out of range, counts of another
    shape or kind, negative, or not adding up to the samples drawn so far (``n0`` or ``n`` for each example before
    ``next_start``, ``done`` for its group, none after), or a generator state ``generator`` cannot take. Counts that
    do not add up would certify radii no sampling gave.

    Raises:
        robust_mix.validate.InvalidInputError: saying which number is wrong and why.
    """
    if not isinstance(progress, SmoothingProgress):
        raise InvalidInputTypeError(f"resume must be a SmoothingProgress (given to on_progress), got "
                                    f"{type(progress).__name__}")
    if progress.phase not in ("selection", "estimation"):
        raise InvalidInputError(f"its phase is {progress.phase!r}, not 'selection' or 'estimation'")
    drawn = n0 if progress.phase == "selection" else n
    group = max(1, min(n_examples, batch_size))
    start, done = progress.next_start, progress.done
    if not isinstance(start, int) or not 0 <= start <= n_examples or start % group:
        raise InvalidInputError(f"its next example {start!r} is not a multiple of the group size {group} in "
                                f"[0, {n_examples}]")
    if not isinstance(done, int) or not 0 <= done < drawn:
        raise InvalidInputError(f"its {progress.phase} samples drawn so far, {done!r}, are not in [0, {drawn})")
    expected = torch.zeros(n_examples, dtype=torch.int64)
    expected[:start], expected[start:start + group] = drawn, done
    tables = [(f"{progress.phase} counts", progress.counts, expected)]
    if progress.phase == "estimation":
        tables.append(("selection counts", progress.selection, torch.full((n_examples,), n0, dtype=torch.int64)))
    for what, counts, per_example in tables:
        if (not isinstance(counts, torch.Tensor) or counts.shape != (n_examples, num_classes)
                or counts.dtype.is_floating_point or counts.dtype.is_complex or counts.dtype == torch.bool):
            shown = (f"{tuple(counts.shape)} {str(counts.dtype).removeprefix('torch.')}"
                     if isinstance(counts, torch.Tensor) else type(counts).__name__)
            raise InvalidInputError(f"its {what} are {shown}, not ({n_examples}, {num_classes}) integers")
        wrong = ((counts < 0).any(dim=1) | (counts.sum(dim=1).cpu() != per_example)).nonzero().flatten().tolist()
        if wrong:
            raise InvalidInputError(f"its {what} of example(s) {wrong[:8]} are negative or do not add up to the "
                                    f"samples drawn for them ({per_example[wrong[0]].item()} for example {wrong[0]}, "
                                    f"got {counts[wrong[0]].tolist()})")
    probe = torch.Generator(device=generator.device)
    try:
        probe.set_state(progress.generator_state)
    except (RuntimeError, TypeError) as err:
        raise InvalidInputError(f"its noise generator state cannot be restored ({str(err).splitlines()[0]})") from None


@evaluates_model
def sample_counts(classifier: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n: int, sigma: float,
                  num_classes: int, *, batch_size: int = 1000, generator: Optional[torch.Generator] = None,
                  progress: bool = False, desc: str = "sampling", position: tuple[int, int] = (0, 0),
                  counts: Optional[torch.Tensor] = None,
                  on_step: Optional[Callable[[tuple[int, int], torch.Tensor], None]] = None) -> torch.Tensor:
    """Class counts of ``argmax classifier(x + N(0, sigma^2 I))`` over ``n`` draws per example.

    Args:
        classifier: maps ``(M, C, H, W)`` inputs to ``(M, K)`` logits; a module is run in eval mode (each of
            its modules is left in the mode it was in).
        x: ``(B, C, H, W)`` raw images in ``[0, 1]`` (:func:`robust_mix.validate.check_images`).
        batch_size: most noisy inputs per forward pass.
        generator: source of the noise (its device is where noise is drawn), for reproducibility.
        progress: show a tqdm bar counting noisy samples (not while ``$TQDM_DISABLE`` is set:
            :func:`robust_mix.progress.show_bars`).
        position, counts: resume at ``(start, done)`` (the group of examples from ``start`` has drawn ``done`` of
            its samples), as ``on_step`` reported it, with the counts reported with it.
        on_step: called after each forward pass as ``on_step((start, done), counts)``.

    Returns:
        ``(B, K)`` int64 counts, each row summing to ``n``.
    """
    positive_int("the number of samples", n)
    num_classes = positive_int("num_classes", num_classes)
    check_images(x)
    batch_size = positive_int("batch_size", batch_size)
    progress = check_bool("progress", progress)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidInputTypeError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or "
                                    f"None, got {generator!r} ({type(generator).__name__})")
    from tqdm.auto import tqdm

    batch = x.shape[0]
    group = max(1, min(batch, batch_size))
    first, first_done = position
    if first % group or not 0 <= first <= batch or not 0 <= first_done < n:
        raise ValueError(f"position must be (a multiple of the group size {group} in [0, {batch}], a number of "
                         f"samples in [0, {n})), got {position}")
    counts = (torch.zeros(batch, num_classes, dtype=torch.int64, device=x.device) if counts is None
              else counts.to(device=x.device, dtype=torch.int64).clone())
    per_example = max(1, batch_size // group)
    noise_device = generator.device if generator is not None else x.device
    with torch.no_grad(), tqdm(total=batch * n, initial=first * n + first_done * group, desc=desc, unit="sample",
                               disable=not show_bars(progress),
                               leave=False) as bar:
        for start in range(first, batch, group):
            xs = x[start:start + group]
            done = first_done if start == first else 0
            while done < n:
                k = min(per_example, n - done)
                noise = torch.randn((k, *xs.shape), generator=generator, device=noise_device)
                noisy = (xs.unsqueeze(0) + sigma * noise.to(xs.device, xs.dtype)).flatten(0, 1)
                logits = classifier(noisy)
                if logits.ndim != 2 or logits.shape[1] != num_classes:
                    raise InvalidInputError(f"the classifier returned shape {tuple(logits.shape)}, expected "
                                            f"({noisy.shape[0]}, {num_classes}): num_classes must be the number of "
                                            "classes it scores")
                check_finite_outputs(logits, "the classifier, on noisy copies of some inputs,",
                                     [start + j for _ in range(k) for j in range(len(xs))])
                votes = F.one_hot(logits.argmax(dim=1), num_classes).view(k, len(xs), num_classes)
                counts[start:start + len(xs)] += votes.sum(dim=0)
                done += k
                bar.update(k * len(xs))
                if on_step is not None:
                    on_step((start, done) if done < n else (start + len(xs), 0), counts)
    return counts


@evaluates_model
def estimate_smoothed(classifier: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, sigma: float,
                      num_classes: int, n0: int = 100, n: int = 10_000, failure_prob: float = 0.001,
                      batch_size: int = 1000, generator: Optional[torch.Generator] = None,
                      progress: bool = False, resume: Optional[SmoothingProgress] = None,
                      on_progress: Optional[Callable[[SmoothingProgress], None]] = None) -> SmoothingEstimate:
    """Select the top class with ``n0`` samples, then lower-bound its probability with ``n`` fresh ones.

    Cohen et al. (2019)'s CERTIFY, vectorised over the batch: ``x`` is ``(B, C, H, W)``; the
    bound holds per example with probability at least ``1 - failure_prob``.

    ``on_progress`` receives a :class:`SmoothingProgress` after each forward pass (it needs a
    ``generator``); passing the last one back as ``resume`` (same inputs and settings) continues the run and
    gives the same estimate as an uninterrupted one.
    """
    _check_failure_prob(failure_prob)
    positive_float("sigma", sigma)
    positive_int("n0", n0)
    positive_int("n", n)
    check_images(x)
    if (resume is not None or on_progress is not None) and not isinstance(generator, torch.Generator):
        raise InvalidInputTypeError("resuming (resume=, on_progress=) needs a generator, e.g. "
                                    "torch.Generator().manual_seed(0)")
    kwargs = dict(batch_size=batch_size, generator=generator, progress=progress)

    def report(phase: str, selected: Optional[torch.Tensor]) -> Optional[Callable[[tuple[int, int], torch.Tensor],
                                                                               None]]:
        if on_progress is None:
            return None
        return lambda at, counts: on_progress(SmoothingProgress(phase, at[0], at[1], counts, selected,
                                                                generator.get_state()))

    if resume is not None:
        try:
            check_progress(resume, len(x), num_classes, n0, n, batch_size, generator)
        except InvalidInputError as err:
            raise type(err)(f"resume= cannot be continued from: {err}; pass the last SmoothingProgress on_progress "
                            "received with the same inputs and settings, or start over (resume=None)") from None
        generator.set_state(resume.generator_state)
    if resume is None or resume.phase == "selection":
        at, partial = ((0, 0), None) if resume is None else ((resume.next_start, resume.done), resume.counts)
        selection = sample_counts(classifier, x, n0, sigma, num_classes, desc="selection", position=at,
                                  counts=partial, on_step=report("selection", None), **kwargs)
        at, partial = (0, 0), None
    else:
        selection, at, partial = resume.selection.to(x.device), (resume.next_start, resume.done), resume.counts
    top_class = selection.argmax(dim=1)
    estimation = sample_counts(classifier, x, n, sigma, num_classes, desc="estimation", position=at,
                               counts=partial, on_step=report("estimation", selection), **kwargs)
    top_count = estimation.gather(1, top_class.unsqueeze(1)).squeeze(1)
    p_lower = clopper_pearson_lower(top_count, n, failure_prob)
    return SmoothingEstimate(top_class, top_count, p_lower, n0, n, float(sigma), failure_prob)


# -- Lipschitz bounds for simple architectures --------------------------------------------------
def _overlap(kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> int:
    """Most sliding windows that can contain one input position."""
    return math.prod(math.ceil(k / s) if d == 1 else k for k, s, d in zip(kernel, stride, dilation))


def _tuple(value: Union[int, Sequence[int]], dims: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def _conv_bound(conv: nn.modules.conv._ConvNd) -> float:
    """l2 operator-norm bound of a convolution: the smaller of two sound bounds.

    (a) im2col: each output position is ``W_flat @ patch`` and an input position lies in at most
    ``overlap`` patches, so ``||conv|| <= ||W_flat||_2 * sqrt(overlap)``; (b) the convolution is a
    sum over kernel offsets of a shift (non-expansive with zero or circular padding) followed by
    a per-position matrix, so ``||conv|| <= sum_offsets ||W[:, :, offset]||_2``. Groups make the
    map block-diagonal: the bound is the largest over groups.
    """
    if conv.transposed:
        raise ValueError("transposed convolutions are not supported by lipschitz_bound; pass lipschitz=")
    if conv.padding_mode not in ("zeros", "circular"):
        raise ValueError(f"padding_mode {conv.padding_mode!r} can repeat input pixels; only 'zeros' and "
                         "'circular' are supported by lipschitz_bound (pass lipschitz= yourself)")
    weight = conv.weight.detach().double()
    dims = weight.ndim - 2
    groups = weight.view(conv.groups, weight.shape[0] // conv.groups, *weight.shape[1:])
    flat = torch.linalg.matrix_norm(groups.flatten(2), ord=2).max().item()
    im2col = flat * math.sqrt(_overlap(weight.shape[2:], _tuple(conv.stride, dims), _tuple(conv.dilation, dims)))
    per_offset = groups.flatten(3).permute(3, 0, 1, 2)  # (offsets, groups, out, in)
    shifts = torch.linalg.matrix_norm(per_offset, ord=2).max(dim=1).values.sum().item()
    return min(im2col, shifts)


def _batchnorm_bound(bn: nn.modules.batchnorm._BatchNorm) -> float:
    if bn.training or bn.running_var is None:
        raise ValueError("BatchNorm layers must be in eval mode with running statistics for lipschitz_bound")
    scale = 1 / torch.sqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    return scale.abs().max().item()


def _max_pool_bound(pool: nn.Module) -> float:
    dims = 1 if isinstance(pool, nn.MaxPool1d) else 2 if isinstance(pool, nn.MaxPool2d) else 3
    kernel = _tuple(pool.kernel_size, dims)
    stride = _tuple(pool.stride or pool.kernel_size, dims)
    return math.sqrt(_overlap(kernel, stride, _tuple(pool.dilation, dims)))


def _avg_pool_bound(pool: nn.Module) -> float:
    dims = 1 if isinstance(pool, nn.AvgPool1d) else 2 if isinstance(pool, nn.AvgPool2d) else 3
    kernel = _tuple(pool.kernel_size, dims)
    stride = _tuple(pool.stride or pool.kernel_size, dims)
    overlap = _overlap(kernel, stride, (1,) * dims)
    exact_divisor = (getattr(pool, "count_include_pad", True) and not pool.ceil_mode
                     and getattr(pool, "divisor_override", None) is None)
    # each output is a mean of m inputs, |mean| <= ||window|| / sqrt(m); m = kernel size unless
    # windows can be clipped (then m >= 1 is all we know)
    return math.sqrt(overlap / (math.prod(kernel) if exact_divisor else 1))


def _adaptive_avg_bound(pool: nn.Module) -> float:
    size = pool.output_size
    sizes = size if isinstance(size, (tuple, list)) else (size,)
    if any(s != 1 for s in sizes):
        raise ValueError("only global adaptive average pooling (output size 1) is supported by lipschitz_bound")
    return 1.0  # a global mean over m positions is 1/sqrt(m)-Lipschitz, at most 1


def _leaky_bound(m: nn.Module) -> float:
    return max(1.0, abs(m.negative_slope))


def _elu_bound(m: nn.Module) -> float:
    return max(1.0, abs(m.alpha))


def _dropout_bound(m: nn.Module) -> float:
    return 1.0 / (1.0 - m.p) if m.training and m.p < 1 else 1.0  # identity in eval mode


#: l2 Lipschitz bound of each supported layer type. Activations here are 1-Lipschitz except where
#: noted (sigmoid 1/4; GELU and SiLU are not 1-Lipschitz: max |d/dx| ~ 1.129 and ~ 1.100).
_LAYER_BOUNDS: dict[type, Callable[[nn.Module], float]] = {
    nn.Linear: lambda m: torch.linalg.matrix_norm(m.weight.detach().double(), ord=2).item(),
    nn.Conv1d: _conv_bound, nn.Conv2d: _conv_bound, nn.Conv3d: _conv_bound,
    nn.BatchNorm1d: _batchnorm_bound, nn.BatchNorm2d: _batchnorm_bound, nn.BatchNorm3d: _batchnorm_bound,
    nn.MaxPool1d: _max_pool_bound, nn.MaxPool2d: _max_pool_bound, nn.MaxPool3d: _max_pool_bound,
    nn.AvgPool1d: _avg_pool_bound, nn.AvgPool2d: _avg_pool_bound, nn.AvgPool3d: _avg_pool_bound,
    nn.AdaptiveAvgPool1d: _adaptive_avg_bound, nn.AdaptiveAvgPool2d: _adaptive_avg_bound,
    nn.AdaptiveAvgPool3d: _adaptive_avg_bound,
    nn.ReLU: lambda m: 1.0, nn.ReLU6: lambda m: 1.0, nn.Tanh: lambda m: 1.0, nn.Hardtanh: lambda m: 1.0,
    nn.Softplus: lambda m: 1.0, nn.Sigmoid: lambda m: 0.25, nn.LeakyReLU: _leaky_bound, nn.ELU: _elu_bound,
    nn.GELU: lambda m: 1.13, nn.SiLU: lambda m: 1.1,
    nn.Flatten: lambda m: 1.0, nn.Unflatten: lambda m: 1.0, nn.Identity: lambda m: 1.0,
    nn.Dropout: _dropout_bound, nn.Dropout1d: _dropout_bound, nn.Dropout2d: _dropout_bound,
}


def lipschitz_bound(network: nn.Module) -> float:
    """An upper bound on the l2 Lipschitz constant of a feed-forward network's logits.

    The bound is the product of per-layer bounds over an ``nn.Sequential`` (nested Sequentials
    allowed): exact spectral norms for ``Linear``, the sound convolution bound of
    :func:`_conv_bound` for ``Conv1d/2d/3d``, ``max |gamma / sqrt(var + eps)|`` for eval-mode
    BatchNorm, ``sqrt(overlap)`` for max pooling, ``sqrt(overlap / window)`` for average pooling,
    and each activation's own constant (1 for ReLU/Tanh/..., 1/4 for Sigmoid); eval-mode Dropout
    is the identity. Layer types must match exactly (subclasses may change ``forward``).

    Raises:
        ValueError: a layer type is not supported (residual blocks, attention, normalisation by
            the input's own statistics...); pass a known constant instead.
    """
    # exact types only: a subclass may change forward (e.g. weight-standardised convolutions)
    if isinstance(network, nn.Sequential) and type(network).forward is nn.Sequential.forward:
        return math.prod(lipschitz_bound(layer) for layer in network)
    if type(network) in _LAYER_BOUNDS:
        return float(_LAYER_BOUNDS[type(network)](network))
    raise ValueError(f"lipschitz_bound cannot bound {type(network).__name__}: it supports nn.Sequential "
                     f"stacks of {sorted(t.__name__ for t in _LAYER_BOUNDS)}; pass lipschitz=<constant> "
                     "for other architectures")


#: The norms a certificate's radius is measured in (lower case: the harness's ``"L2"``/``"Linf"`` name threat models).
NORMS = ("l2", "linf")


def check_norm(norm: Any) -> Norm:
    """``norm`` when it is one of :data:`NORMS`.

    Raises:
        robust_mix.validate.InvalidInputError: anything else, naming the spelling meant for the harness's
            ``"L2"``/``"Linf"`` (a Lipschitz constant given with ``norm="foo"`` was recorded under that name).
    """
    if isinstance(norm, str) and norm in NORMS:
        return norm  # type: ignore[return-value]
    meant = {"l2": "l2", "linf": "linf", "l-inf": "linf", "l_inf": "linf", "inf": "linf"}.get(
        norm.strip().lower() if isinstance(norm, str) else None)
    hint = f" (certificates write norms in lower case: did you mean {meant!r}?)" if meant else ""
    raise InvalidInputError(f"norm must be one of {list(NORMS)}, got {norm!r}{hint}")


def robust_probs_lipschitz(model: MixedClassifier, input_shape: Sequence[int], norm: Norm = "l2") -> float:
    """Lipschitz constant ``L`` of every component of ``softmax(s_h * h(adapter(x)))`` in raw image space.

    ``L = sqrt(2)/4 * s_h * (1 / min std of the input normalisation) * lipschitz_bound(h)`` in l2; in
    linf, times ``sqrt(d)`` with ``d = prod(input_shape)`` (since ``||v||_2 <= sqrt(d) ||v||_inf``).

    Args:
        model: a mixed classifier whose robust base is an ``nn.Sequential`` (see :func:`lipschitz_bound`).
        input_shape: ``(C, H, W)`` of one raw image.
        norm: ``"l2"`` or ``"linf"``, the norm the radius is measured in.
    """
    norm = check_norm(norm)
    contract = model.robust_input.config
    if contract.input_size is not None and tuple(contract.input_size) != tuple(input_shape[-2:]):
        raise ValueError(f"the robust base resizes its input to {contract.input_size}; interpolation is not "
                         "bounded by robust_probs_lipschitz, pass lipschitz=<constant>")
    normalisation = 1.0 if contract.std is None else 1.0 / min(contract.std)
    bound = SOFTMAX_LIPSCHITZ * model.rob_scale * normalisation * lipschitz_bound(model.robust)
    return bound * (math.sqrt(math.prod(input_shape)) if norm == "linf" else 1.0)


# -- model-level certification ------------------------------------------------------------------
@dataclass
class Certificate:
    """Certified predictions of a mixed classifier on a batch (all tensors ``(B,)``).

    Attributes:
        prediction: the certified class, ``-1`` where nothing is certified (abstain).
        radius: the certified radius, 0 where nothing is certified.
        alpha: the ratio the certificate used.
        norm: the norm of the radius.
    """

    prediction: torch.Tensor
    radius: torch.Tensor
    alpha: torch.Tensor
    norm: str

    def certified_accuracy(self, labels: torch.Tensor, radii: Sequence[float]) -> torch.Tensor:
        """``(len(radii),)`` share of examples certified with the right label at each radius; ``labels`` are the
        ``(B,)`` class indices of the certified images (:func:`robust_mix.validate.check_labels`)."""
        labels = check_labels(labels, n=len(self.prediction))
        return certified_accuracy(self.radius, self.prediction == labels.to(self.prediction.device), radii)


def alpha_lower_bound(model: MixedClassifier) -> float:
    """The smallest ratio ``model`` can apply to any input (its fixed alpha, or the policy's range start)."""
    return model.policy.lowest_alpha if model.is_adaptive else float(model.alpha)


def resolve_alpha(model: MixedClassifier, x: torch.Tensor, alpha: AlphaChoice) -> torch.Tensor:
    """The ``(B,)`` ratio a certificate uses: a given float/tensor, ``"applied"`` or ``"lower"`` (see module doc)."""
    if alpha == "applied" and model.is_adaptive:
        with torch.no_grad():
            _, applied = model(x, return_alpha=True)
        return applied.detach().double()
    if isinstance(alpha, str):
        if alpha not in ("applied", "lower"):
            raise ValueError(f"alpha must be a number, a (B,) tensor, 'applied' or 'lower', got {alpha!r}")
        # a fixed ratio is exact here, not the float32 copy a forward pass returns
        alpha = alpha_lower_bound(model)
    out = _as_batch(alpha, x.shape[0], x, "alpha")
    _check_alpha_values(out)
    return out


def check_probability_mixing(model: MixedClassifier) -> None:
    """Refuse models the theorem does not cover: anything but a :class:`MixedClassifier` (a registry name, a plain
    classifier), logit mixing, or a robust output map (MixedNUTS)."""
    if not isinstance(model, MixedClassifier):
        check_model(model)  # a name or a function: refused, saying how to build a model
        raise InvalidInputTypeError(f"certificates are computed for a MixedClassifier (they bound its robust part), "
                                    f"got {type(model).__name__}; mix it with a robust base: "
                                    "robust_mix.MixedClassifier(standard, robust, alpha=...), or load an entry with "
                                    "robust_mix.load_model(NAME)")
    if model.mixing != "prob":
        raise ValueError(f"certificates hold for probability mixing only; this model uses mixing={model.mixing!r}")
    if model.robust_map is not None:
        raise ValueError("the robust part of this model is a nonlinear output map (MixedNUTS), whose Lipschitz "
                         "constant and smoothed form are not those of softmax(s_h * h); no certificate is computed")


def robust_probabilities(model: MixedClassifier, x: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` robust part ``softmax(s_h * h(x))`` of the mixture for raw images ``x``, in float64.

    A certificate's margin is a difference of probabilities near 1: float32's rounding (``p = 1`` for logits 20
    apart) overstated it, and with it the radius."""
    with torch.no_grad():
        logits = model.robust(model.robust_input(x))
    check_finite_outputs(logits, "the robust base", range(len(x)))
    return F.softmax(logits.double() * model.rob_scale, dim=1)


@evaluates_model
def certify_lipschitz(model: MixedClassifier, x: torch.Tensor, labels: Optional[torch.Tensor] = None, *,
                      alpha: AlphaChoice = "applied", lipschitz: Optional[AlphaLike] = None,
                      norm: Norm = "l2") -> Certificate:
    """Lipschitz-form certificates of ``model`` on raw images ``x`` ``(B, C, H, W)``.

    Args:
        labels: ``(B,)`` classes to certify; ``None`` certifies the robust base's top class
            (which is then the mixture's prediction wherever a certificate exists).
        alpha: see the module docstring.
        lipschitz: ``L`` of the robust probabilities in ``norm``, finite and positive; ``None`` (the default):
            :func:`robust_probs_lipschitz` (Sequential robust bases only).
        norm: the norm of ``lipschitz`` and of the radius.

    Raises:
        robust_mix.validate.InvalidInputError: ``lipschitz`` is 0, negative, NaN or infinite (:func:`check_lipschitz`).
    """
    norm = check_norm(norm)
    check_probability_mixing(model)
    check_images(x, model.input_shape, dtype=model.dtype, device=model.device)
    if labels is not None:
        labels = check_labels(labels, model.num_classes, n=len(x))
    if lipschitz is not None:
        lipschitz = check_lipschitz(lipschitz)
    else:
        lipschitz = robust_probs_lipschitz(model, x.shape[1:], norm)
        logger.info("robust probabilities are %.4g-Lipschitz (%s)", lipschitz, norm)
    probs = robust_probabilities(model, x)
    target = probs.argmax(dim=1) if labels is None else labels.to(probs.device).long()
    a = resolve_alpha(model, x, alpha)
    radius = lipschitz_radius(probs, target, a, lipschitz)
    prediction = torch.where(radius > 0, target, torch.full_like(target, -1))
    return Certificate(prediction, radius, a, norm)


@evaluates_model
def certify_smoothing(model: MixedClassifier, x: torch.Tensor, *, sigma: float, n0: int = 100,
                      n: int = 10_000, failure_prob: float = 0.001, alpha: AlphaChoice = "applied",
                      batch_size: int = 1000, generator: Optional[torch.Generator] = None,
                      progress: bool = False) -> Certificate:
    """Randomized-smoothing certificates (l2) of the mixture with a Gaussian-smoothed robust base.

    Noise is added to the raw images, before the robust base's input adapter, so radii are in
    raw image units. Each certificate holds with probability at least ``1 - failure_prob``.
    """
    check_probability_mixing(model)
    check_images(x, model.input_shape, dtype=model.dtype, device=model.device)
    estimate = estimate_smoothed(lambda z: model.robust(model.robust_input(z)), x, sigma=sigma,
                                 num_classes=_num_classes(model, x), n0=n0, n=n, failure_prob=failure_prob,
                                 batch_size=batch_size, generator=generator, progress=progress)
    a = resolve_alpha(model, x, alpha)
    return Certificate(estimate.prediction(a), estimate.radius(a), a, "l2")


def _num_classes(model: MixedClassifier, x: torch.Tensor) -> int:
    if model.num_classes is not None:
        return model.num_classes
    with torch.no_grad():
        return model.robust(model.robust_input(x[:1])).shape[1]
