"""Copy the trained Fashion-MNIST runs into the package's shipped zoo (robust_mix/zoo/weights/).

Usage: python benchmarks/fmnist/export.py [RUNS_DIR]   (the folder train_all.sh wrote; default runs/fmnist)

Writes, per entry, the weights and the recipe that produced them (``<name>.recipe.json``), plus the
calibrated constants the zoo reads (``fmnist-adasmooth-policy.json``, ``fmnist-mixednuts.json``) and
``manifest.json`` (each weight file's SHA-256 and, for the bases, the architecture it holds), and
copies the training logs to benchmarks/fmnist/logs/. ``--manifest-only`` rewrites the manifest alone.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

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


def main(runs: Path) -> int:
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


if __name__ == "__main__":
    if sys.argv[1:] == ["--manifest-only"]:
        print(f"wrote {write_manifest()}")
        sys.exit(0)
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fmnist")))
