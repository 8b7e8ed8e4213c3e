"""Recipe configs as data: presets, settings, the validation rules, named recipes, old recipe files."""
from __future__ import annotations

import json

import pytest

from robust_mix.config import PolicyConfig
from robust_mix.train import (PRESETS, AdaSmoothRecipe, BackboneRecipe, MixedNutsRecipe, apply_preset,
                              apply_settings, check_recipe, get_recipe, list_recipes, load_recipe, recipe_from_dict,
                              save_recipe)
from robust_mix.zoo.fmnist_recipes import FMNIST_RESNET


def valid_backbone(**fields) -> BackboneRecipe:
    return BackboneRecipe(**{"arch": "timm/resnet18", "dataset": "fashion-mnist", **fields})


@pytest.mark.parametrize("setting", ["epochs=-1", "epochs=0", "epochs=2.5", "epochs=true", "batch_size=0",
                                     "accumulation=0", "lr=0", "lr=-1e-3", "grad_clip=0", "precision=fp8",
                                     "max_steps_per_epoch=0", "train_subset=0", "seed=-1", "method=fgsm",
                                     "attack_steps=0", "eval_subset=-5", "arch=resnet18", "dataset="])
def test_bad_backbone_values_are_refused_by_name(setting):
    key, value = setting.split("=")
    config = apply_settings(valid_backbone(), [setting])
    with pytest.raises(ValueError, match=f"field {key}=.* is invalid: expected .*--set {key}="):
        check_recipe(config)


@pytest.mark.parametrize("setting", ["n_targets=10", "n_targets=-1", "eps=0", "eps_lo=2", "w_max=1.5",
                                     "iter_min=0", "iter_min=400", "buffer_rounds=2", "buffer_shard=0",
                                     "val_subset=1", "calib_keep=0", "calib_alpha_lo=[]", "calib_attack=fgsm",
                                     "ratio_bn_momentum=2", "policy.standard_layers=[]", "batch_size=10"])
def test_bad_adasmooth_values_are_refused_by_name(setting):
    config = AdaSmoothRecipe(standard="a.safetensors", robust="b.safetensors", eps=0.1, epochs=3,
                             policy=PolicyConfig(["l1"], ["l1"]))
    check_recipe(config)
    key = setting.split("=")[0]
    with pytest.raises(ValueError, match=f"field {key}=.* is invalid"):
        check_recipe(apply_settings(config, [setting]))


def test_methods_that_attack_need_an_eps():
    check_recipe(valid_backbone(method="standard"))
    with pytest.raises(ValueError, match="eps=None is invalid: expected a positive number: method 'pgd'"):
        check_recipe(valid_backbone(method="pgd"))
    check_recipe(valid_backbone(method="trades", eps=0.03))


def test_presets_apply_their_values_and_unknown_ones_are_named():
    paper = apply_preset(AdaSmoothRecipe(), "paper")
    assert (paper.n_targets, paper.iter_df, paper.eps_lo, paper.eps_hi, paper.w_max) == (9, 75.0, 0.4, 1.1, 0.4)
    assert (paper.c_bce, paper.c_ce, paper.c_prod, paper.lr, paper.accumulation) == (1.5, 0.0, 0.2, 5e-5, 4)
    assert paper.precision == "fp16" and paper.policy.widths == [512, 768, 1024]
    cpu = apply_preset(AdaSmoothRecipe(), "cpu")
    assert cpu.n_targets < paper.n_targets and cpu.buffer_subset is not None and cpu.precision == "fp32"
    with pytest.raises(ValueError, match=r"unknown preset 'papr' for AdaSmoothRecipe; known presets: \['cpu', 'paper'\]"):
        apply_preset(AdaSmoothRecipe(), "papr")
    with pytest.raises(ValueError, match="has no presets"):
        apply_preset(BackboneRecipe(), "paper")
    for name, values in PRESETS[AdaSmoothRecipe].items():  # every preset key is a real field, values valid types
        applied = apply_preset(AdaSmoothRecipe(), name)
        assert all(getattr(applied, k) == v for k, v in values.items() if "." not in k)


def test_unknown_fields_are_errors_in_settings_and_files(tmp_path):
    with pytest.raises(ValueError, match="unknown setting 'epochz'"):
        apply_settings(BackboneRecipe(), ["epochz=3"])
    with pytest.raises(ValueError, match="unknown setting 'policy.width'"):
        apply_settings(AdaSmoothRecipe(), ["policy.width=[1]"])
    with pytest.raises(ValueError, match="settings look like key=value"):
        apply_settings(BackboneRecipe(), ["epochs"])
    with pytest.raises(ValueError, match="unknown BackboneRecipe field"):
        recipe_from_dict(BackboneRecipe, {"epochs": 1, "colour": "red"})


def test_recipe_files_round_trip_and_old_files_still_read(tmp_path):
    config = get_recipe("fmnist-adasmooth").config
    save_recipe(config, tmp_path / "recipe.json")
    assert load_recipe(AdaSmoothRecipe, tmp_path / "recipe.json") == config
    old = {"arch": "timm/resnet18", "arch_kwargs": FMNIST_RESNET, "dataset": "fashion-mnist", "adversarial": True,
           "eps": 0.1, "attack_steps": 7, "attack_step_size": 0.025, "eval_attack_steps": 10, "epochs": 20,
           "batch_size": 128, "lr": 0.002, "weight_decay": 0.0005, "warmup_epochs": 0.5, "augment": True,
           "train_subset": None, "val_subset": 2000, "seed": 0}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_recipe(BackboneRecipe, tmp_path / "old.json") == get_recipe("fmnist-robust").config


def test_named_recipes_and_their_fashion_mnist_defaults():
    assert {"standard", "pgd", "trades", "adasmooth", "mixednuts", "fmnist-standard", "fmnist-robust",
            "fmnist-adasmooth", "fmnist-mixednuts"} <= set(list_recipes())
    standard, robust = get_recipe("fmnist-standard").config, get_recipe("fmnist-robust").config
    assert standard.arch_kwargs["layers"] == [2, 2, 2, 2] and standard.epochs == 30 and standard.method == "standard"
    assert robust.method == "pgd" and robust.epochs == 20 and (robust.attack_steps, robust.attack_step_size) == (7, 0.025)
    for name in ("fmnist-standard", "fmnist-robust", "fmnist-adasmooth", "fmnist-mixednuts"):
        check_recipe(get_recipe(name).config)
    assert BackboneRecipe().arch_kwargs == {} and BackboneRecipe().dataset == ""  # no Fashion-MNIST in the library
    assert isinstance(get_recipe("mixednuts").config, MixedNutsRecipe)
    with pytest.raises(KeyError, match="unknown recipe 'fmnist-standrd'; did you mean"):
        get_recipe("fmnist-standrd")
    copy = get_recipe("fmnist-standard").config
    copy.epochs = 1
    assert get_recipe("fmnist-standard").config.epochs == 30  # callers get copies


def test_preset_differences_say_what_a_recipe_scaled():
    from robust_mix.train.config import preset_differences

    scaled = preset_differences(get_recipe("fmnist-adasmooth").config, "paper")
    assert scaled["n_targets"] == (9, 3) and scaled["iter_df"] == (75.0, 10.0) and scaled["buffer_subset"] == (None, 16000)
    assert "eps_lo" not in scaled and "w_max" not in scaled  # kept as the authors had them
    assert preset_differences(apply_preset(AdaSmoothRecipe(), "paper"), "paper") == {}
