"""The wheel is the product: built, installed outside the checkout, and run from another folder.

Every test elsewhere imports robust_mix from the source tree; these run the installed wheel with
a working directory outside the checkout, so a package file missing from the wheel, or a path
that only resolves inside the checkout, fails here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ["fmnist-standard", "fmnist-robust", "fmnist-adasmooth", "fmnist-mixednuts"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources.
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True)
    src = build / "src"
    if files.returncode == 0 and files.stdout.strip():
        for name in files.stdout.splitlines():
            source = REPO / name
            if source.is_file():
                target = src / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read_bytes())
    else:
        pytest.skip("the checkout is not a git work tree; cannot tell source files from build outputs")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [built] = out.glob("robust_mix-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                             "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return target


def run_installed(installed: Path, cwd: Path, code: str, timeout: int = 600) -> str:
    """Run ``code`` with the installed wheel first on the path and the checkout nowhere on it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(installed), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    prelude = textwrap.dedent(f"""
        import os, sys
        # the checkout itself must not be importable (its virtual environment inside it may be)
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != {str(REPO)!r}]
        import robust_mix
        assert robust_mix.__file__.startswith({str(installed)!r}), robust_mix.__file__
    """)
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result.stdout


def test_the_wheel_carries_every_package_file(wheel):
    """Each non-Python file under robust_mix/ in the checkout (templates, weights, data, py.typed) is in the wheel."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "robust_mix"], capture_output=True, text=True)
    needed = {name for name in listed.stdout.splitlines() if not name.endswith(".py")}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "robust-mix = robust_mix.cli:main" in archive.read(entry_points).decode()
    missing = sorted(needed - names)
    assert not missing, f"files the package needs are not in the wheel: {missing}"
    assert needed, "no package data found in the checkout"


def test_the_installed_package_lists_loads_saves_and_renders(installed, tmp_path):
    out = run_installed(installed, tmp_path, f"""
        import json, torch
        from pathlib import Path
        from robust_mix.cli import main
        assert main(["list", "fmnist-*"]) == 0
        x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        for name in {SHIPPED!r}:
            model = robust_mix.load_model(name)
            folder = Path("saved") / name
            assert main(["save", name, str(folder)]) == 0
            for again in (robust_mix.load_model("local-dir:" + str(folder)),
                          robust_mix.MixedClassifier.from_pretrained(folder)):
                with torch.no_grad():
                    assert torch.equal(again(x), model(x)), name
                assert again.state_dict().keys() == model.state_dict().keys()
            assert "## Mixing" in (folder / "README.md").read_text()
        from robust_mix.cards import zoo_card
        assert "fmnist-adasmooth" in zoo_card("fmnist-adasmooth")
        import runpy  # python -m robust_mix, in this interpreter (a new one would import torch again)
        sys.argv = ["robust_mix", "list", "fmnist-*"]
        try:
            runpy.run_module("robust_mix", run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        print("OK", json.dumps(sorted(p.name for p in Path("saved").iterdir())))
    """)
    assert out.strip().splitlines()[-1] == "OK " + json.dumps(sorted(SHIPPED))


def test_the_installed_package_benchmarks_the_adaptive_model(installed, tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file() and \
            not os.environ.get("ROBUST_MIX_DATA"):
        pytest.skip("Fashion-MNIST (dataset-fashion-mnist) not installed")
    out = run_installed(installed, tmp_path, """
        import json
        from robust_mix.cli import main
        code = main(["benchmark", "fmnist-adasmooth", "--n-examples", "4", "--attack", "apgd-ce,apgd-t",
                     "--n-iter", "5", "--n-target-classes", "2", "--out", "run"])
        assert code == 0, code
        report = json.load(open("run/report.json"))
        assert report["n_examples"] == 4 and 0 <= report["robust_accuracy"] <= report["clean_accuracy"] <= 1
        print("OK")
    """)
    assert out.strip().splitlines()[-1] == "OK"
