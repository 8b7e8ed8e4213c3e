"""Mixed precision on the Fashion-MNIST adaptive-smoothing recipe: fp32 vs bf16 speed, peak memory, attack strength.

Speed and memory: each measurement runs in a fresh process (so its peak RSS belongs to one
precision), fp32 and bf16 alternating (A B A B ...) so that load on a shared machine hits both
alike. Two workloads of the ``fmnist-adasmooth`` recipe on the shipped Fashion-MNIST bases with a
fresh mixing network of the recipe's architecture:

- ``step``: one optimizer step of the mixing network (forward and backward of the composite on a
  batch of clean:adversarial pairs, AdamW), as the training loop does it;
- ``attack``: the buffer examples of one batch (1 untargeted + ``n_targets`` targeted APGD runs on
  the composite, ``--iters`` iterations each).

Attack strength: the buffer's examples for the first ``--n-attack`` validation images, generated
under fp32 and under bf16 against the shipped ``fmnist-adasmooth`` model (same seeds), all judged
in fp32: the composite's accuracy on them (lower: stronger attack), the mixing network's
detection rate (``gamma > 0``) and the mean applied alpha.

    python benchmarks/bench_train_precision.py --repeats 3 --steps 10 --n-attack 200
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

import robust_mix
from robust_mix.cli import POSITIVE_INT
from robust_mix.data import dataset_tensors, open_dataset
from robust_mix.train import get_recipe
from robust_mix.train.adasmooth import CompositeForward, pair_loss
from robust_mix.train.buffer import attack_batch
from robust_mix.train.pair import build_mixed
from robust_mix.train.precision import Precision
from robust_mix.weights import package_file

PRECISIONS = ("fp32", "bf16")
#: The shipped bases the workloads pair (files inside the package).
BASES = {"standard": "zoo/weights/fmnist-standard.safetensors", "robust": "zoo/weights/fmnist-robust.safetensors"}


def recipe(iters: int):
    config = get_recipe("fmnist-adasmooth").config
    bases = {role: str(package_file(path)) for role, path in BASES.items()}
    return dataclasses.replace(config, **bases, iter_min=iters, iter_max=iters)


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def worker(kind: str, precision_name: str, steps: int, iters: int) -> dict[str, float]:
    """Time ``steps`` repetitions of one workload in this process; its peak RSS."""
    torch.manual_seed(0)
    config = recipe(iters)
    batch = config.batch_size // config.accumulation
    x, y = dataset_tensors(open_dataset("fashion-mnist", "train"), batch)
    model = build_mixed(config, x[:1], 10)
    precision = Precision(precision_name, "cpu")
    composite = CompositeForward(model)
    optimizer = torch.optim.AdamW(model.policy.parameters(), lr=config.lr)
    adv = (x + 0.05 * torch.randn_like(x).sign()).clamp(0, 1)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            loss, _ = pair_loss(config, composite(torch.cat([x, adv])), y)
        loss.backward()
        optimizer.step()

    def attack() -> None:
        with precision.autocast():
            attack_batch(model, x, y, config, seed=0)

    run = {"step": step, "attack": attack}[kind]
    run()  # warm-up (oneDNN kernels, allocator)
    before = rss_mb()
    start = time.perf_counter()
    for _ in range(steps):
        run()
    seconds = (time.perf_counter() - start) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "images": batch, "peak_rss_mb": peak, "rss_before_mb": before}


def measure(kind: str, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """Alternate fresh worker processes: fp32, bf16, fp32, bf16, ..."""
    results: dict[str, list[dict[str, float]]] = {p: [] for p in PRECISIONS}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for _ in range(args.repeats):
        for name in PRECISIONS:
            out = subprocess.run([sys.executable, "-W", "ignore", __file__, "--worker", kind, "--precision", name,
                                  "--steps", str(args.steps), "--iters", str(args.iters)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
    return results


def attack_strength(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Buffer examples under each precision against the shipped adaptive model, judged in fp32."""
    config = recipe(args.iters)
    model = robust_mix.load_model("fmnist-adasmooth").eval()
    x, y = dataset_tensors(open_dataset("fashion-mnist", "val"), args.n_attack)
    batch = config.batch_size // config.accumulation
    out: dict[str, dict[str, float]] = {}
    for name in PRECISIONS:
        precision = Precision(name, "cpu")
        correct, detected, alpha, count, robust = 0.0, 0.0, 0.0, 0, 0.0
        for i in range(0, len(y), batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            with precision.autocast():
                adv = attack_batch(model, xb, yb, config, seed=i)  # (B, E, C, H, W)
            with torch.no_grad():
                flat = adv.float().flatten(0, 1)
                result = model.forward_all(flat)
                hits = (result.log_probs.argmax(1) == yb.repeat_interleave(adv.shape[1])).float()
                correct += hits.sum().item()
                robust += hits.view(len(yb), -1).min(1).values.sum().item()
                detected += (result.gamma > 0).float().sum().item()
                alpha += result.alpha.sum().item()
                count += len(flat)
        out[name] = {"accuracy_on_examples": correct / count, "robust_accuracy": robust / len(y),
                     "detected": detected / count, "mean_alpha": alpha / count}
    return out


def summary(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: {"images_per_s": statistics.median(r["images"] / r["seconds"] for r in runs),
                   "steps_per_s": statistics.median(1 / r["seconds"] for r in runs),
                   "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                   "rss_growth_mb": statistics.median(r["peak_rss_mb"] - r["rss_before_mb"] for r in runs)}
            for name, runs in results.items()}


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=POSITIVE_INT, default=3, help="fresh processes per precision and workload")
    parser.add_argument("--steps", type=POSITIVE_INT, default=10, help="timed repetitions per process")
    parser.add_argument("--iters", type=POSITIVE_INT, default=10, help="APGD iterations per buffer example")
    parser.add_argument("--n-attack", type=POSITIVE_INT, default=200,
                        help="validation images for the attack-strength check")
    parser.add_argument("--threads", type=POSITIVE_INT, default=1)
    parser.add_argument("--worker", choices=("step", "attack"), help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=PRECISIONS, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.precision, args.steps, args.iters)))
        return
    print(f"fmnist-adasmooth recipe on the shipped bases, {args.threads} thread(s), {args.repeats} processes per "
          f"precision (alternating), {args.steps} timed repetitions each; load: {os.getloadavg()[0]:.2f}")
    for kind in ("step", "attack"):
        table = summary(measure(kind, args))
        for name, row in table.items():
            print(f"{kind:>6} {name}: {row['steps_per_s']:.3f} steps/s ({row['images_per_s']:.1f} images/s), "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB (+{row['rss_growth_mb']:.0f} MB during the steps)")
        print(f"{kind:>6} bf16 / fp32: speed x{table['bf16']['steps_per_s'] / table['fp32']['steps_per_s']:.2f}, "
              f"peak RSS x{table['bf16']['peak_rss_mb'] / table['fp32']['peak_rss_mb']:.2f}")
    if args.n_attack:
        print(f"attack strength on {args.n_attack} validation images x {1 + recipe(args.iters).n_targets} examples, "
              f"{args.iters} APGD iterations, judged in fp32 by the shipped fmnist-adasmooth model:")
        for name, row in attack_strength(args).items():
            print(f"  {name}: accuracy on the examples {row['accuracy_on_examples']:.4f}, robust accuracy (all "
                  f"examples of an image) {row['robust_accuracy']:.4f}, detected {row['detected']:.4f}, "
                  f"mean alpha {row['mean_alpha']:.4f}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
