"""``robust-mix train RECIPE --out DIR``: train or calibrate a model with a named recipe (resumable)."""
from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from robust_mix.cli import command
from robust_mix.train import RECIPES, apply_settings


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", choices=sorted(RECIPES), help="; ".join(f"{k}: {v.help}" for k, v in RECIPES.items()))
    p.add_argument("--out", help="run folder (checkpoint, log, weights); rerun to resume (required to train)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override recipe fields, e.g. epochs=3 train_subset=5000 policy.widths=[32,64]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true", help="print the resolved recipe as JSON and exit")


@command("train", "train or calibrate a model with a named recipe (resumable)", _train_args, computes=True)
def _train_main(args: argparse.Namespace) -> int:
    recipe = RECIPES[args.recipe]
    config = apply_settings(recipe.config, args.set)
    if args.print_config:
        print(json.dumps(dataclasses.asdict(config), indent=2))
        return 0
    if not args.out:
        raise ValueError("--out is required: the run folder for checkpoint, log and weights")
    result = recipe.run(config, args.out, device=args.device, progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0
