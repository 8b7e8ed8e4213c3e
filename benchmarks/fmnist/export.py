"""Copy the trained Fashion-MNIST runs into the package's shipped zoo (robust_mix/zoo/weights/).

Usage: python benchmarks/fmnist/export.py [RUNS_DIR] [--manifest-only]   (RUNS_DIR: the folder train_all.sh
wrote; default runs/fmnist)

Writes, per entry, the weights and the recipe that produced them (``<name>.recipe.json``), plus the
calibrated constants the zoo reads (``fmnist-adasmooth-policy.json``, ``fmnist-mixednuts.json``) and
``manifest.json`` (each weight file's SHA-256 and, for the bases, the architecture it holds), and
copies the training logs to benchmarks/fmnist/logs/. ``--manifest-only`` rewrites the manifest alone.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Optional

from robust_mix.backbones import read_backbone_spec
from robust_mix.io import atomic_write_text, sha256_file

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "robust_mix" / "zoo" / "weights"
LOGS = Path(__file__).resolve().parent / "logs"

# run folder -> {file in the run: shipped name}
FILES = {
    "standard": {"model.safetensors": "fmnist-standard.safetensors", "recipe.json": "fmnist-standard.recipe.json"},
    "robust": {"model.safetensors": "fmnist-robust.safetensors", "recipe.json": "fmnist-robust.recipe.json"},
    "adasmooth": {"policy.safetensors": "fmnist-adasmooth-policy.safetensors",
                  "policy.json": "fmnist-adasmooth-policy.json", "recipe.json": "fmnist-adasmooth.recipe.json",
                  "calibration.json": "fmnist-adasmooth.calibration.json"},
    "mixednuts": {"nuts.json": "fmnist-mixednuts.json", "recipe.json": "fmnist-mixednuts.recipe.json",
                  "calibration.json": "fmnist-mixednuts.calibration.json"},
}


#: shipped weight file -> what the zoo reads from the manifest
MANIFEST = {"fmnist-standard": "fmnist-standard.safetensors", "fmnist-robust": "fmnist-robust.safetensors",
            "fmnist-adasmooth-policy": "fmnist-adasmooth-policy.safetensors"}


def write_manifest() -> Path:
    """``manifest.json``: file, SHA-256 and (for base models) the recorded architecture of each weight file."""
    manifest = {}
    for key, filename in MANIFEST.items():
        path = WEIGHTS / filename
        entry = {"file": filename, "sha256": sha256_file(path)}
        if key != "fmnist-adasmooth-policy":
            entry.update(read_backbone_spec(path))
        manifest[key] = entry
    target = WEIGHTS / "manifest.json"
    atomic_write_text(target, json.dumps(manifest, indent=2) + "\n")
    return target


def export(runs: Path) -> int:
    """Copy the runs under ``runs`` into the zoo and rewrite the manifest.

    Raises:
        FileNotFoundError: ``runs`` is not a folder, or holds none of the runs (nothing would be exported, yet the
            manifest would be rewritten as if it had been).
    """
    if not runs.is_dir():
        raise FileNotFoundError(f"{runs} is not a folder; pass the folder train_all.sh wrote (default runs/fmnist)")
    if not any((runs / run).is_dir() for run in FILES):
        raise FileNotFoundError(f"{runs} holds none of the runs {sorted(FILES)}; pass the folder train_all.sh wrote")
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    for run, files in FILES.items():
        folder = runs / run
        if not folder.is_dir():
            print(f"skipping {run}: {folder} does not exist", file=sys.stderr)
            continue
        for src, dst in files.items():
            target = (LOGS if dst.endswith(".calibration.json") else WEIGHTS) / dst
            shutil.copyfile(folder / src, target)
            print(f"{folder / src} -> {target}")
        for log in ("train.log", "history.jsonl"):
            if (folder / log).is_file():
                shutil.copyfile(folder / log, LOGS / f"{run}.{log}")
    print(f"wrote {write_manifest()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="?", default="runs/fmnist", help="the folder train_all.sh wrote")
    parser.add_argument("--manifest-only", action="store_true", help="rewrite manifest.json alone")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.manifest_only:
        print(f"wrote {write_manifest()}")
        return 0
    try:
        return export(Path(args.runs))
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
