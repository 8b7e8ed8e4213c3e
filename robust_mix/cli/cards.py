"""``robust-mix`` commands for cards: thin wrappers over :mod:`robust_mix.cards`."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from robust_mix.cli import PATH, command
from robust_mix.cards import DEFAULT_REPORTS_DIR, render_all, zoo_card
from robust_mix.io import atomic_write_text
from robust_mix.validate import InvalidInputError, check_writable_dir

logger = logging.getLogger(__name__)


def _card_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="registered model name")
    p.add_argument("--all", action="store_true", help="render every registered entry with fixed bases")
    p.add_argument("--benchmark", type=PATH, metavar="REPORT.json",
                   help="add the results of a benchmark report of this entry as registered (a report of another "
                        "model or configuration, e.g. NAME,alpha=0.9, is refused)")
    p.add_argument("--out", type=PATH, metavar="FILE", help="where to write one card (default model_cards/NAME.md)")
    p.add_argument("--out-dir", type=PATH, help="folder for --all (default model_cards)")
    p.add_argument("--reports-dir", type=PATH,
                   help="with --all, use REPORTS_DIR/NAME.json when present (default benchmarks/reports, when there "
                        "is one; a folder given that does not exist is refused)")


@command("card", "render a model card from a zoo entry's config (and a benchmark report)", _card_args)
def _card(args: argparse.Namespace) -> int:
    if args.all == bool(args.name):
        raise ValueError("give either a model NAME or --all")
    # options of the other form were ignored without a word: a card written elsewhere, or without its results
    given = {"--out": args.out, "--benchmark": args.benchmark} if args.all else {
        "--out-dir": args.out_dir, "--reports-dir": args.reports_dir}
    wrong = [option for option, value in given.items() if value is not None]
    if wrong:
        form, other = ("--all", "one card (NAME)") if args.all else ("NAME", "--all")
        them = "them" if len(wrong) > 1 else "it"
        raise InvalidInputError(f"{' and '.join(wrong)} {'apply' if len(wrong) > 1 else 'applies'} to {other}, not to "
                                f"{form}: leave {them} out")
    if args.all:
        args.out_dir = args.out_dir or "model_cards"
        check_writable_dir(args.out_dir, "card folder")
        reports_dir = args.reports_dir
        if reports_dir is None:
            reports_dir = DEFAULT_REPORTS_DIR if DEFAULT_REPORTS_DIR.is_dir() else None
            if reports_dir is None:
                logger.warning("no %s folder here: the cards are rendered without benchmark results (give "
                               "--reports-dir)", DEFAULT_REPORTS_DIR)
        written, skipped = render_all(args.out_dir, reports_dir)
        for path in written:
            logger.info("wrote %s", path)
        for name, why in skipped.items():
            logger.info("skipped %s: %s", name, why)
        logger.info("%d card(s) written, %d entr%s skipped", len(written), len(skipped),
                    "y" if len(skipped) == 1 else "ies")
        return 0
    out = Path(args.out) if args.out else Path("model_cards") / f"{args.name}.md"
    if out.is_dir():
        raise InvalidInputError(f"--out {str(out)!r} is a folder; give the card's file name, e.g. "
                                f"{str(out / (args.name + '.md'))!r}")
    if args.benchmark and out.resolve() == Path(args.benchmark).resolve():
        raise InvalidInputError(f"--out {str(out)!r} is the --benchmark report itself: the card would replace it; "
                                f"give the card another file name, e.g. {str(out.with_suffix('.md'))!r}")
    check_writable_dir(out.parent, "card folder")
    atomic_write_text(out, zoo_card(args.name, args.benchmark))
    logger.info("wrote %s", out)
    return 0
