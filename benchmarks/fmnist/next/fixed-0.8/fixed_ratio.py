# A fixed ratio of the next bases on the calibration images (docs/fmnist.md, "Longer attacks in the buffer").
# Usage, from the repository root: python benchmarks/fmnist/next/fixed-0.8/fixed_ratio.py FIRST END
import json, sys
sys.path.insert(0, "benchmarks/fmnist/next")
from pathlib import Path
from screen_policy import load_run, set_constants
from robust_mix.data import dataset_tensors, open_dataset
from robust_mix.benchmark import benchmark
lo, hi = int(sys.argv[1]), int(sys.argv[2])
images, labels = dataset_tensors(open_dataset("fashion-mnist", "val"), 300)
model = load_run(Path("benchmarks/fmnist/next/adasmooth-full-23"), images[:1])
set_constants(model, 0.8, 1e-9, -40.0)  # alpha = 0.8 + 0.2 * sigmoid(-40): a fixed ratio of 0.8
r = benchmark(model, threat_model="Linf", eps=0.1, images=images[lo:hi], labels=labels[lo:hi], attack="standard",
              batch_size=250, device="cpu", seed=0, adaptive=True)
print(json.dumps({"lo": lo, "hi": hi, "clean": sum(r.clean_flags), "robust": sum(r.robust_flags), "n": hi - lo,
                  "suites": r.suite_accuracy, "seconds": round(r.wall_time_s)}), flush=True)
