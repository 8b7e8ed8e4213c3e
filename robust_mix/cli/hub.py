"""``robust-mix`` commands for hub: thin wrappers over :mod:`robust_mix.hub`."""
from __future__ import annotations

import argparse
import logging

from robust_mix.cli import NAME_HELP, PATH, command
from robust_mix.loading import load_model
from robust_mix.mixing import MixedClassifier
from robust_mix.results import BenchmarkResult

logger = logging.getLogger(__name__)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help=NAME_HELP)
    p.add_argument("--standard", help="standard base reference (for compositions such as 'mix')")
    p.add_argument("--robust", help="robust base reference (for compositions such as 'mix')")
    p.add_argument("--alpha", type=float, help="fixed mixing ratio in [0, 1] to save instead of the config's "
                                               "(0 = the standard base alone, 1 = the robust base alone)")
    p.add_argument("--benchmark", type=PATH, metavar="REPORT.json", help="benchmark report for the card's results")


def _load_for_sharing(args: argparse.Namespace) -> MixedClassifier:
    overrides = {k: getattr(args, k) for k in ("standard", "robust", "alpha") if getattr(args, k) is not None}
    model = load_model(args.name, **overrides)
    if not isinstance(model, MixedClassifier):
        raise ValueError(f"{args.name} is not a mixed model (it is a {type(model).__name__}); only "
                         "MixedClassifier models can be saved or pushed")
    return model


def _save_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("out_dir", type=PATH, help="folder to write config.json, model.safetensors and README.md into")


@command("save", "save a mixed model as config.json + model.safetensors + README.md", _save_args)
def _save(args: argparse.Namespace) -> int:
    _load_for_sharing(args).save_pretrained(args.out_dir, benchmark=args.benchmark)
    return 0


def _push_args(p: argparse.ArgumentParser) -> None:
    _model_args(p)
    p.add_argument("repo_id", help="Hugging Face repo, 'org/name'")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")


@command("push", "upload a mixed model and its model card to the Hugging Face Hub", _push_args)
def _push(args: argparse.Namespace) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    benchmark = BenchmarkResult.from_json(args.benchmark) if args.benchmark else None  # fail before loading
    model = _load_for_sharing(args)
    try:
        model.push_to_hub(args.repo_id, private=args.private or None, token=args.token, benchmark=benchmark)
    except HfHubHTTPError as err:
        logger.error("the Hub refused the upload: %s", err)
        return 1
    return 0
