"""A fixed ratio of the next bases on the calibration images (docs/fmnist.md, "Longer attacks in the buffer").

Usage, from the repository root (the run's recipe names the bases relative to it):
    python benchmarks/fmnist/next/fixed-0.8/fixed_ratio.py FIRST END

The composite of ``adasmooth-full-23`` with its ratio pinned to 0.8 (alpha = 0.8 + 0.2 * sigmoid(-40)),
attacked with standard AutoAttack plus the adaptive suite on validation images FIRST..END-1 of the 300 the
calibration uses; prints one line of JSON with the clean and robust counts.
"""
import json
import sys
from pathlib import Path

NEXT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(NEXT))

from screen_policy import load_run, set_constants  # noqa: E402
from robust_mix.benchmark import benchmark  # noqa: E402
from robust_mix.data import dataset_tensors, open_dataset  # noqa: E402

first, end = int(sys.argv[1]), int(sys.argv[2])
images, labels = dataset_tensors(open_dataset("fashion-mnist", "val"), 300)
model = load_run(NEXT / "adasmooth-full-23", images[:1])
set_constants(model, 0.8, 1e-9, -40.0)
r = benchmark(model, threat_model="Linf", eps=0.1, images=images[first:end], labels=labels[first:end],
              attack="standard", batch_size=250, device="cpu", seed=0, adaptive=True)
print(json.dumps({"lo": first, "hi": end, "clean": sum(r.clean_flags), "robust": sum(r.robust_flags),
                  "n": end - first, "suites": r.suite_accuracy, "seconds": round(r.wall_time_s)}), flush=True)
