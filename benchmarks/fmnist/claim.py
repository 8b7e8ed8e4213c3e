"""The paper's claim on the embedded Fashion-MNIST zoo, measured with the harness: one command for every artefact.

The command that made the committed results (run it again after training new weights):

    python benchmarks/fmnist/claim.py --publish

Options: [--n-examples 1000] [--out runs/claim] [--rows KEY ...] [--workers N] [--threads N]
[--grid 0:1:0.05] [--batch-size 250] [--publish].

Rows (each a resumable harness run: standard AutoAttack, l_inf eps 0.1, seed 0, on the first
``--n-examples`` test images, clean accuracy also on all 10,000; state and report under
``--out/<entry>/``), run side by side in worker processes (``robust_mix.rows.run_rows``; workers and
threads from the thread policy), one progress bar each:

* the main job's rows (``robust_mix.zoo.fmnist.DEMO_ROWS``): the standard and robust bases, the
  fixed-ratio mix the demo shows, MixedNUTS, and adaptive smoothing with the harness's adaptive
  suite added (robust = survives both);
* ``frontier``: the fixed-ratio mixes (``fmnist-robust,alpha=A``) at the two ratios that bracket the
  adaptive model's clean accuracy: clean accuracy is measured first at every ratio of ``--grid``
  (forward passes only), then AutoAttack runs at the largest ratio whose clean accuracy reaches the
  adaptive model's and at the next one up.

Finished rows are read back, interrupted ones resume, ``--rows`` picks a subset. One run per ``--out``: a second
one started on it while the first runs is refused (exit 2), naming the first one's process. A report under ``--out``
measured with other settings (another ``--n-examples`` or ``--batch-size``) is set aside: RESULTS.md names it
and shows its row as not measured, so no table, ratio or check mixes it with this run's rows. Every run ends by
writing, under ``--out``: ``RESULTS.md`` (tables with 95 % Clopper-Pearson intervals and the checks),
``sweep.png``, ``README-claim.md`` (the README's claim section), ``fmnist-reference.json`` (the
reference results the demo ships) and ``claim.json``. ``--publish`` (every row measured, each on the
weights the package ships now) also writes the committed copies: ``benchmarks/fmnist/RESULTS.md`` and
``sweep.png``, the reports in ``benchmarks/fmnist/results/claim/``, the README's section between its
``fmnist-claim`` markers, ``robust_mix/zoo/weights/fmnist-reference.json``, and each registered entry's
report as ``benchmarks/reports/<entry>.json``, which ``make cards`` puts in the entry's model card.

The claim (issue 16), on the first ``--n-examples`` test images: the adaptive model recovers at least
60 % of the clean-accuracy gap between the robust and the standard base, keeps at least 95 % of the
robust base's AutoAttack accuracy, loses at most 1 point to the adaptive attack, and lies above the
fixed-ratio frontier: at its clean accuracy, at least 4 points more robust than the fixed ratios,
interpolated linearly in clean accuracy between the two bracketing ratios.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import robust_mix
from robust_mix import threads
from robust_mix.cli import POSITIVE_INT
from robust_mix.cli.benchmark import RowBars
from robust_mix.data import load_dataset
from robust_mix.formatting import TARGET_SLACK, evaluation_label, percent, percent_beside_target, percent_interval
from robust_mix.io import FolderInUseError, FolderLock, atomic_write_files, atomic_write_text
from robust_mix.loading import model_config_of, parse_model_name
from robust_mix.parallel import default_workers
from robust_mix.reference import Reference, RowSpec
from robust_mix.results import BenchmarkResult
from robust_mix.rows import BenchmarkRow, run_rows
from robust_mix.sweep import POLICY, SweepPoint, kept_robustness, parse_alphas, plot_sweep, recovered_gap
from robust_mix.train import accuracy
from robust_mix.zoo.fmnist import DEMO_ROWS, REFERENCE_FILE

logger = logging.getLogger("claim")

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
README = ROOT / "README.md"
#: Where ``robust-mix card --all`` (``make cards``) finds a registered entry's report (``<entry>.json``).
CARD_REPORTS = Path("benchmarks") / "reports"
MARKERS = ("<!-- fmnist-claim:start -->", "<!-- fmnist-claim:end -->")
#: The entry whose fixed ratios make the frontier (the two bases mixed at alpha).
FIXED_MIX = "fmnist-robust"
TARGET_RECOVERED, TARGET_KEPT, TARGET_ADAPTIVE_GAP, TARGET_FRONTIER_MARGIN = 0.60, 0.95, 0.01, 0.04
DEFAULTS = {"n_examples": 1000, "out": "runs/claim", "grid": "0:1:0.05", "batch_size": 250}
#: The options that change the measured figures (the rest choose where and how fast).
RESULT_OPTIONS = ("n_examples", "grid", "batch_size")
CLEAN_EXAMPLES = 10_000


# -- the rows ------------------------------------------------------------------------------------------------
def frontier_alphas(clean: dict[float, float], target: float) -> list[float]:
    """The largest ratio whose clean accuracy reaches ``target`` and the next one up (of the sorted grid);
    the smallest ratio alone when none reaches it, the largest alone when every ratio does."""
    grid = sorted(clean)
    reaching = [a for a in grid if clean[a] >= target]
    if not reaching:
        return grid[:1]
    best = max(reaching)
    return [best] + [a for a in grid if a > best][:1]


def fixed_ratio_spec(alpha: float) -> RowSpec:
    return RowSpec(f"alpha-{alpha:g}", f"fixed ratio alpha {alpha:g}", f"{FIXED_MIX},alpha={alpha:g}")


def claim_rows(alphas: Sequence[float]) -> list[RowSpec]:
    """The demo's rows, then the frontier's ratios that are not one of them (same configuration: same row)."""
    specs = list(DEMO_ROWS)
    known = {model_config_of(s.model).fingerprint() for s in specs}
    for alpha in alphas:
        spec = fixed_ratio_spec(alpha)
        if model_config_of(spec.model).fingerprint() not in known:
            specs.append(spec)
    return specs


def spec_of_alpha(specs: Sequence[RowSpec], alpha: float) -> RowSpec:
    """The row that evaluates the fixed mix at ``alpha`` (a base row at 0 and 1)."""
    wanted = model_config_of(fixed_ratio_spec(alpha).model).fingerprint()
    return next(s for s in specs if model_config_of(s.model).fingerprint() == wanted)


def frontier_grid(args: argparse.Namespace) -> dict[str, Any]:
    """Clean accuracy on the first ``--n-examples`` images at every ratio of ``--grid`` and of the adaptive
    model (forward passes; cached in ``--out/frontier.json`` for these weights and settings)."""
    path = Path(args.out) / "frontier.json"
    key = {"grid": args.grid, "n_examples": args.n_examples,
           "fixed_mix": model_config_of(FIXED_MIX).fingerprint(),
           "adaptive": model_config_of(adaptive_spec().model).fingerprint()}
    if path.is_file():
        done = json.loads(path.read_text())
        if {k: done.get(k) for k in key} == key:
            return done
    images, labels = load_dataset("fashion-mnist", "test", n_examples=args.n_examples)
    mix = robust_mix.load_model(FIXED_MIX)
    clean = {}
    for alpha in parse_alphas(args.grid):
        mix.alpha = alpha
        clean[str(alpha)] = accuracy(mix, images, labels)
    done = {**key, "clean": clean, "adaptive_clean": accuracy(robust_mix.load_model(adaptive_spec().model),
                                                              images, labels)}
    atomic_write_text(path, json.dumps(done, indent=2) + "\n")
    return done


def adaptive_spec() -> RowSpec:
    return next(s for s in DEMO_ROWS if s.key == "adaptive")


def benchmark_row(args: argparse.Namespace, spec: RowSpec) -> BenchmarkRow:
    out = Path(args.out) / spec.folder
    return BenchmarkRow(spec.label, functools.partial(robust_mix.load_model, spec.model),
                        dict(n_examples=args.n_examples, attack="standard", adaptive=spec.adaptive,
                             batch_size=args.batch_size, chunk_size=args.batch_size, seed=0,
                             clean_examples=CLEAN_EXAMPLES, state_dir=out / "state"),
                        report_dir=out, command=args.command_line)


def other_settings(result: BenchmarkResult, args: argparse.Namespace) -> list[str]:
    """How a finished row's report was measured otherwise than this run asks (empty: as asked): its figures
    cannot stand beside this run's in one table or one ratio."""
    what = []
    if result.n_examples != args.n_examples:
        what.append(f"on the first {result.n_examples:,} test images (this run {args.n_examples:,})")
    if result.chunk_size and result.chunk_size != args.batch_size:
        what.append(f"in chunks of {result.chunk_size} (this run {args.batch_size}; each chunk seeds its attack)")
    if result.full_clean_examples != CLEAN_EXAMPLES:
        what.append(f"with clean accuracy on {result.full_clean_examples} images (this run {CLEAN_EXAMPLES:,})")
    return what


def read_reports(out: Path, specs: Sequence[RowSpec], args: argparse.Namespace
                 ) -> tuple[dict[str, Optional[BenchmarkResult]], dict[str, str]]:
    """The finished rows' reports under ``out`` (``None``: not measured) and, by row, why a report there was set
    aside: measured with other settings (:func:`other_settings`), e.g. by an earlier run with another
    ``--n-examples``, it is left out of every table, ratio and check rather than mixed with this run's rows."""
    reports: dict[str, Optional[BenchmarkResult]] = {}
    set_aside: dict[str, str] = {}
    for spec in specs:
        path = out / spec.folder / "report.json"
        report = BenchmarkResult.from_json(path) if path.is_file() else None
        differences = other_settings(report, args) if report is not None else []
        if differences:
            set_aside[spec.key] = (f"{path} was measured {', '.join(differences)}; measure these settings in "
                                   "another --out (the row's state there holds the other run)")
            report = None
        reports[spec.key] = report
    return reports, set_aside


def set_aside_lines(set_aside: dict[str, str]) -> list[str]:
    """What RESULTS.md says of the reports it left out (none: nothing)."""
    if not set_aside:
        return []
    return ["Not used, so shown as not measured (measured with other settings than this run): "
            + "; ".join(f"row {key}: {why}" for key, why in set_aside.items()) + ".", ""]


# -- the checks ----------------------------------------------------------------------------------------------
def frontier_margin(adaptive_clean: float, adaptive_robust: float,
                    bracket: Sequence[tuple[float, float, float]]) -> dict[str, Any]:
    """How much more robust the adaptive model is than the fixed ratios at its clean accuracy.

    ``bracket``: ``(alpha, clean, robust)`` of the bracketing ratios, by increasing alpha (clean
    accuracy falls with alpha): the fixed ratios' robust accuracy is interpolated linearly in clean
    accuracy at ``adaptive_clean`` between the two; with one ratio, that ratio's robust accuracy is used.
    """
    if len(bracket) == 2 and bracket[0][1] > bracket[1][1]:
        (_, c_lo, r_lo), (_, c_hi, r_hi) = bracket
        weight = min(1.0, max(0.0, (c_lo - adaptive_clean) / (c_lo - c_hi)))
        fixed = r_lo + weight * (r_hi - r_lo)
    else:
        fixed = max(robust for _, _, robust in bracket)
    margin = adaptive_robust - fixed
    return {"value": margin, "fixed_robust": fixed, "alphas": [a for a, _, _ in bracket],
            "target": TARGET_FRONTIER_MARGIN, "pass": margin >= TARGET_FRONTIER_MARGIN - TARGET_SLACK}


def checks(reports: dict[str, Optional[BenchmarkResult]], bracket: Optional[list[tuple[float, float, float]]]
           ) -> dict[str, Any]:
    """The four parts of the claim, each with its figures (left out when not measured yet).

    Every figure is on the attacked first images; ``recovered`` also gives the value with clean
    accuracy on all 10,000 test images (``value_all``) where it was measured.
    """
    std, rob, ada = reports.get("standard"), reports.get("robust"), reports.get("adaptive")
    result: dict[str, Any] = {}
    if std and rob and ada:
        recovered = recovered_gap(ada.clean_accuracy, std.clean_accuracy, rob.clean_accuracy)
        kept = kept_robustness(ada.autoattack_accuracy, rob.robust_accuracy)
        if recovered is None:  # the bases agree on these images: there is no gap to recover
            result["recovered"] = {"value": None, "target": TARGET_RECOVERED, "pass": None,
                                   "why": f"the standard base is not more accurate than the robust base on these "
                                          f"{ada.n_examples:,} images; attack more images"}
        else:
            result["recovered"] = {"value": recovered, "target": TARGET_RECOVERED,
                                   "pass": recovered >= TARGET_RECOVERED - TARGET_SLACK}
        if None not in (ada.full_clean_accuracy, std.full_clean_accuracy, rob.full_clean_accuracy):
            result["recovered"]["value_all"] = recovered_gap(ada.full_clean_accuracy, std.full_clean_accuracy,
                                                             rob.full_clean_accuracy)
        if kept is not None:
            result["kept"] = {"value": kept, "target": TARGET_KEPT, "pass": kept >= TARGET_KEPT - TARGET_SLACK}
    if ada and ada.adaptive_accuracy is not None:
        drop = ada.autoattack_accuracy - ada.robust_accuracy
        result["adaptive_attack"] = {"value": drop, "target": TARGET_ADAPTIVE_GAP,
                                     "pass": drop <= TARGET_ADAPTIVE_GAP + TARGET_SLACK}
    if ada and bracket:
        result["frontier"] = frontier_margin(ada.clean_accuracy, ada.robust_accuracy, bracket)
    return result


CHECKS = {  # key -> (what is measured, how the target reads, unit)
    "recovered": ("clean-accuracy gap between the robust and the standard base recovered", "at least", "%"),
    "kept": ("robust base's AutoAttack accuracy kept (adaptive AutoAttack / robust AutoAttack)", "at least", "%"),
    "adaptive_attack": ("accuracy lost to the adaptive attack (AutoAttack - both)", "at most", "points"),
    "frontier": ("more robust than the fixed ratios at its clean accuracy", "at least", "points"),
}


def _figure(value: float, unit: str, target: Optional[float] = None, at_most: bool = False) -> str:
    """A check's figure: points with two decimals, shares with one; beside its ``target`` never rounded onto it
    when it misses it (3.996 points is "3.996 points (target 4): missed", never "4.00 points")."""
    decimals = 2 if unit == "points" else 1
    text = (f"{100 * value:.{decimals}f}" if target is None
            else percent_beside_target(value, target, decimals, at_most=at_most))
    return f"{text} {unit}" if unit == "points" else f"{text} %"


def _measured(key: str, check: dict[str, Any]) -> str:
    """The figure of a measured check, beside its target."""
    _, how, unit = CHECKS[key]
    return _figure(check["value"], unit, check["target"], at_most=how == "at most")


def check_lines(verdict: dict[str, Any]) -> list[str]:
    """One Markdown bullet per check: measured figure, target, holds or not."""
    lines = []
    for key, (title, how, unit) in CHECKS.items():
        if key not in verdict:
            lines.append(f"- {title}: not measured yet")
            continue
        v = verdict[key]
        extra = ""
        if v["value"] is None:
            lines.append(f"- {title}: undefined ({v['why']})")
            continue
        if key == "recovered" and v.get("value_all") is not None:
            extra = (f" ({_figure(v['value_all'], unit, v['target'])} with clean accuracy on all {CLEAN_EXAMPLES:,} "
                     "test images)")
        if key == "frontier":
            extra = (f" (fixed ratios interpolated at alpha {' and '.join(f'{a:g}' for a in v['alphas'])}: "
                     f"{percent(v['fixed_robust'])} % robust)")
        lines.append(f"- {title}: {_measured(key, v)}{extra} (target {how} {_figure(v['target'], unit)}): "
                     f"**{'holds' if v['pass'] else 'does not hold'}**")
    return lines


def verdict_sentence(verdict: dict[str, Any], n_examples: int) -> str:
    """The README's verdict, from the measured checks."""
    missing = [CHECKS[k][0] + (f" ({verdict[k]['why']})" if k in verdict else "")
               for k in CHECKS if k not in verdict or verdict[k]["value"] is None]
    figures = {k: _measured(k, v) for k, v in verdict.items() if v["value"] is not None}
    parts = []
    for key, template in (("recovered", "recovers {} of the clean-accuracy gap (target 60 %)"),
                          ("kept", "keeps {} of the robust base's AutoAttack accuracy (target 95 %)"),
                          ("adaptive_attack", "loses {} to the adaptive attack (target at most 1)"),
                          ("frontier", "is {} more robust than the fixed ratios at its clean accuracy (target 4)")):
        if key in figures:
            parts.append(template.format(figures[key]) + ("" if verdict[key]["pass"] else ": missed"))
    measured = "the adaptive model " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] \
        if parts else "nothing is measured yet"
    if missing:
        head = "**The claim is not fully measured yet**"
        tail = f" Not measured: {'; '.join(missing)}."
    elif all(v["pass"] for v in verdict.values()):
        head, tail = "**The claim holds**", ""
    else:
        head = "**The claim does not hold yet**"
        tail = " What was tried and what is left: [docs/fmnist.md](docs/fmnist.md)."
    return f"{head}: on the first {n_examples:,} test images {measured}.{tail}"


# -- the tables ----------------------------------------------------------------------------------------------
def _row(spec: RowSpec, r: Optional[BenchmarkResult]) -> list[str]:
    if r is None:
        return [spec.label, f"`{spec.model}`", "not measured", "", "", "", "", "", ""]
    return [spec.label, f"`{spec.model}`", percent(r.full_clean_accuracy), percent(r.clean_accuracy),
            percent(r.autoattack_accuracy), percent(r.adaptive_accuracy), percent(r.robust_accuracy),
            percent_interval(r.robust_interval()), f"{r.wall_time_s:.0f}"]


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                     + ["| " + " | ".join(row) + " |" for row in rows])


def results_table(specs: Sequence[RowSpec], reports: dict[str, Optional[BenchmarkResult]], n: int) -> str:
    return markdown(["model", "entry", f"clean % ({CLEAN_EXAMPLES:,})", f"clean % (first {n:,})", "AutoAttack %",
                     "adaptive attack %", "robust % (both)", "95 % interval", "seconds"],
                    [_row(s, reports[s.key]) for s in specs])


def attack_line(reports: dict[str, Optional[BenchmarkResult]]) -> str:
    labels: dict[str, list[str]] = {}
    for key, r in reports.items():
        if r is not None:
            labels.setdefault(evaluation_label(r), []).append(key)
    return "; ".join(f"{label} (rows {', '.join(keys)})" for label, keys in labels.items()) or "no row measured yet"


def frontier_text(grid: dict[str, Any], bracket: Optional[list[tuple[float, float, float]]],
                  fixed: list[tuple[float, float]]) -> str:
    clean = sorted((float(a), c) for a, c in grid["clean"].items())
    text = ("Clean accuracy of fixed ratios on the same images (forward passes only): "
            + ", ".join(f"{a:g}: {100 * c:.1f}" for a, c in clean)
            + f"; the adaptive model: {100 * grid['adaptive_clean']:.1f}. AutoAttack ran at the largest ratio whose "
              "clean accuracy reaches the adaptive model's and at the next one up")
    if bracket:
        text += " (" + ", ".join(f"alpha {a:g}: clean {100 * c:.1f}, robust {100 * r:.1f}" for a, c, r in bracket) + ")"
    rising = all(b[1] >= a[1] for a, b in zip(fixed, fixed[1:]))
    along = ", ".join(f"{a:g}: {100 * r:.1f}" for a, r in fixed)
    return text + (". Along the measured ratios (" + along + ") robust accuracy rises with alpha, so the smaller, "
                   "unattacked ratios are taken to be less robust than the bracketing ones (an assumption, not a "
                   "measurement)." if rising else ". Robust accuracy does NOT rise monotonically along the measured "
                   "ratios (" + along + "): the frontier check covers only the attacked ratios.")


def render_results(command: str, specs: Sequence[RowSpec], reports: dict[str, Optional[BenchmarkResult]],
                   verdict: dict[str, Any], grid: dict[str, Any], bracket, fixed, n: int,
                   set_aside: Optional[dict[str, str]] = None) -> str:
    return "\n".join([
        "# Fashion-MNIST: the adaptive-smoothing claim, measured", "",
        f"Produced by `{command}` (robust_mix {robust_mix.__version__}); the rows ran side by side, one worker "
        "process per usable CPU. Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; pyautoattack, seed 0) "
        f"through the harness, l_inf eps = 0.1, on the first {n:,} Fashion-MNIST test images; clean accuracy also "
        f"on all {CLEAN_EXAMPLES:,}. The adaptive model is also attacked with the harness's adaptive suite "
        "(composite loss with the mixing network's BCE term); its robust accuracy counts an image only if it "
        "survives both. Intervals: 95 % Clopper-Pearson, of the robust accuracy on the attacked images. Seconds: "
        "wall time of each row on one CPU core. Reports: `benchmarks/fmnist/results/claim/<row>.report.json`.", "",
        f"Attacks: {attack_line(reports)}.", "",
        results_table(specs, reports, n), "",
        *set_aside_lines(set_aside or {}),
        "## The claim", "",
        *check_lines(verdict), "",
        frontier_text(grid, bracket, fixed), "",
        "![accuracy-robustness trade-off](sweep.png)", ""])


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def render_readme_block(command: str, specs: Sequence[RowSpec], reports: dict[str, Optional[BenchmarkResult]],
                        verdict: dict[str, Any], n: int) -> str:
    """The README's claim section between the markers (table, plot, verdict), all from the reports."""
    seconds = [r.wall_time_s for r in reports.values() if r is not None]
    timing = (f" ({_duration(min(seconds))} to {_duration(max(seconds))} per row on one CPU core of this "
              "machine, the rows side by side)" if seconds else "")
    rows = [[f"{s.label} (`{s.model}`)", *_row(s, reports[s.key])[2:8]] for s in specs]
    return "\n".join([
        f"Standard AutoAttack through the harness at l_inf eps = 0.1 on the first {n:,} test images, plus the "
        f"harness's adaptive attack on the adaptive model; clean accuracy also on all {CLEAN_EXAMPLES:,}. Measured "
        f"with `{command}`{timing}; it writes this section, "
        "[benchmarks/fmnist/RESULTS.md](benchmarks/fmnist/RESULTS.md) (the checks in detail), the plot and the "
        f"reference results the main job prints (`robust_mix/{REFERENCE_FILE}`).", "",
        markdown(["model", f"clean % ({CLEAN_EXAMPLES:,})", f"clean % (first {n:,})", "AutoAttack %",
                  "adaptive attack %", "robust % (both)", "95 % interval"], rows), "",
        "![Fashion-MNIST trade-off under standard AutoAttack](benchmarks/fmnist/sweep.png)", "",
        verdict_sentence(verdict, n)])


def replace_between_markers(text: str, block: str, markers: tuple[str, str] = MARKERS) -> str:
    """``text`` with what lies between the two marker lines replaced by ``block``.

    Raises:
        ValueError: a marker is missing, repeated or out of order (names it).
    """
    start, end = markers
    counts = {m: text.count(m) for m in markers}
    if any(c != 1 for c in counts.values()) or text.index(start) > text.index(end):
        raise ValueError(f"expected one {start!r} line followed by one {end!r} line, found {counts}; put the "
                         "markers around the claim section of the README")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block.strip()}\n{end}{tail}"


def sweep_points(specs: Sequence[RowSpec], reports: dict[str, Optional[BenchmarkResult]]) -> list[SweepPoint]:
    """Measured fixed ratios (the bases are alpha 0 and 1) and the adaptive policy, clean on the attacked images."""
    points = []
    for spec in specs:
        r, config = reports[spec.key], model_config_of(spec.model)
        if r is None or config.nuts is not None or (config.policy is not None and spec.key != "adaptive"):
            continue
        alpha = POLICY if spec.key == "adaptive" else float(config.alpha)
        points.append(SweepPoint(alpha, r.clean_accuracy, r.robust_accuracy, r.attack, r.n_examples, r.wall_time_s,
                                 evaluation_label(r), dataset=r.dataset, threat_model=r.threat_model, eps=r.eps))
    return sorted(points, key=lambda p: (p.alpha == POLICY, 0 if p.alpha == POLICY else p.alpha))


def render(command: str, specs: Sequence[RowSpec], alphas: Sequence[float], grid: dict[str, Any],
           reports: dict[str, Optional[BenchmarkResult]], n: int, set_aside: Optional[dict[str, str]] = None
           ) -> tuple[dict[str, Any], list[SweepPoint], str, str]:
    """The checks, the plot's points, RESULTS.md and the README section, all from the rows' reports and the
    frontier's clean accuracies."""
    measured = [(a, reports[spec_of_alpha(specs, a).key]) for a in alphas]
    bracket = ([(a, r.clean_accuracy, r.robust_accuracy) for a, r in measured]
               if all(r is not None for _, r in measured) else None)
    verdict = checks(reports, bracket)
    points = sweep_points(specs, reports)
    fixed = [(p.alpha, p.robust_accuracy) for p in points if p.alpha != POLICY]
    results_md = render_results(command, specs, reports, verdict, grid, bracket, fixed, n, set_aside)
    return verdict, points, results_md, render_readme_block(command, specs, reports, verdict, n)


def render_published(copies: Path = HERE / "results" / "claim") -> tuple[list[RowSpec], str, str]:
    """The rows, RESULTS.md and the README section as :func:`main` renders them from the copies ``--publish``
    commits (the rows' reports and ``frontier.json``): the committed texts must be exactly these."""
    grid = json.loads((copies / "frontier.json").read_text())
    alphas = frontier_alphas({float(a): c for a, c in grid["clean"].items()}, grid["adaptive_clean"])
    specs = claim_rows(alphas)
    reports: dict[str, Optional[BenchmarkResult]] = {
        s.key: BenchmarkResult.from_json(copies / f"{s.key}.report.json") for s in specs}
    chunks = {r.chunk_size for r in reports.values()}
    if len(chunks) != 1:
        raise ValueError(f"the published rows ran in different chunk sizes {sorted(chunks)}")
    args = argparse.Namespace(**{**DEFAULTS, "n_examples": grid["n_examples"], "grid": grid["grid"],
                                 "batch_size": chunks.pop()})
    _, _, results_md, readme_block = render(canonical_command(args), specs, alphas, grid, reports,
                                            args.n_examples)
    return specs, results_md, readme_block


# -- main ----------------------------------------------------------------------------------------------------
def canonical_command(args: argparse.Namespace) -> str:
    """The command that reproduces these results: the options that change them, defaults left out (``--out``,
    ``--workers`` and ``--threads`` change where and how fast, not what is measured)."""
    options = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k in RESULT_OPTIONS if getattr(args, k) != DEFAULTS[k]]
    return " ".join(["python benchmarks/fmnist/claim.py", *options, "--publish"])


def check_publishable(specs: Sequence[RowSpec], reports: dict[str, Optional[BenchmarkResult]]) -> list[str]:
    """Why these reports cannot become the committed results (empty: they can)."""
    problems = [f"row {s.key!r} is not measured yet" for s in specs if reports[s.key] is None]
    for spec in specs:
        r = reports[spec.key]
        shipped = model_config_of(spec.model).fingerprint()
        if r is not None and r.config_fingerprint != shipped:
            problems.append(f"row {spec.key!r} was measured on other weights or constants (config fingerprint "
                            f"{r.config_fingerprint}; the package ships {shipped}): rerun it with a fresh --out")
        if r is not None and (r.options or r.seed != 0 or r.full_clean_examples != CLEAN_EXAMPLES):
            problems.append(f"row {spec.key!r} was not measured as the claim asks (budgets {r.options or 'full'}, "
                            f"seed {r.seed}, clean accuracy on {r.full_clean_examples} images)")
    return problems


def grid_text(text: str) -> str:
    """``--grid``: ratios :func:`robust_mix.sweep.parse_alphas` reads, checked with the arguments (kept as text: the
    cached frontier.json is keyed by it)."""
    try:
        parse_alphas(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-examples", type=POSITIVE_INT, default=DEFAULTS["n_examples"], help="attacked test images")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=DEFAULTS["batch_size"],
                        help="attack batch and resumable chunk size")
    parser.add_argument("--out", default=DEFAULTS["out"], help="state, reports and the artefacts go here")
    parser.add_argument("--rows", nargs="*", choices=[s.key for s in DEMO_ROWS] + ["frontier"],
                        help="run only these rows (default: all); the others are read from --out if finished")
    parser.add_argument("--grid", type=grid_text, default=DEFAULTS["grid"],
                        help="fixed ratios for the clean-accuracy frontier ('0,0.5,1' or start:stop:step)")
    parser.add_argument("--workers", type=POSITIVE_INT, help="worker processes (default: one per usable CPU)")
    parser.add_argument("--threads", type=POSITIVE_INT, help="threads per worker (default: the thread policy)")
    parser.add_argument("--publish", action="store_true",
                        help="also write the committed results, the README section and the shipped reference")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n_examples > CLEAN_EXAMPLES:
        parser.error(f"argument --n-examples: {args.n_examples:,} is more than the {CLEAN_EXAMPLES:,} Fashion-MNIST "
                     f"test images; pass at most {CLEAN_EXAMPLES}")
    args.command_line = "python " + shlex.join(sys.argv if argv is None else [sys.argv[0], *argv])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threads.apply_thread_policy(args.threads)
    out = Path(args.out)
    try:  # one run per --out: a second one would write frontier.json, RESULTS.md and the rest over this one's
        lock = FolderLock(out, "output folder").acquire()
    except FolderInUseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        return _run(args, out)
    finally:
        lock.release()


def _run(args: argparse.Namespace, out: Path) -> int:
    """:func:`main` with the arguments checked and ``out`` locked."""
    grid = frontier_grid(args)
    clean = {float(a): c for a, c in grid["clean"].items()}
    alphas = frontier_alphas(clean, grid["adaptive_clean"])
    specs = claim_rows(alphas)
    frontier_keys = {spec_of_alpha(specs, a).key for a in alphas}
    selected = [s for s in specs if args.rows is None or s.key in args.rows
                or ("frontier" in args.rows and s.key in frontier_keys)]
    logger.info("frontier ratios %s; rows to run: %s", alphas, [s.key for s in selected])
    if selected:
        rows = [benchmark_row(args, s) for s in selected]
        # the adaptive row (two suites) is the longest: it starts first, the cheap bases last
        order = sorted(range(len(rows)), key=lambda i: (not selected[i].adaptive, selected[i].key in
                                                        ("standard", "robust")))
        with RowBars([r.label for r in rows]) as bars:
            run_rows(rows, workers=args.workers or default_workers(len(rows)), progress=bars,
                     threads_per_worker=args.threads, start_order=order)

    reports, set_aside = read_reports(out, specs, args)
    for why in set_aside.values():
        logger.warning("not used: %s", why)
    command = canonical_command(args)
    verdict, points, results_md, readme_block = render(command, specs, alphas, grid, reports, args.n_examples,
                                                       set_aside)
    if points:
        plot_sweep(points, out / "sweep.png",
                   title=f"Fashion-MNIST, first {args.n_examples:,} test images (fixed ratios of {FIXED_MIX})")
    atomic_write_text(out / "RESULTS.md", results_md)
    atomic_write_text(out / "README-claim.md", readme_block + "\n")
    demo_specs = [s for s in DEMO_ROWS if reports[s.key] is not None]
    reference = None
    if demo_specs:
        reference = Reference.from_results(demo_specs, [reports[s.key] for s in demo_specs], command=command,
                                           date=datetime.date.today().isoformat())
        reference.save(out / "fmnist-reference.json")
    summary = {"checks": verdict, "frontier": {"grid": grid, "alphas": alphas},
               "reports": {s.key: str(out / s.folder / "report.json") for s in specs}}
    atomic_write_text(out / "claim.json", json.dumps(summary, indent=2) + "\n")
    print("\n" + "\n".join(check_lines(verdict)) + "\n" + verdict_sentence(verdict, args.n_examples))
    print(f"wrote {out}/RESULTS.md, sweep.png, README-claim.md, fmnist-reference.json, claim.json")
    if not args.publish:
        return 0
    problems = check_publishable(specs, reports)
    if problems:
        print("not published: " + "; ".join(problems), file=sys.stderr)
        return 1
    publish(out, specs, reports, results_md, readme_block, reference)
    return 0


def publish(out: Path, specs: Sequence[RowSpec], reports: dict[str, Optional[BenchmarkResult]], results_md: str,
            readme_block: str, reference: Reference) -> None:
    """Write the committed copies: RESULTS.md and sweep.png, the reports (also by entry, for the model cards),
    the README section, the reference."""
    # each folder's files as one set (atomic_write_files): a publish killed or interrupted leaves the earlier set of
    # that folder whole (never a half-copied plot, nor the reports of two runs, nor none), and rerunning it finishes
    atomic_write_files(HERE, {"RESULTS.md": results_md, "sweep.png": (out / "sweep.png").read_bytes()})
    copies = HERE / "results" / "claim"
    files: dict[str, bytes | str] = {f"{spec.key}.report.json": reports[spec.key].to_json() for spec in specs}
    files.update({name: (out / name).read_bytes() for name in ("claim.json", "frontier.json")})
    stale = [path for path in copies.glob("*.report.json") if path.name not in files]
    atomic_write_files(copies, files)
    for path in stale:  # rows this run no longer has (another frontier ratio)
        path.unlink()
    atomic_write_text(README, replace_between_markers(README.read_text(), readme_block))
    reference.save(ROOT / "robust_mix" / REFERENCE_FILE)
    cards = ROOT / CARD_REPORTS
    cards.mkdir(parents=True, exist_ok=True)
    for spec in specs:  # rows of a registered entry as it ships (no overrides): its card's evaluation
        name = parse_model_name(spec.model)
        if name.kind == "registry" and not name.overrides:
            reports[spec.key].save(cards / f"{name.target}.json")
    print(f"published: {HERE / 'RESULTS.md'}, sweep.png, {copies}/, {README} (claim section), "
          f"robust_mix/{REFERENCE_FILE}, {CARD_REPORTS}/ (make cards)")


if __name__ == "__main__":
    sys.exit(main())
