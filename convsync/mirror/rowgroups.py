"""Joining Parquet files into one by copying their row groups, without decoding a single value.

A Parquet file is ``PAR1``, its column chunks, a footer (a Thrift compact-protocol ``FileMetaData``), the
footer's length and ``PAR1`` again. The server answers a big data frame in pages, each a whole Parquet file of
the same schema: their column chunks are copied one after the other, and one footer lists every row group with
each file offset moved by where its chunk landed. That costs the copy's I/O, where decoding and re-encoding a
million rows costs seconds of CPU.

Only the fields that hold file offsets are changed; every other field is carried over as parsed, unknown ones
included. Files whose data region itself holds file offsets (page indexes), encrypted files, column chunks kept
in other files and pages of another schema raise ``NotJoinable``: the caller decodes those instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, TypeAlias, cast

MAGIC = b"PAR1"
TRAILER = 8  # footer length (4 bytes, little-endian) + MAGIC
MAX_FOOTER = 64 * 1024 * 1024  # far above any real footer: a bigger claimed length is a broken file
MAX_DEPTH = 64

# Thrift compact protocol type codes (booleans carry their value in the type of a field).
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)
_UUID = 13

# Field ids of parquet.thrift used here.
_FILE_NUM_ROWS, _FILE_ROW_GROUPS, _FILE_SCHEMA, _FILE_ENCRYPTION = 3, 4, 2, 8
_GROUP_COLUMNS, _GROUP_NUM_ROWS, _GROUP_FILE_OFFSET, _GROUP_ORDINAL = 1, 3, 5, 7
_CHUNK_FILE_PATH, _CHUNK_FILE_OFFSET, _CHUNK_META = 1, 2, 3
_CHUNK_PAGE_INDEX = (4, 5, 6, 7)  # offset index and column index: their entries hold file offsets
_CHUNK_CRYPTO = (8, 9)
# ColumnMetaData: data_page_offset, index_page_offset, dictionary_page_offset, bloom_filter_offset.
_META_OFFSETS = (9, 10, 11, 14)
_META_TOTAL_COMPRESSED, _META_DATA_PAGE, _META_DICTIONARY_PAGE = 7, 9, 11
# PageHeader: type, compressed_page_size; the page types parquet.thrift defines (DATA, INDEX, DICTIONARY, V2).
_PAGE_TYPE, _PAGE_COMPRESSED = 1, 3
_PAGE_TYPES = range(4)

Struct: TypeAlias = dict[int, tuple[int, object]]
"""A Thrift struct: field id → (compact type, value). Lists are ``(element type, [values])``."""


class NotJoinable(Exception):
    """These bytes cannot be joined by copying: not a plain Parquet file, or one this module must not move."""


@dataclass(slots=True)
class Footer:
    """A Parquet file's parsed footer and where its data region ends (the footer's offset)."""

    meta: Struct
    data_end: int

    @property
    def num_rows(self) -> int:
        return _int(self.meta, _FILE_NUM_ROWS)

    @property
    def row_groups(self) -> list[Struct]:
        return _structs(self.meta, _FILE_ROW_GROUPS)


def read_footer(file: BinaryIO, size: int) -> Footer:
    """The footer of the Parquet file of ``size`` bytes in ``file``; ``NotJoinable`` if it cannot be joined."""

    def read_at(offset: int, length: int) -> bytes:
        file.seek(offset)
        return file.read(length)

    return _footer(read_at, size)


def _footer(read_at: Callable[[int, int], bytes], size: int) -> Footer:
    """The footer of a file of ``size`` bytes read through ``read_at(offset, length)``."""
    if size < len(MAGIC) + TRAILER:
        raise NotJoinable(f"{size} bytes are too few for a Parquet file")
    head, tail = read_at(0, len(MAGIC)), read_at(size - TRAILER, TRAILER)
    if tail[4:] == b"PARE":
        raise NotJoinable("the Parquet footer is encrypted")
    if head != MAGIC or tail[4:] != MAGIC:
        raise NotJoinable("the bytes do not start and end with PAR1")
    length = int.from_bytes(tail[:4], "little")
    data_end = size - TRAILER - length
    if length > MAX_FOOTER or data_end < len(MAGIC):
        raise NotJoinable(f"a footer of {length} bytes does not fit a file of {size}")
    meta = decode(read_at(data_end, length))
    _check_movable(meta)
    return Footer(meta, data_end)


def _check_movable(meta: Struct) -> None:
    if _FILE_ENCRYPTION in meta:
        raise NotJoinable("the Parquet file is encrypted")
    for group in _structs(meta, _FILE_ROW_GROUPS):
        for chunk in _structs(group, _GROUP_COLUMNS):
            if _CHUNK_FILE_PATH in chunk:
                raise NotJoinable("a column chunk is stored in another file")
            if any(f in chunk for f in _CHUNK_PAGE_INDEX):
                raise NotJoinable("the file has page indexes, whose entries hold file offsets")
            if any(f in chunk for f in _CHUNK_CRYPTO):
                raise NotJoinable("a column chunk is encrypted")
            if _CHUNK_META not in chunk:
                raise NotJoinable("a column chunk has no metadata")


class Joiner:
    """Appends whole Parquet files to ``out`` (open for reading and writing) and writes one footer at the end.

    For each file: ``begin()``, then write its bytes at the end of ``out`` (a download can stream straight
    there, and rewind to retry), then ``take()``, which keeps its data region and drops its footer. Each file's
    leading ``PAR1`` stays where it landed: readers go by the offsets in the footer, so 4 stray bytes between
    column chunks are never read. ``finish()`` once after the last file.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._first: Footer | None = None
        self._groups: list[Struct] = []
        self._rows = 0
        self._start = 0

    def begin(self) -> None:
        """The next file's bytes start at the current end of ``out``; leaves ``out`` positioned there."""
        self._start = self._out.seek(0, os.SEEK_END)

    def take(self) -> int:
        """Take the file written since ``begin()``: its row count. ``NotJoinable`` when it cannot join."""
        out, shift = self._out, self._start
        size = out.seek(0, os.SEEK_END) - shift

        def read_at(offset: int, length: int) -> bytes:  # offsets of the file as it was sent
            out.seek(offset + shift)
            return out.read(length)

        footer = _footer(read_at, size)
        _check_offsets(footer)
        if self._first is None:
            self._first = footer
        elif footer.num_rows and footer.meta.get(_FILE_SCHEMA) != self._first.meta.get(_FILE_SCHEMA):
            raise NotJoinable("a page has another schema than the first")
        for group in footer.row_groups:
            if _int(group, _GROUP_NUM_ROWS):
                self._groups.append(_moved(group, shift))
        out.truncate(footer.data_end + shift)
        out.seek(0, os.SEEK_END)
        self._rows += footer.num_rows
        return footer.num_rows

    def finish(self) -> int:
        """Write the footer listing every row group taken; return the file's row count."""
        if self._first is None:
            raise NotJoinable("no Parquet file was appended")
        meta = dict(self._first.meta)
        meta[_FILE_NUM_ROWS] = (_I64, self._rows)
        # Ordinals, where a writer set them, count the row groups of the whole file.
        groups = [
            {**group, _GROUP_ORDINAL: (_I16, ordinal)} if _GROUP_ORDINAL in group else group
            for ordinal, group in enumerate(self._groups)
        ]
        meta[_FILE_ROW_GROUPS] = (_LIST, (_STRUCT, groups))
        footer = encode(meta)
        self._out.seek(0, os.SEEK_END)
        self._out.write(footer + len(footer).to_bytes(4, "little") + MAGIC)
        self._out.flush()
        # Read back, before the caller commits it: every column chunk of the joined file must start at a page
        # header and its pages must fill it exactly. Cheap (headers only, no value decoded) and it catches any
        # offset moved wrongly, which a metadata-only check never sees.
        for group in groups:
            for chunk in _structs(group, _GROUP_COLUMNS):
                _walk_pages(self._out, _chunk_meta(chunk))
        return self._rows


def _chunk_meta(chunk: Struct) -> Struct:
    value = chunk[_CHUNK_META][1]
    if not isinstance(value, dict):
        raise NotJoinable("a column chunk's metadata is not a struct")
    return value


def _chunk_start(meta: Struct) -> int:
    """Where a column chunk's first page is: its dictionary page when it has one (0 means none)."""
    dictionary = _int(meta, _META_DICTIONARY_PAGE, 0)
    data = _int(meta, _META_DATA_PAGE)
    return dictionary if len(MAGIC) <= dictionary < data else data


def _check_offsets(footer: Footer) -> None:
    """Every offset a page's footer holds is 0 (unknown, as some writers set it) or inside its data region."""

    def inside(value: int) -> bool:
        return value == 0 or len(MAGIC) <= value < footer.data_end

    for group in footer.row_groups:
        if not _int(group, _GROUP_NUM_ROWS):
            continue  # an empty row group is not copied
        if not inside(_int(group, _GROUP_FILE_OFFSET, 0)):
            raise NotJoinable("a row group's file offset is outside the file's data")
        for chunk in _structs(group, _GROUP_COLUMNS):
            meta = _chunk_meta(chunk)
            if not inside(_int(chunk, _CHUNK_FILE_OFFSET, 0)) or not all(
                inside(_int(meta, f, 0)) for f in _META_OFFSETS
            ):
                raise NotJoinable("a column chunk's offset is outside the file's data")
            if _int(meta, _META_DATA_PAGE) < len(MAGIC):
                raise NotJoinable("a column chunk has no data page offset")


def _walk_pages(file: BinaryIO, meta: Struct) -> None:
    """Check that the pages of one column chunk parse and fill its ``total_compressed_size`` exactly."""
    position, end = _chunk_start(meta), _chunk_start(meta) + _int(meta, _META_TOTAL_COMPRESSED)
    while position < end:
        window = 4096
        while True:
            file.seek(position)
            data = file.read(min(window, end - position))
            reader = _Reader(data)
            try:
                header = reader.struct(0)
                break
            except IndexError:  # the header is longer than the window (big statistics)
                if window >= end - position:
                    raise NotJoinable("a page header runs past its column chunk") from None
                window *= 16
            except ValueError as exc:
                raise NotJoinable(f"a page header does not parse: {exc}") from exc
        if _int(header, _PAGE_TYPE, -1) not in _PAGE_TYPES or _int(header, _PAGE_COMPRESSED, -1) < 0:
            raise NotJoinable("a column chunk does not start at a page header")
        position += reader.pos + _int(header, _PAGE_COMPRESSED)
    if position != end:
        raise NotJoinable("a column chunk's pages do not fill it exactly")


def _moved(group: Struct, shift: int) -> Struct:
    """A row group whose column chunks now start ``shift`` bytes further into the file."""
    if not shift:
        return group
    moved: Struct = dict(group)
    # Writers set an offset 0 when they do not know it (or, for the dictionary page, when there is none): a
    # real offset is past the leading magic. Moving a 0 would point a reader into another page's bytes.
    if _int(group, _GROUP_FILE_OFFSET, 0) >= len(MAGIC):
        moved[_GROUP_FILE_OFFSET] = (_I64, _int(group, _GROUP_FILE_OFFSET) + shift)
    chunks = []
    for chunk in _structs(group, _GROUP_COLUMNS):
        new: Struct = dict(chunk)
        if _int(chunk, _CHUNK_FILE_OFFSET, 0) >= len(MAGIC):
            new[_CHUNK_FILE_OFFSET] = (_I64, _int(chunk, _CHUNK_FILE_OFFSET) + shift)
        kind, value = chunk[_CHUNK_META]
        if not isinstance(value, dict):
            raise NotJoinable("a column chunk's metadata is not a struct")
        meta: Struct = dict(value)
        for field in _META_OFFSETS:
            if _int(meta, field, 0) >= len(MAGIC):
                meta[field] = (_I64, _int(meta, field) + shift)
        new[_CHUNK_META] = (kind, meta)
        chunks.append(new)
    moved[_GROUP_COLUMNS] = (_LIST, (_STRUCT, chunks))
    return moved


def _int(struct: Struct, field: int, default: int | None = None) -> int:
    if field not in struct:
        if default is None:
            raise NotJoinable(f"field {field} is missing from the Parquet footer")
        return default
    value = struct[field][1]
    if not isinstance(value, int) or isinstance(value, bool):
        raise NotJoinable(f"field {field} of the Parquet footer is not an integer")
    return value


def _structs(struct: Struct, field: int) -> list[Struct]:
    if field not in struct:
        return []
    kind, value = struct[field]
    if kind not in (_LIST, _SET) or not isinstance(value, tuple) or value[0] != _STRUCT:
        raise NotJoinable(f"field {field} of the Parquet footer is not a list of structs")
    return value[1]  # type: ignore[no-any-return]


# --- Thrift compact protocol -------------------------------------------------------------------------------


def decode(data: bytes) -> Struct:
    """One struct from ``data``; ``NotJoinable`` when the bytes are not a well-formed compact struct."""
    reader = _Reader(data)
    try:
        return reader.struct(0)
    except (IndexError, ValueError) as exc:
        raise NotJoinable(f"the Parquet footer is malformed: {exc}") from exc


def encode(struct: Struct) -> bytes:
    out = bytearray()
    _write_struct(out, struct)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("a varint longer than 10 bytes")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise ValueError("a length past the end of the footer")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def struct(self, depth: int) -> Struct:
        if depth > MAX_DEPTH:
            raise ValueError("structs nested too deep")
        fields: Struct = {}
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == _STOP:
                return fields
            delta = head >> 4
            field = last + delta if delta else self.zigzag()
            if kind in (_TRUE, _FALSE):
                fields[field] = (kind, kind == _TRUE)
            else:
                fields[field] = (kind, self.value(kind, depth))
            last = field

    def value(self, kind: int, depth: int) -> object:
        if kind in (_TRUE, _FALSE):  # only inside lists, sets and maps: one byte each
            return self.byte() == _TRUE
        if kind == _BYTE:
            return self.byte()
        if kind in (_I16, _I32, _I64):
            return self.zigzag()
        if kind == _DOUBLE:
            return self.take(8)
        if kind == _UUID:
            return self.take(16)
        if kind == _BINARY:
            return self.take(self.varint())
        if kind in (_LIST, _SET):
            head = self.byte()
            size = head >> 4
            if size == 15:
                size = self.varint()
            element = head & 0x0F
            if size > len(self.data) - self.pos:
                raise ValueError("a list longer than the footer")
            return (element, [self.value(element, depth + 1) for _ in range(size)])
        if kind == _MAP:
            size = self.varint()
            if not size:
                return (0, 0, [])
            types = self.byte()
            if size > len(self.data) - self.pos:
                raise ValueError("a map longer than the footer")
            key, val = types >> 4, types & 0x0F
            return (key, val, [(self.value(key, depth + 1), self.value(val, depth + 1)) for _ in range(size)])
        if kind == _STRUCT:
            return self.struct(depth + 1)
        raise ValueError(f"unknown compact type {kind}")


def _write_varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)


def _write_zigzag(out: bytearray, n: int) -> None:
    _write_varint(out, (n << 1) ^ (n >> 63))


def _write_struct(out: bytearray, struct: Struct) -> None:
    last = 0
    for field in sorted(struct):
        kind, value = struct[field]
        if kind in (_TRUE, _FALSE):
            kind = _TRUE if value else _FALSE
        delta = field - last
        if 0 < delta <= 15:
            out.append(delta << 4 | kind)
        else:
            out.append(kind)
            _write_zigzag(out, field)
        if kind not in (_TRUE, _FALSE):
            _write_value(out, kind, value)
        last = field
    out.append(_STOP)


def _write_value(out: bytearray, kind: int, value: object) -> None:
    # Values are what ``_Reader.value`` made for ``kind`` (or ints put in offset fields): the casts hold.
    if kind in (_TRUE, _FALSE):
        out.append(_TRUE if value else _FALSE)
    elif kind == _BYTE:
        out.append(cast(int, value) & 0xFF)
    elif kind in (_I16, _I32, _I64):
        _write_zigzag(out, cast(int, value))
    elif kind in (_DOUBLE, _UUID):
        out += cast(bytes, value)
    elif kind == _BINARY:
        data = cast(bytes, value)
        _write_varint(out, len(data))
        out += data
    elif kind in (_LIST, _SET):
        element, items = cast(tuple[int, list[object]], value)
        if len(items) < 15:
            out.append(len(items) << 4 | element)
        else:
            out.append(0xF0 | element)
            _write_varint(out, len(items))
        for item in items:
            _write_value(out, element, item)
    elif kind == _MAP:
        key, val, pairs = cast(tuple[int, int, list[tuple[object, object]]], value)
        _write_varint(out, len(pairs))
        if pairs:
            out.append(key << 4 | val)
            for k, v in pairs:
                _write_value(out, key, k)
                _write_value(out, val, v)
    elif kind == _STRUCT:
        _write_struct(out, cast(Struct, value))
    else:
        raise NotJoinable(f"unknown compact type {kind}")
