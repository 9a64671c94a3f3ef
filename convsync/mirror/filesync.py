"""``files/``: the conversation's remote files, downloaded when new or changed.

``plan_downloads`` is pure over the server's listing and what is known locally; ``download`` streams one file
into a hidden temp file next to its destination, checks its sha256 and renames it into place.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from convsync import killpoints
from convsync.api.client import AgentClient, Progress
from convsync.api.models import RemoteFile
from convsync.errors import ProtocolError
from convsync.mirror.atomic import fsync_dir, temp_path_for
from convsync.mirror.dataframes import remove_stale_temps
from convsync.mirror.inbox import sha256_file
from convsync.mirror.names import OutsideRoot, inside, safe_name, unique_name

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["download", "local_name_for", "plan_downloads", "remote_version", "remove_stale_temps"]


def remote_version(remote: RemoteFile) -> str:
    """What identifies a remote file's bytes: its sha256, or its id and size when the server gave no hash.

    The mirror stores this per ``file_ref`` (for uploads too, from the server's answer) as what it holds.
    """
    return remote.sha256 or f"id:{remote.file_id}:{remote.size}"


def plan_downloads(remote: Sequence[RemoteFile], known: Mapping[str, str]) -> list[RemoteFile]:
    """The remote files to download: refs not known locally, and refs whose version differs from the known.

    ``known`` maps ``file_ref`` → ``remote_version`` of the bytes we hold (downloaded, or uploaded by us). A
    file deleted locally from ``files/`` stays known and is not fetched again unless it changes on the server.
    """
    return [f for f in remote if known.get(f.file_ref) != remote_version(f)]


def local_name_for(file_ref: str, taken: Collection[str] = ()) -> str:
    """The name in ``files/`` for an untrusted ``file_ref``: made safe, and distinct from ``taken``.

    ``taken`` holds ``names.name_key`` values of the names other refs use in ``files/``. Store the result per
    ref and reuse it, so that a file keeps its name when others appear.
    """
    return unique_name(safe_name(file_ref), taken, keep_extension=True)


class _HashingWriter(io.RawIOBase):
    """Writes through to a file while hashing, so the download is read once.

    The client rewinds to the start to retry a broken download: a seek to 0 starts the hash over.
    """

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self._out = out
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        self.digest.update(data)
        return self._out.write(data)

    def tell(self) -> int:
        return self._out.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if (offset, whence) != (0, os.SEEK_SET):
            raise io.UnsupportedOperation("a hashed download can only start over")
        self.digest = hashlib.sha256()
        return self._out.seek(0)

    def truncate(self, size: int | None = None) -> int:
        return self._out.truncate(size)


def download(
    client: AgentClient,
    aid: str,
    cid: str,
    remote: RemoteFile,
    files_dir: Path,
    *,
    progress: Progress | None = None,
    local_name: str | None = None,
) -> Path:
    """Fetch ``remote`` into ``files_dir/local_name`` atomically and return that path.

    ``local_name`` defaults to ``safe_name(file_ref)``; pass the stored (or ``local_name_for``) name to keep
    names stable and distinct. The final path is checked to be a plain entry inside ``files_dir``. When the
    destination already holds the same bytes (a crash after the rename, before the state recorded it) nothing
    is fetched. A hash mismatch raises ``ProtocolError`` and leaves the destination untouched.
    """
    name = safe_name(remote.file_ref) if local_name is None else local_name
    dest = files_dir / name
    if name in ("", ".", "..") or dest.parent != files_dir:
        raise OutsideRoot(f"refusing to write file_ref {remote.file_ref!r} as {name!r} under {files_dir}")
    files_dir.mkdir(parents=True, exist_ok=True)
    inside(files_dir, dest)
    if remote.sha256 and _holds(dest, remote):
        return dest
    tmp = temp_path_for(dest)
    try:
        with tmp.open("wb") as out:
            writer = _HashingWriter(out)
            # The client only calls write(); hashing on the way avoids reading the file a second time.
            client.download_file(aid, cid, remote.file_ref, cast(BinaryIO, writer), progress)
            out.flush()
            os.fsync(out.fileno())
        killpoints.reached("download.synced")
        got = writer.digest.hexdigest()
        if remote.sha256 and got != remote.sha256.lower():
            raise ProtocolError(
                f"download of {remote.file_ref!r} has sha256 {got}, but the server lists {remote.sha256}"
            )
        tmp.replace(dest)
        killpoints.reached("download.renamed")
        fsync_dir(files_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _holds(dest: Path, remote: RemoteFile) -> bool:
    try:
        if dest.is_symlink() or not dest.is_file() or dest.stat().st_size != remote.size:
            return False
        return sha256_file(dest) == (remote.sha256 or "").lower()
    except OSError:
        return False
