"""Server names → safe, unique, stable folder and file names (convsync.mirror.names)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from convsync.mirror.names import (
    MAX_NAME_BYTES,
    OutsideRoot,
    child,
    inside,
    keys_of,
    name_key,
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
        ("NUL.txt", "NUL_.txt"),
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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("nul.txt", "nul_.txt"),
        ("nul.txt_", "nul_.txt_"),  # the old mapping's output is still the device on Windows
        ("aux.txt_", "aux_.txt_"),
        ("AUX.tar.gz", "AUX_.tar.gz"),
        ("nul .txt", "nul _.txt"),  # Windows drops the space before the dot: "nul .txt" is the device too
        ("com\u00b9.log", "com\u00b9_.log"),  # superscript digits count as digits
        ("CONIN$", "CONIN$_"),
        ("console.txt", "console.txt"),
        ("null.txt", "null.txt"),
    ],
)
def test_a_device_name_before_the_first_dot_is_escaped_there(raw: str, expected: str) -> None:
    """Windows reserves a device name whatever follows its first dot: the `_` goes right after the device part."""
    assert safe_name(raw) == expected


def test_a_name_cut_to_200_bytes_keeps_its_extension() -> None:
    """A long file name is cut in its stem, so `….csv` stays a CSV file; its ` (2)` keeps the extension too."""
    name = safe_name("w" * 300 + ".csv")
    assert name == "w" * (MAX_NAME_BYTES - 4) + ".csv"
    second = unique_name(name, keys_of([name]), keep_extension=True)
    assert second.endswith(" (2).csv") and len(second.encode()) <= MAX_NAME_BYTES


def test_a_long_name_without_an_extension_is_cut_at_a_character() -> None:
    """A dot followed by words is not an extension: the name is cut at its end."""
    name = safe_name("v1.2 of the report " * 20)
    assert len(name.encode()) <= MAX_NAME_BYTES and name.startswith("v1.2 of the report")


@pytest.mark.parametrize(
    "look_alike",
    [
        "Q3 r\u0435\u0440\u043ert",  # Cyrillic e, p and o in "Q3 report"
        "\u0410udit",  # Cyrillic capital A
        "Audit".replace("A", "\u0391"),  # Greek capital alpha
        "\uff21udit",  # full-width A
    ],
)
def test_a_name_that_only_looks_like_a_taken_one_gets_a_counter(look_alike: str) -> None:
    """Latin/Cyrillic/Greek look-alikes and full-width forms would give siblings no one can tell apart."""
    taken = keys_of(["Q3 report", "Audit"])
    assert unique_name(look_alike, taken) == f"{look_alike} (2)"


def test_a_name_in_another_script_that_looks_different_is_kept() -> None:
    """A Cyrillic name that does not look like a taken Latin one keeps its plain name."""
    assert unique_name("\u041e\u0442\u0447\u0451\u0442", keys_of(["Otchet"])) == "\u041e\u0442\u0447\u0451\u0442"


def test_a_latin_name_that_looks_like_a_taken_cyrillic_one_gets_a_counter() -> None:
    """The look-alike rule holds both ways: a Latin name after a taken Cyrillic look-alike gets a counter."""
    assert unique_name("Q3 report", keys_of(["Q3 r\u0435\u0440\u043ert"])) == "Q3 report (2)"


def test_naming_thousands_of_new_siblings_stays_fast() -> None:
    """A first mirror names thousands of conversations in one pass: 3000 names take well under a second
    (folding every taken name on every call made it quadratic in NFKC: about 6 s here, minutes for 10 000)."""
    taken: set[str] = set()
    started = time.perf_counter()
    for i in range(3000):
        taken.add(name_key(unique_name(f"conversation number {i}", taken)))
    assert time.perf_counter() - started < 2.0
