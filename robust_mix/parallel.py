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
raises stops the run, and its error is raised here with the worker's traceback as a note. Jobs,
results and events must be picklable; one that is not is named in the error. Ctrl-C reaches the
parent alone (workers ignore SIGINT), which then stops the workers.
"""
from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
import pickle
import queue
import signal
import traceback
from dataclasses import dataclass, field
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable, Optional, Sequence

from robust_mix import threads
from robust_mix.distributed import env_int

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
    if env_int("WORLD_SIZE", 1) > 1:
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
        ValueError: ``workers`` or ``threads_per_worker`` is not a positive number, or ``start_order``
            is not a permutation.
        TypeError: with several workers, a job (or its result) cannot be pickled.
        Whatever a job raised (with the job's name, and its worker traceback, as a note);
        ``RuntimeError`` when a worker process died without a result (killed, out of memory).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive whole number of processes, got {workers!r}")
    if threads_per_worker is not None:
        threads.check_threads(threads_per_worker, "threads_per_worker")
    order = list(range(len(jobs))) if start_order is None else list(start_order)
    if sorted(order) != list(range(len(jobs))):
        raise ValueError(f"start_order must list each of the {len(jobs)} job indices once, got {order}")
    workers = min(workers, len(jobs))
    if workers <= 1:
        results: dict[int, Any] = {}
        for index in order:
            job = jobs[index]
            emit = functools.partial(on_event, index) if on_event is not None else _ignore
            try:
                results[index] = job.fn(**job.kwargs, emit=emit)
            except Exception as err:
                err.add_note(f"in job {job.name!r}")
                raise
        return [results[i] for i in range(len(jobs))]
    return _run_in_workers(jobs, order, workers, on_event, threads_per_worker)


def _ignore(*_: Any) -> None:
    pass


def _run_in_workers(jobs: Sequence[Job], order: list[int], workers: int, on_event: Optional[EventHandler],
                    threads_per_worker: Optional[int]) -> list[Any]:
    payloads = {index: _pickled_job(jobs[index]) for index in order}  # refuse what cannot travel, before any start
    context = multiprocessing.get_context("spawn")
    tasks, events = context.Queue(), context.Queue()
    for index in order:
        tasks.put((index, payloads[index]))
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
                    message = events.get(timeout=1.0)
                except queue.Empty:
                    _check_alive(processes, running, results, jobs, events)
                    continue
                kind, index, *payload = _unpickled(message, jobs, results)
                if kind == "begin":
                    running[payload[0]] = index
                elif kind == "result":
                    results[index] = payload[0]
                elif kind == "log":
                    logging.getLogger(payload[0].name).handle(payload[0])
                elif kind == "error":
                    error, trace = payload
                    where = (f"in job {jobs[index].name!r}, run in a worker process" if index >= 0
                             else "in a worker process, before its first job")
                    error.add_note(f"{where}:\n{trace}")
                    raise error
                elif kind == "event" and on_event is not None:
                    on_event(index, *payload)
        finally:
            tasks.cancel_join_thread()  # jobs left unread after a failure must not keep this process from exiting
            for process in processes:
                if process.pid is None:  # never started (the start of an earlier one failed)
                    continue
                process.join(timeout=5 if len(results) == len(jobs) else 0)
                if process.is_alive():
                    process.terminate()
                    process.join()
    return [results[i] for i in range(len(jobs))]


def _pickled_job(job: Job) -> bytes:
    """``job`` as a worker will receive it (with torch's reductions, as a queue would send it)."""
    try:
        return bytes(ForkingPickler.dumps(job))
    except Exception as err:
        raise TypeError(f"job {job.name!r} cannot be sent to a worker process ({type(err).__name__}: {err}); give it "
                        "a module-level function (or a functools.partial of one) and picklable arguments, or run it "
                        "with workers=1") from err


def _unpickled(message: bytes, jobs: Sequence[Job], results: dict[int, Any]) -> tuple:
    """A worker's message, read back here."""
    try:
        return pickle.loads(message)
    except Exception as err:
        missing = [jobs[i].name for i in range(len(jobs)) if i not in results]
        raise TypeError(f"a message from a worker process cannot be read here ({type(err).__name__}: {err}), from one "
                        f"of the jobs {missing}; return and emit values whose classes this process can import") from err


def _check_alive(processes: list, running: dict[int, int], results: dict[int, Any], jobs: Sequence[Job],
                 events: Any) -> None:
    """Raise if a worker died, or if all ended and no result is on its way."""
    for process in processes:
        code = process.exitcode
        if code in (None, 0):
            continue
        index = running.get(process.pid)
        if index is not None and index not in results:
            what = f" while running job {jobs[index].name!r}"
        else:  # it died before its first word on the job reached this process
            elsewhere = {i for pid, i in running.items() if pid != process.pid}
            what = f" in one of the jobs {[j.name for i, j in enumerate(jobs) if i not in results and i not in elsewhere]}"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"{-code}"
            how = f"was killed by signal {name}"
            hint = ("SIGKILL is what the out-of-memory killer sends: rerun with fewer workers"
                    if -code == signal.SIGKILL else "rerun to resume what it left")
        else:
            how, hint = f"exited with code {code}", "its error, if any, is printed above"
        raise RuntimeError(f"worker process {process.pid} {how}{what} ({len(results)} of {len(jobs)} jobs had "
                           f"finished); {hint}")
    if all(p.exitcode == 0 for p in processes) and events.empty():
        missing = [jobs[i].name for i in range(len(jobs)) if i not in results]
        raise RuntimeError(f"the worker processes ended without results for {missing}")


def _worker(tasks: Any, events: Any, workers: int, threads_per_worker: Optional[int], level: int) -> None:
    """A worker process: apply the thread policy, then run jobs until the ``None`` sentinel.

    Every message to the parent is pickled here, before it is queued, so that one which cannot be
    pickled fails where it is sent (a queue's feeder thread would print the error and drop it).
    A worker whose parent has gone (killed) stops after its current job: no one reads its results.
    """
    parent = multiprocessing.parent_process()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent stops us
    root = logging.getLogger()
    root.handlers[:] = [_ForwardingHandler(events)]  # log records go to the parent's handlers
    root.setLevel(level)
    logging.captureWarnings(True)  # so do Python warnings, instead of this process's stderr
    try:
        try:
            threads.apply_thread_policy(threads_per_worker, processes=workers, warn_if_busy=False)
        except Exception as err:  # e.g. a bad $ROBUST_MIX_THREADS: the parent names it
            _send(events, "error", -1, _picklable(err), traceback.format_exc())
            return
        while (item := _next_task(tasks, parent)) is not None:
            index, payload = item
            _send(events, "begin", index, os.getpid())
            try:
                job = pickle.loads(payload)
                result = job.fn(**job.kwargs, emit=functools.partial(_emit, events, index))
            except Exception as err:  # reported to the parent, which stops the run
                _send(events, "error", index, _picklable(err), traceback.format_exc())
                return
            try:
                _send(events, "result", index, result)
            except Exception as err:
                error = TypeError(f"the result of job {job.name!r} cannot be sent back from its worker process "
                                  f"({type(err).__name__}: {err}); return picklable values (no lambdas, open files "
                                  "or locks), or run it with workers=1")
                _send(events, "error", index, error, traceback.format_exc())
                return
        if parent is not None and not parent.is_alive():
            events.cancel_join_thread()  # messages no one will read must not keep this process from exiting
    finally:
        threads.release_claim()


def _next_task(tasks: Any, parent: Optional[multiprocessing.process.BaseProcess]) -> Any:
    """The next ``(index, job)``, or ``None`` at the sentinel or once the parent process has gone."""
    while parent is None or parent.is_alive():
        try:
            return tasks.get(timeout=1.0)
        except queue.Empty:
            continue
    logger.debug("the parent process has gone: this worker stops")
    return None


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
            _send(self.events, "log", -1, record)
        except Exception:  # logging must never break a job
            self.handleError(record)


def _send(events: Any, kind: str, index: int, *payload: Any) -> None:
    """Queue a message for the parent, pickled now (raises here if it cannot be)."""
    events.put(bytes(ForkingPickler.dumps((kind, index, *payload))))


def _emit(events: Any, index: int, kind: str, *payload: Any) -> None:
    """A job's ``emit``: its events travel as ``"event"`` messages, whatever their kind is called."""
    try:
        _send(events, "event", index, kind, *payload)
    except Exception as err:
        raise TypeError(f"the progress event {kind!r} cannot be sent to the parent process "
                        f"({type(err).__name__}: {err}); emit picklable values") from err


def _picklable(err: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # an exception type that cannot cross processes
        return RuntimeError(f"{type(err).__name__}: {err}")
