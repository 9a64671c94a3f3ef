"""Data frames through the JSON path: column types rebuilt from JSON rows, page by page, into Parquet."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from convsync.api.models import DataFrameInfo
from convsync.errors import BadRequest
from convsync.mirror.dataframes import export_frame, fingerprint, frame_file_name, plan_exports


def as_json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows as the server's JSON route sends them: records, datetimes as isoformat() strings."""

    def default(value: Any) -> str:
        return value.isoformat()

    return json.loads(json.dumps(table.to_pylist(), default=default))  # type: ignore[no-any-return]


class RowsOnlyServer:
    """A stand-in for the client of a server without Parquet output: it serves JSON pages and records them."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.requests: list[tuple[int, int | None, tuple[str, ...] | None]] = []

    def download_data_frame_parquet(self, *args: Any) -> int:
        raise BadRequest("output_format must be json", status=422, code="unprocessable_entity")

    def get_data_frame_rows(
        self,
        aid: str,
        cid: str,
        name: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        column_names: Any = None,
    ) -> list[dict[str, Any]]:
        self.requests.append((offset, limit, tuple(column_names) if column_names else None))
        page = self.rows[offset : offset + (limit or 1000)]
        if column_names:
            return [{c: r[c] for c in column_names} for r in page]
        return page


def as_parquet_holds(table: pa.Table) -> pa.Table:
    """``table`` after a Parquet round trip (Parquet has no second unit: timestamp[s] comes back as [ms])."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return pq.read_table(pa.BufferReader(sink.getvalue()))


def info_for(table: pa.Table, name: str = "sales") -> DataFrameInfo:
    return DataFrameInfo(
        name=name,
        data_frame_id="df-1",
        num_rows=table.num_rows,
        num_columns=table.num_columns,
        column_headers=tuple(table.column_names),
    )


def export(tmp_path: Path, table: pa.Table, page_rows: int = 2, rows: list[dict[str, Any]] | None = None) -> pa.Table:
    server = RowsOnlyServer(as_json_rows(table) if rows is None else rows)
    result = export_frame(server, "a", "c", info_for(table), tmp_path, page_rows=page_rows)  # type: ignore[arg-type]
    assert result.method == "json"
    return pq.read_table(result.path)


CSV = """id,price,product,in_stock,sold_at,day,opened,sold_at_utc
1,9.5,Widget,true,2024-01-01T10:00:00,2024-01-02,08:30:00,2024-01-01T10:00:00Z
2,10,Gadget,false,2024-01-01 11:30:15,2024-01-03,09:00:00,2024-01-01T12:00:00+02:00
3,,"Thing, big",,2024-02-29T23:59:59,2024-02-29,17:45:30,2024-03-01T00:00:00Z
4,0.25,,true,,2024-03-01,,
5,1e3,Ünïcödé,false,2024-12-31T00:00:00,2024-12-31,23:59:59,2024-12-31T23:59:59Z
""".encode()


def test_csv_types_survive_the_json_path(tmp_path: Path) -> None:
    """Ints, floats, strings, booleans, timestamps (naive and UTC), dates, times and nulls come back typed."""
    table = pacsv.read_csv(io.BytesIO(CSV))
    assert export(tmp_path, table).equals(as_parquet_holds(table))


def test_a_column_null_in_the_first_page_is_typed_from_a_look_ahead(tmp_path: Path) -> None:
    """A column all null in the first page gets its type from later pages of just that column, in one pass."""
    table = pa.table({"id": [1, 2, 3, 4, 5], "late": pa.array([None, None, None, 7, 8], pa.int64())})
    server = RowsOnlyServer(as_json_rows(table))
    result = export_frame(server, "a", "c", info_for(table), tmp_path, page_rows=2)  # type: ignore[arg-type]
    assert pq.read_table(result.path).equals(table)
    full_pages = [r for r in server.requests if r[2] is None]
    assert [r[0] for r in full_pages] == [0, 2, 4], "the file was written in a single pass"
    assert (2, 2, ("late",)) in server.requests


def test_a_column_null_throughout_stays_null(tmp_path: Path) -> None:
    """A column without any value is written with the null type, like pyarrow's CSV reader does."""
    table = pacsv.read_csv(io.BytesIO(b"a,b\n1,\n2,\n3,\n"))
    assert export(tmp_path, table).equals(table)


def test_integers_followed_by_floats_become_float(tmp_path: Path) -> None:
    """A column of integers whose later page holds fractions is a float column, every value exact."""
    rows = [{"x": 1}, {"x": 2}, {"x": 3}, {"x": 2.5}]
    got = export(tmp_path, pa.table({"x": pa.array([0, 0, 0, 0])}), rows=rows)
    assert got.schema.field("x").type == pa.float64()
    assert got.column("x").to_pylist() == [1.0, 2.0, 3.0, 2.5]


def test_timestamps_get_a_finer_unit_when_a_later_page_needs_it(tmp_path: Path) -> None:
    """Whole seconds first and milliseconds later: the column is timestamp[ms] and no digit is lost."""
    rows = [{"t": "2024-01-01T10:00:00"}, {"t": "2024-01-01T10:00:01"}, {"t": "2024-01-01T10:00:01.250000"}]
    got = export(tmp_path, pa.table({"t": pa.array([0, 0, 0])}), rows=rows)
    assert got.schema.field("t").type == pa.timestamp("ms")
    assert got.column("t").to_pylist()[2] == datetime(2024, 1, 1, 10, 0, 1, 250000)


def test_mixed_values_become_text(tmp_path: Path) -> None:
    """A column mixing kinds (numbers and words, objects) is kept as text, non-strings as their JSON."""
    rows = [{"x": 1, "o": {"k": 1}}, {"x": "one", "o": [1, 2]}, {"x": True, "o": None}]
    got = export(tmp_path, pa.table({"x": [0, 0, 0], "o": [0, 0, 0]}), rows=rows)
    assert got.column("x").to_pylist() == ["1", "one", "true"]
    assert got.column("o").to_pylist() == ['{"k": 1}', "[1, 2]", None]


def test_text_that_only_starts_like_dates_stays_text(tmp_path: Path) -> None:
    """A later page with a non-date string turns the column back into text holding the original strings."""
    rows = [{"d": "2024-01-01"}, {"d": "2024-01-02"}, {"d": "soon"}]
    got = export(tmp_path, pa.table({"d": [0, 0, 0]}), rows=rows)
    assert got.column("d").to_pylist() == ["2024-01-01", "2024-01-02", "soon"]


def test_integers_beyond_int64_are_kept_exact_as_text(tmp_path: Path) -> None:
    """An integer int64 cannot hold is written as its digits rather than rounded."""
    rows = [{"n": 1}, {"n": 2**64}]
    got = export(tmp_path, pa.table({"n": [0, 0]}), rows=rows, page_rows=5)
    assert got.column("n").to_pylist() == ["1", str(2**64)]


def test_an_empty_frame_has_its_columns(tmp_path: Path) -> None:
    """A frame without rows is still a Parquet file with the frame's columns."""
    table = pacsv.read_csv(io.BytesIO(b"a,b\n"))
    got = export(tmp_path, table)
    assert got.column_names == ["a", "b"] and got.num_rows == 0


def test_a_422_for_parquet_is_remembered(tmp_path: Path) -> None:
    """The result says the server lacks Parquet output, and a call told so asks for JSON rows only."""
    table = pa.table({"a": [1, 2, 3]})
    server = RowsOnlyServer(as_json_rows(table))
    first = export_frame(server, "a", "c", info_for(table), tmp_path)  # type: ignore[arg-type]
    assert first.parquet_supported is False

    class NoParquetAllowed(RowsOnlyServer):
        def download_data_frame_parquet(self, *args: Any) -> int:
            raise AssertionError("asked for parquet although told it is unsupported")

    again = NoParquetAllowed(as_json_rows(table))
    result = export_frame(again, "a", "c", info_for(table), tmp_path, parquet_supported=False)  # type: ignore[arg-type]
    assert result.rows == 3


def test_the_export_replaces_the_file_and_leaves_no_temp_files(tmp_path: Path) -> None:
    """A re-export replaces data-frames/<name>.parquet in place; nothing else is left in the folder."""
    for values in ([1, 2], [3, 4, 5]):
        export(tmp_path, pa.table({"a": values}))
    assert [p.name for p in tmp_path.iterdir()] == ["sales.parquet"]
    assert pq.read_table(tmp_path / "sales.parquet").column("a").to_pylist() == [3, 4, 5]


def test_progress_counts_rows(tmp_path: Path) -> None:
    """The JSON path reports rows written against the frame's row count."""
    table = pa.table({"a": list(range(5))})
    seen: list[tuple[int, int]] = []
    server = RowsOnlyServer(as_json_rows(table))
    export_frame(server, "a", "c", info_for(table), tmp_path, page_rows=2, progress=lambda d, t: seen.append((d, t)))  # type: ignore[arg-type]
    assert seen == [(2, 5), (4, 5), (5, 5)]


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", ".hidden", "..", "", "x\x00y"])
def test_frame_names_are_made_safe(name: str) -> None:
    """A hostile frame name from the server becomes one visible file name inside data-frames/."""
    got = frame_file_name(name)
    assert "/" not in got and "\x00" not in got and not got.startswith(".")
    assert got.endswith(".parquet")


def test_frames_with_colliding_names_get_distinct_files() -> None:
    """Two frames whose safe names coincide get two files."""
    assert frame_file_name("a/b", taken={"a_b.parquet"}) == "a_b (2).parquet"


def test_the_fingerprint_changes_when_the_frame_changes() -> None:
    """Rows, columns, headers, creation time and id each change the fingerprint."""
    base = DataFrameInfo("f", "id1", 3, 2, ("a", "b"), created_at=datetime(2024, 1, 1, tzinfo=UTC))
    variants = [
        DataFrameInfo("f", "id2", 3, 2, ("a", "b"), created_at=base.created_at),
        DataFrameInfo("f", "id1", 4, 2, ("a", "b"), created_at=base.created_at),
        DataFrameInfo("f", "id1", 3, 3, ("a", "b", "c"), created_at=base.created_at),
        DataFrameInfo("f", "id1", 3, 2, ("a", "c"), created_at=base.created_at),
        DataFrameInfo("f", "id1", 3, 2, ("a", "b"), created_at=datetime(2024, 1, 2, tzinfo=UTC)),
    ]
    assert len({fingerprint(base), *map(fingerprint, variants)}) == 6
    assert fingerprint(base) == fingerprint(DataFrameInfo("f", "id1", 3, 2, ("a", "b"), created_at=base.created_at))


def test_only_new_or_changed_frames_are_planned() -> None:
    """A frame whose fingerprint was exported already is not exported again."""
    same = DataFrameInfo("same", "1", 1, 1, ("a",))
    changed = DataFrameInfo("changed", "2", 5, 1, ("a",))
    new = DataFrameInfo("new", "3", 1, 1, ("a",))
    exported = {"same": fingerprint(same), "changed": "old"}
    assert [f.name for f in plan_exports([same, changed, new], exported)] == ["changed", "new"]
