"""A fixed ratio of the next bases on the calibration images (docs/fmnist.md, "Longer attacks in the buffer").

Usage, from the repository root (the run's recipe names the bases relative to it):
    python benchmarks/fmnist/next/fixed-0.8/fixed_ratio.py FIRST END

The composite of ``adasmooth-full-23`` with its ratio pinned to 0.8 (alpha = 0.8 + 0.2 * sigmoid(-40)),
attacked with standard AutoAttack plus the adaptive suite on validation images FIRST..END-1 of the 300 the
calibration uses; prints one line of JSON with the clean and robust counts.
"""
import argparse
import json
import sys
from pathlib import Path

NEXT = Path(__file__).resolve().parents[1]
#: The calibration's validation images; FIRST..END-1 index them.
CALIBRATION_IMAGES = 300


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=int, help="first validation image (0-based)")
    parser.add_argument("end", type=int, help=f"one past the last validation image (at most {CALIBRATION_IMAGES})")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if not 0 <= args.first < args.end <= CALIBRATION_IMAGES:
        parser.error(f"need 0 <= FIRST < END <= {CALIBRATION_IMAGES}, got FIRST {args.first}, END {args.end}")
    sys.path.insert(0, str(NEXT))
    from screen_policy import load_run, set_constants
    from robust_mix.benchmark import benchmark
    from robust_mix.data import dataset_tensors, open_dataset

    first, end = args.first, args.end
    images, labels = dataset_tensors(open_dataset("fashion-mnist", "val"), CALIBRATION_IMAGES)
    model = load_run(NEXT / "adasmooth-full-23", images[:1])
    set_constants(model, 0.8, 1e-9, -40.0)
    r = benchmark(model, threat_model="Linf", eps=0.1, images=images[first:end], labels=labels[first:end],
                  attack="standard", batch_size=250, device="cpu", seed=0, adaptive=True)
    print(json.dumps({"lo": first, "hi": end, "clean": sum(r.clean_flags), "robust": sum(r.robust_flags),
                      "n": end - first, "suites": r.suite_accuracy, "seconds": round(r.wall_time_s)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
