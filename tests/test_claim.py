"""benchmarks/fmnist/claim.py: the frontier's choice of ratios and the four checks of the claim."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from robust_mix.benchmark import BenchmarkResult

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fmnist" / "claim.py"


@pytest.fixture(scope="module")
def claim():
    spec = importlib.util.spec_from_file_location("fmnist_claim", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(clean: float, robust: float, autoattack: float | None = None,
           adaptive: float | None = None) -> BenchmarkResult:
    suites = {"autoattack": robust if autoattack is None else autoattack}
    if adaptive is not None:
        suites["adaptive"] = adaptive
    return BenchmarkResult(model="m", dataset="fashion-mnist", threat_model="Linf", eps=0.1, n_examples=100,
                           attack="standard", seed=0, clean_accuracy=clean, robust_accuracy=robust,
                           suite_accuracy=suites, stage_accuracy={}, clean_flags=[], robust_flags=[],
                           suite_flags={}, wall_time_s=1.0, examples_per_second=100.0, number_forward_passes=2)


def test_frontier_takes_the_most_robust_ratio_as_accurate_and_the_next(claim):
    clean = {0.0: 0.90, 0.5: 0.88, 0.7: 0.86, 0.8: 0.84, 0.9: 0.82, 1.0: 0.78}
    assert claim.frontier_alphas(clean, 0.85) == [0.7, 0.8]
    assert claim.frontier_alphas(clean, 0.78) == [1.0]
    assert claim.frontier_alphas(clean, 0.95) == [0.0]


def test_checks_compute_recovered_kept_gap_and_domination(claim):
    reports = {"standard": result(0.90, 0.0), "robust": result(0.80, 0.60), "mixednuts": None,
               "adaptive": result(0.87, 0.565, autoattack=0.58, adaptive=0.57)}
    frontier = {"robust": {"0.7": 0.45, "0.8": 0.52}, "robust_clean": {"0.7": 0.88, "0.8": 0.86}}
    verdict = claim.checks(reports, frontier)
    assert verdict["recovered"]["value"] == pytest.approx(0.7) and verdict["recovered"]["pass"]
    assert verdict["kept"]["value"] == pytest.approx(0.58 / 0.60) and verdict["kept"]["pass"]
    assert verdict["adaptive_attack"]["value"] == pytest.approx(0.015) and not verdict["adaptive_attack"]["pass"]
    assert verdict["frontier"] == {"value": [], "pass": True}
    frontier["robust"]["0.7"] = 0.60  # a fixed ratio as accurate and as robust: the claim fails
    assert claim.checks(reports, frontier)["frontier"] == {"value": ["0.7"], "pass": False}


def test_checks_leave_out_what_is_not_measured(claim):
    reports = {"standard": result(0.90, 0.0), "robust": None, "mixednuts": None, "adaptive": result(0.87, 0.5)}
    assert claim.checks(reports, {}) == {}
