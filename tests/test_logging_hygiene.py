"""Library code logs and never prints; its loggers are named by module under ``robust_mix``; the package logger has a
NullHandler, so that an application that configured no logging is not written to by the library."""
import ast
import logging
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "robust_mix"
#: The command line owns the terminal: it prints its tables and errors.
TERMINAL = ("cli",)


def _library_files() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in TERMINAL]


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_scan_covers_subpackages():
    names = {_module(p) for p in _library_files()}
    assert {"robust_mix.train.loop", "robust_mix.leaderboard.site", "robust_mix.zoo"} <= names
    assert not any(n.startswith("robust_mix.cli") for n in names)


@pytest.mark.parametrize("path", _library_files(), ids=_module)
def test_library_modules_do_not_print_and_name_their_logger_by_module(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    prints = [node.lineno for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert not prints, f"{_module(path)} calls print() at line(s) {prints}: log instead (logging.getLogger(__name__))"
    for node in tree.body:  # the module's own logger: `logger = logging.getLogger(...)`
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "logger" for t in node.targets)
                and isinstance(node.value, ast.Call) and getattr(node.value.func, "attr", "") == "getLogger"):
            args = node.value.args
            named = (len(args) == 1 and (isinstance(args[0], ast.Name) and args[0].id == "__name__"
                                         or isinstance(args[0], ast.Constant) and args[0].value == _module(path)))
            assert named, f"{_module(path)}: its logger is not named by module (logging.getLogger(__name__))"


def test_the_package_logger_has_a_null_handler_so_an_unconfigured_application_sees_nothing():
    """Without one, Python's last-resort handler writes the library's warnings to an application's standard error
    although it configured no logging."""
    import robust_mix

    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("robust_mix").handlers)
    code = ("import logging, robust_mix; logging.getLogger('robust_mix.benchmark').warning('from the library')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=str(PACKAGE.parent))
    assert done.returncode == 0, done.stderr
    assert "from the library" not in done.stderr
