"""Confidence intervals (robust_mix.stats), checked against scipy's exact binomial intervals."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from robust_mix.stats import clopper_pearson, clopper_pearson_lower, clopper_pearson_upper


@pytest.mark.parametrize("k,n", [(0, 20), (1, 20), (13, 20), (20, 20), (628, 1000), (7, 10_000), (5000, 5000)])
@pytest.mark.parametrize("level", [0.95, 0.99, 0.5])
def test_two_sided_interval_is_scipys_exact_interval(k, n, level):
    expected = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    low, high = clopper_pearson(k, n, level)
    assert low == pytest.approx(expected.low, abs=1e-12) and high == pytest.approx(expected.high, abs=1e-12)
    assert 0 <= low <= k / n <= high <= 1


def test_interval_ends_at_zero_and_one_and_narrows_with_more_examples():
    assert clopper_pearson(0, 50)[0] == 0.0 and clopper_pearson(50, 50)[1] == 1.0
    small, large = clopper_pearson(45, 50), clopper_pearson(900, 1000)
    assert large[1] - large[0] < small[1] - small[0]


def test_one_sided_bounds_are_the_tails_of_the_interval():
    k = np.array([0, 3, 10])
    lower = clopper_pearson_lower(k, 10, 0.025)
    upper = clopper_pearson_upper(k, 10, 0.025)
    for i, ki in enumerate(k):
        low, high = clopper_pearson(int(ki), 10, 0.95)
        assert lower[i] == pytest.approx(low) and upper[i] == pytest.approx(high)
    assert lower[0] == 0.0 and upper[2] == 1.0


@pytest.mark.parametrize("args,match", [((11, 10), r"\[0, 10\]"), ((2.5, 10), "whole numbers"),
                                        ((1, 0), "positive integer"), ((1, 10, 1.0), "level")])
def test_bad_counts_name_the_value(args, match):
    with pytest.raises(ValueError, match=match):
        clopper_pearson(*args)


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 2), (1, 2), (2, 2)])
def test_one_example_and_the_edges_are_scipys_exact_interval(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert clopper_pearson(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_numpy_counts_and_whole_floats_give_the_same_interval():
    expected = clopper_pearson(3, 10)
    assert clopper_pearson(np.int64(3), np.int64(10)) == expected and clopper_pearson(3.0, 10) == expected
    assert clopper_pearson(np.array(3), 10) == expected and clopper_pearson(np.uint8(3), np.uint8(10)) == expected


@pytest.mark.parametrize("successes,match", [(True, "bool"), (np.bool_(False), "bool"), ("3", "str"),
                                             (None, "None"), (float("nan"), "nan"), (np.array([1, 2]), "one count")])
def test_counts_that_are_not_numbers_are_refused_by_name(successes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        clopper_pearson(successes, 10)


def test_one_sided_bounds_refuse_bool_arrays_and_bad_trials_clearly():
    with pytest.raises(ValueError, match="bool"):
        clopper_pearson_lower(np.array([True, False]), 10, 0.05)
    with pytest.raises(ValueError, match="trials must be a positive integer, got '10'"):
        clopper_pearson_upper(3, "10", 0.05)
