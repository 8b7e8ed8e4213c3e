"""GPU plan: our harness with GPU settings vs what RobustBench's ``benchmark()`` runs, same model, same images.

    python benchmarks/bench_gpu.py --model cifar100-adasmooth --n-examples 500 --batch-size 250
    python benchmarks/bench_gpu.py --model tiny --device cpu --n-examples 8 --n-iter 2 --n-queries 20  # a CPU check

Both sides get one model with random weights (a paper entry is built by RobustBench, written in its
checkpoint layout and loaded by ``robust_mix.load_model``, as in ``bench_forward.py``; ``tiny`` is a
small mixed CNN both sides share) and the same images: the first N test images of ``--data-dir``, else
random images labelled by the model's own predictions. Interleaved rounds time

* **robustbench**: the calls ``robustbench.eval.benchmark`` makes: ``clean_accuracy``, then
  ``AutoAttack(version="standard").run_standard_evaluation`` and ``clean_accuracy`` on its output;
* **robust_mix**: ``robust_mix.benchmark`` (standard AutoAttack) with, on CUDA, the two base models on
  separate CUDA streams (``--no-streams`` to switch off) and the gradient-free forward passes (clean
  predictions, Square) compiled with CUDA graphs (``torch.compile(mode="reduce-overhead")``,
  ``--no-cuda-graphs`` to switch off).

TF32 stays off (``--tf32`` allows it; never for leaderboard numbers: it changes the arithmetic).
Prints each round's time, images/s of both (best round: the first also pays warm-up and compilation),
the ratio, and how many examples' robust flags differ (the two runs use
different attack seeds, so a few may). The CUDA-only pieces are skipped on other devices.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

import robust_mix
from robust_mix.cli import REGISTERED_NAME, POSITIVE_INT
from robust_mix.attacks import StageRunner
from robust_mix.protocol import AttackOptions, resolve_attack
from robust_mix.data import load_dataset


def set_tf32(allowed: bool) -> None:
    """TF32 matmuls and convolutions on Ampere+ GPUs: faster, 10-bit mantissas. Off for leaderboard runs."""
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed


class SmallCNN(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.num_classes = 10
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2),
                                      nn.ReLU())
        self.head = nn.Linear(32, 10)
        with torch.no_grad():
            self.head.weight.mul_(10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def model_or_tiny(text: str) -> str:
    """``--model``: a registered entry, or ``tiny``."""
    return text if text == "tiny" else REGISTERED_NAME(text)


def build(name: str) -> tuple[nn.Module, nn.Module, str, float]:
    """(ours, RobustBench's, data set, eps) with the same random weights."""
    if name == "tiny":
        config = robust_mix.ModelConfig(name="tiny", dataset="cifar10", eps=8 / 255, alpha=0.7)
        model = robust_mix.MixedClassifier(SmallCNN(0), SmallCNN(1), alpha=0.7, config=config).eval()
        return model, model, "cifar10", 8 / 255
    from bench_forward import build_robustbench, write_robustbench_dir

    config = robust_mix.get_model_config(name)
    torch.manual_seed(0)
    reference = build_robustbench(config)
    with tempfile.TemporaryDirectory() as tmp:
        write_robustbench_dir(config, reference, Path(tmp))
        ours = robust_mix.load_model(name, model_dir=tmp)
    return ours, reference, config.dataset, config.eps


def images_for(model: nn.Module, dataset: str, n: int, device: torch.device,
               data_dir: Optional[str]) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` test images from ``data_dir``, or (without one) random images whose colours and layout
    vary, labelled by the model's own predictions (all clean-correct: every example gets attacked)."""
    if data_dir is not None:
        x, y = load_dataset(dataset, "test", n_examples=n, data_dir=data_dir)
        return x, y, f"the first {n} {dataset} test images"
    side = 224 if dataset == "imagenet" else 32
    gen = torch.Generator().manual_seed(0)
    coarse = F.interpolate(torch.rand(n, 3, 4, 4, generator=gen), size=(side, side), mode="bilinear")
    x = (0.75 * coarse + 0.25 * torch.rand(n, 3, side, side, generator=gen)).clamp(0, 1)
    with torch.no_grad():  # not inference_mode: a tensor a model caches on this first call must serve autograd
        y = torch.cat([model(x[i:i + 50].to(device)).argmax(1).cpu() for i in range(0, n, 50)])
    return x, y, f"{n} random images labelled by the model"


@contextlib.contextmanager
def bases_on_two_streams(model: robust_mix.MixedClassifier) -> Iterator[None]:
    """The standard base runs on a side CUDA stream while the robust base runs on the current one.

    Replaces ``model.base_logits`` (where :meth:`~robust_mix.MixedClassifier.forward_all` runs both
    bases) for the duration; autograd runs each backward kernel on its forward kernel's stream.
    """
    original = model.base_logits
    side = torch.cuda.Stream()

    def base_logits(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.compiler.is_compiling():  # inside a CUDA-graph capture: one graph, no stream juggling to trace
            return original(x)
        current = torch.cuda.current_stream()
        side.wait_stream(current)  # x is ready
        with torch.cuda.stream(side):
            g = model.standard(model.standard_input(x))
        h = model.robust(model.robust_input(x))
        current.wait_stream(side)
        g.record_stream(current)  # g (and the features taps keep) live on; the allocator must know
        for tap in model._taps or ():
            for feature in tap._outputs.values():
                feature.record_stream(current)
        return g, h

    model.base_logits = base_logits
    try:
        yield
    finally:
        model.base_logits = original


@contextlib.contextmanager
def gradient_free_forwards_on_cuda_graphs(model: nn.Module) -> Iterator[float]:
    """Forward passes without autograd (clean predictions, Square's queries) go through
    ``torch.compile(mode="reduce-overhead")`` (CUDA graphs); passes that need gradients stay eager."""
    eager = model.forward
    compiled = torch.compile(eager, mode="reduce-overhead", dynamic=False)

    def forward(x: torch.Tensor, *args, **kwargs):
        if torch.is_grad_enabled() or args or kwargs:
            return eager(x, *args, **kwargs)
        return compiled(x)

    model.forward = forward
    try:
        yield
    finally:
        model.forward = eager


def run_robustbench(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int,
                    device: torch.device, options: AttackOptions) -> list[bool]:
    """What ``robustbench.eval.benchmark`` runs after loading the data, on these tensors."""
    import robust_mix._compat  # noqa: F401  (robustbench imports autoattack)
    from autoattack import AutoAttack
    from robustbench.utils import clean_accuracy

    clean_accuracy(model, x, y, batch_size=batch_size, device=device)
    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", device=device)
    if options.overrides():  # the same budget overrides as the harness (CPU checks only)
        runner = StageRunner(model, resolve_attack("standard"), norm="Linf", eps=eps, device=device, options=options)
        adversary.apgd, adversary.apgd_targeted = runner.autoattack.apgd, runner.autoattack.apgd_targeted
        adversary.fab, adversary.square = runner.autoattack.fab, runner.autoattack.square
    # robustbench 1.1.1's call; `autoattack` is robust_mix._compat's RobustBench interface on pyautoattack
    x_adv = adversary.run_standard_evaluation(x, y, bs=batch_size)
    clean_accuracy(model, x_adv, y, batch_size=batch_size, device=device)
    with torch.no_grad():
        preds = torch.cat([model(x_adv[i:i + batch_size].to(device)).argmax(1).cpu()
                           for i in range(0, len(x_adv), batch_size)])
    return (preds == y).tolist()


def timed(fn: Callable[[], list[bool]]) -> tuple[float, list[bool]]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    flags = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, flags


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=model_or_tiny, default="cifar100-adasmooth", help="a paper entry, or 'tiny'")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-examples", type=POSITIVE_INT, default=500)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=250)
    parser.add_argument("--repeats", type=POSITIVE_INT, default=2,
                        help="interleaved rounds; the best of each side counts")
    parser.add_argument("--data-dir", help="data set root (default: random images labelled by the model)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 (not for leaderboard numbers)")
    parser.add_argument("--no-streams", action="store_true", help="run the two bases one after the other")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="keep gradient-free forwards eager")
    parser.add_argument("--n-iter", type=POSITIVE_INT, help="override APGD/FAB iterations (checks only)")
    parser.add_argument("--n-queries", type=POSITIVE_INT, help="override Square queries (checks only)")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    set_tf32(args.tf32)
    options = AttackOptions(n_iter=args.n_iter, n_queries=args.n_queries)

    ours, reference, dataset, eps = build(args.model)
    ours, reference = ours.to(device).eval(), reference.to(device).eval()
    x, y, about = images_for(reference, dataset, args.n_examples, device, args.data_dir)

    def run_ours() -> list[bool]:
        with contextlib.ExitStack() as stack:
            if cuda and not args.no_streams and isinstance(ours, robust_mix.MixedClassifier):
                stack.enter_context(bases_on_two_streams(ours))
            if cuda and not args.no_cuda_graphs:
                stack.enter_context(gradient_free_forwards_on_cuda_graphs(ours))
            return robust_mix.benchmark(ours, images=x, labels=y, eps=eps, batch_size=args.batch_size,
                                        device=device, options=options).robust_flags

    variants = {"robustbench": lambda: run_robustbench(reference, x, y, eps, args.batch_size, device, options),
                "robust_mix": run_ours}
    times: dict[str, list[float]] = {k: [] for k in variants}
    flags: dict[str, list[bool]] = {}
    for repeat in range(args.repeats):
        for name in (list(variants) if repeat % 2 == 0 else list(variants)[::-1]):
            seconds, flags[name] = timed(variants[name])
            times[name].append(seconds)
            print(f"round {repeat} {name:12s} {seconds:9.2f} s  {args.n_examples / seconds:8.2f} img/s", flush=True)
    best = {k: min(v) for k, v in times.items()}  # the first round also pays warm-up and compilation
    gpu = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"{args.model} on {gpu} ({about}), batch size {args.batch_size}, TF32 {'on' if args.tf32 else 'off'}, "
          f"streams {'on' if cuda and not args.no_streams else 'off'}, CUDA graphs "
          f"{'on' if cuda and not args.no_cuda_graphs else 'off'}, budgets {options.overrides() or 'full'}")
    for name, seconds in best.items():
        print(f"  {name:12s} {args.n_examples / seconds:8.2f} img/s (best of {args.repeats})")
    print(f"  robust_mix / robustbench images/s: {best['robustbench'] / best['robust_mix']:.3f}x; "
          f"robust flags differ on {sum(a != b for a, b in zip(flags['robust_mix'], flags['robustbench']))} "
          f"of {args.n_examples} examples; robust accuracy {100 * sum(flags['robust_mix']) / len(y):.2f} % (ours), "
          f"{100 * sum(flags['robustbench']) / len(y):.2f} % (RobustBench's calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
