"""Data frames with pyarrow: built from files or synthesised, and sliced as the data-frame route does.

Everything here blocks (disk, CPU); the server runs it in its worker threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

_BATCH_ROWS = 65_536
_SYNTH_EPOCH = datetime(2026, 1, 1)  # naive, like timestamps read from a CSV


class FrameSourceError(Exception):
    """A file that cannot become a data frame (wrong type or unreadable)."""


class ColumnsNotFound(Exception):
    """A requested column does not exist (the route turns this into a 500, as the real server does)."""


@dataclass(frozen=True, slots=True)
class FrameShape:
    num_rows: int
    column_headers: tuple[str, ...]


def build_from_file(source: Path, file_ref: str, target: Path) -> FrameShape:
    """Reads a CSV (types inferred) or Parquet file and writes it to ``target`` as Parquet."""
    suffix = Path(file_ref).suffix.lower()
    try:
        if suffix == ".csv":
            table = pa_csv.read_csv(source)
        elif suffix == ".parquet":
            table = pq.read_table(source)
        else:
            raise FrameSourceError(f"{file_ref} is neither a CSV nor a Parquet file")
    except pa.ArrowException as exc:
        raise FrameSourceError(f"{file_ref} could not be read: {exc}") from exc
    pq.write_table(table, target)
    return FrameShape(table.num_rows, tuple(table.column_names))


def synthesize(target: Path, rows: int, columns: int) -> FrameShape:
    """A deterministic frame of ``rows`` x ``columns``, written in batches so memory stays flat.

    Column types cycle int, float, string, bool, timestamp; the n-th cycle gets a ``_n`` suffix.
    """
    kinds = ("id", "value", "label", "flag", "at")
    names = [kinds[j % 5] + (f"_{j // 5}" if j >= 5 else "") for j in range(columns)]
    types: list[pa.DataType] = [pa.int64(), pa.float64(), pa.string(), pa.bool_(), pa.timestamp("us")]
    schema = pa.schema([(name, types[j % 5]) for j, name in enumerate(names)])
    with pq.ParquetWriter(target, schema) as writer:
        for start in range(0, max(rows, 1), _BATCH_ROWS):
            stop = min(start + _BATCH_ROWS, rows)
            if stop <= start:
                break
            arrays = [pa.array(_synth_column(j, start, stop), type=types[j % 5]) for j in range(columns)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        if rows == 0:
            writer.write_table(schema.empty_table())
    return FrameShape(rows, tuple(names))


def _synth_column(j: int, start: int, stop: int) -> list[Any]:
    kind, shift = j % 5, j // 5
    span = range(start + shift, stop + shift)
    if kind == 0:
        return list(span)
    if kind == 1:
        return [i * 0.25 for i in span]
    if kind == 2:
        return [f"item-{i}" for i in span]
    if kind == 3:
        return [i % 3 == 0 for i in span]
    return [_SYNTH_EPOCH + timedelta(seconds=i) for i in span]


def sample_rows(path: Path, num_samples: int) -> list[list[Any]]:
    """``num_samples`` 0: none; N > 0: the first N rows; -1 (or below): all rows. Rows are lists."""
    if num_samples == 0:
        return []
    parquet = pq.ParquetFile(path)
    if num_samples > 0:
        table = pa.Table.from_batches(list(_first_batches(parquet, num_samples)), schema=parquet.schema_arrow).slice(
            0, num_samples
        )
    else:
        table = parquet.read()
    columns = [[_jsonable(v) for v in column.to_pylist()] for column in table.columns]
    return [list(row) for row in zip(*columns, strict=True)] if columns else []


def _first_batches(parquet: pq.ParquetFile, rows: int) -> Any:
    seen = 0
    for batch in parquet.iter_batches(batch_size=min(rows, _BATCH_ROWS)):
        yield batch
        seen += batch.num_rows
        if seen >= rows:
            return


@dataclass(frozen=True, slots=True)
class Slice:
    """What the data-frame route asks for; ``limit`` -1 means all rows (still capped at ``cap``)."""

    offset: int = 0
    limit: int = 1000
    column_names: str | None = None
    order_by: str | None = None
    cap: int = 100_000


def select(path: Path, how: Slice) -> pa.Table:
    """The route's slicer: sort, select columns, then ``[offset : offset + limit]`` (Python semantics)."""
    table = pq.read_table(path)
    if how.order_by:
        descending = how.order_by.startswith("-")
        column = _match_columns(table.column_names, [how.order_by[1:] if descending else how.order_by])[0]
        table = table.sort_by([(column, "descending" if descending else "ascending")])
    if how.column_names and how.column_names.strip():
        wanted = [name.strip() for name in how.column_names.split(",")]
        table = table.select(_match_columns(table.column_names, wanted))
    stop = None if how.limit == -1 else how.offset + how.limit
    start, end, _ = slice(how.offset, stop).indices(table.num_rows)
    length = min(max(0, end - start), how.cap)
    return table.slice(start, length)


def _match_columns(available: Sequence[str], wanted: Sequence[str]) -> list[str]:
    by_lower: dict[str, str] = {}
    for name in available:
        by_lower.setdefault(name.lower(), name)
    missing = [name for name in wanted if name.lower() not in by_lower]
    if missing:
        raise ColumnsNotFound(f"Columns not found: {', '.join(missing)}. Available columns: {', '.join(available)}")
    return [by_lower[name.lower()] for name in wanted]


def to_records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as objects in column order, values made JSON-safe as the server does."""
    names = table.column_names
    columns = [[_jsonable(v) for v in column.to_pylist()] for column in table.columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def write_parquet(table: pa.Table, target: Path) -> None:
    pq.write_table(table, target)


def _jsonable(value: Any) -> Any:
    """NaN/Inf → null, date/times → isoformat, bytes → text (utf-8, else latin-1), anything else → str"""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def records_slice(path: Path, how: Slice) -> list[dict[str, Any]]:
    """The JSON answer of the data-frame route."""
    return to_records(select(path, how))


def parquet_slice(path: Path, target: Path, how: Slice) -> None:
    """The Parquet answer of the route, written to ``target`` (``write_table``, no extra metadata)."""
    write_parquet(select(path, how), target)
