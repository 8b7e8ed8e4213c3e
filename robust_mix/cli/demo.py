"""``robust-mix demo``: the README's main job.

Benchmarks the embedded Fashion-MNIST zoo with the harness, all rows on the same first test images
with the same attack, and prints a leaderboard-style table. Resumable: state lives under
``--out/<entry>/state/<settings>``, one folder per choice of examples, attack and batch size, so an
interrupted demo continues where it stopped and a demo with other settings starts its own.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import robust_mix
from robust_mix.cli import POSITIVE_INT, command, format_table
from robust_mix.cli.benchmark import TqdmProgress
from robust_mix.formatting import evaluation_label
from robust_mix.io import atomic_write_text
from robust_mix.validate import check_writable_dir

# (row label, registry name, overrides): the rows of the demo table, as data.
DEMO_ROWS = [
    ("standard base", "fmnist-standard", {}),
    ("robust base", "fmnist-robust", {}),
    ("fixed-ratio mix (alpha 0.9)", "fmnist-robust", {"alpha": 0.9}),
    ("MixedNUTS", "fmnist-mixednuts", {}),
    ("adaptive smoothing", "fmnist-adasmooth", {}),
]


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-examples", type=POSITIVE_INT, default=50, help="first N Fashion-MNIST test images")
    p.add_argument("--attack", default="standard",
                   help="AutoAttack version or stage list (default: standard, as on the leaderboard)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=100)
    p.add_argument("--out", default="runs/demo", help="reports and resumable state go here")


def _settings_key(args: argparse.Namespace) -> str:
    """The state folder name of one choice of demo settings (each gets its own resumable state)."""
    attack = "".join(c if c.isalnum() or c in "-." else "+" for c in args.attack)
    return f"n{args.n_examples}_{attack}_b{args.batch_size}"


@command("demo", "benchmark the Fashion-MNIST zoo and print a leaderboard-style table", _demo_args,
         resume="finished rows and chunks are saved under {out}; rerun the same command to resume")
def _demo(args: argparse.Namespace) -> int:
    from robust_mix.report import write_report

    missing = [name for _, name, _ in DEMO_ROWS if not robust_mix.is_model(name)]
    if missing:
        raise ValueError(f"the demo needs the Fashion-MNIST zoo entries {missing}, which are not registered")
    check_writable_dir(args.out)
    rows, summary, label_of_run = [], [], ""
    for label, name, overrides in DEMO_ROWS:
        tag = name + "".join(f"-{k}{v}" for k, v in overrides.items())
        out = Path(args.out) / tag
        print(f"\n== {label}: {name} {overrides or ''}", flush=True)
        model = robust_mix.load_model(name, **overrides)
        progress = TqdmProgress()
        try:
            result = robust_mix.benchmark(model, n_examples=args.n_examples, attack=args.attack,
                                          batch_size=args.batch_size, state_dir=out / "state" / _settings_key(args),
                                          progress=progress)
        finally:
            progress.close()
        write_report(out, result, model.config)
        label_of_run = evaluation_label(result)
        rows.append([label, name, f"{100 * result.clean_accuracy:.2f}", f"{100 * result.robust_accuracy:.2f}",
                     result.n_examples, f"{result.wall_time_s:.0f}"])
        summary.append({"label": label, "model": name, "overrides": overrides, "report": str(out / "report.json"),
                        "clean_accuracy": result.clean_accuracy, "robust_accuracy": result.robust_accuracy,
                        "n_examples": result.n_examples})
    atomic_write_text(Path(args.out) / "demo.json", json.dumps(summary, indent=2) + "\n")
    print(f"\nFashion-MNIST, Linf eps = 0.1, first {args.n_examples} test images; attack: {label_of_run}\n")
    print(format_table(["model", "entry", "clean %", "robust %", "examples", "seconds"], rows))
    print(f"\nreports: {args.out}/<entry>/report.json, summary: {args.out}/demo.json")
    return 0
