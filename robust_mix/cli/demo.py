"""``robust-mix demo``: the README's main job.

Benchmarks the embedded Fashion-MNIST zoo (:data:`robust_mix.zoo.fmnist.DEMO_ROWS`) with the harness:
clean accuracy on all 10,000 test images (forward passes, cheap), robust accuracy on the first
``--n-examples`` with its 95 % Clopper-Pearson interval, the claim's two ratios (clean-accuracy gap
recovered, robust accuracy kept), and the shipped reference results (the same rows on the first 1,000
test images) beside them, with a line saying whether the two agree within the intervals.

The rows are independent: they run side by side in worker processes (``--workers``, default one per
usable CPU), one progress bar each. Resumable: state lives under ``--out/<entry>/state/<settings>``,
one folder per choice of examples, attack and batch size, so an interrupted demo continues where it
stopped and a demo with other settings starts its own; a row's report (``--out/<entry>/report.json``) of an
earlier demo with other settings is removed when the demo starts (said on the console), so the reports in
``--out`` are always this run's. A row that fails (its model cannot be built, say)
does not stop the others: the table shows the finished rows, the failure is named after it (and in
``demo.json``), and the exit status is 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import robust_mix
from robust_mix.cli import (PATH, POSITIVE_INT, add_progress_argument, command, format_table, hold_output_folder,
                            progress_requested)
from robust_mix.cli.benchmark import (RowBars, add_channels_last_argument, add_workers_argument, model_factory,
                                      resolve_workers)
from robust_mix.formatting import (evaluation_label, interval_heading, percent, percent_beside_target,
                                   percent_interval)
from robust_mix.io import atomic_write_text
from robust_mix.protocol import required_examples, resolve_attack
from robust_mix.loading import parse_model_name
from robust_mix.report import REPORT_FILES
from robust_mix.reference import (AGREES, DIFFERS, MISSING, OTHER_ATTACK, OTHER_MODEL, Comparison, Reference, RowSpec,
                                  compare)
from robust_mix.results import INTERVAL_LEVEL, BenchmarkResult
from robust_mix.rows import BenchmarkRow, RowFailure, run_rows
from robust_mix.sweep import kept_robustness, recovered_gap
from robust_mix.validate import check_writable_dir, parse_json
from robust_mix.weights import package_file
from robust_mix.zoo.fmnist import DEMO_ROWS, REFERENCE_FILE

#: Attacked test images by default, for ``robust-mix demo`` and ``make demo`` alike (``make demo
#: DEMO_EXAMPLES=N`` or ``--n-examples N`` to change). Its wall time on a 2-core CPU is measured in the
#: README's "The main job" section.
DEFAULT_EXAMPLES = 20
#: The claim's targets for the two ratios the tables show: share of the clean-accuracy gap recovered, share of the
#: robust base's robust accuracy kept.
RECOVERED_TARGET, KEPT_TARGET = 0.6, 0.95
#: Clean accuracy is measured on the whole Fashion-MNIST test set.
CLEAN_EXAMPLES = required_examples("fashion-mnist")


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-examples", type=POSITIVE_INT, default=DEFAULT_EXAMPLES,
                   help=f"attack the first N Fashion-MNIST test images (default {DEFAULT_EXAMPLES})")
    p.add_argument("--clean-examples", type=POSITIVE_INT, default=CLEAN_EXAMPLES,
                   help=f"clean accuracy on the first N test images (default {CLEAN_EXAMPLES:,}, all of them)")
    p.add_argument("--attack", default="standard",
                   help="AutoAttack version or stage list (default: standard, as on the leaderboard)")
    p.add_argument("--no-adaptive", action="store_true",
                   help="skip the adaptive attack suite on the adaptive model (faster, but then its robust "
                        "accuracy is AutoAttack's alone, not the worst case the claim judges it by)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=100, help="images per forward pass (default 100)")
    p.add_argument("--reference", type=PATH, help="reference results to compare with (default: the shipped "
                                       f"robust_mix/{REFERENCE_FILE})")
    p.add_argument("--out", type=PATH, default="runs/demo", help="reports and resumable state go here")
    add_workers_argument(p)
    add_channels_last_argument(p)
    add_progress_argument(p)


@command("demo", "benchmark the Fashion-MNIST zoo and print a leaderboard-style table", _demo_args,
         resume="finished rows and chunks are saved under {out}; rerun the same command to resume", computes=True)
def _demo(args: argparse.Namespace) -> int:
    missing = [spec.model for spec in DEMO_ROWS if not robust_mix.is_model(parse_model_name(spec.model).target)]
    if missing:
        raise ValueError(f"the demo needs the Fashion-MNIST zoo entries {missing}, which are not registered")
    for option, value in (("--n-examples", args.n_examples), ("--clean-examples", args.clean_examples)):
        if value > CLEAN_EXAMPLES:  # said before any row starts, naming the option, not halfway through the rows
            raise ValueError(f"{option} {value:,} is more than the {CLEAN_EXAMPLES:,} Fashion-MNIST test images; "
                             f"pass at most {CLEAN_EXAMPLES}")
    if args.clean_examples < args.n_examples:
        raise ValueError(f"--clean-examples {args.clean_examples} is below --n-examples {args.n_examples}: clean "
                         "accuracy is measured on at least the attacked images")
    hold_output_folder(check_writable_dir(args.out))  # its rows' reports and demo.json are one run's
    stale = Path(args.out) / "demo.json"
    if stale.is_file():  # the rows replace their reports as they finish: an earlier summary would disagree with them
        stale.unlink()
    reference, where = read_reference(args.reference)
    rows = demo_rows(args, command_line=args.command_line)
    for row in rows:  # an earlier run's report left beside this run's would be read as one of this run's rows
        removed = drop_report_of_other_settings(row)
        if removed:
            print(f"{row.report_dir}: removed the report of an earlier demo with other settings ({removed}); this "
                  "run writes the row's own when the row finishes (the earlier run's state is kept)", flush=True)
    workers = resolve_workers(args, len(rows))
    print(f"{len(rows)} rows, {workers} worker process(es); state and reports under {args.out}", flush=True)
    started = time.perf_counter()
    with RowBars([row.label for row in rows], enabled=progress_requested(args)) as bars:
        # DEMO_ROWS get more expensive down the table: the longest first keeps every worker busy to the end.
        # a row that fails (its model cannot be built, say) leaves the others running: they are the demo's table
        outcomes = run_rows(rows, workers=workers, progress=bars, threads_per_worker=args.threads,
                            start_order=range(len(rows) - 1, -1, -1), keep_going=True)
    seconds = time.perf_counter() - started
    failed = [(s, r) for s, r in zip(DEMO_ROWS, outcomes) if isinstance(r, RowFailure)]
    done = [(s, row, r) for s, row, r in zip(DEMO_ROWS, rows, outcomes) if not isinstance(r, RowFailure)]
    if not done:
        raise RuntimeError("every demo row failed: " + "; ".join(f"{s.label}: {f.error}" for s, f in failed))
    specs, finished, results = (list(column) for column in zip(*done))
    comparisons = [compare(r, reference.rows.get(s.key) if reference else None) for s, r in zip(specs, results)]
    print()
    print(demo_report(specs, results, reference, comparisons, where))
    print(f"\n{len(results)} row{'' if len(results) == 1 else 's'} in {seconds:.0f} s with {workers} worker process(es) "
          f"(seconds per row overlap when rows run side by side)")
    write_summary(Path(args.out) / "demo.json", specs, finished, results, comparisons, failed)
    print(f"reports: {args.out}/<entry>/report.json, summary: {args.out}/demo.json")
    if failed:
        print(f"\nFAILED, not in the table: {'; '.join(f'{s.label} ({s.model}): {f.error}' for s, f in failed)}. "
              "Rerun the same command to resume the finished rows and retry these.", file=sys.stderr)
        return 1
    return 0


def read_reference(path: Optional[str]) -> tuple[Optional[Reference], str]:
    """The reference results at ``path`` (default: the shipped file) and how to name them; ``None`` when
    the shipped file is missing (a checkout before ``benchmarks/fmnist/claim.py --publish`` ran)."""
    if path is not None:
        return Reference.load(path), path
    where = f"robust_mix/{REFERENCE_FILE}"
    try:
        return Reference.load(package_file(REFERENCE_FILE)), where
    except FileNotFoundError:
        return None, where


def demo_rows(args: argparse.Namespace, command_line: Optional[str] = None) -> list[BenchmarkRow]:
    """The demo's harness runs: one per :data:`DEMO_ROWS` entry, state and report under ``--out/<entry>``."""
    rows = []
    for spec in DEMO_ROWS:
        adaptive = spec.adaptive and not args.no_adaptive
        out = Path(args.out) / spec.folder
        attack = "".join(c if c.isalnum() or c in "-." else "+" for c in resolve_attack(args.attack, adaptive).name)
        # one state per choice of examples, attack, batch size and model path (NHWC rounds differently)
        settings = f"n{args.n_examples}_{attack}_b{args.batch_size}" + ("_nhwc" if args.channels_last else "")
        rows.append(BenchmarkRow(spec.label, model_factory(args, spec.model),
                                 dict(n_examples=args.n_examples, attack=args.attack, adaptive=adaptive,
                                      batch_size=args.batch_size, clean_examples=args.clean_examples,
                                      state_dir=out / "state" / settings),
                                 report_dir=out, command=command_line))
    return rows


#: What a demo row's report records of the demo's settings (``BenchmarkResult.arguments``); the state folder stands
#: for the rest (the attack as run, the NHWC layout).
_ROW_SETTINGS = ("n_examples", "attack", "adaptive", "batch_size", "clean_examples", "state_dir")


def drop_report_of_other_settings(row: BenchmarkRow) -> str:
    """Remove the report files (:data:`robust_mix.report.REPORT_FILES`) in ``row.report_dir`` when they are not of
    ``row``'s settings: an earlier demo's with other settings (its rows keep their own state folders, so they would
    otherwise stay beside this run's reports when it is interrupted or a row fails), or a report that cannot be
    read. Returns how the settings differ (``""``: nothing removed)."""
    folder = Path(row.report_dir)
    path = folder / REPORT_FILES[0]
    if not any((folder / name).exists() for name in REPORT_FILES):
        return ""
    try:
        recorded = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        differs = f"{path.name} unreadable: {type(err).__name__}"
    else:
        recorded = recorded.get("arguments") if isinstance(recorded, dict) else None
        recorded = recorded if isinstance(recorded, dict) else {}
        wanted = {k: str(v) if k == "state_dir" else v for k, v in row.kwargs.items() if k in _ROW_SETTINGS}
        keys = [k for k in _ROW_SETTINGS if recorded.get(k) != wanted.get(k)]
        keys = [k for k in keys if k != "state_dir"] or keys  # the folder named only when nothing else differs
        differs = ", ".join(f"{k} {recorded.get(k)!r}, now {wanted.get(k)!r}" for k in keys)
    if not differs:
        return ""
    for name in REPORT_FILES:
        (folder / name).unlink(missing_ok=True)
    return differs


def _clean(result: BenchmarkResult) -> float:
    """The row's best clean-accuracy estimate: on the most images it was measured on."""
    return result.best_clean[0]


def _ratio(value: Optional[float], target: Optional[float] = None) -> str:
    """``value`` as a percentage with one decimal, never rounded onto ``target`` when it falls short
    (:func:`robust_mix.formatting.percent_beside_target`); ``"-"`` when undefined."""
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if target is None else percent_beside_target(value, target)


def _ratios(clean: float, robust: float, bases: dict[str, tuple[float, float]]) -> list[str]:
    """Recovered % and kept % of one row against ``bases`` (``"standard"``/``"robust"`` -> (clean, robust))."""
    if "standard" not in bases or "robust" not in bases:
        return ["-", "-"]
    return [_ratio(recovered_gap(clean, bases["standard"][0], bases["robust"][0]), RECOVERED_TARGET),
            _ratio(kept_robustness(robust, bases["robust"][1]), KEPT_TARGET)]


def demo_report(specs: Sequence[RowSpec], results: Sequence[BenchmarkResult], reference: Optional[Reference],
                comparisons: Sequence[Comparison], where: str) -> str:
    """The demo's output: the live table with intervals and ratios, the reference beside it, the verdict."""
    n = results[0].n_examples
    full = {r.full_clean_examples for r in results}
    cleaned = f"{full.pop():,}" if len(full) == 1 and None not in full else f"the first {n:,}"
    live = {s.key: (_clean(r), r.robust_accuracy) for s, r in zip(specs, results)}
    table = [[s.label, s.model, percent(_clean(r)), percent(r.robust_accuracy), percent_interval(r.robust_interval()),
              *_ratios(*live[s.key], live), f"{r.wall_time_s:.0f}"] for s, r in zip(specs, results)]
    labels: dict[str, list[str]] = {}
    for spec, result in zip(specs, results):
        labels.setdefault(evaluation_label(result), []).append(spec.label)
    lines = [f"Fashion-MNIST, Linf eps = 0.1: clean accuracy on {cleaned} test images, robust accuracy on the "
             f"first {n:,}",
             *(f"attack: {label} ({', '.join(names)})" for label, names in labels.items()),
             "",
             format_table(["model", "entry", f"clean % ({cleaned.removeprefix('the ')})", f"robust % (first {n:,})",
                           interval_heading(INTERVAL_LEVEL), "recovered %", "kept %", "seconds"], table),
             "",
             "recovered = (clean - robust base's clean) / (standard base's clean - robust base's clean); "
             f"kept = robust / robust base's robust (the claim asks for {100 * RECOVERED_TARGET:g} % and "
             f"{100 * KEPT_TARGET:g} %)."]
    lines += ["", *reference_report(specs, reference, comparisons, where, n)]
    return "\n".join(lines)


def reference_report(specs: Sequence[RowSpec], reference: Optional[Reference], comparisons: Sequence[Comparison],
                     where: str, n: int) -> list[str]:
    """The shipped reference's table and the agreement line."""
    if reference is None:
        return [f"No reference results to compare with: {where} is missing "
                "(python benchmarks/fmnist/claim.py --publish writes it)."]
    rows = {s.key: reference.rows[s.key] for s in specs if s.key in reference.rows}
    if not rows:
        return [f"The reference results ({where}) hold none of these rows: not compared."]
    ref_n = max(r.n_examples for r in rows.values())
    first = min(n, ref_n)
    bases = {k: (r.clean_accuracy, r.robust_accuracy) for k, r in rows.items()}
    table = []
    for spec, comparison in zip(specs, comparisons):
        row = rows.get(spec.key)
        if row is None:
            table.append([spec.label, "-", "-", "-", "-", "-", "-", comparison.detail])
            continue
        table.append([spec.label, percent(row.clean_accuracy), percent(row.robust_accuracy_first(first)),
                      percent(row.robust_accuracy), percent_interval(row.robust_interval()),
                      *_ratios(row.clean_accuracy, row.robust_accuracy, bases), comparison.detail])
    some = next(iter(rows.values()))
    labels: dict[str, list[str]] = {}
    for spec in specs:
        if spec.key in rows:
            labels.setdefault(rows[spec.key].attack_label, []).append(spec.label)
    return [f"Reference results ({where}): {reference.command}, {reference.date}",
            *(f"attack: {label} ({', '.join(names)})" for label, names in labels.items()),
            "",
            format_table(["model", f"clean % ({some.clean_examples:,})", f"robust % (first {first:,})",
                          f"robust % ({ref_n:,})", interval_heading(INTERVAL_LEVEL), "recovered %", "kept %",
                          "agreement with this run"], table),
            "",
            agreement_line([s.label for s in specs], comparisons)]


def agreement_line(labels: Sequence[str], comparisons: Sequence[Comparison]) -> str:
    """One sentence: do the live rows agree with the reference within their intervals, and which are not compared."""
    by = {status: [label for label, c in zip(labels, comparisons) if c.status == status]
          for status in (AGREES, DIFFERS, OTHER_MODEL, OTHER_ATTACK, MISSING)}
    compared = len(by[AGREES]) + len(by[DIFFERS])
    parts = []
    if by[OTHER_MODEL]:
        parts.append(f"The reference was measured on other weights than these for {_names(by[OTHER_MODEL])} (config "
                     "fingerprints differ): shown for orientation, not compared.")
    if by[OTHER_ATTACK]:
        parts.append(f"It ran another attack, eps or data than this run for {_names(by[OTHER_ATTACK])}: "
                     "not compared.")
    if by[MISSING]:
        parts.append(f"It has no row for {_names(by[MISSING])}.")
    if compared:
        verdict = (f"This run agrees with the reference within the {interval_heading(INTERVAL_LEVEL)}s on "
                   f"{'all ' if not by[DIFFERS] else ''}{len(by[AGREES])} of {compared} compared rows")
        parts.insert(0, verdict + (f"; it DIFFERS on {_names(by[DIFFERS])}." if by[DIFFERS] else "."))
    elif not parts:
        parts.append("Nothing was compared.")
    return " ".join(parts)


def _names(labels: Sequence[str]) -> str:
    return ", ".join(labels) if len(labels) < 3 else f"{len(labels)} rows ({', '.join(labels)})"


def write_summary(path: Path, specs: Sequence[RowSpec], rows: Sequence[BenchmarkRow],
                  results: Sequence[BenchmarkResult], comparisons: Sequence[Comparison],
                  failed: Sequence[tuple[RowSpec, RowFailure]] = ()) -> None:
    """``demo.json``: every row's figures, its interval, its report and its comparison with the reference; a row
    in ``failed`` with its error instead."""
    summary: list[dict] = []
    for spec, row, result, comparison in zip(specs, rows, results, comparisons):
        summary.append({"key": spec.key, "label": spec.label, "model": spec.model,
                        "report": str(Path(row.report_dir) / "report.json"), "attack": evaluation_label(result),
                        "n_examples": result.n_examples, "clean_accuracy": result.clean_accuracy,
                        "full_clean_accuracy": result.full_clean_accuracy,
                        "full_clean_examples": result.full_clean_examples,
                        "robust_accuracy": result.robust_accuracy, "robust_interval": list(result.robust_interval()),
                        "reference": {"status": comparison.status, "detail": comparison.detail}})
    summary += [{"key": spec.key, "label": spec.label, "model": spec.model, "error": failure.error}
                for spec, failure in failed]
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
