"""Confidence intervals for accuracies measured on a finite set of examples.

An accuracy of ``k`` correct out of ``n`` examples is a binomial proportion. Clopper-Pearson
intervals are exact (never narrower than the truth requires): they invert the binomial test with
beta quantiles, so they hold for any ``n`` and any ``k``, including ``0`` and ``n``.

>>> clopper_pearson(45, 50)            # 90 % measured on 50 examples
(0.7818..., 0.9667...)
"""
from __future__ import annotations

import math
import numbers
from typing import Union

import numpy as np
from scipy.special import betaincinv  # beta quantiles; scipy.stats costs twice the import time

ArrayLike = Union[int, float, np.ndarray]


def _as_counts(successes: ArrayLike) -> np.ndarray:
    """``successes`` as float64 counts; ``bool``, text, ``None`` and other non-numbers are refused by name
    (``np.asarray`` would silently read ``True`` as 1 and ``"3"`` as 3)."""
    array = np.asarray(successes)
    if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
        raise ValueError(f"successes must be whole numbers (counts), got {successes!r} "
                         f"({type(successes).__name__}{', dtype ' + str(array.dtype) if array.ndim else ''})")
    return array.astype(np.float64)


def _check_trials(trials: int) -> None:
    if isinstance(trials, (bool, np.bool_)) or not isinstance(trials, numbers.Integral) or trials <= 0:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")


def _check_counts(successes: np.ndarray, trials: int) -> None:
    _check_trials(trials)
    if np.any(successes < 0) or np.any(successes > trials) or np.any(successes != np.floor(successes)):
        raise ValueError(f"successes must be whole numbers in [0, {trials}], got {successes.tolist()}")


def _check_probability(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1 or math.isnan(value):
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")


def clopper_pearson_lower(successes: ArrayLike, trials: int, failure_prob: float) -> np.ndarray:
    """One-sided lower bound ``b`` with ``P[p < b] <= failure_prob`` (``0`` where no successes).

    ``successes``: a count or an array of counts out of ``trials`` -> float64 bounds of the same shape.
    """
    k = _as_counts(successes)
    _check_counts(k, trials)
    _check_probability(failure_prob, "failure_prob")
    with np.errstate(invalid="ignore"):
        bound = betaincinv(k, trials - k + 1, failure_prob)  # the Beta(k, n - k + 1) quantile
    return np.where(k == 0, 0.0, bound)


def clopper_pearson_upper(successes: ArrayLike, trials: int, failure_prob: float) -> np.ndarray:
    """One-sided upper bound ``b`` with ``P[p > b] <= failure_prob`` (``1`` where all succeed)."""
    k = _as_counts(successes)
    _check_trials(trials)
    return 1.0 - clopper_pearson_lower(trials - k, trials, failure_prob)


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval ``(low, high)`` for ``successes`` out of ``trials``.

    Both ends are fractions in ``[0, 1]``; each tail has probability at most ``(1 - level) / 2``.

    Raises:
        ValueError: ``trials`` is not a positive integer, ``successes`` is not one whole number in
            ``[0, trials]`` (a ``bool``, text or ``None`` is refused, not read as a count), or ``level``
            is not in ``(0, 1)``.
    """
    _check_probability(level, "level")
    if np.ndim(successes) != 0:
        raise ValueError(f"successes must be one count, got an array of shape {np.shape(successes)}; for one "
                         "bound per count use clopper_pearson_lower / clopper_pearson_upper")
    tail = (1.0 - level) / 2.0
    return (float(clopper_pearson_lower(successes, trials, tail)),
            float(clopper_pearson_upper(successes, trials, tail)))
