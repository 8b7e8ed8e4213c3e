"""``robust-mix demo``: the README's main job.

Until the trained Fashion-MNIST zoo ships, the demo composes two small timm architectures
(randomly initialised, saved as self-describing files) into a fixed-ratio mix and shows, on
Fashion-MNIST test images, that the mixing ratio moves predictions from one base to the other.
It measures mechanics, not accuracy.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import robust_mix
from robust_mix.cli import command, format_table
from robust_mix.data import load_dataset


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-examples", type=int, default=200, help="Fashion-MNIST test images to use")
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="comma-separated mixing ratios")


@command("demo", "compose two small models and sweep the mixing ratio", _demo_args)
def _demo(args: argparse.Namespace) -> int:
    import timm

    images, _ = load_dataset("fashion-mnist", "test", args.n_examples)
    with tempfile.TemporaryDirectory() as tmp:
        refs = []
        for seed, name in ((0, "standard"), (1, "robust")):
            torch.manual_seed(seed)
            net = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=1)
            refs.append(str(robust_mix.save_backbone(net, Path(tmp) / f"{name}.safetensors",
                                                     "timm/resnet10t", {"num_classes": 10, "in_chans": 1})))
        model = robust_mix.load_model("mix", standard=refs[0], robust=refs[1], alpha=0.5)
        with torch.no_grad():
            std_pred, rob_pred = (z.argmax(1) for z in model.base_logits(images))
            rows = []
            for alpha in (float(a) for a in args.alphas.split(",")):
                model.alpha = alpha
                pred = model(images).argmax(1)
                rows.append([f"{alpha:.2f}", f"{(pred == std_pred).float().mean():.1%}",
                             f"{(pred == rob_pred).float().mean():.1%}"])
    print(f"\nFixed-ratio mix of two untrained timm resnet10t models on {len(images)} Fashion-MNIST "
          "test images\n(agreement with each base model's predictions; the trained zoo replaces this demo):\n")
    print(format_table(["alpha", "agrees with standard", "agrees with robust"], rows))
    return 0
