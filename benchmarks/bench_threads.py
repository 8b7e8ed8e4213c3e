"""Two evaluations side by side vs one alone, each with the thread policy (robust_mix.threads).

    python benchmarks/bench_threads.py [--model fmnist-robust] [--n-examples 5] [--repeats 2] [-- EXTRA ARGS]

Each round runs ``robust-mix benchmark MODEL --n-examples N`` once alone, then twice at the same
time (rounds alternate which comes first, so load drift hits both), every run in a fresh output
folder and with ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``ROBUST_MIX_THREADS`` removed from its
environment: the policy alone chooses the threads (the two concurrent runs see each other's claim).
``--default-threads`` runs the same rounds with ``--threads <usable CPUs>`` in every process, torch's
default, for comparison. EXTRA ARGS go to ``robust-mix benchmark`` (e.g. ``--attack apgd-ce --n-iter 2``;
not ``--n-examples``, ``--out`` or ``--threads``, which the script sets).

Prints the load average before and after, each run's harness time (``report.json``'s
``wall_time_s``) and process time, the ratio median(concurrent) / median(alone) (target: at most
1.3) and whether all runs produced the same flags. Needs an otherwise idle machine to mean anything.
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

from robust_mix.cli import MODEL_NAME, POSITIVE_INT, refuse_owned_options
from robust_mix.threads import usable_cpus

TARGET = 1.3


def uptime() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def start(model: str, n: int, out: Path, extra: list[str], threads: int | None) -> tuple[subprocess.Popen, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "ROBUST_MIX_THREADS")}
    command = [sys.executable, "-m", "robust_mix.cli", "benchmark", model, "--n-examples", str(n),
               "--out", str(out), *extra] + (["--threads", str(threads)] if threads else [])
    log = open(out.with_suffix(".log"), "w")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), time.perf_counter()


def finish(runs: list[tuple[subprocess.Popen, float]], outs: list[Path]) -> list[dict]:
    results = []
    for (process, started), out in zip(runs, outs):
        log = out.with_suffix(".log")
        if process.wait() != 0:
            raise SystemExit(f"run failed, see {log}:\n{log.read_text()[-2000:]}")
        report = json.loads((out / "report.json").read_text())
        marker = "robust_mix.threads: threads: "
        changes = [line.split(marker, 1)[1].split(" thread(s)")[0] for line in log.read_text().splitlines()
                   if marker in line]
        threads = "threads " + " -> ".join(changes or ["?"])
        results.append({"harness_s": report["wall_time_s"], "process_s": time.perf_counter() - started,
                        "flags": report["robust_flags"], "threads": threads})
    return results


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=MODEL_NAME, default="fmnist-robust")
    parser.add_argument("--n-examples", type=POSITIVE_INT, default=5)
    parser.add_argument("--repeats", type=POSITIVE_INT, default=2)
    parser.add_argument("--default-threads", action="store_true",
                        help="every process uses all usable CPUs (torch's default) instead of the policy")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="-- then arguments for robust-mix benchmark")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    refuse_owned_options(parser, extra, ("--n-examples", "--out", "--threads"))
    threads = int(usable_cpus()) if args.default_threads else None

    print(f"load average before: {uptime()}; usable CPUs {usable_cpus():g}; "
          f"{'--threads ' + str(threads) if threads else 'thread policy'}", flush=True)
    alone, together, flags = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = ["alone", "together"] if repeat % 2 == 0 else ["together", "alone"]
            for kind in order:
                outs = [Path(tmp) / f"r{repeat}-{kind}-{i}" for i in range(1 if kind == "alone" else 2)]
                runs = [start(args.model, args.n_examples, out, extra, threads) for out in outs]
                results = finish(runs, outs)
                (alone if kind == "alone" else together).extend(r["harness_s"] for r in results)
                flags += [r["flags"] for r in results]
                for r in results:
                    print(f"round {repeat} {kind:8s}: harness {r['harness_s']:7.2f} s, process "
                          f"{r['process_s']:7.2f} s, {r['threads']}", flush=True)
    ratio = statistics.median(together) / statistics.median(alone)
    print(f"load average after: {uptime()}")
    print(f"{args.model}, {args.n_examples} examples {' '.join(extra)}: median alone "
          f"{statistics.median(alone):.2f} s, median of each concurrent run {statistics.median(together):.2f} s")
    print(f"ratio concurrent / alone: {ratio:.3f} (target <= {TARGET}); flags identical across runs: "
          f"{all(f == flags[0] for f in flags)}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
