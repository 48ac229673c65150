"""The dashboard's charts: server-rendered SVG that the strict CSP allows (no script, no inline style),
well-formed, labelled for screen readers, and sound on empty or gappy data. The figures themselves
are checked against seeded truth in test_dashboard_numbers.py."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta

from nectar.admin.analytics import charts

SVG = "{http://www.w3.org/2000/svg}"


def parse_svg(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # noqa: S314 - our own server's output, not untrusted input


def test_dashboard_charts_are_wellformed_svg_without_script_or_inline_style(staff_browser):
    response = staff_browser("read_only").get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    svgs = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    assert len(svgs) == 4
    for svg in svgs:
        root = parse_svg(svg)
        assert root.get("role") == "img" and root.get("aria-label")
        assert root.find(f"{SVG}title") is not None
        assert root.get("viewBox") in (
            f"0 0 {charts.WIDTH} {charts.HEIGHT}",
            f"0 0 {charts.NARROW} {charts.HEIGHT}",
        )
    assert "<script" not in page and "style=" not in page
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_dashboard_needs_a_staff_session(admin_app):
    response = admin_app.test_client().get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def days(n: int) -> list[date]:
    return [date(2026, 1, 1) + timedelta(days=i) for i in range(n)]


def test_bar_chart_stacks_scales_and_escapes():
    svg = charts.bar_chart(
        "Runs <per> day",
        days(3),
        [charts.Series("ok", [1, 0, 4], "chart-ok"), charts.Series("<bad>", [2, 0, 3], "chart-bad")],
    )
    root = parse_svg(str(svg))
    bars = root.findall(f"{SVG}rect")
    assert len(bars) == 4  # zero values draw nothing
    heights = [float(bar.get("height")) for bar in bars]
    plot = charts.HEIGHT - charts.TOP - charts.BOTTOM
    # The tallest day (7) is scaled against 10, the next 1-2-5 step: 4 + 3 of 10 fill 70 %.
    assert round(heights[2] + heights[3], 1) == round(plot * 0.7, 1)
    assert [t.text for t in root.iter(f"{SVG}title")][1:] == [
        "2026-01-01: 1 ok, 2 <bad>", "2026-01-01: 1 ok, 2 <bad>",
        "2026-01-03: 4 ok, 3 <bad>", "2026-01-03: 4 ok, 3 <bad>",
    ]  # fmt: skip
    assert "&lt;bad&gt;" in str(svg) and "Runs &lt;per&gt; day" in str(svg)


def test_empty_and_gappy_data():
    empty = parse_svg(str(charts.bar_chart("Nothing", days(30), [charts.Series("n", [0] * 30, "c")])))
    assert empty.findall(f"{SVG}rect") == []
    # Counts: the axis reads 0, 1, 2 (no half people); dates: the last day and every 7th before it.
    assert [t.text for t in empty.iter(f"{SVG}text")][:3] == ["0", "1", "2"]
    assert [t.text for t in empty.iter(f"{SVG}text")][3:] == ["01-02", "01-09", "01-16", "01-23", "01-30"]
    line = parse_svg(
        str(
            charts.line_chart(
                "Rate", days(5), [0.5, None, 0.25, 1.0, None], y_max=1.0, y_label=charts.percent_label
            )
        )
    )
    # A day without a value breaks the line: one segment through days 3 and 4, a lone point on day 1.
    assert len(line.findall(f"{SVG}polyline")) == 1
    assert [t.text for t in line.iter(f"{SVG}title")][1:] == [
        "2026-01-01: 50%",
        "2026-01-03: 25%",
        "2026-01-04: 100%",
    ]
    assert charts.nice_ceiling(0) == 1 and charts.nice_ceiling(7) == 10 and charts.nice_ceiling(11) == 20
    assert charts.nice_ceiling(0.3) == 0.5 and charts.nice_ceiling(250) == 500
