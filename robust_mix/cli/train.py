"""``robust-mix train RECIPE --out DIR``: train or calibrate with a named recipe (resumable, torchrun-ready).

    robust-mix train fmnist-standard --out runs/fmnist/standard
    torchrun --nproc-per-node 2 -m robust_mix.cli train fmnist-adasmooth --out runs/fmnist/adasmooth
    robust-mix train adasmooth --standard timm/... --robust robustbench/cifar100/Linf/... --preset paper \\
        --set 'policy.standard_layers=["stages.0","stages.1"]' 'policy.robust_layers=["layer.0","layer.1"]' \\
        --out runs/my-mix
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, TextIO

import torch

from robust_mix.cli import (PATH, POSITIVE_INT, LogAboveBars, add_progress_argument, arg_type, bar_width, command,
                            interrupts, progress_requested)
from robust_mix.validate import check_int, parse_int
from robust_mix.distributed import distributed_run
from robust_mix.progress import show_bars
from robust_mix.io import atomic_write_bytes, figure_png, new_figure
from robust_mix.train import (PRESETS, RunOptions, apply_preset, apply_values, check_recipe,
                              get_recipe, list_recipes, read_history, run_recipe)
from robust_mix.train.config import PRECISIONS, parse_settings

_NOT_PLOTTED = {"epoch", "seconds", "images_per_s", "best", "score"}


class TqdmBar:
    """One epoch's bar on ``file`` (default the standard error): images done, images/s and ETA (tqdm's rate and
    remaining time), loss as postfix; not drawn where :func:`robust_mix.progress.show_bars` says no (not a terminal,
    ``$TQDM_DISABLE``)."""

    def __init__(self, description: str, total_steps: int, done_steps: int, images_per_step: int,
                 file: Optional[TextIO] = None) -> None:
        from tqdm import tqdm

        file = file if file is not None else sys.stderr
        self.per_step = images_per_step
        self.bar = tqdm(total=total_steps * images_per_step, initial=done_steps * images_per_step, desc=description,
                        unit="img", unit_scale=True, leave=False, file=file, **bar_width(file),
                        disable=not show_bars(True, file, terminal_only=True))

    def update(self, steps: int, postfix: Mapping[str, float]) -> None:
        if postfix:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)
        self.bar.update(steps * self.per_step)
        interrupts.check()

    def close(self) -> None:
        self.bar.close()


def plot_history(history: list[dict[str, Any]], title: str) -> bytes:
    """The per-epoch history as PNG: losses, accuracies and detection rates, alpha statistics (one panel each)."""
    from matplotlib.ticker import MaxNLocator

    keys = sorted({k for r in history for k, v in r.items()
                   if k not in _NOT_PLOTTED and isinstance(v, (int, float)) and not isinstance(v, bool)})
    losses = [k for k in keys if "loss" in k or k.endswith(("_ce", "_kl", "_bce"))]
    alphas = [k for k in keys if k.startswith("alpha")]
    rates = [k for k in keys if k not in losses and k not in alphas]
    panels = {name: group for name, group in (("loss", losses), ("accuracy / detection rate (fraction, 0 to 1)", rates),
                                              ("alpha", alphas)) if group}
    fig = new_figure(figsize=(5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (label, group) in zip(axes[0], panels.items()):
        for key in group:
            points = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), (int, float))]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no tick at 1.2
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return figure_png(fig)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help=f"a named recipe: {', '.join(list_recipes())}")
    p.add_argument("--out", type=PATH,
                   help="run folder (recipe, checkpoint, log, weights); rerun to resume (required to train)")
    p.add_argument("--standard", help="standard base reference (adasmooth, mixednuts recipes)")
    p.add_argument("--robust", help="robust base reference (adasmooth, mixednuts recipes)")
    p.add_argument("--preset", help="a named configuration applied over the recipe ("
                   + "; ".join(f"{cls.__name__}: {', '.join(sorted(v))}" for cls, v in PRESETS.items()) + ")")
    p.add_argument("--precision", choices=PRECISIONS, help="autocast precision of forward passes and attacks")
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                   help="override recipe fields, e.g. epochs=3 buffer_subset=5000 policy.widths=[32,64] eps=0.1 "
                        "(JSON values; budgets such as eps on the [0, 1] pixel scale, 8/255 = 0.0314; --set may be "
                        "repeated; a field set again takes the later value, with a warning)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available; cuda:<LOCAL_RANK> under torchrun)")
    p.add_argument("--workers", type=arg_type(lambda name, v: check_int(name, v, minimum=0), parse_int), default=0,
                   help="DataLoader worker processes per rank, at most 4 per CPU (default 0: load in the training "
                        "process)")
    p.add_argument("--checkpoint-every", type=POSITIVE_INT, help="also checkpoint every N optimizer steps")
    add_progress_argument(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe as JSON and exit")
    p.add_argument("--plot", action="store_true", help="draw <out>/history.png after the run")
    p.add_argument("--plot-only", action="store_true", help="draw <out>/history.png from the saved history and exit")


def resolve_config(args: argparse.Namespace) -> Any:
    """The recipe the command line asks for: named recipe, then preset, flags, ``--set``."""
    config = get_recipe(args.recipe).config
    if args.preset:
        config = apply_preset(config, args.preset)
    flags = {k: v for k, v in (("standard", args.standard), ("robust", args.robust),
                               ("precision", args.precision)) if v is not None}
    config = apply_values(config, flags)
    return apply_values(config, parse_settings(args.set, given=list(flags)))


def _write_plot(out: Path, recipe: Optional[str] = None) -> Path:
    """Draw ``out/history.png``; titled with ``recipe`` only when this command just trained it (``--plot``):
    ``--plot-only`` cannot tell which recipe made an existing folder, so its title names the folder alone."""
    history = read_history(out)
    if not history:
        raise FileNotFoundError(f"no history to plot: {out / 'history.jsonl'} is missing or empty")
    path = out / "history.png"
    title = f"robust-mix train {recipe} ({out})" if recipe else f"training history of {out}"
    atomic_write_bytes(path, plot_history(history, title))
    return path


@command("train", "train or calibrate a model with a named recipe (resumable, torchrun-ready)", _train_args,
         resume="what {out} holds is kept (the last checkpoint, finished buffer shards); run the same command to resume",
         computes=True)
def _train_main(args: argparse.Namespace) -> int:
    if args.plot_only:
        if not args.out:
            raise ValueError("--plot-only needs --out, the run folder whose history.jsonl to draw")
        print(_write_plot(Path(args.out)))
        return 0
    config = check_recipe(resolve_config(args))
    if args.print_config:
        print(json.dumps(dataclasses.asdict(config), indent=2))
        return 0
    if not args.out:
        raise ValueError("--out is required: the run folder for checkpoint, log and weights")
    with distributed_run(args.device) as dist:
        if not dist.is_main:
            logging.getLogger("robust_mix").setLevel(logging.WARNING)
        bars = dist.is_main and show_bars(progress_requested(args), sys.stderr, terminal_only=True)
        options = RunOptions(workers=args.workers, checkpoint_every=args.checkpoint_every,
                             progress=TqdmBar if bars else None)
        with LogAboveBars(sys.stderr, quiet=False) if bars else contextlib.nullcontext():
            result = run_recipe(config, args.out, dist=dist, options=options)
    if dist.is_main:
        print(json.dumps(result, indent=2))
        if args.plot:
            print(_write_plot(Path(args.out), args.recipe))
    return 0
