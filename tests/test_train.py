"""Training recipes on tiny subsets: weights move, checkpoints resume, calibration picks from its grid."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from robust_mix import train
from robust_mix.backbones import load_backbone, save_backbone
from robust_mix.calibrate import calibrate_nuts, mapped_margins
from robust_mix.config import NutsConfig, PolicyConfig
from robust_mix.io import load_state_dict
from robust_mix.train import (AdaSmoothRecipe, BackboneRecipe, MixedNutsRecipe, adaptive_adversarial_batch,
                              apply_settings, build_backbone, build_mixed, pgd)

TINY = {"in_chans": 1, "num_classes": 10, "layers": [1, 1, 1, 1], "channels": [4, 8, 8, 8],
        "stem_width": 4, "stem_type": "deep"}


@pytest.fixture
def tiny_data(monkeypatch):
    """Recipes read 96 synthetic 28x28 'train' and 'val' images (class-dependent brightness)."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 10
    images = (torch.rand(96, 1, 28, 28, generator=gen) * 0.3 + labels.view(-1, 1, 1, 1) / 14).clamp(0, 1)
    monkeypatch.setattr(train, "load_dataset", lambda name, split: (images.clone(), labels.clone()))
    return images, labels


def tiny_backbone_recipe(**kwargs) -> BackboneRecipe:
    return BackboneRecipe(arch_kwargs=dict(TINY), epochs=1, batch_size=16, lr=1e-2, val_subset=32,
                          attack_steps=2, eval_attack_steps=2, **kwargs)


@pytest.fixture
def tiny_bases(tmp_path):
    paths = []
    for seed, name in ((0, "std"), (1, "rob")):
        model = build_backbone(dataclasses.replace(tiny_backbone_recipe(), seed=seed))
        paths.append(str(save_backbone(model, tmp_path / f"{name}.safetensors", ref="timm/resnet18", kwargs=TINY)))
    return paths


def tiny_policy() -> PolicyConfig:
    return PolicyConfig(standard_layers=["layer1", "layer2"], robust_layers=["layer1", "layer2"],
                        widths=[8, 8], blocks=1, input_shape=(1, 28, 28))


def test_pgd_stays_in_ball_and_increases_loss():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 4, 4)
    x = torch.rand(5, 1, 4, 4)
    loss_fn = lambda z: (z * w).sum(dim=(1, 2, 3))  # noqa: E731
    eps = torch.tensor([0.0, 0.05, 0.1, 0.1, 0.2])
    adv = pgd(loss_fn, x, eps, steps=5, random_start=True, generator=torch.Generator().manual_seed(0))
    assert ((adv - x).abs().amax(dim=(1, 2, 3)) <= eps + 1e-6).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert (loss_fn(adv)[1:] > loss_fn(x)[1:]).all()


def test_standard_recipe_trains_and_resumes(tiny_data, tmp_path, monkeypatch):
    config = dataclasses.replace(tiny_backbone_recipe(), epochs=2)
    initial = build_backbone(config).state_dict()
    calls = {"n": 0}
    real_accuracy = train.accuracy

    def crash_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real_accuracy(*args, **kwargs)

    monkeypatch.setattr(train, "accuracy", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train.train_backbone(config, tmp_path / "run", progress=False, max_steps=3)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(train, "accuracy", real_accuracy)
    record = train.train_backbone(config, tmp_path / "run", progress=False, max_steps=3)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert epochs == [1, 2] and record["epoch"] == 2  # the rerun trained epoch 2 only
    assert "resuming" in (tmp_path / "run" / "train.log").read_text()
    trained = load_backbone(str(tmp_path / "run" / "model.safetensors")).state_dict()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial if initial[k].is_floating_point())
    saved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert saved["epochs"] == 2 and saved["arch_kwargs"] == TINY
    with pytest.raises(ValueError, match="different recipe"):
        train.train_backbone(dataclasses.replace(config, lr=0.5), tmp_path / "run", progress=False)


def test_adversarial_recipe_reports_robust_accuracy(tiny_data, tmp_path):
    config = tiny_backbone_recipe(adversarial=True)
    record = train.train_backbone(config, tmp_path / "adv", progress=False, max_steps=2)
    assert record["val_robust"] is not None and 0.0 <= record["val_robust"] <= 1.0
    assert (tmp_path / "adv" / "model.safetensors").is_file()


def test_adaptive_attack_batch_respects_eps_and_restores_modes(tiny_bases):
    model = build_mixed(*tiny_bases, tiny_policy())
    model.train()
    x = torch.rand(8, 1, 28, 28)
    y = torch.arange(8)
    config = AdaSmoothRecipe(eps=0.1, eps_hi=1.1, iter_min=2, iter_max=2)
    adv = adaptive_adversarial_batch(model, x, y, config, torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.11 + 1e-6 and not torch.equal(adv, x)
    assert model.training and model.policy.training and model.policy.scale_alpha is None
    assert not model.standard.training and not model.robust.training


def test_adasmooth_recipe_trains_policy_and_calibrates(tiny_data, tiny_bases, tmp_path):
    config = AdaSmoothRecipe(standard=tiny_bases[0], robust=tiny_bases[1], policy=tiny_policy(), epochs=1,
                             batch_size=8, train_subset=48, val_subset=16, iter_min=2, iter_max=2,
                             calib_images=16, calib_attack_steps=2, calib_alpha_lo=[0.0, 0.5],
                             calib_gamma_scale=[1.0], calib_gamma_bias=[0.0, 1.0])
    torch.manual_seed(0)
    initial = {k: v.clone() for k, v in train._policy_state(build_mixed(*tiny_bases, tiny_policy())).items()}
    record = train.train_adasmooth(config, tmp_path / "ada", progress=False, max_steps=3)
    state = load_state_dict(tmp_path / "ada" / "policy.safetensors")
    assert state and all(k.startswith("policy.") for k in state)
    assert any(not torch.equal(state[k], initial[k]) for k in initial if "network" in k)
    policy = json.loads((tmp_path / "ada" / "policy.json").read_text())
    assert policy["alpha_range"][0] in (0.0, 0.5) and policy["alpha_range"][1] == 1.0
    assert policy["gamma_bias"] in (0.0, 1.0) and policy["standard_layers"] == ["layer1", "layer2"]
    table = json.loads((tmp_path / "ada" / "calibration.json").read_text())
    assert len(table) == 5 and table[-1]["picked"]["alpha_lo"] == policy["alpha_range"][0]
    assert 0.0 <= record["val_detect"] <= 1.0


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
    config = MixedNutsRecipe(standard=tiny_bases[0], robust=tiny_bases[1], val_images=40, attack_steps=2,
                             batch_size=20, scales=[1.0], powers=[1.0, 2.0], biases=[0.0])
    result = train.run_mixednuts(config, tmp_path / "nuts", progress=False)
    saved = json.loads((tmp_path / "nuts" / "nuts.json").read_text())
    assert saved["alpha"] == result["alpha"] and 0.0 < saved["alpha"] <= 1.0
    assert saved["nuts"]["power"] in (1.0, 2.0)


def test_apply_settings_and_cli_print_config(capsys):
    config = apply_settings(AdaSmoothRecipe(), ["epochs=2", "policy.widths=[8,16]", "standard=a.safetensors"])
    assert config.epochs == 2 and config.policy.widths == [8, 16] and config.standard == "a.safetensors"
    with pytest.raises(ValueError, match="unknown setting"):
        apply_settings(BackboneRecipe(), ["epochz=3"])
    from robust_mix.cli import main

    assert main(["train", "fmnist-robust", "--print-config", "--set", "epochs=1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["adversarial"] is True and printed["epochs"] == 1


def test_calibration_through_the_harness_matches_a_direct_benchmark(tiny_bases):
    """calib_attack names a harness attack: the robust base's figure is the harness's own, and bad specs fail early."""
    from robust_mix.benchmark import benchmark

    gen = torch.Generator().manual_seed(3)
    images, labels = torch.rand(8, 1, 28, 28, generator=gen), torch.arange(8) % 10
    model = build_mixed(*tiny_bases, tiny_policy()).eval()
    config = AdaSmoothRecipe(calib_attack="apgd-ce", calib_alpha_lo=[0.5], calib_gamma_scale=[1.0])
    _, table = train.calibrate_policy(model, images, labels, config)
    direct = benchmark(model.robust, threat_model="Linf", eps=config.eps, images=images, labels=labels,
                       attack="apgd-ce", batch_size=100)
    assert table[-1]["robust_base"] == direct.robust_accuracy
    assert table[0]["robust"] <= table[0]["clean"]
    with pytest.raises(ValueError, match="calib_attack must be"):
        train.calibrate_policy(model, images, labels, dataclasses.replace(config, calib_attack="fgsm"))


def test_adasmooth_recipe_sets_the_ratio_batchnorm_momentum(tiny_data, tiny_bases, tmp_path):
    """ratio_bn_momentum reaches the ratio's BatchNorm: at 0 its running statistics never move, at 0.5 they do."""
    stats = {}
    for momentum in (0.0, 0.5):
        config = AdaSmoothRecipe(standard=tiny_bases[0], robust=tiny_bases[1], policy=tiny_policy(), epochs=1,
                                 batch_size=8, train_subset=16, val_subset=4, iter_min=1, iter_max=1,
                                 ratio_bn_momentum=momentum)
        torch.manual_seed(0)
        train.train_adasmooth(config, tmp_path / f"m{momentum}", progress=False, max_steps=2, calibrate=False)
        state = load_state_dict(tmp_path / f"m{momentum}" / "policy.safetensors")
        stats[momentum] = (state["policy.bn.running_mean"].item(), state["policy.bn.running_var"].item())
    assert stats[0.0] == (0.0, 1.0)
    assert stats[0.5] != (0.0, 1.0)
