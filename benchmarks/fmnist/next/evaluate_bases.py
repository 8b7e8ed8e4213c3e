"""The next Fashion-MNIST bases (issue 16; trained, not shipped yet): clean accuracy on the 10,000 test
images and, for the robust base, standard AutoAttack (l_inf eps 0.1, seed 0) on the first 1,000.

Usage:
    python benchmarks/fmnist/next/evaluate_bases.py [--weights-dir benchmarks/fmnist/next]
        [--n-examples 1000] [--batch-size 100] [--state-dir runs/next-bases]

Each base is the zoo entry (``fmnist-standard`` at alpha 0, ``fmnist-robust`` at alpha 1: only that
base runs) with its weights replaced by ``WEIGHTS_DIR/<base>/model.safetensors`` and the architecture
of ``WEIGHTS_DIR/<base>/recipe.json``. The AutoAttack run is the harness's (``robust_mix.benchmark``),
resumable from ``--state-dir``; the figures are written to ``WEIGHTS_DIR/results.json`` and the robust
base's report beside its weights (``robust/report.json``, ``report.md``).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

import robust_mix
from robust_mix.cli import POSITIVE_INT
from robust_mix.data import load_dataset
from robust_mix.io import atomic_write_text
from robust_mix.report import write_report
from robust_mix.train import accuracy

HERE = Path(__file__).resolve().parent


def load_base(weights_dir: Path, role: str) -> torch.nn.Module:
    """The zoo entry of ``role`` (``"standard"`` or ``"robust"``) with the base in ``weights_dir/role``."""
    recipe = json.loads((weights_dir / role / "recipe.json").read_text())
    ref = {"ref": recipe["arch"], "kwargs": recipe["arch_kwargs"],
           "weights": {"file": str(weights_dir / role / "model.safetensors")}}
    return robust_mix.load_model(f"fmnist-{role}", **{role: ref}).eval()


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-dir", type=Path, default=HERE)
    parser.add_argument("--n-examples", type=POSITIVE_INT, default=1000)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=100)
    parser.add_argument("--state-dir", type=Path, default=Path("runs/next-bases"))
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    images, labels = load_dataset("fashion-mnist", "test")
    bases = {role: load_base(args.weights_dir, role) for role in ("standard", "robust")}
    results = {role: {"clean_10k": accuracy(model, images, labels)} for role, model in bases.items()}
    model = bases["robust"]
    report = robust_mix.benchmark(model, n_examples=args.n_examples, attack="standard", batch_size=args.batch_size,
                                  seed=0, state_dir=args.state_dir / "robust")
    write_report(args.weights_dir / "robust", report, model.config)
    low, high = report.robust_interval()
    results["robust"].update(n_examples=report.n_examples, clean_first=report.clean_accuracy,
                             autoattack_first=report.robust_accuracy, autoattack_interval=[low, high])
    atomic_write_text(args.weights_dir / "results.json", json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
