"""The trade-off scatter (robust_mix.leaderboard.scatter): Pareto frontier and the SVG."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from robust_mix.leaderboard.scatter import Point, Series, pareto_front, scatter_svg

SVG = "{http://www.w3.org/2000/svg}"


def test_pareto_front_keeps_the_undominated_points_by_increasing_clean_accuracy():
    points = [(90, 10), (80, 40), (85, 30), (70, 45), (80, 35), (60, 44), (90, 5), (80, 40)]
    front = pareto_front(points)
    assert [points[i] for i in front] == [(70, 45), (80, 40), (85, 30), (90, 10)]
    assert front[1] == 1  # of two identical points the first is kept
    assert pareto_front([]) == [] and pareto_front([(1, 2)]) == [0]


def _svg(series):
    return scatter_svg(series, title="t", description="d")


def test_svg_places_each_point_and_is_well_formed():
    ours = Series("ours", [Point(80.0, 60.0, "mine", href="models/mine.html")], "#0072b2", show_labels=True)
    refs = Series("reference", [Point(90.0, 40.0, "A"), Point(70.0, 65.0, "B")])
    front = Series("frontier", refs.points, line=True)
    sweep = Series("sweep", [Point(95.0, 0.0, "alpha 0"), Point(80.0, 60.0, ""), Point(75.0, 62.0, "alpha 1")],
                   "#0072b2", line=True, show_labels=True)
    text = _svg([refs, front, ours, sweep])
    root = ET.fromstring(text)  # parses: valid XML
    assert root.get("role") == "img" and root.find(f"{SVG}title").text == "t"
    circles = root.iter(f"{SVG}circle")
    # 3 sweep + 2 reference + 1 ours markers, plus legend marks
    assert sum(1 for c in circles) >= 6
    groups = {g.get("class") for g in root.iter(f"{SVG}g")}
    assert {"ours", "sweep", "reference", "reference frontier"} <= groups
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "point-label"]
    assert labels == ["mine", "alpha 0", "alpha 1"]  # ours first; empty labels are not drawn
    links = [a.get("href") for a in root.iter(f"{SVG}a")]
    assert links == ["models/mine.html"]


def test_higher_accuracy_is_drawn_further_right_and_higher():
    text = _svg([Series("ours", [Point(60.0, 20.0, "low"), Point(90.0, 50.0, "high")])])
    (x1, y1), (x2, y2) = [(float(a), float(b)) for a, b in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="5"', text)]
    assert x2 > x1 and y2 < y1  # SVG y grows downwards


def test_labels_are_escaped():
    text = _svg([Series("ours", [Point(50.0, 50.0, "<b>&", "<script>")], show_labels=True)])
    assert "<script>" not in text and "&lt;b&gt;&amp;" in text
    ET.fromstring(text)
