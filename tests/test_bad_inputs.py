"""Bad input, as a careless user gives it, through the API and the CLI: each gets a clear error that
names the offending value (an exception of the documented type, or an exit code and one ``error:``
line), never a silently wrong number. Every row of the tables below is one such call.

The validation itself lives in ``robust_mix.validate``; these tables exercise it through the entry
points users call (``load_model``, ``benchmark``, ``sweep``, the certificates, reports, ``submit``,
training recipes, the ``robust-mix`` commands).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import robust_mix
from conftest import make_tiny
from robust_mix.protocol import STANDARD_STAGES, AttackOptions
from robust_mix.benchmark import BenchmarkResult, benchmark, predict
from robust_mix.certification import certify_model
from robust_mix.certify import (certified_accuracy, certify_lipschitz, certify_smoothing, estimate_smoothed,
                                lipschitz_radius, margin, sample_counts)
from robust_mix.cli import main
from robust_mix.config import ModelConfig
from robust_mix.report import PartialEvaluationError, SubmissionMismatchError, check_submission
from robust_mix.sweep import parse_alphas, sweep
from robust_mix.train import BackboneRecipe, RunOptions, accuracy, apply_settings, get_recipe, pgd_accuracy
from robust_mix.validate import (InvalidInputError, InvalidInputTypeError, NonFiniteOutputError, check_writable_dir,
                                 parse_eps)

torch.set_num_threads(1)

TESTS = Path(__file__).parent
FAST = AttackOptions(n_iter=1)
FAST_CLI = ["--attack", "apgd-ce", "--n-iter", "1"]
SHAPE = (1, 28, 28)


def tiny_model() -> robust_mix.MixedClassifier:
    """A small real mixture with a declared input contract (also ``test_bad_inputs:tiny_model`` for the CLI)."""
    config = ModelConfig(name="tiny-bad-inputs", dataset="fashion-mnist", eps=0.1, num_classes=10,
                         input_shape=SHAPE, alpha=0.6)
    return robust_mix.MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.6, config=config)


def batchnorm_classifier() -> nn.Module:
    """A plain classifier with a BatchNorm layer (running statistics to write into in training mode)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))


def images(n: int = 6, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))


LABELS = torch.arange(6)


def robustbench_load(*args, **kwargs):
    """RobustBench's own loader, which reaches registry entries through timm (robust_mix.timm_plugin)."""
    import robustbench.utils

    return robustbench.utils.load_model(*args, **kwargs)


def timm_create(*args, **kwargs):
    import timm

    return timm.create_model(*args, **kwargs)


def robustbench_clean_accuracy(*args, **kwargs):
    """RobustBench's clean accuracy, which counted whatever it was given (robust_mix._compat checks it now)."""
    import robustbench.utils

    return robustbench.utils.clean_accuracy(*args, **kwargs)


def predictions() -> torch.Tensor:
    """``tiny_model``'s own classes for ``images()``: every example is clean-correct, so all are attacked."""
    with torch.no_grad():
        return tiny_model()(images()).argmax(dim=1)


def bench(model: nn.Module | None = None, **overrides):
    kwargs = dict(images=images(), labels=LABELS, eps=0.1, batch_size=6, attack="apgd-ce", device="cpu",
                  options=FAST)
    kwargs.update(overrides)
    return benchmark(model if model is not None else tiny_model(), **kwargs)


def quick_sweep(alphas, model=None, **overrides):
    """``sweep`` of ``tiny_model`` on ``images()`` with one APGD-CE iteration (a bad input let through runs quickly)."""
    kwargs = dict(images=images(), labels=LABELS, eps=0.1, batch_size=6, attack="apgd-ce", device="cpu", options=FAST)
    kwargs.update(overrides)
    return sweep(model if model is not None else tiny_model(), alphas, **kwargs)


def with_pixel(value: float, index: int = 2) -> torch.Tensor:
    x = images()
    x[index, 0, 3, 3] = value
    return x


class NonFinite(nn.Module):
    """``tiny_model`` whose scores are ``value`` for chosen examples (``rows`` of the clean images) or for
    every input that is not one of the clean images (``perturbed=True``: only the attacks see them)."""

    def __init__(self, value: float, rows: list[int] | None = None, perturbed: bool = False) -> None:
        super().__init__()
        self.inner, self.value, self.perturbed = tiny_model(), value, perturbed
        clean = images()
        self.bad = {self._key(clean[i]) for i in (rows or [])}
        self.clean = {self._key(x) for x in clean}
        self.num_classes = 10

    @staticmethod
    def _key(x: torch.Tensor) -> bytes:
        return x.detach().cpu().numpy().tobytes()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        keys = [self._key(row) for row in x]
        bad = [(k not in self.clean) if self.perturbed else (k in self.bad) for k in keys]
        mask = torch.tensor(bad, device=out.device)[:, None]
        return torch.where(mask, torch.full_like(out, self.value), out)


class Scores(nn.Module):
    """``tiny_model`` whose output is changed by ``how``: probabilities, a tuple, one score per image,
    5 of the 10 classes (and no ``num_classes`` to check labels against)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.inner, self.how = tiny_model(), how

    def forward(self, x: torch.Tensor):
        out = self.inner(x)
        return {"probabilities": lambda: out.exp(), "tuple": lambda: (out, out), "vector": lambda: out[:, 0],
                "5 classes": lambda: out[:, :5]}[self.how]()


def fixed_model() -> robust_mix.MixedClassifier:
    return robust_mix.load_model("fmnist-robust")


def set_attr(obj, name, value):
    setattr(obj, name, value)


A_FILE_NAME = "a_file"


@pytest.fixture
def under_a_file(tmp_path) -> Path:
    """A folder path that cannot be created, even as root: its parent is a regular file."""
    (tmp_path / A_FILE_NAME).write_text("not a folder")
    return tmp_path / A_FILE_NAME / "out"


# -- the API ---------------------------------------------------------------------------------------
# (id, call, exception type, fragment of the message that names the offending value)
COUNTS = [
    ("n_examples=0", lambda: bench(n_examples=0), InvalidInputError, "n_examples must be a positive integer (>= 1), got 0"),
    ("n_examples=-5", lambda: bench(n_examples=-5), InvalidInputError, "got -5"),
    ("n_examples=2.5", lambda: bench(n_examples=2.5), InvalidInputTypeError, "n_examples must be an integer, got 2.5"),
    ("n_examples='5'", lambda: bench(n_examples="5"), TypeError, "got '5' (str)"),
    ("n_examples=True", lambda: bench(n_examples=True), TypeError, "got True (bool)"),
    ("batch_size=0", lambda: bench(batch_size=0), InvalidInputError, "batch_size must be a positive integer (>= 1), got 0"),
    ("batch_size=-3", lambda: bench(batch_size=-3), InvalidInputError, "batch_size must be a positive integer (>= 1), got -3"),
    ("batch_size=2.5", lambda: bench(batch_size=2.5), TypeError, "batch_size must be an integer, got 2.5"),
    ("chunk_size=0", lambda: bench(chunk_size=0), InvalidInputError, "chunk_size must be a positive integer (>= 1), got 0"),
    ("chunk_size=-1", lambda: bench(chunk_size=-1), InvalidInputError, "got -1"),
    ("chunk_size=1.5", lambda: bench(chunk_size=1.5), TypeError, "chunk_size must be an integer, got 1.5"),
    ("seed=1.5", lambda: bench(seed=1.5), TypeError, "seed must be an integer, got 1.5"),
    ("seed=-1 (the one rule of seeds, the recipes' too)", lambda: bench(seed=-1), InvalidInputError,
     "seed must be an integer >= 0, got -1"),
    ("AttackOptions(n_iter=0)", lambda: AttackOptions(n_iter=0), InvalidInputError, "n_iter must be a positive integer (>= 1), got 0"),
    ("AttackOptions(n_queries=-1)", lambda: AttackOptions(n_queries=-1), InvalidInputError, "n_queries must be a positive integer (>= 1), got -1"),
    ("L1 APGD with n_iter=1 (failed inside pyautoattack)", lambda: bench(threat_model="L1", eps=5.0), InvalidInputError,
     "the apgd-ce attack runs 1 iteration(s), but under L1 pyautoattack splits APGD's iterations into rounds"),
    ("L1 APGD-T with n_iter=2 (no iteration at eps)",
     lambda: bench(threat_model="L1", eps=5.0, attack="apgd-t", options=AttackOptions(n_iter=2, n_target_classes=2)),
     InvalidInputError, "needs at least 3; pass options=AttackOptions(n_iter=3) or more (--n-iter 3)"),
    ("load_dataset(n_examples=-5)", lambda: robust_mix.data.load_dataset("fashion-mnist", "test", -5),
     InvalidInputError, "n_examples must be a positive integer (>= 1), got -5"),
]
EPS = [
    ("eps=-0.1", lambda: bench(eps=-0.1), InvalidInputError, "eps must be a finite number in (0, 1]"),
    ("eps=-0.1 names it", lambda: bench(eps=-0.1), InvalidInputError, "got -0.1"),
    ("eps=0", lambda: bench(eps=0.0), InvalidInputError, "got 0.0"),
    ("eps=1.5 (Linf)", lambda: bench(eps=1.5), InvalidInputError, "8/255 = 0.0314), got 1.5"),
    ("eps=nan", lambda: bench(eps=float("nan")), InvalidInputError, "got nan"),
    ("eps=inf", lambda: bench(eps=float("inf")), InvalidInputError, "got inf"),
    ("eps='8/0'", lambda: bench(eps="8/0"), InvalidInputError, "got '8/0' (it divides by zero)"),
    ("eps='abc'", lambda: bench(eps="abc"), InvalidInputError,
     "eps must be a number like 0.1 or a fraction like 8/255, got 'abc' (not a number)"),
    ("eps=True", lambda: bench(eps=True), TypeError, "got True (bool)"),
    ("parse_eps('8/0')", lambda: parse_eps("8/0"), InvalidInputError, "got '8/0' (it divides by zero)"),
    ("parse_eps('1/255/2')", lambda: parse_eps("1/255/2"), InvalidInputError, "got '1/255/2' (not a number)"),
    ("threat_model='Linf2'", lambda: bench(threat_model="Linf2"), InvalidInputError,
     "threat_model must be one of ['Linf', 'L2', 'L1'], got 'Linf2'"),
    ("threat_model='linf'", lambda: bench(threat_model="linf"), InvalidInputError,
     "threat_model must be one of ['Linf', 'L2', 'L1'], got 'linf' (names are case-sensitive, as in RobustBench: "
     "did you mean 'Linf'?)"),
    ("threat_model='l_inf'", lambda: bench(threat_model="l_inf"), InvalidInputError, "got 'l_inf' (names are "
     "case-sensitive, as in RobustBench: did you mean 'Linf'?)"),
    ("threat_model='L-2'", lambda: bench(threat_model="L-2", eps=0.5), InvalidInputError, "did you mean 'L2'?"),
    ("threat_model='corruptions' (a Fashion-MNIST entry)", lambda: bench(threat_model="corruptions"), InvalidInputError,
     "'corruptions' is RobustBench's common-corruptions benchmark (accuracy on corrupted images, no attack, no eps)"),
    ("threat_model=2", lambda: bench(threat_model=2), InvalidInputError,
     "threat_model must be one of ['Linf', 'L2', 'L1'], got 2"),
    ("threat_model='L2' without eps, on a Linf entry", lambda: bench(threat_model="L2", eps=None), InvalidInputError,
     "eps is not set for threat_model='L2': the model's config has eps=0.1 for its own threat model 'Linf'"),
    ("eps=128 under L2 (255ths)", lambda: bench(threat_model="L2", eps=128), InvalidInputError,
     "eps=128 under L2 is larger than 28, the largest L2 distance between two images of shape (1, 28, 28) with "
     "pixels in [0, 1]: every image lies within it, so robust accuracy would measure nothing. Budgets are in [0, 1] "
     "pixel units, not 255ths: 128/255 is eps=0.502"),
    ("eps=800 under L1", lambda: bench(threat_model="L1", eps=800), InvalidInputError,
     "eps=800 under L1 is larger than 784, the largest L1 distance"),
    ("a sweep with eps=128 under L2", lambda: quick_sweep([0.5], threat_model="L2", eps=128), InvalidInputError,
     "eps=128 under L2 is larger than 28"),
    ("dataset=10", lambda: bench(dataset=10), TypeError, "dataset must be a data set name such as 'cifar10'"),
    ("unknown attack stage", lambda: bench(attack="apgd-xx"), ValueError, "unknown attack stage(s) ['apgd-xx']"),
]
LABEL_CASES = [
    ("label 10 of 10 classes", lambda: bench(labels=torch.tensor([0, 1, 2, 10, 4, 5])), InvalidInputError,
     "labels must lie in [0, 10), got [10] at indices [3]"),
    ("label -1", lambda: bench(labels=torch.tensor([0, -1, 2, 3, 4, 5])), InvalidInputError, "got [-1] at indices [1]"),
    ("label -1, no class count", lambda: robust_mix.validate.check_labels(torch.tensor([0, -1])), InvalidInputError,
     "labels must be >= 0, got [-1] at indices [1]"),
    ("float labels", lambda: bench(labels=torch.tensor([0., 1., 2.5, 3., 4., 5.])), TypeError, "got torch.float32"),
    ("bool labels", lambda: bench(labels=torch.ones(6, dtype=torch.bool)), TypeError, "got torch.bool"),
    ("5 labels for 6 images", lambda: bench(labels=torch.arange(5)), InvalidInputError, "got 5 labels for 6 images"),
    ("7 labels for 6 images", lambda: bench(labels=torch.arange(7)), InvalidInputError, "got 7 labels for 6 images"),
    ("labels (6, 1)", lambda: bench(labels=torch.zeros(6, 1, dtype=torch.long)), InvalidInputError,
     "got shape (6, 1); use labels.reshape(-1)"),
    ("one-hot labels", lambda: bench(labels=torch.eye(10, dtype=torch.long)[:6]), InvalidInputError,
     "got shape (6, 10); one-hot labels? use labels.argmax(dim=1)"),
    ("labels as a list", lambda: bench(labels=[0, 1, 2, 3, 4, 5]), TypeError, "got list"),
    ("no labels", lambda: bench(labels=None), ValueError, "images were given without labels"),
    ("labels without images", lambda: bench(images=None, dataset="fashion-mnist", n_examples=6), ValueError,
     "labels were given without images"),
    ("n_examples beyond the images given", lambda: bench(n_examples=7), InvalidInputError,
     "n_examples is 7, but only 6 images were given; pass n_examples <= 6"),
]
IMAGES = [
    ("14x14 for a 28x28 model", lambda: bench(images=images(shape=(1, 14, 14))), InvalidInputError,
     "got (6, 1, 14, 14): 14x14 instead of 28x28; resize with torch.nn.functional.interpolate"),
    ("32x32 for a 28x28 model", lambda: bench(images=images(shape=(1, 32, 32))), InvalidInputError,
     "32x32 instead of 28x28"),
    ("3 channels for 1", lambda: bench(images=images(shape=(3, 28, 28))), InvalidInputError,
     "3 channels instead of 1; convert to grayscale"),
    ("uint8 pixels", lambda: bench(images=(images() * 255).to(torch.uint8)), TypeError,
     "got torch.uint8 (0-255 pixels: use images.float() / 255)"),
    ("pixels in [0, 255]", lambda: bench(images=images() * 255), InvalidInputError, "divide by 255"),
    ("normalised pixels", lambda: bench(images=images() * 4 - 2), InvalidInputError, "normalised images?"),
    ("3-D batch", lambda: bench(images=images()[:, 0]), InvalidInputError, "got (6, 28, 28); add the batch dimension"),
    ("NaN pixel", lambda: bench(images=with_pixel(float("nan"))), InvalidInputError, "NaN or inf values at examples [2]"),
    ("inf pixel", lambda: bench(images=with_pixel(float("inf"), 4)), InvalidInputError, "NaN or inf values at examples [4]"),
    ("pixel 1.5", lambda: bench(images=with_pixel(1.5, 1)), InvalidInputError, "maximum of 1.5 at examples [1]"),
    ("float64 for a float32 model", lambda: bench(images=images().double()), TypeError,
     "images are torch.float64 but the model computes in torch.float32"),
    ("images as a list", lambda: bench(images=[images()]), TypeError, "got list"),
    ("forward 14x14", lambda: tiny_model()(images(2, (1, 14, 14))), InvalidInputError, "14x14 instead of 28x28"),
    ("forward 3 channels (adaptive entry)", lambda: robust_mix.load_model("fmnist-adasmooth")(images(2, (3, 28, 28))),
     InvalidInputError, "3 channels instead of 1"),
    ("forward uint8", lambda: tiny_model()((images(2) * 255).to(torch.uint8)), TypeError, "got torch.uint8"),
    ("channels-last (NHWC) batch", lambda: bench(images=images().permute(0, 2, 3, 1)), InvalidInputError,
     "channels-last (B, H, W, C) images? use images.permute(0, 3, 1, 2)"),
    ("forward channels-last", lambda: tiny_model()(images(2).permute(0, 2, 3, 1)), InvalidInputError,
     "images.permute(0, 3, 1, 2)"),
    ("channels-last batch of another size (was: '32 channels instead of 1; convert to grayscale')",
     lambda: bench(images=images(shape=(32, 32, 1))), InvalidInputError,
     "channels-last (B, H, W, C) images? use images.permute(0, 3, 1, 2) (channels first), then resize them from "
     "32x32 to 28x28"),
    ("channels-last batch, a model that declares no input shape (a convolution's channel error)",
     lambda: bench(make_tiny(0), images=images().permute(0, 2, 3, 1)), InvalidInputError,
     "got 28 channels instead; check the data set (dataset=, --dataset) against the input the model was built for; "
     "channels-last (B, H, W, C) images? use images.permute(0, 3, 1, 2)"),
    ("forward, images on another device than the model (a device-mismatch RuntimeError from a layer)",
     lambda: tiny_model().to("meta")(images(2)), InvalidInputError,
     "images are on cpu but the model is on meta; move them with images.to('meta')"),
    ("certify_lipschitz, images on another device", lambda: certify_lipschitz(tiny_model().to("meta"), images(2),
                                                                              lipschitz=1.0),
     InvalidInputError, "images are on cpu but the model is on meta"),
    ("certify_smoothing, images on another device", lambda: certify_smoothing(tiny_model().to("meta"), images(2),
                                                                              sigma=0.1, n0=2, n=4),
     InvalidInputError, "images are on cpu but the model is on meta"),
    ("empty batch", lambda: bench(images=images()[:0], labels=LABELS[:0]), InvalidInputError,
     "images hold no examples (shape (0, 1, 28, 28))"),
]
OUTPUTS = [
    ("NaN for every input (the issue's example)",
     lambda: bench(robust_mix.load_model("fmnist-robust", alpha=0.9), images=torch.full((6, *SHAPE), float("nan"))),
     InvalidInputError, "NaN or inf values at examples [0, 1, 2, 3, 4, 5]"),
    ("NaN scores for two examples", lambda: bench(NonFinite(float("nan"), rows=[1, 4])), NonFiniteOutputError,
     "NaN or inf scores for examples [1, 4] (2 of 6)"),
    ("+inf score for one example", lambda: bench(NonFinite(float("inf"), rows=[2])), NonFiniteOutputError,
     "for examples [2] (1 of 6)"),
    ("-inf scores for every class", lambda: bench(NonFinite(float("-inf"), rows=[0])), NonFiniteOutputError,
     "for examples [0] (1 of 6)"),
    ("NaN only on perturbed inputs", lambda: bench(NonFinite(float("nan"), perturbed=True), labels=predictions()),
     NonFiniteOutputError, "during the apgd-ce attack on examples"),
    ("probabilities, not logits", lambda: bench(Scores("probabilities")), InvalidInputError,
     "the model returns probabilities (each row sums to 1)"),
    ("a tuple of outputs", lambda: bench(Scores("tuple")), InvalidInputTypeError,
     "the model must return a tensor of class scores (B, K), got tuple"),
    ("one score per image", lambda: bench(Scores("vector")), InvalidInputError,
     "the model must return class scores of shape (B, K)"),
    ("labels beyond the classes the model scores", lambda: bench(Scores("5 classes")), InvalidInputError,
     "the model scores 5 classes but labels go up to 5"),
    ("predict(batch_size=0)", lambda: predict(tiny_model(), images(), 0, torch.device("cpu")), InvalidInputError,
     "batch_size must be a positive integer (>= 1), got 0"),
    ("predict with a model in train mode", lambda: predict(make_tiny(0).train(), images(), 6, torch.device("cpu")),
     InvalidInputError, "the model is in training mode"),
]
ALPHA = [
    ("alpha=None on a fixed entry", lambda: robust_mix.load_model("fmnist-robust", alpha=None), InvalidInputError,
     "alpha=None means 'the entry's own adaptive policy', but 'fmnist-robust' has a fixed ratio"),
    ("alpha=None on MixedNUTS", lambda: robust_mix.load_model("fmnist-mixednuts", alpha=None), InvalidInputError,
     "'fmnist-mixednuts' has a fixed ratio"),
    ("alpha=-0.1", lambda: robust_mix.load_model("fmnist-robust", alpha=-0.1), InvalidInputError, "got -0.1"),
    ("alpha=1.1", lambda: robust_mix.load_model("fmnist-robust", alpha=1.1), InvalidInputError,
     "alpha must lie in [0, 1] (0 = standard model only, 1 = robust model only), got 1.1"),
    ("alpha=nan", lambda: robust_mix.load_model("fmnist-robust", alpha=float("nan")), InvalidInputError, "got nan"),
    ("alpha=True", lambda: robust_mix.load_model("fmnist-robust", alpha=True), TypeError, "got True (bool)"),
    ("alpha='0.5'", lambda: robust_mix.load_model("fmnist-robust", alpha="0.5"), TypeError, "got '0.5' (str)"),
    ("alpha=2 on an adaptive entry", lambda: robust_mix.load_model("fmnist-adasmooth", alpha=2), InvalidInputError, "got 2"),
    ("model.alpha = 1.5", lambda: set_attr(fixed_model(), "alpha", 1.5), InvalidInputError, "got 1.5"),
    ("model.alpha = None without a policy", lambda: set_attr(fixed_model(), "alpha", None), InvalidInputError,
     "alpha=None means 'the adaptive policy', but this model has none"),
    ("alpha_range=(0.9, 0.1)", lambda: robust_mix.load_model("fmnist-adasmooth", alpha_range=(0.9, 0.1)),
     InvalidInputError, "got (0.9, 0.1) (lo > hi)"),
    ("alpha_range=(0.5, 1.5)", lambda: robust_mix.load_model("fmnist-adasmooth", alpha_range=(0.5, 1.5)),
     InvalidInputError, "with 0 <= lo <= hi <= 1, got (0.5, 1.5)"),
    ("alpha_range=(nan, 1)", lambda: robust_mix.load_model("fmnist-adasmooth", alpha_range=(float("nan"), 1.0)),
     InvalidInputError, "got (nan, 1.0)"),
    ("alpha_range=0.5", lambda: robust_mix.load_model("fmnist-adasmooth", alpha_range=0.5), TypeError, "got 0.5"),
    ("alpha_range of 3", lambda: robust_mix.load_model("fmnist-adasmooth", alpha_range=(0.1, 0.2, 0.3)), TypeError,
     "got (0.1, 0.2, 0.3)"),
    ("alpha_range on a fixed entry", lambda: robust_mix.load_model("fmnist-robust", alpha_range=(0.1, 0.9)),
     TypeError, "'alpha_range' applies to adaptive models only; 'fmnist-robust' has a fixed ratio"),
]
NAMES = [
    ("unknown model", lambda: robust_mix.load_model("fmnist-robustt"), KeyError, "unknown model 'fmnist-robustt'"),
    ("unknown override", lambda: robust_mix.load_model("fmnist-robust", alpah=0.9), TypeError, "unknown override 'alpah'"),
    ("std_scale=-1", lambda: robust_mix.load_model("fmnist-robust", std_scale=-1), InvalidInputError,
     "std_scale must be a finite number > 0, got -1"),
    ("mixing='geometric'", lambda: robust_mix.load_model("fmnist-robust", mixing="geometric"), TypeError,
     "mixing must be one of 'prob', 'logit', got 'geometric'"),
    ("eps='abc' override", lambda: robust_mix.load_model("fmnist-robust", eps="abc"), TypeError, "got 'abc' (str)"),
    ("input_shape=(1, 28)", lambda: robust_mix.load_model("fmnist-robust", input_shape=(1, 28)), TypeError,
     "input_shape must be a list of 3 integers or None, got (1, 28)"),
    ("num_classes=0", lambda: robust_mix.load_model("fmnist-robust", num_classes=0), InvalidInputError,
     "num_classes must be a positive integer (>= 1), got 0"),
    ("input_shape with 3 channels for 1-channel bases (in the name)",
     lambda: robust_mix.load_model("fmnist-robust,input_shape=[3,32,32]"), InvalidInputError,
     "input channel counts do not match (input_shape (3, 32, 32): 3, the standard base's in_chans: 1, the robust "
     "base's in_chans: 1)"),
    ("input_shape with 3 channels for 1-channel bases", lambda: robust_mix.load_model("fmnist-robust",
                                                                                      input_shape=(3, 32, 32)),
     InvalidInputError, "give input_shape the bases' channel count"),
    ("input_shape with 3 channels, adaptive entry", lambda: robust_mix.load_model("fmnist-adasmooth",
                                                                                  input_shape=(3, 28, 28)),
     InvalidInputError, "input_shape (3, 28, 28): 3, policy.input_shape (1, 28, 28): 1"),
    ("one label name for 10 classes", lambda: robust_mix.load_model("fmnist-robust", labels=["a"]), InvalidInputError,
     "class counts do not match (num_classes: 10, labels (one name per class): 1"),
    ("num_classes=5 for 10-class bases", lambda: robust_mix.load_model("fmnist-robust", num_classes=5),
     InvalidInputError, "class counts do not match (num_classes: 5, labels (one name per class): 10, the "
     "standard base's num_classes: 10, the robust base's num_classes: 10)"),
    ("unknown data set", lambda: benchmark(tiny_model(), "cifar11", n_examples=2), ValueError, "unknown dataset 'cifar11'"),
    ("preprocessing='Res257'", lambda: robust_mix.load_model("fmnist-robust", preprocessing="Res257"), InvalidInputError,
     "preprocessing must be one of ['Res256Crop224', 'BicubicRes256Crop224', 'Crop288', 'Res224'], got 'Res257'"),
    ("threat_model='Linfinity' (a config, through overrides)",
     lambda: robust_mix.load_model("fmnist-robust", threat_model="Linfinity"), InvalidInputError,
     "threat_model must be one of ['Linf', 'L2', 'L1'], got 'Linfinity'"),
    ("RobustBench name, data set the entry lacks",
     lambda: robustbench_load("RobustMix-AdaSmooth", dataset="imagenet", threat_model="Linf"), KeyError,
     "is robust_mix's for dataset='cifar10', threat_model='Linf' (entry 'cifar10-adasmooth')"),
    ("RobustBench name, threat model the entry lacks",
     lambda: robustbench_load("RobustMix-MixedNUTS", dataset="cifar10", threat_model="L2"), KeyError,
     "not for dataset='cifar10', threat_model='L2'"),
    ("timm num_classes", lambda: timm_create("robustmix_adasmooth_cifar100_linf", num_classes=10), ValueError,
     "robustmix_adasmooth_cifar100_linf classifies 100 classes (cifar100), num_classes=10 was asked for"),
]
FLAGS = [
    ("load_model(pretrained='no')", lambda: robust_mix.load_model("fmnist-robust", pretrained="no"),
     InvalidInputTypeError, "pretrained must be True or False, got 'no' (str)"),
    ("load_model(pretrained=0)", lambda: robust_mix.load_model("fmnist-robust", pretrained=0), InvalidInputTypeError,
     "pretrained must be True or False, got 0 (int)"),
    ("from_config(pretrained='no')", lambda: robust_mix.MixedClassifier.from_config(
        robust_mix.registry.get_model_config("fmnist-robust"), pretrained="no"), InvalidInputTypeError,
     "pretrained must be True or False, got 'no'"),
    ("benchmark(adaptive='no')", lambda: bench(adaptive="no"), InvalidInputTypeError,
     "adaptive must be True or False, got 'no' (str)"),
    ("model(x, return_alpha='no') (read as true)", lambda: tiny_model()(images(2), return_alpha="no"),
     InvalidInputTypeError, "return_alpha must be True or False, got 'no' (str)"),
    ("benchmark(progress=True) (an AttributeError once the run began)", lambda: bench(progress=True),
     InvalidInputTypeError, "progress must be None or a robust_mix.benchmark.Progress (an object with methods start(), "
     "advance()), got True (bool); here progress receives progress events, it is not a flag"),
    ("sweep(progress=True)", lambda: quick_sweep([1.0], progress=True), InvalidInputTypeError,
     "progress must be None or a robust_mix.rows.RowProgress (an object with methods start(), advance(), finish())"),
    ("certify_smoothing(progress='no') (read as true)",
     lambda: certify_smoothing(tiny_model(), images(2), sigma=0.1, n0=2, n=4, progress="no"), InvalidInputTypeError,
     "progress must be True or False, got 'no' (str)"),
    ("certify_smoothing(generator=0) (an AttributeError)",
     lambda: certify_smoothing(tiny_model(), images(2), sigma=0.1, n0=2, n=4, generator=0), InvalidInputTypeError,
     "generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or None, got 0 (int)"),
    ("certify_smoothing(n0=0) names n0", lambda: certify_smoothing(tiny_model(), images(2), sigma=0.1, n0=0, n=4),
     InvalidInputError, "n0 must be a positive integer (>= 1), got 0"),
    ("sweep(include_policy='no') (read as true)", lambda: quick_sweep([0.5], include_policy="no"),
     InvalidInputTypeError, "include_policy must be True or False, got 'no' (str)"),
]
MODELS = [  # a name, a function or None where a model object goes: each failed deep inside with an AttributeError
    ("benchmark('fmnist-robust') (a name, not a model)", lambda: benchmark("fmnist-robust", n_examples=2),
     InvalidInputTypeError, "model must be a model (a torch.nn.Module), got the string 'fmnist-robust'; build it "
     "first: robust_mix.load_model('fmnist-robust')"),
    ("benchmark(a function)", lambda: bench(lambda x: tiny_model()(x)), InvalidInputTypeError,
     "(function); wrap a function in a torch.nn.Module whose forward calls it"),
    ("benchmark(None)", lambda: benchmark(None, images=images(), labels=LABELS, eps=0.1), InvalidInputTypeError,
     "got None (NoneType)"),
    ("predict('fmnist-robust')", lambda: predict("fmnist-robust", images(), 6, torch.device("cpu")),
     InvalidInputTypeError, "got the string 'fmnist-robust'"),
    ("sweep('fmnist-robust')", lambda: quick_sweep([0.5], model="fmnist-robust"), InvalidInputTypeError,
     "build it first: robust_mix.load_model('fmnist-robust')"),
    ("sweep(a function that builds no model)", lambda: quick_sweep([0.5], model=lambda: None), InvalidInputTypeError,
     "the model the function built must be a model (a torch.nn.Module), got None"),
    ("certify_smoothing('fmnist-robust')", lambda: certify_smoothing("fmnist-robust", images(2), sigma=0.1),
     InvalidInputTypeError, "got the string 'fmnist-robust'"),
    ("certify_lipschitz(a plain classifier)", lambda: certify_lipschitz(make_tiny(0), images(2)), InvalidInputTypeError,
     "certificates are computed for a MixedClassifier (they bound its robust part), got TinyCNN"),
    ("benchmark(options={'n_iter': 1})", lambda: bench(options={"n_iter": 1}), InvalidInputTypeError,
     "options must be robust_mix.protocol.AttackOptions (or None: the leaderboard's budgets), got {'n_iter': 1} "
     "(dict); write it as AttackOptions(**{'n_iter': 1})"),
    ("load_dataset(None)", lambda: robust_mix.data.load_dataset(None, "test", 2), InvalidInputTypeError,
     "dataset must be a data set name such as 'cifar10' or 'fashion-mnist', got None"),
    ("load_dataset beyond the split", lambda: robust_mix.data.load_dataset("fashion-mnist", "test", 10_001),
     InvalidInputError, "asked for 10001 examples but fashion-mnist test has 10000; pass n_examples <= 10000"),
]
SWEEP = [
    ("alphas '0:1:0'", lambda: parse_alphas("0:1:0"), InvalidInputError, "alphas '0:1:0': a range start:stop:step"),
    ("alphas '0,2'", lambda: parse_alphas("0,2"), InvalidInputError, "alphas '0,2': every alpha must lie in [0, 1]"),
    ("alphas 'abc'", lambda: parse_alphas("abc"), InvalidInputError, "alphas 'abc': alpha must be a number"),
    ("alphas 'nan'", lambda: parse_alphas("nan"), InvalidInputError, "alphas 'nan'"),
    ("alphas '1:0:0.1'", lambda: parse_alphas("1:0:0.1"), InvalidInputError, "alphas '1:0:0.1': a range"),
    ("alphas '0:1'", lambda: parse_alphas("0:1"), InvalidInputError, "alphas '0:1': a range is start:stop:step"),
    ("alphas '-0.5,0.5'", lambda: parse_alphas("-0.5,0.5"), InvalidInputError, "got -0.5"),
    ("sweep([0.5, 1.5]) refuses before any run", lambda: sweep(tiny_model(), [0.5, 1.5], images=images(),
                                                               labels=LABELS), InvalidInputError, "got 1.5"),
    ("sweep([]) of a fixed model", lambda: sweep(tiny_model(), []), InvalidInputError, "sweep got no alphas"),
    ("sweep(alphas=0.5)", lambda: quick_sweep(0.5), InvalidInputTypeError,
     "alphas must be a list of ratios in [0, 1] such as [0, 0.5, 1], got 0.5 (float); one ratio is a list of one"),
    ("sweep(alphas='0:1:0.5') (read as the characters '0', ':', ...)", lambda: quick_sweep("0:1:0.5"),
     InvalidInputTypeError, "parse text with robust_mix.sweep.parse_alphas('0:1:0.5')"),
    ("sweep(workers='2')", lambda: quick_sweep([0.5], workers="2"), InvalidInputTypeError,
     "workers must be an integer, got '2' (str)"),
    ("sweep(workers=2.5) (was: 'needs a function')", lambda: quick_sweep([0.5], workers=2.5),
     InvalidInputTypeError, "workers must be an integer, got 2.5"),
]
CERTIFY = [
    ("certify_lipschitz on 0-255 pixels", lambda: certify_lipschitz(tiny_model(), images() * 255), InvalidInputError,
     "divide by 255"),
    ("certify_smoothing 14x14", lambda: certify_smoothing(tiny_model(), images(2, (1, 14, 14)), sigma=0.1),
     InvalidInputError, "14x14 instead of 28x28"),
    ("sigma=-1", lambda: estimate_smoothed(tiny_model().robust, images(2), sigma=-1, num_classes=10), InvalidInputError,
     "sigma must be a finite number > 0, got -1"),
    ("failure_prob=2", lambda: estimate_smoothed(tiny_model().robust, images(2), sigma=0.1, num_classes=10,
                                                 failure_prob=2), InvalidInputError, "failure_prob must be a finite number in (0, 1), got 2"),
    ("n=0 samples", lambda: sample_counts(tiny_model().robust, images(2), 0, 0.1, 10), InvalidInputError, "got 0"),
    ("certify_model(seed=2**64) (torch's 'Overflow when unpacking long long')",
     lambda: certify_model(tiny_model(), images(2), torch.tensor([0, 1]), n0=2, n=4, seed=2 ** 64),
     InvalidInputError, "seed must be an integer from 0 to 2**64 - 1 (what torch.manual_seed takes), got "),
    ("certify_model(norm='linf') under smoothing (ignored: an l2 report)",
     lambda: certify_model(tiny_model(), images(2), torch.tensor([0, 1]), norm="linf"), InvalidInputError,
     "norm='linf' applies to method='lipschitz'"),
    ("certify_model(lipschitz=0.5) under smoothing (ignored)",
     lambda: certify_model(tiny_model(), images(2), torch.tensor([0, 1]), lipschitz=0.5), InvalidInputError,
     "lipschitz=0.5 applies to method='lipschitz' (--method lipschitz); randomized smoothing certifies l2 radii"),
    ("certify_model(norm='l3')", lambda: certify_model(tiny_model(), images(2), torch.tensor([0, 1]),
                                                       method="lipschitz", norm="l3"), InvalidInputError,
     "norm must be one of ['l2', 'linf'], got 'l3'"),
    ("NaN classifier under noise", lambda: sample_counts(lambda z: torch.full((len(z), 10), float("nan")), images(2),
                                                         4, 0.1, 10), NonFiniteOutputError, "on noisy copies of some inputs"),
]
EVALUATION = [  # the recipes' accuracy helpers compared predictions with whatever they were given
    ("accuracy, labels (N, 1) (broadcast to (N, N): 1.0 for any model)",
     lambda: accuracy(tiny_model(), images(), LABELS[:, None]), InvalidInputError, "got shape (6, 1)"),
    ("accuracy, float labels", lambda: accuracy(tiny_model(), images(), LABELS.float()), InvalidInputTypeError,
     "got torch.float32"),
    ("accuracy, 5 labels for 6 images (a torch size error)", lambda: accuracy(tiny_model(), images(), LABELS[:5]),
     InvalidInputError, "got 5 labels for 6 images"),
    ("accuracy on 0-255 pixels (0.0, silently)", lambda: accuracy(tiny_model(), images() * 255, LABELS),
     InvalidInputError, "divide by 255"),
    ("accuracy, label 10 of 10 classes (never right, silently)", lambda: accuracy(tiny_model(), images(), LABELS + 5),
     InvalidInputError, "labels must lie in [0, 10), got [10] at indices [5]"),
    ("accuracy of no examples (0.0)", lambda: accuracy(tiny_model(), images()[:0], LABELS[:0]), InvalidInputError,
     "images hold no examples"),
    ("accuracy, NaN scores (read as class 0)", lambda: accuracy(NonFinite(float("nan"), rows=[3]), images(), LABELS),
     NonFiniteOutputError, "for examples [3] (1 of 6)"),
    ("pgd_accuracy, labels (N, 1)", lambda: pgd_accuracy(tiny_model(), images(), LABELS[:, None], 0.1, 1),
     InvalidInputError, "got shape (6, 1)"),
    ("pgd_accuracy on 0-255 pixels (clipped to [0, 1] by the attack)",
     lambda: pgd_accuracy(tiny_model(), images() * 255, LABELS, 0.1, 1), InvalidInputError, "divide by 255"),
    ("pgd_accuracy, eps=8", lambda: pgd_accuracy(tiny_model(), images(), LABELS, 8, 1), InvalidInputError,
     "8/255 = 0.0314), got 8"),
    ("Certificate.certified_accuracy, labels (N, 1) (a torch size error; for one image, silently)",
     lambda: certify_lipschitz(tiny_model(), images(), lipschitz=1.0).certified_accuracy(LABELS[:, None], [0.0]),
     InvalidInputError, "labels must have shape (N,), one class index per image, got shape (6, 1)"),
    ("Certificate.certified_accuracy, 5 labels for 6 images",
     lambda: certify_lipschitz(tiny_model(), images(), lipschitz=1.0).certified_accuracy(LABELS[:5], [0.0]),
     InvalidInputError, "got 5 labels for 6 images"),
    ("certified_accuracy, correct (N, N)", lambda: certified_accuracy(torch.ones(6), torch.ones(6, 6), [0.0]),
     InvalidInputError, "got correct of shape (6, 6) for radii of shape (6,)"),
    ("RobustBench's clean_accuracy, labels (N, 1) (each counted N times: 1.0)",
     lambda: robustbench_clean_accuracy(tiny_model(), images(), LABELS[:, None]), InvalidInputError,
     "labels must have shape (N,), one class index per image, got shape (6, 1)"),
    ("RobustBench's clean_accuracy on 0-255 pixels", lambda: robustbench_clean_accuracy(tiny_model(), images() * 255,
                                                                                         LABELS),
     InvalidInputError, "divide by 255"),
    ("RobustBench's clean_accuracy, 5 labels for 6 images",
     lambda: robustbench_clean_accuracy(tiny_model(), images(), LABELS[:5]), InvalidInputError,
     "got 5 labels for 6 images"),
    ("RobustBench's clean_accuracy of no images (ZeroDivisionError)",
     lambda: robustbench_clean_accuracy(tiny_model(), images()[:0], LABELS[:0]), InvalidInputError,
     "images hold no examples"),
    ("RobustBench's clean_accuracy, a function's float labels",
     lambda: robustbench_clean_accuracy(lambda x: tiny_model()(x), images(), LABELS.float()), InvalidInputTypeError,
     "got torch.float32"),
    ("RobustBench's clean_accuracy, a model in training mode", lambda: robustbench_clean_accuracy(
        batchnorm_classifier().train(), images(), LABELS), InvalidInputError,
     "call model.eval() before clean_accuracy()"),
    ("RobustBench's clean_accuracy, batch_size=0", lambda: robustbench_clean_accuracy(tiny_model(), images(), LABELS,
                                                                                       batch_size=0),
     InvalidInputError, "batch_size must be a positive integer (>= 1), got 0"),
    ("lipschitz_radius, float labels (2.7 read as class 2)", lambda: lipschitz_radius(
        torch.full((2, 10), 0.1), torch.tensor([2.7, 1.0]), 0.9, 1.0), InvalidInputTypeError, "got torch.float32"),
    ("margin, label 10 of 10 classes (an index error)", lambda: margin(torch.full((2, 10), 0.1), torch.tensor([0, 10])),
     InvalidInputError, "labels must lie in [0, 10), got [10] at indices [1]"),
    ("margin, 3 labels for 2 rows", lambda: margin(torch.full((2, 10), 0.1), torch.arange(3)), InvalidInputError,
     "got 3 labels for 2 images"),
    ("certify_model of no images (torch.cat() of an empty list)", lambda: certify_model(
        tiny_model(), images()[:0], LABELS[:0], method="lipschitz", lipschitz=1.0, progress=False), InvalidInputError,
     "images hold no examples (shape (0, 1, 28, 28))"),
    ("certify_model(batch_size=0) (range() arg 3 must not be zero)", lambda: certify_model(
        tiny_model(), images(), LABELS, method="lipschitz", lipschitz=1.0, progress=False, batch_size=0),
     InvalidInputError, "batch_size must be a positive integer (>= 1), got 0"),
    ("sample_counts(num_classes='10') (a torch.zeros error)", lambda: sample_counts(tiny_model().robust, images(), 4,
                                                                                     0.1, "10"),
     InvalidInputTypeError, "num_classes must be an integer, got '10' (str)"),
    ("estimate_smoothed(num_classes=0)", lambda: estimate_smoothed(tiny_model().robust, images(2), sigma=0.1,
                                                                   num_classes=0, n0=2, n=4),
     InvalidInputError, "num_classes must be a positive integer (>= 1), got 0"),
    ("sample_counts on 0-255 pixels", lambda: sample_counts(tiny_model().robust, images() * 255, 4, 0.1, 10),
     InvalidInputError, "divide by 255"),
    ("sample_counts, one image without its batch dimension",
     lambda: sample_counts(tiny_model().robust, images()[0], 4, 0.1, 10), InvalidInputError, "images.unsqueeze(0)"),
]
RECIPE = [
    ("BackboneRecipe(epochs=-1)", lambda: BackboneRecipe(epochs=-1), InvalidInputError,
     "epochs must be a positive integer (>= 1), got -1"),
    ("--set lr=abc", lambda: apply_settings(get_recipe("fmnist-standard").config, ["lr=abc"]), TypeError,
     "lr must be a number, got 'abc'"),
    ("--set epoch=3 (unknown)", lambda: apply_settings(get_recipe("fmnist-standard").config, ["epoch=3"]), ValueError,
     "unknown setting 'epoch' for BackboneRecipe"),
    ("--set policy.blocks=0", lambda: apply_settings(get_recipe("fmnist-adasmooth").config, ["policy.blocks=0"]),
     InvalidInputError, "policy.blocks must be a positive integer (>= 1), got 0"),
    ("RunOptions(workers=100000)", lambda: RunOptions(workers=100_000), InvalidInputError,
     "workers must be at most"),
    ("--set calib_keep=1.5", lambda: apply_settings(get_recipe("fmnist-adasmooth").config, ["calib_keep=1.5"]),
     InvalidInputError, "calib_keep must be a finite number in [0, 1], got 1.5"),
]
API_CASES = (COUNTS + EPS + LABEL_CASES + IMAGES + OUTPUTS + ALPHA + NAMES + MODELS + FLAGS + SWEEP + CERTIFY
             + EVALUATION + RECIPE)


@pytest.mark.parametrize("call, error, names", [pytest.param(c, e, n, id=i) for i, c, e, n in API_CASES])
def test_api_refuses_bad_input_naming_it(call, error, names):
    with pytest.raises(error) as info:
        call()
    message = info.value.args[0] if isinstance(info.value, KeyError) else str(info.value)
    assert names in message


@pytest.mark.parametrize("eps", [np.array(0.1), np.array([0.1]), np.float64(0.1), torch.tensor([0.1])],
                         ids=["0-d array", "1-element array", "NumPy scalar", "1-element tensor"])
def test_a_budget_given_as_one_numpy_or_torch_number_is_that_number(eps):
    """A one-element tensor was read as its number, a 0-d NumPy array (``np.array(0.1)``, ``np.median`` of an
    array of budgets) refused as no number: one rule for every number the harness and the certificates take."""
    result = bench(eps=eps)
    assert result.eps == pytest.approx(0.1) and result.arguments["eps"] == result.eps
    assert robust_mix.MixedClassifier(make_tiny(0), make_tiny(1), alpha=eps * 6).alpha == pytest.approx(0.6)


def test_l1_apgd_runs_with_three_iterations_and_other_stages_with_one():
    assert 0 <= bench(threat_model="L1", eps=5.0, options=AttackOptions(n_iter=3)).robust_accuracy <= 1
    assert 0 <= bench(threat_model="L1", eps=5.0, attack="rand").robust_accuracy <= 1  # no largereps under rand
    assert 0 <= bench(threat_model="L1", eps=5.0, attack="fab,square",
                      options=AttackOptions(n_iter=1, n_queries=5)).robust_accuracy <= 1


class Squeezed(nn.Module):
    """``tiny_model`` whose forward ends in ``squeeze()``: a batch of one image gets scores of shape ``(K,)``."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).squeeze()


@pytest.mark.parametrize("attack", ["apgd-ce", "square", "adaptive-apgd-ce"])
def test_a_model_that_squeezes_a_batch_of_one_is_named_during_the_attack(attack):
    """Only example 2 is clean-correct, so each attack queries batches of one: it crashed inside pyautoattack with
    'IndexError: Dimension out of range'."""
    assert (tiny_model()(images()).argmax(dim=1) == LABELS).tolist() == [False, False, True, False, False, False]
    with pytest.raises(InvalidInputError, match=rf"during the {attack} attack on examples \[2\], must return class "
                                                r"scores of shape \(B, K\) = \(1, K\), got shape \(10,\) \(a batch "
                                                r"of one image: does forward squeeze\(\) its output"):
        bench(Squeezed(), batch_size=5, attack=attack, options=AttackOptions(n_iter=1, n_queries=3))


def test_a_model_that_fails_on_the_images_is_named_with_the_images_shape():
    """A 3-channel model given Fashion-MNIST's 1-channel images raised a bare RuntimeError (a CLI traceback)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()
    with pytest.raises(InvalidInputError, match=r"the model fails on the images given to it, of shape "
                                                r"\(1, 28, 28\) \(torch.float32\): RuntimeError: .*to have 3 channels"):
        bench(model)


class NoGradient(nn.Module):
    """``tiny_model`` whose forward runs under ``torch.no_grad()``, as inference code often does."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = tiny_model()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@pytest.mark.parametrize("attack", ["apgd-ce", "fab-t", "adaptive-apgd-ce"])
def test_a_model_without_gradients_is_named_by_the_gradient_attacks(attack):
    """It failed inside pyautoattack with 'element 0 of tensors does not require grad' (a traceback in the CLI)."""
    with pytest.raises(InvalidInputError, match=rf"during the {attack} attack on examples \[0, 1, 2, 3, 4, 5\], "
                                                r"returned scores without a gradient for its input \(does forward run "
                                                r"under torch.no_grad\(\)"):
        bench(NoGradient(), labels=predictions(), attack=attack, options=AttackOptions(n_iter=1, n_target_classes=2))
    assert bench(NoGradient(), labels=predictions(), attack="square",  # queries scores only: it runs
                 options=AttackOptions(n_queries=3)).robust_accuracy <= 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_probabilities_of_a_low_precision_model_are_refused(dtype):
    """Their rows sum to 1 only up to float16/bfloat16 rounding (1e-4 to 1e-3), beyond the float32 tolerance: the
    probabilities were attacked as if they were logits, overstating robustness."""
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    probabilities = nn.Sequential(linear, nn.Softmax(dim=1)).to(dtype).eval()
    with pytest.raises(InvalidInputError, match=r"returns probabilities \(each row sums to 1\), not logits"):
        bench(probabilities, images=images().to(dtype))
    assert 0 <= bench(linear.to(dtype).eval(), images=images().to(dtype)).robust_accuracy <= 1  # its logits run


class Softmaxed(nn.Module):
    """A base model whose forward ends in a softmax (probabilities, not logits), as many inference heads do."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.num_classes = inner, 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).softmax(dim=1)


def softmaxed_mixture(which: str, alpha: float = 0.6) -> robust_mix.MixedClassifier:
    bases = {"standard": make_tiny(0), "robust": make_tiny(1)}
    bases[which] = Softmaxed(bases[which])
    config = ModelConfig(name="tiny-softmaxed", dataset="fashion-mnist", eps=0.1, num_classes=10, input_shape=SHAPE,
                         alpha=alpha)
    return robust_mix.MixedClassifier(bases["standard"], bases["robust"], alpha=alpha, config=config)


@pytest.mark.parametrize("which", ["standard", "robust"])
@pytest.mark.parametrize("attack", ["apgd-ce", "square"])
def test_a_mixture_of_a_base_that_returns_probabilities_is_refused(which, attack):
    """The mixture returns log-probabilities whatever its bases return, so a base ending in a softmax passed every
    check of the harness: its probabilities were mixed as logits, and the run measured another model than the one
    meant (clean accuracy 0.0 where the base's logits give 0.17)."""
    with pytest.raises(InvalidInputError, match=rf"the {which} base model returns probabilities \(each row sums to "
                                                r"1\), not logits"):
        bench(softmaxed_mixture(which), attack=attack, options=AttackOptions(n_iter=1, n_queries=3))
    logits = softmaxed_mixture(which)
    setattr(logits, which, getattr(logits, which).inner)  # the same weights, returning logits: it runs
    assert 0 <= bench(logits, attack=attack, options=AttackOptions(n_iter=1, n_queries=3)).robust_accuracy <= 1


def test_robustbench_enums_are_read_as_their_values():
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    assert robust_mix.validate.check_dataset(BenchmarkDataset.cifar_10) == "cifar10"
    result = bench(threat_model=ThreatModel.L2, eps=0.5)
    assert result.threat_model == "L2" and type(result.threat_model) is str
    assert result.arguments["threat_model"] == "L2"


def test_devices_that_do_not_exist_here_are_refused_before_any_work(monkeypatch):
    with pytest.raises(InvalidInputError, match="device 'tpu' is not a device name; use 'cpu', 'cuda'"):
        bench(device="tpu")
    with pytest.raises(InvalidInputTypeError, match=r"device must be a device name .*got 1.5 \(float\)"):
        bench(device=1.5)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(InvalidInputError, match="asked for, but no GPU is visible"):
            bench(device=device)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InvalidInputError, match=r"device 'cuda:7' does not exist: 1 cuda device\(s\) visible"):
        bench(device="cuda:7")
    with pytest.raises(InvalidInputError, match="device 'meta' is not available here"):
        bench(device="meta")


def test_unwritable_folders_are_refused_before_any_work(under_a_file):
    with pytest.raises(InvalidInputError, match=f"{A_FILE_NAME} is a file, not a folder.*nothing has been computed"):
        check_writable_dir(under_a_file)
    with pytest.raises(InvalidInputError, match="cannot write to the state folder"):
        bench(state_dir=under_a_file)
    assert (under_a_file.parent).is_file()


# -- reports and submissions ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    """report.json data of real (tiny) runs: fmnist-standard as registered, fmnist-robust at alpha 0.9."""
    x, y = robust_mix.data.load_dataset("fashion-mnist", "test", 4)
    out = {}
    for key, model in (("standard", robust_mix.load_model("fmnist-standard")),
                       ("robust-0.9", robust_mix.load_model("fmnist-robust", alpha=0.9))):
        result = benchmark(model, images=x, labels=y, batch_size=4, attack="apgd-ce", options=FAST, device="cpu")
        out[key] = result.to_dict()
    return out


def leaderboard_size(data: dict) -> dict:
    """The report as if it came from the standard suite at full budgets on all 10,000 test images."""
    data = json.loads(json.dumps(data))
    reps = 10_000 // data["n_examples"]
    data.update(n_examples=10_000, options={}, attack="standard", images_given=False,
                clean_flags=data["clean_flags"] * reps, robust_flags=data["robust_flags"] * reps,
                suite_flags={k: v * reps for k, v in data["suite_flags"].items()},
                stage_accuracy={s: data["robust_accuracy"] for s in STANDARD_STAGES})
    return data


SUBMIT = [  # (id, edit of the full report (or raw text), NAME, exit code, fragment)
    ("report of another model", lambda r: leaderboard_size(r["standard"]), "fmnist-robust", 3,
     "the report is for model 'fmnist-standard', not 'fmnist-robust'"),
    ("the entry with another alpha", lambda r: leaderboard_size(r["robust-0.9"]), "fmnist-robust", 3,
     "the report is for model 'fmnist-robust,alpha=0.9', not 'fmnist-robust'"),
    ("same name, another alpha", lambda r: {**leaderboard_size(r["robust-0.9"]), "model": "fmnist-robust"},
     "fmnist-robust", 3, "does not match 'fmnist-robust'"),  # a report from before labels named overrides
    ("clean_accuracy 1.7", lambda r: {**leaderboard_size(r["standard"]), "clean_accuracy": 1.7}, "fmnist-standard", 2,
     "clean_accuracy must be a finite number in [0, 1], got 1.7 (it looks like a percentage"),
    ("robust_accuracy -0.1", lambda r: {**leaderboard_size(r["standard"]), "robust_accuracy": -0.1}, "fmnist-standard",
     2, "robust_accuracy must be a finite number in [0, 1], got -0.1"),
    ("accuracy as text", lambda r: {**leaderboard_size(r["standard"]), "clean_accuracy": "85.2"}, "fmnist-standard", 2,
     "clean_accuracy must be a number in [0, 1], got '85.2' (str)"),
    ("accuracy disagrees with flags", lambda r: {**leaderboard_size(r["standard"]), "clean_accuracy": 0.999},
     "fmnist-standard", 2, "clean_accuracy is 0.999 but its per-example flags give"),
    ("APGD-CE only", lambda r: {**leaderboard_size(r["standard"]), "attack": "apgd-ce",
                                "stage_accuracy": {"apgd-ce": r["standard"]["robust_accuracy"]}},
     "fmnist-standard", 3, "not the standard AutoAttack suite"),
    # the stages decide the label: an APGD-CE run with standard AutoAttack's stages pasted in was claimed as one
    ("APGD-CE run with the standard stages", lambda r: {**leaderboard_size(r["standard"]), "attack": "apgd-ce"},
     "fmnist-standard", 2, "attack 'apgd-ce' runs the stages ['apgd-ce'] in the suites ['autoattack'], but "
     "stage_accuracy lists ['apgd-ce', 'apgd-t', 'fab-t', 'square']"),
    ("stage below its suite", lambda r: {**(d := leaderboard_size(r["robust-0.9"])),
                                         "stage_accuracy": {**d["stage_accuracy"], "fab-t": 0.0}},
     "fmnist-robust", 2, "stage_accuracy['fab-t'] is 0.0: a stage only removes robust examples"),
    ("reduced budgets", lambda r: {**leaderboard_size(r["standard"]), "options": {"n_iter": 1}}, "fmnist-standard", 3,
     "attack budgets changed from the protocol's (n_iter=1)"),
    ("4 examples", lambda r: {**r["standard"], "options": {}, "attack": "standard",
                              "stage_accuracy": {s: r["standard"]["robust_accuracy"] for s in STANDARD_STAGES}},
     "fmnist-standard", 3, "4 of the leaderboard's 10,000 test examples"),
    ("no config fingerprint (older report)", lambda r: {**leaderboard_size(r["standard"]), "config_fingerprint": None},
     "fmnist-standard", 3, "does not record which configuration was evaluated"),
    ("missing field", lambda r: {k: v for k, v in leaderboard_size(r["standard"]).items() if k != "clean_accuracy"},
     "fmnist-standard", 2, "missing field(s) ['clean_accuracy']"),
    ("unknown field", lambda r: {**leaderboard_size(r["standard"]), "clean_acc": 0.5}, "fmnist-standard", 2,
     "unknown field(s) ['clean_acc']"),
    ("truncated JSON", lambda r: json.dumps(leaderboard_size(r["standard"]))[:300], "fmnist-standard", 2,
     "report.json is not valid JSON"),
    ("not JSON", lambda r: "hello, not a report", "fmnist-standard", 2, "report.json is not valid JSON"),
    ("a JSON list", lambda r: [1, 2, 3], "fmnist-standard", 2, "expected a JSON object, got list"),
    ("unknown entry", lambda r: leaderboard_size(r["standard"]), "fmnist-standardd", 2, "unknown model 'fmnist-standardd'"),
]


@pytest.mark.parametrize("edit, name, code, names", [pytest.param(*row[1:], id=row[0]) for row in SUBMIT])
def test_submit_refuses_before_writing(reports, tmp_path, capsys, edit, name, code, names):
    data = edit(reports)
    report = tmp_path / "report.json"
    report.write_text(data if isinstance(data, str) else json.dumps(data))
    out = tmp_path / "submission"
    assert main(["submit", name, "--report", str(report), "--out", str(out)]) == code
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err
    assert not out.exists(), "nothing is written for a refused submission"


def test_submit_accepts_the_full_report_and_marks_partial_drafts(reports, tmp_path, capsys):
    full = tmp_path / "full.json"
    full.write_text(json.dumps(leaderboard_size(reports["standard"])))
    assert main(["submit", "fmnist-standard", "--report", str(full), "--out", str(tmp_path / "ok")]) == 0
    assert "PARTIAL" not in (tmp_path / "ok" / "claim.md").read_text()
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(reports["standard"]))
    assert main(["submit", "fmnist-standard", "--report", str(partial), "--out", str(tmp_path / "draft"),
                 "--allow-partial"]) == 0
    for name in ("claim.md", "model_info.json", "model_zoo_entry.py"):
        assert "PARTIAL" in (tmp_path / "draft" / name).read_text(), name
    with pytest.raises(SubmissionMismatchError):  # --allow-partial never covers another model's numbers
        check_submission(BenchmarkResult.from_dict(reports["robust-0.9"]), robust_mix.get_model_config("fmnist-robust"))
    with pytest.raises(PartialEvaluationError):
        robust_mix.report.submission_files(BenchmarkResult.from_dict(reports["standard"]),
                                           robust_mix.get_model_config("fmnist-standard"))


# -- the CLI ---------------------------------------------------------------------------------------------
TINY = "test_bad_inputs:tiny_model"


def bench_cli(*extra: str) -> list[str]:
    return ["benchmark", TINY, *FAST_CLI, *extra]


def certify_cli(*extra: str) -> list[str]:
    return ["certify", "fmnist-robust", "--n", "20", "--n0", "5", "--no-progress", *extra]


def train_cli(*settings: str) -> list[str]:
    return ["train", "fmnist-standard", "--no-progress", "--set", "train_subset=64", "val_subset=32", *settings]


CLI_CASES = [  # (id, argv without --out, exit code, fragment of stderr)
    ("benchmark --n-examples 0", bench_cli("--n-examples", "0"), 2, "must be a positive integer (>= 1), got 0"),
    ("benchmark --n-examples -5", bench_cli("--n-examples", "-5"), 2, "got -5"),
    ("benchmark --n-examples 2.5", bench_cli("--n-examples", "2.5"), 2, "must be a whole number, got '2.5'"),
    ("benchmark --batch-size -3", bench_cli("--batch-size", "-3"), 2, "argument --batch-size: value must be a positive"),
    ("benchmark --batch-size 0", bench_cli("--batch-size", "0"), 2, "got 0"),
    ("benchmark --chunk-size 0", bench_cli("--chunk-size", "0"), 2, "argument --chunk-size"),
    ("benchmark --eps -0.1", bench_cli("--eps", "-0.1"), 2, "eps must be a finite number > 0, got -0.1"),
    ("benchmark --eps 0", bench_cli("--eps", "0"), 2, "got 0.0"),
    ("benchmark --eps nan", bench_cli("--eps", "nan"), 2, "eps must be a finite number, got 'nan'"),
    ("benchmark --eps inf", bench_cli("--eps", "inf"), 2, "got 'inf'"),
    ("benchmark --eps 8/0", bench_cli("--eps", "8/0"), 2, "got '8/0' (it divides by zero)"),
    ("benchmark --eps abc", bench_cli("--eps", "abc"), 2, "got 'abc' (not a number)"),
    ("benchmark --eps 2 (Linf)", bench_cli("--eps", "2", "--n-examples", "2"), 2, "in (0, 1]"),
    ("benchmark --threat-model Linf2", bench_cli("--threat-model", "Linf2"), 2, "invalid choice: 'Linf2'"),
    ("benchmark --threat-model L2 without --eps (a Linf entry)", bench_cli("--threat-model", "L2", "--n-examples", "2"),
     2, "eps is not set for threat_model='L2'"),
    ("benchmark --threat-model L1 --n-iter 1", bench_cli("--threat-model", "L1", "--eps", "5", "--n-examples", "2"), 2,
     "needs at least 3; pass options=AttackOptions(n_iter=3) or more (--n-iter 3)"),
    ("benchmark --device tpu", bench_cli("--device", "tpu", "--n-examples", "2"), 2, "device 'tpu' is not a device name"),
    ("benchmark --attack bogus", ["benchmark", TINY, "--attack", "bogus", "--n-examples", "2"], 2,
     "unknown attack stage(s) ['bogus']"),
    ("benchmark --n-iter 0", bench_cli("--n-iter", "0"), 2, "argument --n-iter"),
    ("benchmark --n-queries -1", bench_cli("--n-queries", "-1"), 2, "got -1"),
    ("benchmark --seed x", bench_cli("--seed", "x"), 2, "must be a whole number, got 'x'"),
    ("benchmark --clean-examples beyond the test set (was named n_examples)",
     bench_cli("--n-examples", "2", "--clean-examples", "20000"), 2,
     "error: clean_examples is 20000, but fashion-mnist's test split has 10000 images; pass clean_examples <= 10000 "
     "(--clean-examples)"),
    ("benchmark --seed -1", bench_cli("--seed", "-1"), 2, "argument --seed: value must be an integer >= 0, got -1"),
    ("certify --seed 2**64 (was torch's 'Overflow when unpacking long long', after loading)",
     certify_cli("--seed", str(2 ** 64)), 2, "argument --seed: value must be an integer from 0 to 2**64 - 1"),
    ("benchmark --threads 100000 (was 'the model fails on the images ... check the data set')",
     bench_cli("--threads", "100000"), 2, "argument --threads: value must be at most 1024 threads, got '100000'"),
    ("certify --threads 10**23 (was 'Overflow when unpacking long long')", certify_cli("--threads", str(10 ** 23)), 2,
     "argument --threads: value must be at most 1024 threads"),
    ("certify --lipschitz under smoothing (was ignored)", certify_cli("--lipschitz", "0.5"), 2,
     "error: lipschitz=0.5 applies to method='lipschitz' (--method lipschitz)"),
    ("certify --norm linf under smoothing (was an l2 report)", certify_cli("--norm", "linf"), 2,
     "error: norm='linf' applies to method='lipschitz'"),
    ("certify --method lipschitz --sigma --n (were ignored)",
     ["certify", "fmnist-robust", "--method", "lipschitz", "--sigma", "0.5", "--n", "20"], 2,
     "error: --sigma and --n apply to --method smoothing; --method lipschitz does not use them: leave them out"),
    ("certify --split testing", certify_cli("--split", "testing"), 2, "argument --split: invalid choice: 'testing'"),
    ("benchmark --dataset cifar11", bench_cli("--dataset", "cifar11", "--n-examples", "2"), 2, "unknown dataset 'cifar11'"),
    ("benchmark unknown model", ["benchmark", "nosuch-model"], 2, "unknown model 'nosuch-model'"),
    ("benchmark module:missing", ["benchmark", "test_bad_inputs:no_such_factory"], 2,
     "'test_bad_inputs:no_such_factory' names no model factory"),
    ("sweep --alphas 0:2:0.5", ["sweep", TINY, "--alphas", "0:2:0.5", *FAST_CLI], 2, "alphas '0:2:0.5'"),
    ("sweep --alphas a,b", ["sweep", TINY, "--alphas", "a,b", *FAST_CLI], 2, "alphas 'a,b': alpha must be a number"),
    ("sweep --n-examples 0", ["sweep", TINY, "--alphas", "0,1", "--n-examples", "0"], 2, "got 0"),
    ("certify --n-examples -5", certify_cli("--n-examples", "-5"), 2, "got -5"),
    ("certify --n-examples 0", certify_cli("--n-examples", "0"), 2, "argument --n-examples"),
    ("certify --sigma -1", certify_cli("--sigma", "-1"), 2, "argument --sigma: value must be a finite number > 0"),
    ("certify --sigma nan", certify_cli("--sigma", "nan"), 2, "got 'nan'"),
    ("certify --n 0", certify_cli("--n", "0"), 2, "argument --n: value must be a positive integer (>= 1), got 0"),
    ("certify --n0 -1", certify_cli("--n0", "-1"), 2, "argument --n0"),
    ("certify --failure-prob 2", certify_cli("--failure-prob", "2"), 2, "in (0, 1), got 2.0"),
    ("certify --alphas 1.5", certify_cli("--alphas", "1.5"), 2, "must lie in [0, 1]"),
    ("certify --alphas x", certify_cli("--alphas", "x"), 2, "got 'x' (not a number)"),
    ("certify --batch-size 0", certify_cli("--batch-size", "0"), 2, "argument --batch-size"),
    ("certify --radii -1", certify_cli("--radii", "-1"), 2, "value must be a finite number >= 0, got -1.0"),
    ("certify --lipschitz -2", certify_cli("--method", "lipschitz", "--lipschitz", "-2"), 2, "got -2.0"),
    ("demo --n-examples 0", ["demo", "--n-examples", "0"], 2, "argument --n-examples"),
    ("demo --n-examples -1", ["demo", "--n-examples", "-1"], 2, "got -1"),
    ("demo --batch-size 0", ["demo", "--batch-size", "0"], 2, "argument --batch-size"),
    ("demo --workers 0", ["demo", "--workers", "0"], 2, "argument --workers: value must be a positive integer (>= 1), got 0"),
    ("sweep --workers -1", ["sweep", TINY, "--alphas", "0,1", "--workers", "-1"], 2, "argument --workers"),
    ("demo --clean-examples below --n-examples", ["demo", "--n-examples", "30", "--clean-examples", "20"], 2,
     "--clean-examples 20 is below --n-examples 30"),
    ("demo --n-examples beyond the test set (was told to raise --clean-examples)", ["demo", "--n-examples", "20000"],
     2, "--n-examples 20,000 is more than the 10,000 Fashion-MNIST test images; pass at most 10000"),
    ("demo --clean-examples beyond the test set (failed inside the first row)",
     ["demo", "--n-examples", "2", "--clean-examples", "10001"], 2, "--clean-examples 10,001 is more than the 10,000"),
    ("sweep --alphas 0.5,0.5 (the repeat was dropped without a word)",
     ["sweep", TINY, "--alphas", "0.5,0.5", *FAST_CLI], 2, "ratios repeat ['0.5']"),
    ("demo --reference missing", ["demo", "--n-examples", "2", "--reference", "no/such/ref.json"], 2, "no/such/ref.json"),
    ("train --set epochs=-1", train_cli("epochs=-1"), 2, "epochs must be a positive integer (>= 1), got -1"),
    ("train --set epochs=0", train_cli("epochs=0"), 2, "got 0"),
    ("train --set batch_size=0", train_cli("batch_size=0"), 2, "batch_size must be a positive integer"),
    ("train --set lr=-1", train_cli("lr=-1"), 2, "lr must be a finite number > 0, got -1"),
    ("train --set epochs=abc", train_cli("epochs=abc"), 2, "epochs must be an integer, got 'abc'"),
    ("train --set epochs=2.5", train_cli("epochs=2.5"), 2, "got 2.5 (float)"),
    ("train --set eps=2", train_cli("eps=2"), 2, "eps must be a finite number in (0, 1]"),
    ("train --set augment=maybe", train_cli("augment=maybe"), 2, "augment must be true or false, got 'maybe'"),
    ("train --set train_subset=-5", train_cli("train_subset=-5"), 2, "train_subset must be a positive integer"),
    ("train --set unknown=1", train_cli("unknown=1"), 2, "unknown setting 'unknown' for BackboneRecipe"),
    ("train --set epochs", train_cli("epochs"), 2, "settings look like key=value, got 'epochs'"),
    ("train --workers 100000 (forked DataLoader processes until the machine gave out)",
     [*train_cli("epochs=1"), "--workers", "100000"], 2, "DataLoader processes (4 per CPU; this machine has"),
    ("leaderboard --width 0", ["leaderboard", "no-runs", "--out", "/dev/null/site", "--width", "0"], 2,
     "argument --width: value must be a positive integer (>= 1), got 0"),
    ("leaderboard --height -5 (was read as 'the whole page' or an 800-pixel crop)",
     ["leaderboard", "no-runs", "--out", "/dev/null/site", "--height", "-5"], 2,
     "argument --height: value must be a positive"),
    ("leaderboard --width without --screenshot (was ignored)",
     ["leaderboard", "no-runs", "--out", "/dev/null/site", "--width", "900"], 2,
     "error: --width sets the screenshot's size: give --screenshot FILE.png too, or leave it out"),
    ("card NAME --reports-dir (was ignored: a card without its results)",
     ["card", "fmnist-robust", "--reports-dir", "benchmarks/reports", "--out", "/dev/null/card.md"], 2,
     "error: --reports-dir applies to --all, not to NAME: leave it out"),
    ("card --all --out --benchmark (were ignored)",
     ["card", "--all", "--out", "/dev/null/c.md", "--benchmark", "r.json"], 2, "error: --out and --benchmark apply to one card (NAME), not to --all: leave them out"),
    ("info unknown model", ["info", "mixx"], 2, "unknown model 'mixx'"),
    ("info alpha out of range", ["info", "fmnist-robust,alpha=2"], 2, "alpha must lie in [0, 1]"),
    ("info alpha_range reversed", ["info", "fmnist-adasmooth,alpha_range=(1,0.9)"], 2, "alpha_range"),
]


@pytest.mark.parametrize("argv, code, names", [pytest.param(a, c, n, id=i) for i, a, c, n in CLI_CASES])
def test_cli_refuses_bad_input_with_one_error_line(tmp_path, capsys, argv, code, names):
    out = tmp_path / "out"
    takes_out = argv[0] in ("benchmark", "sweep", "certify", "demo", "train")
    assert main([*argv, *(["--out", str(out)] if takes_out else [])]) == code
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err
    assert not (out / "report.json").exists() and not (out / "model.safetensors").exists()


def test_cli_names_a_gpu_that_is_not_visible(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*bench_cli("--device", "cuda", "--n-examples", "2"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: device 'cuda' asked for, but no GPU is visible" in err and "Traceback" not in err


UNWRITABLE = [  # each is refused before its work starts (the folder's parent is a file)
    ("benchmark", bench_cli("--n-examples", "2")),
    ("sweep", ["sweep", TINY, "--alphas", "0,1", "--n-examples", "2", *FAST_CLI]),
    ("certify", certify_cli("--n-examples", "2")),
    ("demo", ["demo", "--n-examples", "2", "--attack", "apgd-ce"]),
    ("train", train_cli("epochs=1")),
]


@pytest.mark.parametrize("argv", [pytest.param(a, id=i) for i, a in UNWRITABLE])
def test_cli_refuses_an_unwritable_out_before_working(under_a_file, capsys, argv):
    started = time.perf_counter()
    assert main([*argv, "--out", str(under_a_file)]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the" in err and f"{A_FILE_NAME} is a file, not a folder" in err and "Traceback" not in err
    assert time.perf_counter() - started < 30  # refused up front, not after computing


INSIDE_PACKAGE = [  # (id, argv with {out} for an output folder inside the installed package)
    *((name, [*argv, "--out", "{out}"]) for name, argv in UNWRITABLE),
    ("card", ["card", "fmnist-robust", "--out", "{out}/card.md"]),
    ("card --all", ["card", "--all", "--out-dir", "{out}"]),
    ("save", ["save", "fmnist-robust", "{out}"]),
    ("leaderboard", ["leaderboard", "no-runs", "--out", "{out}/site"]),
]


@pytest.mark.parametrize("argv", [pytest.param(a, id=i) for i, a in INSIDE_PACKAGE])
def test_cli_refuses_an_output_folder_inside_the_package(capsys, argv):
    """--out robust_mix/... wrote reports, weights, cards or a site into the installed package (lost on reinstall,
    and able to replace the package's own files, e.g. its card template)."""
    inside = Path(robust_mix.__file__).resolve().parent / "runs-of-a-test"
    assert main([a.format(out=inside) for a in argv]) == 2
    err = capsys.readouterr().err
    assert f"{inside}' is inside the robust_mix package" in err, err
    assert "choose a folder outside it" in err and "Traceback" not in err
    assert not inside.exists()


def test_submit_to_an_unwritable_folder(reports, tmp_path, under_a_file, capsys):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(leaderboard_size(reports["standard"])))
    assert main(["submit", "fmnist-standard", "--report", str(report), "--out", str(under_a_file)]) == 2
    assert f"{A_FILE_NAME} is a file, not a folder" in capsys.readouterr().err


def test_a_report_that_cannot_be_written_is_one_error_line_and_the_run_resumes(tmp_path, capsys):
    """A folder where report.json goes ended the finished run in an IsADirectoryError traceback."""
    out = tmp_path / "out"
    (out / "report.json").mkdir(parents=True)
    assert main(bench_cli("--n-examples", "2", "--out", str(out))) == 1
    err = capsys.readouterr().err
    assert "error: [Errno 21] Is a directory" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err and (out / "state" / "chunk_000000.json").is_file()
    (out / "report.json").rmdir()
    assert main(bench_cli("--n-examples", "2", "--out", str(out))) == 0
    assert BenchmarkResult.from_json(out / "report.json").resumed_chunks == 1


def test_an_empty_output_path_is_refused_not_read_as_the_current_folder(tmp_path, capsys, monkeypatch):
    """``--out ""`` (``--out "$OUT"`` with OUT unset) wrote report.json and the state into the current folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match=r"the state folder is an empty path '' \(an unset variable\?\)"):
        bench(state_dir="")
    assert main(bench_cli("--n-examples", "2", "--out", "")) == 2
    assert "the output folder is an empty path ''" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_library_writers_refuse_an_empty_path_instead_of_filling_the_current_folder(tmp_path, monkeypatch):
    """save_pretrained("") wrote config.json, model.safetensors and README.md into the current folder (as ``--out ""``
    once did); BenchmarkResult.save("") and save(<folder>) failed naming a temporary file, save(5) in a TypeError."""
    monkeypatch.chdir(tmp_path)
    result = bench()
    with pytest.raises(InvalidInputError, match=r"save_directory is an empty path '' \(an unset variable\?\)"):
        robust_mix.load_model("fmnist-robust").save_pretrained("")
    with pytest.raises(InvalidInputError, match=r"the file to write is an empty path ''"):
        result.save("")
    with pytest.raises(InvalidInputTypeError, match=r"the file to write must be a file path .*got 5 \(int\)"):
        result.save(5)
    with pytest.raises(InvalidInputError, match=r"data_dir is an empty path ''"):
        robust_mix.data.load_dataset("fashion-mnist", "test", 2, data_dir="")
    with pytest.raises(InvalidInputError, match="write_sweep got no points"):
        robust_mix.sweep.write_sweep([], tmp_path / "sweep")
    (tmp_path / "run").mkdir()
    with pytest.raises(IsADirectoryError, match=rf"a file is to be written: give the file's name \(e.g. "
                                                rf"'{tmp_path}/run/report.json'\), or move the folder away: "
                                                rf"'{tmp_path}/run'"):
        result.save(tmp_path / "run")
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and list((tmp_path / "run").iterdir()) == []


@pytest.mark.parametrize("argv", [
    pytest.param(["card", "fmnist-robust", "--out", "{under}/card.md"], id="card --out under a file"),
    pytest.param(["card", "--all", "--out-dir", "{under}"], id="card --all --out-dir under a file"),
    pytest.param(["save", "fmnist-robust", "{under}"], id="save under a file"),
])
def test_card_and_save_refuse_an_unwritable_destination_with_one_line(under_a_file, capsys, argv):
    """These ended in a NotADirectoryError / FileExistsError traceback."""
    assert main([a.format(under=under_a_file) for a in argv]) == 2
    err = capsys.readouterr().err
    assert f"{A_FILE_NAME} is a file, not a folder" in err and "Traceback" not in err


def test_card_out_that_is_a_folder_is_refused_with_one_line(tmp_path, capsys):
    """It ended in an IsADirectoryError traceback from the atomic write."""
    assert main(["card", "fmnist-robust", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder; give the card's file name" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


READERS = [  # (id, read of the folder, the file a run writes there)
    ("BenchmarkResult.from_json", lambda d: BenchmarkResult.from_json(d), "report.json"),
    ("read_sweep", lambda d: robust_mix.sweep.read_sweep(d), "sweep.json"),
    ("load_recipe", lambda d: robust_mix.train.load_recipe(BackboneRecipe, d), "recipe.json"),
    ("load_state_dict", lambda d: robust_mix.io.load_state_dict(d), None),
    ("Reference.load", lambda d: robust_mix.reference.Reference.load(d), None),
]


@pytest.mark.parametrize("read, inside", [pytest.param(r, f, id=i) for i, r, f in READERS])
def test_a_folder_given_for_a_file_is_named_as_a_folder(tmp_path, read, inside):
    """A run folder passed where its report goes was 'benchmark report not found' (or 'weight file not found'), and
    read_sweep / load_recipe ended in IsADirectoryError."""
    if inside is not None:
        (tmp_path / inside).write_text("{}")
    with pytest.raises(InvalidInputError, match=r"is a folder, not a file; " + (
            rf"did you mean '{tmp_path / inside}'\?" if inside else "give the path of the")):
        read(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found: .*nope.json"):
        read(tmp_path / "nope.json")


@pytest.mark.parametrize("argv", [
    pytest.param(["card", "fmnist-robust", "--out", "{tmp}/card.md", "--benchmark", "{tmp}/run"], id="card"),
    pytest.param(["submit", "fmnist-robust", "--report", "{tmp}/run", "--out", "{tmp}/sub"], id="submit"),
    pytest.param(["save", "fmnist-robust", "{tmp}/saved", "--benchmark", "{tmp}/run"], id="save"),
])
def test_cli_names_the_report_inside_a_run_folder(tmp_path, capsys, argv):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text("{}")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert f"benchmark report '{tmp_path}/run' is a folder, not a file; did you mean '{tmp_path}/run/report.json'?" \
        in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_other_files_of_a_run_given_as_its_report_are_named(tmp_path, capsys):
    """model_info.json (beside report.json), sweep.json, certify.json and the state files were refused with a list of
    17 'missing field(s)' of a report; each is now named for what it is."""
    assert main(bench_cli("--n-examples", "2", "--out", str(tmp_path / "run"))) == 0
    robust_mix.sweep.write_sweep(quick_sweep([1.0]), tmp_path / "sweep")
    assert main(certify_cli("--n-examples", "2", "--out", str(tmp_path / "cert"))) == 0
    capsys.readouterr()
    files = {"run/model_info.json": "RobustBench's model-info file (model_info.json, written beside report.json)",
             "sweep/sweep.json": "a sweep file (sweep.json, written by robust-mix sweep)",
             "cert/certify.json": "a certificate file (certify.json, written by robust-mix certify)",
             "run/state/run.json": "a run's record of its arguments (state/run.json)",
             "run/state/chunk_000000.json": "one chunk of a run's progress (state/chunk_*.json)"}
    for name, what in files.items():
        path = tmp_path / name
        assert main(["submit", "fmnist-robust", "--report", str(path), "--out", str(tmp_path / "sub")]) == 2
        assert main(["card", "fmnist-robust", "--benchmark", str(path), "--out", str(tmp_path / "card.md")]) == 2
        err = capsys.readouterr().err
        assert err.count(f"error: {path} is {what}, not a benchmark report; give the report.json") == 2, err
        assert "missing field" not in err
    with pytest.raises(InvalidInputError, match=r"is a model config \(config.json\), not a benchmark report"):
        BenchmarkResult.from_dict(dataclasses.asdict(robust_mix.get_model_config("fmnist-robust")), "config.json")
    assert not (tmp_path / "sub").exists() and not (tmp_path / "card.md").exists()


@pytest.mark.parametrize("reports", ["missing", "a file"])
def test_card_all_refuses_a_reports_folder_that_is_not_there(tmp_path, capsys, reports):
    """A mistyped --reports-dir rewrote every card in --out-dir without its benchmark results."""
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "fmnist-robust.md").write_text("a card with results")
    given = tmp_path / "reprots"
    if reports == "a file":
        given.write_text("")
    assert main(["card", "--all", "--out-dir", str(cards), "--reports-dir", str(given)]) == 2
    err = capsys.readouterr().err
    assert f"the reports folder '{given}' {'does not exist' if reports == 'missing' else 'is a file'}" in err
    assert [p.name for p in cards.iterdir()] == ["fmnist-robust.md"]
    assert (cards / "fmnist-robust.md").read_text() == "a card with results"


@pytest.mark.parametrize("damage", ["truncated", "edited flags"])
def test_a_damaged_chunk_file_costs_that_chunk_only(tmp_path, damage):
    """The advice for a damaged chunk file was to delete the whole state folder, losing every finished chunk; it now
    names the one file, and deleting it redoes that chunk alone, with the flags of the uninterrupted run."""
    first = bench(batch_size=3, state_dir=tmp_path)
    chunk = tmp_path / "chunk_000001.json"
    data = json.loads(chunk.read_text())
    chunk.write_text(chunk.read_text()[:30] if damage == "truncated" else json.dumps({**data, "clean": [1, 0, 1]}))
    with pytest.raises(InvalidInputError, match=rf"delete {chunk} to redo only that part \(every other finished chunk "
                                                rf"in {tmp_path} is kept\)"):
        bench(batch_size=3, state_dir=tmp_path)
    chunk.unlink()
    again = bench(batch_size=3, state_dir=tmp_path)
    assert again.resumed_chunks == 1
    assert (again.clean_flags, again.robust_flags) == (first.clean_flags, first.robust_flags)


# -- interrupts --------------------------------------------------------------------------------------------
def test_ctrl_c_in_the_cli_stops_with_one_line_and_resumes(tmp_path, capsys, monkeypatch):
    from robust_mix.cli import benchmark as cli_benchmark

    seen = []

    def interrupt_after_one_chunk(self, stage, n):  # Ctrl-C while the second chunk is attacked
        seen.append(stage)
        if seen.count("apgd-ce") == 2:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    argv = bench_cli("--n-examples", "8", "--batch-size", "4", "--out", str(out))
    with monkeypatch.context() as patch:
        patch.setattr(cli_benchmark.TqdmProgress, "advance", interrupt_after_one_chunk)
        assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (f"interrupted: finished chunks are saved under {out}/state; "
                                            "rerun the same command to resume")
    assert "Traceback" not in err and not (out / "report.json").exists()
    assert main(argv) == 0
    report = BenchmarkResult.from_json(out / "report.json")
    assert report.resumed_chunks >= 1 and 0 < report.resumed_seconds <= report.wall_time_s
    assert "Resumed:" in (out / "report.md").read_text()


def test_sigint_to_a_running_benchmark_prints_no_traceback(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=f"{TESTS.parent}{os.pathsep}{TESTS}", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "robust_mix.cli", "benchmark", "fmnist-robust", "--n-examples",
                             "100", "--batch-size", "4", "--attack", "apgd-ce", "--out", str(out)],
                            env=env, cwd=str(TESTS.parent), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list((out / "state").glob("chunk_*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    proc.send_signal(signal.SIGINT)
    text = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, text[-2000:]
    assert "Traceback" not in text and "interrupted: finished chunks are saved under" in text


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_progress_step(tmp_path, monkeypatch, capsys):
    """SIGINT that lands in code whose exceptions Python ignores (a finalizer) still stops the command."""
    from robust_mix.cli import benchmark as cli_benchmark, interrupts

    advance = cli_benchmark.TqdmProgress.advance

    def swallowed_sigint(self, stage, n):  # the handler runs, its KeyboardInterrupt is lost (as in a __del__)
        try:
            interrupts._on_sigint(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass
        advance(self, stage, n)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(cli_benchmark.TqdmProgress, "advance", swallowed_sigint)
        assert main(bench_cli("--n-examples", "8", "--batch-size", "4", "--out", str(out))) == 130
    assert "interrupted: finished chunks are saved under" in capsys.readouterr().err
    assert not (out / "report.json").exists()
    interrupts.check()  # handled: nothing pending afterwards


# -- the property: non-finite outputs never raise an accuracy ----------------------------------------------
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["clean", "perturbed"])
def test_non_finite_outputs_never_raise_clean_or_robust_accuracy(seed, value, where):
    """Whichever examples get NaN/inf scores, on clean images or only on the attacks' perturbed ones, the
    harness gives an error naming them instead of accuracies (NaN argmax would be class 0, counted correct
    for label-0 images); so such a model never scores above its finite self."""
    gen = torch.Generator().manual_seed(seed)
    rows = sorted(torch.randperm(6, generator=gen)[:1 + seed % 3].tolist())
    # clean: every image labelled 0, so a NaN read as class 0 would count as correct; perturbed: labels
    # the model gets right, so every image is attacked and a broken attack would count as robust
    labels = torch.zeros(6, dtype=torch.long) if where == "clean" else predictions()
    model = NonFinite(value, rows=rows if where == "clean" else None, perturbed=where == "perturbed")
    finite = bench(tiny_model(), labels=labels)
    with pytest.raises(NonFiniteOutputError) as info:
        bench(model, labels=labels)  # no accuracies at all, so none above the finite model's
    if where == "clean":
        assert f"examples {rows} ({len(rows)} of 6)" in str(info.value)
    else:
        assert "during the apgd-ce attack on examples" in str(info.value)
    assert not math.isnan(finite.clean_accuracy)



def test_a_budget_override_that_no_stage_uses_is_ignored_and_said(caplog):
    """``n_queries`` sets Square's budget only: on an APGD-CE run it was recorded as an override (the report said
    'attack budgets changed from the protocol's (n_queries=3)'), though the run was the same as without it."""
    with caplog.at_level(logging.WARNING, logger="robust_mix.benchmark"):
        result = bench(options=AttackOptions(n_iter=1, n_queries=3, n_target_classes=2))
    assert result.options == {"n_iter": 1}
    assert "n_queries, n_target_classes set the budget of no stage of this attack (apgd-ce): ignored" in caplog.text
    assert AttackOptions(n_queries=3).overrides(["apgd-ce", "square"]) == {"n_queries": 3}
    assert AttackOptions(n_restarts=2, eot_iter=2).overrides(["fab-t"]) == {}


@pytest.mark.parametrize("declared", [8, 12])
def test_a_model_whose_declared_class_count_is_not_its_output_width_is_refused(declared):
    """A model declaring 8 classes that scores 10 had its labels checked against 8 and was then attacked over 10
    classes (targets among classes it does not have); declaring 12 for 10 scores passed the label check too."""
    model = tiny_model().standard
    model.num_classes = declared
    with pytest.raises(InvalidInputError, match=rf"the model declares {declared} classes \(num_classes\), but "
                                                r"returns scores for 10"):
        bench(model, labels=LABELS % 8)


def adaptive_tiny_model() -> robust_mix.MixedClassifier:
    """``tiny_model`` with an adaptive policy (a mixing network with BatchNorm layers, and the policy's RatioNorm)
    whose eval-time ratios lie in [0.6, 1]."""
    model = tiny_model()
    model.alpha = robust_mix.build_adaptive_policy(model, robust_mix.PolicyConfig(
        standard_layers=["stage1", "stage2"], robust_layers=["stage1", "stage2"], widths=[4, 4], blocks=1,
        input_shape=SHAPE, alpha_range=(0.6, 1.0)))
    return model


EVALUATIONS = {  # an evaluation entry point -> (the model it is given, what it computes)
    "benchmark": (adaptive_tiny_model, lambda m: bench(m, labels=predictions()).robust_flags),
    "certify_lipschitz": (adaptive_tiny_model, lambda m: certify_lipschitz(m, images(), LABELS, lipschitz=1.0).alpha),
    "certify_lipschitz, alpha='lower'": (adaptive_tiny_model, lambda m: certify_lipschitz(
        m, images(), LABELS, lipschitz=1.0, alpha="lower").alpha),
    "certify_smoothing": (adaptive_tiny_model, lambda m: certify_smoothing(
        m, images(), sigma=0.1, n0=2, n=4, generator=torch.Generator().manual_seed(0)).alpha),
    "certify_model": (adaptive_tiny_model, lambda m: certify_model(
        m, images(), LABELS, method="lipschitz", lipschitz=1.0, progress=False).report["curves"][0]["alpha_mean"]),
    "estimate_smoothed": (batchnorm_classifier, lambda m: estimate_smoothed(
        m, images(), sigma=0.1, num_classes=10, n0=2, n=4, generator=torch.Generator().manual_seed(0)).top_count),
    "sample_counts": (batchnorm_classifier, lambda m: sample_counts(m, images(), 4, 0.1, 10,
                                                                    generator=torch.Generator().manual_seed(0))),
    "accuracy": (adaptive_tiny_model, lambda m: accuracy(m, images(), LABELS)),
    "accuracy, a plain classifier": (batchnorm_classifier, lambda m: accuracy(m, images(), LABELS)),
    "pgd_accuracy": (batchnorm_classifier, lambda m: pgd_accuracy(m, images(), LABELS, 0.1, 1)),
}


@pytest.mark.parametrize("name", EVALUATIONS)
def test_an_evaluation_runs_a_model_in_training_mode_in_eval_mode_and_leaves_it_as_it_was(name):
    """A model handed over in training mode (a policy being fitted) was certified in training mode, BatchNorm on
    batch statistics and the policy's ratio outside its eval-time range, and every pass wrote into its running
    statistics; the accuracy helpers left it in eval mode. Every evaluation entry point now computes what the model
    in eval mode computes, writes nothing into it and leaves each module in the mode it was in."""
    build, evaluate = EVALUATIONS[name]
    model = build().train()
    modes = {key: module.training for key, module in model.named_modules()}
    state = {key: value.clone() for key, value in model.state_dict().items()}
    expected = evaluate(build().eval())
    got = evaluate(model)
    assert {key: module.training for key, module in model.named_modules()} == modes
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in state.items())
    assert got == expected if not isinstance(got, torch.Tensor) else torch.equal(got, expected)


def test_evaluates_model_finds_the_model_given_by_name():
    """The decorator reads the first parameter by position or by its own name (``classifier=``, ``model=``)."""
    model = batchnorm_classifier().train()
    statistics = model[1].running_mean.clone()
    counts = sample_counts(classifier=model, x=images(), n=4, sigma=0.1, num_classes=10)
    assert counts.sum(dim=1).tolist() == [4] * 6
    assert 0.0 <= accuracy(model=model, images=images(), labels=LABELS) <= 1.0
    assert model.training and torch.equal(model[1].running_mean, statistics)


@pytest.mark.parametrize("model", [adaptive_tiny_model, lambda: robust_mix.load_model("fmnist-adasmooth")],
                         ids=["tiny policy", "fmnist-adasmooth (features reach 1x1)"])
def test_a_policy_in_training_mode_given_one_image_says_to_call_eval(model):
    """A model left in training mode (after fitting its policy) and asked about one image failed in the mixing
    network's BatchNorm ("Expected more than 1 value per channel when training") or with no word on eval()."""
    mixed = model().train()
    with pytest.raises(InvalidInputError, match=r"the adaptive policy is in training mode, .* batches of at least 2 "
                                                r"inputs .* got 1; call model.eval\(\) to predict"):
        mixed(images(1))
    assert mixed.eval()(images(1)).shape == (1, 10)

