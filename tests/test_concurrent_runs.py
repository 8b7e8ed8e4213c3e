"""Two runs on one state or run folder: the second is refused by name before it reads or writes anything, and
the lock of a run that was killed never blocks a later one."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from robust_mix.io import LOCK_NAME, FolderInUseError, FolderLock

ROOT = Path(__file__).resolve().parents[1]
_HOLDER = ("import sys; from robust_mix.io import FolderLock; held = FolderLock(sys.argv[1]).acquire(); "
           "print('held', flush=True); sys.stdin.read()")


@contextlib.contextmanager
def held_elsewhere(folder: Path) -> Iterator[subprocess.Popen]:
    """Another process holding ``folder``'s lock (a run that is still running) until the block ends."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, env=env)
    try:
        assert process.stdout.readline().strip() == b"held"
        yield process
    finally:
        process.kill()
        process.wait()


def _benchmark_args():
    from test_benchmark import EPS, FAST, fmnist

    x, y = fmnist(2)
    return dict(images=x, labels=y, eps=EPS, batch_size=2, attack="apgd-ce", options=FAST, device="cpu")


def test_a_second_benchmark_on_a_state_folder_in_use_is_refused_and_a_killed_runs_lock_does_not_block(tmp_path):
    from robust_mix.benchmark import benchmark
    from test_benchmark import tiny_mixed

    state = tmp_path / "state"
    kwargs = _benchmark_args()
    with held_elsewhere(state) as other:
        with pytest.raises(FolderInUseError, match=rf"state folder.*in use by another.*pid {other.pid}.*another "
                                                   "folder"):
            benchmark(tiny_mixed(), state_dir=state, **kwargs)
        assert sorted(p.name for p in state.iterdir()) == [LOCK_NAME]  # neither run.json nor progress
        other.send_signal(signal.SIGKILL)  # the holder dies without cleaning up: its lock file stays
        other.wait()
    assert (state / LOCK_NAME).is_file()
    result = benchmark(tiny_mixed(), state_dir=state, **kwargs)
    assert result.n_examples == 2 and json.loads((state / "run.json").read_text())["seed"] == result.seed
    assert not (state / LOCK_NAME).exists()  # released, and its file removed, when the run returned
    assert benchmark(tiny_mixed(), state_dir=state, **kwargs).resumed_chunks == 1


def test_a_second_certification_on_a_state_folder_in_use_is_refused(tmp_path):
    from robust_mix.certification import certify_model
    from robust_mix.mixing import MixedClassifier
    from conftest import make_tiny

    model = MixedClassifier(make_tiny(0), make_tiny(1, scale=30.0), alpha=0.8)
    x, labels = torch.rand(2, 1, 8, 8), torch.arange(2)
    kwargs = dict(sigma=0.25, n0=4, n=8, batch_size=8, progress=False, radii=[0.0, 0.1])
    with held_elsewhere(tmp_path / "state"):
        with pytest.raises(FolderInUseError, match="state folder"):
            certify_model(model, x, labels, state_dir=tmp_path / "state", **kwargs)
    assert not (tmp_path / "state" / "smoothing_state.safetensors").exists()
    assert certify_model(model, x, labels, state_dir=tmp_path / "state", **kwargs).report["n"] == 8


def test_a_second_training_run_on_a_run_folder_in_use_is_refused_before_writing(tiny_data, tmp_path):
    from robust_mix.train import train_backbone
    from train_fixtures import tiny_backbone_recipe

    config = tiny_backbone_recipe(max_steps_per_epoch=1)
    with held_elsewhere(tmp_path / "run"):
        with pytest.raises(FolderInUseError, match="run folder"):
            train_backbone(config, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_NAME]  # no recipe.json, no train.log
    assert train_backbone(config, tmp_path / "run")["epoch"] == 1


def test_the_cli_says_the_folder_is_in_use_in_one_line(tmp_path, capsys):
    from robust_mix.cli import main

    out = tmp_path / "out"
    with held_elsewhere(out / "state"):
        code = main(["benchmark", "test_benchmark:tiny_mixed", "--n-examples", "2", "--batch-size", "2",
                     "--attack", "apgd-ce", "--n-iter", "8", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "in use by another running robust_mix run" in err and "Traceback" not in err
    assert not (out / "report.json").exists()


def test_a_folder_lock_is_shared_within_a_process_and_its_file_goes_with_the_last_holder(tmp_path):
    first = FolderLock(tmp_path, "state folder").acquire()
    with FolderLock(tmp_path, "output folder"):  # --state-dir the same as --out: one run, one lock
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} on ")
    assert (tmp_path / LOCK_NAME).is_file()  # still held by the first
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()  # a run that ends leaves nothing behind
    with held_elsewhere(tmp_path):
        with pytest.raises(FolderInUseError):
            FolderLock(tmp_path).acquire()


def test_two_commands_writing_reports_into_one_out_folder_are_refused(tmp_path, capsys):
    """Two runs with their own state folders (other settings, --state-dir) but one --out wrote their reports,
    plots and summaries over each other's."""
    from robust_mix.cli import main

    args = ["benchmark", "test_benchmark:tiny_mixed", "--n-examples", "2", "--batch-size", "2", "--attack",
            "apgd-ce", "--n-iter", "8", "--device", "cpu", "--out", str(tmp_path / "out")]
    with held_elsewhere(tmp_path / "out"):
        assert main([*args, "--state-dir", str(tmp_path / "other-state")]) == 2
    assert "output folder) is in use by another running robust_mix run" in capsys.readouterr().err
    assert not (tmp_path / "other-state").exists() and not (tmp_path / "out" / "report.json").exists()
    assert main([*args, "--state-dir", str(tmp_path / "out")]) == 0  # its own folders: one lock, shared
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_left_as_it_was(tmp_path):
    """A state or run folder from someone else whose .robust_mix.lock links to a file of this machine: taking the lock
    truncated that file and wrote 'pid ... on ...' into it."""
    from robust_mix.train.config import Schedule
    from robust_mix.train.run_dir import RunDir
    from robust_mix.validate import InvalidInputError

    precious = tmp_path / "precious.txt"
    precious.write_text("a week of notes\n")
    for folder in (tmp_path / "state", tmp_path / "run"):
        folder.mkdir()
        (folder / LOCK_NAME).symlink_to(precious)
    with pytest.raises(InvalidInputError, match=r"state/\.robust_mix\.lock, the lock file of the state folder, is a "
                                                r"link \(to .*precious\.txt\).*Remove the link"):
        FolderLock(tmp_path / "state", "state folder").acquire()
    with pytest.raises(InvalidInputError, match=r"run/\.robust_mix\.lock, the lock file of the run folder, is a link"):
        RunDir(tmp_path / "run", Schedule(epochs=1, batch_size=4))
    assert precious.read_text() == "a week of notes\n"
    (tmp_path / "state" / LOCK_NAME).unlink()  # the link removed, as the message says: the folder is locked again
    with FolderLock(tmp_path / "state", "state folder"):
        assert (tmp_path / "state" / LOCK_NAME).is_file() and not (tmp_path / "state" / LOCK_NAME).is_symlink()


def test_a_run_folder_whose_log_is_a_link_is_refused_and_its_target_left_as_it_was(tmp_path):
    """train.log is appended to: a run folder from someone else linking it to a file of this machine had the
    run's log lines appended to that file."""
    from robust_mix.train.config import Schedule
    from robust_mix.train.run_dir import LOG, RunDir
    from robust_mix.validate import InvalidInputError

    precious = tmp_path / "precious.txt"
    precious.write_text("a week of notes\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOG).symlink_to(precious)
    run = RunDir(tmp_path / "run", Schedule(epochs=1, batch_size=4))
    try:
        with pytest.raises(InvalidInputError, match=r"run/train\.log is a link \(to .*precious\.txt\).*Remove the link"):
            run.start()
    finally:
        run.close()
    assert precious.read_text() == "a week of notes\n"


def test_a_second_save_into_a_folder_being_saved_into_is_refused_and_the_saved_model_kept(tmp_path, capsys):
    """Two processes saving into one folder (save_pretrained, robust-mix save) each moved their three files into
    place in turn: the folder could end with one save's tensors beside the other's config.json, neither model."""
    from robust_mix import MixedClassifier, build_model
    from robust_mix.cli import main
    from test_hub import fixed_config

    folder = tmp_path / "saved"
    torch.manual_seed(0)
    first = build_model(fixed_config(), pretrained=False)
    first.save_pretrained(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = build_model(fixed_config(), pretrained=False)
    other.alpha = 0.2
    with held_elsewhere(folder) as holder:
        with pytest.raises(FolderInUseError, match=rf"save folder.*in use by another.*pid {holder.pid}"):
            other.save_pretrained(folder)
        assert main(["save", "fmnist-adasmooth", str(folder)]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "Traceback" not in err
        assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name != LOCK_NAME} == before
    assert MixedClassifier.from_pretrained(folder).alpha == first.alpha
    other.save_pretrained(folder)  # the holder is gone (killed): its lock file does not block
    assert MixedClassifier.from_pretrained(folder).alpha == 0.2
    assert not (folder / LOCK_NAME).exists()
