"""Screen the adaptive policy's constants of a trained mixing network before the (slow) calibration.

Usage: python benchmarks/fmnist/next/screen_policy.py RUN [--clean-images 2000]
       [--point LO SCALE BIAS ...] [--attack-images 100] [--attack apgd-ce,apgd-t]

``RUN`` is an ``fmnist-adasmooth`` run folder (``recipe.json`` and ``policy.safetensors``; the bases it
names must exist). Two measurements, both on the validation split:

* **clean accuracy over a grid** of (alpha_lo, gamma_scale, gamma_bias), from one forward pass of both
  bases and the mixing network on the first ``--clean-images`` images: the policy's constants only
  rescale the network's unscaled logit, so every grid point is a cheap recombination
  (``robust_mix.mixing.mix_log_probs``), together with the quantiles of that logit;
* **robust accuracy at each ``--point``** on the first ``--attack-images`` images under ``--attack``
  plus the harness's adaptive suite (an image counts only if it survives both), with the accuracy
  after each stage, and the robust base under ``--attack`` alone (unless ``--skip-base``), one line
  of JSON each. About 5 minutes per point at 100 images on one
  CPU thread; run several copies side by side with ``OMP_NUM_THREADS=1``.

A screen, not a calibration: its points go into the recipe's ``calib_*`` grid, which the
calibration then measures under the attack it is judged by (docs/fmnist.md, "Calibration").
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from robust_mix.data import dataset_tensors, open_dataset
from robust_mix.mixing import MixedClassifier, mix_log_probs
from robust_mix.benchmark import benchmark
from robust_mix.cli import POSITIVE_INT
from robust_mix.train.evaluation import accuracy
from robust_mix.train.policy_calibration import _composite

LOWS, SCALES, THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9), (2.0, 8.0), (-1.5, -1.25, -1.0, -0.75)


def load_run(run: Path, sample: torch.Tensor) -> MixedClassifier:
    recipe = json.loads((run / "recipe.json").read_text())
    return _composite(recipe, load_file(str(run / "policy.safetensors")), sample, 10)


def set_constants(model: MixedClassifier, lo: float, scale: float, bias: float) -> None:
    config = model.policy.config
    config.alpha_range, config.gamma_scale, config.gamma_bias = (lo, 1.0), scale, bias


@torch.no_grad()
def clean_grid(model: MixedClassifier, images: torch.Tensor, labels: torch.Tensor) -> list[str]:
    set_constants(model, 0.0, 1.0, 0.0)
    outs = [model.forward_all(images[i:i + 500]) for i in range(0, len(labels), 500)]
    z = torch.cat([o.gamma_unscaled for o in outs])
    g, h = torch.cat([o.standard_logits for o in outs]), torch.cat([o.robust_logits for o in outs])
    q = torch.quantile(z, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]))
    lines = [f"{len(labels)} clean val images: standard {(g.argmax(1) == labels).float().mean():.2%}, "
             f"robust {(h.argmax(1) == labels).float().mean():.2%}; unscaled logit mean {z.mean():.2f}, "
             f"quantiles 5/25/50/75/95 % " + " ".join(f"{v:.2f}" for v in q.tolist()),
             "alpha_lo gamma_scale gamma_bias (threshold) clean mean_alpha"]
    for lo, (scale, threshold) in itertools.product(LOWS, [(2.0, 0.0), *itertools.product(SCALES[1:], THRESHOLDS)]):
        bias = -scale * threshold + 0.0  # no "-0"
        alpha = lo + (1 - lo) * torch.sigmoid(scale * z + bias)
        log_probs = mix_log_probs(g, h, alpha, mode=model.mixing, std_scale=model.std_scale,
                                  rob_scale=model.rob_scale, standard_map=model.standard_map,
                                  robust_map=model.robust_map)
        clean = (log_probs.argmax(1) == labels).float().mean().item()
        lines.append(f"{lo:g} {scale:g} {bias:g} ({threshold:g}) {clean:.4f} {alpha.mean():.3f}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--clean-images", type=POSITIVE_INT, default=2000)
    p.add_argument("--point", nargs=3, type=float, action="append", default=[], metavar=("LO", "SCALE", "BIAS"))
    p.add_argument("--attack-images", type=POSITIVE_INT, default=100)
    p.add_argument("--attack", default="apgd-ce,apgd-t")
    p.add_argument("--skip-base", action="store_true", help="do not attack the robust base")
    return p


def main() -> None:
    p = build_parser()
    args = p.parse_args()
    if not (args.run / "recipe.json").is_file() or not (args.run / "policy.safetensors").is_file():
        p.error(f"{args.run} is not a finished fmnist-adasmooth run (needs recipe.json and policy.safetensors)")
    images, labels = dataset_tensors(open_dataset("fashion-mnist", "val"), max(args.clean_images, args.attack_images))
    model = load_run(args.run, images[:1])
    if not args.point:
        print("\n".join(clean_grid(model, images[:args.clean_images], labels[:args.clean_images])))
        return
    x, y = images[:args.attack_images], labels[:args.attack_images]
    def attacked(net, adaptive):
        result = benchmark(net, threat_model="Linf", eps=0.1, images=x, labels=y, attack=args.attack,
                           batch_size=250, device="cpu", seed=0, adaptive=adaptive)
        return {"n": len(y), "attack": result.attack, "clean": result.clean_accuracy, "robust": result.robust_accuracy,
                "stages": result.stage_accuracy, "suites": result.suite_accuracy, "seconds": round(result.wall_time_s)}

    if not args.skip_base:
        print(json.dumps({"model": "robust base", **attacked(model.robust, False)}), flush=True)
    for lo, scale, bias in args.point:
        set_constants(model, lo, scale, bias)
        print(json.dumps({"alpha_lo": lo, "gamma_scale": scale, "gamma_bias": bias, **attacked(model, True)}),
              flush=True)


if __name__ == "__main__":
    main()
