"""The package's import graph: layers import downward only (module- and function-level imports alike).

The graph is parsed from the source, so a cycle hidden in a function body counts. ``robust_mix.cli``
(the terminal's owner, which may import anything) is left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "robust_mix"
EXEMPT = ("robust_mix.cli",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str], own: str = "") -> set[str]:
    """The package modules a file (module ``own``) imports, at any depth of its syntax tree."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = own or module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import robust_mix.x.y` of a non-module attribute
                name = name.rpartition(".")[0]
            if name and name != own:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {d for d in imported(path, known) if not d.startswith(EXEMPT)}
            for name, path in found.items() if not name.startswith(EXEMPT)}


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (first repeated at the end), or ``[]``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_package_imports_form_a_dag():
    cycle = find_cycle(graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_function_level_cycles(tmp_path):
    """The checker itself: a cycle through an import inside a function body is found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(edges)[0] == find_cycle(edges)[-1]
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from robust_mix.registry import get_model_config\n")
    assert imported(source, set(modules()), own="robust_mix.m") == {"robust_mix.registry"}


@pytest.mark.parametrize("leaf", ["robust_mix.version", "robust_mix.validate"])
def test_leaves_import_nothing_of_the_package(leaf):
    assert graph()[leaf] == set()


def test_file_writing_sits_on_the_argument_checks_only():
    """``robust_mix.io`` (atomic writes, pickle-free loading) checks its paths with ``validate`` and nothing else."""
    assert graph()["robust_mix.io"] <= {"robust_mix.validate"}


def test_the_registry_knows_configs_only():
    assert graph()["robust_mix.registry"] <= {"robust_mix.config"}


def test_library_modules_never_import_the_package_root():
    """``import robust_mix`` inside the library would tie every module to every other one."""
    edges = graph()
    offenders = sorted(name for name, deps in edges.items() if "robust_mix" in deps and name != "robust_mix")
    assert not offenders, offenders
