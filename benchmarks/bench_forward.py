"""Forward throughput of a paper model: ours vs RobustBench's implementation vs the bases alone.

One run, one set of random weights (RobustBench's model is built, its checkpoint files are
written in RobustBench's layout to a temporary folder and loaded by ``robust_mix.load_model``),
the same input batch, measurements interleaved round by round so that load on a shared machine
hits all variants alike. Prints the median time per batch, images per second and the ratios.

    python benchmarks/bench_forward.py --model cifar100-adasmooth --batch 4 --repeats 3
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

import robust_mix
from robust_mix import get_model_config, load_model
from robust_mix.weights import robustbench_files
from robust_mix.config import ModelConfig


@contextlib.contextmanager
def cpu_only_robustbench() -> Iterator[None]:
    """RobustBench 1.1.1's builders call ``Tensor.cuda()``; make that a no-op while building."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def build_robustbench(config: ModelConfig) -> nn.Module:
    """RobustBench's own model for a paper entry, with its random initialisation."""
    from robustbench.model_zoo.architectures import comp_model

    dataset, _, rb_id = config.robust.weights.robustbench.split("/")
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


def time_interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each variant; one warm-up round, then ``repeats`` interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for round_ in range(repeats + 1):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                if round_:
                    times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifar100-adasmooth", help="a robust_mix paper entry")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = get_model_config(args.model)
    dataset, threat, rb_id = config.robust.weights.robustbench.split("/")
    torch.manual_seed(0)
    reference = build_robustbench(config)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [p for p, _ in robustbench_files(dataset, threat, rb_id, Path(tmp))]
        paths[0].parent.mkdir(parents=True)
        for path, state in zip(paths, robustbench_states(reference, dataset)):
            torch.save(state, path)
        ours = load_model(args.model, model_dir=tmp)

    side = 224 if dataset == "imagenet" else 32
    x = torch.rand(args.batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    variants = {
        "robust_mix": lambda: ours(x),
        "robustbench": lambda: reference(x),
        "standard alone": lambda: ours.standard(ours.standard_input(x)),
        "robust alone": lambda: ours.robust(ours.robust_input(x)),
    }
    with torch.no_grad():
        agree = (ours(x).argmax(1) == reference(x).argmax(1)).all().item()
    times = time_interleaved(variants, args.repeats)
    median = {name: statistics.median(t) for name, t in times.items()}

    print(f"{args.model} ({dataset}/{threat}/{rb_id}), random weights, batch {args.batch}, "
          f"{args.repeats} interleaved repeats, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, robust_mix {robust_mix.__version__}; predictions agree: {agree}")
    for name, seconds in median.items():
        print(f"  {name:15s} {seconds:8.3f} s/batch  {args.batch / seconds:7.2f} img/s  "
              f"(runs: {', '.join(f'{t:.3f}' for t in times[name])})")
    bases = median["standard alone"] + median["robust alone"]
    print(f"  robust_mix / robustbench time:        {median['robust_mix'] / median['robustbench']:.3f}")
    print(f"  robust_mix / (standard + robust) time: {median['robust_mix'] / bases:.3f}"
          "  (mixing overhead over running both bases)")


if __name__ == "__main__":
    main()
