"""HTML of the leaderboard site: the index (ranking table, scatter, inputs) and one page per model.

Pages are plain HTML that reads without JavaScript; ``assets/leaderboard.js`` only sorts the
table and shows or hides the RobustBench rows. Every number is formatted here from a report
(:class:`~robust_mix.leaderboard.inputs.Evaluation`) or the snapshot
(:class:`~robust_mix.leaderboard.snapshot.ReferenceEntry`); none is typed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Optional, Sequence, Union

from robust_mix.version import __version__
from robust_mix.protocol import ADAPTIVE_STAGES
from robust_mix.leaderboard.inputs import INTERVAL_LEVEL, Board, CertificateRun, Evaluation, Rejected, SweepRun
from robust_mix.leaderboard.snapshot import ReferenceEntry, Snapshot
from robust_mix.formatting import format_alpha, format_eps, interval_heading, percent, percent_interval
from robust_mix.sweep import POLICY
from robust_mix.results import BenchmarkResult

CSS, JS = "assets/leaderboard.css", "assets/leaderboard.js"
MISSING = "–"

#: The ranking table's columns: (header, sort type, short description for the column key).
COLUMNS = (
    ("#", "number", "rank by robust accuracy"),
    ("model", "text", "our report (links to its page) or a published RobustBench entry"),
    ("clean %", "number", "accuracy on unperturbed test images: the full test set when measured, else the attacked examples (hover for the count)"),
    ("AutoAttack %", "number", "robust accuracy under the AutoAttack suite alone"),
    ("adaptive %", "number", "robust accuracy under the adaptive attack alone (mixtures; when it ran)"),
    ("robust %", "number", "an example counts only if it survives every attack suite; RobustBench rows: their "
                           "ranked number (external evaluation when listed, else AutoAttack)"),
    (interval_heading(INTERVAL_LEVEL), "number", "Clopper-Pearson interval of robust %"),
    ("examples", "number", "test examples evaluated"),
    ("forward passes", "number", "networks run per prediction"),
    ("architecture", "text", ""),
    ("extra data", "text", "trained with data beyond the training set"),
    ("date / venue", "text", "our rows: the day the report was written; RobustBench rows: venue"),
    ("notes", "text", "why a row is not comparable with the leaderboard"),
)


@dataclass(frozen=True)
class Cell:
    """A table cell: the text shown and the value it sorts by (``None`` sorts last)."""

    text: str
    value: Union[float, str, None] = None
    html: Optional[str] = None


def _cell(c: Cell, header: bool = False) -> str:
    value = "" if c.value is None else (f"{c.value:.6g}" if isinstance(c.value, float) else str(c.value))
    body = c.html if c.html is not None else escape(c.text)
    tag = "th" if header else "td"
    scope = ' scope="row"' if header else ""
    return f'<{tag}{scope} data-value="{escape(value)}">{body}</{tag}>'


def _pct(fraction: Optional[float]) -> Cell:
    return Cell(MISSING) if fraction is None else Cell(percent(fraction), round(100 * fraction, 6))


def clean_text(result: BenchmarkResult) -> str:
    """Clean accuracy with the images it was measured on: on the full clean set when measured (as
    RobustBench's clean column), and on the attacked examples too when those differ."""
    accuracy, images = result.best_clean
    text = f"{percent(accuracy)} % ({images:,} images)"
    if images != result.n_examples:
        text += f"; {percent(result.clean_accuracy)} % on the {result.n_examples:,} attacked examples"
    return text


def _clean_cell(result: BenchmarkResult) -> Cell:
    accuracy, images = result.best_clean
    return Cell(f"{percent(accuracy)}", round(100 * accuracy, 6),
                f'<span title="on {images:,} test images">{percent(accuracy)}</span>')


def _ref_pct(value: Optional[float]) -> Cell:
    return Cell(MISSING) if value is None else Cell(f"{value:.2f}", value)


def _yes_no(value: Optional[bool]) -> Cell:
    return Cell(MISSING) if value is None else Cell("yes" if value else "no", "yes" if value else "no")


def interval_text(evaluation: Evaluation) -> str:
    return percent_interval(evaluation.interval())


def _our_row(e: Evaluation, rank: int) -> str:
    r = e.result
    notes = e.caveats()
    name = (f'<a href="models/{escape(e.slug)}.html">{escape(e.label)}</a>'
            + (f'<span class="sub">{escape(r.model)}</span>' if r.model != e.label else ""))
    cells = [
        Cell(str(rank), rank),
        Cell(e.label, e.label.lower(), name),
        _clean_cell(r), _pct(r.autoattack_accuracy), _pct(r.adaptive_accuracy), _pct(r.robust_accuracy),
        Cell(interval_text(e), round(100 * e.interval()[0], 6)),
        Cell(f"{r.n_examples:,}", r.n_examples),
        Cell(str(r.number_forward_passes), r.number_forward_passes),
        Cell(e.architecture or MISSING, e.architecture.lower() or None),
        _yes_no(e.additional_data),
        Cell(e.written, e.written),
        Cell("; ".join(notes), "; ".join(notes) or None,
             "".join(f'<span class="flag">{escape(n)}</span>' for n in notes)),
    ]
    css = "ours partial" if e.partial else "ours"
    return f'<tr class="{css}">' + _cell(cells[0]) + _cell(cells[1], header=True) + "".join(
        _cell(c) for c in cells[2:]) + "</tr>"


def _reference_row(entry: ReferenceEntry, rank: int, repository: str) -> str:
    notes = []
    if entry.external is not None:
        notes.append("robust %: external evaluation")
    if entry.unreliable:
        notes.append("marked unreliable by RobustBench")
    name = (f'<a href="{escape(entry.link)}" title="{escape(entry.paper)}">{escape(entry.name)}</a>'
            f'<span class="badge">RobustBench</span>'
            f'<a class="source" href="{escape(entry.source_url(repository))}">model info</a>')
    cells = [
        Cell(str(rank), rank), Cell(entry.name, entry.name.lower(), name),
        _ref_pct(entry.clean_acc), _ref_pct(entry.autoattack_acc), Cell(MISSING), _ref_pct(entry.robust_acc),
        Cell(MISSING), Cell(MISSING), Cell(str(entry.number_forward_passes), entry.number_forward_passes),
        Cell(entry.architecture, entry.architecture.lower()), _yes_no(entry.additional_data),
        Cell(entry.venue.replace("<br>", " "), entry.venue.lower()),
        Cell("; ".join(notes), "; ".join(notes) or None,
             "".join(f'<span class="flag flag-ref">{escape(n)}</span>' for n in notes)),
    ]
    return '<tr class="reference">' + _cell(cells[0]) + _cell(cells[1], header=True) + "".join(
        _cell(c) for c in cells[2:]) + "</tr>"


def ranked(evaluations: Sequence[Evaluation], references: Sequence[ReferenceEntry]
           ) -> list[Union[Evaluation, ReferenceEntry]]:
    """Our rows and the published rows in one order: robust accuracy, then clean accuracy, best first."""
    def key(row: Union[Evaluation, ReferenceEntry]) -> tuple[float, float]:
        if isinstance(row, Evaluation):
            return (-100 * row.result.robust_accuracy, -100 * row.result.best_clean[0])
        return (-row.robust_acc, -row.clean_acc)
    return sorted([*evaluations, *references], key=key)


def ranking_table(evaluations: Sequence[Evaluation], references: Sequence[ReferenceEntry], snapshot: Snapshot,
                  caption: str) -> str:
    """The sortable ``<table id="board">``: default order by robust accuracy."""
    head = "".join(f'<th scope="col" data-type="{kind}" title="{escape(note)}"'
                   + (' aria-sort="descending"' if header == "robust %" else "") + f">{escape(header)}</th>"
                   for header, kind, note in COLUMNS)
    rows = [_our_row(row, i) if isinstance(row, Evaluation) else _reference_row(row, i, snapshot.repository)
            for i, row in enumerate(ranked(evaluations, references), start=1)]
    return (f'<p class="table-note" id="board-note">{escape(caption)}</p><div class="table-wrap">'
            '<table id="board" class="board" aria-describedby="board-note">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def column_key() -> str:
    """A definition list explaining the table's columns."""
    return '<dl class="column-key">' + "".join(
        f"<dt>{escape(h)}</dt><dd>{escape(note)}</dd>" for h, _, note in COLUMNS if note) + "</dl>"


def rejected_list(rejected: Sequence[Rejected]) -> str:
    if not rejected:
        return "<p>Every input file was used.</p>"
    return ('<ul class="rejected">' + "".join(
        f"<li><code>{escape(str(r.path))}</code>: {escape(r.reason)}</li>" for r in rejected) + "</ul>")


def page(title: str, body: str, *, root: str = "", command: Optional[str] = None) -> str:
    """A whole HTML document; ``root`` is the relative path from the page to the site's top folder."""
    made_by = (f"Built with <code>{escape(command)}</code> by robust_mix {escape(__version__)}."
               if command else f"Built by robust_mix {escape(__version__)}.")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="stylesheet" href="{root}{CSS}">
</head>
<body>
{body}
<footer><p>{made_by} Every number on this page is read from the reports listed on the index page or from
the shipped RobustBench snapshot; none is typed in.</p></footer>
<script src="{root}{JS}"></script>
</body>
</html>
"""


def index_body(board: Optional[Board], evaluations: Sequence[Evaluation], references: Sequence[ReferenceEntry],
               snapshot: Snapshot, scatter: str, used: Sequence[str], rejected: Sequence[Rejected],
               request: str = "") -> str:
    """The index page's ``<header>`` and ``<main>`` (``request``: the board asked for, in words, if one was)."""
    heading = f"Leaderboard: {board.describe()}" if board else (
        f"Leaderboard: no report for the board asked for ({request})" if request else "Leaderboard: no valid report")
    partial = sum(e.partial for e in evaluations)
    lede = (f"{len(evaluations)} evaluation{'s' if len(evaluations) != 1 else ''} from robust_mix reports"
            + (f" ({partial} partial: fewer test examples than the leaderboard uses, marked in the table)"
               if partial else "")
            + (f", beside {len(references)} published RobustBench entries." if references else "."))
    if board is not None and not references:
        lede += (f" RobustBench's snapshot shipped here has no {board.threat_model} leaderboard for "
                 f"{board.dataset} at eps {format_eps(board.eps, board.threat_model)} (it has {', '.join(snapshot.datasets())} Linf), "
                 "so there are no reference rows.")
    parts = [f'<header><h1>{escape(heading)}</h1><p class="lede">{escape(lede)}</p></header>', "<main>"]
    if evaluations or references:
        caption = ("Ranked by robust accuracy (best first). Click a column header to sort by it."
                   + (" RobustBench rows are marked and can be hidden." if references else ""))
        parts.append('<section id="ranking"><h2>Ranking</h2><div class="controls" '
                     f'data-reference-rows="{len(references)}"></div>'
                     + ranking_table(evaluations, references, snapshot, caption)
                     + "<details><summary>What the columns mean</summary>" + column_key() + "</details></section>")
        parts.append('<section id="trade-off"><h2>Accuracy and robustness</h2><figure class="scatter-figure">'
                     + scatter + "<figcaption>Clean against robust accuracy of every row above"
                     + (", with the RobustBench Pareto frontier" if references else "")
                     + ". Sweeps (attack and example count in each model's page) move one mixture along its "
                       "mixing ratio alpha; they may use a cheaper attack than the table.</figcaption>"
                       "</figure></section>")
    parts.append('<section id="inputs"><h2>Inputs</h2><ul class="used">'
                 + "".join(f"<li><code>{escape(u)}</code></li>" for u in used)
                 + "</ul><h3>Files left out</h3>" + rejected_list(rejected) + "</section>")
    skipped = "".join(f"<li><code>{escape(s['dataset'])}/{escape(s['name'])}</code>: {escape(s['reason'])}</li>"
                      for s in snapshot.skipped)
    parts.append(f'<section id="snapshot"><h2>RobustBench snapshot</h2><p>Reference rows come from '
                 f'<a href="{escape(snapshot.repository)}">{escape(snapshot.repository)}</a>, files '
                 f"<code>{escape(snapshot.path)}</code>, read on {escape(snapshot.read_on)} "
                 f"({len(snapshot.entries)} entries for {', '.join(snapshot.datasets())}; each row links to the "
                 f"file and commit it was copied from). {escape(snapshot.note)}</p>"
                 + (f"<p>Files left out of the snapshot:</p><ul>{skipped}</ul>" if skipped else "") + "</section>")
    parts.append("</main>")
    return "\n".join(parts)


def _definition_table(rows: Sequence[tuple[str, str]], css: str = "facts") -> str:
    return (f'<div class="table-wrap"><table class="{css}"><tbody>'
            + "".join(f'<tr><th scope="row">{escape(k)}</th><td>{v}</td></tr>' for k, v in rows)
            + "</tbody></table></div>")


def _sweep_section(run: SweepRun, png: Optional[str]) -> str:
    rows = "".join(
        f"<tr><td>{escape(p.alpha if p.alpha == POLICY else format_alpha(float(p.alpha)))}</td>"
        f"<td>{percent(p.clean_accuracy)}</td><td>{percent(p.robust_accuracy)}</td><td>{p.n_examples:,}</td></tr>"
        for p in run.points)
    image = (f'<img src="{escape(png)}" alt="robust against clean accuracy along the sweep of {escape(run.model)}" '
             'loading="lazy">' if png else "")
    return (f"<section><h3>Sweep over alpha: <code>{escape(run.path.name)}</code></h3>"
            f"<p>Attack <code>{escape(run.attack)}</code> on {run.n_examples:,} examples.</p>{image}"
            '<div class="table-wrap"><table class="facts"><thead><tr><th scope="col">alpha</th>'
            '<th scope="col">clean %</th><th scope="col">robust %</th><th scope="col">examples</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div></section>")


def _certificate_section(cert: CertificateRun, png: Optional[str]) -> str:
    data = cert.data
    radii = data["radii"]
    setting = f"{escape(str(data['method']))}, {escape(str(data['norm']))}"
    if "sigma" in data:
        setting += f", sigma {escape(str(data['sigma']))}"
    if "n" in data:
        setting += f", n = {escape(str(data['n']))}"
    head = "".join(f'<th scope="col">r = {r:g}</th>' for r in radii)
    rows = "".join(f'<tr><th scope="row">{escape(c["label"])}</th>'
                   + "".join(f"<td>{100 * a:.1f}</td>" for a in c["certified_accuracy"]) + "</tr>"
                   for c in data["curves"])
    image = (f'<img src="{escape(png)}" alt="certified accuracy against radius of {escape(cert.model)}" '
             'loading="lazy">' if png else "")
    return (f"<section><h3>Certified accuracy: <code>{escape(cert.path.name)}</code></h3>"
            f"<p>{setting}; {int(data['n_examples']):,} {escape(cert.dataset)} examples. Certified accuracy (%) "
            f"at each radius:</p>{image}"
            f'<div class="table-wrap"><table class="facts"><thead><tr><th scope="col">ratio</th>{head}</tr>'
            f"</thead><tbody>{rows}</tbody></table></div></section>")


def model_body(e: Evaluation, *, card_html: Optional[str], card_note: str, files: Sequence[tuple[str, str]],
               sweep_pngs: Sequence[Optional[str]], certificate_pngs: Sequence[Optional[str]]) -> str:
    """The ``<header>`` and ``<main>`` of one model's page (``files``: (label, relative href))."""
    r = e.result
    lo, hi = e.interval()
    caveats = e.caveats()
    facts = [
        ("model", f"<code>{escape(r.model)}</code>"),
        ("data set, threat model, eps", escape(f"{r.dataset}, {r.threat_model}, {format_eps(r.eps, r.threat_model)}")),
        ("clean accuracy", clean_text(r)),
        *[(f"robust accuracy, {suite} suite alone", f"{percent(acc)} %") for suite, acc in r.suite_accuracy.items()],
        ("robust accuracy, every suite", f"{percent(r.robust_accuracy)} % ({e.robust_successes:,} of "
                                         f"{r.n_examples:,} examples)"),
        (f"{round(100 * INTERVAL_LEVEL)} % interval (Clopper-Pearson)", f"{100 * lo:.2f} – {100 * hi:.2f} %"),
        ("attack", f"<code>{escape(r.attack)}</code>, seed {r.seed}"
                   + (f"; budgets overridden: <code>{escape(str(r.options))}</code>" if r.options else "")),
        ("forward passes per prediction", str(r.number_forward_passes)),
        ("time", f"{r.wall_time_s:.1f} s, {r.world_size} process(es)"),
        ("report written", escape(e.written)),
        ("versions", escape(", ".join(f"{k} {v}" for k, v in r.versions.items()))),
    ]
    if r.command:
        facts.append(("command", f"<code>{escape(r.command)}</code>"))
    stage_rows = "".join(f"<tr><td><code>{escape(stage)}</code></td>"
                         f"<td>{'adaptive' if stage in ADAPTIVE_STAGES else 'autoattack'}</td>"
                         f"<td>{percent(acc)}</td></tr>" for stage, acc in r.stage_accuracy.items())
    parts = [f'<header><p class="crumb"><a href="../index.html">leaderboard</a></p><h1>{escape(e.label)}</h1>',
             f'<p class="lede">Benchmark report <code>{escape(str(e.path))}</code>.</p></header>', "<main>"]
    if caveats:
        parts.append('<div class="caveat" role="note"><strong>Not comparable with the leaderboard:</strong> '
                     + escape("; ".join(caveats)) + ".</div>")
    parts.append("<section><h2>Results</h2>" + _definition_table(facts) + "</section>")
    parts.append("<section><h2>Robust accuracy after each attack stage</h2>"
                 "<p>Stages in the order they ran. Each number counts the examples still classified correctly "
                 "after that stage and every earlier stage of its suite.</p>"
                 '<div class="table-wrap"><table class="facts"><thead><tr><th scope="col">stage</th>'
                 '<th scope="col">suite</th><th scope="col">robust %</th></tr></thead>'
                 f"<tbody>{stage_rows}</tbody></table></div></section>")
    if e.sweeps:
        parts.append("<section><h2>Trade-off sweeps</h2>" + "".join(
            _sweep_section(run, png) for run, png in zip(e.sweeps, sweep_pngs)) + "</section>")
    if e.certificates:
        parts.append("<section><h2>Certificates</h2>" + "".join(
            _certificate_section(cert, png) for cert, png in zip(e.certificates, certificate_pngs)) + "</section>")
    links = "".join(f'<li><a href="{escape(href)}">{escape(label)}</a></li>' for label, href in files)
    if e.model_info_error:
        links += f"<li>{escape(e.model_info_error)}</li>"
    parts.append(f"<section><h2>Files</h2><ul>{links}</ul></section>")
    parts.append(f'<section class="card"><h2>Model card</h2><p class="note">{escape(card_note)}</p>'
                 + (card_html or "") + "</section>")
    parts.append("</main>")
    return "\n".join(parts)

