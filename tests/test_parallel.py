"""Independent jobs in worker processes (robust_mix.parallel): same results, events, errors."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from robust_mix.parallel import Job, default_workers, run_jobs


def square(x: int, emit) -> int:
    emit("step", x)
    return x * x


def threads_in_use(emit) -> int:
    return torch.get_num_threads()


def warn(emit) -> int:
    warnings.warn("a warning from a worker")
    return 1


def fail(x: int, emit) -> int:
    raise ValueError(f"bad input {x}")


def test_in_process_runs_in_start_order_and_returns_results_in_job_order():
    events = []
    jobs = [Job("a", square, {"x": 2}), Job("b", square, {"x": 3})]
    assert run_jobs(jobs, workers=1, on_event=lambda *e: events.append(e), start_order=[1, 0]) == [4, 9]
    assert events == [(1, "step", 3), (0, "step", 2)]


@pytest.mark.slow  # two spawned worker pools (each process imports torch)
def test_workers_return_the_same_results_forward_events_and_raise_job_errors(caplog, capfd):
    events = []
    jobs = [Job(f"job{i}", square, {"x": i}) for i in range(4)] + [Job("threads", threads_in_use), Job("warn", warn)]
    with caplog.at_level(logging.WARNING):
        results = run_jobs(jobs, workers=2, on_event=lambda *e: events.append(e), threads_per_worker=3)
    assert results == [0, 1, 4, 9, 3, 1]
    assert sorted(events) == [(i, "step", i) for i in range(4)]
    # a worker's Python warning reaches the parent's log handlers (which the CLI draws above its bars),
    # not the worker's own stderr, where it would land between progress bars
    assert any(r.name == "py.warnings" and "a warning from a worker" in r.getMessage() for r in caplog.records)
    assert "a warning from a worker" not in capfd.readouterr().err
    with pytest.raises(ValueError, match="bad input 7") as err:
        run_jobs([Job("fine", square, {"x": 1}), Job("broken", fail, {"x": 7})], workers=2)
    assert "in job 'broken', run in a worker process" in "\n".join(err.value.__notes__)


def test_bad_arguments_are_named(monkeypatch):
    with pytest.raises(ValueError, match="workers must be a positive whole number.*0"):
        run_jobs([Job("a", square, {"x": 1})], workers=0)
    with pytest.raises(ValueError, match="start_order must list each of the 2 job indices once"):
        run_jobs([Job("a", square, {"x": 1}), Job("b", square, {"x": 1})], start_order=[0, 0])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert default_workers(5) == 1  # torchrun ranks shard rows instead
    monkeypatch.delenv("WORLD_SIZE")
    assert 1 <= default_workers(5) <= 5 and default_workers(1) == 1
