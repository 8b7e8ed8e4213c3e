"""Recipe configs as data: presets, settings, the validation rules, named recipes, old recipe files."""
from __future__ import annotations

import json

import pytest
import torch

from robust_mix.config import PolicyConfig
from robust_mix.train import (PRESETS, AdaSmoothRecipe, BackboneRecipe, MixedNutsRecipe, apply_preset,
                              apply_settings, check_recipe, get_recipe, list_recipes, load_recipe, recipe_from_dict,
                              save_recipe)
from robust_mix.zoo.fmnist_recipes import FMNIST_RESNET


def valid_backbone(**fields) -> BackboneRecipe:
    return BackboneRecipe(**{"arch": "timm/resnet18", "dataset": "fashion-mnist", **fields})


@pytest.mark.parametrize("setting, message", [
    ("epochs=-1", "epochs must be a positive integer (>= 1), got -1"), ("epochs=0", "got 0"),
    ("epochs=2.5", "epochs must be an integer, got 2.5"), ("epochs=true", "epochs must be an integer, got True"),
    ("batch_size=0", "batch_size must be a positive integer"), ("accumulation=0", "accumulation must be"),
    ("lr=0", "lr must be a finite number > 0, got 0"), ("lr=-1e-3", "got -0.001"), ("grad_clip=0", "grad_clip"),
    ("precision=fp8", "precision must be one of ['fp32', 'bf16', 'fp16'], got 'fp8'"),
    ("max_steps_per_epoch=0", "max_steps_per_epoch must be a positive integer"),
    ("train_subset=0", "train_subset must be"), ("seed=-1", "seed must be an integer >= 0, got -1"),
    ("method=fgsm", "method must be one of ['standard', 'pgd', 'trades'], got 'fgsm'"),
    ("attack_steps=0", "attack_steps must be"), ("eval_subset=-5", "got -5"), ("eps=2", "eps must be a finite number in (0, 1]"),
    ("arch=resnet18", "arch must be 'timm/<arch>'"), ("dataset=", "dataset must be a data set name"),
    ("augment=maybe", "augment must be true or false, got 'maybe'"),
    ("seed=18446744073709551616", "seed must be an integer from 0 to 2**64 - 1"),
    ("warmup_epochs=10.5", "warmup_epochs must be at most epochs=10 (a longer warm-up never reaches lr"),
])
def test_bad_backbone_values_are_refused_by_name(setting, message):
    with pytest.raises(ValueError) as info:
        check_recipe(apply_settings(valid_backbone(), [setting]))
    assert message in str(info.value)


@pytest.mark.parametrize("setting, message", [
    ("n_targets=10", "n_targets must be an integer from 0 to 9"), ("n_targets=-1", "n_targets must be an integer >= 0"),
    ("eps=0", "eps must be a finite number in (0, 1]"), ("eps_lo=2", "eps_lo must be at most eps_hi=1.1"),
    ("w_max=1.5", "w_max must be a finite number in [0, 1], got 1.5"), ("iter_min=0", "iter_min must be a positive"),
    ("iter_min=400", "iter_min must be at most iter_max=300"), ("buffer_rounds=2", "a divisor of epochs=3"),
    ("buffer_shard=0", "buffer_shard must be a positive integer"), ("val_subset=1", "val_subset must be at least 2"),
    ("calib_keep=1.5", "calib_keep must be a finite number in [0, 1], got 1.5"),
    ("calib_alpha_lo=[]", "calib_alpha_lo must be a non-empty list"), ("calib_attack=fgsm", "calib_attack must be"),
    ("ratio_bn_momentum=2", "ratio_bn_momentum must be a finite number in [0, 1]"),
    ("policy.standard_layers=[]", "policy.standard_layers must be the names of the base's feature layers"),
    ("policy.blocks=0", "policy.blocks must be a positive integer (>= 1), got 0"),
    ("batch_size=10", "batch_size must be a multiple of accumulation=4"),
    ("init_policy=no/such/policy.safetensors", "init_policy must be an existing policy.safetensors file"),
    ("calib_gamma_bias=[0, NaN]", "calib_gamma_bias must be a finite number, got nan"),
    ("standard_input.mean=[NaN]", "standard_input.mean must be a finite number, got nan"),
    ("policy.gamma_bias=Infinity", "policy.gamma_bias must be a finite number, got inf"),
])
def test_bad_adasmooth_values_are_refused_by_name(setting, message):
    config = AdaSmoothRecipe(standard="a.safetensors", robust="b.safetensors", eps=0.1, epochs=3,
                             policy=PolicyConfig(["l1"], ["l1"]))
    check_recipe(config)
    with pytest.raises(ValueError) as info:
        check_recipe(apply_settings(config, [setting]))
    assert message in str(info.value)


@pytest.mark.parametrize("setting, message", [
    ("scales=[1.0, NaN]", "scales must be a finite number > 0, got nan"), ("powers=[0]", "powers must be a finite number > 0"),
    ("biases=[-Infinity]", "biases must be a finite number, got -inf"),
])
def test_bad_mixednuts_grids_are_refused_by_name(setting, message):
    with pytest.raises(ValueError) as info:
        check_recipe(apply_settings(get_recipe("fmnist-mixednuts").config, [setting]))
    assert message in str(info.value)


def test_recipes_check_their_fields_when_built():
    with pytest.raises(ValueError, match=r"epochs must be a positive integer \(>= 1\), got -1"):
        BackboneRecipe(epochs=-1)
    with pytest.raises(TypeError, match="lr must be a number, got 'abc'"):
        apply_settings(get_recipe("fmnist-standard").config, ["lr=abc"])
    BackboneRecipe()  # the generic recipe is incomplete (no arch, no data set) but not invalid: check_recipe says so
    with pytest.raises(ValueError, match="arch must be 'timm/<arch>'"):
        check_recipe(BackboneRecipe())


def test_methods_that_attack_need_an_eps():
    check_recipe(valid_backbone(method="standard"))
    with pytest.raises(ValueError, match="eps must be a positive number: method 'pgd' attacks at that radius, got None"):
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
    assert scaled["n_targets"] == (9, 1) and scaled["iter_df"] == (75.0, 7.0) and scaled["buffer_subset"] == (None, 27500)
    assert "eps_lo" not in scaled and "w_max" not in scaled  # kept as the authors had them
    assert preset_differences(apply_preset(AdaSmoothRecipe(), "paper"), "paper") == {}


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "1", "RANK": "1"}, "RANK=1 is not one of the ranks 0 .. 0 of WORLD_SIZE=1"),
    ({"RANK": "2"}, "RANK=2 is not one of the ranks 0 .. 0"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, "RANK=-1 is not one of the ranks 0 .. 1"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 is not a number of processes"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_WORLD_SIZE": "4"}, "LOCAL_WORLD_SIZE=4 is not from 1 to WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "2"}, "LOCAL_RANK=2 is not one of 0 .. 1"),
    ({"LOCAL_RANK": "-3"}, "LOCAL_RANK=-3 is negative"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' must be an integer"),
    ({"WORLD_SIZE": "2", "RANK": "1.0"}, "RANK='1.0' must be an integer"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR and MASTER_PORT (where they meet) are not set"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost"}, "MASTER_PORT (where they meet) is not set"),
])
def test_inconsistent_torchrun_variables_are_refused_before_any_work(tiny_data, tmp_path, capsys, monkeypatch,
                                                                      env, message):
    """A process that is not rank 0 of the run it thinks it is in would train and write nothing."""
    from robust_mix.cli import main

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "run"
    assert main(["train", "fmnist-standard", "--out", str(out), "--no-progress", "--device", "cpu", "--set",
                 "epochs=1", "max_steps_per_epoch=1", "batch_size=16", "val_subset=16",
                 f"arch_kwargs={json.dumps(FMNIST_RESNET | {'channels': [4, 4, 4, 4], 'layers': [1, 1, 1, 1]})}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "torchrun" in err
    assert not out.exists()


def test_a_place_in_a_run_is_checked():
    from robust_mix.distributed import DistContext

    with pytest.raises(ValueError, match=r"rank from 0 to world_size - 1"):
        DistContext(rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        DistContext(world_size=0)


def test_more_ranks_on_a_machine_than_gpus_is_named(monkeypatch):
    from robust_mix.distributed import init_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"device of LOCAL_RANK=1 'cuda:1' does not exist: 1 cuda device\(s\) visible"):
        init_distributed("cuda")


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5"])
def test_a_bad_dist_timeout_is_named_before_the_process_group_starts(monkeypatch, value):
    """Text was a ValueError saying torchrun sets it; 0 or a negative number reached torch's process group."""
    import torch.distributed as dist

    from robust_mix.distributed import init_distributed
    from robust_mix.validate import InvalidInputError

    for name, setting in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost",
                          "MASTER_PORT": "29500", "ROBUST_MIX_DIST_TIMEOUT": value}.items():
        monkeypatch.setenv(name, setting)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("the process group was started"))
    with pytest.raises(InvalidInputError, match=rf"environment variable ROBUST_MIX_DIST_TIMEOUT='{value}' must be a "
                                                r"whole number of seconds >= 1 .* or unset it"):
        init_distributed("cpu")


def test_a_bad_local_rank_is_named_when_the_default_device_is_chosen(monkeypatch):
    """With a GPU visible, benchmark()'s default device read LOCAL_RANK with int(): a bare 'invalid literal'."""
    from robust_mix.benchmark import default_device
    from robust_mix.validate import InvalidInputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "abc")
    with pytest.raises(InvalidInputError, match="LOCAL_RANK='abc' must be an integer"):
        default_device()
    monkeypatch.setenv("LOCAL_RANK", "-1")
    with pytest.raises(InvalidInputError, match="LOCAL_RANK=-1 is negative"):
        default_device()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_device() == torch.device("cuda", 1)
