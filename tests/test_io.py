"""Atomic writes and pickle-free loading."""
import os
import pickle

import pytest
import torch

from robust_mix.io import atomic_write_text, load_state_dict, save_state_dict


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "report.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()
    assert [p.name for p in path.parent.iterdir()] == ["report.json"], "no temporary files left"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "w.safetensors"
    save_state_dict({"a": torch.ones(2)}, path)
    with pytest.raises(Exception):
        save_state_dict({"a": object()}, path)
    assert torch.equal(load_state_dict(path)["a"], torch.ones(2))
    assert len(list(tmp_path.iterdir())) == 1


def test_pickled_objects_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"w": Payload()}}, handle)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_state_dict(path)


def test_wrappers_and_prefixes_are_removed(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"module.conv.weight": torch.zeros(1)}}, path)
    assert list(load_state_dict(path)) == ["conv.weight"]
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_state_dict(tmp_path / "missing.pt")


def test_a_torch_file_named_safetensors_is_named_as_such(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"torch\.save.*not safetensors.*never unpickles"):
        load_state_dict(tmp_path / "model.safetensors")
