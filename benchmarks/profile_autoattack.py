"""Where AutoAttack's time goes, stage by stage: a profile you can read.

    python benchmarks/profile_autoattack.py NAME [--n-examples 20] [--attack standard] [--no-adaptive]
                                           [--batch-size 500] [--threads N] [--json out.json]

Runs the harness (``robust_mix.benchmark``, one chunk, no state) on the first N test images of
NAME (a registry name, a ``ModelConfig`` JSON file or ``module:function``), standard AutoAttack plus
the adaptive suite for adaptive models, and prints per stage (clean, APGD-CE, APGD-T, FAB-T, Square,
adaptive APGD-CE / APGD-T):

* wall time and its share of the total;
* forward and backward passes through the model (calls and images);
* time inside the model (forward passes, and backward passes from the gradient reaching the
  model's output to the gradient of its input) and outside it (the attack's own tensor work);
* achieved GFLOP/s inside the model against the model's FLOP count from ``torch.utils.flop_counter``
  (a forward per image, and a backward per image with frozen weights: gradients of the input only).

The model's ``forward_all`` (or ``forward``) is wrapped with timers and tensor hooks; the harness
and the attacks run unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import robust_mix
from robust_mix.cli import MODEL_NAME, POSITIVE_INT
from robust_mix.protocol import AttackOptions, resolve_attack
from robust_mix.loading import load_model
from robust_mix.fastpath import frozen_parameters
from robust_mix.threads import apply_thread_policy


@dataclass
class Counters:
    forwards: int = 0
    forward_images: int = 0
    forward_s: float = 0.0
    backwards: int = 0
    backward_images: int = 0
    backward_s: float = 0.0

    def minus(self, other: "Counters") -> "Counters":
        return Counters(**{k: v - getattr(other, k) for k, v in asdict(self).items()})


class ModelTimer:
    """Counts and times every forward and backward pass through ``model`` (wraps its forward entry)."""

    def __init__(self, model: nn.Module) -> None:
        self.counters = Counters()
        self._backward_started: dict[int, float] = {}
        name = "forward_all" if hasattr(model, "forward_all") else "forward"
        inner = getattr(model, name)

        def timed(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            out = inner(x, *args, **kwargs)
            self.counters.forward_s += time.perf_counter() - started
            self.counters.forwards += 1
            self.counters.forward_images += len(x)
            outputs = [t for t in (vars(out).values() if hasattr(out, "log_probs") else [out])
                       if isinstance(t, torch.Tensor) and t.requires_grad]
            if outputs and x.requires_grad:
                self._hook(outputs, x)
            return out

        setattr(model, name, timed)  # an instance attribute: the harness and attacks call through it

    def _hook(self, outputs: Sequence[torch.Tensor], x: torch.Tensor) -> None:
        key = id(x)

        def output_reached(grad: torch.Tensor) -> None:
            self._backward_started.setdefault(key, time.perf_counter())

        def input_reached(grad: torch.Tensor) -> None:
            started = self._backward_started.pop(key, None)
            if started is not None:
                self.counters.backward_s += time.perf_counter() - started
                self.counters.backwards += 1
                self.counters.backward_images += len(grad)

        for out in outputs:
            out.register_hook(output_reached)
        x.register_hook(input_reached)


class StageClock:
    """A harness ``Progress``: records the time and the model counters when each stage ends."""

    def __init__(self, timer: ModelTimer) -> None:
        self.timer, self.marks = timer, []

    def start(self, stages: Sequence[str], total: int) -> None:
        self.marks = [("start", time.perf_counter(), Counters(**asdict(self.timer.counters)))]

    def advance(self, stage: str, n: int) -> None:
        self.marks.append((stage, time.perf_counter(), Counters(**asdict(self.timer.counters))))


def flops_per_image(model: nn.Module, shape: tuple[int, ...]) -> tuple[float, float]:
    """(forward, backward with respect to the input) FLOPs per image, counted on a batch of 2."""
    x = torch.rand(2, *shape, requires_grad=True)
    with frozen_parameters(model):  # as in the attacks: gradients of the input only
        with FlopCounterMode(display=False) as forward:
            out = model(x)
        with FlopCounterMode(display=False) as backward:
            out.float().sum().backward()
    return forward.get_total_flops() / 2, backward.get_total_flops() / 2


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", type=MODEL_NAME)
    parser.add_argument("--n-examples", type=POSITIVE_INT, default=20)
    parser.add_argument("--attack", default="standard")
    parser.add_argument("--no-adaptive", action="store_true", help="skip the adaptive suite of adaptive models")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=500)
    parser.add_argument("--threads", type=POSITIVE_INT, default=None, help="default: the thread policy")
    parser.add_argument("--n-iter", type=POSITIVE_INT, help="override APGD/FAB iterations (a quick look only)")
    parser.add_argument("--n-queries", type=POSITIVE_INT, help="override Square queries (a quick look only)")
    parser.add_argument("--json", help="also write the profile here")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    plan = apply_thread_policy(args.threads)

    model = load_model(args.name)
    adaptive = getattr(model, "is_adaptive", False) and not args.no_adaptive
    config = getattr(model, "config", None)
    channels, side = (1, 28) if config is not None and config.dataset == "fashion-mnist" else (3, 32)
    if config is not None and config.dataset == "imagenet":
        side = 224
    fwd_flops, bwd_flops = flops_per_image(model, (channels, side, side))
    timer = ModelTimer(model)
    clock = StageClock(timer)
    load_before = os.getloadavg()[0]
    options = AttackOptions(n_iter=args.n_iter, n_queries=args.n_queries)
    result = robust_mix.benchmark(model, n_examples=args.n_examples, attack=args.attack, adaptive=adaptive,
                                  batch_size=args.batch_size, device="cpu", progress=clock, options=options)
    load_after = os.getloadavg()[0]

    stages = []
    for (_, t0, c0), (stage, t1, c1) in zip(clock.marks, clock.marks[1:]):
        c = c1.minus(c0)
        inside = c.forward_s + c.backward_s
        flops = c.forward_images * fwd_flops + c.backward_images * bwd_flops
        stages.append({"stage": stage, "wall_s": t1 - t0, **asdict(c), "inside_s": inside,
                       "outside_s": (t1 - t0) - inside, "gflops": flops / 1e9,
                       "gflop_per_s": flops / 1e9 / inside if inside > 0 else 0.0})
    total = sum(s["wall_s"] for s in stages)
    plan_stages = resolve_attack(args.attack, adaptive).stages
    print(f"{args.name}: first {args.n_examples} test images, attack {result.attack} "
          f"({', '.join(plan_stages)}), batch size {args.batch_size}, {plan.threads} thread(s), "
          f"{'budgets overridden: ' + str(options.overrides()) if options.overrides() else 'full budgets'}; "
          f"load average {load_before:.2f} before, {load_after:.2f} after")
    print(f"model: {fwd_flops / 1e6:.1f} MFLOP per image forward, {bwd_flops / 1e6:.1f} MFLOP per image "
          f"backward (input gradient only); clean {100 * result.clean_accuracy:.2f} %, robust "
          f"{100 * result.robust_accuracy:.2f} %; total {total:.1f} s")
    header = (f"{'stage':18s} {'wall s':>8s} {'share':>6s} {'fwd':>6s} {'fwd img':>8s} {'bwd':>6s} "
              f"{'bwd img':>8s} {'in model s':>10s} {'outside s':>9s} {'GFLOP':>8s} {'GFLOP/s':>8s}")
    print(header)
    print("-" * len(header))
    for s in stages:
        print(f"{s['stage']:18s} {s['wall_s']:8.1f} {100 * s['wall_s'] / total:5.1f}% {s['forwards']:6d} "
              f"{s['forward_images']:8d} {s['backwards']:6d} {s['backward_images']:8d} {s['inside_s']:10.1f} "
              f"{s['outside_s']:9.1f} {s['gflops']:8.1f} {s['gflop_per_s']:8.1f}")
    top = sorted(stages, key=lambda s: s["wall_s"], reverse=True)[:3]
    print("top three costs: " + "; ".join(
        f"{s['stage']} {100 * s['wall_s'] / total:.0f} % ({100 * s['outside_s'] / max(s['wall_s'], 1e-9):.0f} % "
        f"of it outside the model)" for s in top))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.name, "n_examples": args.n_examples, "threads": plan.threads,
                       "flops_forward": fwd_flops, "flops_backward": bwd_flops, "stages": stages,
                       "load_average": [load_before, load_after]}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
