"""The benchmark harness (robust_mix.benchmark): results, resumption, sharding, data, CLI outputs."""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import robust_mix
import robust_mix.data
from robust_mix.protocol import AttackOptions
from robust_mix.benchmark import BenchmarkResult, benchmark, chunk_seed, number_forward_passes, predict
from robust_mix.config import ModelConfig, ReportedResult

torch.set_num_threads(1)  # the CI box is shared; single-threaded CPU kernels are also deterministic

TESTS = Path(__file__).parent
ROOT = TESTS.parent
EPS = 0.1
FAST = AttackOptions(n_iter=8, n_target_classes=2)
FAST_CLI = ["--n-iter", "8", "--n-target-classes", "2"]


@functools.lru_cache(maxsize=1)
def class_means() -> torch.Tensor:
    """Per-class mean Fashion-MNIST training image ``(10, 1, 28, 28)``."""
    x, y = robust_mix.data.load_dataset("fashion-mnist", "train")
    return torch.stack([x[y == c].mean(0) for c in range(10)])


class TemplateNet(nn.Module):
    """A nearest-class-mean classifier on pixels plus two small conv stages (``stage1``/``stage2``,
    tap points for a mixing network) that add a small learned-looking term: a real, input-dependent
    classifier with fixed weights, no training needed."""

    def __init__(self, seed: int, scale: float) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.num_classes = 10
        self.stage1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())
        self.extra = nn.Linear(8, 10)
        self.templates = nn.Linear(784, 10)
        means = class_means().flatten(1)
        with torch.no_grad():
            self.templates.weight.copy_(scale * means)
            self.templates.bias.copy_(-0.5 * scale * (means ** 2).sum(1))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stage2(self.stage1(x)).mean(dim=(2, 3))
        return self.templates(x.flatten(1)) + self.extra(features)


def tiny_config(**kw) -> ModelConfig:
    base = dict(name="tiny-template-mix", dataset="fashion-mnist", eps=EPS, alpha=0.6,
                reported=ReportedResult(clean_acc=70.0, autoattack_acc=20.0, n_examples=10_000),
                paper="Tiny test mixture",
                citation="@article{tiny2024, title={A Tiny Mixture}, author={Doe, Jane and Roe, Rick}, "
                         "journal={Test Journal}, year={2024}, url={https://example.org/tiny}}")
    base.update(kw)
    return ModelConfig(**base)


def tiny_mixed() -> robust_mix.MixedClassifier:
    """Factory for ``robust-mix benchmark tests.test_benchmark:tiny_mixed`` (also used in-process)."""
    return robust_mix.MixedClassifier(TemplateNet(0, 6.0), TemplateNet(1, 2.0), alpha=0.6, config=tiny_config())


def fmnist(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return robust_mix.data.load_dataset("fashion-mnist", "test", n)


def run_cli(args: list[str], env_extra: dict | None = None, **popen) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{TESTS}", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-W", "ignore", *args], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


CLI_ARGS = ["benchmark", "test_benchmark:tiny_mixed", "--n-examples", "24", "--batch-size", "4",
            "--attack", "apgd-ce,apgd-t", "--seed", "3", *FAST_CLI]


# -- the result ----------------------------------------------------------------------------------
def test_result_fields_are_fractions_and_consistent_with_flags():
    x, y = fmnist(12)
    result = benchmark(tiny_mixed(), images=x, labels=y, eps=EPS, batch_size=6, attack="apgd-ce,apgd-t",
                       options=FAST, device="cpu")
    assert result.n_examples == 12 and len(result.robust_flags) == 12
    assert result.clean_accuracy == sum(result.clean_flags) / 12
    assert result.robust_accuracy == sum(result.robust_flags) / 12
    assert 0 <= result.robust_accuracy <= result.clean_accuracy <= 1
    # the cascade never repairs an example, and some examples fall to the attack at this eps
    assert list(result.stage_accuracy) == ["apgd-ce", "apgd-t"]
    assert result.clean_accuracy >= result.stage_accuracy["apgd-ce"] >= result.stage_accuracy["apgd-t"]
    assert result.robust_accuracy < result.clean_accuracy
    assert all(c or not r for c, r in zip(result.clean_flags, result.robust_flags))
    assert result.wall_time_s > 0 and result.examples_per_second > 0
    assert result.number_forward_passes == 2 and result.eps == EPS and result.dataset == "fashion-mnist"
    assert not result.leaderboard_grade and result.options == {"n_iter": 8, "n_target_classes": 2}
    assert {"torch", "pyautoattack", "robust_mix"} <= set(result.versions)
    assert result.config_fingerprint == tiny_config().fingerprint() and result.resumed_seconds == 0
    again = BenchmarkResult.from_json(result.to_json())
    assert again == result


def test_adaptive_suite_reports_both_numbers_and_minimum():
    x, y = fmnist(10)
    result = benchmark(tiny_mixed(), images=x, labels=y, eps=EPS, batch_size=10, attack="apgd-ce",
                       adaptive=True, options=FAST, device="cpu")
    assert set(result.suite_accuracy) == {"autoattack", "adaptive"}
    assert list(result.stage_accuracy) == ["apgd-ce", "adaptive-apgd-ce", "adaptive-apgd-t"]
    both = [a and b for a, b in zip(result.suite_flags["autoattack"], result.suite_flags["adaptive"])]
    assert result.robust_flags == both
    assert result.robust_accuracy <= min(result.autoattack_accuracy, result.adaptive_accuracy)


class LazyConstantNet(nn.Module):
    """Caches its normalisation constant on the first call, as RobustBench's DM networks cache ``mean_cuda``
    (and ``std_cuda``) on their first CUDA forward: whatever mode that first call runs in, the attacks'
    backward passes use it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("std", torch.full((1, 1, 1, 1), 0.3))
        self.cached_std = None
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cached_std is None:
            self.cached_std = self.std.clone()
        return self.head(x / self.cached_std)  # division keeps its divisor for the backward pass


def test_clean_predictions_leave_no_inference_tensors_for_the_attacks():
    x, y = fmnist(4)
    model = LazyConstantNet().eval()
    predict(model, x, batch_size=4, device=torch.device("cpu"))  # the first call: the cache is made here
    assert not model.cached_std.is_inference()
    x_adv = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x_adv), y), x_adv)
    assert grad.shape == x.shape and grad.abs().sum() > 0


class DoubleScores(nn.Module):
    """float32 weights, float64 scores (a head that upcasts, as some wrappers do)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TemplateNet(1, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).double()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_models_computing_in_another_dtype_are_attacked_in_it(dtype):
    """pyautoattack attacks float32 images: a float64 model given float64 images, as benchmark() asks, failed
    inside the first attack ('images are torch.float32 but the model computes in torch.float64')."""
    x, y = fmnist(6)
    model = tiny_mixed()
    model.alpha = robust_mix.build_adaptive_policy(model, robust_mix.PolicyConfig(
        ["stage1"], ["stage1"], widths=[4], blocks=1, input_shape=(1, 28, 28)))
    model = model.to(dtype)
    result = benchmark(model.eval(), images=x.to(dtype), labels=y, eps=EPS, batch_size=6, attack="apgd-ce,fab-t,square",
                       adaptive=True, options=AttackOptions(n_iter=2, n_target_classes=2, n_queries=5), device="cpu")
    with torch.no_grad():
        assert result.clean_flags == (model(x.to(dtype)).argmax(1) == y).tolist()
    assert result.stages == ["apgd-ce", "fab-t", "square", "adaptive-apgd-ce", "adaptive-apgd-t"]
    assert result.robust_accuracy <= min(result.stage_accuracy.values()) <= result.clean_accuracy


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_the_test_images_benchmark_loads_are_given_to_the_model_in_its_dtype(dtype):
    """Without images=, benchmark() loads float32 images: a float64 or half model was refused with 'images are
    torch.float32 but the model computes in ...; convert them with images.to(...)', images the caller never had."""
    x, y = fmnist(4)
    model = tiny_mixed().to(dtype)
    result = benchmark(model, n_examples=4, batch_size=4, attack="apgd-ce", options=FAST, device="cpu")
    with torch.no_grad():
        assert result.clean_flags == (model(x.to(dtype)).argmax(1) == y).tolist()
    assert result.robust_accuracy <= result.clean_accuracy


def test_a_model_returning_float64_scores_is_attacked_by_every_stage():
    """FAB's projection wrote the float64 scores into float32 tensors: 'Index put requires the source and
    destination dtypes match'."""
    x, y = fmnist(6)
    result = benchmark(DoubleScores().eval(), images=x, labels=y, eps=EPS, batch_size=6,
                       attack="apgd-ce,apgd-t,fab-t,square", options=AttackOptions(n_iter=2, n_target_classes=2,
                                                                                  n_queries=5), device="cpu")
    assert result.stages == ["apgd-ce", "apgd-t", "fab-t", "square"] and result.robust_accuracy <= result.clean_accuracy


def test_clean_examples_measure_clean_accuracy_on_more_images_and_resume(tmp_path):
    x, y = fmnist(30)
    model = tiny_mixed()
    result = benchmark(model, images=x, labels=y, eps=EPS, n_examples=6, batch_size=6, attack="apgd-ce",
                       options=FAST, device="cpu", clean_examples=30, state_dir=tmp_path)
    with torch.no_grad():
        expected = (model(x).argmax(1) == y).sum().item()
    assert result.n_examples == 6 and result.full_clean_examples == 30
    assert result.full_clean_accuracy == expected / 30 and result.full_clean_successes == expected
    assert BenchmarkResult.from_json(result.to_json()) == result
    saved = json.loads((tmp_path / "clean_first_30.json").read_text())
    assert saved["correct"] == expected
    saved["correct"] = 0  # what a resumed run reads back: the saved count, not a new pass
    (tmp_path / "clean_first_30.json").write_text(json.dumps(saved))
    again = benchmark(model, images=x, labels=y, eps=EPS, n_examples=6, batch_size=6, attack="apgd-ce",
                      options=FAST, device="cpu", clean_examples=30, state_dir=tmp_path)
    assert again.full_clean_accuracy == 0 and again.robust_flags == result.robust_flags
    for bad, why in ((5, "fewer than the 6 attacked examples"), (31, "but only 30 images are available")):
        with pytest.raises(ValueError, match=f"clean_examples is {bad}, {why}"):
            benchmark(model, images=x, labels=y, eps=EPS, n_examples=6, attack="apgd-ce", options=FAST,
                      device="cpu", clean_examples=bad)


def test_a_report_with_an_impossible_full_clean_accuracy_is_refused():
    x, y = fmnist(8)
    result = benchmark(tiny_mixed(), images=x, labels=y, eps=EPS, n_examples=4, batch_size=4, attack="apgd-ce",
                       options=FAST, device="cpu", clean_examples=8)
    data = result.to_dict()
    with pytest.raises(robust_mix.validate.InvalidInputError, match="not a whole number of the 8 images"):
        BenchmarkResult.from_dict({**data, "full_clean_accuracy": 0.3})
    with pytest.raises(robust_mix.validate.InvalidInputError, match="must both be set"):
        BenchmarkResult.from_dict({**data, "full_clean_examples": None})


def _report(**changes) -> dict:
    """report.json data of a finished 4-example run (3 clean, 2 robust), with ``changes``."""
    data = BenchmarkResult(
        model="m", dataset="fashion-mnist", threat_model="Linf", eps=EPS, n_examples=4, attack="apgd-ce", seed=0,
        clean_accuracy=0.75, robust_accuracy=0.5, suite_accuracy={"autoattack": 0.5}, stage_accuracy={"apgd-ce": 0.5},
        clean_flags=[True, True, True, False], robust_flags=[True, True, False, False],
        suite_flags={"autoattack": [True, True, False, False]}, wall_time_s=2.0, examples_per_second=2.0,
        number_forward_passes=2).to_dict()
    return {**data, **changes}


@pytest.mark.parametrize("changes,match", [
    (dict(options=[1]), "options must be an object"),
    (dict(stage_accuracy=[]), "stage_accuracy must be an object"),
    (dict(seed="0"), "seed must be an integer"),
    (dict(seed=True), "seed must be an integer"),
    (dict(wall_time_s="x"), "wall_time_s must be a number"),
    (dict(wall_time_s=float("nan")), "wall_time_s"),
    (dict(number_forward_passes="2"), "number_forward_passes"),
    (dict(robust_flags=[2, 0, 0, 0], robust_accuracy=0.5), "robust_flags must hold true/false"),
    (dict(suite_accuracy={"autoattack": 0.75}), r"suite_accuracy\['autoattack'\] is 0.75 but its per-example flags"),
    (dict(robust_flags=[True, True, False, True], robust_accuracy=0.75,
          suite_flags={"autoattack": [True, True, False, True]}, suite_accuracy={"autoattack": 0.75}),
     "robust in example 3, which is not clean"),
])
def test_a_report_with_wrong_types_or_inconsistent_numbers_is_refused_naming_the_field(changes, match):
    BenchmarkResult.from_dict(_report())  # the unedited report is fine
    with pytest.raises(robust_mix.validate.InvalidInputError, match=match):
        BenchmarkResult.from_dict(_report(**changes))


@pytest.mark.parametrize("changes,match", [
    (dict(seed=-1), r"seed must be an integer >= 0, got -1"),
    (dict(seed=2 ** 64), r"seed must be an integer from 0 to 2\*\*64 - 1"),
    (dict(examples_per_second=float("inf")), r"examples_per_second must be a finite number > 0, got inf"),
    (dict(examples_per_second=0.0), r"examples_per_second must be a finite number > 0"),
    (dict(wall_time_s=1e300),
     r"wall_time_s must be a finite number of seconds in \(0, .*\] \(ten years\), got 1e\+300"),
    (dict(wall_time_s=0.0), r"wall_time_s must be a finite number of seconds in \(0"),
    (dict(resumed_seconds=1e300, resumed_chunks=1),
     r"resumed_seconds must be a finite number of seconds in \[0, 2\.0\]"),
    (dict(resumed_seconds=3.0, resumed_chunks=1),
     r"resumed_seconds .*in \[0, 2\.0\] \(wall_time_s covers every session"),
    (dict(resumed_seconds=1.0), r"resumed_seconds is 1\.0, but resumed_chunks is 0"),
    (dict(chunk_size=2, resumed_chunks=3), r"resumed_chunks is 3, more than the 2 chunk\(s\) of 2 that 4 examples"),
    (dict(number_forward_passes=10 ** 12),
     r"number_forward_passes is 1000000000000, but robust_mix's harness counts 1 or 2"),
    (dict(config_fingerprint=5), r"config_fingerprint must be a string or None, got 5"),
    (dict(command=["robust-mix"]), r"command must be a string or None"),
    (dict(versions={"torch": 2.1}), r"versions\['torch'\] must be a version string, got 2\.1"),
])
def test_a_report_with_run_numbers_no_run_writes_is_refused_naming_file_field_and_value(tmp_path, changes, match):
    """report.json's seed, counts and times were taken as read: a negative seed, an infinite speed, a wall time of
    1e300 s, earlier sessions' seconds beyond the whole wall time, a fingerprint that is a number. Each now fails on
    read, naming the file, the field and its value."""
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report()))
    BenchmarkResult.from_json(path)  # the unedited report is fine
    path.write_text(json.dumps(_report(**changes)))
    with pytest.raises(robust_mix.validate.InvalidInputError, match=match) as caught:
        BenchmarkResult.from_json(path)
    assert str(path) in str(caught.value)


def test_a_report_object_holding_its_budget_as_text_is_refused_by_its_check():
    """``BenchmarkResult(eps="1").check()`` passed, and the text reached formatting and the card (``"8/255"`` in a
    report.json file is still read as its number, as the field writes budgets)."""
    result = BenchmarkResult.from_dict(_report())
    with pytest.raises(robust_mix.validate.InvalidInputError, match=r"the report: eps must be a number, got '1' "
                                                                     r"\(str\); the report was edited"):
        dataclasses.replace(result, eps="1").check()
    assert BenchmarkResult.from_dict(_report(eps="1")).eps == 1.0


def test_the_report_of_a_real_run_passes_its_reader_and_states_finite_times(tmp_path):
    """Every report the harness writes is one its reader takes: a real tiny run, saved and read back, including its
    time fields (examples_per_second was inf for a wall time of 0)."""
    result = benchmark(tiny_mixed(), n_examples=3, batch_size=2, chunk_size=2, attack="apgd-ce", options=FAST,
                       device="cpu", state_dir=tmp_path / "state")
    result.save(tmp_path / "report.json")
    again = BenchmarkResult.from_json(tmp_path / "report.json")
    assert again == result and math.isfinite(again.examples_per_second) and again.wall_time_s > 0
    resumed = benchmark(tiny_mixed(), n_examples=3, batch_size=2, chunk_size=2, attack="apgd-ce", options=FAST,
                        device="cpu", state_dir=tmp_path / "state")
    resumed.save(tmp_path / "resumed.json")
    assert BenchmarkResult.from_json(tmp_path / "resumed.json").resumed_chunks == 2


def test_defaults_come_from_the_model_config_and_leaderboard():
    model = tiny_mixed()
    result = benchmark(model, n_examples=4, batch_size=4, attack="apgd-ce", options=FAST, device="cpu")
    assert (result.dataset, result.eps, result.threat_model, result.model) == ("fashion-mnist", EPS, "Linf",
                                                                                "tiny-template-mix")
    with pytest.raises(ValueError, match="eps"):
        benchmark(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), "fashion-mnist", n_examples=2)


@pytest.mark.parametrize("spelling", ["fmnist", "FashionMNIST", "fashion_mnist"])
def test_the_report_names_the_data_set_in_its_one_spelling(spelling, tmp_path):
    """dataset='fmnist' (a spelling the loader takes) was written into the report as it was given: the report's data
    set then had 'no leaderboard' (a full run could never be claimed), model_info.json said 'fmnist', the entry's
    reported numbers were not shown, and a resume under the other spelling was refused."""
    from robust_mix.formatting import partial_reasons
    from robust_mix.report import model_info

    kwargs = dict(n_examples=2, batch_size=2, attack="apgd-ce", options=FAST, device="cpu", state_dir=tmp_path)
    result = benchmark(tiny_mixed(), dataset=spelling, **kwargs)
    assert result.dataset == result.arguments["dataset"] == "fashion-mnist"
    assert "2 of the leaderboard's 10,000 test examples" in partial_reasons(result)
    # a report written before, with the spelling it was given, is read in the same way
    older = dataclasses.replace(result, dataset=spelling)
    assert "2 of the leaderboard's 10,000 test examples" in partial_reasons(older)
    assert model_info(result, tiny_config())["dataset"] == "fashion-mnist"
    assert model_info(result, tiny_config())["reported"] == "20.00"
    assert benchmark(tiny_mixed(), dataset="fashion-mnist", **kwargs).resumed_chunks == 1


def test_imagenet_test_images_are_prepared_as_the_model_config_states(monkeypatch):
    """An ImageNet entry's RobustBench preprocessing (``BicubicRes256Crop224`` for MixedNUTS) prepares its test
    images; benchmark() used ``Res256Crop224`` whatever the entry said, so its numbers were not RobustBench's."""
    from conftest import make_tiny

    asked = []

    real = robust_mix.data.load_dataset

    def load_dataset(name, split="test", n_examples=None, data_dir=None, *, preprocessing=None, config=None):
        if name != "imagenet":
            return real(name, split, n_examples, data_dir, preprocessing=preprocessing, config=config)
        asked.append(preprocessing)
        return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 2])

    monkeypatch.setattr(robust_mix.data, "load_dataset", load_dataset)
    config = ModelConfig(name="tiny-imagenet", dataset="imagenet", eps=4 / 255, alpha=0.7,
                         preprocessing="BicubicRes256Crop224")
    model = robust_mix.MixedClassifier(make_tiny(0, in_chans=3), make_tiny(1, in_chans=3), alpha=0.7, config=config)
    run = functools.partial(benchmark, model, n_examples=2, batch_size=2, attack="apgd-ce", options=FAST)
    assert run().arguments["preprocessing"] == "BicubicRes256Crop224"
    assert run(preprocessing="Res224").arguments["preprocessing"] == "Res224"  # the caller's wins
    assert asked == ["BicubicRes256Crop224", "Res224"]
    with pytest.raises(robust_mix.validate.InvalidInputError, match="applies to ImageNet's test images only"):
        benchmark(tiny_mixed(), n_examples=2, attack="apgd-ce", options=FAST, preprocessing="Res224")


def test_a_preprocessing_with_images_given_is_refused_not_recorded():
    """``preprocessing=`` prepares the test images benchmark() loads; with the caller's images it was written into
    the report as if applied, and never was."""
    from conftest import make_tiny

    config = ModelConfig(name="tiny-imagenet", dataset="imagenet", eps=4 / 255, alpha=0.7)
    model = robust_mix.MixedClassifier(make_tiny(0, in_chans=3), make_tiny(1, in_chans=3), alpha=0.7, config=config)
    images, labels = torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    with pytest.raises(robust_mix.validate.InvalidInputError, match="images were given"):
        benchmark(model, images=images, labels=labels, attack="apgd-ce", options=FAST,
                  preprocessing="BicubicRes256Crop224")
    assert benchmark(model, images=images, labels=labels, attack="apgd-ce",
                     options=FAST).arguments["preprocessing"] is None


def test_the_caller_s_random_numbers_are_left_as_they_were():
    """pyautoattack's attacks call torch.manual_seed: after benchmark() the caller drew the numbers of the attacks'
    seed (a training loop evaluating every epoch would then shuffle and augment the same way after each)."""
    model = tiny_mixed()
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    first = benchmark(model, n_examples=4, batch_size=2, attack="apgd-ce,square", options=FAST, device="cpu")
    assert torch.equal(torch.rand(4), expected)
    torch.manual_seed(7)  # another caller state: the same result (every stage seeds itself)
    again = benchmark(model, n_examples=4, batch_size=2, attack="apgd-ce,square", options=FAST, device="cpu")
    assert again.robust_flags == first.robust_flags and again.stage_accuracy == first.stage_accuracy


def test_a_model_in_training_mode_is_evaluated_in_eval_mode_and_left_in_training_mode():
    """benchmark() evaluates in eval mode; the caller's model then stayed in it (a model benchmarked between
    epochs trained on with BatchNorm's running statistics)."""
    model = tiny_mixed()
    model.alpha = robust_mix.build_adaptive_policy(model, robust_mix.PolicyConfig(
        standard_layers=["stage1", "stage2"], robust_layers=["stage1", "stage2"], widths=[4, 4], blocks=1,
        input_shape=(1, 28, 28)))
    model.train()
    modes = {name: module.training for name, module in model.named_modules()}
    evaluated = robust_mix.MixedClassifier.train(copy.deepcopy(model), False)
    result = benchmark(model, n_examples=4, batch_size=4, attack="apgd-ce", options=FAST, device="cpu")
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert result.robust_flags == benchmark(evaluated, n_examples=4, batch_size=4, attack="apgd-ce", options=FAST,
                                            device="cpu").robust_flags


def test_number_forward_passes():
    model = tiny_mixed()
    assert number_forward_passes(model) == 2
    model.alpha = 1.0
    assert number_forward_passes(model) == 1
    assert number_forward_passes(nn.Linear(2, 2)) == 1


def test_chunk_seeds_are_fixed_and_distinct():
    assert chunk_seed(0, 1) == chunk_seed(0, 1)
    assert len({chunk_seed(s, c) for s in range(3) for c in range(50)}) == 150


# -- resumption ----------------------------------------------------------------------------------
class _Interrupt(Exception):
    pass


class _StopAfter:
    """Progress hook that aborts the run once ``stage`` has seen ``n`` examples (a crash mid-run)."""

    def __init__(self, stage: str, n: int) -> None:
        self.stage, self.n, self.seen = stage, n, 0

    def start(self, stages, total):
        pass

    def advance(self, stage, n):
        if stage == self.stage:
            self.seen += n
            if self.seen >= self.n:
                raise _Interrupt


def test_resume_after_a_crash_mid_run_gives_identical_flags(tmp_path):
    x, y = fmnist(16)
    kwargs = dict(images=x, labels=y, eps=EPS, batch_size=4, attack="apgd-ce,apgd-t", seed=5, options=FAST,
                  device="cpu")
    reference = benchmark(tiny_mixed(), **kwargs)
    with pytest.raises(_Interrupt):
        benchmark(tiny_mixed(), state_dir=tmp_path, progress=_StopAfter("apgd-ce", 8), **kwargs)
    saved = json.loads((tmp_path / "chunk_000001.json").read_text())
    assert saved["stages_done"] == ["apgd-ce"] and not saved["done"]  # stopped between two stages
    resumed = benchmark(tiny_mixed(), state_dir=tmp_path, **kwargs)
    assert resumed.resumed_chunks == 2
    # the interrupted session's time on those chunks is part of the run's wall time
    earlier = sum(json.loads(p.read_text())["seconds"] for p in tmp_path.glob("chunk_00000[01].json"))
    assert 0 < resumed.resumed_seconds <= earlier and resumed.wall_time_s > resumed.resumed_seconds
    assert resumed.robust_flags == reference.robust_flags
    assert resumed.suite_flags == reference.suite_flags and resumed.clean_flags == reference.clean_flags


def test_resume_refuses_a_state_dir_from_other_arguments(tmp_path):
    x, y = fmnist(4)
    kwargs = dict(images=x, labels=y, eps=EPS, batch_size=4, attack="apgd-ce", options=FAST, device="cpu")
    benchmark(tiny_mixed(), state_dir=tmp_path, **kwargs)
    with pytest.raises(ValueError, match="different arguments.*seed"):
        benchmark(tiny_mixed(), state_dir=tmp_path, seed=1, **kwargs)


def test_chunk_states_without_the_record_of_their_arguments_are_refused(tmp_path):
    """A state folder whose run.json is gone (deleted, an older robust_mix): its chunks may come from another
    eps, attack or model, so they are not mixed into this run."""
    x, y = fmnist(4)
    kwargs = dict(images=x, labels=y, n_examples=4, batch_size=4, attack="apgd-ce", options=FAST, device="cpu")
    benchmark(tiny_mixed(), state_dir=tmp_path, eps=EPS, **kwargs)
    (tmp_path / "run.json").unlink()
    with pytest.raises(ValueError, match="chunk_000000.json.*no run.json"):
        benchmark(tiny_mixed(), state_dir=tmp_path, eps=0.05, **kwargs)


def test_a_corrupt_state_file_is_named_not_trusted(tmp_path):
    x, y = fmnist(4)
    kwargs = dict(images=x, labels=y, eps=EPS, n_examples=4, batch_size=4, attack="apgd-ce", options=FAST,
                  device="cpu", state_dir=tmp_path)
    benchmark(tiny_mixed(), **kwargs)
    chunk = tmp_path / "chunk_000000.json"
    good = chunk.read_text()
    chunk.write_text(good[:40])
    with pytest.raises(robust_mix.validate.InvalidInputError, match="chunk_000000.json is not valid JSON"):
        benchmark(tiny_mixed(), **kwargs)
    data = json.loads(good)
    chunk.write_text(json.dumps({**data, "clean": data["clean"][:2]}))
    with pytest.raises(robust_mix.validate.InvalidInputError, match="chunk_000000.json.*clean.*4 flags"):
        benchmark(tiny_mixed(), **kwargs)
    chunk.write_text(good)
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(robust_mix.validate.InvalidInputError, match="run.json is not valid JSON"):
        benchmark(tiny_mixed(), **kwargs)


@pytest.mark.parametrize("edit, match", [
    (lambda d: {**d, "flags": {}}, r"marks work as done that it holds no flags for \(suite 'autoattack'\)"),
    (lambda d: {**d, "stage_flags": {}}, r"no flags for \(stage 'apgd-ce'\)"),  # was 'error: apgd-ce' (a KeyError)
    (lambda d: {**d, "stages_done": []}, r"no flags for \(stage 'apgd-ce'\)"),
    (lambda d: {**d, "done": False, "flags": {}}, r"no flags for \(suite 'autoattack'\)"),
    (lambda d: {**d, "clean": [1, "x", 2, 0]}, r"clean must hold true/false flags, got 1"),  # was a TypeError
    (lambda d: {**d, "done": "yes"}, r"done must be true/false"),
    (lambda d: {**d, "done": False, "seconds": None}, r"seconds must be a finite number >= 0"),  # was a TypeError
    (lambda d: {**d, "seconds": -50.0}, r"seconds must be a finite number >= 0, got -50"),  # a negative wall time
    # a time no run takes: the report's wall time, refused by its reader only once the whole run had finished
    (lambda d: {**d, "seconds": 1e300},
     r"seconds must be a finite number of seconds in \[0, .*\(ten years\), got 1e\+300"),
    (lambda d: {**d, "cpu_threads": "1"}, r"cpu_threads must be a list of positive thread counts"),
    # a state written by a newer robust_mix: its fields may mean something else; the version was never read
    (lambda d: {**d, "version": 2}, r"chunk state of version 2, not the version 1 this robust_mix .* writes and reads"),
    (lambda d: {**d, "version": "1"}, r"chunk state of version '1'.*resume the run with the robust_mix that started it"),
])
def test_a_chunk_state_that_lost_the_flags_of_its_finished_stages_is_named(tmp_path, edit, match):
    x, y = fmnist(4)
    kwargs = dict(images=x, labels=y, eps=EPS, n_examples=4, batch_size=4, attack="apgd-ce", options=FAST,
                  device="cpu", state_dir=tmp_path)
    benchmark(tiny_mixed(), **kwargs)
    chunk = tmp_path / "chunk_000000.json"
    chunk.write_text(json.dumps(edit(json.loads(chunk.read_text()))))
    with pytest.raises(robust_mix.validate.InvalidInputError,
                       match=f"chunk_000000.json.*{match}.*start this run afresh"):
        benchmark(tiny_mixed(), **kwargs)


def test_an_edited_count_of_the_full_clean_pass_is_named(tmp_path):
    """clean_first_<N>.json's count was read as it was: 9 of 6 images gave full_clean_accuracy 1.5 in a report
    that could not be read back, "x" a bare ValueError."""
    x, y = fmnist(6)
    kwargs = dict(images=x, labels=y, eps=EPS, n_examples=2, clean_examples=6, batch_size=4, attack="apgd-ce",
                  options=AttackOptions(n_iter=1), device="cpu", state_dir=tmp_path)
    benchmark(tiny_mixed(), **kwargs)
    saved = tmp_path / "clean_first_6.json"
    for correct in (9, "x", -1):
        saved.write_text(json.dumps({**json.loads(saved.read_text()), "correct": correct}))
        with pytest.raises(robust_mix.validate.InvalidInputError, match="clean_first_6.json: correct must be a count "
                           "of the 6 images.*start this run afresh"):
            benchmark(tiny_mixed(), **kwargs)


def test_a_chunk_state_saved_before_its_first_stage_resumes(tmp_path):
    x, y = fmnist(4)
    kwargs = dict(images=x, labels=y, eps=EPS, n_examples=4, batch_size=4, attack="apgd-ce", options=FAST,
                  device="cpu", state_dir=tmp_path)
    first = benchmark(tiny_mixed(), **kwargs)
    chunk = tmp_path / "chunk_000000.json"
    chunk.write_text(json.dumps({**json.loads(chunk.read_text()), "done": False, "stages_done": [], "flags": {},
                                 "stage_flags": {}}))
    assert benchmark(tiny_mixed(), **kwargs).robust_flags == first.robust_flags


def test_sigkill_and_restart_ends_with_the_uninterrupted_flags(tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["-m", "robust_mix.cli", *CLI_ARGS, "--out", str(out)])
    first_chunk = out / "state" / "chunk_000000.json"
    deadline = time.monotonic() + 120
    while not first_chunk.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "report.json").exists()
    done_before = sum(json.loads(p.read_text())["done"] for p in (out / "state").glob("chunk_*.json"))
    assert done_before < 6
    restarted = run_cli(["-m", "robust_mix.cli", *CLI_ARGS, "--out", str(out)])
    log = restarted.communicate(timeout=180)[0].decode()
    assert restarted.returncode == 0, log[-3000:]
    report = BenchmarkResult.from_json(out / "report.json")
    assert report.resumed_chunks >= 1

    x, y = fmnist(24)
    reference = benchmark(tiny_mixed(), images=x, labels=y, eps=EPS, batch_size=4, attack="apgd-ce,apgd-t",
                          seed=3, options=FAST, device="cpu")
    assert report.robust_flags == reference.robust_flags
    assert report.suite_flags == reference.suite_flags
    # the CLI's other outputs
    info = json.loads((out / "model_info.json").read_text())
    assert info["clean_acc"] == f"{100 * reference.clean_accuracy:.2f}" and info["eps"] == "0.1"
    assert "| tiny-template-mix | fashion-mnist |" in (out / "report.md").read_text()
    assert "apgd-t" in log  # progress bars per stage


def test_two_processes_give_the_same_flags_as_one(tmp_path):
    out = tmp_path / "ddp"
    proc = run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    "-m", "robust_mix.cli", *CLI_ARGS, "--clean-examples", "41", "--out", str(out)])
    log = proc.communicate(timeout=240)[0].decode()
    assert proc.returncode == 0, log[-3000:]
    report = BenchmarkResult.from_json(out / "report.json")
    assert report.world_size == 2
    chunks = [json.loads(p.read_text())["chunk"] for p in (out / "state").glob("chunk_*.json")]
    assert sorted(chunks) == list(range(6))

    x, y = fmnist(41)
    single = benchmark(tiny_mixed(), images=x, labels=y, eps=EPS, n_examples=24, batch_size=4,
                       attack="apgd-ce,apgd-t", seed=3, options=FAST, device="cpu", clean_examples=41)
    assert report.robust_flags == single.robust_flags
    assert report.full_clean_accuracy == single.full_clean_accuracy and report.full_clean_examples == 41
    assert report.robust_accuracy == single.robust_accuracy and report.clean_accuracy == single.clean_accuracy


# -- data ----------------------------------------------------------------------------------------
def test_imagenet_reads_robustbenchs_list_from_a_local_folder(tmp_path):
    from PIL import Image

    from robust_mix.data import DatasetNotFoundError, imagenet_test_ids, load_imagenet

    ids = imagenet_test_ids()
    assert len(ids) == 5000 and ids[0].endswith(".JPEG")
    for i, name in enumerate(ids[:3]):
        path = tmp_path / "val" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (300 + 10 * i, 280), color=(40 * i, 100, 200)).save(path)
    images, labels = load_imagenet(data_dir=tmp_path, n_examples=3)
    assert images.shape == (3, 3, 224, 224) and 0 <= images.min() and images.max() <= 1
    class_map = json.loads((Path(robust_mix.data._robustbench_helper_file("imagenet_class_to_id_map.json"))
                            ).read_text())
    assert labels.tolist() == [class_map[n.split("/")[0]] for n in ids[:3]]
    with pytest.raises(DatasetNotFoundError, match="missing"):
        load_imagenet(data_dir=tmp_path, n_examples=4)
    with pytest.raises(ValueError, match="asked for 5001 examples but imagenet test .* has 5000"):
        load_imagenet(data_dir=tmp_path, n_examples=5001)


# -- benchmarks/reproduce.py ---------------------------------------------------------------------
def test_reproduce_prints_reported_beside_measured_and_explains_missing_weights(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import reproduce
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    x, y = fmnist(4)
    result = benchmark(tiny_mixed(), images=x, labels=y, batch_size=4, attack="apgd-ce", options=FAST,
                       device="cpu", dataset="fashion-mnist")
    table = reproduce.comparison(result, tiny_config())
    assert "reported" in table and "measured" in table
    assert f"{100 * result.clean_accuracy:.2f}" in table and "70.00" in table and "20.00" in table
    assert reproduce.main(["mix"]) == 2  # 'mix' has no base models: a clear message, no traceback
    assert "cannot reproduce mix" in capsys.readouterr().err


def test_fingerprint_sees_constants_that_are_not_tensors():
    """A recalibrated alpha range or temperature must not resume a stale run."""
    from conftest import make_tiny
    from robust_mix.fingerprint import model_fingerprint

    model = robust_mix.MixedClassifier(make_tiny(0), make_tiny(1), alpha=0.5)
    model.alpha = robust_mix.build_adaptive_policy(model, robust_mix.PolicyConfig(
        standard_layers=["stage1"], robust_layers=["stage1"], widths=[8], blocks=1, input_shape=(1, 16, 16)))
    before = model_fingerprint(model)
    model.policy.alpha_range = (0.5, 1.0)
    after_range = model_fingerprint(model)
    model.rob_scale = 2.0
    assert len({before, after_range, model_fingerprint(model)}) == 3


def test_a_resume_with_the_model_in_another_dtype_is_refused(tmp_path):
    """A float64 copy of a float32 model has the same weight sums: its run resumed the float32 run's chunks,
    mixing the flags of two models that round differently."""
    x, y = fmnist(4)
    kwargs = dict(labels=y, eps=EPS, batch_size=2, attack="apgd-ce", options=FAST, device="cpu", state_dir=tmp_path)
    benchmark(tiny_mixed(), images=x, **kwargs)
    with pytest.raises(ValueError, match=r"differs in \['model'\]"):
        benchmark(tiny_mixed().double(), images=x.double(), **kwargs)


class _Pixels(nn.Module):
    """A classifier without parameters: the first ten pixels, scaled."""

    def __init__(self, scale: float = 4.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.flatten(1)[:, :10]


class _LastPixels(_Pixels):
    """Another classifier without parameters: the last ten pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.flatten(1)[:, -10:]


class _Normalised(nn.Module):
    """Pixels normalised by a non-persistent buffer (no parameter, nothing in state_dict)."""

    def __init__(self, mean: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, 10), mean), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] - self.mean


def test_models_without_parameters_do_not_resume_each_other_s_state(tmp_path):
    """The resume fingerprint summed tensors only: two models without parameters (wrappers, fixed transforms) had
    the same one, so a run resumed the flags another model had written. The same model still resumes."""
    x, y = fmnist(4)
    kwargs = dict(images=x, labels=y, eps=EPS, batch_size=2, attack="apgd-ce", options=FAST, device="cpu",
                  state_dir=tmp_path)
    first = benchmark(_Pixels(), **kwargs)
    for other in (_LastPixels(), _Pixels(scale=3.0), nn.Sequential(_Pixels())):
        with pytest.raises(ValueError, match=r"differs in \['model_code'\]"):
            benchmark(other, **kwargs)
    again = benchmark(_Pixels(), **kwargs)  # another instance of the same model
    assert again.resumed_chunks == 2 and again.robust_flags == first.robust_flags
    buffered = tmp_path / "buffered"
    benchmark(_Normalised(0.1), **{**kwargs, "state_dir": buffered})
    with pytest.raises(ValueError, match=r"differs in \['model_code'\]"):
        benchmark(_Normalised(0.2), **{**kwargs, "state_dir": buffered})
    assert benchmark(_Normalised(0.1), **{**kwargs, "state_dir": buffered}).resumed_chunks == 2


def test_model_code_fingerprint_is_the_same_in_every_process_and_after_a_forward_pass(tmp_path):
    """Resume compares fingerprints across processes: no object ids or addresses, no caches filled by a forward pass
    (weight-standardised convolutions keep their standardised weight once computed), no fast-path twin classes."""
    from timm.layers import StdConv2d

    from robust_mix.fingerprint import model_code_fingerprint
    from robust_mix.fastpath import original_layers

    def build() -> nn.Module:
        torch.manual_seed(0)
        net = nn.Sequential(StdConv2d(1, 4, 3), nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(10))
        net(torch.zeros(1, 1, 28, 28))
        return robust_mix.MixedClassifier(net, copy.deepcopy(net), alpha=0.5)

    model = build()
    before = model_code_fingerprint(model)
    model(torch.rand(2, 1, 28, 28))  # fills the standardised-weight caches
    with original_layers(model):
        assert model_code_fingerprint(model) == before
    assert model_code_fingerprint(model) == before
    script = tmp_path / "print_fingerprint.py"
    script.write_text("import copy, torch\nfrom torch import nn\nfrom timm.layers import StdConv2d\nimport robust_mix\n"
                      "from robust_mix.benchmark import model_code_fingerprint\n"
                      f"exec({_source_of(build)!r})\nprint(model_code_fingerprint(build()))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.stdout.strip() == before


def _source_of(function) -> str:
    import inspect
    import textwrap

    return textwrap.dedent(inspect.getsource(function))


def test_model_fingerprint_does_not_depend_on_the_thread_count():
    """A resume under another --threads must find the same model (a float32 sum changes with the threads)."""
    from robust_mix.fingerprint import model_fingerprint

    torch.manual_seed(0)
    model = nn.Linear(2000, 2000)  # 4 M weights: their float32 sum differs in the 7th digit with 1 and 2 threads
    before = torch.get_num_threads()
    try:
        prints = set()
        for n in (1, 2):
            torch.set_num_threads(n)
            prints.add(model_fingerprint(model))
    finally:
        torch.set_num_threads(before)
    assert len(prints) == 1


def test_the_report_records_every_cpu_thread_count_the_passes_ran_with(tmp_path, monkeypatch):
    """The last bits of gradients depend on the thread count; the report says which counts a run used."""
    from robust_mix.attacks import StageRunner
    from robust_mix.report import markdown_table

    x, y = fmnist(6)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = benchmark(tiny_mixed(), images=x, labels=y, eps=EPS, batch_size=6, attack="apgd-ce", options=FAST,
                        device="cpu")
        assert one.cpu_threads == [1]
        run = StageRunner.run

        def rebalanced(self, *args, **kwargs):  # another run ended: the policy hands this one two threads
            torch.set_num_threads(2)
            return run(self, *args, **kwargs)

        monkeypatch.setattr(StageRunner, "run", rebalanced)
        mixed = benchmark(tiny_mixed(), images=x, labels=y, eps=EPS, batch_size=3, attack="apgd-ce", options=FAST,
                          device="cpu", state_dir=tmp_path)
        assert mixed.cpu_threads == [1, 2]  # the clean pass ran on one thread, the attacks on two
        assert "1 / 2 CPU thread(s) per process" in markdown_table(mixed)
        torch.set_num_threads(1)
        resumed = benchmark(tiny_mixed(), images=x, labels=y, eps=EPS, batch_size=3, attack="apgd-ce",
                            options=FAST, device="cpu", state_dir=tmp_path)
        assert resumed.cpu_threads == [1, 2] and resumed.resumed_chunks == 2  # read back from the chunk states
    finally:
        torch.set_num_threads(before)
    assert BenchmarkResult.from_json(mixed.to_json()) == mixed
    old = {k: v for k, v in one.to_dict().items() if k != "cpu_threads"}  # a report from before the field
    assert BenchmarkResult.from_dict(old).cpu_threads == []
    for bad in (["2"], [0], True, [True]):
        with pytest.raises(robust_mix.validate.InvalidInputError, match="cpu_threads must be a list"):
            BenchmarkResult.from_dict({**one.to_dict(), "cpu_threads": bad})


# -- the adversarial examples the stages return ----------------------------------------------------------
def _out_of_bounds(norm: str, eps: float):
    """A stage that returns each image moved outside the run's threat model (or outside the pixel range)."""
    def perturbed(x: torch.Tensor) -> torch.Tensor:
        if norm == "range":  # inside the ball but above 1: a point no image can be
            return x + eps / 2
        if norm == "nan":
            return torch.full_like(x, float("nan"))
        step = torch.zeros_like(x)
        step[:, :, :3, :3] = 1.0
        size = {"Linf": 1.0, "L2": 3.0, "L1": 9.0}[norm]  # the norm of `step`
        return (x + 2 * eps * step / size).clamp(0, 1)  # the corner is background (0): nothing is clamped
    return perturbed


@pytest.mark.parametrize("norm, eps, match", [
    ("Linf", EPS, r"outside the Linf ball.*largest perturbation is 0\.2 \(Linf\), eps is 0\.1"),
    ("L2", 0.5, r"outside the L2 ball.*largest perturbation is 1 \(L2\), eps is 0\.5"),
    ("L1", 2.0, r"outside the L1 ball.*largest perturbation is 4 \(L1\), eps is 2"),
    ("range", EPS, r"outside \[0, 1\].*largest value 1\.05"),
    ("nan", EPS, r"NaN or inf"),
])
def test_an_adversarial_example_outside_the_threat_model_is_refused_naming_the_stage(monkeypatch, tmp_path, norm,
                                                                                     eps, match):
    """An attack returning an invalid point would make robust accuracy wrongly low with no warning: the
    harness checks every stage's examples (ball of the run's norm, pixel range) before scoring them."""
    from robust_mix.attacks import StageRunner
    from robust_mix.validate import InvalidAdversarialExampleError

    x, y = fmnist(6)
    if norm == "range":  # a brighter image, so that the step leaves [0, 1] without leaving the ball
        x = x.clamp(0.5, 1.0)
    threat = norm if norm in ("Linf", "L2", "L1") else "Linf"
    monkeypatch.setattr(StageRunner, "_apgd", lambda self, attack, loss, xb, yb: _out_of_bounds(norm, eps)(xb))
    with pytest.raises(InvalidAdversarialExampleError, match=match) as err:
        benchmark(tiny_mixed(), images=x, labels=y, threat_model=threat, eps=eps, batch_size=3,
                  attack="apgd-ce,apgd-t", options=FAST, device="cpu", state_dir=tmp_path)
    assert "the apgd-ce attack" in str(err.value) and "examples [" in str(err.value)
    # nothing of the stage was recorded: its flags would have come from invalid points
    saved = json.loads((tmp_path / "chunk_000000.json").read_text())
    assert saved["stages_done"] == [] and not saved["done"]


@pytest.mark.parametrize("threat_model, eps", [("L2", 0.5), ("L1", 3.0)])
def test_every_stage_returns_points_the_check_accepts_under_l2_and_l1(threat_model, eps):
    """The check's float tolerance lets every stage's own projections pass (Linf runs in every other test)."""
    x, y = fmnist(6)
    result = benchmark(tiny_mixed(), images=x, labels=y, threat_model=threat_model, eps=eps, batch_size=6,
                       attack="apgd-ce,apgd-t,fab-t,square", device="cpu",
                       options=AttackOptions(n_iter=3, n_target_classes=2, n_queries=10))
    assert list(result.stage_accuracy) == ["apgd-ce", "apgd-t", "fab-t", "square"]


# -- the model's arithmetic path in the state's record ---------------------------------------------------
def _eager_compiled() -> robust_mix.MixedClassifier:
    """``tiny_mixed`` with its bases compiled as ``compile_model`` does (the eager backend: no code generation)."""
    model = tiny_mixed()
    for part in (model.standard, model.robust):
        part.compile(backend="eager", dynamic=True)
    return model


@pytest.mark.parametrize("first, second, match", [
    (tiny_mixed, lambda: robust_mix.fastpath.channels_last(tiny_mixed()), r"without channels-last.*with it"),
    (lambda: robust_mix.fastpath.channels_last(tiny_mixed()), tiny_mixed, r"with channels-last.*without it"),
    (tiny_mixed, _eager_compiled, r"without torch\.compile.*with it"),
])
def test_a_resume_on_another_arithmetic_path_is_refused(tmp_path, first, second, match):
    """--channels-last and --compile round differently in the last bits without changing the model's fingerprint:
    resuming a state folder on the other path mixed flags from two arithmetic paths."""
    x, y = fmnist(4)
    kwargs = dict(images=x, labels=y, eps=EPS, batch_size=4, attack="apgd-ce", options=FAST, device="cpu",
                  state_dir=tmp_path)
    benchmark(first(), **kwargs)
    assert json.loads((tmp_path / "run.json").read_text())["fast_path"].keys() == {"channels_last", "compiled"}
    with pytest.raises(ValueError, match=r"differs in \['fast_path'\].*" + match) as err:
        benchmark(second(), **kwargs)
    assert "same choice" in str(err.value)
    assert benchmark(first(), **kwargs).resumed_chunks == 1  # the same path resumes


def test_a_resume_on_another_kind_of_device_is_refused(tmp_path):
    """A run started on one device and resumed on another (CPU, then a GPU) would mix flags from two arithmetic
    paths: run.json records the kind of device, and a state written elsewhere is refused, saying where to resume."""
    x, y = fmnist(4)
    kwargs = dict(images=x, labels=y, eps=EPS, batch_size=4, attack="apgd-ce", options=FAST, device="cpu",
                  state_dir=tmp_path)
    benchmark(tiny_mixed(), **kwargs)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["device"] == "cpu"
    (tmp_path / "run.json").write_text(json.dumps({**record, "device": "cuda"}))  # as a GPU run writes it
    with pytest.raises(ValueError, match=r"differs in \['device'\]\): the state was written on 'cuda', this run is on "
                                         r"'cpu'.*--device cuda"):
        benchmark(tiny_mixed(), **kwargs)


def test_a_state_folder_from_before_the_device_was_recorded_resumes_with_a_warning(tmp_path, caplog):
    x, y = fmnist(4)
    kwargs = dict(images=x, labels=y, eps=EPS, batch_size=2, attack="apgd-ce", options=FAST, device="cpu",
                  state_dir=tmp_path)
    with pytest.raises(_Interrupt):
        benchmark(tiny_mixed(), progress=_StopAfter("apgd-ce", 2), **kwargs)
    record = json.loads((tmp_path / "run.json").read_text())
    del record["device"]
    (tmp_path / "run.json").write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="robust_mix.benchmark"):
        assert benchmark(tiny_mixed(), **kwargs).resumed_chunks == 1
    assert "did not record the device; resuming it on cpu assumes it ran there" in caplog.text


def test_a_state_folder_from_before_the_arithmetic_path_was_recorded_resumes_on_the_default_path(tmp_path):
    """Older run.json files have no fast_path (nor the adaptive stages' eot_iter and n_restarts, which were APGD-CE's):
    the default path resumes them; a channels-last run does not."""
    x, y = fmnist(4)
    kwargs = dict(images=x, labels=y, eps=EPS, batch_size=2, attack="apgd-ce", adaptive=True, options=FAST,
                  device="cpu", state_dir=tmp_path)
    with pytest.raises(_Interrupt):
        benchmark(tiny_mixed(), progress=_StopAfter("apgd-ce", 2), **kwargs)
    record = json.loads((tmp_path / "run.json").read_text())
    del record["fast_path"]
    del record["model_code"]  # not recorded either: the model's tensors were all that was compared
    for key in ("eot_iter", "n_restarts"):  # they were APGD-CE's, and not recorded
        del record["attack_settings"]["adaptive"][key]
    (tmp_path / "run.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"differs in \['fast_path'\]"):
        benchmark(robust_mix.fastpath.channels_last(tiny_mixed()), **kwargs)
    assert benchmark(tiny_mixed(), **kwargs).resumed_chunks == 1


class _NoisyScores(nn.Module):
    """A linear classifier that adds fresh noise to its scores on every call (a randomized defense)."""

    def __init__(self, noise: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear, self.noise = nn.Linear(16, 3), noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.linear(x.flatten(1))
        return scores + self.noise * torch.randn_like(scores)


@pytest.mark.parametrize("noise, attack, warned", [(1.0, "apgd-ce", True), (0.0, "apgd-ce", False),
                                                   (1.0, "rand", False)])
def test_a_randomized_model_is_named_before_deterministic_autoattack_overstates_it(caplog, noise, attack, warned):
    """The harness skips pyautoattack's check_randomized: a model with noise in forward was attacked with the
    standard version without a word, its robustness overstated and its flags not reproducible on resume."""
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 1])
    with caplog.at_level(logging.INFO, logger="robust_mix.benchmark"):
        benchmark(_NoisyScores(noise), eps=EPS, attack=attack, images=x, labels=y, batch_size=4, device="cpu",
                  options=AttackOptions(n_iter=1, eot_iter=1))
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "randomized" in r.getMessage()]
    assert bool(warnings) == warned
    if warned:
        assert "_NoisyScores looks randomized" in warnings[0] and "attack='rand'" in warnings[0]



class _StepsOnEveryCall(nn.Module):
    """A linear classifier whose scores move on every call (state that changes between calls, no random numbers)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear, self.calls = nn.Linear(16, 3), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x.flatten(1)) + torch.tensor([1.0, -1.0, 0.0]) * (self.calls % 2)


@pytest.mark.parametrize("model, attack, randomized, partial", [
    (lambda: _NoisyScores(1.0), "apgd-ce,square", True, True),
    (lambda: _StepsOnEveryCall(), "apgd-ce,square", True, True),
    (lambda: _NoisyScores(1.0), "rand", True, False),
    (lambda: _NoisyScores(0.0), "apgd-ce,square", False, False)])
def test_the_report_of_a_randomized_model_says_its_numbers_are_one_draw(tmp_path, model, attack, randomized, partial):
    """A model whose scores change between passes was only named in the log: its report.json, report.md, model
    info and leaderboard row read like a deterministic model's, and a standard-suite run was not marked partial
    though the deterministic attack overstates a random model's robustness."""
    from robust_mix.formatting import partial_reasons
    from robust_mix.leaderboard.inputs import Evaluation
    from robust_mix.report import write_report

    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 1])
    result = benchmark(model(), eps=EPS, attack=attack, images=x, labels=y, batch_size=4, device="cpu",
                       options=AttackOptions(n_iter=1, eot_iter=1, n_target_classes=2, n_queries=2))
    assert result.randomized is randomized
    assert BenchmarkResult.from_json(result.to_json()).randomized is randomized
    paths = write_report(tmp_path, result)
    texts = [paths["markdown"].read_text(), json.loads(paths["model_info"].read_text())["footnote"]]
    assert all(("Randomized model" in text and "one draw" in text) is randomized for text in texts)
    assert any("randomized" in reason for reason in partial_reasons(result)) is partial
    assert any("randomized" in note for note in Evaluation("m", "m", tmp_path, result, "").caveats()) is randomized


class _WritesIntoInput(nn.Module):
    """A linear classifier whose forward changes its input in place, as a normalisation written with ``sub_``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear, self.how = nn.Linear(16, 3), how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "clamp_":
            x.clamp_(0, 1)  # leaves valid images as they are, but not a leaf that requires a gradient
        else:
            x.data.sub_(0.5)  # around autograd: changes the values under every pass
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("how, match", [("clamp_", "cannot go through"), ("data.sub_", "changed them by up to 0.5")])
@pytest.mark.parametrize("attack", ["apgd-ce", "square"])
def test_a_model_that_writes_into_its_input_is_refused_before_any_work(how, match, attack):
    """A forward that modified its input in place changed the harness's own images (the caller's tensor too) under
    Square, whose scores were then those of other images, and stopped APGD with autograd's bare RuntimeError."""
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 1])
    given = x.clone()
    with pytest.raises(robust_mix.validate.InvalidInputError, match=f"modifies its input images in place.*{match}"
                       r".*x = x.clone\(\)"):
        benchmark(_WritesIntoInput(how), eps=EPS, attack=attack, images=x, labels=y, batch_size=4, device="cpu",
                  options=AttackOptions(n_iter=1, n_queries=2))
    assert torch.equal(x, given)


def test_a_low_precision_model_is_not_called_randomized_for_its_rounding(caplog):
    """The randomness check allows a bfloat16 model the rounding of its own dtype (a GPU's nondeterministic kernels
    change its last bit), while noise far above it is still named."""
    from robust_mix.benchmark import _warn_if_randomized

    scores = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.bfloat16)
    nudged = scores + torch.tensor([[0.0, 0.0, 2 ** -6]], dtype=torch.bfloat16)  # one bfloat16 step above 3
    assert not torch.equal(nudged, scores)
    with caplog.at_level(logging.WARNING, logger="robust_mix.benchmark"):
        _warn_if_randomized(scores, nudged, "standard", "m")
        assert "randomized" not in caplog.text
        _warn_if_randomized(scores, scores + torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.bfloat16), "standard", "m")
    assert "m looks randomized" in caplog.text


@pytest.mark.parametrize("name, alpha, label", [
    ("fmnist-robust,alpha=0.9", None, "fmnist-robust,alpha=0.9"),
    ("fmnist-robust", 0.3, "fmnist-robust,alpha=0.3"),
    ("fmnist-robust", None, "fmnist-robust")])
def test_the_report_of_an_overridden_entry_names_its_overrides(tmp_path, name, alpha, label):
    """A model loaded with overrides ('fmnist-robust,alpha=0.9', or model.alpha set after loading) got a report
    whose model was the entry's bare name: report.md showed the fixed mix's numbers beside the robust base's name,
    and a leaderboard or card took it for the entry. The report names the overrides, as a NAME that loads the model
    it evaluated again, and is refused as a report of the unchanged entry."""
    from robust_mix.registry import labelled_config
    from robust_mix.report import SubmissionMismatchError, check_submission, write_report

    model = robust_mix.load_model(name, pretrained=False)
    if alpha is not None:
        model.alpha = alpha
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    result = benchmark(model, attack="apgd-ce", images=x, labels=y, batch_size=2, device="cpu",
                       options=AttackOptions(n_iter=1))
    assert result.model == result.arguments["model"] == label
    assert labelled_config(result.model).fingerprint() == result.config_fingerprint  # the label rebuilds it
    paths = write_report(tmp_path, result)
    assert json.loads(paths["report"].read_text())["model"] == label
    assert f"| {label} |" in paths["markdown"].read_text()
    entry = robust_mix.get_model_config("fmnist-robust")
    if label != entry.name:
        with pytest.raises(SubmissionMismatchError, match=label):
            check_submission(result, entry)
