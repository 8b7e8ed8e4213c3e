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


def test_paths_starting_with_the_home_folder_are_expanded_where_files_are_written_and_read(tmp_path, monkeypatch):
    """``state_dir="~/runs"`` (and ``--out=~/x``, which no shell expands) made a folder literally named '~' in the
    working folder; ``data_dir="~/data"`` was looked for there too."""
    from robust_mix.data import load_dataset
    from robust_mix.validate import InvalidInputTypeError, check_path, check_writable_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert check_writable_dir("~/runs/a") == tmp_path / "home" / "runs" / "a"
    assert (tmp_path / "home" / "runs" / "a").is_dir() and not (tmp_path / "~").exists()
    assert check_path("data_dir", None) is None
    with pytest.raises(InvalidInputTypeError, match=r"data_dir must be a folder path \(str or pathlib.Path\), got 3"):
        load_dataset("fashion-mnist", n_examples=1, data_dir=3)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "home" / "nowhere")):
        load_dataset("cifar10", n_examples=1, data_dir="~/nowhere")


def test_files_written_as_one_set_are_all_new_or_all_old(tmp_path, monkeypatch):
    """A set of files that belong together (a report and its model info, a submission's three files) was written
    one file at a time: a failure or Ctrl-C between two left new files beside old ones of the same set."""
    import os
    import signal

    from robust_mix.io import atomic_write_files

    atomic_write_files(tmp_path, {"a.json": "old a", "b.md": b"old b"})
    (tmp_path / "c.txt").mkdir()
    with pytest.raises(IsADirectoryError, match="move the folder away"):
        atomic_write_files(tmp_path, {"a.json": "new a", "b.md": "new b", "c.txt": "new c"})
    assert [(tmp_path / n).read_text() for n in ("a.json", "b.md")] == ["old a", "old b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.md", "c.txt"]  # no temporary file left

    real_replace = os.replace

    def replace_then_interrupt(src, dst):  # Ctrl-C arrives after the first file is in place
        real_replace(src, dst)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_files(tmp_path, {"a.json": "new a", "b.md": "new b"})
    assert [(tmp_path / n).read_text() for n in ("a.json", "b.md")] == ["new a", "new b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.md", "c.txt"]


def _fail_nth_fsync(monkeypatch, n: int, error: OSError) -> None:
    """``os.fsync`` raises ``error`` on its ``n``-th call (the disk filled up while that file was written)."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == n:
            raise error
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_names_the_file_keeps_the_earlier_one_and_says_what_to_do(tmp_path, monkeypatch):
    """A full disk during a write ended in '[Errno 28] No space left on device', naming no file (the CLI's line
    did not say which of run.json, a chunk, a checkpoint or a report failed) nor that the earlier one was kept."""
    import errno

    from robust_mix.io import atomic_write_files

    path = tmp_path / "checkpoint.pt"
    atomic_write_text(path, "earlier")
    _fail_nth_fsync(monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match=rf"could not write {path} \(No space left on device\): the file written "
                                      r"there before, if any, is unchanged; free some disk space") as caught:
        atomic_write_text(path, "later")
    assert caught.value.errno == errno.ENOSPC
    assert path.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]

    atomic_write_files(tmp_path, {"report.json": "old", "report.md": "old"})
    _fail_nth_fsync(monkeypatch, 2, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match=rf"could not write {tmp_path / 'report.md'} .*none of the set was replaced"):
        atomic_write_files(tmp_path, {"report.json": "new", "report.md": "new"})
    assert [(tmp_path / n).read_text() for n in ("report.json", "report.md")] == ["old", "old"]


def test_a_folder_without_write_permission_is_named_with_what_to_do(tmp_path, monkeypatch):
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=rf"could not write {tmp_path / 'run.json'} \(Permission denied\).*"
                                              "make the folder writable"):
        atomic_write_text(tmp_path / "run.json", "{}")
