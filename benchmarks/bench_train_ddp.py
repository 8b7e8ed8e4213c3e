"""Steps per second of one training process against two (torchrun, gloo) at the same global batch.

Runs the ``fmnist-standard`` recipe (batch 128) for ``--steps`` optimizer steps, once with one
process and once with ``torchrun --nproc-per-node 2``, alternating (A B A B ...) ``--repeats``
times; speed is read from the loop's own record (``images_per_s`` of the epoch, start-up and
validation excluded). Each process uses ``--threads`` threads, so two processes use twice the cores.

    python benchmarks/bench_train_ddp.py --steps 30 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from robust_mix.cli import POSITIVE_INT

ROOT = Path(__file__).resolve().parents[1]


def run(nproc: int, args: argparse.Namespace) -> float:
    """Steps per second of one run with ``nproc`` processes."""
    prefix = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
              if nproc > 1 else [sys.executable])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONWARNINGS="ignore")
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([*prefix, "-m", "robust_mix.cli", "train", args.recipe, "--out", out, "--no-progress",
                        "--set", "epochs=1", f"max_steps_per_epoch={args.steps}", "val_subset=64"],
                       cwd=str(ROOT), env=env, check=True, capture_output=True)
        record = json.loads((Path(out) / "history.jsonl").read_text().splitlines()[-1])
    return record["images_per_s"] / args.batch


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fmnist-standard")
    parser.add_argument("--batch", type=POSITIVE_INT, default=128, help="the recipe's global batch (for steps/s)")
    parser.add_argument("--steps", type=POSITIVE_INT, default=30)
    parser.add_argument("--repeats", type=POSITIVE_INT, default=2)
    parser.add_argument("--threads", type=POSITIVE_INT, default=1, help="threads per process")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    print(f"{args.recipe}, global batch {args.batch}, {args.steps} steps per run, {args.threads} thread(s) per "
          f"process; load {os.getloadavg()[0]:.2f}")
    speeds: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for nproc in (1, 2):
            speeds[nproc].append(run(nproc, args))
            print(f"  {nproc} process(es): {speeds[nproc][-1]:.2f} steps/s")
    one, two = statistics.median(speeds[1]), statistics.median(speeds[2])
    print(f"median: 1 process {one:.2f} steps/s, 2 processes {two:.2f} steps/s, ratio x{two / one:.2f}; "
          f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
