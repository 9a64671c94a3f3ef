"""Server names → safe, unique, stable folder and file names (convsync.mirror.names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from convsync.mirror.names import (
    MAX_NAME_BYTES,
    OutsideRoot,
    child,
    inside,
    keys_of,
    safe_name,
    unique_name,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Q3 reconciliation", "Q3 reconciliation"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("nul\0byte", "nul_byte"),
        ("line\nbreak\ttab", "line_break_tab"),
        ("../x", "___x"),
        (".", "untitled"),
        ("..", "untitled"),
        ("", "untitled"),
        ("   ", "untitled"),
        (".hidden", "_hidden"),
        ("trailing dots...", "trailing dots"),
        ('what? "now" <a|b>: *', "what_ _now_ _a_b__ _"),
        ("con", "con_"),
        ("NUL.txt", "NUL.txt_"),
        ("Straße", "Straße"),
    ],
)
def test_safe_name_makes_one_portable_component(raw: str, expected: str) -> None:
    """Forbidden and control characters, dot names, empty names and device names become safe."""
    assert safe_name(raw) == expected


def test_safe_name_normalises_unicode_to_nfc() -> None:
    """A decomposed é (as macOS stores it) becomes the composed one."""
    assert safe_name("Cafe\u0301") == "Caf\u00e9"


def test_safe_name_truncates_by_utf8_bytes_without_splitting_characters() -> None:
    """Over-long names are cut to MAX_NAME_BYTES of UTF-8, at a character boundary."""
    name = safe_name("€" * 300)  # 3 bytes each
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name == "€" * (MAX_NAME_BYTES // 3)


def test_unique_name_keeps_a_free_name() -> None:
    """A name nobody uses is kept as it is."""
    assert unique_name("Report", keys_of(["Other"])) == "Report"


def test_unique_name_counts_up_on_collision() -> None:
    """Taken names get " (2)", " (3)"…"""
    assert unique_name("Report", keys_of(["Report"])) == "Report (2)"
    assert unique_name("Report", keys_of(["Report", "Report (2)"])) == "Report (3)"


def test_unique_name_treats_names_differing_in_case_as_colliding() -> None:
    """On a case-insensitive filesystem "report" and "Report" are one entry, so they collide."""
    assert unique_name("report", keys_of(["REPORT"])) == "report (2)"


def test_unique_name_keeps_the_extension_last() -> None:
    """With keep_extension the counter goes before the extension."""
    assert unique_name("data.csv", keys_of(["data.csv"]), keep_extension=True) == "data (2).csv"


def test_unique_name_leaves_room_for_the_counter() -> None:
    """A maximal name that collides is shortened so the counter still fits in the byte limit."""
    base = "x" * MAX_NAME_BYTES
    result = unique_name(base, keys_of([base]))
    assert result.endswith(" (2)")
    assert len(result.encode("utf-8")) <= MAX_NAME_BYTES


def test_inside_accepts_paths_under_the_root(tmp_path: Path) -> None:
    """A path below the root resolves and is returned."""
    assert inside(tmp_path, tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()


def test_inside_refuses_paths_that_escape(tmp_path: Path) -> None:
    """`..` and symlinks out of the root are refused."""
    with pytest.raises(OutsideRoot):
        inside(tmp_path / "root", tmp_path / "root" / ".." / "elsewhere")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(OutsideRoot):
        inside(tmp_path / "root", tmp_path / "root" / "link" / "x")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "nul\0"])
def test_child_refuses_names_that_are_not_one_component(tmp_path: Path, name: str) -> None:
    """child() only joins a single plain component."""
    with pytest.raises(OutsideRoot):
        child(tmp_path, tmp_path, name)
