"""Joining Parquet pages by copying row groups (``convsync.mirror.rowgroups``), checked against pyarrow itself."""

from __future__ import annotations

import datetime
import decimal
import io
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from convsync.mirror.rowgroups import Joiner, NotJoinable, decode, encode, read_footer

ROWS = 2_500


def varied_table(rows: int = ROWS) -> pa.Table:
    """Columns of the kinds a frame holds: numbers with nulls, repeated text, times with zones, nested values."""
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "price": pa.array([i * 0.25 if i % 7 else None for i in range(rows)], pa.float64()),
            "product": pa.array([f"product {i % 13}" for i in range(rows)]),
            "note": pa.array([None if i % 5 else f"note {i}" for i in range(rows)]),
            "paid": pa.array([i % 3 == 0 for i in range(rows)]),
            "at": pa.array([start + datetime.timedelta(minutes=i) for i in range(rows)], pa.timestamp("us", "UTC")),
            "day": pa.array([datetime.date(2026, 1, 1) + datetime.timedelta(days=i % 400) for i in range(rows)]),
            "amount": pa.array([decimal.Decimal(i) / 100 for i in range(rows)], pa.decimal128(12, 2)),
            "tags": pa.array([[f"t{i % 4}", "x"] if i % 2 else [] for i in range(rows)]),
            "point": pa.array([{"x": i, "y": -i} for i in range(rows)]),
        }
    )


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def pages_of(table: pa.Table, size: int, **options: Any) -> list[bytes]:
    return [parquet_bytes(table.slice(offset, size), **options) for offset in range(0, table.num_rows, size)]


def join(pages: list[bytes], path: Path) -> int:
    """The pages joined into ``path`` the way the export does it: each written at the end, then taken."""
    with path.open("w+b") as out:
        joiner = Joiner(out)
        for page in pages:
            joiner.begin()
            out.write(page)
            joiner.take()
        return joiner.finish()


def footer_of(data: bytes) -> bytes:
    length = int.from_bytes(data[-8:-4], "little")
    return data[-8 - length : -8]


def test_joined_pages_read_back_as_the_whole_table(tmp_path: Path) -> None:
    """Every column kind survives: the joined file reads back equal to the table the pages were cut from."""
    table = varied_table()
    joined = tmp_path / "joined.parquet"
    assert join(pages_of(table, 1000), joined) == ROWS
    assert pq.read_table(joined).equals(table)


def test_pages_of_several_row_groups_keep_each_row_group(tmp_path: Path) -> None:
    """Row groups are copied one for one, and each reads alone, at its new offsets, as the rows it held."""
    table = varied_table()
    joined = tmp_path / "joined.parquet"
    join(pages_of(table, 1000, row_group_size=300), joined)
    parquet = pq.ParquetFile(joined)
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
    assert sizes == [300, 300, 300, 100] * 2 + [300, 200]
    assert parquet.read_row_group(5).equals(table.slice(1300, 300))


def test_column_statistics_are_carried_over(tmp_path: Path) -> None:
    """Readers prune row groups by their min/max: those of the copied row groups are the pages' own."""
    table = varied_table()
    joined = tmp_path / "joined.parquet"
    join(pages_of(table, 1000), joined)
    stats = pq.ParquetFile(joined).metadata.row_group(2).column(0).statistics
    assert (stats.min, stats.max, stats.null_count) == (2000, 2499, 0)


def test_the_pages_data_is_copied_byte_for_byte(tmp_path: Path) -> None:
    """No value is re-encoded: each page's column chunks appear unchanged in the joined file."""
    pages = pages_of(varied_table(), 1000)
    joined = tmp_path / "joined.parquet"
    join(pages, joined)
    data = joined.read_bytes()
    for page in pages:
        region = page[4 : len(page) - 8 - len(footer_of(page))]
        assert region in data


def test_a_footer_decodes_and_encodes_back_to_the_same_bytes() -> None:
    """The Thrift codec loses nothing, unknown fields included: an untouched footer is rewritten unchanged."""
    footer = footer_of(parquet_bytes(varied_table(50), row_group_size=20))
    assert encode(decode(footer)) == footer


def test_an_empty_last_page_adds_rows_but_no_row_group(tmp_path: Path) -> None:
    """A frame of exactly N pages ends with an empty answer: it joins without an empty row group."""
    table = varied_table(2000)
    pages = [*pages_of(table, 1000), parquet_bytes(table.slice(2000, 0))]
    joined = tmp_path / "joined.parquet"
    assert join(pages, joined) == 2000
    assert pq.ParquetFile(joined).metadata.num_row_groups == 2
    assert pq.read_table(joined).equals(table)


def test_a_page_of_another_schema_is_not_joinable(tmp_path: Path) -> None:
    """A page whose columns differ from the first's is refused, so the caller decodes the pages instead."""
    first = parquet_bytes(pa.table({"a": pa.array([1, 2], pa.int64())}))
    other = parquet_bytes(pa.table({"a": pa.array(["1", "2"])}))
    with pytest.raises(NotJoinable, match="another schema"):
        join([first, other], tmp_path / "joined.parquet")


def test_pages_with_page_indexes_are_not_joinable(tmp_path: Path) -> None:
    """Page indexes hold file offsets inside the data region, which a copy cannot move: refused."""
    pages = pages_of(varied_table(), 1000, write_page_index=True)
    with pytest.raises(NotJoinable, match="page indexes"):
        join(pages, tmp_path / "joined.parquet")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: d[:-1], id="truncated"),
        pytest.param(lambda d: b"JUNK" + d[4:], id="no leading magic"),
        pytest.param(lambda d: d[:-4] + b"PARE", id="encrypted footer"),
        pytest.param(lambda d: d[:-8] + (2**31).to_bytes(4, "little") + b"PAR1", id="footer longer than file"),
        pytest.param(lambda d: b"PAR1" + b"\x00" * 4 + b"PAR1", id="empty footer"),
        pytest.param(lambda d: b"PAR", id="three bytes"),
    ],
)
def test_broken_files_are_not_joinable(damage: Any) -> None:
    """Bytes that are not a whole plain Parquet file raise NotJoinable, never another error."""
    data = damage(parquet_bytes(varied_table(10)))
    with pytest.raises(NotJoinable):
        read_footer(io.BytesIO(data), len(data))


def test_a_corrupted_footer_raises_not_joinable_or_parses() -> None:
    """Random damage to a footer's bytes never escapes as anything but NotJoinable (the server is not trusted)."""
    data = parquet_bytes(varied_table(10))
    footer = footer_of(data)
    start = len(data) - 8 - len(footer)
    rng = random.Random(7)
    refused = 0
    for _ in range(2000):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[start + rng.randrange(len(footer))] = rng.randrange(256)
        try:
            read_footer(io.BytesIO(bytes(damaged)), len(damaged))
        except NotJoinable:
            refused += 1
    assert refused > 0


def with_meta_field(page: bytes, field: int, value: int) -> bytes:
    """``page`` with ``field`` of every column chunk's metadata set to ``value`` (as other writers set it)."""
    length = int.from_bytes(page[-8:-4], "little")
    meta = decode(page[-8 - length : -8])
    for group in meta[4][1][1]:  # type: ignore[index]
        for chunk in group[1][1][1]:
            chunk[3][1][field] = (6, value)  # i64
    footer = encode(meta)
    return page[: -8 - length] + footer + len(footer).to_bytes(4, "little") + b"PAR1"


def test_pages_whose_dictionary_page_offset_is_0_join_into_a_readable_file(tmp_path: Path) -> None:
    """dictionary_page_offset = 0 (no dictionary, as some writers say it) is not moved: every row reads back."""
    table = varied_table(600)
    pages = [with_meta_field(p, 11, 0) for p in pages_of(table, 200, use_dictionary=False)]
    assert pq.read_table(io.BytesIO(pages[1])).num_rows == 200  # each page alone is valid
    assert join(pages, tmp_path / "joined.parquet") == 600
    assert pq.read_table(tmp_path / "joined.parquet").equals(table)


def test_a_join_whose_chunks_do_not_start_at_a_page_is_refused_before_commit(tmp_path: Path) -> None:
    """A page whose data_page_offset points into its own bytes but not at a page header: finish() reads the
    pages back and raises NotJoinable (the caller then decodes), instead of leaving an unreadable file."""
    table = varied_table(400)
    pages = pages_of(table, 200, use_dictionary=False)
    length = int.from_bytes(pages[1][-8:-4], "little")
    first = decode(pages[1][-8 - length : -8])[4][1][1][0][1][1][1][0][3][1]  # type: ignore[index]
    wrong = with_meta_field(pages[1], 9, first[9][1] + 3)
    with pytest.raises(NotJoinable):
        join([pages[0], wrong], tmp_path / "joined.parquet")
