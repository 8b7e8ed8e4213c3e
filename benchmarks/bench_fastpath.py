"""The fast model path keeps results: harness flags and time before and after, side by side.

    python benchmarks/bench_fastpath.py [--model fmnist-adasmooth] [--n-examples 200] [--attack standard]
                                        [--batch-size 500] [--repeats 1] [--channels-last] [--compile]
                                        [--threads N]

Runs ``robust_mix.benchmark`` (seed 0) on the first N test images of MODEL in interleaved rounds:

* **before**: the path before issue 14: weight standardisation recomputed on every call and NCHW max-pooling
  (``fastpath.original_layers``) and the attacks' ``backward()`` computing gradients of trainable weights;
* **fast path**: the default path (all of it exact);
* **channels-last** (``--channels-last``): the fast path with NHWC weights
  (``fastpath.channels_last``), which changes the last bits;
* **compiled** (``--compile``): the fast path with the model's networks compiled by
  ``fastpath.compile_model``, which may change the last bits.

Prints wall and CPU time of each, the ratios, and for every variant how many examples' clean and
robust flags differ from **before** (the fast path must show 0).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Callable, Iterator

import torch

import robust_mix
from robust_mix.cli import MODEL_NAME, POSITIVE_INT
from robust_mix import attacks, fastpath
from robust_mix.loading import load_model
from robust_mix.data import load_dataset
from robust_mix.threads import apply_thread_policy


@contextlib.contextmanager
def before_issue_14(model: torch.nn.Module) -> Iterator[None]:
    """The unoptimised path, restored for the duration."""
    fast_freeze = attacks.frozen_parameters
    attacks.frozen_parameters = contextlib.nullcontext
    try:
        with fastpath.original_layers(model):
            yield
    finally:
        attacks.frozen_parameters = fast_freeze


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=MODEL_NAME, default="fmnist-adasmooth")
    parser.add_argument("--n-examples", type=POSITIVE_INT, default=200)
    parser.add_argument("--attack", default="standard")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=500)
    parser.add_argument("--repeats", type=POSITIVE_INT, default=1)
    parser.add_argument("--channels-last", action="store_true", help="also time the fast path with NHWC weights")
    parser.add_argument("--compile", action="store_true", help="also time the compiled fast path")
    parser.add_argument("--threads", type=POSITIVE_INT, default=None, help="default: the thread policy")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    plan = apply_thread_policy(args.threads)

    model = load_model(args.model)
    kwargs = dict(n_examples=args.n_examples, attack=args.attack, batch_size=args.batch_size, seed=0, device="cpu")

    def before() -> robust_mix.BenchmarkResult:
        with before_issue_14(model):
            return robust_mix.benchmark(model, **kwargs)

    variants: dict[str, Callable[[], robust_mix.BenchmarkResult]] = {
        "before": before, "fast path": lambda: robust_mix.benchmark(model, **kwargs)}
    if args.channels_last:
        nhwc = fastpath.channels_last(load_model(args.model))
        variants["channels-last"] = lambda: robust_mix.benchmark(nhwc, **kwargs)
    if args.compile:
        compiled = load_model(args.model)
        probe, _ = load_dataset(compiled.config.dataset, "test", n_examples=2)
        print(f"compiled in {fastpath.compile_model(compiled, probe):.1f} s (first forward pass)", flush=True)
        variants["compiled"] = lambda: robust_mix.benchmark(compiled, **kwargs)
    load = os.getloadavg()[0]
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    results: dict[str, robust_mix.BenchmarkResult] = {}
    for repeat in range(args.repeats):
        for name in (list(variants) if repeat % 2 == 0 else list(variants)[::-1]):
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = variants[name]()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
            print(f"round {repeat} {name:13s} wall {times[name][-1][0]:8.1f} s, CPU {times[name][-1][1]:8.1f} s",
                  flush=True)
    print(f"{args.model}, first {args.n_examples} test images, attack {results['before'].attack}, seed 0, "
          f"batch {args.batch_size}, {plan.threads} thread(s); load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    base = results["before"]
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in times.items()}
    for name, result in results.items():
        clean = sum(a != b for a, b in zip(result.clean_flags, base.clean_flags))
        robust = sum(a != b for a, b in zip(result.robust_flags, base.robust_flags))
        print(f"  {name:13s} clean {100 * result.clean_accuracy:6.2f} %, robust {100 * result.robust_accuracy:6.2f} %;"
              f" flags differing from before: clean {clean}, robust {robust}; best wall {best[name][0]:.1f} s, "
              f"CPU {best[name][1]:.1f} s; before / {name} time: wall {best['before'][0] / best[name][0]:.3f}x, "
              f"CPU {best['before'][1] / best[name][1]:.3f}x")
    fast = results["fast path"]
    return 0 if (fast.clean_flags, fast.robust_flags) == (base.clean_flags, base.robust_flags) else 1


if __name__ == "__main__":
    sys.exit(main())
