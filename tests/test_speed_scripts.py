"""The scripts in benchmarks/: every one answers --help and refuses a count that is not positive; the speed scripts
run end to end at tiny sizes (on the CPU)."""
from __future__ import annotations

import importlib.util
import json
import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(monkeypatch, name: str, *argv: str) -> int:
    """``python benchmarks/<name>.py *argv``, in this process."""
    spec = importlib.util.spec_from_file_location(f"speed_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec.loader.exec_module(module)
    return module.main()


SCRIPTS = sorted(p.relative_to(BENCHMARKS).as_posix() for p in BENCHMARKS.rglob("*.py"))


def run_as_main(monkeypatch, script: str, *argv: str) -> int:
    """``python benchmarks/<script> *argv`` in this process; its exit status (argparse exits)."""
    monkeypatch.setattr(sys, "argv", [script, *argv])
    monkeypatch.syspath_prepend(str((BENCHMARKS / script).parent))
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    return exited.value.code


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help_and_does_nothing_else(monkeypatch, capsys, script):
    """bench_train_precision.py failed at import (a name the library no longer has); fmnist/export.py took --help for
    its runs folder, skipped every run and rewrote the shipped manifest."""
    assert run_as_main(monkeypatch, script, "--help") == 0
    assert capsys.readouterr().out.startswith("usage:")


COUNTS = [(script, option) for script in SCRIPTS for option in
          ("--n-examples", "--repeats", "--batch-size", "--steps", "--workers", "--threads", "--n-iter", "--n-robust")
          if f'add_argument("{option}"' in (BENCHMARKS / script).read_text()]


@pytest.mark.parametrize("script, option", COUNTS)
def test_a_count_that_is_not_positive_is_one_argument_error(monkeypatch, capsys, script, option):
    """--repeats 0 ran nothing and then failed in min() of no times, --n-examples 0 divided by zero or attacked no
    image: counts are checked with the arguments."""
    assert len(COUNTS) > 15  # the scripts still name these options
    argv = [option, "0"] if script not in ("profile_autoattack.py", "reproduce.py") else ["fmnist-robust", option, "0"]
    assert run_as_main(monkeypatch, script, *argv) == 2
    err = capsys.readouterr().err
    assert option in err and "0" in err


def test_export_refuses_a_runs_folder_that_holds_no_run(tmp_path, capsys):
    """It printed "skipping" for every run and rewrote the manifest, exit status 0, as if it had exported."""
    spec = importlib.util.spec_from_file_location("fmnist_export", BENCHMARKS / "fmnist" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest = module.WEIGHTS / "manifest.json"
    before = manifest.read_bytes()
    assert module.main([str(tmp_path / "nowhere")]) == 2
    assert module.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "holds none of the runs" in err
    assert manifest.read_bytes() == before


def test_profile_reports_every_stage_with_model_time_and_flops(monkeypatch, tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert run(monkeypatch, "profile_autoattack", "fmnist-adasmooth", "--n-examples", "3",
               "--attack", "apgd-ce,square", "--n-iter", "2", "--n-queries", "5", "--json", str(out)) == 0
    printed = capsys.readouterr().out
    assert "top three costs" in printed and "MFLOP per image forward" in printed
    profile = json.loads(out.read_text())
    stages = {s["stage"]: s for s in profile["stages"]}
    assert list(stages) == ["clean", "apgd-ce", "square", "adaptive-apgd-ce", "adaptive-apgd-t"]
    assert stages["clean"]["forward_images"] == 3 and stages["clean"]["backwards"] == 0
    assert stages["apgd-ce"]["backwards"] > 0 and stages["square"]["backwards"] == 0
    assert stages["adaptive-apgd-ce"]["backward_images"] > 0
    for stage in stages.values():
        assert 0 <= stage["inside_s"] <= stage["wall_s"] and stage["gflop_per_s"] >= 0
    assert profile["flops_forward"] > 1e6


@pytest.mark.slow  # two AutoAttack runs of a tiny model
def test_gpu_script_runs_on_the_cpu(monkeypatch, capsys):
    assert run(monkeypatch, "bench_gpu", "--model", "tiny", "--device", "cpu", "--n-examples", "4",
               "--batch-size", "4", "--n-iter", "1", "--n-queries", "5", "--repeats", "1") == 0
    printed = capsys.readouterr().out
    assert "robust_mix / robustbench images/s" in printed and "streams off, CUDA graphs off" in printed


def test_fastpath_script_compares_flags_and_times_of_each_variant(monkeypatch, capsys):
    assert run(monkeypatch, "bench_fastpath", "--model", "fmnist-robust", "--n-examples", "3",
               "--attack", "apgd-ce", "--channels-last", "--threads", "1") == 0  # 0: the fast path kept every flag
    printed = capsys.readouterr().out
    for variant in ("before", "fast path", "channels-last"):
        line = next(l for l in printed.splitlines() if l.strip().startswith(variant) and "flags differing" in l)
        assert "clean 0, robust" in line or variant == "channels-last"
        assert f"before / {variant} time" in line


@pytest.mark.slow  # ten demo rows of one image each, in subprocesses
def test_demo_script_times_both_modes_and_compares_their_flags(monkeypatch, capsys):
    assert run(monkeypatch, "bench_demo", "--n-examples", "1", "--", "--attack", "apgd-ce", "--clean-examples", "2",
               "--no-adaptive") == 0  # 0: both modes gave the same flags
    printed = capsys.readouterr().out
    assert "round 1, one process" in printed and "round 1, side by side" in printed
    assert "one process / side by side:" in printed and "identical in every row and run: True" in printed


@pytest.mark.parametrize("script, argv", [
    ("reproduce.py", ["fmnist-robustt"]), ("profile_autoattack.py", ["fmnist-robustt"]),
    ("bench_fastpath.py", ["--model", "fmnist-robustt"]), ("bench_threads.py", ["--model", "fmnist-robustt"]),
    ("bench_forward.py", ["--model", "fmnist-robustt"]), ("bench_gpu.py", ["--model", "fmnist-robustt"]),
    ("fmnist/evaluate.py", ["fmnist-robustt"]),
])
def test_an_unknown_model_is_one_argument_error_naming_the_closest(monkeypatch, capsys, script, argv):
    """A misspelt model ended each script in a KeyError traceback from deep inside its first run."""
    assert run_as_main(monkeypatch, script, *argv) == 2
    assert "unknown model 'fmnist-robustt'; did you mean ['fmnist-robust'" in capsys.readouterr().err


@pytest.mark.parametrize("script, argv", [("fmnist/evaluate.py", ["alpha=2"]),
                                          ("profile_autoattack.py", ["fmnist-robust,alpha=2"])])
def test_a_bad_override_is_an_argument_error_before_any_run(monkeypatch, capsys, script, argv):
    assert run_as_main(monkeypatch, script, *argv) == 2
    assert "alpha must lie in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("name, match", [("fmnist-robust,alpha=0.5", "has overrides: reproduce compares a run with"),
                                         ("hf-hub:org/model", "unknown model")])
def test_reproduce_takes_an_entry_as_it_ships(monkeypatch, capsys, name, match):
    """A changed or unregistered entry ran its whole benchmark, then failed looking up the reported figures."""
    assert run_as_main(monkeypatch, "reproduce.py", name, "--n-examples", "2") == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("script, argv", [
    ("bench_demo.py", ["--", "--attack", "apgd-ce", "--workers", "2"]),
    ("bench_demo.py", ["--", "--n-examples=5"]),
    ("bench_threads.py", ["--", "--threads", "4"]),
])
def test_arguments_handed_on_may_not_override_what_the_script_compares(monkeypatch, capsys, script, argv):
    """`bench_demo.py -- --workers 2` ran its "one process" mode with two workers (the later --workers won) and
    printed the ratio of two side-by-side runs as one process / side by side."""
    assert run_as_main(monkeypatch, script, *argv) == 2
    assert "after -- would override what this script sets for every run it compares" in capsys.readouterr().err
