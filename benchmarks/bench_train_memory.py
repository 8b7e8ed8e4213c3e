"""Peak memory of a streamed training run as the training set grows: 10 %, 50 % and 100 % of Fashion-MNIST.

Each point is a fresh process that runs the ``fmnist-standard`` recipe through the training loop
(``robust-mix train``) for ``--steps`` optimizer steps on the first ``fraction`` of the 55,000
training images and reports its peak RSS. Two storages, everything else equal: ``streamed``, the
recipes' data path (:func:`robust_mix.data.open_dataset`: the source's ``uint8`` array, decoded
once, one image converted per item), and ``float32 tensor``, the images used held as one float
tensor (how the recipes read data before). ``import torch`` alone takes about 700 MB of RSS here.

    python benchmarks/bench_train_memory.py --steps 20
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

import torch
from torch.utils.data import Dataset

from robust_mix.cli import POSITIVE_INT

FRACTIONS = (0.1, 0.5, 1.0)
TRAIN_IMAGES = 55_000


class FloatImages(Dataset):
    """A split held as one float32 tensor, items as the streamed data sets give them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels, self.num_classes = images, labels, 10

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.images[i], int(self.labels[i]), i


def worker(mode: str, n: int, steps: int) -> float:
    """Train ``steps`` steps on the first ``n`` training images; this process's peak RSS in MB."""
    from robust_mix import data
    from robust_mix.cli import main

    if mode == "tensor":
        stream = data._OPENERS["fashion-mnist"]
        data._OPENERS["fashion-mnist"] = lambda split, data_dir: FloatImages(
            *data.dataset_tensors(stream(split, data_dir), n if split == "train" else None))
    with tempfile.TemporaryDirectory() as out:
        code = main(["train", "fmnist-standard", "--out", out, "--no-progress", "--set", f"train_subset={n}",
                     "epochs=1", f"max_steps_per_epoch={steps}", "val_subset=256"])
    assert code == 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(mode: str, n: int, args: argparse.Namespace) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-W", "ignore", __file__, "--worker", mode, "--n", str(n),
                          "--steps", str(args.steps)], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=POSITIVE_INT, default=20, help="optimizer steps of each streamed run")
    parser.add_argument("--worker", choices=("streamed", "tensor"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=POSITIVE_INT, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.steps)))
        return
    print(f"fmnist-standard, {args.steps} steps of batch 128, peak RSS of the training process; "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'fraction':>8} {'images':>7} {'streamed':>10} {'float32 tensor':>15}")
    rows = []
    for fraction in FRACTIONS:
        n = int(round(fraction * TRAIN_IMAGES))
        rows.append((run("streamed", n, args), run("tensor", n, args)))
        print(f"{fraction:>8.0%} {n:>7} {rows[-1][0]:>7.0f} MB {rows[-1][1]:>12.0f} MB")
    print(f"growth from 10 % to 100 %: streamed {rows[-1][0] - rows[0][0]:+.0f} MB, "
          f"float32 tensor {rows[-1][1] - rows[0][1]:+.0f} MB")


if __name__ == "__main__":
    main()
