"""Charts: drawn as SVG under files/charts/ and embedded in transcript.md with the `charts` extra; JSON without."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from convsync.api.models import ChartPart, Message, TextPart
from convsync.mirror import charts
from convsync.mirror.transcript import render_message

T0 = datetime(2025, 6, 23, 15, 5, 49, tzinfo=UTC)
SPEC = (
    '{"data": {"values": [{"x": "a", "y": 1}, {"x": "b", "y": 3}]}, "mark": "bar",'
    ' "encoding": {"x": {"field": "x", "type": "nominal"}, "y": {"field": "y", "type": "quantitative"}}}'
)
MESSAGE = Message("m-1", "agent", (TextPart("t", "Here."), ChartPart("c", SPEC, description="Bars")), T0)


def test_with_the_extra_a_chart_is_an_image_with_its_spec_collapsed() -> None:
    """The transcript embeds files/charts/<message>-<n>.svg and keeps the spec in a collapsed block."""
    assert charts.available()
    text = render_message(MESSAGE)
    assert "![Chart: Bars](files/charts/m-1-1.svg)\n\n<details><summary>Chart spec (Vega-Lite)</summary>" in text
    assert '"mark": "bar"' in text


def test_without_the_extra_a_chart_is_its_json_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """No vl-convert: the chart is the collapsed JSON spec, no image link."""
    monkeypatch.setattr(charts, "available", lambda: False)
    text = render_message(MESSAGE)
    assert "![" not in text and "files/charts" not in text
    assert '<details><summary>Chart: Bars</summary>\n\n```json\n{\n  "data"' in text


def test_a_drawn_chart_is_svg_that_xml_tools_read(tmp_path: Path) -> None:
    """The file is SVG: xmllint and an XML parser read it, its root is <svg>."""
    assert charts.write_charts(tmp_path, [MESSAGE]) == 1
    svg = tmp_path / "files" / "charts" / "m-1-1.svg"
    assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    subprocess.run(["xmllint", "--noout", str(svg)], check=True, capture_output=True)
    assert charts.write_charts(tmp_path, [MESSAGE]) == 0  # drawn once


def test_a_spec_with_external_data_is_not_fetched(tmp_path: Path) -> None:
    """A spec naming a data URL draws a note instead: convsync never fetches what a chart points to."""
    bad = Message("m-2", "agent", (ChartPart("c", '{"data": {"url": "http://127.0.0.1:9/x.csv"}, "mark": "bar"}'),), T0)
    charts.write_charts(tmp_path, [bad])
    svg = tmp_path / "files" / "charts" / "m-2-0.svg"
    assert "could not be drawn" in svg.read_text()
    ET.parse(svg)
