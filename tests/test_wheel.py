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
def sdist(tmp_path_factory) -> Path:
    """The source distribution, built as ``python -m build`` builds it (offline, without isolation)."""
    out = tmp_path_factory.mktemp("sdist")
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
    result = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                             "print(build_meta.build_sdist(sys.argv[1]))", str(out)],
                            cwd=src, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [built] = out.glob("robust_mix-*.tar.gz")
    return built


@pytest.fixture(scope="module")
def wheel(sdist, tmp_path_factory) -> Path:
    """The wheel built from the sdist (as ``python -m build`` and pip building a source release do), so a file
    the sdist leaves out is missing from the wheel too."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(out), str(sdist)], capture_output=True, text=True, timeout=600)
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


#: Variables that would point a cache away from the home folder, which the installed package's runs have not.
CACHE_VARIABLES = ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                   "TORCH_HOME", "MPLCONFIGDIR", "PYTHONPYCACHEPREFIX")


def user_env(installed: Path, cwd: Path) -> dict[str, str]:
    """The environment of a user's run of the installed package: it first on the path, the checkout's nowhere, and
    a home folder nothing can be written under (a file: no folder is created below one, by root neither), so a
    cache written to ``~`` without being asked fails the run instead of passing on a developer's machine."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and k not in CACHE_VARIABLES}
    home = cwd / "home-is-a-file"
    home.write_text("not a folder: nothing may be cached under the home folder in these runs\n")
    env.update(PYTHONPATH=str(installed), HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    return env


def package_tree(installed: Path) -> dict[str, tuple[int, int]]:
    """Every path under the installed package folder, with its size and modification time."""
    return {str(p.relative_to(installed)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted((installed / "robust_mix").rglob("*"))}


def run_installed(installed: Path, cwd: Path, code: str, timeout: int = 600) -> str:
    """Run ``code`` with the installed wheel first on the path and the checkout nowhere on it (:func:`user_env`),
    and check that it wrote nothing into the installed package folder (read-only where a system installs it)."""
    prelude = textwrap.dedent(f"""
        import os, sys
        # the checkout itself must not be importable (its virtual environment inside it may be)
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != {str(REPO)!r}]
        import robust_mix
        assert robust_mix.__file__.startswith({str(installed)!r}), robust_mix.__file__
    """)
    before = package_tree(installed)
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd,
                            env=user_env(installed, cwd), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    after = package_tree(installed)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"the run wrote into the installed package folder: {changed[:20]}"
    return result.stdout


def test_the_sdist_carries_the_package_and_builds_the_wheel(sdist, wheel):
    """The sdist holds every file of the package (sources and data), whole, and the version robust_mix reports;
    every package file in it reaches the wheel; it holds no tests (setuptools added tests/test_*.py without the
    conftest.py and helpers they import, so they could not run from it)."""
    import tarfile

    import robust_mix

    with tarfile.open(sdist) as archive:
        root = f"robust_mix-{robust_mix.__version__}/"
        members = {m.name.removeprefix(root) for m in archive.getmembers() if m.isfile()}
        info = archive.extractfile(root + "PKG-INFO").read().decode()
    assert f"\nVersion: {robust_mix.__version__}\n" in info
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "robust_mix"], capture_output=True, text=True)
    package = set(listed.stdout.splitlines())
    assert package and not sorted(package - members), sorted(package - members)
    assert not [name for name in members if name.startswith("tests/")]
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    shipped = {name for name in members if name.startswith("robust_mix/")}
    assert not sorted(shipped - in_wheel), sorted(shipped - in_wheel)
    # the licence the metadata names travels with the code (setup.cfg said MIT and no file held its text)
    assert "LICENSE" in members, sorted(members)[:50]
    assert "\nLicense: MIT\n" in info or "\nLicense-Expression: MIT\n" in info, info[:800]
    licence = [name for name in in_wheel if name.endswith(".dist-info/licenses/LICENSE") or
               name.endswith(".dist-info/LICENSE")]
    assert licence, sorted(n for n in in_wheel if ".dist-info/" in n)
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(licence[0]).decode().startswith("MIT License")


def test_a_reader_that_stops_early_ends_the_installed_command_quietly(installed, tmp_path):
    """``robust-mix list | head -1``: the console script whose reader has gone exits as one SIGPIPE ended (141),
    without 'Exception ignored ... BrokenPipeError' (it exited 120 with that)."""
    script = installed / "bin" / "robust-mix"
    process = subprocess.Popen([sys.executable, str(script), "list"], cwd=tmp_path, env=user_env(installed, tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # long before the command has imported torch and written its table
    try:
        err = process.stderr.read()
        assert process.wait(timeout=600) == 141, err[-3000:]
    finally:
        process.kill()
        process.stderr.close()
    assert "Error" not in err and "Exception" not in err, err[-3000:]


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
        import contextlib, importlib.metadata, io
        metadata = importlib.metadata.distribution("robust-mix")
        assert str(metadata.locate_file("")).startswith({str(installed)!r}), metadata.locate_file("")
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown):
            assert main(["--version"]) == 0
        assert shown.getvalue().split() == ["robust-mix", robust_mix.__version__] and \\
            metadata.version == robust_mix.__version__, (shown.getvalue(), metadata.version)
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
