"""robust_mix.timm_plugin: RobustBench's and timm's own entry points reach every registry entry.

Weights: RobustBench-format files written by the test from randomly initialised models into a
temporary ``ROBUST_MIX_MODEL_DIR`` (as tests/test_paper_models.py does), or, for entries registered
here, tiny timm test architectures saved with ``save_backbone``. The RobustBench comparison uses
``cifar100-adasmooth`` at test_paper_models.py's reduced size (BiT-R50x1 and WRN-10-4 for BiT-R152x2
and WRN-70-16, the mixing network sized for them): the registry entry is replaced by that reduced
config for the test, so RobustBench's path and ``robust_mix.load_model`` read the same entry.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import robust_mix
from robust_mix import (BackboneConfig, ModelConfig, PolicyConfig, WeightsConfig, get_model_config, load_model,
                        register_model, save_backbone)
from robust_mix import registry
from robust_mix._compat import UnknownModelError
from robust_mix.data import ImageArrayDataset
from robust_mix.io import load_state_dict, save_state_dict
from robust_mix.timm_config import SAVED_ARCHITECTURE, robustbench_timm_name
from robust_mix.timm_plugin import entry_of, isolated_timm_registry, robustbench_zoo_names
from robust_mix.weights import WeightsNotFoundError

import robustbench.data
import robustbench.utils
import timm
from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

from test_paper_models import (REDUCED_WIDTHS, build_robustbench, calibrate, compare, matches, random_images,
                               robustbench_on_cpu, robustbench_forward, write_robustbench_files, Pair)

ROOT = Path(__file__).resolve().parents[1]
PAPER_TIMM_NAMES = {  # the naming examples and the other three paper entries
    "cifar100-adasmooth": "robustmix_adasmooth_cifar100_linf",
    "cifar100-adasmooth-trades": "robustmix_adasmooth_trades_cifar100_linf",
    "cifar10-adasmooth": "robustmix_adasmooth_cifar10_linf",
    "cifar10-mixednuts": "robustmix_mixednuts_cifar10_linf",
    "cifar100-mixednuts": "robustmix_mixednuts_cifar100_linf",
    "imagenet-mixednuts": "robustmix_mixednuts_imagenet_linf",
}
TINY = "cifar10-tiny-mix"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(folder: Path, name: str = TINY, seed: int = 0, **changes) -> ModelConfig:
    """An adaptive CIFAR-10 mix of timm's test architectures, all its weights in files under ``folder``."""
    policy = PolicyConfig(standard_layers=["stages.0", "stages.1"], robust_layers=["blocks.0", "blocks.1"],
                          widths=[8, 8], blocks=1, input_shape=(3, 32, 32), alpha_range=(0.3, 0.9))
    config = ModelConfig(name=name, dataset="cifar10", threat_model="Linf", eps=8 / 255, num_classes=10,
                         input_shape=(3, 32, 32), alpha=None, policy=policy, license="MIT", paper="a tiny test",
                         standard=BackboneConfig("timm/test_byobnet", kwargs={"num_classes": 10}),
                         robust=BackboneConfig("timm/test_efficientnet", kwargs={"num_classes": 10}), **changes)
    torch.manual_seed(seed)
    model = robust_mix.build_model(config, pretrained=False)
    folder.mkdir(parents=True, exist_ok=True)
    files = {role: save_backbone(getattr(model, role), folder / f"{role}.safetensors", getattr(config, role).ref,
                                 getattr(config, role).kwargs) for role in ("standard", "robust")}
    save_state_dict({k: v for k, v in model.state_dict().items() if k.startswith("policy.")}, folder / "policy.safetensors")
    return dataclasses.replace(
        config, weights=WeightsConfig(file=str(folder / "policy.safetensors")),
        standard=dataclasses.replace(config.standard, weights=WeightsConfig(file=str(files["standard"]))),
        robust=dataclasses.replace(config.robust, weights=WeightsConfig(file=str(files["robust"]))))


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


# -- names -------------------------------------------------------------------------------------------
def test_every_robustbench_entry_is_a_timm_model():
    assert set(timm.list_models("robustmix_*")) == set(PAPER_TIMM_NAMES.values()) | {SAVED_ARCHITECTURE}
    for entry, name in PAPER_TIMM_NAMES.items():
        assert timm.is_model(name) and entry_of(name) == entry
    mirrored = {get_model_config(n).dataset for n in map(entry_of, timm.list_models("robustmix_*")) if n}
    assert mirrored == {"cifar10", "cifar100", "imagenet"}  # fmnist-* and mix: data sets RobustBench does not know
    assert not set(timm.list_models("robustmix_*")) & set(robustbench_zoo_names())


def test_pretrained_cfg_states_the_raw_input_contract():
    cifar = timm.models.get_pretrained_cfg("robustmix_adasmooth_cifar100_linf")
    assert (cifar.input_size, cifar.mean, cifar.std, cifar.num_classes) == ((3, 32, 32), (0, 0, 0), (1, 1, 1), 100)
    assert cifar.crop_pct == 1.0 and "Adaptive Smoothing" in cifar.paper_name and cifar.license
    imagenet = timm.models.get_pretrained_cfg("robustmix_mixednuts_imagenet_linf")
    assert (imagenet.input_size, imagenet.interpolation, imagenet.crop_pct) == ((3, 224, 224), "bicubic", 0.875)
    assert imagenet.num_classes == 1000 and imagenet.license.startswith("CC-BY-NC-4.0")


def test_an_imagenet_entry_without_a_preprocessing_states_the_one_its_images_get():
    """An ImageNet entry that states no preprocessing is evaluated on RobustBench's default (Res256Crop224), but its
    pretrained_cfg said crop_pct 1.0: timm's transform (and RobustBench's for timm models) cropped other images."""
    from robust_mix.data import imagenet_transform, preprocessing_for
    from robust_mix.timm_config import pretrained_cfg

    config = dataclasses.replace(get_model_config("imagenet-mixednuts"), preprocessing=None)
    cfg = timm.data.resolve_data_config({}, pretrained_cfg=pretrained_cfg(config, "robustmix_x_imagenet_linf"))
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    expected = imagenet_transform(preprocessing_for("imagenet", config=config))(image)
    assert torch.equal(timm.data.create_transform(**cfg)(image), expected)


def test_robustbench_picks_the_imagenet_transform_of_the_entry(scratch_registry, tmp_path):
    """``get_preprocessing`` builds the timm model (pretrained=False) to read its cfg: tiny stand-in bases
    keep that cheap; the preprocessing is the entry's own."""
    registry._REGISTRY["imagenet-mixednuts"] = dataclasses.replace(
        get_model_config("imagenet-mixednuts"), standard=BackboneConfig("timm/test_byobnet", kwargs={"num_classes": 1000}),
        robust=BackboneConfig("timm/test_efficientnet", kwargs={"num_classes": 1000}))
    transform = robustbench.data.get_preprocessing(BenchmarkDataset.imagenet, ThreatModel.Linf,
                                                   "RobustMix-MixedNUTS", None)
    expected = robustbench.data.PREPROCESSINGS["BicubicRes256Crop224"]  # RobustBench's own for Bai2024MixedNUTS
    image = Image.fromarray((torch.rand(300, 400, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())
    assert torch.equal(transform(image), expected(image))


# -- RobustBench's load_model and timm's create_model -----------------------------------------------------
@pytest.fixture
def reduced_pair(scratch_registry, tmp_path, monkeypatch) -> Pair:
    """cifar100-adasmooth at reduced size: RobustBench's model, its files in ROBUST_MIX_MODEL_DIR, and the
    registry entry replaced by the matching reduced config."""
    name = "cifar100-adasmooth"
    config = get_model_config(name)
    registry._REGISTRY[name] = config.with_overrides(
        {"standard": dataclasses.replace(config.standard, ref="timm/resnetv2_50x1_bit"), "widths": REDUCED_WIDTHS})
    monkeypatch.setenv("ROBUST_MIX_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    gen = torch.Generator().manual_seed(1)
    calibration, images = random_images(4, 32, gen), random_images(3, 32, gen)
    with robustbench_on_cpu(reduced=True):
        torch.manual_seed(0)
        rb = build_robustbench(config).eval()
        calibrate(rb, calibration)
        write_robustbench_files(rb, config, tmp_path)
        torch.manual_seed(123)
        ours = load_model(name)
        yield Pair(name, config, rb, ours, images, tmp_path, *robustbench_forward(rb, config, images))


def test_robustbench_load_model_returns_the_entry(reduced_pair):
    torch.manual_seed(7)  # a different initialisation: every tensor must come from the files
    via_robustbench = robustbench.utils.load_model("RobustMix-AdaSmooth", dataset="cifar100", threat_model="Linf")
    via_timm = timm.create_model("robustmix_adasmooth_cifar100_linf", pretrained=True)
    assert isinstance(via_robustbench, robust_mix.MixedClassifier) and via_robustbench.config.name == reduced_pair.name
    assert not via_robustbench.training and not any(m.training for m in via_robustbench.modules())
    assert same_outputs(via_robustbench, reduced_pair.ours, reduced_pair.images) == 0.0
    assert same_outputs(via_timm, reduced_pair.ours, reduced_pair.images) == 0.0
    diff = compare(reduced_pair._replace(ours=via_robustbench), reduced_pair.images)  # vs RobustBench's own model
    assert matches(diff), diff
    assert via_robustbench.pretrained_cfg["architecture"] == "robustmix_adasmooth_cifar100_linf"
    assert via_robustbench.default_cfg is via_robustbench.pretrained_cfg


def test_a_missing_weight_file_names_the_file_and_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUST_MIX_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as err:
        robustbench.utils.load_model("RobustMix-AdaSmooth", dataset="cifar100", threat_model="Linf")
    message = str(err.value)
    assert str(tmp_path / "cifar100" / "Linf" / "Bai2023Improving_edm.pt_m0.pt") in message
    assert "https://drive.google.com/uc?id=" in message and "downloads are off" in message


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "Path"])
def test_robustbench_s_model_dir_is_where_the_files_are_read(as_path, tmp_path, monkeypatch):
    """RobustBench does not pass ``model_dir`` to timm models: the files must still come from it, not
    from ``$ROBUST_MIX_MODEL_DIR`` or ``./models``."""
    monkeypatch.setenv("ROBUST_MIX_MODEL_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    model_dir = tmp_path / "mine"
    with pytest.raises(WeightsNotFoundError) as err:
        robustbench.utils.load_model("RobustMix-AdaSmooth", model_dir=model_dir if as_path else str(model_dir),
                                     dataset=BenchmarkDataset.cifar_100, threat_model=ThreatModel.Linf)
    assert str(model_dir / "cifar100" / "Linf" / "Bai2023Improving_edm.pt_m0.pt") in str(err.value)
    assert "elsewhere" not in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="elsewhere"):  # no model_dir given: the usual default
        robustbench.utils.load_model("RobustMix-AdaSmooth", dataset="cifar100", threat_model="Linf")


def test_robustbench_s_model_dir_reaches_a_registered_entry(scratch_registry, tmp_path, monkeypatch):
    """An entry whose files sit in RobustBench's layout loads from the ``model_dir`` the caller gives."""
    config = tiny_config(tmp_path / "files")
    model_dir = tmp_path / "rb-models"
    target = model_dir / "cifar10" / "Linf" / "Wong2020Fast.pt"  # the policy's tensors, under a RobustBench name
    target.parent.mkdir(parents=True)
    torch.save(load_state_dict(Path(config.weights.file)), target)
    register_model(dataclasses.replace(config, weights=WeightsConfig(robustbench="cifar10/Linf/Wong2020Fast")))
    monkeypatch.setenv("ROBUST_MIX_MODEL_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    model = robustbench.utils.load_model("RobustMix-tiny-mix", model_dir=str(model_dir), dataset="cifar10",
                                         threat_model="Linf")
    x = torch.rand(2, 3, 32, 32)
    assert same_outputs(model, load_model(TINY, model_dir=model_dir), x) == 0.0


def test_entries_registered_later_are_timm_models(tmp_path):
    with isolated_timm_registry(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        mp.setattr(registry, "_ALIASES", dict(registry._ALIASES))
        register_model(tiny_config(tmp_path))
        assert "robustmix_tiny_mix_cifar10_linf" in timm.list_models("robustmix_*")
        assert "robustmix_tiny_mix_cifar10_linf" in timm.list_pretrained("robustmix*")
        via_robustbench = robustbench.utils.load_model("RobustMix-tiny-mix", dataset="cifar10", threat_model="Linf")
        x = torch.rand(2, 3, 32, 32)
        assert same_outputs(via_robustbench, load_model(TINY), x) == 0.0
        assert same_outputs(timm.create_model("robustmix_tiny_mix_cifar10_linf", pretrained=True), load_model(TINY), x) == 0.0
        adjusted = timm.create_model("robustmix_tiny_mix_cifar10_linf", pretrained=True, alpha_range=(0.5, 0.6))
        assert adjusted.policy.alpha_range == (0.5, 0.6)  # create_model's keyword arguments are config overrides
    assert "robustmix_tiny_mix_cifar10_linf" not in timm.list_models("robustmix_*")
    assert "robustmix_tiny_mix_cifar10_linf" not in timm.list_pretrained("robustmix*")  # marks go with the entries
    assert not timm.models.is_model_pretrained("robustmix_tiny_mix_cifar10_linf")
    assert not hasattr(robust_mix.timm_plugin, "robustmix_tiny_mix_cifar10_linf")


def test_timm_lists_as_pretrained_the_entries_whose_weights_pretrained_true_loads(scratch_registry, tmp_path):
    """timm.list_pretrained('robustmix*') was empty although create_model(name, pretrained=True) loads the entries'
    weights: timm lists only cfgs with a url/file/hf_hub_id, which a mix of several files fetched by its factory
    has none of (and must not fake). An adaptive entry without policy weights is not pretrained."""
    assert set(timm.list_pretrained("robustmix*")) == set(PAPER_TIMM_NAMES.values())  # not robustmix_saved
    assert set(timm.list_models("robustmix*", pretrained=True)) == set(PAPER_TIMM_NAMES.values())
    for name in PAPER_TIMM_NAMES.values():
        cfg = timm.models.get_pretrained_cfg(name)
        assert timm.models.is_model_pretrained(name) and not cfg.has_weights  # no weight source for timm's loader
    config = tiny_config(tmp_path)
    register_model(config)
    register_model(dataclasses.replace(config, name="cifar10-untrained-mix", weights=None))  # policy untrained
    assert "robustmix_tiny_mix_cifar10_linf" in timm.list_pretrained("robustmix*")
    assert "robustmix_untrained_mix_cifar10_linf" in timm.list_models("robustmix*")
    assert "robustmix_untrained_mix_cifar10_linf" not in timm.list_pretrained("robustmix*")
    # a base with timm's own weights counts only where timm has them (coatnet_0_224 has none)
    fixed = dict(alpha=0.5, policy=None, weights=None)
    register_model(dataclasses.replace(config, name="cifar10-timmbase-mix", **fixed,
                                       standard=BackboneConfig("timm/test_byobnet", kwargs={"num_classes": 10})))
    register_model(dataclasses.replace(config, name="cifar10-nothing-mix", **fixed,
                                       standard=BackboneConfig("timm/coatnet_0_224", kwargs={"num_classes": 10})))
    assert "robustmix_timmbase_mix_cifar10_linf" in timm.list_pretrained("robustmix*")
    assert "robustmix_nothing_mix_cifar10_linf" in timm.list_models("robustmix*")
    assert "robustmix_nothing_mix_cifar10_linf" not in timm.list_pretrained("robustmix*")
    via_timm = timm.create_model("robustmix_tiny_mix_cifar10_linf", pretrained=True)
    assert same_outputs(via_timm, load_model(TINY), torch.rand(2, 3, 32, 32)) == 0.0


def test_a_model_marked_pretrained_must_be_a_timm_model():
    from robust_mix._compat import mark_timm_pretrained

    with pytest.raises(ValueError, match="'robustmix_nothing' is not a timm model"):
        mark_timm_pretrained("robustmix_nothing")
    assert "robustmix_nothing" not in timm.list_pretrained("robustmix*")


def test_num_classes_is_checked(scratch_registry, tmp_path):
    register_model(tiny_config(tmp_path))
    assert timm.create_model("robustmix_tiny_mix_cifar10_linf", num_classes=10).num_classes == 10
    with pytest.raises(ValueError, match=r"robustmix_tiny_mix_cifar10_linf classifies 10 classes \(cifar10\), "
                                         "num_classes=100 was asked for"):
        timm.create_model("robustmix_tiny_mix_cifar10_linf", num_classes=100)


@pytest.mark.parametrize("kwargs, message", [
    ({"features_only": True}, r"features_only=True\) is not supported by robust_mix's models: a mix returns class scores "
                              r"only, not feature maps"),
    ({"out_indices": (1, 2)}, r"out_indices=\(1, 2\)\) is not supported .*class scores only"),
    ({"global_pool": "avg"}, r"global_pool='avg'\) is not supported .*its bases' as they were trained"),
    ({"drop_path_rate": 0.1}, r"drop_path_rate=0.1\) is not supported"),
    ({"in_chans": 1}, r"takes 3-channel images \(input_size \(3, 32, 32\)\); timm.create_model\(\.\.\., in_chans=1\) cannot "
                      r"change that"),
    ({"num_classes": 0}, r"num_classes=0 was asked for.*timm's num_classes=0, a model without its classifier, is not "
                         r"available: a mix returns class scores only"),
])
def test_timm_s_architecture_arguments_are_refused_saying_why(scratch_registry, tmp_path, kwargs, message):
    """timm.create_model(name, features_only=True) answered "unknown override 'features_only'; valid: [config
    fields]", as if the user had misspelt a config field."""
    register_model(tiny_config(tmp_path))
    with pytest.raises(ValueError, match=message) as err:
        timm.create_model("robustmix_tiny_mix_cifar10_linf", **kwargs)
    assert "unknown override" not in str(err.value)
    if "num_classes" not in kwargs:
        assert isinstance(err.value, TypeError) == ("in_chans" not in kwargs)  # as timm's models: unexpected argument
    model = timm.create_model("robustmix_tiny_mix_cifar10_linf", in_chans=3)  # its own channel count: taken
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)


def test_a_pretrained_tag_is_named_as_the_tag_the_user_wrote(scratch_registry, tmp_path):
    """timm.create_model("robustmix_..._linf.in1k") answered "got pretrained_cfg='in1k'": a keyword never written."""
    register_model(tiny_config(tmp_path))
    with pytest.raises(ValueError, match=r"robustmix_tiny_mix_cifar10_linf has no pretrained tag 'in1k' "
                                         r"\(robustmix_tiny_mix_cifar10_linf.in1k or pretrained_cfg='in1k'\): .*name it "
                                         r"'robustmix_tiny_mix_cifar10_linf'"):
        timm.create_model("robustmix_tiny_mix_cifar10_linf.in1k", pretrained=True)


def test_timm_s_classifier_head_calls_are_refused_saying_why(scratch_registry, tmp_path):
    """model.reset_classifier(5) (timm's fine-tuning idiom) answered "'MixedClassifier' object has no attribute
    'reset_classifier'"."""
    register_model(tiny_config(tmp_path))
    model = timm.create_model("robustmix_tiny_mix_cifar10_linf", pretrained=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    with pytest.raises(NotImplementedError, match=r"reset_classifier\(5\): a MixedClassifier has no classifier head of "
                                                  r"its own: .*mix two bases with that many classes"):
        model.reset_classifier(5)
    with pytest.raises(NotImplementedError, match=r"get_classifier\(\): .*model.standard.get_classifier\(\)"):
        model.get_classifier()
    with pytest.raises(NotImplementedError, match=r"forward_features\(\): .*no features of its own; "
                                                  r"model.features\(x, standard_layers, robust_layers\)"):
        model.forward_features(x)
    with pytest.raises(NotImplementedError, match=r"forward_head\(\): .*call the model on raw \[0, 1\] images"):
        model.forward_head(x)
    with torch.no_grad():
        assert torch.equal(model(x), before) and model(x).shape == (2, 10)


@pytest.mark.parametrize("changes, message", [
    ({"dataset": "CIFAR10"}, r"dataset='CIFAR10', RobustBench's 'cifar10' spelled otherwise: write dataset='cifar10'"),
    ({"dataset": "cifar_10"}, r"write dataset='cifar10'"),
    ({"threat_model": "linf"}, r"threat_model='linf', RobustBench's 'Linf' spelled otherwise"),
])
def test_robustbench_s_names_spelled_otherwise_are_refused(scratch_registry, tmp_path, changes, message):
    """dataset='CIFAR10' was registered but silently not made a timm model: RobustBench could not find the entry."""
    with pytest.raises(robust_mix.validate.InvalidInputError, match=message):
        register_model(dataclasses.replace(tiny_config(tmp_path), **changes))
    assert not robust_mix.is_model(TINY)


def test_an_entry_that_leaves_its_class_count_to_its_bases_loads_through_robustbench(scratch_registry, tmp_path):
    """An entry without num_classes (its bases state 10) was refused by RobustBench's load_model: 'classifies None
    classes (cifar10), num_classes=10 was asked for'."""
    register_model(dataclasses.replace(tiny_config(tmp_path), num_classes=None))
    model = robustbench.utils.load_model("RobustMix-tiny-mix", dataset="cifar10", threat_model="Linf")
    assert model.num_classes == 10 and model.pretrained_cfg["num_classes"] == 10
    with pytest.raises(ValueError, match=r"robustmix_tiny_mix_cifar10_linf classifies 10 classes \(cifar10\), "
                                         "num_classes=100 was asked for"):
        timm.create_model("robustmix_tiny_mix_cifar10_linf", num_classes=100)


def test_an_entry_without_an_input_shape_states_its_data_set_s_images_to_timm(scratch_registry, tmp_path):
    """timm's transforms resized a CIFAR entry's images to timm's default 224 x 224 when the entry declared no
    input_shape (the model takes any size: its numbers were then of other images)."""
    register_model(dataclasses.replace(tiny_config(tmp_path), input_shape=None))
    model = timm.create_model("robustmix_tiny_mix_cifar10_linf", pretrained=True)
    data_config = timm.data.resolve_data_config(model=model)
    assert data_config["input_size"] == (3, 32, 32) and data_config["mean"] == (0.0, 0.0, 0.0)


def timm_batch(model: torch.nn.Module, images: list[Image.Image]) -> torch.Tensor:
    """What a timm user feeds ``model``: timm's eval transform of its resolved data config."""
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    return torch.stack([transform(image) for image in images])


def test_timm_s_transform_of_a_load_model_model_gives_the_images_the_benchmark_feeds_it():
    """A model from robust_mix.load_model had no pretrained_cfg: timm fell back to ImageNet's mean, std and 224 x 224
    three-channel images, normalising raw-image models a second time (a Fashion-MNIST model was fed 3 x 224 x 224)."""
    model = load_model("fmnist-adasmooth")
    assert timm.data.resolve_data_config({}, model=model) == {
        "input_size": (1, 28, 28), "interpolation": "bilinear", "mean": (0.0,), "std": (1.0,), "crop_pct": 1.0,
        "crop_mode": "center"}
    assert model.default_cfg is model.pretrained_cfg and model.pretrained_cfg["num_classes"] == model.num_classes
    pixels = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    benchmark_images = torch.stack([ImageArrayDataset(pixels, np.zeros(6))[i][0] for i in range(6)])
    timm_images = timm_batch(model, [Image.fromarray(p, mode="L") for p in pixels])
    assert torch.equal(timm_images, benchmark_images)
    with torch.no_grad():
        assert torch.equal(model(timm_images).argmax(1), model(benchmark_images).argmax(1))


def test_timm_s_transform_of_a_model_built_from_its_config_matches_timm_s_own(scratch_registry, tmp_path):
    """The same entry built by robust_mix.load_model and by timm.create_model states the same input contract."""
    register_model(tiny_config(tmp_path))
    ours, timms = load_model(TINY), timm.create_model("robustmix_tiny_mix_cifar10_linf", pretrained=True)
    assert timm.data.resolve_model_data_config(ours) == timm.data.resolve_model_data_config(timms)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert torch.equal(timm_batch(ours, [image])[0], robustbench.data.get_preprocessing(
        BenchmarkDataset.cifar_10, ThreatModel.Linf, "RobustMix-tiny-mix", None)(image))
    bare = robust_mix.MixedClassifier(ours.standard, ours.robust, alpha=0.5)  # no config: raw images still
    assert timm.data.resolve_model_data_config(bare)["mean"] == (0.0, 0.0, 0.0)
    without_timm_form = dataclasses.replace(ours.config, dataset="imagenet", preprocessing="Crop288")
    with pytest.raises(ValueError, match=r"'Crop288' is not a resize and centre crop.*"
                                         r"robust_mix.data.imagenet_transform\('Crop288'\)"):
        timm.data.resolve_model_data_config(robust_mix.MixedClassifier(ours.standard, ours.robust,
                                                                       config=without_timm_form))


def test_timm_drops_alpha_none_so_the_adaptive_policy_comes_from_load_model(scratch_registry, tmp_path):
    """timm 1.0.9's create_model drops keyword arguments that are None: alpha=None never reaches the factory,
    and an entry with a fixed ratio over its policy keeps that ratio. Documented rather than fought."""
    register_model(dataclasses.replace(tiny_config(tmp_path), alpha=0.7))  # a fixed ratio over a policy
    via_timm = timm.create_model("robustmix_tiny_mix_cifar10_linf", pretrained=True, alpha=None)
    assert not via_timm.is_adaptive and via_timm.alpha == 0.7
    assert load_model(TINY, alpha=None).is_adaptive
    section = (ROOT / "README.md").read_text().split("## Use it from RobustBench and timm")[1].split("\n## ")[0]
    for text in (section, robust_mix.timm_plugin.__doc__):
        flat = " ".join(text.split())
        assert "drops keyword arguments that are None" in flat and "load_model(name, alpha=None)" in flat


@pytest.mark.parametrize("overlay, message", [
    ({"file": "mine.safetensors"}, r"sets \['file'\], a weight source, but robust_mix models read no weights .*checkpoint_path="),
    ({"hf_hub_id": "org/other"}, r"sets \['hf_hub_id'\], a weight source"),
    ({"mean": (0.5, 0.5, 0.5), "std": [0.2, 0.2, 0.2]}, r"changes \['mean', 'std'\].*normalised inside the model"),
    ({"input_size": (3, 64, 64)}, r"changes \['input_size'\].*'input_size': \(3, 32, 32\)"),
    ({"num_classes": 100}, r"changes \['num_classes'\]"),
])
def test_pretrained_cfg_overlay_cannot_change_weights_or_the_input_contract(scratch_registry, tmp_path, overlay, message):
    """timm's transforms follow pretrained_cfg: an overlaid mean would normalise images the model normalises
    itself; an overlaid file would be ignored (the entry's own weights loaded instead)."""
    register_model(tiny_config(tmp_path))
    with pytest.raises(robust_mix.validate.InvalidInputError, match=message):
        timm.create_model("robustmix_tiny_mix_cifar10_linf", pretrained=True, pretrained_cfg_overlay=overlay)
    model = timm.create_model("robustmix_tiny_mix_cifar10_linf", pretrained=True, pretrained_cfg_overlay={
        "crop_pct": 0.875, "interpolation": "bicubic", "mean": [0.0, 0.0, 0.0], "input_size": [3, 32, 32]})
    data = timm.data.resolve_model_data_config(model)  # what timm's transforms are built from
    assert (data["crop_pct"], data["interpolation"], data["mean"], data["std"]) == (0.875, "bicubic", (0, 0, 0), (1, 1, 1))


# -- custom checkpoints -------------------------------------------------------------------------------------
@pytest.fixture
def tiny_entry(scratch_registry, tmp_path):
    register_model(tiny_config(tmp_path / "released"))
    return TINY


def test_custom_checkpoint_reads_a_saved_folder_without_unpickling(tiny_entry, tmp_path, monkeypatch):
    torch.manual_seed(5)
    trained = load_model(tiny_entry, pretrained=False)  # stands for a model trained further by a user
    folder = trained.save_pretrained(tmp_path / "mine")
    for path in (tmp_path / "released").iterdir():  # the released files are not needed with a checkpoint
        path.unlink()
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load (an unpickle) was called"))
    x = torch.rand(2, 3, 32, 32)
    for checkpoint in (str(folder), str(folder / "model.safetensors")):
        model = robustbench.utils.load_model("RobustMix-tiny-mix", dataset="cifar10", threat_model="Linf",
                                             custom_checkpoint=checkpoint)
        assert same_outputs(model, trained, x) == 0.0 and not model.training


def test_custom_checkpoint_of_another_architecture_is_refused(tiny_entry, tmp_path):
    other = load_model("fmnist-robust").save_pretrained(tmp_path / "fmnist")
    load = lambda checkpoint: robustbench.utils.load_model(  # noqa: E731
        "RobustMix-tiny-mix", dataset="cifar10", threat_model="Linf", custom_checkpoint=str(checkpoint))
    with pytest.raises(ValueError, match=r"holds 'fmnist-robust', a mix of .*timm/resnet.*robustmix_tiny_mix_cifar10_linf "
                                         r"is a mix of \[\('timm/test_byobnet'"):
        load(other)
    lone = tmp_path / "lone" / "weights.safetensors"
    lone.parent.mkdir()
    lone.write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"(?s)weights.safetensors does not match robustmix_tiny_mix_cifar10_linf \(it is not a "
                                         r"checkpoint of that architecture\): .*(missing|size mismatch)"):
        load(lone)
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*/not-saved-yet of robustmix_tiny_mix_cifar10_linf: no such "
                                                 "folder or file"):
        load(tmp_path / "not-saved-yet")  # not "expected a folder ... (other files, such as .pt ...)"
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"expected a folder written by save_pretrained or its model.safetensors "
                                         r"\(other files, such as .pt or .pth, would have to be unpickled"):
        load(pickle)


def test_a_checkpoint_changed_after_saving_is_refused(tiny_entry, tmp_path):
    """RobustBench's ``custom_checkpoint=`` (timm's ``checkpoint_path=``) checks a saved folder as from_pretrained
    does: a tensor changed after the save loaded silently."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    folder = load_model(tiny_entry, pretrained=False).save_pretrained(tmp_path / "mine")
    weights = folder / "model.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(weights)
    key = next(k for k, v in sorted(state.items()) if v.is_floating_point() and v.numel() > 1)
    state[key] = state[key] * 2
    save_file(state, weights, metadata=metadata)  # the save id kept
    for checkpoint in (folder, weights):
        with pytest.raises(ValueError, match="changed after save_pretrained wrote them"):
            robustbench.utils.load_model("RobustMix-tiny-mix", dataset="cifar10", threat_model="Linf",
                                         custom_checkpoint=str(checkpoint))


def test_a_checkpoint_file_beside_another_save_s_config_is_read_on_its_own(tiny_entry, tmp_path):
    """``finetuned.safetensors`` put into a saved folder was checked against that folder's ``config.json`` and
    refused ('from different saves'), although it is a checkpoint of the architecture."""
    torch.manual_seed(1)
    released = load_model(tiny_entry, pretrained=False).save_pretrained(tmp_path / "released-copy")
    torch.manual_seed(2)
    tuned = load_model(tiny_entry, pretrained=False)
    (released / "finetuned.safetensors").write_bytes(
        (tuned.save_pretrained(tmp_path / "tuned") / "model.safetensors").read_bytes())
    model = robustbench.utils.load_model("RobustMix-tiny-mix", dataset="cifar10", threat_model="Linf",
                                         custom_checkpoint=str(released / "finetuned.safetensors"))
    assert same_outputs(model, tuned, torch.rand(2, 3, 32, 32)) == 0.0


@pytest.mark.parametrize("change, field", [
    (lambda m: setattr(m.policy, "alpha_range", (0.5, 0.6)), r"\{'policy.alpha_range': \(0.5, 0.6\)\}"),
    (lambda m: setattr(m, "alpha", 0.3), r"\{'alpha': 0.3\}"),
    (lambda m: setattr(m, "std_scale", 3.0), r"\{'std_scale': 3.0\}"),
], ids=["alpha_range", "alpha", "std_scale"])
def test_a_checkpoint_saved_with_other_mixing_constants_is_refused(tiny_entry, tmp_path, change, field):
    """Its tensors loaded into the entry as registered, mixing them with the entry's constants: silently another
    model than the one saved. Passing the saved constants as keyword arguments gives the saved model."""
    torch.manual_seed(3)
    tuned = load_model(tiny_entry, pretrained=False)
    change(tuned)
    folder = tuned.save_pretrained(tmp_path / "tuned")
    with pytest.raises(ValueError, match=rf"checkpoint .*tuned was saved mixing its bases with {field}, "
                                         r"robustmix_tiny_mix_cifar10_linf mixes them with .*robust_mix.load_model"):
        robustbench.utils.load_model("RobustMix-tiny-mix", dataset="cifar10", threat_model="Linf",
                                     custom_checkpoint=str(folder))
    saved = tuned.current_config()
    overrides = {"alpha": saved.alpha, "alpha_range": saved.policy.alpha_range, "std_scale": saved.std_scale}
    model = timm.create_model("robustmix_tiny_mix_cifar10_linf", checkpoint_path=str(folder),
                              **{k: v for k, v in overrides.items() if v is not None})
    assert same_outputs(model, tuned, torch.rand(2, 3, 32, 32)) == 0.0


# -- RobustBench names the entry does not have ---------------------------------------------------------------
@pytest.mark.parametrize("dataset, threat_model", [("imagenet", "Linf"), ("cifar10", "L2")])
def test_a_data_set_or_threat_model_the_entry_lacks_is_named(dataset, threat_model):
    with pytest.raises(UnknownModelError) as err:
        robustbench.utils.load_model("RobustMix-AdaSmooth", dataset=dataset, threat_model=threat_model)
    message = str(err.value)
    assert f"not for dataset={dataset!r}, threat_model={threat_model!r}" in message
    assert "dataset='cifar10', threat_model='Linf' (entry 'cifar10-adasmooth')" in message
    assert "dataset='cifar100', threat_model='Linf' (entry 'cifar100-adasmooth')" in message
    assert isinstance(err.value, KeyError)  # what RobustBench raised before, for callers that catch it


def test_an_unknown_robustmix_name_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match=r"no entry RobustBench calls 'RobustMix-Nope'.*'RobustMix-adasmooth-trades \(cifar100, Linf\)'"):
        robustbench.utils.load_model("RobustMix-Nope", dataset="cifar10", threat_model="Linf")
    with pytest.raises(KeyError) as err:  # other names keep RobustBench's own error
        robustbench.utils.load_model("NotAModel", dataset="cifar10", threat_model="Linf")
    assert not isinstance(err.value, UnknownModelError)


@pytest.mark.parametrize("name, message", [
    ("cifar100-adasmooth", "'cifar100-adasmooth' is robust_mix's registry name of 'cifar100-adasmooth'; RobustBench "
                           "calls it 'RobustMix-adasmooth': robustbench.utils.load_model('RobustMix-adasmooth', "
                           "dataset='cifar100', threat_model='Linf')"),
    ("CIFAR100-AdaSmooth", "'CIFAR100-AdaSmooth' is robust_mix's registry name of 'cifar100-adasmooth'; RobustBench "
                           "calls it 'RobustMix-adasmooth'"),
    ("robustmix_adasmooth_cifar100_linf", "'robustmix_adasmooth_cifar100_linf' is robust_mix's timm name of "
                                          "'cifar100-adasmooth'; RobustBench calls it 'RobustMix-adasmooth'"),
    ("fmnist-robust", "'fmnist-robust' is robust_mix's registry name of 'fmnist-robust', an entry on 'fashion-mnist', "
                      "which RobustBench does not know: load it with robust_mix.load_model('fmnist-robust')"),
])
def test_robust_mix_s_other_names_given_to_robustbench_say_which_name_it_takes(name, message):
    """RobustBench answered a registry or timm name of a robust_mix entry with a bare ``KeyError: 'name'``."""
    with pytest.raises(UnknownModelError) as err:
        robustbench.utils.load_model(name, dataset="cifar100", threat_model="Linf")
    assert message in str(err.value)


@pytest.mark.parametrize("overlay", [[("crop_pct", 0.9)], "crop_pct=0.9"])
def test_a_pretrained_cfg_overlay_that_is_not_a_dict_is_named(overlay):
    """It failed with ``AttributeError: 'list' object has no attribute 'items'``."""
    with pytest.raises(TypeError, match=r"robustmix_adasmooth_cifar100_linf: pretrained_cfg_overlay must be a dict"):
        timm.create_model("robustmix_adasmooth_cifar100_linf", pretrained_cfg_overlay=overlay)


@pytest.mark.parametrize("name", ["RobustMix-AdaSmooth", "Standard"])  # robust_mix's entry and RobustBench's own
@pytest.mark.parametrize("arguments, error, message", [
    ({"dataset": "CIFAR100"}, ValueError, r"RobustBench has no dataset 'CIFAR100'; it has \['cifar10', 'cifar100', "
                                          r"'imagenet'\]: RobustBench's names are case-sensitive, did you mean 'cifar100'"),
    ({"threat_model": "linf"}, ValueError, r"no threat_model 'linf'; it has \['Linf', 'L2', .*did you mean 'Linf'\?"),
    ({"threat_model": "l-2"}, ValueError, r"no threat_model 'l-2'.*did you mean 'L2'\?"),
    ({"dataset": "svhn"}, ValueError, r"no dataset 'svhn'; it has \['cifar10', 'cifar100', 'imagenet'\]$"),
    ({"threat_model": 2}, TypeError, r"threat_model=2 \(int\): RobustBench's load_model takes one of \['Linf'"),
    ({"model_dir": 3}, TypeError, r"model_dir must be a folder path .* got 3 \(int\)"),
])
def test_robustbench_s_data_sets_threat_models_and_model_dir_are_checked_naming_the_choices(
        name, arguments, error, message, tmp_path, monkeypatch):
    """RobustBench said ``'linf' is not a valid ThreatModel`` naming neither its names nor the one meant, and a
    ``model_dir`` that is no path was a bare ``TypeError`` from ``pathlib``."""
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    given = {"dataset": "cifar100", "threat_model": "Linf", "model_dir": str(tmp_path), **arguments}
    with pytest.raises(error, match=message):
        robustbench.utils.load_model(name, **given)


# -- names that cannot be timm models ----------------------------------------------------------------------
def test_names_that_would_shadow_robustbench_or_timm_are_refused(scratch_registry):
    from robustbench.model_zoo import model_dicts

    zoo = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(zoo, "RobustMix-shadow", {"model": None, "gdrive_id": None})
            robustbench_zoo_names.cache_clear()
            with pytest.raises(ValueError, match="'robustmix_shadow_cifar10_linf', which robustbench.utils.load_model "
                                                 "also asks timm for when it loads RobustBench's own "
                                                 "cifar10/Linf/RobustMix-shadow"):
                register_model(ModelConfig(name="cifar10-shadow", dataset="cifar10", alpha=0.5))
    finally:
        robustbench_zoo_names.cache_clear()
    assert not robust_mix.is_model("cifar10-shadow")  # refused entries are not registered either
    with pytest.raises(ValueError, match="'robustmix_adasmooth_cifar10_linf', which timm has already "
                                         r"\(for the entry 'cifar10-adasmooth'\)"):
        register_model(ModelConfig(name="adasmooth", dataset="cifar10", alpha=0.5))
    with pytest.raises(ValueError, match="which timm cannot look up"):
        register_model(ModelConfig(name="cifar10-v1.2", dataset="cifar10", alpha=0.5))
    assert not robust_mix.is_model("adasmooth") and not robust_mix.is_model("cifar10-v1.2")
    register_model(ModelConfig(name="fmnist-other", dataset="fashion-mnist", alpha=0.5))  # not RobustBench's
    assert not any("other" in n for n in timm.list_models("robustmix_*"))


@pytest.mark.parametrize("name, message", [
    ("fmnist-robust", r"'fmnist-robust' is a robust_mix entry on 'fashion-mnist', which RobustBench does not know, so "
                      r"it is not a timm model: load it with robust_mix.load_model\('fmnist-robust'\)"),
    ("robust_mix/fmnist-adasmooth", r"robust_mix.load_model\('fmnist-adasmooth'\)"),
    ("cifar100-adasmooth", r"its timm model is 'robustmix_adasmooth_cifar100_linf'"),
    ("RobustMix-AdaSmooth", r"robust_mix has no timm model 'RobustMix-AdaSmooth'; its timm models are \[.*"
                            r"'robustmix_adasmooth_cifar100_linf'"),
    ("robustmix_adasmooth_fmnist_linf", r"no timm model 'robustmix_adasmooth_fmnist_linf'"),
])
def test_timm_names_robust_mix_has_no_model_for_are_explained(name, message):
    """timm.create_model with a registry name answered a bare 'Unknown model (...)'; it is still a RuntimeError."""
    with pytest.raises(RuntimeError, match=r"Unknown model \(.*\): .*" + message):
        timm.create_model(name)
    with pytest.raises(RuntimeError, match=r"^Unknown model \(resnet_does_not_exist\)$"):  # other names: timm's
        timm.create_model("resnet_does_not_exist")


def test_the_readme_names_are_timm_models():
    section = (ROOT / "README.md").read_text().split("## Use it from RobustBench and timm")[1].split("\n## ")[0]
    names = set(re.findall(r"robustmix_[a-z0-9_]+_linf\b", section))
    assert names and all(timm.is_model(n) for n in names), names
    calls = re.findall(r'"(RobustMix-[A-Za-z-]+)", dataset="(\w+)"', section)
    assert calls and all(entry_of(robustbench_timm_name(name, dataset, "Linf")) for name, dataset in calls), calls


# -- the import comes first ----------------------------------------------------------------------------------
def run_fresh(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ROBUST_MIX_OFFLINE": "1",
           "ROBUST_MIX_MODEL_DIR": str(tmp_path / "models")}
    return subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env=env)


def test_import_robust_mix_first_in_a_fresh_interpreter(tmp_path):
    """Neither timm nor RobustBench discovers plugins: without ``import robust_mix`` timm lists none of the
    models and RobustBench does not even import; after it, RobustBench's own call reaches the entry."""
    proc = run_fresh("\n".join([
        "import timm",
        "print('timm alone:', timm.list_models('robustmix_*'))",
        "try:",
        "    import robustbench.utils",
        "except ImportError as err:",  # RobustBench 1.1.1 imports `autoattack`, which only robust_mix provides
        "    print('robustbench alone:', err)",
        "import robust_mix",
        "import robustbench.utils",
        "print('after import robust_mix:', len(timm.list_models('robustmix_*')))",
        "try:",
        "    robustbench.utils.load_model('RobustMix-AdaSmooth', dataset='cifar100', threat_model='Linf')",
        "except FileNotFoundError as err:",  # found the entry; its released files are not here
        "    print('missing', err)",
    ]), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "timm alone: []" in proc.stdout
    assert "robustbench alone: No module named 'autoattack'" in proc.stdout
    assert "after import robust_mix: 7" in proc.stdout
    assert "checkpoint file(s) for robustbench:cifar100/Linf/Bai2023Improving_edm missing" in proc.stdout
