"""Independent jobs in worker processes (robust_mix.parallel): same results, events, errors."""
from __future__ import annotations

import argparse
import logging
import multiprocessing.context
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

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


def emits_runner_words(emit) -> int:
    emit("result", 99)  # progress events that happen to share a name with the runner's own messages
    emit("error", "not one")
    return 1


def returns_a_lambda(emit):
    return lambda: 1


def kill_self(emit) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would


def blob_length(blob: bytes, emit) -> int:
    time.sleep(1)
    return len(blob)


def log_start(log: str, name: str, emit) -> None:
    with open(log, "a") as file:
        file.write(name + "\n")
    emit("pid", os.getpid())
    time.sleep(2)


def wait_for_interrupt(emit) -> None:
    emit("ready")
    time.sleep(120)


_SCRIPT = """
import os, signal, sys
from robust_mix.parallel import Job, run_jobs
import test_parallel as t

if __name__ == "__main__":
    if sys.argv[1] == "error":  # one job fails while many large ones wait in the queue
        jobs = [Job("broken", t.fail, {"x": 1})] + [Job(f"big{i}", t.blob_length, {"blob": b"x" * 100_000})
                                                    for i in range(20)]
        try:
            run_jobs(jobs, workers=2)
        except ValueError as err:
            print("raised:", err)
    elif sys.argv[1] == "orphan":  # this process dies (killed) while its workers compute
        pids = set()
        def on_event(index, kind, pid):
            pids.add(pid)
            if len(pids) == 2:
                print(*pids, flush=True)
                os._exit(1)
        run_jobs([Job(f"j{i}", t.log_start, {"log": sys.argv[2], "name": f"j{i}"}) for i in range(8)], workers=2,
                 on_event=on_event)
    else:  # Ctrl-C reaches the whole process group, as in a terminal
        ready = []
        def on_event(index, kind):
            ready.append(index)
            if len(ready) == 2:
                os.killpg(os.getpgrp(), signal.SIGINT)
        try:
            run_jobs([Job("a", t.wait_for_interrupt), Job("b", t.wait_for_interrupt)], workers=2, on_event=on_event)
        except KeyboardInterrupt:
            print("interrupted")
            sys.exit(130)
"""


def _script(case: str, *args: str) -> subprocess.CompletedProcess:
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", _SCRIPT, case, *args], env=env, capture_output=True, text=True,
                          timeout=240, start_new_session=True)  # a hang fails the test instead of the suite


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


def test_a_failing_job_is_named_in_process_too():
    with pytest.raises(ValueError, match="bad input 7") as err:
        run_jobs([Job("fine", square, {"x": 1}), Job("broken", fail, {"x": 7})], workers=1)
    assert "in job 'broken'" in "\n".join(err.value.__notes__)


def test_jobs_that_cannot_reach_a_worker_are_refused_before_any_starts():
    with pytest.raises(TypeError, match=r"job 'inline' cannot be sent to a worker process.*module-level function"):
        run_jobs([Job("inline", lambda emit: 1), Job("b", square, {"x": 1})], workers=2)
    with pytest.raises(ValueError, match=r"threads_per_worker must be a positive whole number.*got 0"):
        run_jobs([Job("a", square, {"x": 1}), Job("b", square, {"x": 1})], workers=2, threads_per_worker=0)


def test_a_worker_that_cannot_start_is_reported_as_such(monkeypatch):
    def refuse(self):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", refuse)
    with pytest.raises(OSError, match="Resource temporarily unavailable"):
        run_jobs([Job("a", square, {"x": 1}), Job("b", square, {"x": 1})], workers=2)


@pytest.mark.slow  # spawned worker pools
def test_worker_failures_say_what_went_wrong(monkeypatch):
    events = []
    jobs = [Job("a", emits_runner_words), Job("b", square, {"x": 2})]
    assert run_jobs(jobs, workers=2, on_event=lambda *e: events.append(e)) == [1, 4]
    assert sorted(events) == [(0, "error", "not one"), (0, "result", 99), (1, "step", 2)]
    with pytest.raises(TypeError, match=r"the result of job 'lambda' cannot be sent back") as err:
        run_jobs([Job("lambda", returns_a_lambda), Job("b", square, {"x": 1})], workers=2)
    assert "in job 'lambda', run in a worker process" in "\n".join(err.value.__notes__)
    with pytest.raises(RuntimeError, match=r"killed by signal SIGKILL.*'killed'.*out-of-memory killer"):
        run_jobs([Job("killed", kill_self), Job("fine", square, {"x": 1})], workers=2)
    monkeypatch.setenv("ROBUST_MIX_THREADS", "abc")  # inherited by the workers: they fail before any job
    with pytest.raises(ValueError, match="ROBUST_MIX_THREADS must be a positive whole number") as err:
        run_jobs([Job("a", square, {"x": 1}), Job("b", square, {"x": 1})], workers=2)
    assert "before its first job" in "\n".join(err.value.__notes__)


@pytest.mark.slow  # a Python process that spawns a worker pool
def test_a_failed_run_does_not_hang_its_process_on_the_jobs_left_in_the_queue():
    done = _script("error")
    assert done.returncode == 0 and "raised: bad input 1" in done.stdout, done.stderr


@pytest.mark.slow  # a Python process that spawns a worker pool
def test_ctrl_c_stops_the_workers_without_a_traceback_from_each():
    done = _script("interrupt")
    assert done.returncode == 130 and "interrupted" in done.stdout, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # a Python process that spawns a worker pool
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_workers_of_a_killed_parent_stop_instead_of_running_every_job_left(tmp_path):
    log = tmp_path / "started"
    done = _script("orphan", str(log))
    workers = [int(pid) for pid in done.stdout.split()]
    assert len(workers) == 2, done.stderr
    for _ in range(240):  # a bound, not a measurement: the 8 jobs take 8 s per worker
        if not any(_running(pid) for pid in workers):
            break
        time.sleep(0.5)
    assert not any(_running(pid) for pid in workers)
    assert len(log.read_text().split()) <= 4  # the jobs that had started, and at most one more each


def test_a_malformed_world_size_is_named(monkeypatch):
    from robust_mix.cli.benchmark import resolve_workers

    monkeypatch.setenv("WORLD_SIZE", "abc")
    with pytest.raises(ValueError, match=r"WORLD_SIZE='abc' must be an integer"):
        default_workers(3)
    with pytest.raises(ValueError, match=r"WORLD_SIZE='abc' must be an integer"):
        resolve_workers(argparse.Namespace(workers=2), 3)
