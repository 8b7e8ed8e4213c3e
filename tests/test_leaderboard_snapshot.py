"""The shipped RobustBench snapshot (robust_mix.leaderboard.snapshot)."""
from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from robust_mix.leaderboard.snapshot import load_snapshot

BAI_ENTRIES = {("cifar10", "Bai2023Improving_edm"), ("cifar10", "Bai2024MixedNUTS"),
               ("cifar100", "Bai2023Improving_edm"), ("cifar100", "Bai2023Improving_trades"),
               ("cifar100", "Bai2024MixedNUTS"), ("imagenet", "Bai2024MixedNUTS")}


def test_snapshot_names_its_source_and_covers_the_three_linf_boards():
    snap = load_snapshot()
    assert snap.repository == "https://github.com/RobustBench/robustbench"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", snap.read_on) and "model_info" in snap.path
    assert snap.datasets() == ["cifar10", "cifar100", "imagenet"]
    for dataset, eps in (("cifar10", 8 / 255), ("cifar100", 8 / 255), ("imagenet", 4 / 255)):
        assert len(snap.board(dataset, "Linf", eps)) >= 20
    present = {(e.dataset, e.name) for e in snap.entries}
    assert BAI_ENTRIES <= present
    assert all(re.fullmatch(r"[0-9a-f]{40}", e.commit) for e in snap.entries)
    assert len(present) == len(snap.entries)  # one row per model-info file


def test_entries_are_the_model_info_fields_as_percentages():
    snap = load_snapshot()
    for e in snap.entries:
        assert 0 <= e.robust_acc <= e.autoattack_acc <= e.clean_acc <= 100
        assert e.number_forward_passes >= 1 and e.eps in ("8/255", "4/255", "0.031")
    nuts = next(e for e in snap.entries if (e.dataset, e.name) == ("cifar10", "Bai2024MixedNUTS"))
    assert (nuts.clean_acc, nuts.autoattack_acc, nuts.external) == (95.19, 70.08, 69.71)
    assert nuts.robust_acc == 69.71  # RobustBench ranks by the external (lower) evaluation when listed
    assert nuts.source_url(snap.repository).endswith(f"{nuts.commit}/model_info/cifar10/Linf/Bai2024MixedNUTS.json")


def test_board_ranks_as_robustbench_does_and_keeps_the_0031_entries():
    board = load_snapshot().board("cifar10", "Linf", 8 / 255)
    keys = [e.robust_acc for e in board]
    assert keys == sorted(keys, reverse=True)
    assert any(e.eps == "0.031" for e in board)  # listed on the 8/255 board with a footnote
    assert load_snapshot().board("cifar10", "L2", 0.5) == []
    assert load_snapshot().board("fashion-mnist", "Linf", 0.1) == []


def test_snapshot_file_is_package_data_with_the_recorded_fields():
    data = json.loads(resources.files("robust_mix.leaderboard").joinpath("data", "robustbench_linf.json").read_text())
    assert set(data) == {"source", "fields", "skipped", "entries"}
    for row in data["entries"]:
        assert set(row) <= set(data["fields"])
        float(row["clean_acc"]), float(row["autoattack_acc"])
    assert all(s["reason"] for s in data["skipped"])


@pytest.mark.parametrize("dataset", ["CIFAR10", "cifar10"])
def test_board_accepts_any_case(dataset):
    assert load_snapshot().board(dataset, "Linf", 8 / 255)
