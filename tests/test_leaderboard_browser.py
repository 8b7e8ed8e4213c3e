"""The built site in a real browser (robust_mix.leaderboard.browser driving headless Chromium).

Opens the site from ``file://``, checks the ranking rows, sorts by clicking a header, hides the
RobustBench rows, checks that the scatter is drawn, checks the layout at 1280 and 400 pixels and
saves screenshots. Skipped, saying why, where Chromium is not installed (``make test`` installs
Debian's ``chromium`` when run as root).
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from robust_mix.leaderboard import build_site
from robust_mix.leaderboard.browser import BrowserError, Chromium, find_chromium
from leaderboard_runs import tiny_result, with_flags, write_run

pytestmark = pytest.mark.skipif(find_chromium() is None, reason=(
    "Chromium is not installed (run 'sudo apt-get install chromium', or 'make test' as root, or set "
    "ROBUST_MIX_CHROMIUM): the browser test of the leaderboard site is skipped"))

ROWS = "Array.from(document.querySelectorAll('#board tbody tr'))"
VISIBLE = f"{ROWS}.filter(r => r.offsetParent !== null)"


def _column(page, header: str) -> list[str]:
    index = page.evaluate(f"Array.from(document.querySelectorAll('#board thead th')).findIndex("
                          f"th => th.textContent.trim().startsWith({header!r}))")
    assert index >= 0, header
    return page.evaluate(f"{VISIBLE}.map(r => r.cells[{index}].textContent.trim())")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    base = tiny_result()
    for name, robust in (("mix-high", 8), ("mix-low", 3)):
        result = with_flags(base, [True] * 9 + [False], [True] * robust + [False] * (10 - robust))
        write_run(runs / name, result, model=name, dataset="cifar10", eps=8 / 255)
    out = tmp_path_factory.mktemp("site") / "site"
    build_site([runs], out)
    return out


def test_table_sorting_toggle_and_scatter_in_chromium(site, tmp_path):
    with Chromium() as browser:
        page = browser.open((site / "index.html").resolve().as_uri(), width=1280, height=900)
        assert page.evaluate("location.protocol") == "file:"
        n_ours = page.evaluate(f"{ROWS}.filter(r => r.classList.contains('ours')).length")
        n_ref = page.evaluate(f"{ROWS}.filter(r => r.classList.contains('reference')).length")
        assert n_ours == 2 and n_ref >= 20
        robust = [float(v) for v in _column(page, "robust %")]
        assert robust == sorted(robust, reverse=True)  # default order: robust accuracy, best first
        models = _column(page, "model")
        position = {prefix: next(i for i, m in enumerate(models) if m.startswith(prefix))
                    for prefix in ("mix-high", "mix-low")}
        assert position["mix-high"] < position["mix-low"]

        page.click("#board thead th:nth-child(3) button")  # clean %: first click sorts best first
        clean = [float(v) for v in _column(page, "clean %")]
        assert clean == sorted(clean, reverse=True) and [float(v) for v in _column(page, "robust %")] != robust
        assert page.evaluate("document.querySelector('#board thead th:nth-child(3)').getAttribute('aria-sort')") \
            == "descending"
        page.click("#board thead th:nth-child(3) button")  # second click: worst first
        assert [float(v) for v in _column(page, "clean %")] == sorted(clean)

        page.click("#show-reference")  # hide RobustBench's rows, in the table and the plot
        assert page.evaluate(f"{VISIBLE}.length") == n_ours
        assert page.evaluate("Array.from(document.querySelectorAll('svg .reference circle'))"
                             ".every(c => c.getBoundingClientRect().width === 0)")
        page.click("#show-reference")
        assert page.evaluate(f"{VISIBLE}.length") == n_ours + n_ref

        svg = page.evaluate("(() => { const s = document.querySelector('svg.scatter').getBoundingClientRect();"
                            " return [s.width, s.height, document.querySelectorAll('svg.scatter circle').length,"
                            " document.querySelectorAll('svg.scatter > g.ours circle').length]; })()")
        assert svg[0] > 300 and svg[1] > 150 and svg[2] >= n_ours + n_ref and svg[3] == n_ours
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        wide = page.screenshot(tmp_path / "leaderboard-1280.png")
        assert _png_size(wide)[0] == 1280

        page.set_viewport(400, 800)  # a phone: the page never scrolls sideways, the table scrolls in its box
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        assert page.evaluate("(() => { const w = document.querySelector('.table-wrap');"
                             " return w.scrollWidth > w.clientWidth && w.getBoundingClientRect().right <= 400; })()")
        assert page.evaluate("document.querySelector('svg.scatter').getBoundingClientRect().width") <= 400
        narrow = page.screenshot(tmp_path / "leaderboard-400.png")
        assert _png_size(narrow)[0] == 400

        model = browser.open((site / "models" / "mix-high.html").resolve().as_uri(), width=1280)
        assert model.evaluate("document.querySelector('h1').textContent") == "mix-high"
        model.click("a[href='../index.html']")
        browser.wait_for(lambda m: m.get("method") == "Page.loadEventFired")
        assert model.evaluate("location.pathname").endswith("/index.html")


def test_a_script_error_is_reported():
    with Chromium() as browser:
        page = browser.open("about:blank")
        assert page.evaluate("1 + 1") == 2
        with pytest.raises(BrowserError, match="script failed"):
            page.evaluate("undefinedFunction()")
        with pytest.raises(BrowserError, match="no element matches"):
            page.click("#nothing")
