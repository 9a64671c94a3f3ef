"""Chart parts drawn as SVG next to the transcript (``files/charts/<message>-<n>.svg``), with the optional
``charts`` extra (vl-convert-python, the one module importing it). Without the extra, ``transcript.md`` shows a
chart's spec as a collapsed JSON block, as before.

Drawing never reaches the network: a spec that names external data (``"data": {"url": …}``) is refused by the
converter (no base URL is allowed), and the file then says the chart could not be drawn. A drawn file is
written atomically before the transcript line that embeds it, and not again once it exists.
"""

from __future__ import annotations

import html
import importlib.util
import logging
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from convsync.api.models import ChartPart, Message
from convsync.mirror.atomic import write_atomic
from convsync.mirror.folders import FILES
from convsync.mirror.names import safe_name

log = logging.getLogger(__name__)

CHARTS_DIR = "charts"  # under files/


@cache
def available() -> bool:
    """Whether the ``charts`` extra is installed (asked once per process: the rendering must not change)."""
    return importlib.util.find_spec("vl_convert") is not None


def file_name(message_id: str, index: int) -> str:
    return safe_name(f"{message_id}-{index}.svg")


def link(message_id: str, index: int) -> str:
    """The chart's path relative to the conversation folder, as Markdown links it."""
    return f"files/{CHARTS_DIR}/{file_name(message_id, index)}"


def draw(spec: str) -> str:
    """The SVG of a Vega-Lite ``spec``; a small SVG saying why when it cannot be drawn."""
    import vl_convert  # the optional extra: loaded only when a chart is drawn

    try:
        svg: str = vl_convert.vegalite_to_svg(spec, allowed_base_urls=[])
    except Exception as exc:  # the converter raises ValueError for bad specs, and its runtime's own errors
        reason = " ".join(str(exc).split())[:200]
        log.info("a chart could not be drawn: %s", reason)
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="480" height="40">'
            f'<text x="8" y="24">This chart could not be drawn: {html.escape(reason)}</text></svg>\n'
        )
    return svg


def write_charts(folder: Path, messages: Sequence[Message]) -> int:
    """Draw every chart part of ``messages`` not drawn yet into ``folder/files/charts/``; how many were drawn."""
    if not available():
        return 0
    drawn = 0
    for message in messages:
        for index, part in enumerate(message.content):
            if isinstance(part, ChartPart):
                drawn += write_chart(folder, message.message_id, index, part)
    return drawn


def write_chart(folder: Path, message_id: str, index: int, part: ChartPart) -> int:
    """Draw one chart part unless its file exists; 1 if it was drawn."""
    if not available():
        return 0
    target = folder / FILES / CHARTS_DIR / file_name(message_id, index)
    if target.exists():
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, draw(part.chart_spec_raw), durable=False)  # drawn again from the spec if lost
    return 1
