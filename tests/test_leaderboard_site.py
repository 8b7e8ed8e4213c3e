"""Building the leaderboard site (robust_mix.leaderboard.site): every number read from a report."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from robust_mix.leaderboard import build_site
from robust_mix.leaderboard.site import MARKER
from robust_mix.leaderboard.snapshot import load_snapshot
from robust_mix.report import percent
from robust_mix.stats import clopper_pearson
from robust_mix.sweep import sweep, write_sweep
from leaderboard_runs import tiny_result, with_flags, write_run
from test_benchmark import EPS, FAST, fmnist, tiny_mixed

COLUMNS = ["#", "model", "clean %", "AutoAttack %", "adaptive %", "robust %", "95 % interval", "examples",
           "forward passes", "architecture", "extra data", "date / venue", "notes"]


class _Table(HTMLParser):
    """Rows of ``<table id="board">``: (row class, [cell texts]), plus every src/href of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self.headers: list[str] = []
        self.links: list[str] = []
        self._in_board = self._in_cell = False
        self._text = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        self._text += " "
        if tag == "table" and attrs.get("id") == "board":
            self._in_board = True
        elif self._in_board and tag == "tr":
            self.rows.append((attrs.get("class") or "", []))
        elif self._in_board and tag in ("td", "th"):
            self._in_cell, self._text = True, ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_board = False
        elif self._in_board and tag in ("td", "th") and self._in_cell:
            self._in_cell = False
            self.rows[-1][1].append(" ".join(self._text.split()))

    def handle_data(self, data):
        if self._in_cell:
            self._text += data


def read_page(path: Path) -> _Table:
    parser = _Table()
    parser.feed(path.read_text(encoding="utf-8"))
    header = parser.rows.pop(0)
    parser.headers = header[1]
    return parser


def rows_of(table: _Table, kind: str) -> list[dict[str, str]]:
    return [dict(zip(table.headers, cells)) for css, cells in table.rows if kind in css.split()]


@pytest.fixture
def runs(tmp_path) -> Path:
    base = tiny_result()
    write_run(tmp_path / "runs" / "mix-a")
    write_run(tmp_path / "runs" / "mix-b", with_flags(base, [True] * 10, [True] * 7 + [False] * 3), model="mix-b")
    return tmp_path / "runs"


def test_the_page_shows_each_reports_numbers(runs, tmp_path):
    site = build_site([runs], tmp_path / "site", command="robust-mix leaderboard runs --out site")
    table = read_page(tmp_path / "site" / "index.html")
    assert table.headers == COLUMNS
    ours = rows_of(table, "ours")
    assert [r["model"].split()[0] for r in ours] == ["mix-b", "mix-a"]  # ranked by robust accuracy
    for row, e in zip(ours, sorted(site.evaluations, key=lambda e: -e.result.robust_accuracy)):
        r = e.result
        assert row["clean %"] == percent(r.clean_accuracy) and row["robust %"] == percent(r.robust_accuracy)
        assert row["AutoAttack %"] == percent(r.autoattack_accuracy)
        assert row["adaptive %"] == percent(r.adaptive_accuracy)
        low, high = clopper_pearson(sum(r.robust_flags), r.n_examples)
        assert row["95 % interval"] == f"{100 * low:.1f}–{100 * high:.1f}"
        assert row["examples"] == str(r.n_examples) and row["forward passes"] == str(r.number_forward_passes)
        assert "partial: 10 of 10,000 examples" in row["notes"]
        page = (tmp_path / "site" / "models" / f"{e.slug}.html").read_text()
        assert f"{percent(r.robust_accuracy)} % ({sum(r.robust_flags)} of {r.n_examples} examples)" in page
        for stage, acc in r.stage_accuracy.items():
            assert f"<td><code>{stage}</code></td>" in page and f"<td>{percent(acc)}</td>" in page
        assert (tmp_path / "site" / "models" / e.slug / "report.json").read_bytes() == e.path.read_bytes()
    assert rows_of(table, "reference") == []  # RobustBench has no Fashion-MNIST board
    index = (tmp_path / "site" / "index.html").read_text()
    assert "no Linf leaderboard for fashion-mnist" in index and "robust-mix leaderboard runs --out site" in index
    assert "<svg" in index and index.count('class="ours"') >= 2
    # self-contained: every link and source is relative (no CDN, no server), except papers and sources
    local = [u for u in table.links if not u.startswith(("https://", "http://"))]
    assert local and all(not u.startswith("/") for u in local)
    assert all((tmp_path / "site" / u).exists() for u in local if not u.startswith("#"))
    assert {f for f in site.files if f.startswith("assets/")} == {"assets/leaderboard.css", "assets/leaderboard.js"}
    assert site.total_bytes == sum(p.stat().st_size for p in (tmp_path / "site").rglob("*") if p.is_file())


def test_changing_a_report_changes_the_page(runs, tmp_path):
    build_site([runs], tmp_path / "site")
    before = rows_of(read_page(tmp_path / "site" / "index.html"), "ours")
    write_run(runs / "mix-a", with_flags(tiny_result(), [True] * 9 + [False], [True] * 9 + [False]))
    build_site([runs], tmp_path / "site")
    after = {r["model"].split()[0]: r for r in rows_of(read_page(tmp_path / "site" / "index.html"), "ours")}
    assert after["mix-a"]["robust %"] == "90.00" and after["mix-a"]["clean %"] == "90.00"
    assert after["mix-a"]["95 % interval"] == "{:.1f}–{:.1f}".format(*(100 * v for v in clopper_pearson(9, 10)))
    assert before != list(after.values())
    assert list(after)[0] == "mix-a"  # the ranking follows the new number


def test_the_clean_column_is_the_full_test_set_when_it_was_measured(runs, tmp_path):
    # 10 attacked examples all clean, but 8,123 of the 10,000 test images: the column (and the page,
    # and the ranking tie-break) show the 10,000-image figure, as RobustBench's clean column does
    write_run(runs / "mix-a", with_flags(tiny_result(), [True] * 10, [True] * 7 + [False] * 3),
              full_clean_accuracy=0.8123, full_clean_examples=10000)
    build_site([runs], tmp_path / "site")
    rows = {r["model"].split()[0]: r for r in rows_of(read_page(tmp_path / "site" / "index.html"), "ours")}
    assert rows["mix-a"]["clean %"] == "81.23" and rows["mix-b"]["clean %"] == "100.00"
    assert list(rows) == ["mix-b", "mix-a"]  # equal robust accuracy: the higher clean accuracy first
    page = next((tmp_path / "site" / "models").glob("mix-a*.html")).read_text()
    assert "81.23 % (10,000 images); 100.00 % on the 10 attacked examples" in page


def test_bad_inputs_are_listed_and_the_site_is_built_from_the_rest(runs, tmp_path):
    cut = runs / "cut" / "report.json"
    cut.parent.mkdir()
    cut.write_text((runs / "mix-a" / "report.json").read_text()[:500])
    edited = json.loads((runs / "mix-a" / "report.json").read_text())
    edited["robust_accuracy"] = 0.99
    (runs / "edited").mkdir()
    (runs / "edited" / "report.json").write_text(json.dumps(edited))
    write_run(runs / "cifar", dataset="cifar10", eps=8 / 255)
    (runs / "stray.json").write_text('{"hello": 1}')
    site = build_site([runs, runs / "stray.json", tmp_path / "nowhere"], tmp_path / "site")
    assert sorted(e.label for e in site.evaluations) == ["mix-a", "mix-b"]
    index = (tmp_path / "site" / "index.html").read_text()
    left_out = index[index.index("Files left out"):]
    for path, words in ((cut, "truncated JSON"), (runs / "edited" / "report.json", "robust_accuracy is 0.99"),
                        (runs / "cifar" / "report.json", "a report for cifar10 Linf eps 8/255"),
                        (runs / "stray.json", "not a benchmark report"), (tmp_path / "nowhere", "no such file")):
        assert str(path.resolve() if path.exists() else path) in left_out
        assert words in left_out
    assert len(site.rejected) == 5


def test_reference_rows_and_frontier_for_a_robustbench_board(tmp_path):
    write_run(tmp_path / "runs" / "c", dataset="cifar10", eps=8 / 255)
    site = build_site([tmp_path / "runs"], tmp_path / "site")
    board = load_snapshot().board("cifar10", "Linf", 8 / 255)
    assert site.references == board
    table = read_page(tmp_path / "site" / "index.html")
    refs = rows_of(table, "reference")
    assert len(refs) == len(board) and len(rows_of(table, "ours")) == 1
    top = refs[0]
    assert top["model"].startswith(board[0].name) and "RobustBench" in top["model"]
    assert top["clean %"] == f"{board[0].clean_acc:.2f}" and top["robust %"] == f"{board[0].robust_acc:.2f}"
    nuts = next(r for r in refs if r["model"].startswith("Bai2024MixedNUTS"))
    assert (nuts["AutoAttack %"], nuts["robust %"]) == ("70.08", "69.71") and "external" in nuts["notes"]
    index = (tmp_path / "site" / "index.html").read_text()
    assert 'class="reference frontier"' in index and "<polyline" in index
    assert f"read on {load_snapshot().read_on}" in index
    site = build_site([tmp_path / "runs"], tmp_path / "site", reference=False)
    assert site.references == [] and rows_of(read_page(tmp_path / "site" / "index.html"), "reference") == []


def test_sweeps_certificates_and_cards_on_the_model_page(tmp_path):
    from robust_mix.cli import main

    runs = tmp_path / "runs"
    write_run(runs / "robust", model="fmnist-robust")  # a registered entry: its card is rendered
    x, y = fmnist(6)
    points = sweep(tiny_mixed(), [0.0, 1.0], images=x, labels=y, eps=EPS, batch_size=6, attack="apgd-ce",
                   options=FAST, device="cpu")
    write_sweep(points, runs / "robust-sweep", metadata={"model": "fmnist-robust", "attack": "apgd-ce"})
    assert main(["certify", "fmnist-robust", "--alphas", "0.9", "--n", "20", "--n0", "5", "--n-examples", "4",
                 "--no-progress", "--radii", "0", "0.1", "--out", str(runs / "robust-cert")]) == 0
    write_run(runs / "saved", model="my-saved-model")
    (runs / "saved" / "README.md").write_text("# my saved model\n\nIts own card, <b>escaped</b>.\n")
    site = build_site([runs], tmp_path / "site")
    assert site.rejected == []
    page = (tmp_path / "site" / "models" / "robust.html").read_text()
    assert "Trade-off sweeps" in page and 'src="robust/sweep-1.png"' in page
    for p in points:
        assert f"<td>{percent(p.clean_accuracy)}</td><td>{percent(p.robust_accuracy)}</td>" in page
    cert = json.loads((runs / "robust-cert" / "certify.json").read_text())
    assert 'src="robust/certify-1.png"' in page
    for curve in cert["curves"]:
        assert "".join(f"<td>{100 * a:.1f}</td>" for a in curve["certified_accuracy"]) in page
    assert "The card of the registered entry &#x27;fmnist-robust&#x27;" in page and "<h3>fmnist-robust</h3>" in page
    saved = (tmp_path / "site" / "models" / "saved.html").read_text()
    assert "<h3>my saved model</h3>" in saved and "&lt;b&gt;escaped&lt;/b&gt;" in saved
    index = (tmp_path / "site" / "index.html").read_text()
    assert 'class="sweep"' in index and "alpha 0" in index and "alpha 1" in index
    assert all((tmp_path / "site" / "models" / name).is_file() for name in ("robust/sweep-1.png", "robust/certify-1.png"))


def test_a_folder_that_is_not_a_site_is_never_replaced(runs, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a site written by robust-mix leaderboard"):
        build_site([runs], out)
    assert (out / "thesis.tex").read_text() == "precious"
    build_site([runs], tmp_path / "site")
    (tmp_path / "site" / "stale.html").write_text("old")
    build_site([runs], tmp_path / "site")  # a site built before is replaced whole
    assert (tmp_path / "site" / MARKER).is_file() and not (tmp_path / "site" / "stale.html").exists()
    assert not [p for p in tmp_path.iterdir() if re.match(r"\.site\.(new|old)-", p.name)]


def test_a_site_built_inside_the_runs_is_not_read_as_runs(runs, tmp_path):
    """With --out inside RUNS, the next build read the site's copies of the reports as reports: each evaluation was
    ranked twice (or, as a copy is ranked once, from the stale copy in the site instead of the run)."""
    build_site([runs], runs / "site")
    site = build_site([runs], runs / "site")
    assert sorted(str(e.path.relative_to(runs)) for e in site.evaluations) == ["mix-a/report.json",
                                                                                "mix-b/report.json"]
    (left_out,) = site.rejected
    assert left_out.path == runs / "site" and "a leaderboard site written by robust-mix leaderboard" in left_out.reason


def test_long_run_names_get_pages_with_short_distinct_file_names(tmp_path):
    """A run folder with a 250-character name (legal) made a page file name over the file system's 255-byte limit:
    the whole build failed with 'File name too long'."""
    long_a, long_b = "run-" + "a" * 246, "run-" + "a" * 245 + "b"
    write_run(tmp_path / "runs" / long_a)
    write_run(tmp_path / "runs" / long_b, seed=1)
    site = build_site([tmp_path / "runs"], tmp_path / "site", reference=False)
    assert sorted(e.label for e in site.evaluations) == sorted([long_a, long_b])
    slugs = {e.slug for e in site.evaluations}
    assert len(slugs) == 2 and all(len(slug) <= 64 for slug in slugs)
    index = (tmp_path / "site" / "index.html").read_text()
    for e in site.evaluations:
        assert (tmp_path / "site" / "models" / f"{e.slug}.html").is_file() and f"models/{e.slug}.html" in index


def test_the_wheel_ships_the_snapshot_and_assets():
    import fnmatch

    from setuptools.config.setupcfg import read_configuration

    root = Path(__file__).resolve().parent.parent
    globs = read_configuration(root / "setup.cfg")["options"]["package_data"]["robust_mix"]
    package = root / "robust_mix"
    needed = [p.relative_to(package).as_posix() for folder in ("leaderboard/data", "leaderboard/assets")
              for p in (package / folder).iterdir() if p.is_file()]
    assert needed and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in needed), (needed, globs)


def test_files_beside_a_report_that_link_elsewhere_are_not_published(tmp_path, caplog):
    """A folder of runs from someone else linking README.md, model_info.json or a plot to a file of this machine
    (~/.ssh/id_rsa, a credentials JSON): the site read the link's target and published it."""
    secret = tmp_path / "home" / "secret"
    secret.mkdir(parents=True)
    (secret / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY----- hunter2\n")
    (secret / "credentials.json").write_text('{"architecture": "hunter2", "token": "hunter2"}\n')
    runs = tmp_path / "runs"
    write_run(runs / "theirs", model="their-model")
    (runs / "theirs" / "model_info.json").unlink()
    (runs / "theirs" / "README.md").symlink_to(secret / "id_rsa")
    (runs / "theirs" / "model_info.json").symlink_to(secret / "credentials.json")
    write_run(runs / "mine", model="my-model")
    (runs / "mine" / "README.md").write_text("# my card\n")
    build_site([runs], tmp_path / "site")
    published = [p for p in (tmp_path / "site").rglob("*") if p.is_file()]
    assert not [p for p in published if "hunter2" in p.read_text(errors="replace")]
    assert "<h3>my card</h3>" in (tmp_path / "site" / "models" / "mine.html").read_text()  # a file there is read
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "README.md is a link to" in warned and "model_info.json is a link to" in warned and "not published" in warned


def test_the_scatter_shows_the_robust_accuracy_intervals_of_reports_and_sweeps(runs, tmp_path):
    """The page's table gave each report's 95 % interval, but the scatter drew bare points: two entries 3 points
    apart on 10 examples looked as clearly ranked as on 10,000."""
    import dataclasses
    import xml.etree.ElementTree as ET

    from robust_mix.leaderboard.inputs import SweepRun
    from robust_mix.leaderboard.site import scatter_series
    from robust_mix.sweep import SweepPoint

    site = build_site([runs], tmp_path / "site")
    ours = [p for s in scatter_series(site.evaluations, []) if s.kind == "ours" for p in s.points]
    for point, e in zip(ours, site.evaluations):
        low, high = clopper_pearson(sum(e.result.robust_flags), e.result.n_examples)
        assert point.y_interval == pytest.approx((100 * low, 100 * high))
        assert f"95 % interval {100 * low:.1f}–{100 * high:.1f}" in point.tooltip
    index = (tmp_path / "site" / "index.html").read_text()
    svg = ET.fromstring(index[index.index("<svg"):index.index("</svg>") + 6])
    bars = [p for p in svg.iter("{http://www.w3.org/2000/svg}path") if p.get("class") == "interval"]
    assert len(bars) == len(site.evaluations)
    assert "bars: robust accuracy, 95 % interval" in index
    # a sweep written before intervals were recorded draws its points without bars
    point = SweepPoint(0.0, 0.9, 0.1, "standard", 10, 1.0)
    old = dataclasses.replace(site.evaluations[0], sweeps=[SweepRun(tmp_path / "s.json", "m", [point], {}, None)])
    sweep_points = [p for s in scatter_series([old], []) if s.kind == "sweep" for p in s.points]
    assert sweep_points and all(p.y_interval is None for p in sweep_points)
    recorded = dataclasses.replace(point, robust_low=0.02, robust_high=0.4)
    new = dataclasses.replace(old, sweeps=[SweepRun(tmp_path / "t.json", "m", [recorded], {}, None)])
    assert [p.y_interval for s in scatter_series([new], []) if s.kind == "sweep" for p in s.points] == [
        pytest.approx((2.0, 40.0))]
