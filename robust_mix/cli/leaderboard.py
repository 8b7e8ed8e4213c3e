"""``robust-mix leaderboard RUNS... --out site``: a static leaderboard site of finished reports.

Prints the ranking (our rows), every input left out with the reason, and the site's size;
``--screenshot`` also saves a picture of the index page taken by headless Chromium.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robust_mix.cli import EPS, EPS_HELP, PATH, POSITIVE_INT, command, format_table, one_line
from robust_mix.formatting import interval_heading, percent, percent_interval
from robust_mix.results import INTERVAL_LEVEL
from robust_mix.validate import InvalidInputError


#: Window width of ``--screenshot`` in CSS pixels, when ``--width`` is not given.
SCREENSHOT_WIDTH = 1280


def _leaderboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", type=PATH, nargs="+",
                   help="report.json / sweep.json / certify.json files, or folders holding them")
    p.add_argument("--out", type=PATH, required=True,
                   help="folder of the site (replaced if it holds a site built before)")
    p.add_argument("--dataset", help="leaderboard to build (default: the one most reports are for)")
    p.add_argument("--threat-model", choices=("Linf", "L2", "L1"), help="leaderboard's threat model")
    p.add_argument("--eps", type=EPS, help="the leaderboard's eps: " + EPS_HELP)
    p.add_argument("--no-reference", action="store_true", help="leave out RobustBench's published rows")
    p.add_argument("--screenshot", type=PATH, help="also save a PNG of the index page (needs Chromium)")
    p.add_argument("--width", type=POSITIVE_INT,
                   help=f"window width of the screenshot in CSS pixels (default {SCREENSHOT_WIDTH})")
    p.add_argument("--height", type=POSITIVE_INT,
                   help="screenshot only the top HEIGHT pixels (default: the whole page)")


@command("leaderboard", "build a static leaderboard site of reports, sweeps and certificates", _leaderboard_args)
def _leaderboard(args: argparse.Namespace) -> int:
    from robust_mix.leaderboard import build_site
    from robust_mix.leaderboard.inputs import describe_request

    unused = [option for option, value in (("--width", args.width), ("--height", args.height)) if value is not None]
    if unused and not args.screenshot:  # they were ignored without a word
        raise InvalidInputError(f"{' and '.join(unused)} {'set' if len(unused) > 1 else 'sets'} the screenshot's "
                                "size: give --screenshot FILE.png too, or leave "
                                f"{'them' if len(unused) > 1 else 'it'} out")
    if args.screenshot:  # a $ROBUST_MIX_CHROMIUM naming no program: said before the site is built
        from robust_mix.leaderboard.browser import BrowserError, find_chromium

        try:
            find_chromium()
        except BrowserError as err:
            print(f"error: no screenshot: {err}", file=sys.stderr)
            return 2
    try:
        site = build_site(args.runs, args.out, dataset=args.dataset, threat_model=args.threat_model, eps=args.eps,
                          reference=not args.no_reference, command=args.command_line)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if site.board is not None:
        rows = [[e.label, percent(e.result.clean_accuracy), percent(e.result.robust_accuracy),
                 percent_interval(e.interval()), e.result.n_examples,
                 "; ".join(e.caveats()) or "-"] for e in site.evaluations]
        rows.sort(key=lambda r: (-float(r[2]), -float(r[1])))
        print(f"{site.board.describe()}: {len(site.evaluations)} evaluation(s), {len(site.references)} "
              "RobustBench reference row(s)\n")
        print(format_table(["model", "clean %", "robust %", interval_heading(INTERVAL_LEVEL), "examples", "notes"],
                           rows))
    for rejected in site.rejected:
        print(f"left out {one_line(rejected.path)}: {one_line(rejected.reason)}", file=sys.stderr)
    print(f"\nwrote {len(site.files)} files ({site.total_bytes / 1e6:.2f} MB) to {site.out_dir}; "
          f"open {Path(site.out_dir, 'index.html').resolve().as_uri()}")
    if args.screenshot:
        from robust_mix.leaderboard.browser import BrowserError, Chromium

        try:
            with Chromium() as browser:
                page = browser.open(Path(site.out_dir, "index.html").resolve().as_uri(),
                                    width=args.width or SCREENSHOT_WIDTH,
                                    height=args.height if args.height is not None else 800)
                page.screenshot(args.screenshot, full_page=args.height is None)
        except BrowserError as err:
            print(f"error: no screenshot: {err}", file=sys.stderr)
            return 2
        print(f"screenshot: {args.screenshot}")
    if site.board is None:
        request = describe_request(args.dataset, args.threat_model, args.eps)
        print(f"error: no report for the board asked for ({request}) among the inputs; the site lists the reports "
              "left out and why (drop --dataset/--threat-model/--eps to build the board most reports are for)"
              if request else "error: no valid benchmark report among the inputs; the site lists why each was left out",
              file=sys.stderr)
        return 1
    return 0
