"""The paper's claim on the embedded Fashion-MNIST zoo, measured with the harness.

Usage:
    python benchmarks/fmnist/claim.py [--n-examples 1000] [--out runs/claim] [--rows ROW ...]
                                      [--results OUT/RESULTS.md]

By default everything is written under ``--out``; ``--results benchmarks/fmnist/RESULTS.md``
updates the committed results (and ``sweep.png`` beside them).

Rows (each a resumable harness run, standard AutoAttack, l_inf eps 0.1, seed 0, on the first
``--n-examples`` test images; state and reports under ``--out/<row>/``):

* ``standard``, ``robust``, ``mixednuts``: the zoo entries;
* ``adaptive``: ``fmnist-adasmooth`` with the harness's adaptive suite added (``--adaptive``);
* ``frontier``: the fixed-ratio frontier through :func:`robust_mix.sweep.sweep` (the code behind
  ``robust-mix sweep``). Clean accuracy is measured at every ratio of ``--grid`` (forward passes
  only); AutoAttack runs at the largest grid ratio whose clean accuracy reaches the adaptive
  model's (the most robust fixed mix that is as accurate) and at the next ratio up.

Rows already finished are read back, interrupted ones resume, and ``--rows`` picks a subset (run
two processes on different rows to use two cores). Every run ends by writing ``--results``
(Markdown with the table, the checks of the claim and ``sweep.png`` beside it) and
``--out/claim.json`` from whatever reports exist; rows not measured yet are marked so.

The claim (issue 4): the adaptive model recovers at least 60 % of the clean-accuracy gap between
the robust and the standard base, keeps at least 95 % of the robust base's AutoAttack accuracy,
lies above the fixed-ratio frontier, and the adaptive attack finds it at most 1 point weaker.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import robust_mix
from robust_mix.benchmark import BenchmarkResult, model_fingerprint
from robust_mix.cli.benchmark import TqdmProgress
from robust_mix.data import load_dataset
from robust_mix.io import atomic_write_text
from robust_mix.report import write_report
from robust_mix.sweep import POLICY, SweepPoint, parse_alphas, plot_sweep, sweep
from robust_mix.train import accuracy

logger = logging.getLogger("claim")

# (row, label, registry name, run the adaptive suite too)
ROWS = [
    ("standard", "standard base", "fmnist-standard", False),
    ("robust", "robust base", "fmnist-robust", False),
    ("adaptive", "adaptive smoothing", "fmnist-adasmooth", True),
    ("mixednuts", "MixedNUTS", "fmnist-mixednuts", False),
]
TARGET_RECOVERED, TARGET_KEPT, TARGET_ADAPTIVE_GAP = 0.60, 0.95, 0.01


def harness_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(n_examples=args.n_examples, attack="standard", batch_size=args.batch_size,
                chunk_size=args.batch_size, seed=0)


def report_path(out: Path, row: str) -> Path:
    return out / row / "report.json"


def run_row(args: argparse.Namespace, row: str, name: str, adaptive: bool) -> BenchmarkResult:
    """One zoo entry through the harness (resumes from ``out/row/state``)."""
    out = Path(args.out) / row
    if report_path(Path(args.out), row).is_file():
        return BenchmarkResult.from_json(report_path(Path(args.out), row))
    model = robust_mix.load_model(name)
    progress = TqdmProgress()
    try:
        result = robust_mix.benchmark(model, state_dir=out / "state", adaptive=adaptive, progress=progress,
                                      **harness_kwargs(args))
    finally:
        progress.close()
    result.command = args.command_line
    write_report(out, result, model.config)
    return result


def frontier_alphas(clean: dict[float, float], target: float) -> list[float]:
    """The largest ratio whose clean accuracy reaches ``target`` and the next one up (sorted grid)."""
    grid = sorted(clean)
    reaching = [a for a in grid if clean[a] >= target]
    if not reaching:
        return grid[:1]
    best = max(reaching)
    above = [a for a in grid if a > best]
    return [best] + above[:1]


def run_frontier(args: argparse.Namespace) -> dict[str, Any]:
    """Clean accuracy across ``--grid``; AutoAttack at the ratios that bound the adaptive model's clean accuracy.

    The adaptive model's clean accuracy is measured here on the same images (the harness's clean
    pass is the same deterministic forward), so the frontier does not wait for the adaptive row.
    """
    out = Path(args.out) / "frontier"
    path = out / "frontier.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    model = robust_mix.load_model("fmnist-adasmooth")
    fingerprint = model_fingerprint(model)
    if done.get("model") != fingerprint or done.get("grid") != args.grid:
        images, labels = load_dataset("fashion-mnist", "test")
        images, labels = images[:args.n_examples], labels[:args.n_examples]
        clean = {}
        for alpha in parse_alphas(args.grid):
            model.alpha = alpha
            clean[alpha] = accuracy(model, images, labels)
        model.alpha = None
        done = {"model": fingerprint, "grid": args.grid, "adaptive_clean": accuracy(model, images, labels),
                "clean": {str(a): c for a, c in clean.items()}}
        atomic_write_text(path, json.dumps(done, indent=2) + "\n")
    clean = {float(a): c for a, c in done["clean"].items()}
    adaptive_clean = done["adaptive_clean"]
    alphas = frontier_alphas(clean, adaptive_clean)
    logger.info("frontier: AutoAttack at alpha %s (clean %s; adaptive clean %.4f)", alphas,
                [clean[a] for a in alphas], adaptive_clean)
    progress = TqdmProgress()
    try:
        points = sweep(model, alphas, include_policy=False, state_dir=out / "state", progress=progress,
                       **harness_kwargs(args))
    finally:
        progress.close()
    done["robust"] = {str(p.alpha): p.robust_accuracy for p in points}
    done["robust_clean"] = {str(p.alpha): p.clean_accuracy for p in points}
    done["wall_time_s"] = {str(p.alpha): p.wall_time_s for p in points}
    atomic_write_text(path, json.dumps(done, indent=2) + "\n")
    return done


def load_reports(out: Path) -> dict[str, Optional[BenchmarkResult]]:
    return {row: (BenchmarkResult.from_json(report_path(out, row)) if report_path(out, row).is_file() else None)
            for row, *_ in ROWS}


def checks(reports: dict[str, Optional[BenchmarkResult]], frontier: dict[str, Any]) -> dict[str, Any]:
    """The four parts of the claim, each with the measured figures (``None`` when not measured yet)."""
    std, rob, ada = reports["standard"], reports["robust"], reports["adaptive"]
    result: dict[str, Any] = {}
    if std and rob and ada:
        gap = std.clean_accuracy - rob.clean_accuracy
        recovered = (ada.clean_accuracy - rob.clean_accuracy) / gap if gap > 0 else float("nan")
        kept = ada.autoattack_accuracy / rob.robust_accuracy if rob.robust_accuracy > 0 else float("nan")
        result["recovered"] = {"value": recovered, "target": TARGET_RECOVERED, "pass": recovered >= TARGET_RECOVERED}
        result["kept"] = {"value": kept, "target": TARGET_KEPT, "pass": kept >= TARGET_KEPT}
    if ada and ada.adaptive_accuracy is not None:
        drop = ada.autoattack_accuracy - ada.robust_accuracy
        result["adaptive_attack"] = {"value": drop, "target": TARGET_ADAPTIVE_GAP,
                                     "pass": drop <= TARGET_ADAPTIVE_GAP + 1e-9}
    if ada and frontier.get("robust"):
        dominating = [a for a, r in frontier["robust"].items()
                      if r >= ada.robust_accuracy and frontier["robust_clean"][a] >= ada.clean_accuracy]
        result["frontier"] = {"value": dominating, "pass": not dominating}
    return result


def sweep_points(reports: dict[str, Optional[BenchmarkResult]], frontier: dict[str, Any]) -> list[SweepPoint]:
    """Fixed ratios with both figures measured (the bases are alpha 0 and 1) plus the adaptive model."""
    points = []
    for alpha, row in ((0.0, "standard"), (1.0, "robust")):
        r = reports[row]
        if r is not None:
            points.append(SweepPoint(alpha, r.clean_accuracy, r.robust_accuracy, r.attack, r.n_examples,
                                     r.wall_time_s))
    for alpha, robust in frontier.get("robust", {}).items():
        points.append(SweepPoint(float(alpha), frontier["robust_clean"][alpha], robust, "standard",
                                 reports["robust"].n_examples if reports["robust"] else 0,
                                 frontier["wall_time_s"][alpha]))
    points.sort(key=lambda p: p.alpha)
    ada = reports["adaptive"]
    if ada is not None:
        points.append(SweepPoint(POLICY, ada.clean_accuracy, ada.robust_accuracy, ada.attack, ada.n_examples,
                                 ada.wall_time_s))
    return points


def _pct(value: Optional[float]) -> str:
    return "not measured" if value is None else f"{100 * value:.2f}"


def render(args: argparse.Namespace, reports: dict[str, Optional[BenchmarkResult]], frontier: dict[str, Any],
           verdict: dict[str, Any], plot: Optional[str]) -> str:
    lines = [
        "# Fashion-MNIST: the adaptive-smoothing claim, measured",
        "",
        f"Produced by `{args.canonical_command}` (robust_mix {robust_mix.__version__}; rows may run as separate "
        "processes with `--rows`, e.g. one per core). Standard AutoAttack "
        f"(APGD-CE, APGD-T, FAB-T, Square; pyautoattack, seed 0) through the harness, l_inf eps = 0.1, on the "
        f"first {args.n_examples} Fashion-MNIST test images; the adaptive model is also attacked with the "
        "harness's adaptive suite (composite loss with the mixing network's BCE term), and its robust accuracy "
        "counts an image only if it survives both. Reports: `<out>/<row>/report.json`.",
        "",
        "| model | entry | clean % | AutoAttack % | adaptive attack % | robust % | examples | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, label, name, _ in ROWS:
        r = reports[row]
        if r is None:
            lines.append(f"| {label} | `{name}` | not measured | | | | | |")
            continue
        lines.append(f"| {label} | `{name}` | {_pct(r.clean_accuracy)} | {_pct(r.autoattack_accuracy)} | "
                     f"{_pct(r.adaptive_accuracy) if r.adaptive_accuracy is not None else '-'} | "
                     f"{_pct(r.robust_accuracy)} | {r.n_examples} | {r.wall_time_s:.0f} |")
    for alpha, robust in sorted(frontier.get("robust", {}).items(), key=lambda kv: float(kv[0])):
        lines.append(f"| fixed ratio alpha {float(alpha):g} | `fmnist-adasmooth`, alpha={float(alpha):g} | "
                     f"{_pct(frontier['robust_clean'][alpha])} | {_pct(robust)} | - | {_pct(robust)} | "
                     f"{args.n_examples} | {frontier['wall_time_s'][alpha]:.0f} |")
    lines += ["", "## The claim", ""]
    names = {"recovered": "clean-accuracy gap recovered (adaptive - robust) / (standard - robust)",
             "kept": "robust base's AutoAttack accuracy kept (adaptive AutoAttack / robust AutoAttack)",
             "adaptive_attack": "drop under the adaptive attack (AutoAttack accuracy - accuracy under both)",
             "frontier": "fixed ratios reaching both the adaptive model's clean and robust accuracy"}
    for key, title in names.items():
        if key not in verdict:
            lines.append(f"- {title}: not measured yet")
            continue
        v = verdict[key]
        shown = ((", ".join(v["value"]) or "none") if key == "frontier" else
                 f"{100 * v['value']:.1f} points" if key == "adaptive_attack" else f"{100 * v['value']:.1f} %")
        target = "" if key == "frontier" else (f" (target {'at most' if key == 'adaptive_attack' else 'at least'} "
                                               f"{100 * v['target']:.0f} {'point' if key == 'adaptive_attack' else '%'})")
        lines.append(f"- {title}: {shown}{target}: **{'holds' if v['pass'] else 'does not hold'}**")
    if frontier.get("clean"):
        grid = sorted((float(a), c) for a, c in frontier["clean"].items())
        fixed = sorted((p.alpha, p.robust_accuracy) for p in sweep_points(reports, frontier) if p.alpha != POLICY)
        rising = all(b[1] >= a[1] for a, b in zip(fixed, fixed[1:]))
        lines += ["", "Clean accuracy of fixed ratios on the same images (forward passes only): " +
                  ", ".join(f"{a:g}: {100 * c:.1f}" for a, c in grid) + ". AutoAttack ran at the largest ratio "
                  "whose clean accuracy reaches the adaptive model's and at the next one. " +
                  ("Along the measured ratios (" + ", ".join(f"{a:g}: {100 * r:.1f}" for a, r in fixed) + ") robust "
                   "accuracy rises with alpha, so the smaller, unattacked ratios are taken to be less robust than "
                   "the largest one that is as accurate (an assumption, not a measurement)." if rising else
                   "Robust accuracy does NOT rise monotonically along the measured ratios (" +
                   ", ".join(f"{a:g}: {100 * r:.1f}" for a, r in fixed) + "): the frontier check covers only "
                   "the attacked ratios.")]
    if plot:
        lines += ["", f"![accuracy-robustness trade-off]({plot})"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-examples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250, help="attack batch and resumable chunk size")
    parser.add_argument("--out", default="runs/claim")
    parser.add_argument("--rows", nargs="*", default=[r for r, *_ in ROWS] + ["frontier"],
                        choices=[r for r, *_ in ROWS] + ["frontier"])
    parser.add_argument("--grid", default="0:1:0.05", help="fixed ratios for the clean-accuracy frontier")
    parser.add_argument("--results", help="Markdown results file, sweep.png beside it (default: OUT/RESULTS.md)")
    args = parser.parse_args(argv)
    args.results = args.results or str(Path(args.out) / "RESULTS.md")
    args.command_line = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    args.canonical_command = (f"python benchmarks/fmnist/claim.py --n-examples {args.n_examples} --out {args.out} "
                              f"--grid {args.grid} --results {args.results}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    for row, _, name, adaptive in ROWS:
        if row in args.rows:
            logger.info("row %s: %s", row, name)
            run_row(args, row, name, adaptive)
    reports = load_reports(out)
    frontier_path = out / "frontier" / "frontier.json"
    if "frontier" in args.rows:
        run_frontier(args)
    frontier = json.loads(frontier_path.read_text()) if frontier_path.is_file() else {}
    verdict = checks(reports, frontier)
    results = Path(args.results)
    points = sweep_points(reports, frontier)
    plot = None
    if points:
        png = results.with_name("sweep.png")
        plot_sweep(points, png, title=f"Fashion-MNIST, standard AutoAttack, {args.n_examples} test images")
        plot = png.name
    atomic_write_text(results, render(args, reports, frontier, verdict, plot))
    atomic_write_text(out / "claim.json", json.dumps({"checks": verdict, "frontier": frontier, "reports": {
        row: None if r is None else str(report_path(out, row)) for row, r in reports.items()}}, indent=2) + "\n")
    logger.info("wrote %s: %s", results, {k: v["pass"] for k, v in verdict.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
