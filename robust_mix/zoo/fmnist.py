"""The default zoo: Fashion-MNIST (l_inf, eps = 0.1), trained here with :mod:`robust_mix.train`.

Four entries share two small timm ResNets shipped under ``zoo/weights/``: ``fmnist-standard``
(alpha = 0, only the standard model runs), ``fmnist-robust`` (alpha = 1), ``fmnist-adasmooth``
(the adaptive mixing network) and ``fmnist-mixednuts`` (MixedNUTS output maps, fixed alpha).
Calibrated constants are data written by the recipes (``fmnist-adasmooth-policy.json``,
``fmnist-mixednuts.json``), read here; ``benchmarks/fmnist/train_all.sh`` reproduces them all.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from robust_mix.config import BackboneConfig, ModelConfig, NutsConfig, PolicyConfig, _from_dict
from robust_mix.data import FASHION_MNIST_LABELS
from robust_mix.registry import register_model

logger = logging.getLogger(__name__)

WEIGHTS = Path(__file__).parent / "weights"
PAPER = ("Bai et al., Improving the Accuracy-Robustness Trade-off of Classifiers via Adaptive Smoothing, "
         "SIMODS 2024; Bai et al., MixedNUTS, TMLR 2024")
RECIPES = "Trained with benchmarks/fmnist/train_all.sh (robust_mix.train recipes); logs in benchmarks/fmnist/logs."


def _common(name: str, description: str) -> dict:
    return dict(
        name=name, dataset="fashion-mnist", threat_model="Linf", eps=0.1, num_classes=10, input_shape=(1, 28, 28),
        standard=BackboneConfig(ref="weights/fmnist-standard.safetensors", license="MIT"),
        robust=BackboneConfig(ref="weights/fmnist-robust.safetensors", license="MIT"),
        labels=list(FASHION_MNIST_LABELS), description=f"{description} {RECIPES}", paper=PAPER,
        license="MIT", reported=None)


def _read(name: str) -> dict:
    return json.loads((WEIGHTS / name).read_text())


register_model(ModelConfig(alpha=0.0, **_common(
    "fmnist-standard", "Fashion-MNIST standard base (timm ResNet, 0.5 M parameters, standard training); "
                       "the mix at alpha = 0, only this model runs.")))

register_model(ModelConfig(alpha=1.0, **_common(
    "fmnist-robust", "Fashion-MNIST robust base (same ResNet, PGD-7 adversarial training at eps 0.1); "
                     "the mix at alpha = 1, only this model runs.")))


def _register_calibrated() -> None:
    try:
        policy = _from_dict(PolicyConfig, _read("fmnist-adasmooth-policy.json"))
        nuts = _read("fmnist-mixednuts.json")
    except FileNotFoundError as err:  # a source checkout before the recipes ran
        logger.warning("Fashion-MNIST adaptive/MixedNUTS entries not registered: %s", err)
        return
    register_model(ModelConfig(
        alpha=None, policy=policy, weights={"file": "weights/fmnist-adasmooth-policy.safetensors"},
        **_common("fmnist-adasmooth", "Adaptive smoothing of the two Fashion-MNIST bases: a mixing network "
                                      "reads layer1/layer2 features of both and sets alpha per input.")))
    register_model(ModelConfig(
        alpha=nuts["alpha"], nuts=_from_dict(NutsConfig, nuts["nuts"]),
        **_common("fmnist-mixednuts", "MixedNUTS on the two Fashion-MNIST bases: hard-max standard map, "
                                      "calibrated nonlinear robust map, fixed alpha (validation split).")))


_register_calibrated()
