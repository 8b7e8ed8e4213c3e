"""``robust-mix train`` (robust_mix/cli/train.py): resolving a recipe from the command line, bad input, plots."""
from __future__ import annotations

import io
import json

import pytest
import torch

from robust_mix.cli import main
from train_fixtures import TINY


def printed_config(capsys, *args: str) -> dict:
    assert main(["train", *args, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_preset_flags_and_settings_apply_in_order(capsys):
    config = printed_config(capsys, "adasmooth", "--standard", "a.safetensors", "--robust", "robustbench/cifar100/Linf/X",
                            "--preset", "paper", "--precision", "bf16", "--set", "eps=0.0314",
                            'policy.standard_layers=["s1"]', 'policy.robust_layers=["r1"]', "lr=1e-4")
    assert config["standard"] == "a.safetensors" and config["robust"].startswith("robustbench/")
    assert config["n_targets"] == 9 and config["iter_df"] == 75.0 and config["accumulation"] == 4
    assert config["precision"] == "bf16" and config["lr"] == 1e-4  # flags and --set win over the preset


def test_repeated_set_options_all_apply(capsys):
    config = printed_config(capsys, "fmnist-standard", "--set", "epochs=2", "--set", "lr=0.01", "seed=3")
    assert (config["epochs"], config["lr"], config["seed"]) == (2, 0.01, 3)  # the first --set is not dropped


@pytest.mark.parametrize("args, field, value, warning", [
    (["fmnist-standard", "--set", "lr=1e-3", "--set", "lr=1e-4"], "lr", 1e-4,
     "lr=0.0001 given again: it replaces the earlier --set lr=0.001"),
    (["fmnist-adasmooth", "--set", 'policy={"widths":[8],"standard_layers":["a"],"robust_layers":["b"]}',
      "policy.widths=[4]"], "policy", {"widths": [4]},
     "policy.widths=[4] given again: it replaces the earlier --set policy="),
    (["fmnist-adasmooth", "--precision", "bf16", "--set", "precision=fp16"], "precision", "fp16",
     'precision="fp16" given again: it replaces the earlier --precision'),
])
def test_a_field_set_again_takes_the_later_value_with_a_warning(capsys, caplog, args, field, value, warning):
    config = printed_config(capsys, *args)
    if isinstance(value, dict):
        assert all(config[field][k] == v for k, v in value.items())
    else:
        assert config[field] == value
    assert any(warning in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


@pytest.mark.parametrize("args, message", [

    (["fmnist-standard", "--set", "epochs=-1"], "epochs must be a positive integer (>= 1), got -1"),
    (["fmnist-standard", "--set", "max_steps_per_epoch=0"], "max_steps_per_epoch must be a positive integer"),
    (["fmnist-adasmooth", "--preset", "fast"], "unknown preset 'fast' for AdaSmoothRecipe"),
    (["fmnist-standard", "--set", "epoch=3"], "unknown setting 'epoch'"),
    (["fmnist-standard", "--standard", "a.safetensors"], "unknown setting 'standard'"),
    (["fmnist-standrd"], "unknown recipe 'fmnist-standrd'"),
    (["adasmooth"], "AdaSmoothRecipe: standard must be a base reference"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(capsys, tmp_path, args, message):
    assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not any((tmp_path / "run").glob("*"))  # refused before writing anything


def test_train_then_plot_the_history(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "fmnist-standard", "--out", str(out), "--no-progress", "--set", "epochs=2",
            "max_steps_per_epoch=1", "batch_size=16", "val_subset=16", f"arch_kwargs={json.dumps(TINY)}"]
    assert main([*args, "--plot"]) == 0
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"
    (out / "history.png").unlink()
    assert main(["train", "fmnist-standard", "--out", str(out), "--plot-only"]) == 0
    assert (out / "history.png").is_file()
    assert main(["train", "fmnist-standard", "--out", str(tmp_path / "empty"), "--plot-only"]) == 2
    assert "no history to plot" in capsys.readouterr().err


def test_plot_only_does_not_title_a_folder_with_the_recipe_typed(tiny_data, tmp_path, monkeypatch):
    from robust_mix.cli import train as cli_train

    out = tmp_path / "run"
    assert main(["train", "fmnist-standard", "--out", str(out), "--no-progress", "--set", "epochs=1",
                 "max_steps_per_epoch=1", "batch_size=16", "val_subset=16", f"arch_kwargs={json.dumps(TINY)}"]) == 0
    titles = []
    monkeypatch.setattr(cli_train, "plot_history", lambda history, title: titles.append(title) or b"\x89PNG")
    # the folder was made by fmnist-standard; the name typed with --plot-only is not evidence of that
    assert main(["train", "fmnist-robust", "--out", str(out), "--plot-only"]) == 0
    assert titles and "fmnist-robust" not in titles[0] and str(out) in titles[0]


@pytest.mark.parametrize("option, value, message", [("--workers", "-1", "integer >= 0, got -1"),
                                                    ("--checkpoint-every", "0", "positive integer (>= 1), got 0")])
def test_run_options_are_checked_by_the_parser(capsys, tmp_path, option, value, message):
    assert main(["train", "fmnist-standard", "--out", str(tmp_path / "run"), option, value]) == 2
    assert message in capsys.readouterr().err


class _Payload:  # an object a pickle would construct: a checkpoint must never hold one
    def __reduce__(self):
        return (print, ("PAYLOAD-RAN",))


@pytest.mark.parametrize("damage, message", [
    (lambda good: good[: len(good) // 2], "is not a readable checkpoint"),
    (lambda good: b"garbage", "is not a readable checkpoint"),
    (lambda good: _torch_bytes({"model": _Payload()}), "holds objects other than tensors"),
    (lambda good: _torch_bytes({"model": {}}), "is not a training checkpoint (it lacks ['optimizer'"),
    (lambda good: _torch_bytes({"model": {"w": torch.zeros(1)}, "optimizer": {}, "scheduler": {}, "epoch": 0,
                                "best": None}), "does not fit this run's model or optimizer"),
])
def test_a_damaged_checkpoint_is_named_and_kept(tiny_data, tmp_path, capsys, damage, message):
    out = tmp_path / "run"
    args = ["train", "fmnist-standard", "--out", str(out), "--no-progress", "--set", "epochs=2",
            "max_steps_per_epoch=1", "batch_size=16", "val_subset=16", f"arch_kwargs={json.dumps(TINY)}"]
    assert main(args) == 0
    damaged = damage((out / "checkpoint.pt").read_bytes())
    (out / "checkpoint.pt").write_bytes(damaged)
    capsys.readouterr()
    assert main(args) == 2
    printed, err = capsys.readouterr()
    assert f"{out / 'checkpoint.pt'}" in err and message in err and "move it away" in err
    assert "PAYLOAD-RAN" not in printed + err and "weights_only" not in err and "Traceback" not in err
    assert (out / "checkpoint.pt").read_bytes() == damaged  # nothing overwritten


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("line", ['{"epoch": 1, "train_loss"', "[1, 2]", '{"loss": 0.5}'])
def test_a_damaged_history_is_named_and_a_rerun_repairs_it(tiny_data, tmp_path, capsys, line):
    out = tmp_path / "run"
    args = ["train", "fmnist-standard", "--out", str(out), "--no-progress", "--set", "epochs=1",
            "max_steps_per_epoch=1", "batch_size=16", "val_subset=16", f"arch_kwargs={json.dumps(TINY)}"]
    assert main(args) == 0
    good = (out / "history.jsonl").read_text()
    (out / "history.jsonl").write_text(good + line + "\n")
    capsys.readouterr()
    assert main(["train", "fmnist-standard", "--out", str(out), "--plot-only"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'history.jsonl'}, line 2, is not" in err and "Traceback" not in err
    assert main(args) == 0  # the finished run's checkpoint holds the history: rerunning rewrites the file
    assert (out / "history.jsonl").read_text() == good
    assert main(["train", "fmnist-standard", "--out", str(out), "--plot-only"]) == 0


def test_a_folder_whose_results_cannot_be_matched_to_the_recipe_is_refused(tiny_data, tmp_path, capsys):
    from robust_mix.train import MixedNutsRecipe, save_recipe

    args = ["--no-progress", "--set", "epochs=1", "max_steps_per_epoch=1", "batch_size=16", "val_subset=16",
            f"arch_kwargs={json.dumps(TINY)}"]
    other = tmp_path / "nuts"  # a MixedNUTS run's folder: its results are no checkpoint of a standard run
    other.mkdir()
    save_recipe(MixedNutsRecipe(robust="r.safetensors", eps=0.1), other / "recipe.json")
    (other / "nuts.json").write_text('{"alpha": 0.5}\n')
    lost = tmp_path / "lost"  # a checkpoint whose recipe.json is gone
    lost.mkdir()
    (lost / "checkpoint.pt").write_bytes(b"PK")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "recipe.json").write_text('{"epochs": ')
    (damaged / "model.safetensors").write_bytes(b"x")
    for out, message in ((other, "holds a recipe that is not a BackboneRecipe"), (lost, "but no recipe.json"),
                         (damaged, "recipe.json is not valid JSON")):
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        assert main(["train", "fmnist-standard", "--out", str(out), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "nothing was written" in err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    crowded = tmp_path / "crowded"  # e.g. --out . in a project folder: not a run folder
    crowded.mkdir()
    for i in range(8):
        (crowded / f"notes{i}.txt").write_text("mine")
    assert main(["train", "fmnist-standard", "--out", str(crowded), *args]) == 2
    err = capsys.readouterr().err
    assert "notes0.txt, notes1.txt, notes2.txt, notes3.txt, notes4.txt and 3 more but no recipe.json" in err
    assert sorted(p.name for p in crowded.iterdir()) == [f"notes{i}.txt" for i in range(8)]
    fresh = tmp_path / "fresh"  # bookkeeping only (a run killed before its first checkpoint): it starts
    fresh.mkdir()
    save_recipe(MixedNutsRecipe(robust="r.safetensors", eps=0.1), fresh / "recipe.json")
    (fresh / "train.log").write_text("")
    assert main(["train", "fmnist-standard", "--out", str(fresh), *args]) == 0


@pytest.mark.parametrize("kwargs, message", [({"bogus_kw": 1}, "unexpected keyword argument 'bogus_kw'"),
                                             ({"num_classes": "ten"}, "not supported between")])
def test_architecture_arguments_timm_refuses_are_named(tiny_data, tmp_path, capsys, kwargs, message):
    out = tmp_path / "run"
    assert main(["train", "fmnist-standard", "--out", str(out), "--set", f"arch_kwargs={json.dumps(kwargs)}",
                 "epochs=1", "val_subset=16"]) == 2
    err = capsys.readouterr().err
    assert "arch_kwargs=" in err and "timm cannot build timm/resnet18" in err and message in err
    assert not any(out.glob("*"))
