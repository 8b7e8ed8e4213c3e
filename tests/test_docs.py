"""The documentation can be trusted as written: every relative link and #anchor in README.md, docs/*.md, the model
cards and the claim's RESULTS.md resolves, every repository path they name in backticks exists, and every
``robust-mix ...`` and ``python benchmarks/...`` command line they show parses with the real argument parsers
(parse only: nothing runs). The numbers themselves are checked against the shipped reports in test_claim.py
(README section, RESULTS.md, the reference, the cards' reports) and test_hub.py (the cards, re-rendered)."""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "model_cards").glob("*.md"),
               ROOT / "benchmarks" / "fmnist" / "RESULTS.md"])


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


# -- links and anchors ---------------------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def prose(text: str) -> str:
    """The text without its fenced code blocks (a ``[x](y)`` inside one is code, not a link)."""
    return FENCE.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every #anchor a link into ``path`` may name (duplicates get GitHub's -1, -2, ... suffixes)."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose(path.read_text()).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = github_slug(heading.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def link_problems(path: Path) -> list[str]:
    """What is wrong with ``path``'s relative links: a missing file, or an #anchor its target has no heading for."""
    problems = []
    for match in LINK.finditer(prose(path.read_text())):
        target = match.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{rel(path)}: [{target}] names {file_part}, which does not exist")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            problems.append(f"{rel(path)}: [{target}] names #{anchor}, which {file_part or 'this file'} has no "
                            f"heading for (it has: {', '.join(sorted(anchors(linked))) or 'none'})")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_relative_link_and_anchor_resolves(doc):
    assert link_problems(doc) == []


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Speed: threads, rows side by side\n\n## Speed: threads, rows side by side\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#speed-threads-rows-side-by-side) [dup](other.md#speed-threads-rows-side-by-side-1) "
                    "[gone](missing.md) [stale](other.md#speed) [self](#nothing)\n"
                    "```\n[code, not a link](nowhere.md)\n```\n")
    problems = link_problems(page)
    assert len(problems) == 3, problems
    assert "missing.md, which does not exist" in problems[0]
    assert "#speed, which other.md has no heading for" in problems[1]
    assert "#nothing, which this file has no heading for" in problems[2]


# -- repository paths named in backticks -------------------------------------------------------------------
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
REPO_PATH = re.compile(r"(?:benchmarks|docs|robust_mix|tests|model_cards|requirements)/[\w./-]*\w")


def named_paths(text: str) -> Iterator[str]:
    """Repository paths a text names in inline code: ``benchmarks/x.py``, ``docs/y.md``; not templates
    (``<row>``, ``NAME``), globs or folders a run writes."""
    for span in INLINE.findall(prose(text)):
        for token in span.split():
            if re.fullmatch(REPO_PATH, token) and not re.search(r"[A-Z]{3,}|\*", token):
                yield token


def path_problems(path: Path) -> list[str]:
    return [f"{rel(path)}: `{p}` does not exist" for p in named_paths(path.read_text()) if not (ROOT / p).exists()]


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_every_repository_path_named_exists(doc):
    assert path_problems(doc) == []


# -- command lines ---------------------------------------------------------------------------------------
#: What the docs write for "your value here", and a value of that kind the parsers accept.
PLACEHOLDERS = {
    "NAME": "fmnist-robust", "RECIPE": "fmnist-standard", "PATTERN": "fmnist*", "RUNS...": "runs/demo",
    "OUT_DIR": "runs/out", "RUN_DIR": "runs/out", "DIR": "runs/out", "FOLDER": "runs/out", "PATH": "runs/out",
    "REPORT.json": "runs/out/report.json", "TOKEN": "hf_token", "N": "2", "D": "cifar10", "<arch>": "resnet18",
    "<Name>": "Wong2020Fast", "$m": "fmnist-robust", "[...]": '["layer1"]', "model_cards/NAME.md": "model_cards/x.md",
}
SHELL_WORDS = {"for", "do", "done", "time", "sudo", "then", "fi"}


class Shown(NamedTuple):
    doc: str
    line: str


def command_lines(text: str) -> Iterator[str]:
    """The ``robust-mix``/``python benchmarks/`` command lines a Markdown text shows: each line of a shell code
    block (continuations joined) and each inline code span."""
    for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if block.group(1) in ("", "bash", "sh", "shell", "console"):
            yield from block.group(2).replace("\\\n", " ").splitlines()
    yield from INLINE.findall(prose(text))


def normalise(line: str) -> list[list[str]]:
    """``line`` as argument vectors, ``[program, *argv]`` with program ``robust-mix`` or ``benchmarks/<script>``;
    placeholders filled in, optional ``[--x ...]`` groups included, ``a|b`` alternatives one vector each."""
    line = re.sub(r"(?<!\S)#.*$", "", line).strip()
    line = re.sub(r"(?:\.venv/bin/)?python -m robust_mix(?:\.cli)?\b", "robust-mix", line)
    line = re.sub(r"\btorchrun .*?-m robust_mix\.cli\b", "robust-mix", line)
    line = re.sub(r"\.venv/bin/robust-mix\b", "robust-mix", line)
    line = re.sub(r"(?<!\S)\[((?:--|[A-Z])[^\[\]]*)\](?!\S)", r"\1", line)  # [--benchmark REPORT.json], [PATTERN]
    vectors = []
    for part in re.split(r"\s*(?:;|&&|\|\||(?<=\s)\|&?(?=\s))\s*", line):  # ... | head -1: a pipe between commands
        try:
            words = shlex.split(part)
        except ValueError:
            continue
        while words and (words[0] in SHELL_WORDS or re.fullmatch(r"[A-Z_]+=\S*", words[0])):
            words = words[1:]
        if words[:1] == ["python"] and len(words) > 1 and re.fullmatch(r"benchmarks/[\w/.-]+\.py", words[1]):
            words = words[1:]  # a script's path alone is a file named in prose, not a command line
        elif words[:1] != ["robust-mix"]:
            continue
        words = [PLACEHOLDERS.get(w, w) for w in words]
        words = [re.sub(r"<arch>|<Name>|\[\.\.\.\]|(?<![\w-])NAME(?![\w])",
                        lambda m: PLACEHOLDERS[m.group(0)], w) for w in words]
        alternatives = [i for i, w in enumerate(words) if re.fullmatch(r"[\w.,=-]+(?:\|[\w.,=-]+)+", w)]
        if alternatives:
            i = alternatives[0]
            vectors += [[*words[:i], choice, *words[i + 1:]] for choice in words[i].split("|")]
        else:
            vectors.append(words)
    return vectors


@lru_cache(maxsize=None)
def script_parser(script: str) -> argparse.ArgumentParser:
    """``benchmarks/<script>``'s own parser (its ``build_parser()``), the script imported, not run."""
    path = ROOT / script
    assert path.is_file(), f"{script} does not exist"
    spec = importlib.util.spec_from_file_location(f"docs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    assert hasattr(module, "build_parser"), f"{script} exposes no build_parser()"
    return module.build_parser()


@lru_cache(maxsize=None)
def cli_parser() -> argparse.ArgumentParser:
    from robust_mix import cli

    return cli.build_parser()


def parse_error(vector: list[str]) -> str:
    """Why ``vector`` does not parse ('' when it does): argparse's own message."""
    program, argv = vector[0], vector[1:]
    if program == "robust-mix":
        parser = cli_parser()
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        if len(argv) == 1 and not argv[0].startswith("-"):  # `robust-mix benchmark`: the command, named in prose
            return "" if argv[0] in subcommands else f"no subcommand {argv[0]!r} (it has {', '.join(subcommands)})"
        if not argv:
            return ""
    else:
        parser = script_parser(program)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exit:
        return err.getvalue().strip().splitlines()[-1] if exit.code else ""
    return ""


def shown_commands() -> list[tuple[Shown, list[str]]]:
    found = []
    for doc in DOCS:
        for line in command_lines(doc.read_text()):
            for vector in normalise(line):
                found.append((Shown(rel(doc), line.strip()), vector))
    return found


COMMANDS = shown_commands()


def test_the_docs_show_commands_of_every_kind():
    """The extraction still finds what the docs show (a change of format would make the check below vacuous)."""
    programs = {vector[0] for _, vector in COMMANDS}
    assert "robust-mix" in programs and "benchmarks/fmnist/claim.py" in programs and len(COMMANDS) > 80
    subcommands = {vector[1] for _, vector in COMMANDS if vector[0] == "robust-mix" and len(vector) > 1}
    assert {"benchmark", "sweep", "certify", "train", "card", "demo", "leaderboard", "save", "push"} <= subcommands


@pytest.mark.parametrize("shown, vector", COMMANDS, ids=[f"{s.doc}:{' '.join(v)[:70]}" for s, v in COMMANDS])
def test_every_command_shown_parses(shown, vector):
    assert parse_error(vector) == "", f"{shown.doc} shows `{shown.line}`"


@pytest.mark.parametrize("line, error", [
    ("robust-mix benchmark NAME --n-exampels 20", "unrecognized arguments: --n-exampels"),
    ("robust-mix certify fmnist-robust --alphas 0.8 --sigma", "expected one argument"),
    ("robust-mix benchmrk NAME", "invalid choice: 'benchmrk'"),
    ("`robust-mix bencmark`", "no subcommand 'bencmark'"),
    ("python benchmarks/bench_harness.py --repetitions 5", "unrecognized arguments: --repetitions 5"),
    ("python benchmarks/fmnist/claim.py --publish --rows nothing", "invalid choice: 'nothing'"),
    ("OMP_NUM_THREADS=1 python benchmarks/bench_fastpath.py --n-examples 0", "--n-examples"),
])
def test_a_command_that_would_not_parse_is_found(line, error):
    vectors = [v for text in command_lines(f"```bash\n{line}\n```\n" if "`" not in line else line)
               for v in normalise(text)]
    assert len(vectors) == 1
    assert error in parse_error(vectors[0])


def test_a_script_the_docs_name_that_does_not_exist_is_found():
    (vector,) = normalise("python benchmarks/bench_nothing.py --repeats 2")
    with pytest.raises(AssertionError, match="bench_nothing.py does not exist"):
        parse_error(vector)


def test_placeholders_and_alternatives_become_values():
    assert normalise("robust-mix train fmnist-standard|fmnist-robust --out runs/x") == [
        ["robust-mix", "train", "fmnist-standard", "--out", "runs/x"],
        ["robust-mix", "train", "fmnist-robust", "--out", "runs/x"]]
    assert normalise("torchrun --nproc-per-node 2 -m robust_mix.cli benchmark NAME --out runs/NAME  # x") == [
        ["robust-mix", "benchmark", "fmnist-robust", "--out", "runs/fmnist-robust"]]
    assert normalise("robust-mix card NAME [--benchmark REPORT.json]") == [
        ["robust-mix", "card", "fmnist-robust", "--benchmark", "runs/out/report.json"]]


# -- numbers the docs copy from files committed beside them --------------------------------------------------
def table_rows(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("|")]


def percent(value: float, decimals: int = 0) -> str:
    return f"{100 * value:.{decimals}f}"


def test_certify_doc_table_and_time_are_its_report():
    """docs/certify.md's table and time, and the README's time, are docs/certify-fmnist/certify.json's (the
    command both show wrote it with --out docs/certify-fmnist)."""
    import json

    report = json.loads((ROOT / "docs" / "certify-fmnist" / "certify.json").read_text())
    doc = (ROOT / "docs" / "certify.md").read_text()
    rows = table_rows(doc)
    radii = " | ".join(("r = " if i == 0 else "") + f"{r:g}" for i, r in enumerate(report["radii"]))
    assert f"| alpha | clean (deterministic mix) | abstain | {radii} |" in rows
    for curve in report["curves"]:
        alpha = f"{curve['alpha']:g}" + (" (robust base)" if curve["alpha"] == 1 else "")
        cells = [alpha, percent(curve["mixed_clean_accuracy"]), percent(curve["abstain_rate"]),
                 *(percent(v) for v in curve["certified_accuracy"])]
        assert "| " + " | ".join(cells) + " |" in rows, f"docs/certify.md has no row {cells} of certify.json"
    seconds = f"{report['seconds']:.0f} s"
    assert f"\n{seconds} (the `seconds` that `certify.json` records" in doc
    assert f"made with ({seconds} here, the `seconds` that `certify.json` records)" in (ROOT / "README.md").read_text()
    for key in ("sigma", "n", "n0", "seed", "n_examples"):
        assert f"--{key.replace('_', '-')} {report[key]:g} " in doc.replace("\\\n    ", "")


#: docs/fmnist.md's training tables: the run folder whose history.jsonl each copies, and the text just before it.
HISTORY_TABLES = {
    "adasmooth": "Log, history, the network\nand its calibration in `benchmarks/fmnist/next/adasmooth/`",
    "adasmooth-full-23": "Everything is in `benchmarks/fmnist/next/adasmooth-full-23/`",
    "adasmooth-iter25": "`benchmarks/fmnist/next/adasmooth-iter25/`",
    "adasmooth-targets9": "`benchmarks/fmnist/next/adasmooth-targets9/`",
    "adasmooth-paper-gpu": "`benchmarks/fmnist/next/adasmooth-paper-gpu/`",
}


def history_cells(row: dict, clean_accuracy: bool) -> list[str]:
    """One epoch's cells as docs/fmnist.md writes them (rates to 3 decimals, mean alpha to 2)."""
    acc = (f"{row['val_acc_clean']:.3f} / {row['val_acc_adv']:.3f}" if clean_accuracy else f"{row['val_acc_adv']:.3f}")
    return [f"{row['train_detect_clean']:.3f} / {row['train_detect_adv']:.3f}",
            f"{row['val_detect_clean']:.3f} / {row['val_detect_adv']:.3f}", acc,
            f"{row['alpha_clean_mean']:.2f} / {row['alpha_adv_mean']:.2f}"]


@pytest.mark.parametrize("run", HISTORY_TABLES)
def test_fmnist_training_tables_are_their_runs_histories(run):
    """Each epoch row of docs/fmnist.md's training tables is the run's history.jsonl (benchmarks/fmnist/next/<run>),
    rounded as written: a mean alpha of 0.1749 read as 0.18 failed here."""
    import json

    doc = (ROOT / "docs" / "fmnist.md").read_text()
    history = [json.loads(line) for line in (ROOT / "benchmarks" / "fmnist" / "next" / run / "history.jsonl")
               .read_text().splitlines() if line.strip()]
    assert doc.count(HISTORY_TABLES[run]) == 1, f"docs/fmnist.md no longer says where {run}'s table comes from"
    after = doc[doc.index(HISTORY_TABLES[run]):]
    table = after[after.index("| epoch |"):].split("\n\n", 1)[0]
    rows = table_rows(table)[2:]
    assert len(rows) == len(history), f"docs/fmnist.md's table of {run} has {len(rows)} epochs, the run {len(history)}"
    clean_accuracy = "val accuracy clean / attacked" in table_rows(table)[0]
    for row, epoch in zip(rows, history):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0].split()[0] == str(epoch["epoch"])
        assert cells[1:] == history_cells(epoch, clean_accuracy), f"{run} epoch {epoch['epoch']}"


@pytest.mark.parametrize("run", ["adasmooth", "adasmooth-full-23"])
def test_fmnist_calibration_tables_are_their_runs_calibration(run):
    """docs/fmnist.md's calibration tables are benchmarks/fmnist/next/<run>/calibration.json: clean and robust %,
    the 95 % interval and the share of the robust base kept."""
    import json

    doc = (ROOT / "docs" / "fmnist.md").read_text()
    points = json.loads((ROOT / "benchmarks" / "fmnist" / "next" / run / "calibration.json").read_text())
    summary = points[-1]
    for point in points[:-1]:
        low, high = point["robust_interval"]
        picked = point == summary["picked"]
        label = f"(%g, 1)" % point["alpha_lo"]
        kept = f"{100 * point['robust'] / summary['robust_base']:.1f} %"
        cells = [f"**{label}, picked**" if picked else label, percent(point["clean"], 2),
                 f"{percent(point['robust'], 2)} ({percent(low, 1)}-{percent(high, 1)})", kept]
        line = "| " + " | ".join(cells) + " |"
        assert any(row.startswith(line) or row.startswith(line[:-2]) for row in table_rows(doc)), \
            f"docs/fmnist.md has no row {cells} of {run}/calibration.json"
    assert f"{percent(summary['robust_base'], 2)}" in doc


def test_the_authors_numbers_in_the_registry_and_cards_are_the_shipped_robustbench_snapshots():
    """The paper entries' reported numbers (what their model cards and `robust-mix info` show as the authors')
    are the RobustBench model_info figures the package ships (robust_mix/leaderboard/data/robustbench_linf.json),
    for the RobustBench entry the alias names; a number typed differently in a zoo config fails here."""
    import robust_mix
    from robust_mix.leaderboard.snapshot import load_snapshot

    snapshot = {(e.dataset, e.name): e for e in load_snapshot().entries}
    checked = []
    for name in robust_mix.list_models("*"):
        config = robust_mix.get_model_config(name)
        if config.reported is None:
            continue
        (alias,) = [a for a in config.aliases if re.fullmatch(r"[a-z0-9]+/Linf/[\w-]+", a)]
        dataset, _, entry = alias.split("/")
        published = snapshot[(dataset, entry)]
        assert (config.reported.clean_acc, config.reported.autoattack_acc) == (
            published.clean_acc, published.autoattack_acc), f"{name}'s reported numbers are not RobustBench's {alias}"
        assert abs(config.eps - published.eps_value) < 1e-3, name
        assert config.reported.additional_data == published.additional_data, f"{name}: additional data"
        card = ROOT / "model_cards" / f"{name}.md"
        assert (f"{published.clean_acc:.2f} % clean and {published.autoattack_acc:.2f} % AutoAttack accuracy on "
                f"{config.reported.n_examples} examples") in card.read_text(), card.name
        checked.append(name)
    assert len(checked) >= 6


def makefile_recipes() -> dict[str, list[str]]:
    """The Makefile's targets and their recipe lines."""
    recipes: dict[str, list[str]] = {}
    target = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"([\w-]+):(?!=)", line)
        if rule:
            target = rule.group(1)
            recipes[target] = []
        elif line.startswith("\t") and target:
            recipes[target].append(line.strip())
    return recipes


def test_every_make_target_the_docs_name_exists_and_its_commands_parse():
    """`make demo`, `make cards`, `make site` ...: each target the docs name is the Makefile's, and the robust-mix
    lines it runs parse (a Make conditional becomes its options, here DEMO_EXAMPLES=5)."""
    recipes = makefile_recipes()
    named = {m for doc in DOCS for m in re.findall(r"`make ([\w-]+)", doc.read_text())}
    assert {"demo", "test", "cards", "site"} <= named
    assert sorted(named - set(recipes)) == []
    parsed = []
    for target in named:
        for line in recipes[target]:
            line = re.sub(r"\$\(if \$\(DEMO_EXAMPLES\),([^)]*)\$\(DEMO_EXAMPLES\)\)", r"\g<1>5", line)
            for vector in normalise(line.replace("$(BIN)/robust-mix", "robust-mix")):
                assert parse_error(vector) == "", f"make {target} runs `{line}`"
                parsed.append(vector[1])
    assert sorted(parsed) == ["card", "demo", "leaderboard", "list"]


# -- environment variables: one list ------------------------------------------------------------------------
def _env_variables_read(roots: list[Path]) -> dict[str, set[str]]:
    """The environment variables the code under ``roots`` reads, each with the files that read it: the names passed
    to ``os.environ.get/[...]/in``, an ``environ`` or ``env`` mapping, ``os.getenv``, ``env_int``, and the module
    constants named ``*ENV_VAR``, ``*ENV_VARS`` or ``*_VARIABLES``."""
    import ast

    found: dict[str, set[str]] = {}
    for path in sorted(p for root in roots for p in root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        consts: dict[str, list[str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                items = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in items):
                    consts[node.targets[0].id] = [e.value for e in items]

        def strings(node: ast.AST) -> list[str]:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                return [node.value]
            if isinstance(node, ast.Name):
                return consts.get(node.id, [])
            if isinstance(node, (ast.Tuple, ast.List)):
                return [s for e in node.elts for s in strings(e)]
            return []

        def is_env(node: ast.AST) -> bool:
            return ast.unparse(node).endswith("environ") or ast.unparse(node) == "env"

        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                if isinstance(func, ast.Attribute) and (func.attr == "getenv" or (
                        func.attr in ("get", "pop", "setdefault") and is_env(func.value))):
                    names = strings(node.args[0])
                elif isinstance(func, ast.Name) and func.id in ("getenv", "env_int"):
                    names = strings(node.args[0])
            elif isinstance(node, ast.Subscript) and is_env(node.value):
                names = strings(node.slice)
            elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                    and any(is_env(c) for c in node.comparators):
                names = strings(node.left)
            for name in names:
                found.setdefault(name, set()).add(rel(path))
        for const, values in consts.items():
            if const.endswith(("ENV_VAR", "ENV_VARS", "_VARIABLES")):
                for value in values:
                    found.setdefault(value, set()).add(rel(path))
    return found


def _readme_env_list() -> set[str]:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Environment variables\n(.*?)^## ", text, re.S | re.M)
    assert match, "README.md has no '## Environment variables' section"
    rows = [line.split("|")[1] for line in match.group(1).splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)}


def test_every_environment_variable_the_code_reads_is_in_the_readme_list():
    """The variables were spread over docs/harness.md, docs/hub.md, docs/paper.md and docs/training.md, several in
    none (ROBUST_MIX_DIST_TIMEOUT's values, ROBUST_MIX_MALLOC's choices): one list, checked against the code."""
    read = _env_variables_read([ROOT / "robust_mix", ROOT / "benchmarks"])
    assert {"ROBUST_MIX_MODEL_DIR", "ROBUST_MIX_THREADS", "LOCAL_RANK", "ROBUST_MIX_OFFLINE"} <= set(read)  # it finds
    listed = _readme_env_list()
    missing = {name: sorted(files) for name, files in read.items() if name not in listed}
    assert not missing, f"read by the code but not in README.md's '## Environment variables' list: {missing}"
