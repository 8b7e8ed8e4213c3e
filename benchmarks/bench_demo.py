"""The main job's wall time: rows one after another in one process vs side by side, measured in one run.

    python benchmarks/bench_demo.py [--n-examples 20] [--repeats 1] [-- EXTRA ARGS]

Each round runs ``robust-mix demo`` twice from scratch (a fresh ``--out`` folder each, no state to resume):

- **one process**: ``--workers 1 --threads <usable CPUs>``: the rows one after another in a single process
  with torch's default thread count, as the demo ran before its rows went side by side;
- **side by side**: the demo's defaults (one worker process per usable CPU, the thread policy's threads).

Rounds alternate which comes first, so load drift hits both. Prints the load average before and after, each
run's wall time, the ratio median(one process) / median(side by side) and whether the two produced the same
robust flags in every row (``demo.json`` -> each row's ``report.json``). ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS`` and ``ROBUST_MIX_THREADS`` are removed from the runs' environment, so only the flags above
choose the threads. EXTRA ARGS go to ``robust-mix demo`` in both modes (not ``--n-examples``, ``--out``,
``--workers`` or ``--threads``, which the script sets). Needs an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robust_mix.cli import POSITIVE_INT, refuse_owned_options
from robust_mix.threads import usable_cpus

MODES = ("one process", "side by side")


def demo_command(mode: str, n_examples: int, out: Path, extra: list[str]) -> list[str]:
    """The ``robust-mix demo`` command line of one mode."""
    command = [sys.executable, "-m", "robust_mix.cli", "demo", "--n-examples", str(n_examples), "--out", str(out)]
    if mode == "one process":
        command += ["--workers", "1", "--threads", str(max(1, int(usable_cpus())))]
    return command + extra


def robust_flags(out: Path) -> dict[str, list[bool]]:
    """Row key -> robust flags, from the demo's summary and the reports it names."""
    summary = json.loads((out / "demo.json").read_text())
    return {row["key"]: json.loads(Path(row["report"]).read_text())["robust_flags"] for row in summary}


def run(mode: str, n_examples: int, extra: list[str], root: Path) -> tuple[float, dict[str, list[bool]]]:
    """Wall seconds of one demo run from scratch, and its flags."""
    out = Path(tempfile.mkdtemp(prefix=mode.replace(" ", "-") + "-", dir=root))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ROBUST_MIX_THREADS")}
    started = time.perf_counter()
    done = subprocess.run(demo_command(mode, n_examples, out, extra), env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{mode}: robust-mix demo failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, robust_flags(out)


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-examples", type=POSITIVE_INT, default=20)
    parser.add_argument("--repeats", type=POSITIVE_INT, default=1, help="rounds (each runs both modes once)")
    parser.add_argument("extra", nargs="*", help="more arguments for robust-mix demo (after --)")
    return parser


def main() -> int:
    """Exit status 0 when every run produced the same flags, else 1."""
    parser = build_parser()
    args = parser.parse_args()
    refuse_owned_options(parser, args.extra, ("--n-examples", "--out", "--workers", "--threads"))
    print(f"robust-mix demo --n-examples {args.n_examples} {' '.join(args.extra)}: {usable_cpus():g} usable CPUs, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    flags: dict[str, list[dict[str, list[bool]]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                seconds, row_flags = run(mode, args.n_examples, args.extra, Path(tmp))
                times[mode].append(seconds)
                flags[mode].append(row_flags)
                print(f"  round {round_ + 1}, {mode:12s}: {seconds:7.1f} s", flush=True)
    medians = {mode: statistics.median(t) for mode, t in times.items()}
    runs = [f for mode in MODES for f in flags[mode]]
    same = all(f == runs[0] for f in runs)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for mode in MODES:
        print(f"{mode:12s}: median {medians[mode]:7.1f} s ({', '.join(f'{t:.1f}' for t in times[mode])})")
    print(f"one process / side by side: {medians['one process'] / medians['side by side']:.2f}x; "
          f"robust flags identical in every row and run: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
