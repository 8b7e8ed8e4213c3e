"""Training recipes end to end on tiny data: weights move, runs resume exactly, bad runs write nothing,
calibration picks from its grid."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from robust_mix.backbones import load_backbone
from robust_mix.config import NutsConfig
from robust_mix.io import load_state_dict
from robust_mix.train import (AdaSmoothRecipe, BackboneRecipe, MixedNutsRecipe, RecipeMismatchError, RunOptions,
                              apply_settings, build_backbone, calibrate_mixednuts, read_history, train_adasmooth,
                              train_backbone)
from robust_mix.train import backbone as backbone_module
from robust_mix.train.mixednuts import calibrate_nuts, mapped_margins
from robust_mix.train.pair import build_mixed, policy_state
from robust_mix.train.policy_calibration import calibrate_policy
from train_fixtures import TINY, tiny_adasmooth, tiny_backbone_recipe

torch.set_num_threads(1)


def checkpoint(run) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def crash_after(monkeypatch, cls, method: str, calls: int) -> None:
    """Make ``cls.method`` raise KeyboardInterrupt on its ``calls``-th call (a kill at that point)."""
    real, count = getattr(cls, method), {"n": 0}

    def wrapped(self, *args, **kwargs):
        count["n"] += 1
        if count["n"] == calls:
            raise KeyboardInterrupt("simulated kill")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(cls, method, wrapped)


def test_standard_recipe_trains_and_resumes(tiny_data, tmp_path, monkeypatch):
    config = tiny_backbone_recipe(epochs=2, max_steps_per_epoch=3)
    initial = build_backbone(config).state_dict()
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        crash_after(patch, backbone_module.BackboneTask, "evaluate", 2)
        train_backbone(config, tmp_path / "run")
    assert checkpoint(tmp_path / "run")["epoch"] == 1
    record = train_backbone(config, tmp_path / "run")
    assert [r["epoch"] for r in read_history(tmp_path / "run")] == [1, 2] and record["epoch"] == 2
    assert "resuming" in (tmp_path / "run" / "train.log").read_text()
    trained = load_backbone(str(tmp_path / "run" / "model.safetensors")).state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial if initial[k].is_floating_point())
    saved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert saved["epochs"] == 2 and saved["arch_kwargs"] == TINY


def test_a_changed_recipe_is_refused_and_nothing_is_overwritten(tiny_data, tmp_path):
    config = tiny_backbone_recipe(max_steps_per_epoch=2)
    train_backbone(config, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.name != "train.log"}
    with pytest.raises(RecipeMismatchError, match=r"different recipe \(lr: 0.01 -> 0.5\)"):
        train_backbone(dataclasses.replace(config, lr=0.5), tmp_path / "run")
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.name != "train.log"}
    assert after == before


def test_a_kill_mid_epoch_resumes_to_the_same_weights(tiny_data, tmp_path, monkeypatch):
    """Per-step seeds and a seeded data order: the resumed run computes what the uninterrupted one did."""
    config = tiny_backbone_recipe(epochs=2, max_steps_per_epoch=4, augment=True)
    options = RunOptions(checkpoint_every=1)
    train_backbone(config, tmp_path / "whole", options=options)
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        crash_after(patch, backbone_module.BackboneTask, "loss", 7)  # epoch 2, step 3
        train_backbone(config, tmp_path / "killed", options=options)
    state = checkpoint(tmp_path / "killed")
    assert (state["epoch"], state["step"]) == (1, 2)
    train_backbone(config, tmp_path / "killed", options=options)
    whole, resumed = checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "killed")
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert whole["history"][-1]["train_loss"] == pytest.approx(resumed["history"][-1]["train_loss"])


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_adversarial_recipes_report_robust_accuracy(tiny_data, tmp_path, method):
    record = train_backbone(tiny_backbone_recipe(method=method, max_steps_per_epoch=2), tmp_path / method)
    assert record["val_robust"] is not None and 0.0 <= record["val_robust"] <= record["val_clean"] + 1e-9
    assert record["score"] == record["val_robust"]
    if method == "trades":
        assert record["train_kl"] >= 0.0
    assert (tmp_path / method / "model.safetensors").is_file()


def test_a_model_with_the_wrong_class_count_is_refused_before_writing(tiny_data, tmp_path):
    config = tiny_backbone_recipe(arch_kwargs={**TINY, "num_classes": 7})
    with pytest.raises(ValueError, match="7,.*10 classes; set num_classes=10"):
        train_backbone(config, tmp_path / "run")
    assert not any((tmp_path / "run").glob("*"))  # refused before writing anything


def test_more_processes_than_data_is_refused(tiny_data, tmp_path):
    from robust_mix.distributed import DistContext

    with pytest.raises(ValueError, match="must be a multiple of world_size"):
        train_backbone(tiny_backbone_recipe(batch_size=16), tmp_path / "a", dist=DistContext(rank=0, world_size=3))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train_backbone(tiny_backbone_recipe(batch_size=16, train_subset=8), tmp_path / "b")
    assert not any((tmp_path / "a").glob("*")) and not any((tmp_path / "b").glob("*"))


def test_adasmooth_recipe_trains_policy_and_calibrates(tiny_data, tiny_bases, tmp_path):
    config = tiny_adasmooth(tiny_bases, max_steps_per_epoch=3)
    sample = torch.zeros(1, 1, 28, 28)
    initial = {k: v.clone() for k, v in policy_state(build_mixed(config, sample, 10)).items()}
    record = train_adasmooth(config, tmp_path / "ada")
    state = load_state_dict(tmp_path / "ada" / "policy.safetensors")
    assert state and all(k.startswith("policy.") for k in state) and set(state) == set(initial)
    assert any(not torch.equal(state[k], initial[k]) for k in initial if "network" in k)
    policy = json.loads((tmp_path / "ada" / "policy.json").read_text())
    assert policy["alpha_range"][0] in (0.0, 0.5) and policy["alpha_range"][1] == 1.0
    assert policy["gamma_bias"] in (0.0, 1.0) and policy["standard_layers"] == ["layer1", "layer2"]
    table = json.loads((tmp_path / "ada" / "calibration.json").read_text())
    assert len(table) == 5 and table[-1]["picked"]["alpha_lo"] == policy["alpha_range"][0]
    for key in ("val_detect_clean", "val_detect_adv", "val_acc_clean", "val_acc_adv", "alpha_clean_mean",
                "alpha_adv_mean", "alpha_clean_std", "alpha_adv_std"):
        assert 0.0 <= record[key] <= 1.0, key
    assert record["val_detect"] == pytest.approx((record["val_detect_clean"] + record["val_detect_adv"]) / 2)
    shards = sorted((tmp_path / "ada" / "buffer" / "round-0").iterdir())
    assert len(shards) == 3  # 32 images in shards of 12


def test_adasmooth_rerun_with_new_calibration_grid_only_recalibrates(tiny_data, tiny_bases, tmp_path):
    config = tiny_adasmooth(tiny_bases, max_steps_per_epoch=2, calib_alpha_lo=[0.5], calib_gamma_bias=[0.0])
    train_adasmooth(config, tmp_path / "ada")
    trained = (tmp_path / "ada" / "policy.safetensors").read_bytes()
    history = read_history(tmp_path / "ada")
    train_adasmooth(dataclasses.replace(config, calib_alpha_lo=[0.7]), tmp_path / "ada")
    assert (tmp_path / "ada" / "policy.safetensors").read_bytes() == trained and read_history(tmp_path / "ada") == history
    assert json.loads((tmp_path / "ada" / "policy.json").read_text())["alpha_range"] == [0.7, 1.0]
    with pytest.raises(RecipeMismatchError, match="n_targets"):
        train_adasmooth(dataclasses.replace(config, n_targets=1), tmp_path / "ada")


def test_a_finished_run_started_again_does_not_redo_its_calibration(tiny_data, tiny_bases, tmp_path, monkeypatch):
    """Started again with the same recipe, a finished adasmooth or MixedNUTS run returns its saved result
    (calibration under AutoAttack can take hours); a changed calibration grid still recalibrates."""
    from robust_mix.train import adasmooth as adasmooth_module, mixednuts as mixednuts_module

    config = tiny_adasmooth(tiny_bases, max_steps_per_epoch=2, calib_alpha_lo=[0.5], calib_gamma_bias=[0.0])
    first = train_adasmooth(config, tmp_path / "ada")
    nuts = MixedNutsRecipe(robust=tiny_bases[1], dataset="fashion-mnist", eps=0.1, val_images=16, attack_steps=1,
                           batch_size=16, scales=[1.0], powers=[1.0, 2.0], biases=[0.0])
    nuts_first = calibrate_mixednuts(nuts, tmp_path / "nuts")

    def refuse(*args, **kwargs):
        raise AssertionError("calibrated again")
    with monkeypatch.context() as patch:
        patch.setattr(adasmooth_module, "calibrate_policy", refuse)
        patch.setattr(mixednuts_module, "calibrate_nuts", refuse)
        assert train_adasmooth(config, tmp_path / "ada")["policy"] == json.loads(json.dumps(first["policy"]))
        assert calibrate_mixednuts(nuts, tmp_path / "nuts") == json.loads(json.dumps(nuts_first))
        (tmp_path / "ada" / "calibration.json").unlink()  # a calibration killed before its last file: redone
        with pytest.raises(AssertionError, match="calibrated again"):
            train_adasmooth(config, tmp_path / "ada")


def test_adasmooth_buffer_rounds_regenerate_against_the_trained_network(tiny_data, tiny_bases, tmp_path):
    config = tiny_adasmooth(tiny_bases, epochs=2, buffer_rounds=2, max_steps_per_epoch=2)
    train_adasmooth(config, tmp_path / "ada", calibrate=False)
    rounds = sorted(p.name for p in (tmp_path / "ada" / "buffer").iterdir())
    assert rounds == ["round-1"]  # round 0 was removed once round 1 was complete
    assert [r["epoch"] for r in read_history(tmp_path / "ada")] == [1, 2]


def test_adasmooth_init_policy_continues_an_earlier_network(tiny_data, tiny_bases, tmp_path):
    """init_policy starts from the earlier run's tensors (not the seeded fresh network); other layouts are refused."""
    first = tiny_adasmooth(tiny_bases, buffer_subset=16, max_steps_per_epoch=2)
    train_adasmooth(first, tmp_path / "first", calibrate=False)
    earlier = tmp_path / "first" / "policy.safetensors"
    trained = load_state_dict(earlier)
    sample = torch.zeros(1, 1, 28, 28)
    fresh = policy_state(build_mixed(first, sample, 10))
    assert any(not torch.equal(fresh[k], trained[k]) for k in trained if "network" in k)
    zero_lr = dataclasses.replace(first, init_policy=str(earlier), lr=1e-12, ratio_bn_momentum=0.0)
    train_adasmooth(zero_lr, tmp_path / "second", calibrate=False)
    continued = load_state_dict(tmp_path / "second" / "policy.safetensors")
    for key in trained:  # the learned tensors; BatchNorm running statistics move without a learning rate
        if "network" in key and "running_" not in key and trained[key].is_floating_point():
            assert torch.allclose(continued[key], trained[key], atol=1e-6), key
    other = dataclasses.replace(first, init_policy=str(earlier), policy=dataclasses.replace(first.policy, widths=[8, 12]))
    with pytest.raises(ValueError, match="init_policy=.* is not a mixing network of this recipe's layout"):
        train_adasmooth(other, tmp_path / "third", calibrate=False)


def test_adasmooth_recipe_sets_the_ratio_batchnorm_momentum(tiny_data, tiny_bases, tmp_path):
    """ratio_bn_momentum reaches the ratio's BatchNorm: at 0 its running statistics never move, at 0.5 they do."""
    stats = {}
    for momentum in (0.0, 0.5):
        config = tiny_adasmooth(tiny_bases, buffer_subset=16, max_steps_per_epoch=2, ratio_bn_momentum=momentum)
        train_adasmooth(config, tmp_path / f"m{momentum}", calibrate=False)
        state = load_state_dict(tmp_path / f"m{momentum}" / "policy.safetensors")
        stats[momentum] = (state["policy.bn.running_mean"].item(), state["policy.bn.running_var"].item())
    assert stats[0.0] == (0.0, 1.0)
    assert stats[0.5] != (0.0, 1.0)


def test_a_base_pair_that_does_not_fit_the_data_is_refused(tiny_data, tiny_bases, tmp_path):
    from robust_mix.backbones import save_backbone

    seven = {**TINY, "num_classes": 7}
    path = save_backbone(build_backbone(tiny_backbone_recipe(arch_kwargs=seven)), tmp_path / "seven.safetensors",
                         ref="timm/resnet18", kwargs=seven)
    with pytest.raises(ValueError, match="class counts do not match .*the robust base's num_classes: 7"):
        train_adasmooth(tiny_adasmooth([tiny_bases[0], str(path)]), tmp_path / "ada")
    three = {**TINY, "in_chans": 3}
    path = save_backbone(build_backbone(tiny_backbone_recipe(arch_kwargs=three)), tmp_path / "rgb.safetensors",
                         ref="timm/resnet18", kwargs=three)
    with pytest.raises(ValueError, match=r"input channel counts do not match \(input_shape \(1, 28, 28\): 1, the standard base's in_chans: 3"):
        train_adasmooth(tiny_adasmooth([str(path), tiny_bases[1]]), tmp_path / "ada")
    with pytest.raises(ValueError, match="n_targets must be an integer from 0 to 9"):
        train_adasmooth(tiny_adasmooth(tiny_bases, n_targets=10), tmp_path / "ada")
    assert not any((tmp_path / "ada").glob("*"))


def test_calibrate_nuts_picks_grid_point_and_alpha():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 10
    clean = torch.randn(200, 10, generator=gen)
    clean[torch.arange(200), labels] += torch.linspace(-1, 6, 200)  # some wrong, some confident
    adv = torch.randn(200, 10, generator=gen)
    adv[torch.arange(200), labels] += 2.0
    grid = SimpleNamespace(scales=[0.5, 2.0], powers=[1.0, 2.0], biases=[-1.0, 0.0], beta=98.5, ln_k=250)
    nuts, alpha, table = calibrate_nuts(clean, labels, adv, labels, grid)
    assert isinstance(nuts, NutsConfig) and len(table["grid"]) == 8
    best = table["best"]
    assert best["objective"] == min(r["objective"] for r in table["grid"])
    assert alpha == pytest.approx(1 / (1 + best["q"])) and 0.5 <= alpha <= 1.0
    right = adv.argmax(1) == labels
    q = torch.quantile(mapped_margins(adv[right], nuts.scale, nuts.power, nuts.bias).double(), 0.015).item()
    assert q == pytest.approx(best["q"])


def test_mixednuts_recipe_writes_config(tiny_data, tiny_bases, tmp_path):
    config = MixedNutsRecipe(standard=tiny_bases[0], robust=tiny_bases[1], dataset="fashion-mnist", eps=0.1,
                             val_images=40, attack_steps=2, batch_size=20, scales=[1.0], powers=[1.0, 2.0],
                             biases=[0.0])
    result = calibrate_mixednuts(config, tmp_path / "nuts")
    saved = json.loads((tmp_path / "nuts" / "nuts.json").read_text())
    assert saved["alpha"] == result["alpha"] and 0.0 < saved["alpha"] <= 1.0
    assert saved["nuts"]["power"] in (1.0, 2.0)
    with pytest.raises(RecipeMismatchError):
        calibrate_mixednuts(dataclasses.replace(config, beta=90.0), tmp_path / "nuts")


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["nuts"].update(power=float("nan")), r"power must be a finite number, got nan"),
    (lambda d: d["nuts"].update(ln_k=1), r"ln_k must be an integer >= 2"),
    (lambda d: d.update(alpha=2.0), r"alpha"),
    (lambda d: d.update(alpha="0.9"), r"alpha"),
    (lambda d: d.pop("best"), r"holds the fields \['alpha', 'nuts'\]"),
])
def test_a_finished_calibration_reads_its_result_back_checked_field_by_field(tiny_data, tiny_bases, tmp_path, edit,
                                                                            match):
    """Started again, a finished MixedNUTS calibration returned nuts.json as it found it: a NaN power or an alpha of
    2 written into the file by hand became the result. What the run wrote is read back; an edited file is refused,
    naming it, the field and what to do."""
    from robust_mix.train.run_dir import RunFileError

    config = MixedNutsRecipe(standard=tiny_bases[0], robust=tiny_bases[1], dataset="fashion-mnist", eps=0.1,
                             val_images=20, attack_steps=1, batch_size=20, scales=[1.0], powers=[1.0], biases=[0.0])
    result = calibrate_mixednuts(config, tmp_path / "nuts")
    assert calibrate_mixednuts(config, tmp_path / "nuts") == json.loads(json.dumps(result))  # read back as written
    path = tmp_path / "nuts" / "nuts.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(RunFileError, match=rf"nuts\.json: .*{match}.*move it away and rerun"):
        calibrate_mixednuts(config, tmp_path / "nuts")


def test_a_finished_adasmooth_run_reads_its_policy_back_checked_field_by_field(tiny_data, tiny_bases, tmp_path):
    """Started again, a finished adasmooth run returned policy.json as it found it: an alpha_range of [0.9, 0.2] or
    a NaN gamma_scale written into it became the run's policy."""
    from robust_mix.train.run_dir import RunFileError

    config = tiny_adasmooth(tiny_bases, max_steps_per_epoch=2, calib_alpha_lo=[0.5], calib_gamma_bias=[0.0])
    first = train_adasmooth(config, tmp_path / "ada")
    assert train_adasmooth(config, tmp_path / "ada")["policy"] == json.loads(json.dumps(first["policy"]))
    path = tmp_path / "ada" / "policy.json"
    data = json.loads(path.read_text())
    for field, value, match in (("alpha_range", [0.9, 0.2], "alpha_range"),
                                ("gamma_scale", float("nan"), "gamma_scale must be a finite number, got nan"),
                                ("blocks", "2", "blocks must be an integer, got '2'")):
        path.write_text(json.dumps({**data, field: value}))
        with pytest.raises(RunFileError, match=rf"policy\.json: .*{match}.*move it away and rerun"):
            train_adasmooth(config, tmp_path / "ada")


def test_calibration_through_the_harness_matches_a_direct_benchmark(tiny_bases):
    """calib_attack names a harness attack: the robust base's figure is the harness's own, and bad specs fail early."""
    from robust_mix.benchmark import benchmark

    gen = torch.Generator().manual_seed(3)
    images, labels = torch.rand(8, 1, 28, 28, generator=gen), torch.arange(8) % 10
    config = tiny_adasmooth(tiny_bases, calib_attack="apgd-ce", calib_alpha_lo=[0.5], calib_gamma_scale=[1.0],
                            calib_gamma_bias=[0.0])
    model = build_mixed(config, images[:1], 10).eval()
    _, table = calibrate_policy(model, images, labels, config, workers=2)
    assert calibrate_policy(model, images, labels, config, workers=1)[1] == table  # side by side = in order
    direct = benchmark(model.robust, threat_model="Linf", eps=config.eps, images=images, labels=labels,
                       attack="apgd-ce", batch_size=100)
    assert table[-1]["robust_base"] == direct.robust_accuracy
    assert table[0]["robust"] <= table[0]["clean"]
    with pytest.raises(ValueError, match="calib_attack must be"):
        calibrate_policy(model, images, labels, dataclasses.replace(config, calib_attack="fgsm"))


def test_apply_settings_and_cli_print_config(capsys):
    config = apply_settings(AdaSmoothRecipe(), ["epochs=2", "policy.widths=[8,16]", "standard=a.safetensors"])
    assert config.epochs == 2 and config.policy.widths == [8, 16] and config.standard == "a.safetensors"
    with pytest.raises(ValueError, match="unknown setting"):
        apply_settings(BackboneRecipe(), ["epochz=3"])
    from robust_mix.cli import main

    assert main(["train", "fmnist-robust", "--print-config", "--set", "epochs=1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["method"] == "pgd" and printed["epochs"] == 1


def test_the_paper_preset_runs_on_tiny_random_bases(tiny_data, tiny_bases, tmp_path):
    """The authors' configuration end to end for one step: 1 + 9 examples per image, fp16 autocast with a
    gradient scaler, accumulation 4 (what a GPU user runs at scale); chi-square(75) draws capped at 6 here."""
    from robust_mix.train import apply_preset

    config = apply_preset(tiny_adasmooth(tiny_bases), "paper")
    config = dataclasses.replace(config, buffer_subset=4, buffer_shard=4, val_subset=2, epochs=1, batch_size=40,
                                 iter_max=6, policy=dataclasses.replace(config.policy, widths=[16, 16, 16]))
    record = train_adasmooth(config, tmp_path / "paper", calibrate=False)
    assert record["epoch"] == 1 and (config.n_targets, config.accumulation, config.precision) == (9, 4, "fp16")
    shard = load_state_dict(next((tmp_path / "paper" / "buffer" / "round-0").iterdir()))
    assert shard["delta"].shape == (4, 10, 1, 28, 28)
    assert torch.load(tmp_path / "paper" / "checkpoint.pt", weights_only=True)["scaler"]["scale"] > 0


def test_mixednuts_checks_the_standard_base_before_any_work(tiny_data, tiny_bases, tmp_path):
    """The standard base is not calibrated, but the mix pairs it with the robust one: a missing file or one of
    another class count is refused before anything is written, as a bad robust base is."""
    from robust_mix.backbones import save_backbone

    seven = {**TINY, "num_classes": 7}
    path = save_backbone(build_backbone(tiny_backbone_recipe(arch_kwargs=seven)), tmp_path / "seven.safetensors",
                         ref="timm/resnet18", kwargs=seven)
    config = MixedNutsRecipe(robust=tiny_bases[1], dataset="fashion-mnist", eps=0.1, val_images=16, attack_steps=1,
                             batch_size=16, scales=[1.0], powers=[1.0], biases=[0.0])
    for standard, message in ((str(tmp_path / "missing.safetensors"), "not found"),
                              (str(path), "standard base .* returns \\(7,\\) outputs per image")):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            calibrate_mixednuts(dataclasses.replace(config, standard=standard), tmp_path / "nuts")
        assert not any((tmp_path / "nuts").glob("*"))


@pytest.mark.parametrize("recipe, field", [
    ("backbone", "train_subset"), ("backbone", "val_subset"), ("adasmooth", "buffer_subset"),
    ("adasmooth", "val_subset"), ("adasmooth", "calib_images"), ("mixednuts", "val_images")])
def test_a_count_beyond_the_split_is_refused_by_name_before_any_work(tiny_data, tiny_bases, tmp_path, recipe, field):
    """Each split holds 96 images here: asking for 97 is an error naming the field, never silently 96 images
    (calibration on fewer images than the recipe says, found only after the training)."""
    config = {"backbone": lambda: tiny_backbone_recipe(),
              "adasmooth": lambda: tiny_adasmooth(tiny_bases),
              "mixednuts": lambda: MixedNutsRecipe(robust=tiny_bases[1], dataset="fashion-mnist", eps=0.1,
                                                   attack_steps=1, batch_size=16, scales=[1.0], powers=[1.0],
                                                   biases=[0.0])}[recipe]()
    run = {"backbone": train_backbone, "adasmooth": train_adasmooth, "mixednuts": calibrate_mixednuts}[recipe]
    with pytest.raises(ValueError, match=rf"{field}=97 is more than the split holds \(asked for 97 .* has 96\); "
                                         rf"set it with --set {field}="):
        run(dataclasses.replace(config, **{field: 97}), tmp_path / "run")
    assert not any((tmp_path / "run").glob("*"))


VIT32 = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2, "in_chans": 1, "num_classes": 10}


def test_a_model_of_another_input_size_is_refused_by_name_before_writing(tiny_data, tiny_bases, tmp_path):
    """timm's ViT asserts its img_size (an AssertionError, not a shape RuntimeError): still a clear error."""
    import timm
    from robust_mix.backbones import save_backbone

    with pytest.raises(ValueError, match=r"timm/vit_tiny_patch16_224 .* does not accept this data set's \(1, 28, 28\) "
                                         r"images \(Input height \(28\) doesn't match model \(32\)"):
        train_backbone(tiny_backbone_recipe(arch="timm/vit_tiny_patch16_224", arch_kwargs=VIT32), tmp_path / "run")
    vit = save_backbone(timm.create_model("vit_tiny_patch16_224", **VIT32), tmp_path / "vit.safetensors",
                        ref="timm/vit_tiny_patch16_224", kwargs=VIT32)
    with pytest.raises(ValueError, match=r"the standard base .*vit.safetensors does not accept the data set's "
                                         r"\(1, 28, 28\) images; give it an input adapter"):
        train_adasmooth(tiny_adasmooth([str(vit), tiny_bases[1]]), tmp_path / "run")
    with pytest.raises(ValueError, match=r"the robust base .*vit.safetensors does not accept"):
        calibrate_mixednuts(MixedNutsRecipe(robust=str(vit), dataset="fashion-mnist", eps=0.1, val_images=8),
                            tmp_path / "run")
    assert not any((tmp_path / "run").glob("*"))


def test_an_unknown_data_set_is_not_blamed_on_an_image_count(tiny_data, tmp_path):
    with pytest.raises(ValueError) as info:
        train_backbone(tiny_backbone_recipe(dataset="mnist"), tmp_path / "run")
    assert str(info.value).startswith("unknown dataset 'mnist'") and "subset" not in str(info.value)


def test_init_policy_may_start_with_the_home_folder(tiny_bases, tmp_path, monkeypatch):
    from robust_mix.io import save_state_dict
    from robust_mix.train import check_recipe
    from robust_mix.train.pair import load_initial_policy

    monkeypatch.setenv("HOME", str(tmp_path))
    config = tiny_adasmooth(tiny_bases)
    model = build_mixed(config, torch.zeros(1, 1, 28, 28), 10)
    state = {k: torch.full_like(v, 0.25) if v.is_floating_point() else v for k, v in policy_state(model).items()}
    save_state_dict(state, tmp_path / "policy.safetensors")
    check_recipe(dataclasses.replace(config, init_policy="~/policy.safetensors"))  # found, not "must be an existing"
    load_initial_policy(model, "~/policy.safetensors")
    assert all(torch.equal(policy_state(model)[k], v) for k, v in state.items())


def test_an_eval_subset_beyond_the_validation_split_is_said(tiny_data, tmp_path, caplog):
    """The per-epoch PGD accuracy of an adversarial base is measured on the first eval_subset validation images;
    with fewer images in the split it silently used them all, while the recipe said eval_subset."""
    from robust_mix.train import train_backbone

    with caplog.at_level("WARNING", logger="robust_mix"):
        train_backbone(tiny_backbone_recipe(method="pgd", eval_subset=64, max_steps_per_epoch=1), tmp_path / "run")
    assert "eval_subset is 64 but the validation split has 32 images" in caplog.text


def test_calibration_reports_each_grid_point_as_it_finishes(tiny_bases, caplog):
    """The calibration grid ran silent until its last job (minutes to hours on a real grid): no bar, no line per
    point. Each finished job now logs a line and moves the training's bar, in workers or in this process."""
    import logging

    gen = torch.Generator().manual_seed(3)
    images, labels = torch.rand(6, 1, 28, 28, generator=gen), torch.arange(6) % 10
    config = tiny_adasmooth(tiny_bases, calib_attack="pgd", calib_alpha_lo=[0.5, 0.7], calib_gamma_scale=[1.0],
                            calib_gamma_bias=[0.0])
    model = build_mixed(config, images[:1], 10).eval()
    bars = []

    class Bar:
        def __init__(self, description, total, done, per_step):
            self.made, self.updates, self.closed = (description, total, done, per_step), [], False
            bars.append(self)

        def update(self, steps, postfix):
            self.updates.append((steps, dict(postfix)))

        def close(self):
            self.closed = True

    for workers in (1, 2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="robust_mix.train.policy_calibration"):
            _, table = calibrate_policy(model, images, labels, config, workers=workers, progress=Bar)
        bar = bars[-1]
        assert bar.made == ("calibration", 3, 0, 6) and bar.closed
        assert [steps for steps, _ in bar.updates] == [1, 1, 1]
        assert sorted(p["robust"] for _, p in bar.updates) == sorted([r["robust"] for r in table[:-1]]
                                                                     + [table[-1]["robust_base"]])
        done = [r.getMessage() for r in caplog.records if " done (" in r.getMessage()]
        assert len(done) == 3 and {m.split(" done (")[1][:3] for m in done} == {"1/3", "2/3", "3/3"}
        assert any(m.startswith("calibration: robust base done") for m in done)
