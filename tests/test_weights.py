"""Weight sources (robust_mix.weights, WeightsConfig): one resolver per source, files checked before parsing."""
from __future__ import annotations

import collections
import json

import pytest
import torch
from torch import nn

from robust_mix import BackboneConfig, WeightsConfig, load_backbone
from robust_mix.config import ModelConfig
from robust_mix.convert import load_weights
from robust_mix.io import save_state_dict, sha256_file
from robust_mix.weights import (WeightsNotFoundError, package_file, read_weights, resolve_weights,
                                robustbench_files)


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))


@pytest.fixture
def weight_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_state_dict(small().state_dict(), path)
    return path


# -- the config ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, message", [
    ({}, "exactly one source"),
    ({"file": "a", "hub": "org/x"}, "exactly one source"),
    ({"file": "a", "revision": "main"}, "hub= sources only"),
    ({"file": "a", "index": 1}, "robustbench= sources only"),
    ({"robustbench": "cifar10/Wong2020Fast"}, "<dataset>/<threat>/<Name>"),
    ({"file": "a", "sha256": "abc"}, "64 hex digits"),
])
def test_a_weights_config_says_what_is_wrong(fields, message):
    with pytest.raises(ValueError, match=message):
        WeightsConfig(**fields)


def test_weights_configs_round_trip_through_json():
    config = ModelConfig(name="x", standard=BackboneConfig("timm/resnet10t", weights={"hub": "org/r", "revision": "v1"}),
                         robust=BackboneConfig("robustbench/cifar10/Linf/Wong2020Fast"),
                         weights=WeightsConfig(robustbench="cifar100/Linf/Bai2023Improving_edm", index=2,
                                               format="mixing_net_v4"), alpha=0.5)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and isinstance(again.standard.weights, WeightsConfig)
    assert again.weights.describe() == "robustbench:cifar100/Linf/Bai2023Improving_edm file 2 (mixing_net_v4 layout)"


# -- sources -------------------------------------------------------------------------------------------
def test_file_source_loads_and_checks_sha256(weight_file):
    digest = sha256_file(weight_file)
    module = load_weights(small().apply(lambda m: None), WeightsConfig(file=str(weight_file), sha256=digest))
    assert torch.equal(module[0].weight, small()[0].weight)
    with pytest.raises(ValueError) as err:
        read_weights(WeightsConfig(file=str(weight_file), sha256="0" * 64))
    assert str(weight_file) in str(err.value) and "0" * 64 in str(err.value) and digest in str(err.value)
    assert "fetch it again" in str(err.value)


def test_package_source_reads_shipped_files():
    path = package_file("zoo/weights/fmnist-robust.safetensors")
    assert path.is_file()
    with pytest.raises(WeightsNotFoundError, match="reinstall"):
        package_file("zoo/weights/nothing.safetensors")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=str(tmp_path / "gone.pt")):
        resolve_weights(WeightsConfig(file=str(tmp_path / "gone.pt")))


def test_robustbench_source_uses_the_model_dir_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    weights = WeightsConfig(robustbench="cifar100/Linf/Bai2023Improving_edm", index=1)
    expected = tmp_path / "cifar100" / "Linf" / "Bai2023Improving_edm.pt_m1.pt"
    assert resolve_weights(weights, tmp_path, download=False) == expected
    [_, (_, gid), _] = robustbench_files("cifar100", "Linf", "Bai2023Improving_edm", tmp_path)
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights(weights, tmp_path)
    assert str(expected) in str(err.value) and gid in str(err.value) and "downloads are off" in str(err.value)
    with pytest.raises(ValueError, match="set WeightsConfig.index"):
        resolve_weights(WeightsConfig(robustbench="cifar100/Linf/Bai2023Improving_edm"), tmp_path)
    with pytest.raises(ValueError, match="out of range"):
        resolve_weights(WeightsConfig(robustbench="cifar100/Linf/Bai2023Improving_edm", index=7), tmp_path)


@pytest.mark.parametrize("layout, note", [
    ({"cifar100/Linf/Bai2023Improving_edm.pt_m1.pt/": None}, r"it is a folder: move it away\)"),
    ({"cifar100/Linf/bai2023improving_edm.pt_m1.pt": b"x"},
     r"Linf has 'bai2023improving_edm.pt_m1.pt': the layout's names are case-sensitive, rename it "
     r"'Bai2023Improving_edm.pt_m1.pt'\)"),
    ({"cifar100/linf/": None}, r"cifar100 has 'linf': the layout's names are case-sensitive, rename it 'Linf'\)"),
    ({"CIFAR100/": None}, r"has 'CIFAR100': the layout's names are case-sensitive, rename it 'cifar100'\)"),
    ({"cifar100": b"x"}, r"cifar100 is a file, where the layout has a folder\)"),
    ({"cifar100/Linf/": None, "link": "cifar100/Linf/Bai2023Improving_edm.pt_m1.pt"},
     r"it is a link to .*gone.pt, which does not exist\)"),
], ids=["folder", "file-case", "folder-case", "dataset-case", "file-for-folder", "broken-link"])
def test_what_stands_where_a_robustbench_file_should_be_is_named(tmp_path, monkeypatch, layout, note):
    """Each was reported as a missing file only (a file named in another case is never read on Linux)."""
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    for name, data in layout.items():
        if name == "link":
            (tmp_path / data).symlink_to(tmp_path / "gone.pt")
        elif name.endswith("/"):
            (tmp_path / name).mkdir(parents=True)
        else:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(data)
    weights = WeightsConfig(robustbench="cifar100/Linf/Bai2023Improving_edm", index=1)
    with pytest.raises(WeightsNotFoundError, match=r"Bai2023Improving_edm.pt_m1.pt  <- https://drive.google.com/uc\?"
                                                   rf"id=\S+  \(.*{note}"):
        resolve_weights(weights, tmp_path)


@pytest.mark.parametrize("blocker", ["folder", "file-for-folder"])
def test_a_download_that_could_not_be_written_is_not_started(tmp_path, monkeypatch, blocker):
    import robustbench.utils

    monkeypatch.delenv("ROBUST_MIX_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", lambda *a: pytest.fail("a download was started"))
    if blocker == "folder":
        (tmp_path / "cifar100" / "Linf" / "Bai2023Improving_edm.pt_m1.pt").mkdir(parents=True)
    else:
        (tmp_path / "cifar100").write_text("x")
    with pytest.raises(WeightsNotFoundError, match=r"missing \(a download cannot be written there\)"):
        resolve_weights(WeightsConfig(robustbench="cifar100/Linf/Bai2023Improving_edm", index=1), tmp_path)


def test_hub_source_reads_the_cache_offline(tmp_path, monkeypatch, weight_file):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--weights"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model.safetensors").write_bytes(weight_file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    state = read_weights(WeightsConfig(hub="org/weights"))
    assert torch.equal(state["0.weight"], small()[0].weight)
    with pytest.raises(WeightsNotFoundError, match="not in the Hugging Face cache"):
        read_weights(WeightsConfig(hub="org/other"))


# -- files that are refused, each with the file named and what to do ------------------------------------------
def _html(path):
    path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>")


def _truncated_safetensors(path, source):
    path.write_bytes(source.read_bytes()[:300])


def _truncated_torch(path):
    import io
    buffer = io.BytesIO()
    torch.save(small().state_dict(), buffer)
    path.write_bytes(buffer.getvalue()[:2000])


class Payload:  # an object that only full unpickling could rebuild
    pass


def _pickled(path):
    torch.save({"state_dict": small().state_dict(), "extra": Payload()}, path)


@pytest.mark.parametrize("kind, suffix, message", [
    ("html", ".pt", "is an HTML page, not a checkpoint.*download the file again"),
    ("html", ".safetensors", "is an HTML page, not a checkpoint"),
    ("empty", ".pt", "is empty, not a checkpoint"),
    ("truncated", ".safetensors", "not a readable safetensors file.*truncated or corrupt.*download it again"),
    ("truncated", ".pt", "truncated or corrupt: download it again"),
    ("pickled", ".pt", "holds pickled Python objects.*never unpickles"),
    ("lfs", ".safetensors", "is a Git LFS pointer .*cloned without Git LFS.*git lfs pull"),
    ("lfs", ".pt", "is a Git LFS pointer"),
])
def test_bad_files_are_refused_naming_the_file(tmp_path, weight_file, kind, suffix, message):
    path = tmp_path / f"bad{suffix}"
    {"html": lambda: _html(path), "empty": lambda: path.write_bytes(b""),
     "truncated": lambda: (_truncated_safetensors(path, weight_file) if suffix == ".safetensors"
                           else _truncated_torch(path)),
     "pickled": lambda: _pickled(path),
     "lfs": lambda: path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:"
                                    f"{'0' * 64}\nsize 123456\n")}[kind]()
    with pytest.raises(ValueError, match=message) as err:
        load_backbone(BackboneConfig("timm/resnet10t", kwargs={"num_classes": 10}, weights={"file": str(path)}))
    assert str(path) in str(err.value)


def test_a_good_torch_file_with_plain_containers_still_loads(tmp_path):
    path = tmp_path / "ok.pt"
    state = collections.OrderedDict((f"module.{k}", v) for k, v in small().state_dict().items())
    torch.save({"state_dict": state, "epoch": 3}, path)
    module = load_weights(small(), WeightsConfig(file=str(path)))
    assert torch.equal(module[2].bias, small()[2].bias)


# -- where RobustBench checkpoints go: $ROBUST_MIX_MODEL_DIR, else ./models --------------------------------
@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder nothing can be made or written in (as for a user without write permission; root ignores chmod, so
    the refusal is the operating system's answer, simulated), with downloads on and none allowed to start."""
    import os

    import robustbench.utils

    folder = tmp_path / "read-only"
    folder.mkdir()
    real_mkdir, real_open = os.mkdir, os.open

    def refuse(real):
        def call(path, *args, **kwargs):
            if os.path.abspath(path).startswith(str(folder) + os.sep):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "mkdir", refuse(real_mkdir))
    monkeypatch.setattr(os, "open", refuse(real_open))
    for var in ("ROBUST_MIX_OFFLINE", "HF_HUB_OFFLINE", "ROBUST_MIX_MODEL_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", lambda *a: pytest.fail("a download was started"))
    return folder


EDM = WeightsConfig(robustbench="cifar100/Linf/Bai2023Improving_edm", index=1)


def test_an_unwritable_working_folder_names_robust_mix_model_dir(read_only, monkeypatch):
    """Checkpoints go to ./models by default: a working folder that cannot be written ended in a bare PermissionError
    from mkdir, with no word of $ROBUST_MIX_MODEL_DIR."""
    monkeypatch.chdir(read_only)
    with pytest.raises(WeightsNotFoundError, match=r"(?s)a download cannot be written to models/cifar100/Linf: "
                                                   r"Permission denied.*the default ./models, under the working "
                                                   rf"folder {read_only}: set ROBUST_MIX_MODEL_DIR"):
        resolve_weights(EDM)
    with pytest.raises(WeightsNotFoundError, match="set ROBUST_MIX_MODEL_DIR"):  # a base built by reference, too
        load_backbone("robustbench/cifar10/Linf/Wong2020Fast")


def test_an_unwritable_robust_mix_model_dir_is_named_with_its_value(read_only, monkeypatch):
    monkeypatch.setenv("ROBUST_MIX_MODEL_DIR", str(read_only / "models"))
    with pytest.raises(WeightsNotFoundError, match=rf"\$ROBUST_MIX_MODEL_DIR='{read_only}/models' names: set "
                                                   "ROBUST_MIX_MODEL_DIR"):
        resolve_weights(EDM)
    with pytest.raises(WeightsNotFoundError, match="the model_dir given: set ROBUST_MIX_MODEL_DIR"):
        resolve_weights(EDM, read_only / "elsewhere")


def test_robust_mix_model_dir_a_file_is_named(tmp_path, monkeypatch):
    import robustbench.utils

    monkeypatch.delenv("ROBUST_MIX_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", lambda *a: pytest.fail("a download was started"))
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("ROBUST_MIX_MODEL_DIR", str(tmp_path / "f"))
    with pytest.raises(WeightsNotFoundError, match=r"(?s)f is a file, where the layout has a folder.*"
                                                   r"\$ROBUST_MIX_MODEL_DIR='.*f' names"):
        resolve_weights(EDM)


def test_robust_mix_model_dir_expands_home_and_empty_is_unset(tmp_path, monkeypatch):
    """``~/models`` was a folder named ``~`` in the working folder; an empty value was the working folder itself."""
    from robust_mix.weights import default_model_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ROBUST_MIX_MODEL_DIR", "~/models")
    assert default_model_dir() == tmp_path / "models"
    monkeypatch.setenv("ROBUST_MIX_OFFLINE", "1")
    expected = tmp_path / "models" / "cifar100" / "Linf" / "Bai2023Improving_edm.pt_m1.pt"
    assert resolve_weights(EDM, download=False) == expected
    for empty in ("", "  "):
        monkeypatch.setenv("ROBUST_MIX_MODEL_DIR", empty)
        assert str(default_model_dir()) == "models"


@pytest.mark.parametrize("var", ["ROBUST_MIX_OFFLINE", "HF_HUB_OFFLINE"])
@pytest.mark.parametrize("value, offline", [("1", True), ("TRUE", True), (" on ", True), ("0", False), ("off", False),
                                            ("", False), ("2", None), ("y", None), ("offline", None)])
def test_the_offline_switches_take_a_yes_or_a_no(monkeypatch, var, value, offline):
    """``ROBUST_MIX_OFFLINE=2`` (or ``=y``) was read as "online" without a word: a download was tried."""
    from robust_mix.validate import InvalidInputError
    from robust_mix.weights import is_offline

    for name in ("ROBUST_MIX_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(var, value)
    if offline is None:
        with pytest.raises(InvalidInputError, match=rf"environment variable {var}='{value}' is neither a yes .* set "
                                                    "it to one of them"):
            is_offline()
    else:
        assert is_offline() is offline
