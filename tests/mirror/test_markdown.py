"""transcript.md read by a CommonMark parser (markdown-it-py): no message can swallow the ones after it."""

from __future__ import annotations

from datetime import UTC, datetime

from markdown_it import MarkdownIt

from convsync.api.models import (
    AttachmentPart,
    ChartPart,
    Message,
    OtherPart,
    QuickActionsPart,
    TextPart,
    ThoughtPart,
    ToolCallPart,
)
from convsync.mirror.transcript import closer, notice, render_message

T0 = datetime(2025, 6, 23, 15, 5, 49, tzinfo=UTC)

OPENERS = [
    "Unclosed:\n```python\nprint('and every heading after it is code')",
    "Tilde fence ~~~\n~~~~\nnever closed",
    "<!-- a comment that never ends",
    "<pre>\npreformatted, never closed",
    "Indented:\n   ````\nnot closed either",
]


def every_kind() -> list[Message]:
    parts = (
        ThoughtPart("t", "Thinking with ``` in it"),
        ToolCallPart("c", "get_weather", arguments_raw='{"city": "Oslo"}', status="finished", result='{"t": 21}'),
        ToolCallPart("e", "broken", arguments_raw="not json", error="```boom"),
        ChartPart("ch", '{"mark": "bar"}', description="Bars <b>"),
        AttachmentPart("a", "report [v2].pdf", "application/pdf", description="The report"),
        QuickActionsPart("q", (("Yes", "yes"), ("No", "n"))),
        OtherPart("o", "future_kind"),
        TextPart("x", "The answer."),
    )
    messages = [Message("u0", "user", (TextPart("u", "Show me everything"),), T0), Message("a0", "agent", parts, T0)]
    for i, text in enumerate(OPENERS):
        messages.append(Message(f"u{i + 1}", "user", (TextPart("u", "next"),), T0))
        messages.append(Message(f"a{i + 1}", "agent", (ThoughtPart("t", text), TextPart("x", text)), T0))
    return messages


def h2_headings(markdown: str) -> list[str]:
    tokens = MarkdownIt("commonmark").parse(markdown)
    return [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"]


def test_every_message_and_block_is_one_heading() -> None:
    """Every part kind and five kinds of unclosed blocks: one h2 per message, failure and revision."""
    messages = every_kind()
    text = "".join(render_message(m) for m in messages)
    text += notice("Failed", T0, ["The agent failed (internal_error): boom"])
    text += render_message(messages[-1], revised=True)
    headings = h2_headings(text)
    assert len(headings) == len(messages) + 2
    assert headings[-2:] == ["Failed · 2025-06-23 15:05 UTC", "Agent · 2025-06-23 15:05 UTC · revised"]


def test_without_closers_the_parser_loses_headings() -> None:
    """The check above can fail: the same messages without their closers swallow later headings."""
    messages = every_kind()
    text = "".join(render_message(m) for m in messages)
    for opener in OPENERS:
        text = text.replace(opener + closer(opener), opener)
    assert len(h2_headings(text)) < len(messages)
