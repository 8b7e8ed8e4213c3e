"""Independent jobs in worker processes, each with the thread policy; results in job order.

Demo rows, sweep points and calibration grid points do not depend on each other. On a CPU they
finish sooner side by side in ``workers`` processes of ``usable CPUs // workers`` threads each
than one after another in one process, because small attack batches do not keep many threads
busy (issue 14). Sharding *one* large evaluation across processes stays torchrun's job.

A :class:`Job` is a picklable function (defined at module level) and its keyword arguments. It
also receives ``emit``: ``emit(kind, *payload)`` sends a progress event to the parent process,
where ``on_event(job_index, kind, *payload)`` receives it (the CLI draws progress bars from these).

>>> run_jobs([Job("a", pow_job, {"x": 2}), Job("b", pow_job, {"x": 3})], workers=2)

With ``workers=1`` the jobs run in this process, in order, and events reach ``on_event``
directly; each job gets the same inputs either way, so results are the same (with the same
threads per process: kernels with other thread counts may round differently).
Workers are started with ``spawn`` (no state is inherited but what the job carries); a job that
raises stops the run, and its error is raised here with the worker's traceback as a note.
"""
from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
import pickle
import queue
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from robust_mix import threads

logger = logging.getLogger(__name__)

#: ``on_event(job_index, kind, *payload)``: a progress event from a running job.
EventHandler = Callable[..., None]


@dataclass(frozen=True)
class Job:
    """One unit of independent work: ``fn(**kwargs, emit=...)``.

    Attributes:
        name: shown in errors and logs.
        fn: a module-level function (picklable by reference).
        kwargs: its keyword arguments (picklable).
    """

    name: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


def default_workers(n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` independent jobs: one per usable CPU, at most one per job;
    1 inside a torchrun process group (its ranks already share the CPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1
    return max(1, min(n_jobs, math.floor(threads.usable_cpus())))


def run_jobs(jobs: Sequence[Job], *, workers: int = 1, on_event: Optional[EventHandler] = None,
             threads_per_worker: Optional[int] = None,
             start_order: Optional[Sequence[int]] = None) -> list[Any]:
    """Run ``jobs`` and return their results in job order.

    Args:
        jobs: the work.
        workers: processes to run them in; 1 runs them here, in order.
        on_event: receives ``(job_index, kind, *payload)`` for every ``emit`` of a job.
        threads_per_worker: explicit threads of each worker (default: the thread policy with
            ``workers`` processes sharing the CPUs).
        start_order: job indices in the order workers pick them up (default: as given). Results
            stay in job order; put the longest jobs first to keep every worker busy to the end.

    Raises:
        ValueError: ``workers`` is not a positive number or ``start_order`` is not a permutation.
        Whatever a job raised (with its worker traceback as a note); ``RuntimeError`` when a worker
        process died without a result (killed, out of memory).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive whole number of processes, got {workers!r}")
    order = list(range(len(jobs))) if start_order is None else list(start_order)
    if sorted(order) != list(range(len(jobs))):
        raise ValueError(f"start_order must list each of the {len(jobs)} job indices once, got {order}")
    workers = min(workers, len(jobs))
    if workers <= 1:
        results: dict[int, Any] = {}
        for index in order:
            job = jobs[index]
            emit = functools.partial(on_event, index) if on_event is not None else _ignore
            results[index] = job.fn(**job.kwargs, emit=emit)
        return [results[i] for i in range(len(jobs))]
    return _run_in_workers(jobs, order, workers, on_event, threads_per_worker)


def _ignore(*_: Any) -> None:
    pass


def _run_in_workers(jobs: Sequence[Job], order: list[int], workers: int, on_event: Optional[EventHandler],
                    threads_per_worker: Optional[int]) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    tasks, events = context.Queue(), context.Queue()
    for index in order:
        tasks.put((index, jobs[index]))
    for _ in range(workers):
        tasks.put(None)
    level = logging.getLogger().getEffectiveLevel()
    processes = [context.Process(target=_worker, name=f"robust_mix-worker-{i}",
                                 args=(tasks, events, workers, threads_per_worker, level))
                 for i in range(workers)]
    logger.info("running %d jobs in %d worker processes", len(jobs), workers)
    results: dict[int, Any] = {}
    running: dict[int, int] = {}  # pid -> job index
    with threads.suspend_claim():  # the workers compute; this process only waits
        try:
            for process in processes:
                process.start()
            while len(results) < len(jobs):
                try:
                    kind, index, *payload = events.get(timeout=1.0)
                except queue.Empty:
                    _check_alive(processes, running, results, jobs, events)
                    continue
                if kind == "begin":
                    running[payload[0]] = index
                elif kind == "result":
                    results[index] = payload[0]
                elif kind == "log":
                    logging.getLogger(payload[0].name).handle(payload[0])
                elif kind == "error":
                    error, trace = payload
                    error.add_note(f"in job {jobs[index].name!r}, run in a worker process:\n{trace}")
                    raise error
                elif on_event is not None:
                    on_event(index, kind, *payload)
        finally:
            for process in processes:
                process.join(timeout=5 if len(results) == len(jobs) else 0)
                if process.is_alive():
                    process.terminate()
                    process.join()
    return [results[i] for i in range(len(jobs))]


def _check_alive(processes: list, running: dict[int, int], results: dict[int, Any], jobs: Sequence[Job],
                 events: Any) -> None:
    """Raise if a worker died, or if all ended and no result is on its way."""
    for process in processes:
        if process.exitcode not in (None, 0):
            index = running.get(process.pid)
            what = f" while running job {jobs[index].name!r}" if index is not None and index not in results else ""
            raise RuntimeError(f"worker process {process.pid} died with exit code {process.exitcode}{what} "
                               "(killed, or out of memory?); rerun with fewer workers")
    if all(p.exitcode == 0 for p in processes) and events.empty():
        missing = [jobs[i].name for i in range(len(jobs)) if i not in results]
        raise RuntimeError(f"the worker processes ended without results for {missing}")


def _worker(tasks: Any, events: Any, workers: int, threads_per_worker: Optional[int], level: int) -> None:
    """A worker process: apply the thread policy, then run jobs until the ``None`` sentinel."""
    root = logging.getLogger()
    root.handlers[:] = [_ForwardingHandler(events)]  # log records go to the parent's handlers
    root.setLevel(level)
    logging.captureWarnings(True)  # so do Python warnings, instead of this process's stderr
    threads.apply_thread_policy(threads_per_worker, processes=workers, warn_if_busy=False)
    try:
        while (item := tasks.get()) is not None:
            index, job = item
            events.put(("begin", index, os.getpid()))
            try:
                result = job.fn(**job.kwargs, emit=functools.partial(_emit, events, index))
            except Exception as err:  # reported to the parent, which stops the run
                events.put(("error", index, _picklable(err), traceback.format_exc()))
                return
            events.put(("result", index, result))
    finally:
        threads.release_claim()


class _ForwardingHandler(logging.Handler):
    """Sends a worker's log records to the parent, which handles them with its own handlers."""

    def __init__(self, events: Any) -> None:
        super().__init__()
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg, record.args = record.getMessage(), None
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            self.events.put(("log", -1, record))
        except Exception:  # logging must never break a job
            self.handleError(record)


def _emit(events: Any, index: int, kind: str, *payload: Any) -> None:
    events.put((kind, index, *payload))


def _picklable(err: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # an exception type that cannot cross processes
        return RuntimeError(f"{type(err).__name__}: {err}")
