"""Build the static leaderboard site: collect and check the inputs, render the pages, write the folder.

The site is self-contained (no server, no network, no CDN; it opens from ``file://``):
``index.html``, ``models/<slug>.html`` with copies of each model's ``report.json`` and
``model_info.json`` and its sweep and certificate plots, and ``assets/`` (one style sheet, one
small script). It is written into a fresh folder beside ``out_dir`` and moved into place, so a
reader sees the old site or the new one, never half of one.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from robust_mix.version import __version__
from robust_mix.cards import render_card
from robust_mix.config import ModelConfig
from robust_mix.io import atomic_write_bytes
from robust_mix.validate import check_writable_dir
from robust_mix.leaderboard import markdown
from robust_mix.leaderboard.inputs import Board, Evaluation, Rejected, choose_board, collect, describe_request
from robust_mix.leaderboard.inputs import config_of
from robust_mix.leaderboard.inputs import SITE_MARKER as MARKER
from robust_mix.leaderboard.render import index_body, model_body, page
from robust_mix.leaderboard.scatter import PALETTE, REFERENCE_COLOUR, Point, Series, pareto_front, scatter_svg
from robust_mix.leaderboard.snapshot import ReferenceEntry, load_snapshot
from robust_mix.formatting import format_alpha, interval_heading, percent, percent_interval
from robust_mix.results import INTERVAL_LEVEL
from robust_mix.sweep import POLICY

logger = logging.getLogger(__name__)

ASSETS = ("leaderboard.css", "leaderboard.js")

PathLike = Union[str, Path]


@dataclass
class SiteResult:
    """What :func:`build_site` wrote, and what it left out."""

    out_dir: Path
    board: Optional[Board]
    evaluations: list[Evaluation]
    references: list[ReferenceEntry]
    rejected: list[Rejected]
    files: list[str] = field(default_factory=list)
    total_bytes: int = 0


# -- model cards -------------------------------------------------------------------------------
def _render(config: ModelConfig, e: Optional[Evaluation]) -> tuple[Optional[str], Optional[str]]:
    try:
        return render_card(config, benchmark=e.result if e is not None else None,
                           benchmark_source=e.path.name if e is not None else "report.json"), None
    except (ValueError, FileNotFoundError) as err:
        return None, str(err)


def model_card(e: Evaluation) -> tuple[Optional[str], str]:
    """The Markdown card to show for ``e`` and a note saying where it comes from.

    In order: a ``README.md`` beside the report (a saved model's card), a ``config.json`` beside it
    (rendered with this report's numbers), the registered entry of the report's model.
    """
    readme = e.sibling("README.md")
    if readme is not None:
        return readme.read_text(encoding="utf-8"), f"The model card saved beside the report ({readme}), as written."
    config_path = e.sibling("config.json")
    if config_path is not None:
        try:
            config = ModelConfig.load(config_path)
        except (ValueError, TypeError, json.JSONDecodeError) as err:
            return None, f"No card: {config_path} could not be read as a model config ({err})."
        text, error = _render(config, e)
        return text, (f"Rendered from {config_path} with this report's numbers." if text else f"No card: {error}")
    model = e.result.model
    config = config_of(model)
    if config is not None:
        text, error = _render(config, None)
        if text is None:
            return None, f"No card: {error}"
        return text, (f"The card of the registered entry {model!r} (with the overrides its name states), rendered "
                      "from its config as registered now. Reports written before robust_mix named overrides record "
                      "the entry's bare name: if such a run used any (a changed alpha, say), the card describes the "
                      "unchanged entry. "
                      "The numbers on this page are the report's.")
    return None, (f"No card: {model!r} is not a registered entry, and no README.md or config.json lies beside "
                  "the report.")


# -- the scatter -------------------------------------------------------------------------------
def scatter_series(evaluations: list[Evaluation], references: list[ReferenceEntry]) -> list[Series]:
    """Markers and lines of the trade-off plot (percent): published points, frontier, ours, sweeps."""
    ref_points = [Point(r.clean_acc, r.robust_acc, r.name, f"{r.name} (RobustBench): clean {r.clean_acc:.2f} %, "
                        f"robust {r.robust_acc:.2f} %", r.link or None) for r in references]
    front = [ref_points[i] for i in pareto_front([(p.x, p.y) for p in ref_points])]
    series = [Series("reference", ref_points, REFERENCE_COLOUR), Series("frontier", front, "#555555", line=True)]
    drawn_sweeps: set[Path] = set()
    for i, e in enumerate(evaluations):
        colour = PALETTE[i % len(PALETTE)]
        r = e.result
        for run in e.sweeps:
            if run.path in drawn_sweeps:
                continue
            drawn_sweeps.add(run.path)
            ends = {0, len(run.fixed_points()) - 1}
            fixed = [Point(100 * p.clean_accuracy, 100 * p.robust_accuracy,
                           f"alpha {format_alpha(float(p.alpha))}" if j in ends else "",
                           f"{run.model} alpha {format_alpha(float(p.alpha))} ({run.attack}, {p.n_examples} "
                           f"examples): clean {percent(p.clean_accuracy)} %, robust {percent(p.robust_accuracy)} %"
                           + _interval_note(_sweep_interval(p)), y_interval=_percent_pair(_sweep_interval(p)))
                     for j, p in enumerate(run.fixed_points())]
            policy = [Point(100 * p.clean_accuracy, 100 * p.robust_accuracy, "policy",
                            f"{run.model} adaptive policy ({run.attack}, {p.n_examples} examples): clean "
                            f"{percent(p.clean_accuracy)} %, robust {percent(p.robust_accuracy)} %"
                            + _interval_note(_sweep_interval(p)), star=True, y_interval=_percent_pair(_sweep_interval(p)))
                      for p in run.points if p.alpha == POLICY]
            series.append(Series("sweep", fixed, colour, line=True, show_labels=True))
            series.append(Series("sweep", policy, colour))
        series.append(Series("ours", [Point(
            100 * r.best_clean[0], 100 * r.robust_accuracy, e.label,
            f"{e.label}: clean {percent(r.best_clean[0])} % ({r.best_clean[1]:,} images), robust {percent(r.robust_accuracy)} % "
            f"({r.n_examples:,} examples)" + _interval_note(r.robust_interval()), f"models/{e.slug}.html",
            y_interval=_percent_pair(r.robust_interval()))], colour, show_labels=True))
    return series


def _sweep_interval(point: Any) -> Optional[tuple[float, float]]:
    """A sweep point's robust-accuracy interval (fractions), or ``None`` where its sweep did not record one."""
    if point.robust_low is None or point.robust_high is None:
        return None
    return point.robust_low, point.robust_high


def _percent_pair(interval: Optional[tuple[float, float]]) -> Optional[tuple[float, float]]:
    return None if interval is None else (100 * interval[0], 100 * interval[1])


def _interval_note(interval: Optional[tuple[float, float]]) -> str:
    return "" if interval is None else f", {interval_heading(INTERVAL_LEVEL)} {percent_interval(interval)}"


# -- writing -----------------------------------------------------------------------------------
def _asset(name: str) -> bytes:
    return resources.files("robust_mix.leaderboard").joinpath("assets", name).read_bytes()


def _copy_plots(files: dict[str, bytes], folder: str, slug: str, prefix: str,
                pngs: list[Optional[Path]]) -> list[Optional[str]]:
    """Add each PNG to ``files`` as ``folder/<prefix>-<i>.png``; the page-relative links (``None`` where no PNG)."""
    links: list[Optional[str]] = []
    for i, png in enumerate(pngs):
        if png is None:
            links.append(None)
            continue
        name = f"{prefix}-{i + 1}.png"
        files[f"{folder}/{name}"] = png.read_bytes()
        links.append(f"{slug}/{name}")
    return links


def _pages(board: Optional[Board], evaluations: list[Evaluation], references: list[ReferenceEntry],
           rejected: list[Rejected], used: list[str], command: Optional[str], request: str = "") -> dict[str, bytes]:
    snapshot = load_snapshot()
    files: dict[str, bytes] = {f"assets/{name}": _asset(name) for name in ASSETS}
    for e in evaluations:
        folder = f"models/{e.slug}"
        links = [("report.json (the report this page is read from)", f"{e.slug}/report.json")]
        files[f"{folder}/report.json"] = e.path.read_bytes()
        info = e.sibling("model_info.json")
        if info is not None:
            files[f"{folder}/model_info.json"] = info.read_bytes()
            links.append(("model_info.json (RobustBench's model-info schema)", f"{e.slug}/model_info.json"))
        sweep_pngs = _copy_plots(files, folder, e.slug, "sweep", [run.png for run in e.sweeps])
        cert_pngs = _copy_plots(files, folder, e.slug, "certify", [cert.png for cert in e.certificates])
        card_text, card_note = model_card(e)
        body = model_body(e, card_html=markdown.to_html(card_text, heading_offset=2) if card_text else None,
                          card_note=card_note, files=links, sweep_pngs=sweep_pngs, certificate_pngs=cert_pngs)
        title = f"{e.label}: {board.describe() if board else ''} (robust_mix leaderboard)"
        files[f"{folder}.html"] = page(title, body, root="../", command=command).encode("utf-8")
    described = board.describe() if board else (f"no report for {request}" if request else "no valid report")
    scatter = scatter_svg(scatter_series(evaluations, references),
                          title=f"Clean against robust accuracy, {described}",
                          description=f"{len(evaluations)} of our evaluations and {len(references)} published "
                                      "RobustBench entries; x: clean accuracy (%), y: robust accuracy (%).")
    body = index_body(board, evaluations, references, snapshot, scatter, used, rejected, request)
    files["index.html"] = page(f"Leaderboard: {described} (robust_mix)", body, command=command).encode("utf-8")
    return files


def _replace_folder(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a new folder beside ``out`` and move it into place."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise FileExistsError(f"{out} exists and is not a site written by robust-mix leaderboard (no {MARKER} "
                              "file in it): choose an empty or new folder for --out")
    check_writable_dir(out.parent, "folder to hold the site")  # a file on the way, read-only: said with the path
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new-"))
    try:
        for rel, data in files.items():
            atomic_write_bytes(staging / rel, data)
        os.chmod(staging, 0o755)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "site")
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def build_site(paths: Iterable[PathLike], out_dir: PathLike, *, dataset: Optional[str] = None,
               threat_model: Optional[str] = None, eps: Optional[float] = None, reference: bool = True,
               command: Optional[str] = None) -> SiteResult:
    """Build the leaderboard site of the reports (and sweeps, certificates) under ``paths``.

    Args:
        paths: ``report.json``/``sweep.json``/``certify.json`` files, or folders searched for them.
        out_dir: the site's folder (replaced if it holds a site built before; else it must be empty or new).
        dataset, threat_model, eps: the leaderboard to build; by default the one most reports are for.
        reference: add RobustBench's published rows for the same leaderboard.
        command: the command line, stated in the pages' footers.

    Returns:
        What was written, and every input left out with the reason (also listed on the index page).
    """
    out = Path(out_dir).expanduser()
    check_writable_dir(out.parent, "folder of the site")  # before any work: a file in the way, the package
    inputs = collect(paths)
    board, kept = choose_board(inputs, dataset, threat_model, eps)
    references = (load_snapshot().board(board.dataset, board.threat_model, board.eps)
                  if board is not None and reference else [])
    used = [f"{e.path} (report, page models/{e.slug}.html)" for e in kept.evaluations]
    used += [f"{run.path} (sweep of {run.model})" for run in kept.sweeps]
    used += [f"{cert.path} (certificates of {cert.model})" for cert in kept.certificates]
    files = _pages(board, kept.evaluations, references, kept.rejected, used, command,
                   describe_request(dataset, threat_model, eps))
    files[MARKER] = (json.dumps({"robust_mix": __version__, "files": sorted(files)}, indent=1)
                     + "\n").encode("utf-8")
    _replace_folder(out, files)
    for r in kept.rejected:
        logger.debug("left out %s: %s", r.path, r.reason)
    logger.info("leaderboard %s: %d evaluations, %d reference rows, %d files left out -> %s",
                board.describe() if board else "(none)", len(kept.evaluations), len(references),
                len(kept.rejected), out)
    return SiteResult(out, board, kept.evaluations, references, kept.rejected, sorted(files),
                      sum(len(v) for v in files.values()))

