"""robust_mix.formatting: eps and percentages, and labels that say exactly what ran."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import pytest

from robust_mix.protocol import ADAPTIVE_STAGES, RAND_STAGES, STANDARD_STAGES
from robust_mix.formatting import (attack_label, evaluation_label, format_alpha, format_eps, interval_heading,
                                   is_standard_autoattack, partial_reasons, percent, percent_interval, percent_value,
                                   stage_label)
from robust_mix.stats import clopper_pearson

#: The settings StageRunner reports for the leaderboard's budgets (standard version).
FULL = {"apgd": {"n_iter": 100, "n_restarts": 1, "eot_iter": 1},
        "apgd-t": {"n_iter": 100, "n_restarts": 1, "n_target_classes": 9},
        "fab": {"n_iter": 100, "n_restarts": 5, "n_target_classes": 9},
        "square": {"n_queries": 5000, "p_init": 0.8},
        "adaptive": {"n_iter": 100, "bce_weight": 0.2, "n_target_classes": 9, "min_margin_selection": False}}


@dataclass
class Run:
    stages: list[str]
    attack_settings: Optional[dict[str, Any]] = field(default_factory=lambda: FULL)
    options: Optional[dict[str, Any]] = field(default_factory=dict)
    n_examples: int = 10_000
    dataset: str = "cifar10"


def test_eps_and_percentages():
    assert format_eps(8 / 255) == "8/255" and format_eps(4 / 255) == "4/255"
    assert format_eps(0.1) == "0.1" and format_eps(0.5) == "0.5" and format_eps(None) == "n/a"
    assert percent(0.8521) == "85.21" and percent(1.0) == "100.00" and percent(None) == "-"
    assert percent_value(0.41254) == 41.25


def test_l2_and_l1_budgets_are_numbers_not_fractions_of_255():
    """A distance budget is no pixel step: L2 eps 1 was written '255/255', L1 eps 12 '3060/255'."""
    assert format_eps(1.0, "L2") == "1" and format_eps(0.5, "L2") == "0.5" and format_eps(12.0, "L1") == "12"
    assert format_eps(8 / 255, "Linf") == "8/255" and format_eps(1.0, "Linf") == "255/255"
    assert format_eps(0.2, "L2") == "0.2" and format_eps(None, "L2") == "n/a"


def test_a_tiny_linf_budget_is_not_written_as_zero():
    """eps 1e-9 (within float tolerance of 0 steps of 1/255) was written '0/255' in tables and model_info.json."""
    assert format_eps(1e-9) == "1e-09" and format_eps(1e-9, "Linf") == "1e-09"
    assert format_eps(3e-9) != "0/255" and format_eps(1 / 255 + 1e-10) == "1/255"


def test_autoattack_names_only_the_full_standard_suite():
    full = Run(list(STANDARD_STAGES))
    assert attack_label(full) == "AutoAttack" and is_standard_autoattack(full)
    assert partial_reasons(full) == [] and evaluation_label(full) == "AutoAttack"
    adaptive = Run([*STANDARD_STAGES, *ADAPTIVE_STAGES])
    assert attack_label(adaptive) == ("AutoAttack + adaptive APGD-CE (100 iter) + "
                                      "adaptive APGD-T (100 iter, 9 targets)")


@pytest.mark.parametrize("run, label", [
    (Run(["apgd-ce"]), "APGD-CE (100 iter)"),
    (Run(["apgd-ce", "apgd-t"]), "APGD-CE (100 iter) + APGD-T (100 iter, 9 targets)"),
    (Run(list(RAND_STAGES), attack_settings={**FULL, "apgd": {"n_iter": 100, "n_restarts": 1, "eot_iter": 20}}),
     "APGD-CE (100 iter, EOT 20) + APGD-DLR (100 iter, EOT 20)"),
    (Run(list(STANDARD_STAGES), options={"n_iter": 5},
         attack_settings={**FULL, "apgd": {"n_iter": 5, "n_restarts": 1, "eot_iter": 1},
                          "apgd-t": {"n_iter": 5, "n_target_classes": 9}, "fab": {"n_iter": 5, "n_target_classes": 9}}),
     "APGD-CE (5 iter) + APGD-T (5 iter, 9 targets) + FAB-T (5 iter, 9 targets) + Square (5000 queries)"),
    (Run(list(STANDARD_STAGES), attack_settings=None, options=None), "APGD-CE + APGD-T + FAB-T + Square"),
])
def test_anything_else_is_named_by_stages_and_budgets(run, label):
    assert attack_label(run) == label and not is_standard_autoattack(run)
    assert evaluation_label(run).startswith(f"{label}, partial: ")


def test_partial_reasons_say_why():
    assert partial_reasons(Run(["apgd-ce"])) == [
        "not the standard AutoAttack suite (APGD-CE, APGD-T, FAB-T, Square)"]
    assert partial_reasons(Run(list(STANDARD_STAGES), options={"n_iter": 5})) == [
        "attack budgets changed from the protocol's (n_iter=5)"]
    assert partial_reasons(Run(list(STANDARD_STAGES), options=None)) == [
        "the report does not record the attack budgets"]
    assert partial_reasons(Run(list(STANDARD_STAGES), n_examples=50, dataset="fashion-mnist")) == [
        "50 of the leaderboard's 10,000 test examples"]
    assert partial_reasons(Run(list(STANDARD_STAGES), n_examples=5_000, dataset="imagenet")) == []
    assert partial_reasons(Run(list(STANDARD_STAGES), dataset="custom")) == ["data set 'custom' has no leaderboard"]
    assert evaluation_label(Run(list(STANDARD_STAGES), n_examples=1_000)) == (
        "AutoAttack, partial: 1,000 of the leaderboard's 10,000 test examples")


def test_stage_label_without_settings():
    assert stage_label("fab-t") == "FAB-T" and stage_label("square", FULL) == "Square (5000 queries)"


def test_a_fraction_short_of_all_or_above_none_never_prints_as_all_or_none():
    # 19,999 of 20,000 (99.995 %) is not "100.00"; 1 of 25,000 (0.004 %) is not "0.00"
    assert percent(19_999 / 20_000) == "99.99" and percent_value(19_999 / 20_000) == 99.99
    assert percent(1 / 25_000) == "0.01" and percent_value(1 / 25_000) == 0.01
    assert percent(-0.0) == "0.00" and percent(0.0) == "0.00" and percent(1.0) == "100.00"
    assert percent(0.5) == "50.00" and percent(0.8521) == "85.21"


def test_an_interval_that_is_not_a_point_never_prints_as_one():
    # 0 of 10,000: up to 0.037 %, not "0.0–0.0"; 10,000 of 10,000: from 99.963 %, not "100.0–100.0"
    assert percent_interval(clopper_pearson(0, 10_000)) == "0.0–0.1"
    assert percent_interval(clopper_pearson(10_000, 10_000)) == "99.9–100.0"
    assert percent_interval(clopper_pearson(0, 20)) == "0.0–16.8" and percent_interval((0.5812, 0.6590)) == "58.1–65.9"
    assert percent_interval((0.0, 1.0)) == "0.0–100.0"


def test_the_interval_heading_does_not_round_the_level_up():
    assert interval_heading(0.95) == "95 % interval" and interval_heading(0.999) == "99.9 % interval"
    assert interval_heading(0.9999999) == "99.99999 % interval"


def test_ratios_are_written_as_the_shortest_text_that_reads_back_as_them():
    """Two ratios that differ are never written alike (':g' wrote 0.1 and 0.10000000001 both as 0.1)."""
    assert [format_alpha(a) for a in (0.0, 1.0, 0.5, 0.1, 0.10000000001, 1 / 3, 1e-07, "policy")] == \
        ["0", "1", "0.5", "0.1", "0.10000000001", "0.3333333333333333", "1e-07", "policy"]
    assert all(float(format_alpha(a)) == a for a in (0.1, 0.1 + 0.2, 2 / 3, 0.7000000000000001))
