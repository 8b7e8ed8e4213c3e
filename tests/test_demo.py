"""``robust-mix demo`` (robust_mix.cli.demo): its table, the reference beside it, its progress display."""
from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import re
import select
import struct
import termios
import time
import warnings


from robust_mix.cli import demo, main
from robust_mix.cli.benchmark import RowBars
from robust_mix.formatting import percent_interval
from robust_mix.reference import Reference, RowSpec, compare
from robust_mix.results import BenchmarkResult
from robust_mix.stats import clopper_pearson
from terminal import FakeTTY, screen, shown

STANDARD = RowSpec("standard", "standard base", "fmnist-standard")
ROBUST = RowSpec("robust", "robust base", "fmnist-robust")
ADAPTIVE = RowSpec("adaptive", "adaptive smoothing", "fmnist-adasmooth", adaptive=True)


def run(robust: int, n: int, clean: float, *, fingerprint: str = "f", attack: str = "standard") -> BenchmarkResult:
    """A finished row: ``robust`` of ``n`` images robust (the first ones), ``clean`` on 10,000 images."""
    flags = [i < robust for i in range(n)]
    return BenchmarkResult(
        model="m", dataset="fashion-mnist", threat_model="Linf", eps=0.1, n_examples=n, attack=attack, seed=0,
        clean_accuracy=1.0, robust_accuracy=robust / n, suite_accuracy={"autoattack": robust / n},
        stage_accuracy={s: robust / n for s in ("apgd-ce", "apgd-t", "fab-t", "square")}, clean_flags=[True] * n,
        robust_flags=flags, suite_flags={"autoattack": flags}, wall_time_s=12.0, examples_per_second=1.0,
        number_forward_passes=1, attack_settings={}, options={}, config_fingerprint=fingerprint,
        full_clean_accuracy=clean, full_clean_examples=10_000)


SPECS = [STANDARD, ROBUST, ADAPTIVE]


def reference(*results: BenchmarkResult) -> Reference:
    return Reference.from_results(SPECS, list(results), command="python benchmarks/fmnist/claim.py --publish",
                                  date="2026-12-01")


def test_the_table_shows_clean_on_every_image_intervals_and_the_claims_ratios():
    live = [run(0, 20, 0.93), run(13, 20, 0.84), run(12, 20, 0.90)]
    text = demo.demo_report(SPECS, live, None, [compare(r, None) for r in live], "fmnist-reference.json")
    header, _, *rows = text.split("\n\n")[1].splitlines()
    assert "clean % (10,000)" in header and "robust % (first 20)" in header and "95 % interval" in header
    cells = [re.split(r" {2,}", row) for row in rows]
    # recovered = (90 - 84) / (93 - 84) = 66.7 %; kept = 60 / 65 = 92.3 %
    assert cells[2][:7] == ["adaptive smoothing", "fmnist-adasmooth", "90.00", "60.00",
                            percent_interval(clopper_pearson(12, 20)), "66.7", "92.3"]
    assert cells[0][2:7] == ["93.00", "0.00", percent_interval(clopper_pearson(0, 20)), "100.0", "0.0"]
    assert "No reference results to compare with: fmnist-reference.json is missing" in text


def test_the_reference_is_printed_beside_the_live_rows_with_one_verdict():
    shipped = reference(run(0, 1000, 0.93), run(650, 1000, 0.84), run(600, 1000, 0.90))
    live = [run(0, 20, 0.93), run(13, 20, 0.84), run(12, 20, 0.90)]
    comparisons = [compare(r, shipped.rows[s.key]) for s, r in zip(SPECS, live)]
    text = demo.demo_report(SPECS, live, shipped, comparisons, "fmnist-reference.json")
    assert "Reference results (fmnist-reference.json): python benchmarks/fmnist/claim.py --publish, 2026-12-01" in text
    table = text[text.index("Reference results"):]
    assert "robust % (first 20)" in table and "robust % (1,000)" in table
    robust = next(re.split(r" {2,}", line) for line in table.splitlines() if line.startswith("robust base"))
    # the reference's first 20 images are all robust (100 %): outside the live 13/20 interval
    assert robust[1:5] == ["84.00", "100.00", "65.00", percent_interval(clopper_pearson(650, 1000))]
    robust = "  ".join(robust)
    assert "DIFFERS: robust 100.0 % on the first 20 OUTSIDE the interval; 7 of 20 images differ" in robust
    assert text.splitlines()[-1] == ("This run agrees with the reference within the 95 % intervals on 1 of 3 "
                                     "compared rows; it DIFFERS on robust base, adaptive smoothing.")


def test_a_reference_of_other_weights_is_shown_but_said_not_to_be_compared():
    shipped = reference(run(0, 1000, 0.93, fingerprint="old"), run(650, 1000, 0.84, fingerprint="old"),
                        run(600, 1000, 0.90, fingerprint="old"))
    live = [run(0, 20, 0.93), run(13, 20, 0.84), run(12, 20, 0.90)]
    comparisons = [compare(r, shipped.rows[s.key]) for s, r in zip(SPECS, live)]
    line = demo.agreement_line([s.label for s in SPECS], comparisons)
    assert line == ("The reference was measured on other weights than these for 3 rows (standard base, robust base, "
                    "adaptive smoothing) (config fingerprints differ): shown for orientation, not compared.")
    comparisons[0] = compare(live[0], reference(run(0, 1000, 0.93), live[1], live[2]).rows["standard"])
    assert demo.agreement_line([s.label for s in SPECS], comparisons).startswith(
        "This run agrees with the reference within the 95 % intervals on all 1 of 1 compared rows. The reference "
        "was measured on other weights than these for robust base, adaptive smoothing")


def test_demo_compares_with_a_reference_and_keeps_a_state_per_setting(tmp_path, capsys, monkeypatch):
    """``make demo DEMO_EXAMPLES=5`` after a default run: a state per setting, not a refusal; and the
    reference (here written from the first run) printed beside the rows."""
    monkeypatch.setattr(demo, "DEMO_ROWS", (STANDARD,))
    out = tmp_path / "demo"
    args = ["demo", "--attack", "apgd-ce", "--clean-examples", "50", "--out", str(out)]
    for n in (2, 3):
        assert main([*args, "--n-examples", str(n)]) == 0
    printed = capsys.readouterr().out
    assert "attack: APGD-CE (100 iter), partial:" in printed and "2 of the leaderboard's 10,000" in printed
    assert "clean % (50)" in printed and "robust % (first 3)" in printed
    # the shipped reference (standard AutoAttack on 1,000 images) is read, but another attack is not compared
    assert "Reference results (robust_mix/zoo/weights/fmnist-reference.json)" in printed
    assert "not compared: the reference ran attack 'standard' (this run 'apgd-ce')" in printed
    states = sorted(p.name for p in (out / "fmnist-standard" / "state").iterdir())
    assert states == ["n2_apgd-ce_b100", "n3_apgd-ce_b100"]

    report = BenchmarkResult.from_json(out / "fmnist-standard" / "report.json")
    assert report.full_clean_examples == 50 and report.n_examples == 3
    path = Reference.from_results([STANDARD], [report], command="a test", date="today").save(tmp_path / "ref.json")
    assert main([*args, "--n-examples", "2", "--reference", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "Reference results (" in printed and "agrees: robust" in printed
    assert "on all 1 of 1 compared rows." in printed
    assert '"resumed_chunks": 1' in (out / "fmnist-standard" / "report.json").read_text()  # the third run resumed
    summary = json.loads((out / "demo.json").read_text())
    assert summary[0]["reference"]["status"] == "agrees" and summary[0]["full_clean_examples"] == 50
    assert summary[0]["robust_interval"] == list(clopper_pearson(0, 2))


def test_row_bars_show_the_stage_and_time_and_leave_nothing_between_or_after_them():
    logging.basicConfig()  # the CLI's console handler
    terminal = FakeTTY()
    with RowBars(["standard base", "adaptive smoothing"], file=terminal, refresh_s=0.02) as bars:
        bars.start(0, ["clean-full", "clean", "apgd-ce", "apgd-t"], 10)
        assert "clean, more images" in screen(terminal.getvalue())[0][0]
        bars.advance(0, "clean-full", 10)
        bars.advance(0, "clean", 10)
        bars.advance(0, "apgd-ce", 10)
        logging.getLogger("robust_mix.benchmark").info("an INFO line the bars replace")
        logging.getLogger("robust_mix.benchmark").warning("a warning")
        warnings.warn("a Python warning")
        time.sleep(0.1)
        lines = [line for line in screen(terminal.getvalue())[0] if line]
        assert lines[-2].startswith("     standard base:  50%|") and "APGD-T, stage 2/2]" in lines[-2]
        assert lines[-1] == "adaptive smoothing:   0%|                | [waiting for a worker]"
        above = lines[:-2]  # the warnings (a Python warning also quotes its source line), never an INFO line
        assert "a warning" in above[0] and "a Python warning" in above[1]
        assert not any("INFO" in line or "replace" in line for line in above)
        bars.advance(0, "apgd-t", 10)
        bars.finish(0)
        done = screen(terminal.getvalue())[0]
        assert any(line.endswith("100%|################| [00:00, done]") for line in done)
    # once closed, the next output starts where the bars were: only the warnings stay above it
    assert shown(terminal.getvalue()) == above


def _read_until(master: int, text: str, seconds: float) -> str:
    """What a pseudo-terminal received, read until ``text`` arrives or ``seconds`` pass: the kernel hands a pty's
    writes to its reader asynchronously, so one read may return only the earlier ones on a busy machine."""
    drawn, deadline = "", time.monotonic() + seconds
    while text not in drawn:
        ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        drawn += os.read(master, 65536).decode()
    return drawn


def test_row_bars_are_drawn_on_a_terminal_that_reports_no_width():
    # a pseudo-terminal whose size was never set says 0 columns; tqdm alone draws nothing there
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    with open(slave, "w", closefd=True) as terminal:
        assert os.get_terminal_size(terminal.fileno()).columns == 0
        with RowBars(["standard base"], file=terminal, refresh_s=0) as bars:
            bars.start(0, ["apgd-ce"], 4)
            bars.advance(0, "apgd-ce", 2)
            terminal.flush()
            drawn = _read_until(master, "standard base:  50%|", seconds=5)
    os.close(master)
    assert "standard base:  50%|" in drawn and "APGD-CE" in drawn


def test_a_ratio_just_short_of_the_claims_target_does_not_print_as_the_target():
    # kept = 47.48 / 50.00 = 94.96 %: "95.0" would read as meeting the claim's 95 %
    live = [run(0, 10_000, 0.93), run(5_000, 10_000, 0.84), run(4_748, 10_000, 0.90)]
    text = demo.demo_report(SPECS, live, None, [compare(r, None) for r in live], "fmnist-reference.json")
    adaptive = next(re.split(r" {2,}", line) for line in text.splitlines() if line.startswith("adaptive smoothing"))
    assert adaptive[6] == "94.96"
    assert demo._ratio(0.923077, demo.KEPT_TARGET) == "92.3" and demo._ratio(0.95, demo.KEPT_TARGET) == "95.0"
    assert demo._ratio(0.59996, demo.RECOVERED_TARGET) == "59.996" and demo._ratio(None) == "-"


def test_the_reference_names_the_attack_of_every_row():
    adaptive = run(600, 1000, 0.90, attack="standard+adaptive")
    adaptive.stage_accuracy["adaptive-apgd-ce"] = 0.6
    shipped = reference(run(0, 1000, 0.93), run(650, 1000, 0.84), adaptive)
    live = [run(0, 20, 0.93), run(13, 20, 0.84), run(12, 20, 0.90, attack="standard+adaptive")]
    comparisons = [compare(r, shipped.rows[s.key]) for s, r in zip(SPECS, live)]
    lines = demo.demo_report(SPECS, live, shipped, comparisons, "ref.json").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Reference results (ref.json)"))
    assert lines[start + 1].startswith("attack: AutoAttack, partial") and "(standard base, robust base)" in lines[start + 1]
    assert lines[start + 2].startswith("attack: AutoAttack + adaptive APGD-CE, partial") and lines[start + 2].endswith("(adaptive smoothing)")


def test_a_reference_at_another_eps_is_not_compared_and_the_verdict_says_so():
    shipped = reference(run(0, 1000, 0.93), run(650, 1000, 0.84), run(600, 1000, 0.90))
    live = [dataclasses.replace(r, eps=0.3) for r in (run(0, 20, 0.93), run(13, 20, 0.84), run(12, 20, 0.90))]
    comparisons = [compare(r, shipped.rows[s.key]) for s, r in zip(SPECS, live)]
    line = demo.agreement_line([s.label for s in SPECS], comparisons)
    assert "This run agrees" not in line and "not compared" in line and "eps" in line


def test_an_interrupted_rerun_leaves_no_summary_of_the_earlier_run(tmp_path, capsys, monkeypatch):
    """A rerun with other settings replaced the rows' reports as they finished; interrupted, it left the earlier
    run's demo.json beside them, a summary that no longer matched the reports."""
    monkeypatch.setattr(demo, "DEMO_ROWS", (STANDARD,))
    out = tmp_path / "demo"
    args = ["demo", "--attack", "apgd-ce", "--clean-examples", "4", "--workers", "1", "--out", str(out)]
    assert main([*args, "--n-examples", "2"]) == 0 and (out / "demo.json").is_file()

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_rows", interrupted)
    assert main([*args, "--n-examples", "3"]) == 130
    assert not (out / "demo.json").exists()
    assert "Traceback" not in capsys.readouterr().err


def test_a_rerun_with_other_settings_removes_the_rows_reports_of_the_earlier_run(tmp_path, capsys, monkeypatch):
    """The rows' folders kept the reports of an earlier demo with other settings until each row finished again: an
    interrupted rerun (or one whose row failed) left an --n-examples 2 report.json beside the --n-examples 3 run's
    reports and state, read as this run's."""
    monkeypatch.setattr(demo, "DEMO_ROWS", (STANDARD,))
    out = tmp_path / "demo"
    row = out / "fmnist-standard"
    args = ["demo", "--attack", "apgd-ce", "--clean-examples", "4", "--workers", "1", "--out", str(out)]
    assert main([*args, "--n-examples", "2"]) == 0
    written = {name: (row / name).read_bytes() for name in ("report.json", "model_info.json", "report.md")}
    capsys.readouterr()

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_rows", interrupted)
    assert main([*args, "--n-examples", "2"]) == 130  # the same settings: the finished row's report is its own
    assert {name: (row / name).read_bytes() for name in written} == written
    assert "removed" not in capsys.readouterr().out
    for other, differs in ((["--n-examples", "3"], "n_examples 2, now 3"),
                           (["--n-examples", "2", "--clean-examples", "5"], "clean_examples 4, now 5")):
        for name, data in written.items():
            (row / name).write_bytes(data)
        assert main([*args, *other]) == 130
        assert sorted(p.name for p in row.iterdir()) == ["state"], other
        printed = capsys.readouterr().out
        assert f"{row}: removed the report of an earlier demo with other settings ({differs})" in printed
    assert sorted(p.name for p in (row / "state").iterdir()) == ["n2_apgd-ce_b100"]  # its state kept, to resume


def test_a_failing_row_leaves_the_others_in_the_table_and_is_named(tmp_path, capsys, monkeypatch):
    """One row whose model could not be built ended the whole demo in its error: no table for the rows that had
    finished (or were still to run), and no summary."""
    broken = RowSpec("broken", "broken mix", "fmnist-robust,alpha=2")
    monkeypatch.setattr(demo, "DEMO_ROWS", (STANDARD, broken))
    out = tmp_path / "demo"
    assert main(["demo", "--attack", "apgd-ce", "--n-examples", "2", "--clean-examples", "4",
                 "--no-adaptive", "--workers", "1", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert re.search(r"^standard base +fmnist-standard", captured.out, re.M)  # the finished row's line
    assert "broken mix" not in captured.out
    assert "FAILED, not in the table: broken mix (fmnist-robust,alpha=2): InvalidInputError: alpha must lie in " \
           "[0, 1]" in captured.err and "Rerun the same command" in captured.err
    summary = json.loads((out / "demo.json").read_text())
    assert [row["key"] for row in summary] == ["standard", "broken"] and "alpha must lie" in summary[1]["error"]
