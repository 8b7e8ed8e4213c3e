"""robust_mix: accurate and robust classifiers by mixing a standard and a robust model.

Importing the package registers the zoo, mirrors it into timm's registry, where timm and
RobustBench find it (:mod:`robust_mix.timm_plugin`), and gives RobustBench the AutoAttack interface
it calls, on the registry's pyautoattack (:mod:`robust_mix._compat`).
"""
import logging

from robust_mix import _compat  # noqa: F401  (must run before robustbench is imported)
from robust_mix.version import __version__
from robust_mix.backbones import BackboneNotFoundError, load_backbone, save_backbone
from robust_mix.config import (BackboneConfig, InputConfig, ModelConfig, NutsConfig, PolicyConfig,
                               ReportedResult, WeightsConfig)
from robust_mix.mixing import AdaptiveAlpha, MixedClassifier, MixedOutput, build_adaptive_policy
from robust_mix.registry import get_model_config, is_model, list_models, register_model
from robust_mix.loading import build_model, load_model, parse_model_name
from robust_mix import zoo  # noqa: F401  (registers the entries)
from robust_mix import timm_plugin  # noqa: F401  (mirrors them, and later ones, into timm's registry)
from robust_mix._compat_autoattack import autoattack_settings
from robust_mix.results import BenchmarkResult
from robust_mix.benchmark import benchmark
from robust_mix import certify  # noqa: F401  (robust_mix.certify.lipschitz_radius, ...)

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AdaptiveAlpha", "BackboneConfig", "BackboneNotFoundError", "BenchmarkResult", "InputConfig",
    "MixedClassifier", "MixedOutput", "ModelConfig", "NutsConfig", "PolicyConfig", "ReportedResult",
    "WeightsConfig", "__version__", "autoattack_settings", "benchmark", "build_adaptive_policy", "build_model", "get_model_config",
    "is_model", "list_models", "load_backbone", "load_model", "parse_model_name", "register_model",
    "save_backbone",
]
