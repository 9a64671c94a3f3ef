"""files/charts/ is convsync's: a server file of that name is kept beside it, and charts are still drawn."""

from __future__ import annotations

import pytest

from convsync.mirror import charts
from tests.integration.conftest import Mirror, chat
from tests.waiting import wait_until


def test_a_server_file_named_charts_does_not_take_the_charts_folder(mirror: Mirror) -> None:
    """A file `charts` from the server lands in `files/charts (2)`; a chart after it is drawn, no write fault."""
    if not charts.available():
        pytest.fail("the charts extra (vl-convert-python) is part of the test extra")
    folder, _ = chat(mirror)
    (folder / "prompt.txt").write_text("/write charts some text")
    kept = folder / "files" / "charts (2)"
    wait_until(kept.is_file, 15, what="the server's file charts downloaded")
    mirror.wait_idle(folder)
    (folder / "prompt.txt").write_text("/chart")
    wait_until(lambda: list((folder / "files" / "charts").glob("*.svg")), 15, what="the chart drawn")
    mirror.wait_idle(folder)
    assert kept.read_text() == "some text"
    assert "![Chart" in (folder / "transcript.md").read_text()
    errors = folder / "errors.log"
    assert not errors.exists() or "cannot write" not in errors.read_text()
