"""The default zoo: Fashion-MNIST (l_inf, eps = 0.1), trained here with :mod:`robust_mix.train`.

Four entries share two small timm ResNets shipped in the package (``zoo/weights/``):
``fmnist-standard`` (alpha = 0, only the standard model runs), ``fmnist-robust`` (alpha = 1),
``fmnist-adasmooth`` (the adaptive mixing network) and ``fmnist-mixednuts`` (MixedNUTS output
maps, fixed alpha). What the recipes produced is data read here through ``importlib.resources``:
``manifest.json`` (each weight file's SHA-256 and the bases' architecture), the calibrated
constants ``fmnist-adasmooth-policy.json`` and ``fmnist-mixednuts.json``;
``benchmarks/fmnist/train_all.sh`` reproduces them all.

:data:`DEMO_ROWS` are the rows the zoo is shown with (``robust-mix demo``); their reference results on
the first 1,000 test images ship as :data:`REFERENCE_FILE`, written by
``python benchmarks/fmnist/claim.py --publish``.
"""
from __future__ import annotations

import importlib.resources
import json
import logging
from typing import Any

from robust_mix.config import BackboneConfig, ModelConfig, NutsConfig, PolicyConfig, WeightsConfig, from_dict
from robust_mix.data import FASHION_MNIST_LABELS
from robust_mix.reference import RowSpec
from robust_mix.registry import register_model

logger = logging.getLogger(__name__)

WEIGHTS = "zoo/weights"
PAPER = ("Bai et al., Improving the Accuracy-Robustness Trade-off of Classifiers via Adaptive Smoothing, "
         "SIMODS 2024; Bai et al., MixedNUTS, TMLR 2024")
#: The main job's rows (``robust-mix demo``), and the rows of the shipped reference results. The keys
#: ``standard`` and ``robust`` name the two bases (the claim's ratios are taken against them).
DEMO_ROWS = (
    RowSpec("standard", "standard base", "fmnist-standard"),
    RowSpec("robust", "robust base", "fmnist-robust"),
    RowSpec("fixed", "fixed-ratio mix", "fmnist-robust,alpha=0.9"),
    RowSpec("mixednuts", "MixedNUTS", "fmnist-mixednuts"),
    RowSpec("adaptive", "adaptive smoothing", "fmnist-adasmooth", adaptive=True),
)
#: Reference results of :data:`DEMO_ROWS` (a :class:`robust_mix.reference.Reference`), package data.
REFERENCE_FILE = f"{WEIGHTS}/fmnist-reference.json"
RECIPES = "Trained with benchmarks/fmnist/train_all.sh (robust_mix.train recipes); logs in benchmarks/fmnist/logs."


def read_shipped(name: str) -> Any:
    """A JSON file shipped in ``robust_mix/zoo/weights/``."""
    return json.loads(importlib.resources.files("robust_mix").joinpath(f"{WEIGHTS}/{name}").read_text())


def _weights(entry: dict[str, Any]) -> WeightsConfig:
    return WeightsConfig(package=f"{WEIGHTS}/{entry['file']}", sha256=entry["sha256"])


def _base(entry: dict[str, Any]) -> BackboneConfig:
    return BackboneConfig(ref=entry["ref"], kwargs=entry.get("kwargs", {}), weights=_weights(entry), license="MIT")


def _common(manifest: dict[str, Any], name: str, description: str) -> dict:
    return dict(
        name=name, dataset="fashion-mnist", threat_model="Linf", eps=0.1, num_classes=10, input_shape=(1, 28, 28),
        standard=_base(manifest["fmnist-standard"]), robust=_base(manifest["fmnist-robust"]),
        labels=list(FASHION_MNIST_LABELS), description=f"{description} {RECIPES}", paper=PAPER,
        license="MIT", reported=None)


def register() -> None:
    """Register the four entries from the shipped data (none, with a warning, in a checkout that lacks it)."""
    try:
        manifest = read_shipped("manifest.json")
    except FileNotFoundError as err:  # a source checkout before benchmarks/fmnist/export.py ran
        logger.warning("Fashion-MNIST entries not registered: %s", err)
        return
    register_model(ModelConfig(alpha=0.0, **_common(
        manifest, "fmnist-standard", "Fashion-MNIST standard base (timm ResNet, standard training); "
                                     "the mix at alpha = 0, only this model runs.")))
    register_model(ModelConfig(alpha=1.0, **_common(
        manifest, "fmnist-robust", "Fashion-MNIST robust base (same ResNet family, PGD adversarial training at "
                                   "eps 0.1); the mix at alpha = 1, only this model runs.")))
    policy = from_dict(PolicyConfig, read_shipped("fmnist-adasmooth-policy.json"))
    taps = "/".join(dict.fromkeys([*policy.standard_layers, *policy.robust_layers]))
    register_model(ModelConfig(
        alpha=None, policy=policy, weights=_weights(manifest["fmnist-adasmooth-policy"]),
        **_common(manifest, "fmnist-adasmooth", f"Adaptive smoothing of the two Fashion-MNIST bases: a mixing "
                                                f"network reads {taps} features of both and sets alpha per input.")))
    nuts = read_shipped("fmnist-mixednuts.json")
    register_model(ModelConfig(
        alpha=nuts["alpha"], nuts=from_dict(NutsConfig, nuts["nuts"]),
        **_common(manifest, "fmnist-mixednuts", "MixedNUTS on the two Fashion-MNIST bases: hard-max standard map, "
                                                "calibrated nonlinear robust map, fixed alpha (validation split).")))


register()
