"""A static leaderboard site of our evaluations beside RobustBench's published leaderboard.

``build_site(["runs/demo"], "site")`` (or ``robust-mix leaderboard runs/demo --out site``) reads
benchmark reports, sweeps and certificates, checks them, and writes a self-contained site that
opens from ``file://``: a sortable ranking table with RobustBench's rows as marked references,
an accuracy-robustness scatter with the published Pareto frontier, and one page per model.

Modules: :mod:`~robust_mix.leaderboard.inputs` (finding and checking the inputs),
:mod:`~robust_mix.leaderboard.snapshot` (the shipped RobustBench numbers),
:mod:`~robust_mix.leaderboard.scatter` (Pareto frontier, SVG plot),
:mod:`~robust_mix.leaderboard.markdown` (model cards to HTML),
:mod:`~robust_mix.leaderboard.render` (the pages), :mod:`~robust_mix.leaderboard.site` (writing the folder),
:mod:`~robust_mix.leaderboard.browser` (headless Chromium, for tests and screenshots).
"""
from robust_mix.leaderboard.site import SiteResult, build_site

__all__ = ["SiteResult", "build_site"]
