"""Backbone references: timm (local checkpoint, Hub cache), RobustBench model_dir, self-describing files."""
import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch

from robust_mix import BackboneConfig, BackboneNotFoundError, load_backbone, save_backbone
from robust_mix.backbones import resolve_input_config
from robust_mix.weights import robustbench_files
from robust_mix.io import save_state_dict

TIMM_ARCH = "resnet10t"
TIMM_KW = {"num_classes": 10, "in_chans": 1}


@pytest.fixture(scope="module")
def timm_model():
    torch.manual_seed(0)
    return timm.create_model(TIMM_ARCH, pretrained=False, **TIMM_KW).eval()


@pytest.fixture
def x():
    return torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_timm_arch_with_local_checkpoint(tmp_path, timm_model, x, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in timm_model.state_dict().items()}}, path)
    else:
        save_state_dict(timm_model.state_dict(), path)
    loaded = load_backbone(BackboneConfig(f"timm/{TIMM_ARCH}", kwargs=TIMM_KW, weights={"file": str(path)}))
    assert not loaded.training
    torch.testing.assert_close(loaded(x), timm_model(x), rtol=0, atol=0)


def test_missing_timm_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "nowhere" / "w.safetensors"
    with pytest.raises(BackboneNotFoundError, match=str(path)):
        load_backbone(BackboneConfig(f"timm/{TIMM_ARCH}", kwargs=TIMM_KW, weights={"file": str(path)}))


def test_checkpoint_for_another_architecture_is_rejected(tmp_path, timm_model):
    path = tmp_path / "w.safetensors"
    save_state_dict({k: v for k, v in list(timm_model.state_dict().items())[:-2]}, path)
    with pytest.raises(ValueError, match="missing tensors"):
        load_backbone(BackboneConfig(f"timm/{TIMM_ARCH}", kwargs=TIMM_KW, weights={"file": str(path)}))


def test_unknown_timm_arch_suggests_names():
    with pytest.raises(ValueError, match="resnet18"):
        load_backbone("timm/resnet18x", pretrained=False)


def test_timm_normalisation_comes_from_its_pretrained_cfg(timm_model):
    config = BackboneConfig(f"timm/{TIMM_ARCH}")
    contract = resolve_input_config(config, timm_model)
    assert contract.mean == tuple(timm_model.pretrained_cfg["mean"])
    assert resolve_input_config(BackboneConfig("x.safetensors"), timm_model).mean is None


def test_self_describing_safetensors_round_trip(tmp_path, timm_model, x):
    path = save_backbone(timm_model, tmp_path / "b.safetensors", f"timm/{TIMM_ARCH}", TIMM_KW)
    torch.testing.assert_close(load_backbone(str(path))(x), timm_model(x), rtol=0, atol=0)


@pytest.mark.parametrize("ref, kwargs, message", [
    (f"timm/{TIMM_ARCH}", {}, r"with kwargs \{\} does not build this model.*tensors of other shapes"),
    ("timm/resnet18", TIMM_KW, r"timm/resnet18 with kwargs .* does not build this model.*missing"),
    ("timm/not_an_arch", TIMM_KW, r"timm has no architecture 'not_an_arch'"),
    (f"timm/{TIMM_ARCH}", {**TIMM_KW, "no_such_argument": 1}, r"cannot build .*no_such_argument"),
    (f"timm/{TIMM_ARCH}", {**TIMM_KW, "dtype": torch.float32}, r"kwargs must be JSON values"),
])
def test_a_file_that_could_never_be_loaded_is_not_written(tmp_path, timm_model, ref, kwargs, message):
    """save_backbone recorded any ref and kwargs: a file of other tensors was written, and refused only on load."""
    path = tmp_path / "b.safetensors"
    with pytest.raises(ValueError, match=message):
        save_backbone(timm_model, path, ref, kwargs)
    assert not path.exists()


def test_plain_safetensors_without_metadata_is_explained(tmp_path, timm_model):
    path = tmp_path / "plain.safetensors"
    save_state_dict(timm_model.state_dict(), path)
    with pytest.raises(ValueError, match="does not say which architecture"):
        load_backbone(str(path))


@pytest.mark.parametrize("record, message", [
    ("{not json", "metadata is not JSON"), ("[1, 2]", "metadata must be"), ('{"kwargs": {}}', "metadata must be"),
    ('{"ref": 5}', "metadata must be"), ('{"ref": "other.safetensors"}', "metadata must be"),
    (f'{{"ref": "timm/{TIMM_ARCH}", "kwargs": [1]}}', "'kwargs' of its 'robust_mix.backbone' metadata must be"),
])
def test_a_malformed_architecture_record_names_the_file(tmp_path, timm_model, record, message):
    """A file's architecture record that is not ``{"ref": ..., "kwargs": {...}}`` is a ValueError naming the file
    (it was a bare JSONDecodeError, KeyError, TypeError or AttributeError)."""
    path = tmp_path / "odd.safetensors"
    save_state_dict(timm_model.state_dict(), path, metadata={"robust_mix.backbone": record})
    with pytest.raises(ValueError, match=f"odd.safetensors: .*{message}") as err:
        load_backbone(str(path))
    assert type(err.value) is ValueError


def test_truncated_safetensors_is_explained(tmp_path, timm_model):
    path = save_backbone(timm_model, tmp_path / "b.safetensors", f"timm/{TIMM_ARCH}", TIMM_KW)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_backbone(str(path))


def test_unknown_reference_scheme():
    with pytest.raises(ValueError, match="unknown backbone reference"):
        load_backbone("torchhub/resnet18")


# -- timm through a pre-populated Hugging Face cache, offline --------------------------------------
def test_timm_pretrained_from_offline_hub_cache(tmp_path, timm_model):
    """timm's own download path resolves the weights from the Hub cache with HF_HUB_OFFLINE=1."""
    tag = "c3_in1k"
    hub_id = timm.models.get_pretrained_cfg(f"{TIMM_ARCH}.{tag}").hf_hub_id
    torch.manual_seed(3)
    reference = timm.create_model(f"{TIMM_ARCH}.{tag}", pretrained=False).eval()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / f"models--{hub_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    save_state_dict(reference.state_dict(), snapshot / "model.safetensors")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    torch.save(reference(torch.ones(1, 3, 64, 64)), tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import torch, robust_mix
        model = robust_mix.load_backbone("timm/{TIMM_ARCH}.{tag}")
        expected = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True)
        assert torch.equal(model(torch.ones(1, 3, 64, 64)), expected)
        try:
            robust_mix.load_backbone("timm/resnet18.a1_in1k")
        except robust_mix.BackboneNotFoundError as err:
            assert "timm/resnet18.a1_in1k" in str(err) and "HF_HOME" in str(err), err
        else:
            raise AssertionError("a model missing from the cache must fail offline")
        print("ok")
    """)
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


# -- RobustBench --------------------------------------------------------------------------------
RB_REF = "robustbench/cifar10/Linf/Wong2020Fast"


@pytest.fixture(scope="module")
def wong(tmp_path_factory):
    """A randomly initialised Wong2020Fast written into a RobustBench-layout model_dir."""
    model_dir = tmp_path_factory.mktemp("rb_models")
    torch.manual_seed(0)
    reference = load_backbone(RB_REF, pretrained=False).eval()
    [(path, _)] = robustbench_files("cifar10", "Linf", "Wong2020Fast", model_dir)
    assert path == model_dir / "cifar10" / "Linf" / "Wong2020Fast.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": reference.state_dict()}, path)
    return model_dir, reference


def test_robustbench_entry_loads_from_model_dir(wong):
    model_dir, reference = wong
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loaded = load_backbone(RB_REF, model_dir=model_dir)
    torch.testing.assert_close(loaded(x), reference(x), rtol=0, atol=0)


def test_robustbench_missing_file_offline_names_file_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    with pytest.raises(BackboneNotFoundError) as info:
        load_backbone(RB_REF, model_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt") in message
    assert "drive.google.com" in message


def test_robustbench_multi_file_entries_use_m_suffixes(tmp_path):
    files = robustbench_files("cifar100", "Linf", "Bai2023Improving_edm", tmp_path)
    assert [p.name for p, _ in files] == [f"Bai2023Improving_edm.pt_m{i}.pt" for i in range(3)]


def test_robustbench_unknown_name_suggests(tmp_path):
    with pytest.raises(ValueError, match="Wong2020Fast"):
        load_backbone("robustbench/cifar10/Linf/Wong2020Fst", model_dir=tmp_path)
    with pytest.raises(ValueError, match="robustbench/<dataset>/<threat>/<Name>"):
        load_backbone("robustbench/cifar10/Wong2020Fast", model_dir=tmp_path)
