"""``robust-mix demo``: the README's main job.

Benchmarks the embedded Fashion-MNIST zoo with the harness, all rows on the same first test images
with the same attack, and prints a leaderboard-style table. The rows are independent: they run side
by side in worker processes (``--workers``, default one per usable CPU), one progress bar each.
Resumable: state lives under ``--out/<entry>/state/<settings>``, one folder per choice of examples,
attack and batch size, so an interrupted demo continues where it stopped and a demo with other
settings starts its own.
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import robust_mix
from robust_mix.cli import POSITIVE_INT, command, format_table
from robust_mix.cli.benchmark import RowBars, add_workers_argument, resolve_workers
from robust_mix.formatting import evaluation_label
from robust_mix.io import atomic_write_text
from robust_mix.rows import BenchmarkRow, run_rows
from robust_mix.validate import check_writable_dir

# (row label, registry name, overrides): the rows of the demo table, as data.
DEMO_ROWS = [
    ("standard base", "fmnist-standard", {}),
    ("robust base", "fmnist-robust", {}),
    ("fixed-ratio mix (alpha 0.9)", "fmnist-robust", {"alpha": 0.9}),
    ("MixedNUTS", "fmnist-mixednuts", {}),
    ("adaptive smoothing", "fmnist-adasmooth", {}),
]


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-examples", type=POSITIVE_INT, default=50, help="first N Fashion-MNIST test images")
    p.add_argument("--attack", default="standard",
                   help="AutoAttack version or stage list (default: standard, as on the leaderboard)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=100)
    p.add_argument("--out", default="runs/demo", help="reports and resumable state go here")
    add_workers_argument(p)


def _settings_key(args: argparse.Namespace) -> str:
    """The state folder name of one choice of demo settings (each gets its own resumable state)."""
    attack = "".join(c if c.isalnum() or c in "-." else "+" for c in args.attack)
    return f"n{args.n_examples}_{attack}_b{args.batch_size}"


@command("demo", "benchmark the Fashion-MNIST zoo and print a leaderboard-style table", _demo_args,
         resume="finished rows and chunks are saved under {out}; rerun the same command to resume", computes=True)
def _demo(args: argparse.Namespace) -> int:
    missing = [name for _, name, _ in DEMO_ROWS if not robust_mix.is_model(name)]
    if missing:
        raise ValueError(f"the demo needs the Fashion-MNIST zoo entries {missing}, which are not registered")
    check_writable_dir(args.out)
    rows = demo_rows(args)
    workers = resolve_workers(args, len(rows))
    print(f"{len(rows)} rows, {workers} worker process(es); state and reports under {args.out}", flush=True)
    started = time.perf_counter()
    with RowBars([row.label for row in rows]) as bars:
        # Rows get more expensive down the table: the longest first keeps every worker busy to the end.
        results = run_rows(rows, workers=workers, progress=bars, threads_per_worker=args.threads,
                           start_order=range(len(rows) - 1, -1, -1))
    print_demo(args, rows, results, time.perf_counter() - started, workers)
    return 0


def demo_rows(args: argparse.Namespace) -> list[BenchmarkRow]:
    """The demo's harness runs: one per :data:`DEMO_ROWS` entry, state and report under ``--out/<entry>``."""
    rows = []
    for label, name, overrides in DEMO_ROWS:
        out = Path(args.out) / (name + "".join(f"-{k}{v}" for k, v in overrides.items()))
        rows.append(BenchmarkRow(label, functools.partial(robust_mix.load_model, name, **overrides),
                                 dict(n_examples=args.n_examples, attack=args.attack, batch_size=args.batch_size,
                                      state_dir=out / "state" / _settings_key(args)), report_dir=out))
    return rows


def print_demo(args: argparse.Namespace, rows: list[BenchmarkRow], results: list, seconds: float,
               workers: int) -> None:
    """Write ``demo.json`` and print the table of the finished rows."""
    table, summary = [], []
    for (label, name, overrides), row, result in zip(DEMO_ROWS, rows, results):
        table.append([label, name, f"{100 * result.clean_accuracy:.2f}", f"{100 * result.robust_accuracy:.2f}",
                      result.n_examples, f"{result.wall_time_s:.0f}"])
        summary.append({"label": label, "model": name, "overrides": overrides,
                        "report": str(Path(row.report_dir) / "report.json"),
                        "clean_accuracy": result.clean_accuracy, "robust_accuracy": result.robust_accuracy,
                        "n_examples": result.n_examples})
    atomic_write_text(Path(args.out) / "demo.json", json.dumps(summary, indent=2) + "\n")
    label = evaluation_label(results[0]) if results else args.attack
    print(f"\nFashion-MNIST, Linf eps = 0.1, first {args.n_examples} test images; attack: {label}\n")
    print(format_table(["model", "entry", "clean %", "robust %", "examples", "seconds"], table))
    print(f"\n{len(results)} rows in {seconds:.0f} s with {workers} worker process(es) "
          f"(seconds per row overlap when rows run side by side)")
    print(f"reports: {args.out}/<entry>/report.json, summary: {args.out}/demo.json")
