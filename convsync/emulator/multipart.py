"""Streaming ``multipart/form-data`` uploads straight to disk: memory stays flat whatever the file size.

Starlette's own form parser spools every file through a temp file of its own and a thread pool; here each
``files`` part goes directly into the store's ``tmp/`` while its sha256 is computed on the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from convsync.emulator.store import StagedFile, Store, file_ref_problem, guess_mime
from convsync.emulator.wire import ApiFault

FIELD = "files"


@dataclass(slots=True)
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    out: BinaryIO | None = None
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0
    staged: StagedFile | None = None


class _Receiver:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.part = _Part()
        self.parts: list[_Part] = []
        self.header_name = b""
        self.header_value = b""
        self.form_fields: list[str] = []
        self.ended = False

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self.header_name.lower()] = self.header_value
        self.header_name = b""
        self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        self.part.name = _decode(options.get(b"name", b""))
        if b"filename" in options and self.part.name == FIELD:
            self.part.filename = _decode(options[b"filename"])
            path = self.store.temp_path()
            self.part.out = path.open("wb")
            self.part.staged = StagedFile(self.part.filename, path, "", 0, "")
        elif self.part.name == FIELD:
            self.form_fields.append(self.part.name)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.out is None:
            return
        chunk = data[start:end]
        self.part.out.write(chunk)
        self.part.digest.update(chunk)
        self.part.size += len(chunk)

    def on_part_end(self) -> None:
        if self.part.out is not None:
            self.part.out.close()
            self.parts.append(self.part)

    def on_end(self) -> None:
        self.ended = True

    def discard(self) -> None:
        for part in [*self.parts, self.part]:
            if part.out is not None:
                part.out.close()
            if part.staged is not None:
                part.staged.path.unlink(missing_ok=True)


async def receive_files(chunks: AsyncIterator[bytes], content_type: str, store: Store) -> list[StagedFile]:
    """Parses the request body and returns the staged files; validation errors leave nothing behind."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise ApiFault(422, "Request validation failed: body -> files: Field required")
    receiver = _Receiver(store)
    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": receiver.on_part_begin,
            "on_part_data": receiver.on_part_data,
            "on_part_end": receiver.on_part_end,
            "on_header_field": receiver.on_header_field,
            "on_header_value": receiver.on_header_value,
            "on_header_end": receiver.on_header_end,
            "on_headers_finished": receiver.on_headers_finished,
            "on_end": receiver.on_end,
        },
    )
    try:
        async for chunk in chunks:
            parser.write(chunk)
        parser.finalize()
        if not receiver.ended:
            raise ApiFault(400, "Invalid multipart body: the closing boundary is missing")
        return _validated(receiver)
    except MultipartParseError as exc:
        receiver.discard()
        raise ApiFault(400, f"Invalid multipart body: {exc}") from exc
    except BaseException:
        receiver.discard()
        raise


def _validated(receiver: _Receiver) -> list[StagedFile]:
    if receiver.form_fields:
        raise ApiFault(
            422,
            "Request validation failed: body -> files -> 0: Value error, Expected UploadFile, received: <class 'str'>",
        )
    if not receiver.parts:
        raise ApiFault(422, "Request validation failed: body -> files: Field required")
    seen: set[str] = set()
    staged: list[StagedFile] = []
    for part in receiver.parts:
        assert part.staged is not None and part.filename is not None
        problem = file_ref_problem(part.filename)
        if problem is None and part.filename in seen:
            problem = f"Duplicate file name in upload: {part.filename}"
        if problem:
            raise ApiFault(400, problem)
        seen.add(part.filename)
        staged.append(
            StagedFile(part.filename, part.staged.path, part.digest.hexdigest(), part.size, guess_mime(part.filename))
        )
    return staged


def _decode(raw: bytes) -> str:
    """Header parameters arrive as raw bytes: UTF-8 as browsers and httpx send them, else latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
