"""``robust-mix certify``: certified accuracy against radius for several mixing ratios (JSON + PNG)."""
from __future__ import annotations

import argparse
from typing import Union

import torch
import torch.nn.functional as F

from robust_mix.certify import (certified_accuracy, check_probability_mixing, estimate_smoothed,
                                lipschitz_radius, margin, resolve_alpha, robust_probs_lipschitz)
from robust_mix.cli import INT, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT, arg_type, command, format_table
from robust_mix.io import figure_png
from robust_mix.mixing import MixedClassifier
from robust_mix.validate import (check_alpha, check_images, check_labels, check_open_probability, check_writable_dir,
                                 parse_number)


def _alpha_choice(name: str, text: str) -> Union[float, str]:
    if text in ("applied", "lower"):
        return text
    return check_alpha(parse_number(f"{name} (a number in [0, 1], 'applied' or 'lower')", text), name)


_ALPHA = arg_type(_alpha_choice)
_FAILURE_PROB = arg_type(check_open_probability, parse_number)


def _certify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="registered model name (see 'robust-mix list')")
    p.add_argument("--out", required=True, help="folder for certify.json and certify.png")
    p.add_argument("--standard", default=None, help="override the standard base (e.g. a .safetensors file)")
    p.add_argument("--robust", default=None, help="override the robust base (e.g. a .safetensors file)")
    p.add_argument("--method", choices=("smoothing", "lipschitz"), default="smoothing",
                   help="randomized smoothing of the robust base (default) or its Lipschitz bound")
    p.add_argument("--sigma", type=POSITIVE_FLOAT, default=0.25, help="smoothing noise level (raw [0, 1] image units)")
    p.add_argument("--n", type=POSITIVE_INT, default=1000, help="estimation samples per example")
    p.add_argument("--n0", type=POSITIVE_INT, default=100, help="selection samples per example")
    p.add_argument("--failure-prob", type=_FAILURE_PROB, default=0.001,
                   help="probability that a certificate is wrong (Clopper-Pearson level)")
    p.add_argument("--lipschitz", type=POSITIVE_FLOAT, default=None,
                   help="Lipschitz constant of the robust probabilities (--method lipschitz); "
                        "default: the library's bound for Sequential robust bases")
    p.add_argument("--norm", choices=("l2", "linf"), default="l2", help="norm for --method lipschitz")
    p.add_argument("--radii", type=NON_NEGATIVE_FLOAT, nargs="+", default=None,
                   help="radii to report certified accuracy at (default 0 to 4 sigma in 8 steps)")
    p.add_argument("--alphas", type=_ALPHA, nargs="+", default=None,
                   help="mixing ratios to certify: numbers, 'applied' (the model's own per-example "
                        "ratio) or 'lower' (its guaranteed minimum); 1.0 (robust base alone) is always added")
    p.add_argument("--dataset", default="fashion-mnist", help="data set name (robust_mix.data.load_dataset)")
    p.add_argument("--split", default="test")
    p.add_argument("--n-examples", type=POSITIVE_INT, default=100)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model-dir", default=None, help="RobustBench checkpoint folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=1000, help="noisy images per forward pass")
    p.add_argument("--seed", type=INT, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the sampling progress bars")


def _alpha_label(choice: Union[float, str]) -> str:
    if choice == 1.0:
        return "robust base (alpha = 1)"
    return f"alpha = {choice:g}" if isinstance(choice, float) else f"alpha = {choice} (per example)"


def _clean_accuracy(model: MixedClassifier, std_logits: torch.Tensor, rob_logits: torch.Tensor,
                    alpha: torch.Tensor, labels: torch.Tensor) -> float:
    from robust_mix.mixing import mix_log_probs

    log_probs = mix_log_probs(std_logits, rob_logits, alpha.float(), mode=model.mixing,
                              std_scale=model.std_scale, rob_scale=model.rob_scale,
                              standard_map=model.standard_map, robust_map=model.robust_map)
    return (log_probs.argmax(dim=1) == labels).double().mean().item()


def _plot(curves: list[dict], radius_table: list[torch.Tensor], correct: list[torch.Tensor], title: str,
          xlabel: str, max_radius: float) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(0, max_radius, 400, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for curve, radius, ok in zip(curves, radius_table, correct):
        acc = certified_accuracy(radius, ok, grid.tolist()).numpy() * 100
        style = dict(color="black", linestyle="--") if curve["alpha"] == 1.0 else {}
        ax.plot(grid.numpy(), acc, label=curve["label"], drawstyle="steps-post", **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, max_radius)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


def run_certify(args: argparse.Namespace) -> dict:
    """Certify a registered model on a data set for several ratios; write ``certify.json`` and ``certify.png``."""
    import json
    import time

    import robust_mix
    from robust_mix.data import load_dataset
    from robust_mix.io import atomic_write_bytes, atomic_write_text

    start = time.time()
    out = check_writable_dir(args.out)
    overrides = {k: getattr(args, k) for k in ("standard", "robust") if getattr(args, k) is not None}
    model = robust_mix.load_model(args.name, model_dir=args.model_dir, device=args.device, **overrides)
    check_probability_mixing(model)
    images, labels = load_dataset(args.dataset, args.split, args.n_examples, args.data_dir)
    images = check_images(images, model.input_shape, dtype=model.dtype).to(args.device)
    labels = check_labels(labels, model.num_classes, n=len(images)).to(args.device)
    default = "applied" if model.is_adaptive else float(model.alpha)
    choices = list(dict.fromkeys([*(args.alphas or [default]), 1.0]))
    radii = args.radii if args.radii is not None else [args.sigma * i / 2 for i in range(9)]
    with torch.no_grad():
        logits = [model.base_logits(images[i:i + args.batch_size]) for i in range(0, len(images), args.batch_size)]
    std_logits = torch.cat([g for g, _ in logits])
    rob_logits = torch.cat([h for _, h in logits])

    settings: dict = {"method": args.method}
    if args.method == "smoothing":
        estimate = estimate_smoothed(lambda z: model.robust(model.robust_input(z)), images, sigma=args.sigma,
                                     num_classes=rob_logits.shape[1], n0=args.n0, n=args.n,
                                     failure_prob=args.failure_prob, batch_size=args.batch_size,
                                     generator=torch.Generator().manual_seed(args.seed),
                                     progress=not args.no_progress)
        settings.update(norm="l2", sigma=args.sigma, n0=args.n0, n=args.n, failure_prob=args.failure_prob,
                        seed=args.seed)
        certify = lambda a: (estimate.prediction(a), estimate.radius(a))  # noqa: E731
        examples = {"top_class": estimate.top_class.tolist(), "top_count": estimate.top_count.tolist(),
                    "p_lower": estimate.p_lower.tolist()}
        xlabel, title = "l2 radius", f"{args.name}: smoothing sigma = {args.sigma:g}, n = {args.n}"
    else:
        lipschitz = args.lipschitz or robust_probs_lipschitz(model, images.shape[1:], args.norm)
        probs = F.softmax(rob_logits.float() * model.rob_scale, dim=1)
        settings.update(norm=args.norm, lipschitz=lipschitz)

        def certify(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            radius = lipschitz_radius(probs, None, a, lipschitz)
            top = probs.argmax(dim=1)
            return torch.where(radius > 0, top, torch.full_like(top, -1)), radius
        examples = {"robust_margin": margin(probs).tolist()}
        xlabel, title = f"{args.norm} radius", f"{args.name}: Lipschitz bound L = {lipschitz:.3g}"

    curves, radius_table, correct = [], [], []
    for choice in choices:
        a = resolve_alpha(model, images, choice)
        prediction, radius = certify(a)
        ok = prediction == labels
        accuracy = certified_accuracy(radius, ok, radii)
        certified = radius > 0
        curves.append({
            "alpha": choice, "label": _alpha_label(choice),
            "alpha_mean": a.mean().item(),
            "certified_accuracy": [round(v, 6) for v in accuracy.tolist()],
            "abstain_rate": (~certified).double().mean().item(),
            "median_radius_certified_correct": (radius[certified & ok].median().item()
                                                if (certified & ok).any() else 0.0),
            "mixed_clean_accuracy": _clean_accuracy(model, std_logits, rob_logits, a, labels),
        })
        examples[f"radius@{choice}"] = [round(v, 6) for v in radius.tolist()]
        radius_table.append(radius.cpu())
        correct.append(ok.cpu())
    report = {
        "model": args.name, **overrides, "dataset": args.dataset, "split": args.split, "n_examples": len(labels),
        **settings, "radii": radii, "curves": curves,
        "examples": {"labels": labels.tolist(), **examples},
        "seconds": round(time.time() - start, 2), "robust_mix_version": robust_mix.__version__,
    }
    atomic_write_text(out / "certify.json", json.dumps(report, indent=2) + "\n")
    max_radius = max(max(radii), 1e-6)
    atomic_write_bytes(out / "certify.png", _plot(curves, radius_table, correct, title, xlabel, max_radius))
    return report


@command("certify", "certified accuracy of a model against radius, for several mixing ratios", _certify_args,
         resume="certify keeps no partial state; rerun the same command to start over")
def _certify(args: argparse.Namespace) -> int:
    report = run_certify(args)
    headers = ["alpha", "clean %", "abstain %"] + [f"r={r:g}" for r in report["radii"]]
    rows = [[c["label"], f"{100 * c['mixed_clean_accuracy']:.1f}", f"{100 * c['abstain_rate']:.1f}"]
            + [f"{100 * v:.1f}" for v in c["certified_accuracy"]] for c in report["curves"]]
    print(f"certified accuracy (%) of {report['model']} on {report['n_examples']} {report['dataset']} "
          f"images ({report['method']}, {report['norm']}); {report['seconds']} s")
    print(format_table(headers, rows))
    print(f"wrote {args.out}/certify.json and {args.out}/certify.png")
    return 0
