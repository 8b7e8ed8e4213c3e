"""Benchmark rows: independent harness runs (a model and its settings each), side by side.

A :class:`BenchmarkRow` is one call of :func:`robust_mix.benchmark` on the model a factory
builds; :func:`run_rows` runs a list of them one after another or in worker processes
(:mod:`robust_mix.parallel`) and returns their results in row order. Each row has its own
``state_dir``, so an interrupted run resumes row by row. The demo's rows, the sweep's points and
the claim script's rows are such lists.

>>> rows = [BenchmarkRow("robust base", functools.partial(robust_mix.load_model, "fmnist-robust"),
...                      dict(n_examples=50, state_dir="runs/demo/robust/state"))]
>>> results = run_rows(rows, workers=2, progress=bars)
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, Union

from torch import nn

from robust_mix.benchmark import benchmark
from robust_mix.parallel import Job, run_jobs
from robust_mix.report import write_report
from robust_mix.results import BenchmarkResult
from robust_mix.validate import check_bool, check_callback

logger = logging.getLogger(__name__)

ModelFactory = Callable[[], nn.Module]


@dataclass
class BenchmarkRow:
    """One harness run.

    Attributes:
        label: the row's name in tables and progress bars.
        model: builds the model (e.g. ``functools.partial(robust_mix.load_model, "fmnist-robust",
            alpha=0.9)``); must be picklable (a module-level function or a ``partial`` of one) to run
            in a worker process.
        kwargs: keyword arguments of :func:`robust_mix.benchmark` (``n_examples``, ``attack``,
            ``state_dir``...; not ``progress``).
        report_dir: if set, ``report.json``, ``model_info.json`` and ``report.md`` are written there.
        command: the command line recorded in the report (``BenchmarkResult.command``).
    """

    label: str
    model: ModelFactory
    kwargs: dict[str, Any] = field(default_factory=dict)
    report_dir: Optional[Union[str, Path]] = None
    command: Optional[str] = None


@dataclass(frozen=True)
class RowFailure:
    """A row that raised instead of finishing (:func:`run_rows` with ``keep_going``): its label and the error in
    words (``"ValueError: ..."``); its finished chunks stay in its ``state_dir``, so a rerun resumes it."""

    label: str
    error: str


class RowProgress(Protocol):
    """Progress of every row (the CLI draws one bar per row)."""

    def start(self, row: int, stages: Sequence[str], total: int) -> None:
        """Row ``row`` will put ``total`` examples through each of ``stages`` (``"clean"`` first)."""

    def advance(self, row: int, stage: str, n: int) -> None:
        """``n`` more examples of row ``row`` went through ``stage``."""

    def finish(self, row: int) -> None:
        """Row ``row`` is done."""


def run_rows(rows: Sequence[BenchmarkRow], *, workers: int = 1, progress: Optional[RowProgress] = None,
             threads_per_worker: Optional[int] = None, start_order: Optional[Sequence[int]] = None,
             keep_going: bool = False) -> list[Any]:
    """Benchmark every row; results in row order, the same for any number of ``workers``.

    Args:
        rows: the runs.
        workers: worker processes (1: here, in order); see :func:`robust_mix.parallel.run_jobs`.
        progress: receives each row's progress.
        threads_per_worker: explicit threads per worker (default: the thread policy).
        start_order: row indices in the order workers take them (longest first balances best).
        keep_going: a row that raises gives a :class:`RowFailure` in its place and the other rows run on
            (default: its error ends the run).

    Returns:
        one :class:`~robust_mix.results.BenchmarkResult` per row (or :class:`RowFailure`, with ``keep_going``).

    Raises:
        ValueError: a row's ``kwargs`` has a ``progress`` (rows report to ``progress``), or, with several
            ``workers``, two rows share a ``state_dir`` (side by side, each would resume the other's chunks).
    """
    _check_rows(rows, workers)
    progress = check_callback("progress", progress, ("start", "advance", "finish"), "robust_mix.rows.RowProgress")
    run = _run_row_or_failure if check_bool("keep_going", keep_going) else _run_row
    jobs = [Job(row.label, run, {"row": row}) for row in rows]
    on_event = None if progress is None else (lambda index, kind, *payload: getattr(progress, kind)(index, *payload))
    return run_jobs(jobs, workers=workers, on_event=on_event, threads_per_worker=threads_per_worker,
                    start_order=start_order)


def _check_rows(rows: Sequence[BenchmarkRow], workers: int) -> None:
    owners: dict[Path, str] = {}
    for row in rows:
        if "progress" in row.kwargs:
            raise ValueError(f"row {row.label!r} has a 'progress' in its benchmark kwargs; rows report their "
                             "progress to run_rows(progress=...): remove it from the row")
        state_dir = row.kwargs.get("state_dir")
        if workers > 1 and state_dir is not None:
            folder = Path(state_dir).resolve()
            if folder in owners:
                raise ValueError(f"rows {owners[folder]!r} and {row.label!r} share the state folder {state_dir}: side "
                                 "by side each would resume the other's chunks; give each row its own state_dir, "
                                 "or run them with workers=1")
            owners[folder] = row.label


class _EmittingProgress:
    """The harness's per-run :class:`~robust_mix.benchmark.Progress`, forwarded as row events."""

    def __init__(self, emit: Callable[..., None]) -> None:
        self.emit = emit

    def start(self, stages: Sequence[str], total: int) -> None:
        self.emit("start", list(stages), total)

    def advance(self, stage: str, n: int) -> None:
        self.emit("advance", stage, n)


def _run_row(row: BenchmarkRow, emit: Callable[..., None]) -> BenchmarkResult:
    model = row.model()
    result = benchmark(model, progress=_EmittingProgress(emit), **row.kwargs)
    if row.command is not None:
        result = dataclasses.replace(result, command=row.command)
    if row.report_dir is not None:
        write_report(row.report_dir, result, getattr(model, "config", None))
    emit("finish")
    return result


def _run_row_or_failure(row: BenchmarkRow, emit: Callable[..., None]) -> Any:
    """:func:`_run_row`, its error returned as a :class:`RowFailure` (an interrupt still ends the run)."""
    try:
        return _run_row(row, emit)
    except Exception as err:  # noqa: BLE001 (any row error: the other rows go on, the failure is reported)
        logger.error("row %r failed: %s: %s", row.label, type(err).__name__, err)
        return RowFailure(row.label, f"{type(err).__name__}: {err}")
