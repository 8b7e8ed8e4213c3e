"""benchmarks/fmnist/claim.py: the frontier's ratios and margin, the four checks, the verdict, the README
section between its markers, and one run that writes every artefact (reduced budgets)."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import pytest

from robust_mix.benchmark import BenchmarkResult
from robust_mix.io import LOCK_NAME
from robust_mix.protocol import AttackOptions
from robust_mix.reference import Reference, RowSpec

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "fmnist" / "claim.py"


@pytest.fixture(scope="module")
def claim():
    spec = importlib.util.spec_from_file_location("fmnist_claim", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(clean: float, robust: float, autoattack: float | None = None,
           adaptive: float | None = None) -> BenchmarkResult:
    suites = {"autoattack": robust if autoattack is None else autoattack}
    if adaptive is not None:
        suites["adaptive"] = adaptive
    return BenchmarkResult(model="m", dataset="fashion-mnist", threat_model="Linf", eps=0.1, n_examples=100,
                           attack="standard", seed=0, clean_accuracy=clean, robust_accuracy=robust,
                           suite_accuracy=suites, stage_accuracy={}, clean_flags=[], robust_flags=[],
                           suite_flags={}, wall_time_s=1.0, examples_per_second=100.0, number_forward_passes=2)


def test_frontier_takes_the_most_robust_ratio_as_accurate_and_the_next(claim):
    clean = {0.0: 0.90, 0.5: 0.88, 0.7: 0.86, 0.8: 0.84, 0.9: 0.82, 1.0: 0.78}
    assert claim.frontier_alphas(clean, 0.85) == [0.7, 0.8]
    assert claim.frontier_alphas(clean, 0.78) == [1.0]
    assert claim.frontier_alphas(clean, 0.95) == [0.0]


def test_frontier_margin_interpolates_robust_accuracy_in_clean_accuracy(claim):
    # the shipped zoo's figures before issue 16: alpha 0.85 (85.2 / 50.8) and 0.9 (82.9 / 54.4), adaptive 83.9 clean
    bracket = [(0.85, 0.852, 0.508), (0.9, 0.829, 0.544)]
    fixed = 0.508 + (0.852 - 0.839) / (0.852 - 0.829) * (0.544 - 0.508)  # 52.83 %
    close = claim.frontier_margin(0.839, 0.568, bracket)
    assert close["fixed_robust"] == pytest.approx(fixed) and close["value"] == pytest.approx(0.568 - fixed)
    assert not close["pass"] and close["alphas"] == [0.85, 0.9]  # 3.97 points: short of 4
    assert claim.frontier_margin(0.839, 0.569, bracket)["pass"]  # 4.07 points
    at_the_ends = claim.frontier_margin(0.852, 0.55, bracket), claim.frontier_margin(0.829, 0.55, bracket)
    assert [m["fixed_robust"] for m in at_the_ends] == pytest.approx([0.508, 0.544])
    alone = claim.frontier_margin(0.70, 0.60, [(1.0, 0.775, 0.628)])  # less accurate than every fixed ratio
    assert alone["fixed_robust"] == 0.628 and alone["value"] == pytest.approx(-0.028) and not alone["pass"]


def test_checks_compute_recovered_kept_gap_and_frontier(claim):
    reports = {"standard": result(0.90, 0.0), "robust": result(0.80, 0.60), "mixednuts": None,
               "adaptive": result(0.87, 0.565, autoattack=0.58, adaptive=0.57)}
    verdict = claim.checks(reports, [(0.7, 0.88, 0.45), (0.8, 0.86, 0.52)])
    assert verdict["recovered"]["value"] == pytest.approx(0.7) and verdict["recovered"]["pass"]
    assert "value_all" not in verdict["recovered"]  # clean accuracy on all images not measured
    assert verdict["kept"]["value"] == pytest.approx(0.58 / 0.60) and verdict["kept"]["pass"]
    assert verdict["adaptive_attack"]["value"] == pytest.approx(0.015) and not verdict["adaptive_attack"]["pass"]
    assert verdict["frontier"]["fixed_robust"] == pytest.approx(0.485) and verdict["frontier"]["pass"]
    assert set(claim.checks(reports, None)) == {"recovered", "kept", "adaptive_attack"}


def test_checks_leave_out_what_is_not_measured(claim):
    reports = {"standard": result(0.90, 0.0), "robust": None, "mixednuts": None, "adaptive": result(0.87, 0.5)}
    assert claim.checks(reports, None) == {}


def test_a_gap_that_is_not_there_is_undefined_not_missed(claim):
    # the strong bases agree on a few images: nothing to recover, and the verdict must not call that a miss
    reports = {"standard": result(1.0, 0.0), "robust": result(1.0, 0.9), "adaptive": result(1.0, 0.9, adaptive=0.9)}
    verdict = claim.checks(reports, None)
    assert verdict["recovered"]["value"] is None and verdict["recovered"]["pass"] is None
    assert "100 images; attack more images" in verdict["recovered"]["why"]
    assert claim.check_lines(verdict)[0].startswith("- clean-accuracy gap between the robust and the standard base "
                                                    "recovered: undefined (the standard base is not more accurate")
    sentence = claim.verdict_sentence(verdict, 100)
    assert sentence.startswith("**The claim is not fully measured yet**: on the first 100 test images the adaptive "
                               "model keeps 100.0 %") and "recovered (the standard base is not more" in sentence


def test_the_verdict_comes_from_the_checks(claim):
    reports = {"standard": result(0.90, 0.0), "robust": result(0.80, 0.60),
               "adaptive": result(0.87, 0.60, autoattack=0.60, adaptive=0.60)}
    holds = claim.checks(reports, [(0.7, 0.88, 0.45), (0.8, 0.86, 0.52)])
    assert claim.verdict_sentence(holds, 1000) == (
        "**The claim holds**: on the first 1,000 test images the adaptive model recovers 70.0 % of the "
        "clean-accuracy gap (target 60 %), keeps 100.0 % of the robust base's AutoAttack accuracy (target 95 %), "
        "loses 0.00 points to the adaptive attack (target at most 1) and is 11.50 points more robust than the fixed "
        "ratios at its clean accuracy (target 4).")
    reports["adaptive"] = result(0.83, 0.55, autoattack=0.57, adaptive=0.56)
    missed = claim.verdict_sentence(claim.checks(reports, [(0.7, 0.88, 0.45), (0.8, 0.86, 0.52)]), 1000)
    assert missed.startswith("**The claim does not hold yet**: on the first 1,000 test images the adaptive model "
                             "recovers 30.0 % of the clean-accuracy gap (target 60 %): missed, keeps 95.0 %")
    assert "docs/fmnist.md" in missed
    partial = claim.verdict_sentence(claim.checks(reports, None), 1000)
    assert partial.startswith("**The claim is not fully measured yet**")
    assert partial.endswith("Not measured: more robust than the fixed ratios at its clean accuracy.")


def test_a_margin_just_below_its_target_does_not_print_as_the_target(claim):
    # 3.97 points against a target of 4 must not read "4.0 points (target 4): missed"
    assert claim._figure(0.0397, "points") == "3.97 points"
    assert claim._figure(0.467, "%") == "46.7 %"


def test_the_published_command_names_only_options_that_change_the_results(claim):
    args = argparse.Namespace(**{**claim.DEFAULTS, "out": "/elsewhere/claim"})
    assert claim.canonical_command(args) == "python benchmarks/fmnist/claim.py --publish"
    args.n_examples = 200
    assert claim.canonical_command(args) == "python benchmarks/fmnist/claim.py --n-examples 200 --publish"


def test_readme_section_is_replaced_between_its_markers_only(claim):
    start, end = claim.MARKERS
    text = f"# title\nbefore\n{start}\nold table\nold verdict\n{end}\nafter\n"
    assert claim.replace_between_markers(text, "new block\n") == f"# title\nbefore\n{start}\nnew block\n{end}\nafter\n"
    for broken in (text.replace(end, ""), text + start, f"{end}\n{start}\n"):
        with pytest.raises(ValueError, match="expected one"):
            claim.replace_between_markers(broken, "x")
    readme = (ROOT / "README.md").read_text()
    assert readme.count(start) == 1 and readme.count(end) == 1  # the README has its section


def test_publishing_refuses_reports_that_are_not_the_claims(claim):
    specs = [RowSpec("standard", "standard base", "fmnist-standard")]
    shipped = robust_mix_fingerprint("fmnist-standard")
    good = dataclasses.replace(result(0.9, 0.0), config_fingerprint=shipped, full_clean_accuracy=0.9,
                               full_clean_examples=10_000)
    assert claim.check_publishable(specs, {"standard": good}) == []
    assert claim.check_publishable(specs, {"standard": None}) == ["row 'standard' is not measured yet"]
    stale = dataclasses.replace(good, config_fingerprint="0123")
    assert "measured on other weights" in claim.check_publishable(specs, {"standard": stale})[0]
    reduced = dataclasses.replace(good, options={"n_iter": 2})
    assert "budgets {'n_iter': 2}" in claim.check_publishable(specs, {"standard": reduced})[0]


def robust_mix_fingerprint(name: str) -> str:
    from robust_mix.loading import model_config_of

    return model_config_of(name).fingerprint()


@pytest.mark.slow  # seven tiny harness runs in this process
def test_one_run_writes_every_artefact_and_publishes_them(claim, tmp_path, monkeypatch, capsys):
    """Reduced budgets on 6 images (the rows in this process): RESULTS.md, sweep.png, the README section and a
    reference the demo reads, all from one command."""
    rows = tuple(s for s in claim.DEMO_ROWS if s.key != "mixednuts")  # MixedNUTS changes nothing here
    monkeypatch.setattr(claim, "DEMO_ROWS", rows)
    monkeypatch.setattr(claim, "CLEAN_EXAMPLES", 12)
    original = claim.benchmark_row

    def reduced(args, spec):
        row = original(args, spec)
        row.kwargs["options"] = AttackOptions(n_iter=2, n_target_classes=1, n_queries=5)
        return row

    monkeypatch.setattr(claim, "benchmark_row", reduced)
    publish_to = tmp_path / "repo"
    (publish_to / "benchmarks" / "fmnist").mkdir(parents=True)
    (publish_to / "robust_mix" / "zoo" / "weights").mkdir(parents=True)
    readme = publish_to / "README.md"
    readme.write_text(f"# robust_mix\n\n{claim.MARKERS[0]}\nSECTION-BEFORE-PUBLISH\n{claim.MARKERS[1]}\n\n## next\n")
    monkeypatch.setattr(claim, "ROOT", publish_to)
    monkeypatch.setattr(claim, "HERE", publish_to / "benchmarks" / "fmnist")
    monkeypatch.setattr(claim, "README", readme)
    out = tmp_path / "claim"
    argv = ["--n-examples", "6", "--batch-size", "6", "--grid", "0:1:0.25", "--out", str(out), "--workers", "1",
            "--threads", "1"]

    assert claim.main([*argv, "--publish"]) == 1  # reduced budgets: computed, but not published
    assert "not published" in capsys.readouterr().err and "SECTION-BEFORE-PUBLISH" in readme.read_text()
    for name in ("RESULTS.md", "sweep.png", "README-claim.md", "fmnist-reference.json", "claim.json"):
        assert (out / name).is_file(), name
    results = (out / "RESULTS.md").read_text()
    assert "`python benchmarks/fmnist/claim.py --n-examples 6 --grid 0:1:0.25 --batch-size 6 --publish`" in results and "95 % interval" in results
    assert "clean % (12)" in results and "clean % (first 6)" in results
    frontier = json.loads((out / "frontier.json").read_text())
    alphas = json.loads((out / "claim.json").read_text())["frontier"]["alphas"]
    assert alphas == claim.frontier_alphas({float(a): c for a, c in frontier["clean"].items()},
                                           frontier["adaptive_clean"])
    verdict = json.loads((out / "claim.json").read_text())["checks"]
    assert set(verdict) == {"recovered", "kept", "adaptive_attack", "frontier"}

    monkeypatch.setattr(claim, "check_publishable", lambda specs, reports: [])
    assert claim.main([*argv, "--publish"]) == 0  # every row resumes from its state: nothing is attacked again
    text = readme.read_text()
    assert "SECTION-BEFORE-PUBLISH" not in text and "## next" in text
    assert text.startswith("# robust_mix\n\n" + claim.MARKERS[0])
    assert claim.verdict_sentence(verdict, 6) in text and "| 95 % interval |" in text
    # the same tables; only the seconds column grows by the resumed session's few milliseconds
    seconds = lambda text: re.sub(r"\| \d+ \|$", "| s |", text, flags=re.M)  # noqa: E731
    assert seconds((publish_to / "benchmarks" / "fmnist" / "RESULTS.md").read_text()) == seconds(results)
    reports = sorted(p.name for p in (publish_to / "benchmarks" / "fmnist" / "results" / "claim").glob("*.json"))
    assert {"standard.report.json", "adaptive.report.json", "claim.json"} <= set(reports)
    reference = Reference.load(publish_to / "robust_mix" / "zoo" / "weights" / "fmnist-reference.json")
    assert list(reference.rows) == [s.key for s in rows]
    adaptive = BenchmarkResult.from_json(out / "fmnist-adasmooth" / "report.json")
    assert reference.rows["adaptive"].robust_flags == adaptive.robust_flags
    assert reference.rows["adaptive"].attack == "standard+adaptive" and reference.rows["adaptive"].clean_examples == 12
    assert reference.command == "python benchmarks/fmnist/claim.py --n-examples 6 --grid 0:1:0.25 --batch-size 6 --publish"
    cards = sorted(p.name for p in (publish_to / "benchmarks" / "reports").glob("*.json"))
    assert cards == sorted(f"{s.model}.json" for s in rows if "," not in s.model)  # entries as they ship
    card_report = BenchmarkResult.from_json(publish_to / "benchmarks" / "reports" / "fmnist-adasmooth.json")
    assert card_report.robust_flags == adaptive.robust_flags


def test_a_check_just_short_of_its_target_never_prints_as_the_target(claim):
    """Shares had one decimal: 59.96 % recovered read "60.0 % (target at least 60.0 %): does not hold", and a
    frontier margin of 3.996 points "4.00 points ... missed"."""
    reports = {"standard": result(0.90, 0.0), "robust": result(0.80, 0.60),
               "adaptive": result(0.859960, 0.56976, autoattack=0.56976, adaptive=0.56976)}
    verdict = claim.checks(reports, [(0.7, 0.88, 0.5), (0.8, 0.84, 0.5)])
    verdict["frontier"] = claim.frontier_margin(0.86, 0.53996, [(0.7, 0.88, 0.5), (0.8, 0.84, 0.5)])
    verdict["adaptive_attack"] = {"value": 0.010004, "target": 0.01, "pass": False}
    assert not any(v["pass"] for v in verdict.values())
    lines = "\n".join(claim.check_lines(verdict))
    assert "recovered: 59.96 % (target at least 60.0 %)" in lines
    assert "kept (adaptive AutoAttack / robust AutoAttack): 94.96 % (target at least 95.0 %)" in lines
    assert "at its clean accuracy: 3.996 points" in lines and "(AutoAttack - both): 1.0004 points" in lines
    sentence = claim.verdict_sentence(verdict, 1000)
    assert "recovers 59.96 % of" in sentence and "loses 1.0004 points" in sentence and "is 3.996 points" in sentence
    # exactly at the targets (up to float error: (0.86 - 0.8) / 0.1 is 0.5999999999999996): held, and read so
    exact = claim.checks({"standard": result(0.90, 0.0), "robust": result(0.80, 0.60),
                          "adaptive": result(0.86, 0.56, autoattack=0.57, adaptive=0.56)}, None)
    assert all(v["pass"] for v in exact.values())
    assert claim.verdict_sentence(exact, 1000).startswith(
        "**The claim is not fully measured yet**: on the first 1,000 test images the adaptive model recovers 60.0 % "
        "of the clean-accuracy gap (target 60 %), keeps 95.0 % of the robust base's AutoAttack accuracy (target 95 %) "
        "and loses 1.00 points to the adaptive attack (target at most 1).")


def _report(n: int, chunk: int) -> BenchmarkResult:
    """A finished row on ``n`` images, every one clean and robust, in chunks of ``chunk``."""
    flags = [True] * n
    return dataclasses.replace(result(1.0, 1.0), n_examples=n, chunk_size=chunk, full_clean_accuracy=0.9,
                               full_clean_examples=10_000, clean_flags=flags, robust_flags=flags,
                               suite_flags={"autoattack": flags},
                               stage_accuracy={s: 1.0 for s in ("apgd-ce", "apgd-t", "fab-t", "square")})


def test_reports_of_other_settings_are_set_aside_not_mixed_into_the_checks(claim, tmp_path):
    """Rows not run by this command were read from --out whatever they measured: a base from an earlier
    --n-examples 4 run stood beside an adaptive row on 1,000 images in one ratio, under a "first 1,000" heading,
    and could be published."""
    specs = [RowSpec("standard", "standard base", "fmnist-standard"), RowSpec("robust", "robust base", "fmnist-robust"),
             RowSpec("adaptive", "adaptive smoothing", "fmnist-adasmooth", adaptive=True)]
    for spec, report in zip(specs, [_report(4, 250), _report(1000, 100), _report(1000, 250)]):
        report.save(tmp_path / spec.folder / "report.json")
    args = argparse.Namespace(**{**claim.DEFAULTS, "out": str(tmp_path)})
    reports, set_aside = claim.read_reports(tmp_path, specs, args)
    assert reports["standard"] is None and reports["robust"] is None and reports["adaptive"].n_examples == 1000
    assert "on the first 4 test images (this run 1,000)" in set_aside["standard"]
    assert "in chunks of 100 (this run 250" in set_aside["robust"] and "another --out" in set_aside["robust"]
    assert claim.checks(reports, None) == {}  # no ratio from rows of other settings
    assert claim.check_publishable(specs, reports)[:2] == ["row 'standard' is not measured yet",
                                                            "row 'robust' is not measured yet"]
    text = claim.render_results("cmd", specs, reports, {}, {"clean": {"0.0": 0.9}, "adaptive_clean": 0.9}, None,
                                [], 1000, set_aside)
    assert "Not used, so shown as not measured (measured with other settings than this run): row standard:" in text
    args.n_examples = 4
    assert claim.read_reports(tmp_path, specs, args)[0]["standard"] is not None


@pytest.mark.parametrize("argv, match", [
    (["--grid", "0,abc"], "argument --grid: alphas '0,abc'"), (["--grid", "0,0.5,0.5"], "ratios repeat"),
    (["--n-examples", "20000"], "argument --n-examples: 20,000 is more than the 10,000"),
    (["--n-examples", "0"], "argument --n-examples"), (["--workers", "0"], "argument --workers"),
])
def test_bad_arguments_are_refused_before_anything_is_written(claim, tmp_path, capsys, argv, match):
    """A bad --grid or too many images was a traceback after --out was made (and the grid's clean accuracies
    computed); 0 workers or images ran into errors inside the rows."""
    with pytest.raises(SystemExit) as exited:
        claim.main([*argv, "--out", str(tmp_path / "out")])
    assert exited.value.code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- the committed artefacts are the published reports' --------------------------------------------------------
PUBLISHED = ROOT / "benchmarks" / "fmnist" / "results" / "claim"


def test_committed_results_and_readme_section_are_rendered_from_the_published_reports(claim):
    """RESULTS.md and the README's claim section are exactly what `python benchmarks/fmnist/claim.py --publish`
    renders from the reports it committed beside them: a number edited by hand, or a report replaced without
    publishing, fails here."""
    _, results_md, readme_block = claim.render_published(PUBLISHED)
    assert (ROOT / "benchmarks" / "fmnist" / "RESULTS.md").read_text() == results_md, \
        "benchmarks/fmnist/RESULTS.md is not its reports': run `python benchmarks/fmnist/claim.py --publish`"
    start, end = claim.MARKERS
    section = (ROOT / "README.md").read_text().split(start + "\n", 1)[1].split(end, 1)[0]
    assert section == readme_block + "\n", \
        "the README's claim section is not its reports': run `python benchmarks/fmnist/claim.py --publish`"


def test_a_hand_edited_number_is_not_what_the_reports_render(claim, tmp_path):
    copies = tmp_path / "claim"
    copies.mkdir()
    for path in PUBLISHED.glob("*.json"):
        (copies / path.name).write_text(path.read_text())
    report = json.loads((copies / "robust.report.json").read_text())
    report["full_clean_accuracy"] = round(report["full_clean_accuracy"] - 0.0001, 6)
    (copies / "robust.report.json").write_text(json.dumps(report))
    _, results_md, readme_block = claim.render_published(copies)
    assert results_md != (ROOT / "benchmarks" / "fmnist" / "RESULTS.md").read_text()
    assert readme_block not in (ROOT / "README.md").read_text()


def test_card_reports_and_the_shipped_reference_are_the_published_reports(claim):
    """The model cards' reports (benchmarks/reports/<entry>.json, `make cards` renders them) and the reference the
    main job prints (robust_mix/zoo/weights/fmnist-reference.json) are copies of the published rows' reports."""
    specs, _, _ = claim.render_published(PUBLISHED)
    from robust_mix.loading import parse_model_name

    entries = {parse_model_name(s.model).target: s.key for s in specs
               if parse_model_name(s.model).kind == "registry" and not parse_model_name(s.model).overrides}
    cards = sorted(p.stem for p in (ROOT / "benchmarks" / "reports").glob("*.json"))
    assert cards == sorted(entries)
    for entry, key in entries.items():
        assert (ROOT / "benchmarks" / "reports" / f"{entry}.json").read_bytes() == \
               (PUBLISHED / f"{key}.report.json").read_bytes(), f"benchmarks/reports/{entry}.json is stale"
    shipped_path = ROOT / "robust_mix" / "zoo" / "weights" / "fmnist-reference.json"
    shipped = Reference.load(shipped_path)
    rebuilt = Reference.from_results(claim.DEMO_ROWS, [BenchmarkResult.from_json(PUBLISHED / f"{s.key}.report.json")
                                                       for s in claim.DEMO_ROWS],
                                     command=shipped.command, date=shipped.date)
    assert rebuilt.to_dict() == shipped.to_dict()
    assert shipped.command == "python benchmarks/fmnist/claim.py --publish"


def test_a_second_claim_run_on_an_out_folder_in_use_is_refused_before_writing(claim, tmp_path, capsys, monkeypatch):
    """Two claim runs on one --out each wrote frontier.json, RESULTS.md, sweep.png and claim.json over the other's
    (only the rows' state folders were locked, by the harness)."""
    from test_concurrent_runs import held_elsewhere

    def worked(args):
        raise AssertionError("the frontier grid ran in a folder in use")

    monkeypatch.setattr(claim, "frontier_grid", worked)
    out = tmp_path / "out"
    with held_elsewhere(out) as holder:
        assert claim.main(["--out", str(out), "--n-examples", "2"]) == 2
    err = capsys.readouterr().err
    assert "output folder" in err and f"in use by another running robust_mix run (pid {holder.pid}" in err
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # the killed holder's, nothing of this run


def test_an_interrupted_publish_leaves_the_published_reports_of_one_run(claim, tmp_path, monkeypatch):
    """Publishing removed the committed reports, then wrote the new ones one by one and copied the plot and
    claim.json over the old ones in place: a publish interrupted midway left some reports, or none, beside the
    earlier claim.json (and could leave a half-copied sweep.png)."""
    import os

    from robust_mix.reference import Reference

    monkeypatch.setattr(claim, "ROOT", tmp_path / "repo")
    monkeypatch.setattr(claim, "HERE", tmp_path / "repo" / "benchmarks" / "fmnist")
    monkeypatch.setattr(claim, "README", tmp_path / "repo" / "README.md")
    (tmp_path / "repo" / "robust_mix" / "zoo" / "weights").mkdir(parents=True)
    claim.README.write_text(f"# r\n{claim.MARKERS[0]}\nold\n{claim.MARKERS[1]}\n")
    specs = [RowSpec("standard", "standard base", "fmnist-standard"), RowSpec("robust", "robust base", "fmnist-robust")]

    def publish(run: int) -> None:
        out = tmp_path / f"run{run}"
        out.mkdir(exist_ok=True)
        for name in ("sweep.png", "claim.json", "frontier.json"):
            (out / name).write_text(f"{name} of run {run}")
        results = [dataclasses.replace(result(0.9, 0.1 * run), full_clean_accuracy=0.9, full_clean_examples=100)
                   for _ in specs]
        reference = Reference.from_results(specs, results, command=f"run {run}", date="today")
        claim.publish(out, specs, dict(zip([s.key for s in specs], results)), f"results of run {run}",
                      f"section of run {run}", reference)

    publish(1)
    copies = claim.HERE / "results" / "claim"
    published = {p: p.read_bytes() for p in (*copies.iterdir(), claim.HERE / "sweep.png", claim.HERE / "RESULTS.md")}
    assert len(published) == 6 and b"of run 1" in (copies / "claim.json").read_bytes()
    fsync, calls = os.fsync, []

    def interrupted(fd):
        calls.append(fd)
        if len(calls) == 3:  # Ctrl-C while the second of the new files is written
            raise KeyboardInterrupt
        fsync(fd)

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        publish(2)
    monkeypatch.setattr(os, "fsync", fsync)
    now = {p: p.read_bytes() for p in (*copies.iterdir(), claim.HERE / "sweep.png", claim.HERE / "RESULTS.md")}
    runs = {p: 2 if b"of run 2" in now[p] or b'"robust_accuracy": 0.2' in now[p] else 1 for p in now}
    assert sorted(p.name for p in copies.iterdir()) == sorted(p.name for p in published if p.parent == copies)
    assert len({runs[p] for p in now if p.parent == copies}) == 1, runs  # the reports and claim.json of one run
    assert len({runs[claim.HERE / "sweep.png"], runs[claim.HERE / "RESULTS.md"]}) == 1, runs  # and the plot's
    publish(2)  # rerun: finished
    assert all(b"of run 2" in (copies / n).read_bytes() for n in ("claim.json", "frontier.json"))
    assert b'"robust_accuracy": 0.2' in (copies / "robust.report.json").read_bytes()
