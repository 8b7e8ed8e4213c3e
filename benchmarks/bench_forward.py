"""Forward throughput of a paper model: ours vs RobustBench's implementation vs the bases alone.

One run, one set of random weights (RobustBench's model is built, its checkpoint files are
written in RobustBench's layout to a temporary folder and loaded by ``robust_mix.load_model``),
the same input batch, measurements interleaved round by round so that load on a shared machine
hits all variants alike. Variants: our model (the fast path: cached weight standardisation), our
model with the original uncached layers, RobustBench's, each of our bases alone and the mixing network alone
on the bases' features (captured once; ``--channels-last``:
also our model with NHWC weights, and each base on NHWC input). Prints the
median time per batch, images per second, minor page faults per call, the ratios, whether predictions agree with RobustBench's
and the largest probability difference, and whether the fast path is bit-identical to the uncached one.

    python benchmarks/bench_forward.py --model cifar100-adasmooth --batch 4 32 --repeats 3
    ROBUST_MIX_MALLOC=system python benchmarks/bench_forward.py ...   # glibc's default heap policy
"""
from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

import robust_mix
from robust_mix.cli import REGISTERED_NAME, POSITIVE_INT
from robust_mix import fastpath, get_model_config, load_model
from robust_mix.weights import robustbench_files
from robust_mix.config import ModelConfig
from robust_mix.allocator import apply_allocator_policy
from robust_mix.threads import apply_thread_policy


@contextlib.contextmanager
def cpu_only_robustbench() -> Iterator[None]:
    """RobustBench 1.1.1's builders call ``Tensor.cuda()``; make that a no-op while building."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def robustbench_key(config: ModelConfig) -> tuple[str, str, str]:
    """(data set, threat model, RobustBench model id) of a paper entry."""
    dataset, threat, rb_id = config.robust.weights.robustbench.split("/")
    return dataset, threat, rb_id


def build_robustbench(config: ModelConfig) -> nn.Module:
    """RobustBench's own model for a paper entry, with its random initialisation."""
    from robustbench.model_zoo.architectures import comp_model

    dataset, _, rb_id = robustbench_key(config)
    with cpu_only_robustbench():
        if rb_id.startswith("Bai2023Improving_"):
            return comp_model.get_composite_model(rb_id.split("_", 1)[1], dataset).eval()
        return comp_model.get_nonlin_mixed_classifier(dataset).eval()


def robustbench_states(model: nn.Module, dataset: str) -> list[dict]:
    """The tensors of each ``<Name>.pt_m<i>.pt`` file, in RobustBench's layout."""
    if hasattr(model, "comp_model"):
        comp = model.comp_model
        return [comp.models[0].state_dict(), comp.models[1].state_dict(),
                {"model": comp.policy_net.state_dict(), "bn": comp.bn.state_dict()}]
    robust = model.rob_model.model if dataset == "imagenet" else model.rob_model
    return [model.std_model.state_dict(), robust.state_dict()]


def write_robustbench_dir(config: ModelConfig, reference: nn.Module, model_dir: Path) -> None:
    """Save ``reference``'s weights where RobustBench's ``load_model(..., model_dir=model_dir)`` finds them."""
    dataset, threat, rb_id = robustbench_key(config)
    paths = [p for p, _ in robustbench_files(dataset, threat, rb_id, model_dir)]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path, state in zip(paths, robustbench_states(reference, dataset)):
        torch.save(state, path)


def minor_faults() -> int:
    """Minor page faults of this process so far (pages mapped in on first touch)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_interleaved(variants: dict[str, Callable[[], object]], repeats: int
                     ) -> dict[str, list[tuple[float, float, int]]]:
    """(wall s, CPU s, minor page faults) per call of each variant; one warm-up round, then ``repeats``
    interleaved rounds (the order rotates from round to round, so load drift hits every variant alike).
    CPU time (this process, all threads) is the steadier measure on a shared machine."""
    times: dict[str, list[tuple[float, float, int]]] = {name: [] for name in variants}
    names = list(variants)
    with torch.inference_mode():
        for round_ in range(repeats + 1):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                faults, wall, cpu = minor_faults(), time.perf_counter(), time.process_time()
                variants[name]()
                if round_:
                    times[name].append((time.perf_counter() - wall, time.process_time() - cpu,
                                        minor_faults() - faults))
    return times


def uptime() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def measure(ours: nn.Module, reference: nn.Module, x: torch.Tensor, repeats: int,
            nhwc: Optional[nn.Module] = None) -> None:
    """Print one batch size's times, ratios and agreement."""
    def original() -> object:
        with fastpath.original_layers(ours):
            return ours(x)

    variants = {
        "robust_mix": lambda: ours(x),
        "robust_mix, uncached": original,
        "robustbench": lambda: reference(x),
        "standard alone": lambda: ours.standard(ours.standard_input(x)),
        "robust alone": lambda: ours.robust(ours.robust_input(x)),
    }
    if ours.is_adaptive:  # the bases' features, captured once: the mixing network's own cost
        with torch.inference_mode():
            features = ours.features(x, ours.policy.config.standard_layers, ours.policy.config.robust_layers)
        variants["mixing network alone"] = lambda: ours.policy(*features)
    if nhwc is not None:
        cl = torch.channels_last
        variants["robust_mix, NHWC weights"] = lambda: nhwc(x)
        variants["standard alone, NHWC"] = lambda: ours.standard(ours.standard_input(x).contiguous(memory_format=cl))
        variants["robust alone, NHWC"] = lambda: ours.robust(ours.robust_input(x).contiguous(memory_format=cl))
    with torch.inference_mode():
        fast, slow, ref = ours(x), original(), reference(x)
    prob_diff = (fast.exp() - ref.float().exp()).abs().max().item()
    times = time_interleaved(variants, repeats)
    wall = {name: statistics.median(w for w, _, _ in t) for name, t in times.items()}
    cpu = {name: statistics.median(c for _, c, _ in t) for name, t in times.items()}
    faults = {name: statistics.median(f for _, _, f in t) for name, t in times.items()}
    print(f"batch {len(x)}: predictions agree with RobustBench: {bool((fast.argmax(1) == ref.argmax(1)).all())}, "
          f"largest probability difference {prob_diff:.1e}; fast path bit-identical to the uncached layers: "
          f"{torch.equal(fast, slow)}; load average {uptime()}")
    for name in variants:
        print(f"  {name:22s} wall {wall[name]:8.3f} s/batch ({len(x) / wall[name]:6.2f} img/s), CPU "
              f"{cpu[name]:8.3f} s, {faults[name]:8.0f} page faults  (wall runs: "
              f"{', '.join(f'{w:.2f}' for w, _, _ in times[name])})")
    for measure_, m in (("wall", wall), ("CPU", cpu)):
        bases = m["standard alone"] + m["robust alone"]
        print(f"  {measure_:4s} robustbench / robust_mix: {m['robustbench'] / m['robust_mix']:.3f}x, "
              f"robustbench / robust_mix uncached: {m['robustbench'] / m['robust_mix, uncached']:.3f}x, "
              f"robust_mix / (standard + robust): {m['robust_mix'] / bases:.3f} (mixing overhead)")
        if "mixing network alone" in m:
            rest = m["robust_mix"] - bases - m["mixing network alone"]
            print(f"  {measure_:4s} of the overhead: mixing network alone {100 * m['mixing network alone'] / bases:.1f} "
                  f"% of the two bases, the rest (feature hooks, the mix itself, timing noise) {100 * rest / bases:.1f} %")
        if nhwc is not None:
            print(f"  {measure_:4s} robustbench / robust_mix NHWC weights: "
                  f"{m['robustbench'] / m['robust_mix, NHWC weights']:.3f}x")
    if nhwc is not None:
        with torch.inference_mode():
            nhwc_diff = (nhwc(x).exp() - ref.float().exp()).abs().max().item()
        print(f"  NHWC weights: largest probability difference to RobustBench {nhwc_diff:.1e}")


def flops_per_image(ours: nn.Module, side: int) -> dict[str, float]:
    """FLOPs per image (``torch.utils.flop_counter``) of the whole model and of each base alone."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, side, side)
    parts = {"robust_mix": lambda: ours(x), "standard alone": lambda: ours.standard(ours.standard_input(x)),
             "robust alone": lambda: ours.robust(ours.robust_input(x))}
    counts = {}
    with torch.inference_mode():
        for name, run in parts.items():
            with FlopCounterMode(display=False) as counter:
                run()
            counts[name] = counter.get_total_flops()
    return counts


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=REGISTERED_NAME, default="cifar100-adasmooth", help="a robust_mix paper entry")
    parser.add_argument("--batch", type=POSITIVE_INT, nargs="+", default=[4],
                        help="batch sizes, measured one after another")
    parser.add_argument("--repeats", type=POSITIVE_INT, default=3)
    parser.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch threads (default: the thread policy)")
    parser.add_argument("--flops-only", action="store_true", help="print the FLOP counts and stop")
    parser.add_argument("--channels-last", action="store_true",
                        help="also time our model with NHWC weights (robust_mix.fastpath.channels_last) and each "
                             "base alone on channels-last (NHWC) input")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    plan = apply_thread_policy(args.threads)  # also the heap policy ($ROBUST_MIX_MALLOC, robust_mix.allocator)

    config = get_model_config(args.model)
    dataset, threat, rb_id = robustbench_key(config)
    torch.manual_seed(0)
    reference = build_robustbench(config)
    with tempfile.TemporaryDirectory() as tmp:
        write_robustbench_dir(config, reference, Path(tmp))
        ours = load_model(args.model, model_dir=tmp)
        nhwc = fastpath.channels_last(load_model(args.model, model_dir=tmp)) if args.channels_last else None

    side = 224 if dataset == "imagenet" else 32
    print(f"{args.model} ({dataset}/{threat}/{rb_id}), random weights, {args.repeats} interleaved repeats, "
          f"{plan.threads} threads, heap policy {apply_allocator_policy()!r}, torch {torch.__version__}, "
          f"robust_mix {robust_mix.__version__}")
    flops = flops_per_image(ours, side)
    bases = flops["standard alone"] + flops["robust alone"]
    print(f"GFLOP per image: standard {flops['standard alone'] / 1e9:.2f}, robust {flops['robust alone'] / 1e9:.2f}, "
          f"the rest (mixing network and mixing) {(flops['robust_mix'] - bases) / 1e9:.2f} "
          f"({100 * (flops['robust_mix'] - bases) / bases:.1f} % of the two bases)")
    if args.flops_only:
        return
    for batch in args.batch:
        x = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
        measure(ours, reference, x, args.repeats, nhwc)


if __name__ == "__main__":
    main()
