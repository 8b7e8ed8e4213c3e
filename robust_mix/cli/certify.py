"""``robust-mix certify``: certified accuracy against radius for several mixing ratios (JSON + PNG)."""
from __future__ import annotations

import argparse
import contextlib
import inspect
import sys
from typing import Union

from robust_mix.certification import METHODS, certify_model, check_method, write_certification
from robust_mix.certify import NORMS
from robust_mix.cli import (DATA_DIR_HELP, NAME_HELP, NON_NEGATIVE_FLOAT, PATH, POSITIVE_FLOAT, POSITIVE_INT, SEED,
                             SEED_HELP, LogAboveBars, add_progress_argument, arg_type, command, format_table,
                             hold_output_folder, progress_requested)
from robust_mix.data import SPLITS, load_dataset, preprocessing_for
from robust_mix.loading import load_model
from robust_mix.mixing import MixedClassifier
from robust_mix.progress import show_bars
from robust_mix.validate import InvalidInputError, check_alpha, check_open_probability, check_writable_dir, parse_number


def _alpha_choice(name: str, text: str) -> Union[float, str]:
    if text in ("applied", "lower"):
        return text
    return check_alpha(parse_number(f"{name} (a number in [0, 1], 'applied' or 'lower')", text), name)


_ALPHA = arg_type(_alpha_choice)
_FAILURE_PROB = arg_type(check_open_probability, parse_number)
#: The options of randomized smoothing alone, with certify_model's defaults (shown in --help).
_SMOOTHING = {name: inspect.signature(certify_model).parameters[name].default
              for name in ("sigma", "n", "n0", "failure_prob")}


def _certify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--out", type=PATH, required=True, help="folder for certify.json and certify.png")
    p.add_argument("--standard", default=None, help="override the standard base (e.g. a .safetensors file)")
    p.add_argument("--robust", default=None, help="override the robust base (e.g. a .safetensors file)")
    p.add_argument("--method", choices=METHODS, default="smoothing",
                   help="randomized smoothing of the robust base (default) or its Lipschitz bound")
    p.add_argument("--sigma", type=POSITIVE_FLOAT,
                   help=f"smoothing noise level (raw [0, 1] image units; default {_SMOOTHING['sigma']})")
    p.add_argument("--n", type=POSITIVE_INT, help=f"estimation samples per example (default {_SMOOTHING['n']})")
    p.add_argument("--n0", type=POSITIVE_INT, help=f"selection samples per example (default {_SMOOTHING['n0']})")
    p.add_argument("--failure-prob", type=_FAILURE_PROB,
                   help="probability that a certificate is wrong (Clopper-Pearson level; default "
                        f"{_SMOOTHING['failure_prob']})")
    p.add_argument("--lipschitz", type=POSITIVE_FLOAT, default=None,
                   help="Lipschitz constant of the robust probabilities (--method lipschitz); "
                        "default: the library's bound for Sequential robust bases")
    p.add_argument("--norm", choices=NORMS, default="l2",
                   help="norm of the radii for --method lipschitz (smoothing's are l2)")
    p.add_argument("--radii", type=NON_NEGATIVE_FLOAT, nargs="+", default=None,
                   help="radii to report certified accuracy at, on the [0, 1] pixel scale as --sigma (l2 for "
                        "smoothing, --norm for --method lipschitz; default: 0 to 4 sigma in 8 steps for smoothing; "
                        "0 to the largest certified radius in 8 steps for --method lipschitz)")
    p.add_argument("--alphas", type=_ALPHA, nargs="+", default=None,
                   help="mixing ratios to certify: numbers, 'applied' (the model's own per-example "
                        "ratio) or 'lower' (its guaranteed minimum); 1.0 (robust base alone) is always added")
    p.add_argument("--dataset", default=None,
                   help="data set name (robust_mix.data.load_dataset; default: the entry's, else fashion-mnist)")
    p.add_argument("--preprocessing", default=None,
                   help="ImageNet preprocessing (default: the entry's, else Res256Crop224)")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="test (the official test set, default), or train / val (a fixed partition of the training set)")
    p.add_argument("--n-examples", type=POSITIVE_INT, default=100, help="certify the first N images (default 100)")
    p.add_argument("--data-dir", type=PATH, default=None, help=DATA_DIR_HELP)
    p.add_argument("--model-dir", type=PATH, default=None, help="RobustBench checkpoint folder")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda:0 (default cpu)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=1000, help="noisy images per forward pass")
    p.add_argument("--seed", type=SEED, default=0, help=SEED_HELP)
    add_progress_argument(p)
    p.add_argument("--state-dir", type=PATH, default=None,
                   help="folder for the smoothing samples drawn so far, to resume an interrupted run "
                        "(default: <out>/state)")


def _certify_run(args: argparse.Namespace) -> dict:
    """Load the model and the data, certify (robust_mix.certification), write the report; returns it."""
    check_method(args.method, args.lipschitz, args.norm)  # before loading the model
    smoothing = {k: getattr(args, k) for k in _SMOOTHING if getattr(args, k) is not None}
    if args.method != "smoothing" and smoothing:  # once ignored without a word
        given, them = [f"--{k.replace('_', '-')}" for k in smoothing], "them" if len(smoothing) > 1 else "it"
        raise InvalidInputError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to --method "
                                f"smoothing; --method {args.method} does not use {them}: leave {them} out")
    out = check_writable_dir(args.out)  # before any work
    hold_output_folder(out)
    overrides = {k: getattr(args, k) for k in ("standard", "robust") if getattr(args, k) is not None}
    model = load_model(args.name, model_dir=args.model_dir, device=args.device, **overrides)
    if not isinstance(model, MixedClassifier):
        raise InvalidInputError(f"{args.name} is not a mixed model; certificates are for MixedClassifier models")
    config = model.config
    dataset = args.dataset or (config.dataset if config is not None and config.dataset != "custom"
                               else "fashion-mnist")
    preprocessing = preprocessing_for(dataset, args.preprocessing, config)
    images, labels = load_dataset(dataset, args.split, args.n_examples, args.data_dir, preprocessing=preprocessing)
    about = {**overrides, "dataset": dataset, "split": args.split}
    if preprocessing is not None:
        about["preprocessing"] = preprocessing
    bars = show_bars(progress_requested(args), sys.stderr, terminal_only=True)
    with LogAboveBars(sys.stderr, quiet=False) if bars else contextlib.nullcontext():
        result = certify_model(model, images, labels, name=args.name, method=args.method, **smoothing,
                               lipschitz=args.lipschitz, norm=args.norm,
                               radii=args.radii, alphas=args.alphas, batch_size=args.batch_size, seed=args.seed,
                               progress=bars, about=about, state_dir=args.state_dir or out / "state")
    write_certification(out, result)
    return result.report


@command("certify", "certified accuracy of a model against radius, for several mixing ratios", _certify_args,
         resume="the smoothing samples drawn so far are saved under {out}/state (or --state-dir); rerun the same "
                "command to resume", computes=True)
def _certify(args: argparse.Namespace) -> int:
    report = _certify_run(args)
    headers = ["alpha", "clean %", "abstain %"] + [f"r={r:g}" for r in report["radii"]]
    rows = [[c["label"], f"{100 * c['mixed_clean_accuracy']:.1f}", f"{100 * c['abstain_rate']:.1f}"]
            + [f"{100 * v:.1f}" for v in c["certified_accuracy"]] for c in report["curves"]]
    print(f"certified accuracy (%) of {report['model']} on {report['n_examples']} {report['dataset']} "
          f"images ({report['method']}, {report['norm']}); {report['seconds']} s")
    print(format_table(headers, rows))
    print(f"wrote {args.out}/certify.json and {args.out}/certify.png")
    return 0
