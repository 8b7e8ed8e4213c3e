"""The accuracy-robustness scatter: Pareto frontier and an inline SVG drawn from the numbers.

The SVG is plain markup (readable without JavaScript, light, with a ``<title>`` per point for
screen readers and tooltips). Elements carry the classes ``ours``, ``sweep``, ``reference`` and
``frontier`` so that the page's style sheet and script can show or hide a kind of point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Literal, Optional, Sequence

from robust_mix.formatting import interval_heading
from robust_mix.results import INTERVAL_LEVEL

Kind = Literal["ours", "sweep", "reference", "frontier"]

#: Colours of our entries (colour-blind-safe palette); a sweep takes its entry's colour.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")
REFERENCE_COLOUR = "#8c8c8c"

WIDTH, HEIGHT = 640, 420
MARGIN = {"left": 56, "right": 16, "top": 16, "bottom": 46}


@dataclass(frozen=True)
class Point:
    """One marker: ``x`` clean and ``y`` robust accuracy (percent); ``y_interval``: the robust accuracy's
    confidence interval (percent), drawn as a vertical bar through the marker, where the numbers have one."""

    x: float
    y: float
    label: str
    tooltip: str = ""
    href: Optional[str] = None
    star: bool = False
    y_interval: Optional[tuple[float, float]] = None


@dataclass
class Series:
    """Points of one kind, drawn as markers, optionally joined by a line (in the order given)."""

    kind: Kind
    points: list[Point]
    colour: str = REFERENCE_COLOUR
    line: bool = False
    show_labels: bool = False


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both coordinates, by increasing ``x``.

    A point is dominated when another has ``x`` and ``y`` at least as large and one of them larger;
    of identical points only the first is kept.
    """
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1], i))
    front, best_y = [], -math.inf
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def _nice_step(span: float) -> float:
    raw = span / 6 if span > 0 else 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _axis(values: Sequence[float]) -> tuple[float, float, float]:
    """(low, high, tick step) covering ``values`` with a margin, clipped to [0, 100]."""
    lo, hi = (min(values), max(values)) if values else (0.0, 100.0)
    pad = max((hi - lo) * 0.06, 1.0)
    step = _nice_step(hi - lo + 2 * pad)
    low = max(0.0, math.floor((lo - pad) / step) * step)
    high = min(100.0, math.ceil((hi + pad) / step) * step)
    return low, (high if high > low else low + step), step


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


class _Frame:
    def __init__(self, xs: Sequence[float], ys: Sequence[float]) -> None:
        self.x0, self.x1, self.xstep = _axis(xs)
        self.y0, self.y1, self.ystep = _axis(ys)
        self.left, self.top = MARGIN["left"], MARGIN["top"]
        self.w = WIDTH - MARGIN["left"] - MARGIN["right"]
        self.h = HEIGHT - MARGIN["top"] - MARGIN["bottom"]

    def px(self, x: float) -> float:
        return round(self.left + (x - self.x0) / (self.x1 - self.x0) * self.w, 1)

    def py(self, y: float) -> float:
        return round(self.top + self.h - (y - self.y0) / (self.y1 - self.y0) * self.h, 1)

    def ticks(self, low: float, high: float, step: float) -> list[float]:
        n = int(round((high - low) / step))
        return [low + i * step for i in range(n + 1)]


def _grid(frame: _Frame, x_label: str, y_label: str) -> list[str]:
    out = ['<g class="axes">']
    for t in frame.ticks(frame.x0, frame.x1, frame.xstep):
        x = frame.px(t)
        out.append(f'<line class="grid" x1="{x}" y1="{frame.top}" x2="{x}" y2="{frame.top + frame.h}"/>'
                   f'<text class="tick" x="{x}" y="{frame.top + frame.h + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for t in frame.ticks(frame.y0, frame.y1, frame.ystep):
        y = frame.py(t)
        out.append(f'<line class="grid" x1="{frame.left}" y1="{y}" x2="{frame.left + frame.w}" y2="{y}"/>'
                   f'<text class="tick" x="{frame.left - 6}" y="{y + 4}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<rect class="frame" x="{frame.left}" y="{frame.top}" width="{frame.w}" height="{frame.h}"/>')
    out.append(f'<text class="axis-label" x="{frame.left + frame.w / 2}" y="{HEIGHT - 8}" '
               f'text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text class="axis-label" transform="translate(14 {frame.top + frame.h / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    out.append("</g>")
    return out


def _interval(series: Series, point: Point, frame: _Frame) -> str:
    """The vertical bar of ``point.y_interval`` with short caps ("" without one)."""
    if point.y_interval is None:
        return ""
    x, (low, high) = frame.px(point.x), (frame.py(v) for v in point.y_interval)
    cap = 3
    return (f'<path class="interval" d="M{x},{low}V{high}M{x - cap},{low}H{x + cap}M{x - cap},{high}H{x + cap}" '
            f'fill="none" stroke="{series.colour}" stroke-width="1" opacity="0.7"/>')


def _marker(series: Series, point: Point, frame: _Frame) -> str:
    x, y = frame.px(point.x), frame.py(point.y)
    tip = f"<title>{escape(point.tooltip or point.label)}</title>"
    if point.star:
        r = 7
        pts = " ".join(f"{x + r * math.sin(math.pi * k / 5) * (1 if k % 2 == 0 else 0.45):.1f},"
                       f"{y - r * math.cos(math.pi * k / 5) * (1 if k % 2 == 0 else 0.45):.1f}" for k in range(10))
        shape = f'<polygon points="{pts}" fill="{series.colour}">{tip}</polygon>'
    else:
        radius = {"ours": 5, "sweep": 3, "reference": 3.2, "frontier": 3.2}[series.kind]
        fill = "#ffffff" if series.kind == "sweep" else series.colour
        shape = (f'<circle cx="{x}" cy="{y}" r="{radius}" fill="{fill}" stroke="{series.colour}" '
                 f'stroke-width="1.5">{tip}</circle>')
    return f'<a href="{escape(point.href)}">{shape}</a>' if point.href else shape


class _Labels:
    """Places text labels beside markers, inside the plot, clear of markers and earlier labels if possible."""

    OFFSETS = ((8, -6, "start"), (8, 14, "start"), (-8, -6, "end"), (-8, 14, "end"), (0, -10, "middle"),
               (0, 20, "middle"), (-8, -20, "end"), (8, -20, "start"), (-8, 28, "end"), (8, 28, "start"),
               (-8, -34, "end"), (8, -34, "start"))

    def __init__(self, frame: "_Frame") -> None:
        self.bounds = (frame.left, frame.top, frame.left + frame.w, frame.top + frame.h)
        self.taken: list[tuple[float, float, float, float]] = []

    def reserve(self, x: float, y: float, radius: float) -> None:
        self.taken.append((x - radius, y - radius, x + radius, y + radius))

    def _free(self, box: tuple[float, float, float, float]) -> bool:
        return not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in self.taken)

    def place(self, x: float, y: float, text: str) -> str:
        width = 6.2 * len(text)
        left, top, right, bottom = self.bounds
        candidates = []
        for dx, dy, anchor in self.OFFSETS:
            low = x + dx - {"start": 0, "end": width, "middle": width / 2}[anchor]
            box = (low, y + dy - 10, low + width, y + dy + 2)
            inside = left <= box[0] and box[2] <= right and top <= box[1] and box[3] <= bottom
            candidates.append((not inside, not self._free(box), dx, dy, anchor, box))
        _, _, dx, dy, anchor, box = min(candidates, key=lambda c: (c[0] or c[1], c[0], c[1]))
        self.taken.append(box)
        return (f'<text class="point-label" x="{round(x + dx, 1)}" y="{round(y + dy, 1)}" '
                f'text-anchor="{anchor}">{escape(text)}</text>')


def _legend(series: Sequence[Series], frame: _Frame) -> list[str]:
    entries = []
    seen = set()
    names = {"ours": "our evaluations", "sweep": "fixed-alpha sweeps (star: adaptive policy)",
             "reference": "RobustBench (published)", "frontier": "RobustBench Pareto frontier"}
    for s in series:
        if s.kind not in seen and s.points:
            seen.add(s.kind)
            entries.append(s)
    out = ['<g class="legend">']
    for i, s in enumerate(entries):
        x, y = frame.left + 10, frame.top + 14 + 16 * i
        css = "reference" if s.kind == "frontier" else s.kind
        if s.kind == "frontier":
            mark = f'<line x1="{x - 6}" y1="{y}" x2="{x + 6}" y2="{y}" stroke="{s.colour}" stroke-dasharray="4 3"/>'
        elif s.kind == "sweep":
            mark = (f'<line x1="{x - 6}" y1="{y}" x2="{x + 6}" y2="{y}" stroke="{s.colour}"/>'
                    f'<circle cx="{x}" cy="{y}" r="3" fill="#fff" stroke="{s.colour}"/>')
        else:
            mark = f'<circle cx="{x}" cy="{y}" r="4" fill="{s.colour}"/>'
        out.append(f'<g class="{css}">{mark}<text class="legend-text" x="{x + 12}" y="{y + 4}">'
                   f'{escape(names[s.kind])}</text></g>')
    if any(p.y_interval is not None for s in series for p in s.points):
        x, y = frame.left + 10, frame.top + 14 + 16 * len(entries)
        out.append(f'<g class="interval-key"><path d="M{x},{y - 6}V{y + 6}M{x - 3},{y - 6}H{x + 3}M{x - 3},{y + 6}'
                   f'H{x + 3}" fill="none" stroke="#555555"/><text class="legend-text" x="{x + 12}" y="{y + 4}">'
                   f'{escape(f"bars: robust accuracy, {interval_heading(INTERVAL_LEVEL)}")}</text></g>')
    out.append("</g>")
    return out


def scatter_svg(series: Sequence[Series], *, title: str, description: str,
                x_label: str = "clean accuracy (%)", y_label: str = "robust accuracy (%)") -> str:
    """An ``<svg>`` element plotting every series on shared axes fitted to their points."""
    xs = [p.x for s in series for p in s.points]
    ys = [p.y for s in series for p in s.points] + [v for s in series for p in s.points for v in (p.y_interval or ())]
    frame = _Frame(xs, ys)
    labels = _Labels(frame)
    out = [f'<svg class="scatter" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="scatter-title '
           f'scatter-desc" xmlns="http://www.w3.org/2000/svg">',
           f'<title id="scatter-title">{escape(title)}</title><desc id="scatter-desc">{escape(description)}</desc>']
    out += _grid(frame, x_label, y_label)
    wanted: list[tuple[int, float, float, str]] = []
    # draw order: reference points below, our points on top
    for s in sorted(series, key=lambda s: ("reference", "frontier", "sweep", "ours").index(s.kind)):
        if not s.points:
            continue
        out.append(f'<g class="{s.kind if s.kind != "frontier" else "reference frontier"}">')
        if s.line and len(s.points) > 1:
            path = " ".join(f"{frame.px(p.x)},{frame.py(p.y)}" for p in s.points)
            dash = ' stroke-dasharray="5 4"' if s.kind == "frontier" else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="1.5"{dash}/>')
        for p in s.points if s.kind != "frontier" else ():  # the frontier's points are reference points
            out.append(_interval(s, p, frame) + _marker(s, p, frame))
            labels.reserve(frame.px(p.x), frame.py(p.y), 6 if s.kind == "ours" else 4)
            if s.show_labels and p.label:
                wanted.append((0 if s.kind == "ours" else 1, frame.px(p.x), frame.py(p.y), p.label))
        out.append("</g>")
    # our entries' names first, then sweep ends, each where it overlaps least
    out.append('<g class="point-labels">')
    out += [labels.place(x, y, text) for _, x, y, text in sorted(wanted, key=lambda w: w[0])]
    out.append("</g>")
    out += _legend(series, frame)
    out.append("</svg>")
    return "\n".join(out)
