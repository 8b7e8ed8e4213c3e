"""Clean and APGD-CE + APGD-T accuracy of the Fashion-MNIST zoo and fixed-ratio mixes (test split).

Usage:
    python benchmarks/fmnist/evaluate.py [--n-robust 300] [--out benchmarks/fmnist/results.json] [MODEL ...]

MODEL is a zoo name or ``alpha=<a>`` (the two bases mixed at a fixed ratio); default: the standard
and robust bases, alpha 0.7/0.8/0.9, fmnist-mixednuts and fmnist-adasmooth. Clean accuracy uses the
10k test images; robust accuracy pyautoattack's APGD-CE + APGD-T (seed 0, eps 0.1) on the first
``--n-robust`` test images, as in /work/shared/MEASUREMENTS.md. Results are saved after each model,
and models already in the output file are skipped (rerun to resume).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

import robust_mix
from robust_mix.cli import MODEL_NAME, POSITIVE_INT
from robust_mix.data import load_dataset
from robust_mix.io import atomic_write_text
from robust_mix.train import accuracy

DEFAULT = ["fmnist-standard", "fmnist-robust", "alpha=0.7", "alpha=0.8", "alpha=0.9", "fmnist-mixednuts",
           "fmnist-adasmooth"]


def model_spec(text: str) -> str:
    """A model NAME, or ``alpha=A`` for the fixed mix ``fmnist-robust,alpha=A``."""
    MODEL_NAME(f"fmnist-robust,{text}" if text.startswith("alpha=") else text)
    return text


def build(spec: str) -> torch.nn.Module:
    return robust_mix.load_model(f"fmnist-robust,{spec}" if spec.startswith("alpha=") else spec)


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=model_spec, nargs="*", default=DEFAULT,
                        help="model NAMEs, or alpha=A for fmnist-robust,alpha=A")
    parser.add_argument("--n-robust", type=POSITIVE_INT, default=300)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="benchmarks/fmnist/results.json")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pyautoattack import AutoAttack

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    test_x, test_y = load_dataset("fashion-mnist", "test")
    x_rob, y_rob = test_x[:args.n_robust], test_y[:args.n_robust]
    for spec in args.models:
        key = f"{spec}@{args.n_robust}"
        if key in results:
            continue
        model = build(spec).to(args.device).eval()
        t0 = time.time()
        clean = accuracy(model, test_x, test_y, device=args.device)
        attack = AutoAttack(model, norm="Linf", eps=0.1, version="custom", attacks=["apgd-ce", "apgd-t"],
                            seed=0, device=args.device)
        x_adv, _ = attack.run_standard_evaluation(x_rob.to(args.device), y_rob.to(args.device),
                                               batch_size=args.batch_size)
        robust = accuracy(model, x_adv.cpu(), y_rob, device=args.device)
        row = {"model": spec, "clean": round(100 * clean, 2), "robust": round(100 * robust, 2),
               "n_robust": args.n_robust, "seconds": round(time.time() - t0, 1)}
        if getattr(model, "is_adaptive", False):
            with torch.no_grad():
                alphas = torch.cat([model(test_x[i:i + 500].to(args.device), return_alpha=True)[1].cpu()
                                    for i in range(0, 2000, 500)])
            row["alpha_mean"] = round(alphas.mean().item(), 4)
        results[key] = row
        atomic_write_text(out, json.dumps(results, indent=2) + "\n")
        print(json.dumps(row), flush=True)
    rows = [r for r in results.values() if r["n_robust"] == args.n_robust]
    base = {r["model"]: r for r in rows}
    if "fmnist-standard" in base and "fmnist-robust" in base:
        std, rob = base["fmnist-standard"], base["fmnist-robust"]
        gap = std["clean"] - rob["clean"]
        print("| model | clean (10k) | robust | recovered | kept |\n|---|---|---|---|---|")
        for r in rows:
            recovered = 100 * (r["clean"] - rob["clean"]) / gap if gap else float("nan")
            kept = 100 * r["robust"] / rob["robust"] if rob["robust"] else float("nan")
            print(f"| {r['model']} | {r['clean']:.2f} | {r['robust']:.2f} ({r['n_robust']}) | "
                  f"{recovered:.0f} % | {kept:.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
