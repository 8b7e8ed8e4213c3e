"""Reproduce a zoo entry's leaderboard number with the harness.

    python benchmarks/reproduce.py NAME [--n-examples N] [--adaptive] [--data-dir D] [--model-dir M] [--out DIR]

Runs standard AutoAttack with the entry's own setting (data set, threat model, eps, the
leaderboard's number of examples) and prints the reported numbers beside the measured ones.
Per-entry scripts are one line::

    from reproduce import main; raise SystemExit(main(default_name="cifar10-mixednuts"))
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import robust_mix
from robust_mix.cli import MODEL_NAME, POSITIVE_INT, REGISTERED_NAME
from robust_mix.backbones import BackboneNotFoundError
from robust_mix.benchmark import benchmark
from robust_mix.results import BenchmarkResult
from robust_mix.data import DatasetNotFoundError
from robust_mix.report import write_report


def reproduce(name: str, *, n_examples: Optional[int] = None, adaptive: bool = False, batch_size: int = 500,
              data_dir: Optional[str] = None, model_dir: Optional[str] = None, device: Optional[str] = None,
              out: Optional[str] = None) -> BenchmarkResult:
    """Benchmark registry entry ``name`` with its leaderboard setting; writes the report into ``out``."""
    model = robust_mix.load_model(name, model_dir=model_dir)
    config = model.config
    out_dir = Path(out or f"reproduce_out/{name}")
    result = benchmark(model, config.dataset, config.threat_model, config.eps, n_examples=n_examples,
                       batch_size=batch_size, attack="standard", adaptive=adaptive, device=device,
                       state_dir=out_dir / "state", data_dir=data_dir)
    write_report(out_dir, result, config)
    return result


def comparison(result: BenchmarkResult, config: robust_mix.ModelConfig) -> str:
    """Reported vs measured numbers, as a small text table."""
    rep = config.reported
    rows = [("", "reported", "measured"),
            ("clean %", f"{rep.clean_acc:.2f}" if rep else "-", f"{100 * result.clean_accuracy:.2f}"),
            ("AutoAttack %", f"{rep.autoattack_acc:.2f}" if rep else "-",
             f"{100 * (result.autoattack_accuracy or result.robust_accuracy):.2f}"),
            ("examples", str(rep.n_examples) if rep else "-", str(result.n_examples))]
    if result.adaptive_accuracy is not None:
        rows += [("adaptive %", "-", f"{100 * result.adaptive_accuracy:.2f}"),
                 ("min of both %", "-", f"{100 * result.robust_accuracy:.2f}")]
    return "\n".join(f"{a:<14}{b:>10}{c:>10}" for a, b, c in rows)


def entry_as_shipped(text: str) -> str:
    """The ``name`` argument: a registered entry without overrides, whose reported figures the run is compared with
    (``fmnist-robust,alpha=0.5`` ran its whole benchmark, then failed looking those figures up)."""
    if MODEL_NAME(text) != text or "," in text:
        raise argparse.ArgumentTypeError(f"{text!r} has overrides: reproduce compares a run with the entry's reported "
                                         "figures, so give the entry as it ships (robust-mix benchmark NAME,KEY=VALUE "
                                         "evaluates a changed entry)")
    return REGISTERED_NAME(text)


def build_parser(default_name: Optional[str] = None) -> argparse.ArgumentParser:
    """This script's argument parser (tests parse the command lines the docs show with it); per-entry scripts pass
    ``default_name``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", type=entry_as_shipped, nargs="?" if default_name else None, default=default_name)
    parser.add_argument("--n-examples", type=POSITIVE_INT, help="default: the leaderboard's count")
    parser.add_argument("--adaptive", action="store_true")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=500)
    parser.add_argument("--data-dir")
    parser.add_argument("--model-dir")
    parser.add_argument("--device")
    parser.add_argument("--out")
    return parser


def main(argv: Optional[Sequence[str]] = None, default_name: Optional[str] = None) -> int:
    """Command line; per-entry scripts pass ``default_name``."""
    args = build_parser(default_name).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = reproduce(args.name, n_examples=args.n_examples, adaptive=args.adaptive,
                           batch_size=args.batch_size, data_dir=args.data_dir, model_dir=args.model_dir,
                           device=args.device, out=args.out)
    except (BackboneNotFoundError, DatasetNotFoundError, ValueError) as err:
        print(f"cannot reproduce {args.name}: {err}", file=sys.stderr)
        return 2
    print(comparison(result, robust_mix.get_model_config(args.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
