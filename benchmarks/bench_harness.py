"""Overhead of the harness over calling pyautoattack directly, measured side by side.

    python benchmarks/bench_harness.py [--n-examples 100] [--attacks apgd-ce,apgd-t] [--repeats 3]

Builds a small mixed Fashion-MNIST model (two small CNNs trained for a few seconds here, the
robust one on noisy inputs), then on the same examples alternates (1) ``pyautoattack.AutoAttack``
with the standard version's settings restricted to the given attacks and (2)
``robust_mix.benchmark`` with one chunk holding every example and a state folder (so checkpoint
writes are counted). Prints both times, the overhead ratio (median over repeats) and whether the
robust flags agree.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

import robust_mix
from robust_mix.cli import POSITIVE_INT
from robust_mix.benchmark import benchmark, chunk_seed
from robust_mix.data import load_dataset


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 10
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def train(seed: int, steps: int, noise: float) -> SmallCNN:
    torch.manual_seed(seed)
    x, y = load_dataset("fashion-mnist", "train")
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,))
        xb = x[idx]
        if noise:
            xb = (xb + noise * torch.randn_like(xb)).clamp(0, 1)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def fashion_mnist_mixture(train_steps: int = 150, alpha: float = 0.7) -> robust_mix.MixedClassifier:
    """The benchmark's model, as a factory for the CLI:
    ``PYTHONPATH=benchmarks robust-mix sweep bench_harness:fashion_mnist_mixture --eps 0.1 ...``."""
    config = robust_mix.ModelConfig(name="fmnist-smallcnn-mix", dataset="fashion-mnist", eps=0.1, alpha=alpha,
                                    description="two SmallCNNs trained for a few seconds by bench_harness.py")
    return robust_mix.MixedClassifier(train(0, train_steps, 0.0), train(1, train_steps, 0.3), alpha=alpha,
                                      config=config).eval()


def run_direct(model, x, y, attacks, eps, seed) -> list[bool]:
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", device="cpu", seed=seed)
    aa.attacks_to_run = attacks
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=len(y))
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).tolist()


def run_harness(model, x, y, attacks, eps, seed) -> list[bool]:
    with tempfile.TemporaryDirectory() as state:
        result = benchmark(model, images=x, labels=y, eps=eps, batch_size=len(y), attack=attacks, seed=seed,
                           device="cpu", state_dir=state)
        return result.robust_flags


def timed(fn, *args) -> tuple[float, float, list[bool]]:
    """(wall seconds, CPU seconds of this process, flags)."""
    wall, cpu = time.perf_counter(), time.process_time()
    flags = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, flags


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-examples", type=POSITIVE_INT, default=100)
    parser.add_argument("--attacks", default="apgd-ce,apgd-t")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--repeats", type=POSITIVE_INT, default=3)
    parser.add_argument("--train-steps", type=POSITIVE_INT, default=150)
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    attacks = args.attacks.split(",")

    t0 = time.perf_counter()
    model = fashion_mnist_mixture(args.train_steps)
    x, y = load_dataset("fashion-mnist", "test", args.n_examples)
    print(f"trained two SmallCNNs in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}")
    seed = 0
    times: dict[str, list[tuple[float, float]]] = {"direct": [], "harness": []}
    flags: dict[str, list[bool]] = {}
    for repeat in range(args.repeats):
        order = ["direct", "harness"] if repeat % 2 == 0 else ["harness", "direct"]  # load drift hits both
        for label in order:
            if label == "direct":  # the harness attacks chunk 0 with chunk_seed(seed, 0): same seed here
                wall, cpu, flags[label] = timed(run_direct, model, x, y, attacks, args.eps, chunk_seed(seed, 0))
            else:
                wall, cpu, flags[label] = timed(run_harness, model, x, y, attacks, args.eps, seed)
            times[label].append((wall, cpu))
        (dw, dc), (hw, hc) = times["direct"][-1], times["harness"][-1]
        print(f"repeat {repeat}: pyautoattack {dw:.2f} s wall / {dc:.2f} s CPU, harness {hw:.2f} s wall / "
              f"{hc:.2f} s CPU, wall ratio {hw / dw:.3f}")
    wall_min = {k: min(w for w, _ in v) for k, v in times.items()}
    cpu_median = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    pair_median = statistics.median(h[0] / d[0] for h, d in zip(times["harness"], times["direct"]))
    ratio = wall_min["harness"] / wall_min["direct"]
    print(f"{args.n_examples} Fashion-MNIST images, attacks {args.attacks}, eps {args.eps}: robust accuracy "
          f"{sum(flags['harness']) / len(flags['harness']):.2%}; flags identical: "
          f"{flags['harness'] == flags['direct']}")
    print(f"overhead ratio (harness / pyautoattack), best wall time of {args.repeats}: {ratio:.3f} "
          f"({wall_min['harness']:.2f} s / {wall_min['direct']:.2f} s)")
    print(f"  median CPU-time ratio {cpu_median['harness'] / cpu_median['direct']:.3f}, "
          f"median paired wall ratio {pair_median:.3f} (noisy on a shared machine)")
    return 0 if ratio < 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
