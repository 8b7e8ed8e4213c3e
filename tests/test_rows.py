"""Benchmark rows (robust_mix.rows): worker processes give exactly the sequential results."""
from __future__ import annotations

import functools
from collections import defaultdict

import pytest
import torch

import robust_mix
from robust_mix.rows import BenchmarkRow, run_rows
from test_benchmark import FAST

torch.set_num_threads(1)


class Recorder:
    def __init__(self) -> None:
        self.started, self.done, self.finished = {}, defaultdict(int), []

    def start(self, row, stages, total):
        self.started[row] = (list(stages), total)

    def advance(self, row, stage, n):
        self.done[row] += n

    def finish(self, row):
        self.finished.append(row)


def _rows(folder):
    # on the first 8 test images the robust base and the adaptive model miss one the standard base gets right
    settings = dict(n_examples=8, batch_size=8, attack="apgd-ce,apgd-t", options=FAST, device="cpu")
    entries = [("robust base", "fmnist-robust", {}), ("standard base", "fmnist-standard", {}),
               ("adaptive", "fmnist-adasmooth", {})]
    return [BenchmarkRow(label, functools.partial(robust_mix.load_model, name, **overrides),
                         {**settings, "state_dir": folder / label / "state"}, report_dir=folder / label)
            for label, name, overrides in entries]


@pytest.mark.slow  # spawns two worker processes
def test_rows_in_worker_processes_match_the_sequential_run(tmp_path):
    sequential, parallel = Recorder(), Recorder()
    one = run_rows(_rows(tmp_path / "one"), workers=1, progress=sequential)
    two = run_rows(_rows(tmp_path / "two"), workers=2, threads_per_worker=1, progress=parallel,
                   start_order=[2, 1, 0])
    for a, b in zip(one, two):
        assert (a.clean_flags, a.suite_flags, a.robust_flags, a.stage_accuracy) == \
               (b.clean_flags, b.suite_flags, b.robust_flags, b.stage_accuracy)
    assert [r.clean_accuracy for r in one] != [one[0].clean_accuracy] * 3  # the rows are different models
    for recorder in (sequential, parallel):
        assert recorder.started == {i: (["clean", "apgd-ce", "apgd-t"], 8) for i in range(3)}
        assert dict(recorder.done) == {i: 24 for i in range(3)} and sorted(recorder.finished) == [0, 1, 2]
    assert (tmp_path / "two" / "adaptive" / "report.json").is_file()
    assert (tmp_path / "two" / "standard base" / "state" / "run.json").is_file()


def test_rows_side_by_side_need_their_own_state_folders(tmp_path):
    rows = _rows(tmp_path)
    rows[2].kwargs["state_dir"] = str(tmp_path / "robust base" / "state" / ".")  # the same folder, spelled otherwise
    with pytest.raises(ValueError, match=r"rows 'robust base' and 'adaptive' share the state folder"):
        run_rows(rows, workers=2)


def test_a_row_cannot_bring_its_own_progress(tmp_path):
    rows = _rows(tmp_path)
    rows[1].kwargs["progress"] = None
    with pytest.raises(ValueError, match=r"row 'standard base'.*progress"):
        run_rows(rows)
