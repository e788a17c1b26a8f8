"""console/charts.py: numbers in, well-formed SVG out, with a title and description, one point per value."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from console.charts import Series, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup) -> ET.Element:
    return ET.fromstring(str(markup))


def test_points_are_placed_by_value_and_escaped_text_stays_well_formed():
    svg = parse(line_chart(Series([0.0, 0.5, 1.0], [0.0, 0.2, 0.6], [0.4, 0.8, 1.0], ["a<b", "c&d", '"e"']),
                           chart_id="c1", title="Accuracy <of> worker & co", description="three points",
                           x_label="answers", threshold=0.9, height=260))
    assert svg.find(f"{SVG}title").text == "Accuracy <of> worker & co"
    assert svg.get("aria-labelledby") == "c1-title c1-desc" and svg.find(f"{SVG}desc").text == "three points"
    circles = svg.findall(f"{SVG}circle")
    assert [float(c.get("data-value")) for c in circles] == [0.0, 0.5, 1.0]
    assert [c.find(f"{SVG}title").text for c in circles] == ["a<b", "c&d", '"e"']
    xs, ys = [float(c.get("cx")) for c in circles], [float(c.get("cy")) for c in circles]
    assert xs == sorted(xs) and ys[0] > ys[1] > ys[2]  # SVG's y grows downwards
    assert ys[0] - ys[1] == ys[1] - ys[2]  # linear
    band = svg.find(f"{SVG}polygon").get("points").split()
    assert len(band) == 6  # the upper bounds left to right, the lower back
    assert float(svg.find(f"{SVG}line[@class='threshold']").get("y1")) < ys[1]
    assert "style" not in str(line_chart(Series([0.3]), chart_id="x", title="t", description="d", x_label="x"))


def test_an_empty_or_one_point_series_draws_without_a_line():
    empty = parse(line_chart(Series([]), chart_id="e", title="none", description="no data", x_label="x"))
    assert empty.findall(f"{SVG}circle") == [] and empty.find(f"{SVG}polyline") is None
    one = parse(line_chart(Series([2.0]), chart_id="o", title="one", description="d", x_label="x"))
    [point] = one.findall(f"{SVG}circle")
    assert float(point.get("data-value")) == 2.0 and float(point.get("cy")) == 14.0  # clamped to the top
