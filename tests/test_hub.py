"""Sharing mixed models: save / load / push with generated model cards, all offline."""
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, RepoUrl, constants
from safetensors.torch import load_file, save_file

import robust_mix
from robust_mix import (BackboneConfig, InputConfig, MixedClassifier, ModelConfig, PolicyConfig,
                        ReportedResult, build_model, load_model, save_backbone)
from robust_mix import cli, registry
from robust_mix.cards import render_all, render_card
from robust_mix.protocol import STANDARD_STAGES
from robust_mix.results import BenchmarkResult
from robust_mix.stats import clopper_pearson
from robust_mix.formatting import format_eps
from robust_mix.hub import CARD_NAME, CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, read_config
from robust_mix.validate import InvalidInputError

REPO_ROOT = Path(__file__).resolve().parent.parent
ARCH = "timm/test_byobnet"  # about 0.2 M parameters: builds in milliseconds
LAYERS = ["stages.0", "stages.1"]
def full_report(**changes) -> dict:
    """A complete report.json of 400 examples: 87.5 % clean, 41.25 % under standard AutoAttack."""
    n, clean, robust = 400, 350, 165
    clean_flags, robust_flags = [i < clean for i in range(n)], [i < robust for i in range(n)]
    data = dict(model="tiny-adaptive", dataset="cifar10", threat_model="Linf", eps=8 / 255, n_examples=n,
                attack="standard", seed=0, clean_accuracy=clean / n, robust_accuracy=robust / n,
                suite_accuracy={"autoattack": robust / n}, stage_accuracy={s: robust / n for s in STANDARD_STAGES},
                clean_flags=clean_flags, robust_flags=robust_flags, suite_flags={"autoattack": robust_flags},
                wall_time_s=10.0, examples_per_second=40.0, number_forward_passes=2,
                command="robust-mix benchmark tiny-adaptive --n-examples 400")
    return {**data, **changes}


REPORT = full_report()


def base(ref=ARCH, **kw):
    return BackboneConfig(ref=ref, kwargs={"num_classes": 10}, license="apache-2.0", **kw)


def fixed_config(**kw):
    return ModelConfig(name="tiny-fixed", standard=base("timm/test_efficientnet"),
                       robust=base(input=InputConfig(input_size=(40, 40), interpolation="bicubic")),
                       dataset="cifar10", eps=8 / 255, num_classes=10, alpha=0.7, std_scale=2.0, **kw)


def adaptive_config(standard=ARCH, robust=ARCH):
    policy = PolicyConfig(standard_layers=LAYERS, robust_layers=LAYERS, widths=[8, 16], blocks=1,
                          input_shape=(3, 32, 32), gamma_scale=2.0, gamma_bias=0.5, alpha_range=(0.2, 0.9))
    return ModelConfig(name="tiny-adaptive", standard=base(standard), robust=base(robust), dataset="cifar10",
                       eps=8 / 255, num_classes=10, alpha=None, policy=policy,
                       reported=ReportedResult(clean_acc=90.0, autoattack_acc=40.0, n_examples=100,
                                               source="a made-up paper"),
                       citation="@misc{tiny, title = {Tiny}}")


def adaptive_model():
    torch.manual_seed(0)
    model = build_model(adaptive_config(), pretrained=False)
    with torch.no_grad():  # non-default BN state, so a lost buffer would show
        model.policy.bn.running_mean.fill_(0.3)
        model.policy.bn.running_var.fill_(2.0)
    return model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: a second intra-op thread only adds contention (100x slower on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def assert_same_model(a, b, images):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(v, state_b[k]) for k, v in state_a.items())
    out_a, out_b = a.forward_all(images), b.forward_all(images)
    assert torch.equal(out_a.log_probs, out_b.log_probs)
    assert torch.equal(out_a.alpha, out_b.alpha)


# -- round trips ----------------------------------------------------------------------------------
def test_fixed_alpha_round_trip_is_bit_identical(tmp_path, images):
    torch.manual_seed(0)
    model = build_model(fixed_config(), pretrained=False)
    model.alpha = 0.3  # changed after building: the saved config must follow the model
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME, CARD_NAME}
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["format_version"] == FORMAT_VERSION

    loaded = MixedClassifier.from_pretrained(tmp_path)
    assert_same_model(model, loaded, images)
    assert loaded.alpha == 0.3 and loaded.std_scale == 2.0 and not loaded.training
    assert loaded.robust_input.config.input_size == (40, 40)
    assert loaded.robust_input.config.interpolation == "bicubic"


def test_adaptive_round_trip_needs_no_original_backbone_files(tmp_path, images):
    bases = tmp_path / "bases"
    for i, role in enumerate(("standard", "robust")):
        torch.manual_seed(10 + i)
        save_backbone(robust_mix.load_backbone(base(), pretrained=False), bases / f"{role}.safetensors",
                      ARCH, {"num_classes": 10})
    model = build_model(adaptive_config(str(bases / "standard.safetensors"), str(bases / "robust.safetensors")))
    with torch.no_grad():
        model.policy.bn.running_mean.fill_(0.3)
        model.policy.bn.running_var.fill_(2.0)
    model.policy.alpha_range = (0.3, 0.8)
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(bases)  # rebuilding must not need the weight files the bases came from

    loaded = MixedClassifier.from_pretrained(tmp_path / "saved")
    assert loaded.is_adaptive and loaded.policy.alpha_range == (0.3, 0.8)
    assert_same_model(model, loaded, images)
    assert loaded.forward_all(images).alpha.std() > 0
    config, provenance = read_config(tmp_path / "saved" / CONFIG_NAME)
    assert config.standard.ref == ARCH and config.standard.kwargs == {"num_classes": 10}
    assert provenance["standard"].endswith("standard.safetensors")


def test_fixed_ratio_over_a_policy_survives_and_overrides_apply(tmp_path, images):
    model = adaptive_model()
    model.alpha = 0.6
    model.save_pretrained(tmp_path)
    loaded = MixedClassifier.from_pretrained(tmp_path)
    assert loaded.alpha == 0.6 and loaded.policy is not None
    assert_same_model(model, loaded, images)
    loaded.alpha = None
    model.alpha = None
    assert torch.equal(loaded(images), model(images))
    assert MixedClassifier.from_pretrained(tmp_path, alpha=0.9).alpha == 0.9


def test_model_without_config_needs_one(tmp_path, images):
    torch.manual_seed(0)
    built = build_model(fixed_config(), pretrained=False)
    by_hand = MixedClassifier(built.standard, built.robust, alpha=0.4,
                              standard_input=built.standard_input.config,
                              robust_input=built.robust_input.config)
    with pytest.raises(ValueError, match="has no ModelConfig.*pass config="):
        by_hand.save_pretrained(tmp_path)
    by_hand.save_pretrained(tmp_path, config=fixed_config())
    assert torch.equal(MixedClassifier.from_pretrained(tmp_path)(images), by_hand(images))


# -- the Hub cache, offline -------------------------------------------------------------------------
def populate_cache(hub_cache: Path, repo_id: str, folder: Path, commit: str = "a" * 40) -> None:
    """Lay out a repo as huggingface_hub's cache does: refs/main -> snapshots/<commit>/files."""
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy(folder / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_load_from_hub_cache_offline(tmp_path, monkeypatch, images):
    model = adaptive_model()
    model.save_pretrained(tmp_path / "saved")
    hub_cache = tmp_path / "hf" / "hub"
    populate_cache(hub_cache, "org/tiny-mix", tmp_path / "saved")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these at import time; patch the resolved constants too
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    assert_same_model(model, load_model("hf-hub:org/tiny-mix"), images)
    assert_same_model(model, MixedClassifier.from_pretrained("hf-hub:org/tiny-mix", cache_dir=hub_cache), images)
    with pytest.raises(ValueError, match="could be a local folder or a Hugging Face Hub repo id.*'local-dir:org/tiny-mix'.*'hf-hub:org/tiny-mix'"):
        MixedClassifier.from_pretrained("org/tiny-mix")
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache.*downloads are off"):
        load_model("hf-hub:org/not-there")


def test_a_hub_repo_cached_under_another_case_is_named(tmp_path, monkeypatch):
    """The Hub takes 'Org/Tiny-Mix' for 'org/tiny-mix', its cache does not: offline, the repo was only said to be
    missing from the cache."""
    adaptive_model().save_pretrained(tmp_path / "saved")
    hub_cache = tmp_path / "hf" / "hub"
    populate_cache(hub_cache, "org/tiny-mix", tmp_path / "saved")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match=r"not in the Hugging Face cache .* The cache has hf-hub:org/tiny-mix, "
                                                r"the repo id spelled in another case.*write 'hf-hub:org/tiny-mix'"):
        load_model("hf-hub:Org/Tiny-Mix")
    import timm

    with pytest.raises(RuntimeError, match=r"The cache has hf-hub:org/tiny-mix, the repo id spelled in another case"):
        timm.create_model("hf-hub:Org/Tiny-Mix", pretrained=True)
    with pytest.raises(FileNotFoundError) as err:
        load_model("hf-hub:org/other-mix")
    assert "another case" not in str(err.value)


def test_a_hub_name_may_pin_a_revision_as_timm_s_names_do(tmp_path, monkeypatch, images):
    """``hf-hub:org/name@revision`` (timm's spelling) reads that revision; it was refused as a repo id."""
    model = adaptive_model()
    model.save_pretrained(tmp_path / "saved")
    hub_cache = tmp_path / "hf" / "hub"
    populate_cache(hub_cache, "org/tiny-mix", tmp_path / "saved", commit="b" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    assert_same_model(model, load_model("hf-hub:org/tiny-mix@main"), images)
    pinned = load_model(f"hf-hub:org/tiny-mix@{'b' * 40},alpha_range=[0.3,0.4]")
    assert pinned.policy.alpha_range == (0.3, 0.4)
    assert_same_model(model, MixedClassifier.from_pretrained(f"hf-hub:org/tiny-mix@{'b' * 40}",
                                                             revision="b" * 40), images)
    with pytest.raises(FileNotFoundError, match="tiny-mix@" + "c" * 40):
        load_model(f"hf-hub:org/tiny-mix@{'c' * 40}")  # not in the cache: named with its revision
    with pytest.raises(InvalidInputError, match="pins revision 'main', but revision='v2' was given as well"):
        MixedClassifier.from_pretrained("hf-hub:org/tiny-mix@main", revision="v2")
    with pytest.raises(InvalidInputError, match="names no revision after '@'"):
        load_model("hf-hub:org/tiny-mix@")


def contracted_model():
    """The adaptive model with a declared input contract (3x32x32), which timm's pretrained_cfg states."""
    torch.manual_seed(0)
    config = adaptive_config()
    config.input_shape = (3, 32, 32)
    return build_model(config, pretrained=False)


def test_saved_config_carries_the_keys_timm_reads(tmp_path):
    folder = contracted_model().save_pretrained(tmp_path / "saved", repo_id="org/tiny-mix")
    record = json.loads((folder / CONFIG_NAME).read_text())
    assert record["architecture"] == "robustmix_saved" and record["model_args"] == {}
    assert record["num_classes"] == 10  # a config field, which timm reads as well
    cfg = record["pretrained_cfg"]
    assert (cfg["input_size"], cfg["mean"], cfg["std"], cfg["num_classes"]) == ([3, 32, 32], [0, 0, 0], [1, 1, 1], 10)
    assert cfg["hf_hub_id"] == "org/tiny-mix" and cfg["crop_pct"] == 1.0
    config, _ = read_config(folder / CONFIG_NAME)  # robust_mix reads past timm's keys
    assert config.name == "tiny-adaptive"


def test_timm_rebuilds_a_shared_mix_from_the_hub_cache_offline(tmp_path, monkeypatch, images):
    """After ``import robust_mix``, ``timm.create_model("hf-hub:...")`` reads the folder save_pretrained wrote."""
    import timm

    model = contracted_model()
    model.save_pretrained(tmp_path / "saved", repo_id="org/tiny-mix")
    hub_cache = tmp_path / "hf" / "hub"
    populate_cache(hub_cache, "org/tiny-mix", tmp_path / "saved")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    via_timm = timm.create_model("hf-hub:org/tiny-mix", pretrained=True)
    assert isinstance(via_timm, MixedClassifier) and not via_timm.training
    assert_same_model(model, via_timm, images)
    assert via_timm.pretrained_cfg["hf_hub_id"] == "org/tiny-mix" and via_timm.pretrained_cfg["num_classes"] == 10
    data_config = timm.data.resolve_data_config(model=via_timm)
    assert data_config["mean"] == (0, 0, 0) and data_config["input_size"] == (3, 32, 32)
    changed = timm.create_model("hf-hub:org/tiny-mix", pretrained=True, alpha_range=(0.4, 0.5))
    assert changed.policy.alpha_range == (0.4, 0.5)
    with pytest.raises(ValueError, match=r"hf-hub:org/tiny-mix: pretrained_cfg_overlay changes \['std'\]"):
        timm.create_model("hf-hub:org/tiny-mix", pretrained=True, pretrained_cfg_overlay={"std": (0.5, 0.5, 0.5)})
    with pytest.raises(ValueError, match=r"hf-hub:org/tiny-mix: pretrained_cfg_overlay sets \['file'\]"):
        timm.create_model("hf-hub:org/tiny-mix", pretrained=True, pretrained_cfg_overlay={"file": "x.safetensors"})
    with pytest.raises(ValueError, match="robustmix_saved is the architecture of models saved with save_pretrained"):
        timm.create_model("robustmix_saved")
    with pytest.raises(TypeError, match=r"hf-hub:org/tiny-mix: timm.create_model\(\.\.\., features_only=True\) is not "
                                        "supported by robust_mix's models: a mix returns class scores only"):
        timm.create_model("hf-hub:org/tiny-mix", pretrained=True, features_only=True)
    with pytest.raises(ValueError, match=r"hf-hub:org/tiny-mix takes 3-channel images .*in_chans=1\) cannot change"):
        timm.create_model("hf-hub:org/tiny-mix", pretrained=True, in_chans=1)
    assert_same_model(model, timm.create_model("hf-hub:org/tiny-mix", pretrained=True, in_chans=3), images)


def _offline_cache(tmp_path, monkeypatch) -> Path:
    hub_cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub_cache


def test_hub_repos_that_are_not_robust_mix_saves_say_what_they_are(tmp_path, monkeypatch):
    """A plain timm model's repo given to robust_mix, or a config.json naming robust_mix's architecture without its
    fields, was only "not a robust_mix config; save models with model.save_pretrained(folder)"."""
    import timm
    from safetensors.torch import save_file

    hub_cache = _offline_cache(tmp_path, monkeypatch)
    plain = tmp_path / "plain"
    plain.mkdir()
    resnet = timm.create_model("resnet18", num_classes=7)
    save_file(resnet.state_dict(), plain / WEIGHTS_NAME)
    (plain / CONFIG_NAME).write_text(json.dumps({"architecture": "resnet18", "num_classes": 7,
                                                 "pretrained_cfg": {"input_size": [3, 32, 32]}}))
    populate_cache(hub_cache, "org/plain-resnet", plain)
    read_back = timm.create_model("hf-hub:org/plain-resnet", pretrained=True)  # timm's own repos stay timm's
    assert all(torch.equal(v, read_back.state_dict()[k]) for k, v in resnet.state_dict().items())
    for load in (lambda: load_model("hf-hub:org/plain-resnet"),
                 lambda: MixedClassifier.from_pretrained("hf-hub:org/plain-resnet")):
        with pytest.raises(ValueError, match=r"timm model's config \(architecture 'resnet18'\), not a mix saved by "
                                             r"robust_mix; load it with timm.create_model\('hf-hub:org/plain-resnet', "
                                             r"pretrained=True\).*robust_mix.load_model\('mix', standard=\.\.\."):
            load()

    contracted_model().save_pretrained(tmp_path / "saved", repo_id="org/cut")
    kept = ("architecture", "pretrained_cfg")
    _edit_config(tmp_path / "saved", lambda c: [c.pop(k) for k in list(c) if k not in kept])
    populate_cache(hub_cache, "org/cut", tmp_path / "saved")
    for pretrained in (True, False):
        with pytest.raises(ValueError, match="names robust_mix's architecture 'robustmix_saved' but lacks the fields "
                                             r"of a robust_mix save.*save the model again"):
            timm.create_model("hf-hub:org/cut", pretrained=pretrained)


def test_timm_s_hub_loading_options_and_missing_revisions_are_named(tmp_path, monkeypatch, images):
    """timm 1.0.9 hands ``cache_dir=`` and ``revision=`` on to the model (they were "neither a config field nor an
    option"); a revision or repo missing from the cache was huggingface_hub's bare "cannot find the requested files in
    the local cache", naming neither."""
    import timm

    model = contracted_model()
    model.save_pretrained(tmp_path / "saved", repo_id="org/tiny-mix")
    hub_cache = _offline_cache(tmp_path, monkeypatch)
    populate_cache(hub_cache, "org/tiny-mix", tmp_path / "saved")
    assert_same_model(model, timm.create_model("hf-hub:org/tiny-mix@main", pretrained=True), images)
    assert_same_model(model, timm.create_model("hf-hub:org/tiny-mix@" + "a" * 40, pretrained=True), images)
    unloaded = timm.create_model("hf-hub:org/tiny-mix", pretrained=False)  # the architecture only, as timm's
    assert unloaded.state_dict().keys() == model.state_dict().keys()
    assert not all(torch.equal(v, model.state_dict()[k]) for k, v in unloaded.state_dict().items())
    with pytest.raises(TypeError, match=r"cache_dir=.*does not take cache_dir.*HF_HUB_CACHE.*"
                                        r"from_pretrained\('hf-hub:org/name', cache_dir=\.\.\.\)"):
        timm.create_model("hf-hub:org/tiny-mix", pretrained=True, cache_dir=str(hub_cache))
    with pytest.raises(TypeError, match=r"revision='v2'.*timm takes the revision in the name: "
                                        r"timm.create_model\('hf-hub:org/name@<branch, tag or commit>'"):
        timm.create_model("hf-hub:org/tiny-mix", pretrained=True, revision="v2")
    for load in (lambda: timm.create_model("hf-hub:org/tiny-mix@v2", pretrained=True),
                 lambda: load_model("hf-hub:org/tiny-mix@v2")):
        missing = (r"config.json of hf-hub:org/tiny-mix@v2 is not in the Hugging Face cache .*downloads are off.*"
                   r"The cache has hf-hub:org/tiny-mix at 'main', commit aaaaaaaaaaaa, not at revision 'v2'.*"
                   r"hf download org/tiny-mix --revision v2")
        with pytest.raises((RuntimeError, FileNotFoundError), match=missing):  # timm's, robust_mix's
            load()
    with pytest.raises(RuntimeError, match=r"config.json of hf-hub:org/not-there is not in the Hugging Face cache "
                                           rf"\({hub_cache}\) and downloads are off"):
        timm.create_model("hf-hub:org/not-there", pretrained=True)


@pytest.mark.parametrize("architecture", ["resnet18", None])
def test_timm_names_a_shared_mix_whose_config_names_another_architecture(tmp_path, monkeypatch, architecture):
    """timm builds an ``hf-hub:`` repo with the config's ``architecture``: another one failed inside it
    (``TypeError: ResNet.__init__() got an unexpected keyword argument``), none with ``KeyError: 'architecture'``."""
    import timm

    from robust_mix._compat import UnknownTimmModelError

    folder = contracted_model().save_pretrained(tmp_path / "saved", repo_id="org/tiny-mix")
    _edit_config(folder, lambda c: c.update(architecture=architecture) if architecture else c.pop("architecture"))
    hub_cache = tmp_path / "hf" / "hub"
    populate_cache(hub_cache, "org/tiny-mix", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    has = f"names architecture '{architecture}'" if architecture else "has no 'architecture'"
    with pytest.raises(UnknownTimmModelError, match=rf"config.json of hf-hub:org/tiny-mix is a robust_mix save, which "
                                                    rf"timm builds with the architecture 'robustmix_saved', but it {has}"
                                                    r".*robust_mix.load_model\('hf-hub:org/tiny-mix'\)"):
        timm.create_model("hf-hub:org/tiny-mix", pretrained=True)
    assert load_model("hf-hub:org/tiny-mix").num_classes == 10  # timm's keys are not robust_mix's


def test_timm_checkpoint_path_of_a_shared_mix_is_read_with_safetensors(tmp_path, monkeypatch, images):
    """``timm.create_model("hf-hub:...", checkpoint_path=...)`` of a saved mix reads a save_pretrained folder or its
    model.safetensors and refuses a pickle (timm itself would ``torch.load(weights_only=False)`` it)."""
    import timm

    contracted_model().save_pretrained(tmp_path / "saved", repo_id="org/tiny-mix")
    hub_cache = tmp_path / "hf" / "hub"
    populate_cache(hub_cache, "org/tiny-mix", tmp_path / "saved")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(7)
    trained = build_model(contracted_model().config, pretrained=False)  # other weights, the same architecture
    folder = trained.save_pretrained(tmp_path / "mine")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load (an unpickle) was called"))
    for checkpoint in (folder, folder / WEIGHTS_NAME):
        model = timm.create_model("hf-hub:org/tiny-mix", checkpoint_path=str(checkpoint))
        assert_same_model(trained, model, images)
    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"never read")
    with pytest.raises(ValueError, match=r"other files, such as .pt or .pth, would have to be unpickled"):
        timm.create_model("hf-hub:org/tiny-mix", checkpoint_path=str(pickle))


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder .*no/such/folder"):
        MixedClassifier.from_pretrained(str(tmp_path / "no" / "such" / "folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no config.json \(it is empty\)"):
        MixedClassifier.from_pretrained(tmp_path / "empty")
    for i in range(300):  # a busy folder (the working folder, /tmp) is named by a few of its files, not all
        (tmp_path / "empty" / f"file{i:03d}.txt").touch()
    with pytest.raises(FileNotFoundError, match=r"\(it has file000.txt, .*, file007.txt and 292 more\); save"):
        MixedClassifier.from_pretrained(tmp_path / "empty")


# -- broken files ---------------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    build_model(fixed_config(), pretrained=False).save_pretrained(tmp_path)
    return tmp_path


def test_a_git_lfs_pointer_in_place_of_the_tensors_is_named(saved):
    """A clone of a Hub repo without Git LFS holds a pointer: it was 'not a readable safetensors file (Error while
    deserializing header...); it may be truncated or corrupt'."""
    (saved / WEIGHTS_NAME).write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{'a' * 64}\nsize 9\n")
    with pytest.raises(ValueError, match=r"model.safetensors is a Git LFS pointer .*git lfs pull"):
        MixedClassifier.from_pretrained(saved)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights_are_a_clear_error(saved, damage):
    path = saved / WEIGHTS_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors file.*truncated or corrupt"):
        MixedClassifier.from_pretrained(saved)


def test_missing_and_unexpected_tensors_are_errors(saved):
    state = load_file(saved / WEIGHTS_NAME)
    dropped = sorted(state)[0]
    del state[dropped]
    state["robust.extra"] = torch.zeros(1)
    save_file(state, saved / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=rf"missing tensors \['{dropped}'\], unexpected tensors \['robust.extra'\]"):
        MixedClassifier.from_pretrained(saved)


def test_tensors_of_another_shape_are_an_error(saved):
    state = load_file(saved / WEIGHTS_NAME)
    state["robust.head.fc.weight"] = torch.zeros(3, 3)
    save_file(state, saved / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=r"(?s)does not match the architecture in config.json.*size mismatch for robust.head.fc.weight"):
        MixedClassifier.from_pretrained(saved)


@pytest.mark.parametrize("ref,message", [("timm/no_such_arch", "timm has no architecture 'no_such_arch'"),
                                         ("nowhere/thing", "unknown backbone reference 'nowhere/thing'")])
def test_config_naming_an_unknown_backbone_is_a_clear_error(saved, ref, message):
    data = json.loads((saved / CONFIG_NAME).read_text())
    data["robust"]["ref"] = ref
    (saved / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"cannot rebuild the model described by .*{message}"):
        MixedClassifier.from_pretrained(saved)


def test_config_from_another_tool_or_version_is_rejected(saved):
    path = saved / CONFIG_NAME
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99.*upgrade robust_mix"):
        MixedClassifier.from_pretrained(saved)
    path.write_text(json.dumps({"architectures": ["ResNet"]}))
    with pytest.raises(ValueError, match="not a robust_mix config"):
        MixedClassifier.from_pretrained(saved)


def test_a_folder_under_the_home_folder_saves_where_it_loads_from(tmp_path, monkeypatch, images):
    """save_pretrained("~/x") wrote a folder named '~' in the working folder, while 'local-dir:~/x' reads $HOME/x."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    model = adaptive_model()
    assert model.save_pretrained("~/my-mix") == tmp_path / "home" / "my-mix"
    assert not (tmp_path / "~").exists()
    assert_same_model(model, load_model("local-dir:~/my-mix"), images)


def test_saving_onto_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(ValueError, match="taken is a file.*save_pretrained writes a folder"):
        build_model(fixed_config(), pretrained=False).save_pretrained(tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_weights_and_config_of_different_saves_are_refused(saved):
    """A save interrupted after model.safetensors was replaced leaves the old config.json: not a model."""
    torch.manual_seed(1)
    other = build_model(fixed_config(), pretrained=False)
    other.alpha = 0.2
    other.save_pretrained(saved.parent / "other")
    shutil.copy(saved.parent / "other" / WEIGHTS_NAME, saved / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="from different saves.*save the model again"):
        MixedClassifier.from_pretrained(saved)


def test_saving_again_into_the_same_folder_loads_the_new_model(saved, images):
    torch.manual_seed(2)
    model = build_model(fixed_config(), pretrained=False)
    model.alpha = 0.1
    model.save_pretrained(saved)
    loaded = MixedClassifier.from_pretrained(saved)
    assert loaded.alpha == 0.1
    assert_same_model(model, loaded, images)


@pytest.mark.parametrize("dtype", [torch.int64, torch.float16])
def test_tensors_of_another_dtype_are_an_error(saved, dtype):
    state = load_file(saved / WEIGHTS_NAME)
    state["robust.head.fc.weight"] = state["robust.head.fc.weight"].to(dtype)
    save_file(state, saved / WEIGHTS_NAME, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"robust.head.fc.weight.*{str(dtype).split('.')[-1]}.*float32"):
        MixedClassifier.from_pretrained(saved)


@pytest.mark.parametrize("failing_write", [2, 3])
def test_a_save_that_fails_midway_leaves_the_model_saved_there_before(saved, images, monkeypatch, failing_write):
    """The tensors were written first, then config.json, then the card: a save interrupted after the tensors left
    new tensors beside the old config.json, a folder no load accepted (the old model lost)."""
    before = MixedClassifier.from_pretrained(saved)
    torch.manual_seed(3)
    other = build_model(fixed_config(), pretrained=False)
    other.alpha = 0.2
    calls, fsync = [], os.fsync

    def interrupted(fd):
        calls.append(fd)
        if len(calls) == failing_write:
            raise KeyboardInterrupt  # Ctrl-C while a later file of the save is written
        fsync(fd)

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        other.save_pretrained(saved)
    monkeypatch.setattr(os, "fsync", fsync)
    assert sorted(p.name for p in saved.iterdir()) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]  # no temporary files
    assert_same_model(before, MixedClassifier.from_pretrained(saved), images)


@pytest.mark.parametrize("overrides, failure", [
    ({"widths": [8, 32]}, "size mismatch"), ({"blocks": 2}, "missing tensors"),
    ({"standard_layers": ["stages.0", "stages.2"]}, "size mismatch")])
def test_overrides_that_change_a_saved_model_s_networks_are_named_as_the_cause(tmp_path, overrides, failure):
    """The tensors were said not to match 'the architecture in config.json', which they do: the overrides changed it."""
    folder = adaptive_model().save_pretrained(tmp_path)
    key = next(iter(overrides))
    with pytest.raises(ValueError, match=rf"(?s)does not match the architecture in config.json with the overrides "
                                         rf"\{{'{key}': .*not the networks\): .*{failure}"):
        MixedClassifier.from_pretrained(folder, **overrides)


def _edit_config(folder, change):
    data = json.loads((folder / CONFIG_NAME).read_text())
    change(data)
    (folder / CONFIG_NAME).write_text(json.dumps(data, indent=2))


def _edit_tensors(folder, change):
    """Change the tensors and write them back with the metadata they had (the save id kept)."""
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as handle:
        metadata = handle.metadata()
    state = load_file(folder / WEIGHTS_NAME)
    change(state)
    save_file(state, folder / WEIGHTS_NAME, metadata=metadata)


@pytest.mark.parametrize("damage", [
    lambda f: _edit_config(f, lambda c: c.update(std_scale=5.0)),  # a valid value, edited by hand
    lambda f: _edit_config(f, lambda c: c.pop("alpha")),  # a removed field took its default, 0.5
    lambda f: _edit_config(f, lambda c: (c.pop("alpha"), c["provenance"].pop("save_id"))),  # the id removed too
    lambda f: _edit_config(f, lambda c: c["policy"].update(gamma_bias=-3.0)),
    lambda f: _edit_tensors(f, lambda s: s["policy.bn.running_var"].mul_(4.0)),  # a tensor changed, its id kept
    lambda f: _edit_tensors(f, lambda s: s.update({k: v.double() for k, v in s.items() if v.is_floating_point()})),
], ids=["value-edited", "field-removed", "field-and-id-removed", "policy-field-edited", "tensor-changed",
        "all-tensors-float64"])
def test_a_saved_model_changed_after_saving_is_refused(tmp_path, images, damage):
    """Each of these loaded, as another model than the one saved (the outputs differed), without a word."""
    model = adaptive_model()
    folder = model.save_pretrained(tmp_path / "saved")
    shutil.copytree(folder, tmp_path / "copy")
    damage(tmp_path / "copy")
    with pytest.raises(ValueError, match=r"changed after save_pretrained wrote them.*nothing was loaded.*overrides"):
        MixedClassifier.from_pretrained(tmp_path / "copy")
    with pytest.raises(ValueError, match=r"changed after save_pretrained wrote them"):
        load_model(f"local-dir:{tmp_path / 'copy'},alpha_range=[0.3,0.4]")  # overrides are no way around it


def test_what_is_not_the_model_may_change_and_a_removed_field_is_named(tmp_path, images):
    """The card, the provenance, timm's keys, the file's layout and either file's copy of the save id are not
    what the model computes: changing them is no reason to refuse it. A field removed is named."""
    model = adaptive_model()
    folder = model.save_pretrained(tmp_path)
    (folder / CARD_NAME).write_text("my own card")
    _edit_config(folder, lambda c: (c["provenance"].update(standard="somewhere else"), c.pop("pretrained_cfg")))
    data = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps(dict(reversed(list(data.items())))))  # other order, no indent
    assert_same_model(model, MixedClassifier.from_pretrained(folder), images)
    _edit_tensors(folder, lambda s: None)
    save_file(load_file(folder / WEIGHTS_NAME), folder / WEIGHTS_NAME)  # no metadata: the config's id is checked
    assert_same_model(model, MixedClassifier.from_pretrained(folder), images)
    _edit_config(folder, lambda c: c["provenance"].pop("save_id"))  # neither id: a folder of an older robust_mix
    assert_same_model(model, MixedClassifier.from_pretrained(folder), images)
    folder = model.save_pretrained(tmp_path / "again")
    _edit_config(folder, lambda c: c.pop("alpha"))
    with pytest.raises(ValueError, match=r"config.json lacks the field\(s\) \['alpha'\], which save_pretrained writes"):
        MixedClassifier.from_pretrained(folder)


@pytest.mark.parametrize("instead, message", [
    ("pytorch_model.bin", r"has no model.safetensors \(it has README.md, config.json, pytorch_model.bin\): "
                          r"pytorch_model.bin would have to be unpickled, which robust_mix never does; save"),
    ("model-00001-of-00002.safetensors", r"a saved mix is one model.safetensors, and model-00001-of-00002.safetensors "
                                         r"is not read in its place; save"),
])
def test_weight_files_of_other_layouts_in_place_of_model_safetensors_are_named(saved, monkeypatch, instead, message):
    """The folder was said to lack model.safetensors, without a word on the file it has instead."""
    (saved / WEIGHTS_NAME).rename(saved / instead)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load (an unpickle) was called"))
    with pytest.raises(FileNotFoundError, match=message):
        MixedClassifier.from_pretrained(saved)


@pytest.mark.parametrize("kind", ["folder", "broken-link"])
def test_a_folder_or_a_broken_link_in_place_of_a_file_is_named(saved, kind):
    """Both were reported as '... has no model.safetensors (it has ..., model.safetensors)'."""
    path = saved / WEIGHTS_NAME
    path.unlink()
    if kind == "folder":
        path.mkdir()
        message = r"model.safetensors is a folder, where .* should hold the file model.safetensors"
    else:
        path.symlink_to(saved / "gone" / WEIGHTS_NAME)
        message = r"model.safetensors is a link to .*gone/model.safetensors, which does not exist"
    with pytest.raises(FileNotFoundError, match=message):
        MixedClassifier.from_pretrained(saved)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_an_adaptive_model_in_another_dtype_round_trips(tmp_path, images, dtype):
    """Half precision keeps the ratio's BatchNorm statistics in float32, so the file holds two floating dtypes:
    loading refused it ('tensors of another dtype ... the model has float32'), asking to save it again."""
    model = adaptive_model().to(dtype)
    model.save_pretrained(tmp_path)
    loaded = MixedClassifier.from_pretrained(tmp_path)
    assert loaded.dtype == dtype and loaded.policy.bn.running_mean.dtype == model.policy.bn.running_mean.dtype
    assert_same_model(model, loaded, images.to(dtype))


@pytest.mark.parametrize("part", ["policy.network.linear.weight", "policy.bn.running_var", "robust.head.fc.bias"])
def test_a_model_holding_nan_is_not_saved(fake_hub, tmp_path, part):
    """A fine-tuning that diverged was saved and shared as it was; every output of the loaded model was NaN."""
    model = adaptive_model()
    with torch.no_grad():
        {**dict(model.named_parameters()), **dict(model.named_buffers())}[part].fill_(float("nan"))
    with pytest.raises(InvalidInputError,
                       match=rf"1 of this model's tensors hold NaN: \['{part}'\].*nothing was written"):
        model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
    with pytest.raises(InvalidInputError, match="hold NaN"):
        model.push_to_hub("org/tiny-mix")
    assert fake_hub["create"] == []


@pytest.mark.parametrize("move, off", [
    (lambda m: m.robust.half(), "robust."),
    (lambda m: m.policy.network.to(torch.bfloat16), "policy.network."),
    (lambda m: m.policy.double(), "policy."),
    (lambda m: m.standard.get_submodule("stem").to(torch.float64), "standard.stem."),
], ids=["robust-half", "policy-network-bf16", "policy-float64", "one-layer-float64"])
def test_a_model_with_a_part_in_another_dtype_is_not_saved(fake_hub, tmp_path, images, move, off):
    """Such a model cannot run, and it was saved into a folder that no load accepted ('tensors of another
    dtype ... save it again'): a save that was lost."""
    model = adaptive_model()
    move(model)
    with pytest.raises(InvalidInputError, match=rf"most of this model's tensors are float32, but \d+ are of another "
                                                rf"dtype: \['{off}.*model.to\(torch.float32\).*nothing was written"):
        model.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()
    with pytest.raises(InvalidInputError, match="of another dtype"):
        model.push_to_hub("org/tiny-mix")
    assert fake_hub["create"] == [] and fake_hub["upload"] == []
    model.to(torch.float32)  # the whole model in one dtype: saved and loaded as it is
    assert_same_model(model, MixedClassifier.from_pretrained(model.save_pretrained(tmp_path / "saved")), images)


@pytest.mark.parametrize("name", [*robust_mix.list_models("fmnist-*"), "fmnist-adasmooth,alpha_range=[0.3,0.6]",
                                  "fmnist-robust,alpha=0.4,rob_scale=2.0"])
def test_every_shipped_fmnist_entry_round_trips(tmp_path, name):
    model = load_model(name)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(tmp_path / "saved")
    again = load_model(f"local-dir:{tmp_path / 'saved'}")
    assert_same_model(model, again, x)


# -- push -----------------------------------------------------------------------------------------------
@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """Intercept HfApi at its public methods; uploaded folders are copied for inspection."""
    calls = {"create": [], "upload": []}

    def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None, **kw):
        calls["create"].append({"repo_id": repo_id, "private": private, "exist_ok": exist_ok,
                                "repo_type": repo_type})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kw):
        copy = tmp_path / "uploads" / str(len(calls["upload"]))
        shutil.copytree(folder_path, copy)
        calls["upload"].append({"repo_id": repo_id, "folder": copy, **kw})

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_uploads_the_three_files_with_model_index(fake_hub, tmp_path, images):
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    model = adaptive_model()
    model.push_to_hub("org/tiny-adaptive", private=True, token="hf_fake", benchmark=tmp_path / "report.json")

    assert fake_hub["create"] == [{"repo_id": "org/tiny-adaptive", "private": True, "exist_ok": True,
                                   "repo_type": "model"}]
    (upload,) = fake_hub["upload"]
    folder = upload["folder"]
    assert upload["repo_id"] == "org/tiny-adaptive"
    assert {p.name for p in folder.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME, CARD_NAME}
    card = ModelCard.load(folder / CARD_NAME)  # the Hub's own parser
    assert card.data.library_name == "robust_mix" and card.data.license == "apache-2.0"
    assert {"robustbench", "timm", "adversarial-robustness", "Linf", "eps-8-255", "cifar10"} <= set(card.data.tags)
    metrics = {r.metric_type: r for r in card.data.eval_results}
    assert card.data.model_name == "tiny-adaptive"
    assert metrics["accuracy"].metric_value == 87.5 and metrics["robust_accuracy"].metric_value == 41.25
    robust = metrics["robust_accuracy"]
    assert (robust.dataset_type, robust.dataset_name, robust.dataset_split) == ("uoft-cs/cifar10", "CIFAR-10", "test")
    assert robust.task_type == "image-classification"
    assert robust.metric_args == {"threat_model": "Linf", "eps": 8 / 255, "attack": "AutoAttack",
                                  "n_examples": 400, "partial": "400 of the leaderboard's 10,000 test examples"}
    assert robust.metric_name == "AutoAttack robust accuracy (%) (partial evaluation)"
    assert 'load_model("hf-hub:org/tiny-adaptive")' in card.text
    assert REPORT["command"] in card.text and "8/255" in card.text
    assert json.loads((folder / CONFIG_NAME).read_text())["provenance"]["hub_repo"] == "org/tiny-adaptive"
    assert_same_model(model, MixedClassifier.from_pretrained(folder), images)


def test_push_command_uploads_a_saved_folder(fake_hub, tmp_path):
    adaptive_model().save_pretrained(tmp_path / "saved")
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    assert cli.main(["push", str(tmp_path / "saved"), "org/from-cli", "--benchmark",
                     str(tmp_path / "report.json"), "--private"]) == 0
    assert fake_hub["create"][0]["repo_id"] == "org/from-cli" and fake_hub["create"][0]["private"] is True
    card = ModelCard.load(fake_hub["upload"][0]["folder"] / CARD_NAME)
    assert {r.metric_value for r in card.data.eval_results} == {87.5, 41.25}
    low, high = clopper_pearson(165, 400)
    assert f"| 87.50 | 41.25 | {100 * low:.1f}–{100 * high:.1f} |" in card.text and "clean % (" not in card.text


@pytest.mark.parametrize("unreachable", ["offline", "refused"])
def test_a_hub_that_cannot_be_reached_is_named_and_nothing_is_lost(tmp_path, monkeypatch, capsys, unreachable):
    """A push with no network answered httpx's bare "ConnectError: [Errno 111] Connection refused" (the command
    line printed a traceback); HF_HUB_OFFLINE=1, huggingface_hub's OfflineModeIsEnabled about a repos/create URL."""
    if unreachable == "offline":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        endpoint, why = constants.ENDPOINT, r"HF_HUB_OFFLINE is set"
    else:
        endpoint, why = "http://127.0.0.1:9", r"ConnectError: .*refused"  # nothing listens on the discard port
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    model = adaptive_model()
    with pytest.raises(ConnectionError, match=rf"could not reach the Hugging Face Hub at {endpoint} to push 'org/x' "
                                              rf"\({why}\); nothing was uploaded.*save_pretrained\(FOLDER\).*robust-mix "
                                              r"push local-dir:FOLDER org/x"):
        model.push_to_hub("org/x", token="hf_not_a_real_token")
    model.save_pretrained(tmp_path / "saved")
    assert cli.main(["push", f"local-dir:{tmp_path / 'saved'}", "org/x", "--token", "hf_not_a_real_token"]) != 0
    err = capsys.readouterr().err
    assert f"error: could not reach the Hugging Face Hub at {endpoint}" in err and "Traceback" not in err


def test_push_rejects_a_bad_report_before_touching_the_hub(fake_hub, tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({k: v for k, v in REPORT.items() if k != "eps"}))
    with pytest.raises(ValueError, match=r"missing field\(s\) \['eps'\]"):
        adaptive_model().push_to_hub("org/x", benchmark=tmp_path / "report.json")
    assert fake_hub["create"] == [] and fake_hub["upload"] == []


# -- benchmark reports and cards ---------------------------------------------------------------------
@pytest.mark.parametrize("change,message", [
    ({"clean_accuracy": 87.5}, r"clean_accuracy must be a finite number in \[0, 1\], got 87.5.*percentage"),
    ({"robust_accuracy": "0.4"}, "robust_accuracy must be a number"),
    ({"n_examples": 0}, "n_examples must be a positive integer"),
    ({"eps": "eight"}, "eps must be a number like 0.1 or a fraction like 8/255, got 'eight'"),
    ({"dataset": ""}, "dataset must be a non-empty string"),
    ({"clean_flags": [True] * 3}, "clean_flags must hold one flag per example"),
])
def test_bad_benchmark_reports_name_the_field(change, message):
    """Cards and the Hub read reports through the one reader, BenchmarkResult.from_dict."""
    with pytest.raises(ValueError, match=message):
        BenchmarkResult.from_dict(full_report(**change))


def test_benchmark_report_reading(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(full_report(eps="8/255")))
    result = BenchmarkResult.from_json(tmp_path / "r.json")
    assert result.eps == pytest.approx(8 / 255) and result.command == REPORT["command"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BenchmarkResult.from_json(tmp_path / "bad.json")
    assert format_eps(8 / 255) == "8/255" and format_eps(0.1) == "0.1" and format_eps(None) == "n/a"


def test_cards_state_bases_licences_constants_and_citation():
    adaptive = render_card(adaptive_config())
    for text in ("`timm/test_byobnet`", "apache-2.0", "alpha range `(lo, hi)` | (0.2, 0.9)", "gamma scale | 2.0",
                 "`stages.0, stages.1`", "90.00 % clean and 40.00 % AutoAttack", "a made-up paper",
                 "@misc{tiny", "@article{bai2024improving", 'load_model("tiny-adaptive")'):
        assert text in adaptive, text
    assert "model-index" not in adaptive  # only measured results go to the Hub's metadata
    fixed = render_card(fixed_config())
    assert "fixed ratio `a(x) = 0.7`" in fixed and "resized to 40x40 (bicubic)" in fixed
    assert "alpha range" not in fixed and "Not evaluated yet" in fixed
    with pytest.raises(ValueError, match="no fixed base models"):
        render_card(ModelConfig(name="mix"))


def test_free_text_in_a_card_table_stays_in_its_cell():
    """A licence (free text in config.json) with a line break ended the base-models row of the card's table, and
    HTML in it was rendered as HTML by Markdown viewers and the Hub."""
    odd = dataclasses.replace(base(), license="MIT\n<b>or</b> | Apache")
    card = render_card(ModelConfig(name="tiny-fixed", standard=odd, robust=odd, dataset="cifar10", eps=8 / 255,
                                   num_classes=10, alpha=0.7))
    rows = [line for line in card.splitlines() if line.startswith("| standard (accurate)")]
    assert rows == [rows[0]] and rows[0].endswith("| MIT &lt;b&gt;or&lt;/b&gt; \\| Apache |")
    assert "<b>" not in card.split("\n---\n", 1)[1]  # the body; the YAML front matter quotes it


def test_card_command_renders_registered_entries(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(registry, "_REGISTRY", {"mix": registry._REGISTRY["mix"],
                                                "tiny-adaptive": adaptive_config()})
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "tiny-adaptive.json").write_text(json.dumps(REPORT))
    with caplog.at_level("INFO"):
        assert cli.main(["card", "--all", "--out-dir", str(tmp_path / "cards"),
                         "--reports-dir", str(tmp_path / "reports")]) == 0
    assert sorted(p.name for p in (tmp_path / "cards").iterdir()) == ["tiny-adaptive.md"]
    assert "skipped mix: a composition without fixed base models" in caplog.text
    card = ModelCard.load(tmp_path / "cards" / "tiny-adaptive.md")
    assert {r.metric_value for r in card.data.eval_results} == {87.5, 41.25}
    low, high = clopper_pearson(165, 400)
    assert f"| 87.50 | 41.25 | {100 * low:.1f}–{100 * high:.1f} |" in card.text and "clean % (" not in card.text
    (tmp_path / "reports" / "tiny-adaptive.json").write_text(json.dumps(
        full_report(full_clean_accuracy=0.9, full_clean_examples=10_000)))
    assert cli.main(["card", "--all", "--out-dir", str(tmp_path / "cards"),
                     "--reports-dir", str(tmp_path / "reports")]) == 0
    text = (tmp_path / "cards" / "tiny-adaptive.md").read_text()
    assert "| clean % (10,000 images) | clean % (attacked) | robust % | 95 % interval |" in text
    assert "| 400 | 90.00 | 87.50 | 41.25 |" in text

    assert cli.main(["card", "tiny-adaptive", "--out", str(tmp_path / "one.md")]) == 0
    assert "Not evaluated yet" not in (tmp_path / "one.md").read_text()  # the authors' numbers are shown
    assert cli.main(["card", "mix", "--out", str(tmp_path / "mix.md")]) == 2


def test_committed_cards_are_rendered_not_typed(tmp_path):
    """Every registered entry with fixed bases has a card in model_cards/, identical to a fresh render."""
    written, _ = render_all(tmp_path, REPO_ROOT / "benchmarks" / "reports")
    expected = {p.name: p.read_text() for p in written}
    committed = {p.name: p.read_text() for p in (REPO_ROOT / "model_cards").glob("*.md")}
    assert committed == expected, "model cards are stale: run `robust-mix card --all --out-dir model_cards`"


def _card_table(text: str) -> dict[str, str]:
    """The Evaluation table of a card's body: header -> cell."""
    lines = [line for line in text.split("## Evaluation", 1)[1].splitlines() if line.startswith("| ")]
    header, row = ([c.strip() for c in line.strip("|").split("|")] for line in (lines[0], lines[1]))
    return dict(zip(header, row))


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "model_cards").glob("*.md")), ids=lambda p: p.stem)
def test_shipped_cards_read_with_the_hub_s_own_parsers(path):
    """The Hub refuses a README whose ``license`` is not one of its ids: the paper entries' cards said "not stated by
    the authors or robustbench; see ..." and the ImageNet one "cc-by-nc-4.0 at most (...)". The model-index names
    the Hub's dataset id (``fashion-mnist`` is none) and split, and its numbers are the body's."""
    from huggingface_hub.repocard import metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card, meta = ModelCard.load(path), metadata_load(path)
    config = registry.get_model_config(path.stem)
    assert card.data.license == meta["license"] == ("mit" if config.dataset == "fashion-mnist" else "unknown")
    if config.license.lower() != "mit":  # the prose licence is stated in the card's text instead
        assert f"Licence of this model: {config.license}" in card.text
    if "model-index" not in meta:
        return
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == path.stem
    report = BenchmarkResult.from_json(REPO_ROOT / "benchmarks" / "reports" / f"{path.stem}.json")
    table = _card_table(card.text)
    by_type = {r.metric_type: r for r in results}
    for result in results:
        assert (result.dataset_type, result.dataset_name, result.dataset_split) == (
            "zalando-datasets/fashion_mnist", "Fashion-MNIST", "test")
    assert by_type["accuracy"].metric_value == round(100 * report.clean_accuracy, 2)
    assert f"{by_type['accuracy'].metric_value:.2f}" == table.get("clean % (attacked)", table.get("clean %"))
    assert by_type["robust_accuracy"].metric_value == round(100 * report.robust_accuracy, 2)
    assert f"{by_type['robust_accuracy'].metric_value:.2f}" == table["robust %"]
    args = by_type["robust_accuracy"].metric_args
    assert args["eps"] == report.eps and format_eps(args["eps"]) == table["eps"] == "0.1"
    assert args["threat_model"] == table["threat model"] and args["n_examples"] == int(table["examples"])


@pytest.mark.parametrize("licence, expected", [("MIT", "mit"), ("Apache-2.0", "apache-2.0"),
                                                ("cc-by-nc-4.0 ", "cc-by-nc-4.0"),
                                                ("MIT or Apache-2.0, whichever you like", "unknown"),
                                                ("", "apache-2.0")])  # none: the bases' one licence
def test_a_card_s_licence_is_a_hub_licence_id(licence, expected):
    card = ModelCard(render_card(dataclasses.replace(fixed_config(), license=licence)))
    assert card.data.license == expected
    assert ("Licence of this model: MIT or Apache-2.0" in card.text) == (expected == "unknown")


def test_saving_the_same_model_twice_writes_the_same_files(tmp_path):
    torch.manual_seed(0)
    model = build_model(fixed_config(), pretrained=False)
    first, second = model.save_pretrained(tmp_path / "a"), model.save_pretrained(tmp_path / "b")
    assert (first / CONFIG_NAME).read_bytes() == (second / CONFIG_NAME).read_bytes()  # the save id included
    a, b = load_file(first / WEIGHTS_NAME), load_file(second / WEIGHTS_NAME)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- a report of another model or configuration ------------------------------------------------------
def _report_of(model) -> str:
    """A report whose config fingerprint is the one robust_mix.benchmark records for ``model``."""
    return json.dumps(full_report(config_fingerprint=model.current_config().fingerprint()))


@pytest.mark.parametrize("change, match", [
    ({"model": "tiny-fixed"}, r"report of model 'tiny-fixed', not 'tiny-adaptive'"),
    ({"config_fingerprint": "0123456789abcdef"}, r"evaluated another configuration of 'tiny-adaptive' "
                                                 r"\(config fingerprint 0123456789abcdef"),
])
def test_save_and_push_refuse_a_report_of_another_model_or_configuration(fake_hub, tmp_path, change, match):
    """save_pretrained/push_to_hub only warned, and the card showed another model's numbers as this one's;
    they refuse it as `robust-mix card NAME --benchmark` does, before writing or touching the Hub."""
    (tmp_path / "report.json").write_text(json.dumps(full_report(**change)))
    model = adaptive_model()
    with pytest.raises(robust_mix.validate.InvalidInputError, match=match):
        model.save_pretrained(tmp_path / "saved", benchmark=tmp_path / "report.json")
    assert not (tmp_path / "saved").exists()
    with pytest.raises(robust_mix.validate.InvalidInputError, match=match):
        model.push_to_hub("org/x", benchmark=tmp_path / "report.json")
    assert fake_hub["create"] == [] and fake_hub["upload"] == []
    model.alpha = 0.8  # a report of the adaptive model is none of the model with a fixed ratio
    (tmp_path / "adaptive.json").write_text(_report_of(adaptive_model()))
    with pytest.raises(robust_mix.validate.InvalidInputError, match="another configuration"):
        model.save_pretrained(tmp_path / "saved", benchmark=tmp_path / "adaptive.json")


def test_save_and_push_take_a_report_of_the_model_and_warn_about_one_without_a_fingerprint(fake_hub, tmp_path, caplog):
    model = adaptive_model()
    (tmp_path / "own.json").write_text(_report_of(model))
    with caplog.at_level("WARNING"):
        model.save_pretrained(tmp_path / "saved", benchmark=tmp_path / "own.json")
        model.push_to_hub("org/x", benchmark=tmp_path / "own.json")
    assert "fingerprint" not in caplog.text and len(fake_hub["upload"]) == 1
    loaded = MixedClassifier.from_pretrained(tmp_path / "saved")  # a report of the saved model fits its copy
    (tmp_path / "loaded.json").write_text(_report_of(loaded))
    model.save_pretrained(tmp_path / "again", benchmark=tmp_path / "loaded.json")
    (tmp_path / "old.json").write_text(json.dumps(REPORT))  # from before reports carried a fingerprint
    with caplog.at_level("WARNING"):
        model.save_pretrained(tmp_path / "old", benchmark=tmp_path / "old.json")
    assert "no config_fingerprint" in caplog.text


def test_a_refused_report_leaves_every_card_as_it_was(tmp_path):
    """`card --all` wrote the cards of the entries before a truncated report, then stopped: half the folder new."""
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "fmnist-standard.json").write_text((REPO_ROOT / "benchmarks" / "reports" /
                                                   "fmnist-standard.json").read_text()[:300])
    out = tmp_path / "cards"
    out.mkdir()
    with pytest.raises(robust_mix.validate.InvalidInputError, match="fmnist-standard.json is not valid JSON"):
        render_all(out, reports)
    assert list(out.iterdir()) == []


def test_a_card_is_not_written_over_its_own_report(tmp_path, capsys):
    """`robust-mix card NAME --benchmark run/report.json --out run/report.json` replaced the report with the card."""
    report = tmp_path / "report.json"
    shutil.copy(REPO_ROOT / "benchmarks" / "reports" / "fmnist-robust.json", report)
    before = report.read_text()
    assert cli.main(["card", "fmnist-robust", "--benchmark", str(report), "--out", str(report)]) == 2
    assert "is the --benchmark report itself" in capsys.readouterr().err
    assert report.read_text() == before
