"""The speed scripts in benchmarks/ run end to end at tiny sizes (on the CPU)."""
from __future__ import annotations

import importlib.util
import json
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
