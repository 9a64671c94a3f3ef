"""``data-frames/``: each data frame of a conversation as ``<name>.parquet``, written atomically.

Two ways to get the Parquet file: the server's own (``output_format=parquet``), streamed to disk (a frame
bigger than one answer comes in pages, whose row groups are copied into one file: ``rowgroups``); or, where
the server answers 422 to that, paging JSON rows into a ``pyarrow.parquet.ParquetWriter`` so that memory holds
one page at a time. Column types are rebuilt from JSON as well as it allows (rules: ``docs/files.md``).

pyarrow is imported here only, and lazily: the daemon does not pay for it until a frame is exported.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from convsync import killpoints
from convsync.api.client import AgentClient, Progress
from convsync.api.models import DataFrameInfo
from convsync.errors import BadRequest, ProtocolError
from convsync.mirror.atomic import TEMP_PREFIX, fsync_dir, temp_path_for
from convsync.mirror.names import OutsideRoot, inside, safe_name, unique_name
from convsync.mirror.rowgroups import Joiner, NotJoinable

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)

Unit = Literal["s", "ms", "us", "ns"]

DATA_FRAMES_DIR = "data-frames"
PAGE_ROWS = 100_000  # the server's maximum page
COPY_CHUNK = 1024 * 1024
# JSON rows decode to Python dicts (~90 bytes a cell, plus the body): 600k cells a page keep the JSON path's
# peak near 190 MiB (60k rows of 10 columns; 100k rows measured 250 MiB).
PAGE_CELLS = 600_000


def fingerprint(info: DataFrameInfo) -> str:
    """A short digest of everything the frame listing says changes when the frame changes."""
    parts = [
        info.data_frame_id,
        info.name,
        str(info.num_rows),
        str(info.num_columns),
        json.dumps(list(info.column_headers)),
        info.created_at.isoformat() if info.created_at else "",
    ]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]


def plan_exports(frames: Sequence[DataFrameInfo], exported: Mapping[str, str]) -> list[DataFrameInfo]:
    """The frames to (re-)export: new names, and names whose fingerprint differs from the exported one."""
    return [info for info in frames if exported.get(info.name) != fingerprint(info)]


@dataclass(frozen=True, slots=True)
class ExportResult:
    """One written frame; ``parquet_supported`` is what was learnt about the server, for the next call."""

    path: Path
    fingerprint: str
    rows: int
    method: Literal["parquet", "json"]
    parquet_supported: bool | None


def frame_file_name(name: str, taken: Collection[str] = ()) -> str:
    """The local file name of data frame ``name``: made safe, ``.parquet`` added, distinct from ``taken``.

    ``taken`` holds ``names.name_key`` values of the file names other frames of the conversation already use.
    """
    return unique_name(f"{safe_name(name)}.parquet", taken, keep_extension=True)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files a crash left in ``folder`` (``files/`` or ``data-frames/``).

    Call once per folder before the conversation's worker first writes there.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if path.name.startswith(TEMP_PREFIX) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _commit(tmp: Path, dest: Path) -> None:
    """fsync the finished temp file, rename it over ``dest`` and make the rename durable."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    killpoints.reached("export.synced")
    tmp.replace(dest)
    killpoints.reached("export.renamed")
    fsync_dir(dest.parent)


def json_page_rows(num_columns: int) -> int:
    """Rows per JSON page: up to the server's maximum, fewer for wide frames, so a page's memory is bounded."""
    return max(1, min(PAGE_ROWS, PAGE_CELLS // max(1, num_columns)))


def export_frame(
    client: AgentClient,
    aid: str,
    cid: str,
    info: DataFrameInfo,
    dest_dir: Path,
    *,
    file_name: str | None = None,
    parquet_supported: bool | None = None,
    progress: Progress | None = None,
    page_rows: int | None = None,
) -> ExportResult:
    """Write frame ``info`` to ``dest_dir/file_name`` atomically; a reader never sees a torn file.

    ``file_name`` defaults to ``frame_file_name(info.name)``; pass the name stored for this frame (or one made
    with ``frame_file_name(name, taken)``) to keep names stable and distinct. ``parquet_supported`` is
    ``None`` when unknown: the native route is tried and a 422 switches to the JSON path. ``progress`` gets
    bytes on the native path (rows once it pages) and rows on the JSON path. ``page_rows`` overrides the
    JSON page size (default ``json_page_rows``).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = _checked_child(dest_dir, file_name or frame_file_name(info.name))
    first, whole = temp_path_for(dest), temp_path_for(dest)
    try:
        if parquet_supported is not False:
            try:
                rows, done = _NativeExport(client, aid, cid, info).write(first, whole, progress)
                _commit(done, dest)
                return ExportResult(dest, fingerprint(info), rows, "parquet", True)
            except BadRequest as exc:
                if exc.status != 422 and exc.code != "unprocessable_entity":
                    raise
                parquet_supported = False
        size = page_rows or json_page_rows(len(info.column_headers) or info.num_columns)
        rows = _JsonExport(client, aid, cid, info, size).write(whole, progress)
        _commit(whole, dest)
        return ExportResult(dest, fingerprint(info), rows, "json", parquet_supported)
    finally:
        first.unlink(missing_ok=True)
        whole.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class _NativeExport:
    """The server's own Parquet: one answer when the frame fits in it, else Parquet pages appended to one file."""

    client: AgentClient
    aid: str
    cid: str
    info: DataFrameInfo

    def write(self, first: Path, whole: Path, progress: Progress | None) -> tuple[int, Path]:
        """Rows written and the finished temp file (``first`` when one answer held the frame, else ``whole``)."""
        with first.open("wb") as out:
            self.client.download_data_frame_parquet(self.aid, self.cid, self.info.name, out, progress)
        got = _check_parquet(first)
        if got >= self.info.num_rows or got == 0:
            return got, first
        try:
            return self._join_pages(first, got, whole, progress), whole
        except NotJoinable as exc:
            log.info("data frame %r: decoding its Parquet pages, as they cannot be copied (%s)", self.info.name, exc)
        return self._append_pages(first, got, whole, progress), whole

    def _join_pages(self, first: Path, cap: int, whole: Path, progress: Progress | None) -> int:
        """The answer stopped at the server's row cap: fetch ``[cap:2cap]``, … and copy each page's row groups.

        Pages stream straight into the file, and one footer lists all their row groups at the end: no value is
        decoded, so this costs what the download costs. ``NotJoinable`` when a page cannot be copied.
        """
        with whole.open("w+b") as out:
            joiner = Joiner(out)
            joiner.begin()
            with first.open("rb") as answer:
                shutil.copyfileobj(answer, out, COPY_CHUNK)
            done = joiner.take()
            while True:
                if progress:
                    progress(done, max(self.info.num_rows, done))
                joiner.begin()
                self.client.download_data_frame_parquet(self.aid, self.cid, self.info.name, out, offset=done, limit=cap)
                rows = joiner.take()
                done += rows
                if rows < cap:
                    break
            joiner.finish()
        if _check_parquet(whole) != done:
            raise ProtocolError(f"the joined Parquet pages of {self.info.name!r} do not hold {done} rows")
        return done

    def _append_pages(self, first: Path, cap: int, whole: Path, progress: Progress | None) -> int:
        """Like ``_join_pages``, for pages that cannot be copied: each page is decoded and its rows appended.

        The next page is always on its way while the current one is written, so the server's time and ours
        overlap; memory holds two pages.
        """
        import pyarrow.parquet as pq

        with ThreadPoolExecutor(1, "convsync-frame-page") as pool:
            upcoming: Future[pa.Table] | None = pool.submit(self._page, cap, cap)
            with pq.ParquetFile(first) as parquet:  # not pq.read_table: that imports pyarrow.dataset (~0.15 s)
                table = parquet.read()
            first.unlink()
            schema = table.schema
            done = 0
            with _parquet_writer(whole, schema) as writer:
                while True:
                    writer.write_table(self._conform(table, schema))
                    done += table.num_rows
                    if progress:
                        progress(done, max(self.info.num_rows, done))
                    if upcoming is None:
                        return done
                    table = upcoming.result()
                    full = table.num_rows >= cap
                    upcoming = pool.submit(self._page, done + table.num_rows, cap) if full else None

    def _page(self, offset: int, limit: int) -> pa.Table:
        buffer = io.BytesIO()
        self.client.download_data_frame_parquet(self.aid, self.cid, self.info.name, buffer, offset=offset, limit=limit)
        return _read_parquet_page(buffer.getvalue())

    def _conform(self, table: pa.Table, schema: pa.Schema) -> pa.Table:
        import pyarrow as pa

        if table.schema.equals(schema, check_metadata=False):
            return table
        try:
            return table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise ProtocolError(f"a Parquet page of {self.info.name!r} has other column types: {exc}") from exc


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A writer that dictionary-encodes text columns only: text repeats often, while trying it on numbers
    doubles the write time for little gain."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    options: dict[str, Any] = {"use_dictionary": text}  # pyarrow takes column names; its stubs know only bool
    return pq.ParquetWriter(path, schema, **options)


def _read_parquet_page(data: bytes) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(pa.BufferReader(data)) as parquet:
            return parquet.read()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ProtocolError(f"the server's Parquet data is not a valid Parquet file: {exc}") from exc


def _checked_child(folder: Path, name: str) -> Path:
    """``folder/name``, checked to be a plain entry of ``folder`` (raises ``OutsideRoot`` otherwise)."""
    path = folder / name
    if name in ("", ".", "..") or path.parent != folder:
        raise OutsideRoot(f"refusing to use {name!r} as a file name under {folder}")
    inside(folder, path)
    return path


def _check_parquet(path: Path) -> int:
    """The row count of a Parquet file; ``ProtocolError`` when the bytes are not a whole Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return int(pq.read_metadata(path).num_rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ProtocolError(f"the server's Parquet data is not a valid Parquet file: {exc}") from exc


# --- the JSON path: rows → typed Arrow columns --------------------------------------------------------------

_DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
_DATETIME_RE = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$"
_ZONE_RE = r"(Z|[+-]\d{2}:?\d{2})$"
_TIME_RE = r"^\d{2}:\d{2}:\d{2}(\.\d{1,9})?$"
_UNITS: tuple[Unit, ...] = ("s", "ms", "us", "ns")


class _Widen(Exception):
    """A later page holds values the file's schema cannot represent: restart with wider types."""

    def __init__(self, column: str, wider: pa.DataType) -> None:
        super().__init__(f"column {column!r} needs {wider}")
        self.column = column
        self.wider = wider


@dataclass(frozen=True, slots=True)
class _JsonExport:
    """Pages of JSON rows → one Parquet file, one page in memory at a time."""

    client: AgentClient
    aid: str
    cid: str
    info: DataFrameInfo
    page_rows: int

    def write(self, tmp: Path, progress: Progress | None) -> int:
        forced: dict[str, pa.DataType] = {}
        # Types only ever widen (null → bool/int → float → string, finer time units), so this loop ends.
        while True:
            try:
                return self._write_pass(tmp, progress, forced)
            except _Widen as widen:
                forced[widen.column] = widen.wider

    def _fetch(self, offset: int, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return self.client.get_data_frame_rows(
            self.aid, self.cid, self.info.name, offset=offset, limit=self.page_rows, column_names=columns
        )

    def _more_after(self, offset: int, count: int) -> bool:
        """Whether rows follow a page of ``count`` rows that ended at ``offset``.

        A short page ends the frame only once the listed row count is reached: a server whose row cap is
        below our page size answers every page short.
        """
        return count > 0 and (count == self.page_rows or offset < self.info.num_rows)

    def _write_pass(self, tmp: Path, progress: Progress | None, forced: dict[str, pa.DataType]) -> int:
        import pyarrow as pa

        rows = self._fetch(0)
        columns = list(self.info.column_headers)
        columns += [key for key in (rows[0] if rows else ()) if key not in columns]
        page = {c: _page_array([r.get(c) for r in rows], forced.get(c)) for c in columns}
        count = len(rows)
        del rows
        types = {c: _merge(forced.get(c, pa.null()), page[c].type) for c in columns}
        unresolved = [c for c in columns if pa.types.is_null(types[c])]
        if unresolved and self._more_after(count, count):
            types.update(self._look_ahead(unresolved, count))
        schema = pa.schema([pa.field(c, types[c]) for c in columns])

        done = 0
        with _parquet_writer(tmp, schema) as writer:
            while True:
                if count and columns:
                    writer.write_table(pa.table([_fit(page[c], types[c], c) for c in columns], schema=schema))
                done += count
                if progress and count:
                    progress(done, max(self.info.num_rows, done))
                if not self._more_after(done, count):
                    return done
                rows = self._fetch(done)
                count = len(rows)
                page = {c: _page_array([r.get(c) for r in rows], types[c]) for c in columns}
                del rows
                # An HTTP response and its stream refer to each other, so a page's body is freed only by the
                # cycle collector, which rarely runs a full pass while pages of objects are made: without
                # this, memory grows by one body per page.
                gc.collect()

    def _look_ahead(self, columns: list[str], offset: int) -> dict[str, pa.DataType]:
        """Types of columns all null in the first page, from later pages of just those columns."""
        import pyarrow as pa

        found: dict[str, pa.DataType] = {}
        while columns:
            rows = self._fetch(offset, columns)
            for column in columns:
                seen = _page_array([r.get(column) for r in rows], None).type
                if not pa.types.is_null(seen):
                    found[column] = seen
            columns = [c for c in columns if c not in found]
            offset += len(rows)
            if not self._more_after(offset, len(rows)):
                break
        return found


def _fit(array: pa.Array[Any], target: pa.DataType, column: str) -> pa.Array[Any]:
    """``array`` cast to the file's column type; ``_Widen`` when it does not fit without loss."""
    import pyarrow as pa

    if array.type == target:
        return array
    wider = _merge(target, array.type)
    if wider != target:
        raise _Widen(column, wider)
    try:
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _Widen(column, pa.string()) from exc


def _page_array(values: list[Any], target: pa.DataType | None) -> pa.Array[Any]:
    """One column of one page as the best-typed Arrow array (as text when the file's column is text)."""
    import pyarrow as pa

    if target is not None and pa.types.is_string(target):
        return _as_text(values)
    kinds = set(map(type, values))
    kinds.discard(type(None))
    try:
        if not kinds:
            return pa.nulls(len(values))
        if kinds == {bool}:
            return pa.array(values, pa.bool_())
        if kinds == {int}:
            return pa.array(values, pa.int64())
        if kinds <= {int, float}:
            return pa.array(values, pa.float64())
        if kinds == {str}:
            return _from_strings(pa.array(values, pa.string()))
    except OverflowError:  # integers beyond int64: kept exact, as text
        pass
    return _as_text(values)


def _as_text(values: list[Any]) -> pa.Array[Any]:
    """Text as is; other JSON values (mixed columns, objects, lists) as their JSON text."""
    import pyarrow as pa

    return pa.array(
        [v if v is None or type(v) is str else json.dumps(v, ensure_ascii=False) for v in values], pa.string()
    )


def _from_strings(array: pa.Array[Any]) -> pa.Array[Any]:
    """Dates, timestamps and times recognised in ISO-8601 text, each with the coarsest unit that holds it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def all_match(pattern: str) -> bool:
        return bool(pc.all(pc.match_substring_regex(array, pattern)).as_py())

    try:
        if all_match(_DATE_RE):
            return array.cast(pa.date32())
        if all_match(_DATETIME_RE):
            zoned = pc.match_substring_regex(array, _ZONE_RE)
            if bool(pc.all(zoned).as_py()):
                return _coarsest(_parse_instants(array, "UTC"), "timestamp")
            if not bool(pc.any(zoned).as_py()):
                return _coarsest(_parse_instants(array, None), "timestamp")
            return array  # naive and zoned mixed: no one type holds both
        if all_match(_TIME_RE):
            dated = pc.utf8_replace_slice(array, 0, 0, "1970-01-01T")
            return _coarsest(_parse_instants(dated, None), "time")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # looks like ISO-8601 but is no valid instant (month 13, hour 25): keep the text
    return array


def _parse_instants(array: pa.Array[Any], tz: str | None) -> pa.Array[Any]:
    import pyarrow as pa

    try:
        return array.cast(pa.timestamp("us", tz))  # years 1-9999 fit, unlike with ns
    except pa.ArrowInvalid:
        return array.cast(pa.timestamp("ns", tz))  # 7 to 9 fractional digits


def _time_type(kind: Literal["timestamp", "time"], unit: Unit, tz: str | None) -> pa.DataType:
    import pyarrow as pa

    if kind == "timestamp":
        return pa.timestamp(unit, tz)
    if unit == "s":
        return pa.time32("s")
    if unit == "ms":
        return pa.time32("ms")
    return pa.time64("us" if unit == "us" else "ns")


def _coarsest(instants: pa.Array[Any], kind: Literal["timestamp", "time"]) -> pa.Array[Any]:
    import pyarrow as pa

    tz = instants.type.tz if pa.types.is_timestamp(instants.type) else None
    for unit in _UNITS:
        try:
            return instants.cast(_time_type(kind, unit, tz))  # a safe cast refuses to drop sub-unit digits
        except pa.ArrowInvalid:
            continue
    return instants.cast(_time_type(kind, "ns", tz))


def _finer(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    unit_a, unit_b = getattr(a, "unit", "s"), getattr(b, "unit", "s")
    return a if _UNITS.index(unit_a) >= _UNITS.index(unit_b) else b


def _merge(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The narrowest type that holds the values of both ``a`` and ``b``."""
    import pyarrow as pa

    t = pa.types
    if a == b:
        return a
    if t.is_null(a):
        return b
    if t.is_null(b):
        return a
    if {str(a), str(b)} == {"int64", "double"}:
        return pa.float64()
    if t.is_timestamp(a) and t.is_timestamp(b) and getattr(a, "tz", None) == getattr(b, "tz", None):
        return _finer(a, b)
    if t.is_time(a) and t.is_time(b):
        return _finer(a, b)
    return pa.string()


def csv_path_for(parquet: Path) -> Path:
    return parquet.with_suffix(".csv")


def write_csv(parquet: Path) -> str | None:
    """Write ``<name>.csv`` beside an exported frame (``data_frames.formats: [parquet, csv]``), atomically.

    Streams the row groups, so a large frame is never whole in memory. Returns None, or why there is no CSV
    (a column CSV cannot hold, such as a list or a struct).
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    dest = csv_path_for(parquet)
    tmp = temp_path_for(dest)
    try:
        source = pq.ParquetFile(parquet)
        with pcsv.CSVWriter(str(tmp), source.schema_arrow) as writer:
            for batch in source.iter_batches():
                writer.write_batch(batch)
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        tmp.unlink(missing_ok=True)
        return f"CSV cannot hold its columns ({str(exc).splitlines()[0]})"
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _commit(tmp, dest)
    return None
