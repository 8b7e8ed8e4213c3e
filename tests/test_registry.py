"""The registry: entries as data, wildcards, overrides, the one builder, and clear errors."""
import dataclasses
import json

import pytest
import torch

import robust_mix
from robust_mix import (AdaptiveAlpha, BackboneConfig, ModelConfig, NutsConfig, PolicyConfig,
                        get_model_config, list_models, load_model, register_model, save_backbone)
from robust_mix.io import save_state_dict
from robust_mix.validate import InvalidInputError


@pytest.fixture
def backbone_files(tmp_path):
    import timm

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=1)
        paths.append(str(save_backbone(model, tmp_path / f"b{seed}.safetensors", "timm/resnet10t",
                                       {"num_classes": 10, "in_chans": 1})))
    return paths


def test_list_models_with_wildcards(scratch_registry):
    register_model(ModelConfig(name="toy-a", aliases=["Toy2024A"]))
    register_model(ModelConfig(name="toy-b"))
    assert list_models("toy-*") == ["toy-a", "toy-b"]
    assert list_models("TOY-A") == ["toy-a"]
    assert "Toy2024A" in list_models("toy*", include_aliases=True)
    assert "mix" in list_models()
    assert robust_mix.is_model("Toy2024A") and not robust_mix.is_model("toy-c")


def test_register_as_decorator_and_duplicates(scratch_registry):
    @register_model
    def toy():
        return ModelConfig(name="toy-deco")

    assert get_model_config("toy-deco").name == "toy-deco"
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelConfig(name="toy-deco"))


def test_the_registry_keeps_a_copy_of_a_registered_config(scratch_registry):
    """Changing a config after registering it does not change the entry (the registry held the caller's object)."""
    config = ModelConfig(name="toy-kept", alpha=0.7, aliases=["toy-kept-alias"])
    register_model(config)
    config.alpha = 0.2
    config.aliases.append("toy-later")
    assert get_model_config("toy-kept").alpha == 0.7
    assert get_model_config("toy-kept").aliases == ["toy-kept-alias"]


@pytest.mark.parametrize("name, message", [
    ("", "must be a non-empty string"), ("  ", "must be a non-empty string"), (None, "must be a non-empty string"),
    (" toy-padded", "begins or ends with whitespace"), ("hf-hub:toy", r"holds \[':'\]"),
    ("toy,alpha=1", r"holds \[',']"),
])
def test_names_no_name_could_reach_are_refused(scratch_registry, name, message):
    with pytest.raises(InvalidInputError, match=message):
        register_model(ModelConfig(name=name))
    with pytest.raises(InvalidInputError, match=message):
        register_model(ModelConfig(name="toy-ok", aliases=[name]))
    assert not robust_mix.is_model("toy-ok")  # nothing half-registered


def test_unknown_name_lists_closest_matches():
    with pytest.raises(KeyError, match=r"did you mean \['mix'\]"):
        get_model_config("mixx")


def test_get_model_config_returns_a_copy():
    config = get_model_config("mix")
    config.alpha = 0.1
    assert get_model_config("mix").alpha == 0.5


def test_compose_any_pair(backbone_files):
    std, rob = backbone_files
    model = load_model("mix", standard=std, robust=rob, alpha=0.9)
    assert isinstance(model, robust_mix.MixedClassifier) and model.alpha == 0.9
    x = torch.rand(3, 1, 28, 28)
    s, r = robust_mix.load_backbone(std), robust_mix.load_backbone(rob)
    expected = torch.log(0.1 * s(x).softmax(1) + 0.9 * r(x).softmax(1))
    torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-5)
    assert model.config.standard.ref == std and model.config.alpha == 0.9


def test_mix_without_bases_explains_what_to_pass():
    with pytest.raises(ValueError, match="standard='timm/"):
        load_model("mix")


def test_unknown_override_is_rejected(backbone_files):
    with pytest.raises(TypeError, match="unknown override 'alhpa'"):
        load_model("mix", standard=backbone_files[0], robust=backbone_files[1], alhpa=0.3)
    with pytest.raises(TypeError, match="adaptive models only"):
        load_model("mix", standard=backbone_files[0], robust=backbone_files[1], alpha_range=(0, 1))


def test_config_json_round_trip(tmp_path):
    config = ModelConfig(
        name="toy", standard=BackboneConfig("timm/resnet10t", kwargs={"num_classes": 10}),
        robust=BackboneConfig("robustbench/cifar10/Linf/Wong2020Fast"), alpha=None,
        policy=PolicyConfig(["stage1"], ["stage1"], alpha_range=(0.8, 0.99)),
        nuts=NutsConfig(0.6, 3.5, -2.1), reported=robust_mix.ReportedResult(85.2, 38.7, 10000))
    config.save(tmp_path / "config.json")
    loaded = ModelConfig.load(tmp_path / "config.json")
    assert loaded == config and isinstance(loaded.policy.alpha_range, tuple)
    bad = config.to_dict() | {"alpha_rnage": 0.5}
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict(bad)


def tiny_adaptive_config(std, rob, **kw):
    return ModelConfig(
        name="toy-adaptive", standard=BackboneConfig(std), robust=BackboneConfig(rob), alpha=None,
        num_classes=10, policy=PolicyConfig(["layer1", "layer2"], ["layer1", "layer2"], widths=[16, 32], blocks=1,
                                            input_shape=(1, 28, 28), gamma_scale=2.0, gamma_bias=1.0,
                                            alpha_range=(0.6, 0.95)), **kw)


def test_adaptive_entry_builds_and_loads_policy_weights(tmp_path, backbone_files, scratch_registry):
    config = tiny_adaptive_config(*backbone_files)
    model = robust_mix.build_model(config)
    assert isinstance(model.alpha, AdaptiveAlpha) and not model.training
    torch.manual_seed(5)
    for p in model.policy.parameters():
        p.data.normal_(0, 0.05)
    model.policy.bn.running_var.fill_(1e-4)
    policy_state = {k: v for k, v in model.state_dict().items() if k.startswith("policy.")}
    save_state_dict(policy_state, tmp_path / "policy.safetensors")
    register_model(dataclasses.replace(config, weights={"file": str(tmp_path / "policy.safetensors")}))
    loaded = load_model("toy-adaptive")
    x = torch.rand(4, 1, 28, 28)
    out, alpha = loaded(x, return_alpha=True)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    assert torch.all((alpha >= 0.6) & (alpha <= 0.95)) and alpha.std() > 0
    narrow = load_model("toy-adaptive", alpha_range=(0.9, 0.95))
    assert torch.all(narrow(x, return_alpha=True)[1] >= 0.9)
    fixed = load_model("toy-adaptive", alpha=0.7)
    assert fixed.alpha == 0.7 and fixed.policy is not None


def test_policy_weights_that_do_not_match_are_rejected(tmp_path, backbone_files, scratch_registry):
    save_state_dict({"policy.network.linear.weight": torch.zeros(1, 3)}, tmp_path / "bad.safetensors")
    config = tiny_adaptive_config(*backbone_files, weights={"file": str(tmp_path / "bad.safetensors")})
    with pytest.raises(ValueError, match="does not match the model.s adaptive policy: missing"):
        robust_mix.build_model(config)


def test_nuts_entry_uses_output_maps(backbone_files):
    config = ModelConfig(name="toy-nuts", standard=BackboneConfig(backbone_files[0]),
                         robust=BackboneConfig(backbone_files[1]), alpha=0.9,
                         nuts=NutsConfig(scale=1.0, power=2.0, bias=-0.5))
    model = robust_mix.build_model(config)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
        g, h = model.base_logits(x)
    onehot = torch.nn.functional.one_hot(g.argmax(1), 10).float()
    robust_probs = model.robust_map(h).exp()
    torch.testing.assert_close(out.exp(), 0.1 * onehot + 0.9 * robust_probs, atol=1e-6, rtol=1e-5)


def test_config_fingerprint_follows_what_the_model_computes():
    config = get_model_config("fmnist-robust")
    assert config.fingerprint() == get_model_config("fmnist-robust").fingerprint()
    texts = dataclasses.replace(config, name="renamed", description="other words", reported=None, aliases=["x"])
    assert texts.fingerprint() == config.fingerprint()  # documentation does not change the model
    assert dataclasses.replace(config, alpha=0.9).fingerprint() != config.fingerprint()
    model = load_model("fmnist-adasmooth")
    registered = get_model_config("fmnist-adasmooth").fingerprint()
    assert model.current_config().fingerprint() == registered
    model.alpha = 0.9
    assert model.current_config().fingerprint() != registered
    model.alpha = None
    model.policy.alpha_range = (0.5, 1.0)
    assert model.current_config().fingerprint() != registered


def test_unknown_name_in_another_case_suggests_the_registered_one():
    with pytest.raises(KeyError, match=r"did you mean \['mix'\]"):
        get_model_config("MIX")


def test_config_missing_a_required_field_names_it():
    with pytest.raises(ValueError, match=r"ModelConfig is missing required field\(s\) \['name'\]"):
        ModelConfig.from_dict({"alpha": 0.5})


def test_config_files_that_are_not_model_configs_name_the_file(tmp_path):
    (tmp_path / "cut.json").write_text('{"name": ')
    with pytest.raises(ValueError, match="cut.json is not valid JSON"):
        ModelConfig.load(tmp_path / "cut.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="list.json.*expected a JSON object"):
        ModelConfig.load(tmp_path / "list.json")
    saved = load_model("fmnist-robust").save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match="config.json of a folder written by save_pretrained.*local-dir:"):
        ModelConfig.load(saved / "config.json")
