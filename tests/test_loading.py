"""What a model NAME means (robust_mix.loading): one parser for the library and every command."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

import robust_mix
from robust_mix.cli import main
from robust_mix.loading import load_model, model_config_of, parse_model_name


@pytest.mark.parametrize("text, kind, target, overrides", [
    ("fmnist-robust", "registry", "fmnist-robust", {}),
    ("cifar100/Linf/Bai2023Improving_edm", "registry", "cifar100-adasmooth", {}),
    ("fmnist-robust,alpha=0.9", "registry", "fmnist-robust", {"alpha": 0.9}),
    ("fmnist-adasmooth,alpha_range=[0.8,1.0],gamma_bias=0.5", "registry", "fmnist-adasmooth",
     {"alpha_range": [0.8, 1.0], "gamma_bias": 0.5}),
    ("mix,standard=timm/resnet18,alpha=0.25", "registry", "mix", {"standard": "timm/resnet18", "alpha": 0.25}),
    ("hf-hub:org/my-mix", "hub", "org/my-mix", {}),
    ("hf-hub:org/my-mix,alpha=0.8", "hub", "org/my-mix", {"alpha": 0.8}),
    ("local-dir:out/my-mix", "local", "out/my-mix", {}),
    ("tests.conftest:make_tiny", "factory", "tests.conftest:make_tiny", {}),
])
def test_names_parse_into_source_and_overrides(text, kind, target, overrides):
    parsed = parse_model_name(text)
    assert (parsed.kind, parsed.target, parsed.overrides) == (kind, target, overrides)


def test_a_config_file_and_an_unambiguous_folder_are_recognised(tmp_path):
    robust_mix.get_model_config("fmnist-robust").save(tmp_path / "entry.json")
    assert parse_model_name(str(tmp_path / "entry.json")).kind == "config"
    (tmp_path / "saved").mkdir()
    assert parse_model_name(str(tmp_path / "saved")).kind == "local"  # absolute: cannot be a repo id


def test_a_config_file_under_the_home_folder_loads_as_a_folder_there_does(tmp_path, monkeypatch):
    """'~/entry.json' was an unknown model (the folder check expanded '~', the config file check did not)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    robust_mix.get_model_config("fmnist-robust").save(tmp_path / "entry.json")
    parsed = parse_model_name("~/entry.json,alpha=0.3")
    assert (parsed.kind, parsed.target, parsed.overrides) == ("config", str(tmp_path / "entry.json"), {"alpha": 0.3})
    assert load_model("~/entry.json,alpha=0.3", pretrained=False).alpha == 0.3


@pytest.mark.parametrize("text, error, message", [
    ("fmnist-robst", KeyError, r"unknown model 'fmnist-robst'; did you mean \['fmnist-robust'"),
    ("out/my-mix", KeyError, "local-dir:out/my-mix.*hf-hub:out/my-mix"),
    ("", ValueError, "non-empty string"),
    ("fmnist-robust,alpha=", ValueError, "must look like key=value"),
    ("fmnist-robust,alpha", ValueError, r"override 'alpha' in 'fmnist-robust,alpha' must look like key=value"),
    ("fmnist-robust,=0.9", ValueError, r"override '=0.9' in 'fmnist-robust,=0.9' must look like key=value"),
])
def test_bad_names_say_what_to_write(text, error, message):
    with pytest.raises(error, match=message):
        parse_model_name(text)


def test_model_dir_must_be_a_path_and_may_start_at_the_home_folder(tmp_path, monkeypatch):
    """model_dir=3 was a TypeError naming no argument; '~/models' was looked for under a folder named '~'."""
    with pytest.raises(robust_mix.validate.InvalidInputTypeError, match=r"model_dir must be a folder path .* got 3"):
        load_model("fmnist-robust", model_dir=3)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(robust_mix.weights.WeightsNotFoundError, match=str(tmp_path / "models" / "cifar10")):
        load_model("cifar10-adasmooth", model_dir="~/models")


def test_overrides_in_the_name_and_as_keywords_compose():
    model = load_model("fmnist-robust,alpha=0.7")
    assert model.alpha == 0.7
    assert load_model("fmnist-robust,alpha=0.7", alpha=0.2).alpha == 0.2  # keywords win
    assert model_config_of("fmnist-adasmooth,alpha_range=[0.85,0.95]").policy.alpha_range == (0.85, 0.95)


def test_saved_folders_load_by_name_everywhere(tmp_path, capsys):
    model = load_model("fmnist-robust,alpha=0.6")
    model.save_pretrained(tmp_path / "saved")
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    again = load_model(f"local-dir:{tmp_path / 'saved'}")
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert model_config_of(f"local-dir:{tmp_path / 'saved'}").alpha == 0.6
    assert main(["info", f"local-dir:{tmp_path / 'saved'}"]) == 0
    assert "alpha: 0.6" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("fmnist-robust,alpha=0.9,alpha=0.5", "'alpha' is given twice"),
    ("fmnist-robust, alpha=0.9 ,alpha =0.5", "'alpha' is given twice"),
    ("fmnist-robust,alpha=0.9,", "ends in ','"),
    ("fmnist-robust,", "ends in ','"),
    ("fmnist-robust,,alpha=0.9", "empty override"),
    ("local-dir:", "names no folder"),
    ("hf-hub:,alpha=0.9", "names no Hub repo"),
])
def test_ambiguous_names_are_refused_not_guessed(text, message):
    with pytest.raises(ValueError, match=message):
        parse_model_name(text)


def test_a_parenthesised_pair_is_a_pair():
    assert parse_model_name("fmnist-adasmooth,alpha_range=(0.8, 0.9)").overrides == {"alpha_range": [0.8, 0.9]}
    with pytest.raises(ValueError, match=r"lo > hi"):
        model_config_of("fmnist-adasmooth,alpha_range=(0.9,0.8)").validate()


def test_pythons_none_true_and_false_are_json_null_true_and_false():
    """'fmnist-adasmooth,alpha=None' was the string 'None': 'alpha must be a number or None, got 'None' (str)'."""
    parsed = parse_model_name("fmnist-adasmooth,alpha=None,detach_features=True")
    assert parsed.overrides == {"alpha": None, "detach_features": True}
    assert parse_model_name("fmnist-adasmooth,detach_features=False").overrides == {"detach_features": False}
    assert load_model("fmnist-adasmooth,alpha=None", pretrained=False).is_adaptive


def test_names_in_another_case_get_the_registered_spelling_suggested():
    with pytest.raises(KeyError, match=r"did you mean \['fmnist-robust'"):
        parse_model_name("FMNIST-ROBUST")


def test_a_path_is_a_saved_folder(tmp_path):
    """docs/hub.md: a pathlib.Path is a folder, as for MixedClassifier.from_pretrained."""
    model = load_model("fmnist-robust,alpha=0.6")
    folder = model.save_pretrained(tmp_path / "saved")
    assert parse_model_name(folder) == parse_model_name(f"local-dir:{folder}")
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(load_model(folder)(x), model(x))
    assert model_config_of(folder).alpha == 0.6


@pytest.mark.parametrize("name", ["fmnist-robust", "local-dir:{saved}"])
@pytest.mark.parametrize("device, message", [
    ("cuda:99", "cuda:99"), ("gpu", "'gpu' is not a device name"), (1.5, "must be a device name"),
])
def test_a_device_that_is_not_here_is_refused_before_loading(tmp_path, monkeypatch, name, device, message):
    saved = load_model("fmnist-robust").save_pretrained(tmp_path / "saved")
    monkeypatch.setattr(robust_mix.mixing.MixedClassifier, "__init__",
                        lambda *a, **k: pytest.fail("a model was built before the device was checked"))
    with pytest.raises(robust_mix.validate.InvalidInputError, match=message):
        load_model(name.format(saved=saved), device=device)


def test_a_factory_must_return_a_model():
    with pytest.raises(TypeError, match=r"os:getcwd returned str, not a torch.nn.Module"):
        load_model("os:getcwd")


@pytest.mark.parametrize("name, overrides", [
    ("fmnist-robust,input_shape=[3,32,32]", {}), ("fmnist-robust", {"input_shape": (3, 32, 32)}),
    ("fmnist-adasmooth", {"input_shape": (3, 28, 28)}), ("fmnist-robust", {"labels": ["a"]}),
    ("fmnist-robust", {"num_classes": 5}), ("fmnist-mixednuts", {"labels": [str(i) for i in range(11)]}),
])
def test_overrides_contradicting_the_bases_are_refused_before_building(monkeypatch, name, overrides):
    """The forward pass would fail with a conv channel error (or labels would name the wrong classes)."""
    monkeypatch.setattr(robust_mix.mixing, "load_backbone",
                        lambda *a, **k: pytest.fail("a base model was built before the config was checked"))
    with pytest.raises(robust_mix.validate.InvalidInputError, match="do not match"):
        load_model(name, **overrides)


@pytest.mark.parametrize("name, overrides", [
    ("fmnist-adasmooth", {"input_shape": (1, 32, 32)}), ("fmnist-robust", {"num_classes": 10, "alpha": 0.9}),
    ("fmnist-robust", {"labels": [str(i) for i in range(10)], "rob_scale": 2.0}),
    ("fmnist-adasmooth", {"alpha_range": (0.8, 1.0)}),
])
def test_overrides_that_agree_with_the_bases_still_build(name, overrides):
    model = load_model(name, **overrides)
    shape = model.input_shape
    with torch.no_grad():
        assert model(torch.rand(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("flag, value", [("pretrained", "no"), ("pretrained", None), ("force_download", "yes"),
                                         ("local_files_only", "no")])
def test_saved_models_refuse_flags_that_are_not_bools_before_reading(tmp_path, monkeypatch, flag, value):
    """A string such as 'no' is truthy: it would have loaded (or downloaded) the weights."""
    saved = load_model("fmnist-robust").save_pretrained(tmp_path / "saved")
    monkeypatch.setattr(robust_mix.hub, "fetch_file", lambda *a, **k: pytest.fail("a file was read before the check"))
    with pytest.raises(robust_mix.validate.InvalidInputTypeError, match=f"{flag} must be True.* got {value!r}"):
        robust_mix.MixedClassifier.from_pretrained(f"local-dir:{saved}", **{flag: value})
    if flag == "pretrained":
        with pytest.raises(robust_mix.validate.InvalidInputTypeError, match="pretrained must be True or False"):
            load_model(saved, pretrained=value)


@pytest.mark.parametrize("name", ["os.path:join", "os.path:exists"])
def test_a_factory_that_needs_arguments_is_named(name):
    """Was a raw TypeError from the call ('join() missing 1 required positional argument')."""
    with pytest.raises(robust_mix.validate.InvalidInputTypeError,
                       match=rf"{name} needs arguments .*a 'module:function' NAME names a function that takes no "
                             "arguments"):
        load_model(name)


def test_a_type_error_inside_a_factory_is_not_mistaken_for_missing_arguments(monkeypatch):
    def broken():
        raise TypeError("a bug inside the factory")

    monkeypatch.setitem(sys.modules, "broken_factory_module", types.SimpleNamespace(make=broken))
    with pytest.raises(TypeError, match="a bug inside the factory"):
        load_model("broken_factory_module:make")


@pytest.mark.parametrize("alpha", [np.float32(0.5), torch.tensor(0.5), torch.tensor([0.5])[0]])
def test_a_ratio_given_as_a_numpy_scalar_or_a_0d_tensor_is_the_number_it_holds(alpha, tmp_path):
    """``MixedClassifier(alpha=torch.tensor(0.5))`` was accepted while ``load_model(name, alpha=torch.tensor(0.5))``
    was refused, and ``alpha=np.float32(0.5)`` went into the config as a numpy value that save_pretrained could not
    write to JSON."""
    model = robust_mix.load_model("fmnist-robust", alpha=alpha)
    assert type(model.config.alpha) is float and model.alpha == 0.5
    model.save_pretrained(tmp_path / "saved")
    assert robust_mix.load_model(f"local-dir:{tmp_path / 'saved'}").alpha == 0.5
