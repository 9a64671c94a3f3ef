"""The watcher's pure helpers: the watch-limit message and the directory count (convsync.watch)."""

from __future__ import annotations

from pathlib import Path

from convsync.watch import count_directories, watch_limit_message


def test_the_watch_limit_message_says_how_to_raise_it(tmp_path: Path) -> None:
    """The message names the limit, says rescans keep working, and gives the sysctl command."""
    text = watch_limit_message(tmp_path, 8192, 60)
    assert "fs.inotify.max_user_watches = 8192" in text
    assert "rescan every 60 s" in text
    assert "sudo sysctl fs.inotify.max_user_watches=" in text


def test_count_directories_stops_at_the_limit(tmp_path: Path) -> None:
    """Counting is bounded, so a huge tree costs no more than the limit."""
    for i in range(10):
        (tmp_path / f"d{i}" / "sub").mkdir(parents=True)
    assert count_directories(tmp_path, 1000) == 21
    assert count_directories(tmp_path, 5) == 5
