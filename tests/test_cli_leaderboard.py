"""``robust-mix leaderboard`` (robust_mix.cli.leaderboard)."""
from __future__ import annotations

import pytest

from robust_mix.cli import main
from robust_mix.leaderboard.browser import find_chromium
from robust_mix.report import percent
from leaderboard_runs import tiny_result, write_run


def test_builds_the_site_and_prints_the_ranking_and_what_was_left_out(tmp_path, capsys):
    write_run(tmp_path / "runs" / "mix")
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "report.json").write_text('{"model": "x", ')
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "site")]) == 0
    out, err = capsys.readouterr()
    result = tiny_result()
    assert "fashion-mnist Linf eps 0.1: 1 evaluation(s), 0 RobustBench reference row(s)" in out
    line = next(l for l in out.splitlines() if l.startswith("mix "))
    assert percent(result.clean_accuracy) in line and percent(result.robust_accuracy) in line
    assert "partial: 10 of 10,000 examples" in line
    assert "left out" in err and "broken/report.json" in err and "truncated JSON" in err
    assert "wrote" in out and "MB" in out and (tmp_path / "site" / "index.html").is_file()
    index = (tmp_path / "site" / "index.html").read_text()
    assert "robust-mix leaderboard" in index  # the footer states the command


def test_no_valid_report_still_writes_a_page_listing_why(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("[]")
    assert main(["leaderboard", str(tmp_path / "bad.json"), "--out", str(tmp_path / "site")]) == 1
    assert "no valid benchmark report" in capsys.readouterr().err
    assert "expected a JSON object" in (tmp_path / "site" / "index.html").read_text()


def test_a_board_asked_for_with_no_report_is_said_as_such(tmp_path, capsys):
    """--dataset cifar10 over Fashion-MNIST reports said 'no valid benchmark report' and 'this site is (none)',
    though every report was valid: none was for the board asked for."""
    write_run(tmp_path / "runs" / "mix")
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "site"), "--dataset", "CIFAR10",
                 "--eps", "8/255"]) == 1
    err = capsys.readouterr().err
    assert "(none)" not in err and "no valid benchmark report" not in err
    assert "a report for fashion-mnist Linf eps 0.1, but no report given is for the board asked for (dataset " \
           "cifar10, eps 8/255)" in err
    assert "error: no report for the board asked for (dataset cifar10, eps 8/255) among the inputs" in err
    index = (tmp_path / "site" / "index.html").read_text()
    assert "<h1>Leaderboard: no report for the board asked for (dataset cifar10, eps 8/255)</h1>" in index


def test_refuses_an_out_folder_that_is_not_a_site(tmp_path, capsys):
    write_run(tmp_path / "runs" / "mix")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "keep.txt").write_text("mine")
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "site")]) == 2
    assert "not a site written by robust-mix leaderboard" in capsys.readouterr().err


def test_an_out_folder_under_a_file_is_one_error_line_naming_the_file(tmp_path, capsys):
    """--out under a file said only '[Errno 17] File exists: ...', naming neither --out nor what to do."""
    write_run(tmp_path / "runs" / "mix")
    (tmp_path / "notes").write_text("mine")
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "notes" / "site")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'notes'} is a file, not a folder; choose another folder" in err
    assert (tmp_path / "notes").read_text() == "mine"


def test_names_with_line_breaks_and_escapes_keep_the_table_on_one_line_per_row(tmp_path, capsys):
    """A run folder named with a line break split its row in two, and an escape sequence in it went to the
    terminal as is (recolouring, or rewriting, what followed)."""
    write_run(tmp_path / "runs" / "a\nb\x1b[31mred")
    (tmp_path / "runs" / "bad\x1b[2J").mkdir()
    (tmp_path / "runs" / "bad\x1b[2J" / "report.json").write_text("")
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "site")]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err
    table = out.split("\n\n")[1].splitlines()
    assert len(table) == 3 and table[2].startswith("a\\nb\\x1b[31mred ")
    assert "bad\\x1b[2J" in err


@pytest.mark.parametrize("configured", ["no-such-chromium", "a-folder", "not-executable"])
def test_a_robust_mix_chromium_that_names_no_program_is_named_before_the_site_is_built(tmp_path, capsys, monkeypatch,
                                                                                     configured):
    """It was reported as "Chromium is not installed ... or set ROBUST_MIX_CHROMIUM", though it was set, and only
    after the site was built."""
    from robust_mix.leaderboard.browser import BrowserError

    (tmp_path / "a-folder").mkdir()
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    value = str(tmp_path / configured)
    monkeypatch.setenv("ROBUST_MIX_CHROMIUM", value)
    with pytest.raises(BrowserError, match=f"environment variable ROBUST_MIX_CHROMIUM='{value}' names no program"):
        find_chromium()
    write_run(tmp_path / "runs" / "mix")
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "site"),
                 "--screenshot", str(tmp_path / "site.png")]) == 2
    assert f"error: no screenshot: environment variable ROBUST_MIX_CHROMIUM='{value}'" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed: no screenshot test")
def test_screenshot_of_the_index_page(tmp_path):
    write_run(tmp_path / "runs" / "mix", dataset="cifar10", eps=8 / 255)
    shot = tmp_path / "docs" / "site.png"
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "site"), "--eps", "8/255",
                 "--screenshot", str(shot), "--width", "900"]) == 0
    data = shot.read_bytes()
    assert data[:4] == b"\x89PNG" and int.from_bytes(data[16:20], "big") == 900
