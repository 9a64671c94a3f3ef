"""Server names → safe, portable file and folder names, and the check that a path stays inside the root.

Every name the server sends (agent, conversation, file ref, data-frame name) is untrusted. ``safe_name`` turns
it into one path component that every common filesystem accepts; ``unique_name`` adds `` (2)``, `` (3)``… so
that names which differ only in case or Unicode normalisation do not collide. Both are pure.

Names, once bound to a folder, are stored in the state database and never recomputed (``docs/layout.md``).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Collection, Iterable
from pathlib import Path

from convsync.errors import ConvsyncError

# Well under the 255-byte limit of ext4/APFS/NTFS, leaving room for " (NN)" and temp suffixes.
MAX_NAME_BYTES = 200
PLACEHOLDER = "untitled"
REPLACEMENT = "_"

# Characters Linux forbids (/ and NUL) plus those Windows, SMB shares and exFAT disks refuse, so that a mirror
# copied to or living on such a disk keeps working.
_FORBIDDEN = frozenset('/\\\0<>:"|?*')
# Device names Windows reserves whatever the extension; a folder called "con" is unusable on an SMB share.
_DEVICE_NAMES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(1, 10)] + [f"lpt{i}" for i in range(1, 10)]
)


class OutsideRoot(ConvsyncError):
    """A path would resolve outside the mirror root; convsync refuses to write there."""


def _is_unsafe_char(ch: str) -> bool:
    if ch in _FORBIDDEN:
        return True
    # Cc: control characters (newline, escape…); Zl/Zp: line/paragraph separators that break listings.
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def _truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits in ``max_bytes`` (whole characters)."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def safe_name(raw: str, *, placeholder: str = PLACEHOLDER, max_bytes: int = MAX_NAME_BYTES) -> str:
    """One safe path component for ``raw``.

    - ``/ \\ NUL < > : " | ? *`` and control characters become ``_``;
    - surrounding whitespace and trailing dots are dropped (Windows and SMB drop them silently);
    - leading dots become ``_`` (so no name is hidden or special, and ``.``/``..`` cannot occur);
    - an empty result becomes ``placeholder``; Windows device names (``con``, ``nul.txt``…) get a ``_``;
    - the result is NFC-normalised and at most ``max_bytes`` bytes of UTF-8.
    """
    text = unicodedata.normalize("NFC", raw)
    text = "".join(REPLACEMENT if _is_unsafe_char(ch) else ch for ch in text)
    text = text.strip().rstrip(". ")
    stripped = text.lstrip(".")
    text = REPLACEMENT * (len(text) - len(stripped)) + stripped
    if not text:
        text = placeholder
    if text.split(".", 1)[0].casefold() in _DEVICE_NAMES:
        text = text + REPLACEMENT
    text = _truncate_utf8(text, max_bytes).rstrip(". ")
    return text or placeholder


def name_key(name: str) -> str:
    """The collision key of a name: equal keys may be the same entry on a case-insensitive filesystem."""
    return unicodedata.normalize("NFC", name).casefold()


def unique_name(
    base: str,
    taken: Collection[str],
    *,
    keep_extension: bool = False,
    max_bytes: int = MAX_NAME_BYTES,
) -> str:
    """``base`` if its key is free in ``taken`` (a set of ``name_key`` values), else ``base (2)``, ``(3)``…

    With ``keep_extension`` the counter goes before the last extension (``report (2).csv``). The result fits
    in ``max_bytes``; ``base`` is truncated to make room for the counter.
    """
    if name_key(base) not in taken:
        return base
    stem, ext = base, ""
    if keep_extension and "." in base[1:]:
        dot = base.rindex(".")
        stem, ext = base[:dot], base[dot:]
    n = 2
    while True:
        suffix = f" ({n}){ext}"
        candidate = _truncate_utf8(stem, max_bytes - len(suffix.encode("utf-8"))).rstrip(". ") + suffix
        if name_key(candidate) not in taken:
            return candidate
        n += 1


def keys_of(names: Iterable[str]) -> set[str]:
    """The set of collision keys of ``names`` (the ``taken`` argument of ``unique_name``)."""
    return {name_key(n) for n in names}


@functools.lru_cache(maxsize=16)
def _resolved(root: Path) -> Path:
    return root.resolve()


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, checked to lie inside ``root`` (symlinks followed); raises ``OutsideRoot``."""
    resolved_root = _resolved(root)  # the root itself is resolved once per process (it is checked often)
    resolved = path.resolve()
    if resolved != resolved_root and not resolved.is_relative_to(resolved_root):
        raise OutsideRoot(f"refusing to write {path}: it resolves to {resolved}, outside the mirror root {root}")
    return resolved


def component(parent: Path, name: str) -> Path:
    """``parent / name`` for a single component ``name``, without resolving it: only for a folder convsync has
    just created itself (``mkdir`` succeeded), whose entries no symlink can stand in for. Elsewhere use
    ``child``."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise OutsideRoot(f"refusing to use {name!r} as a file name under {parent}")
    return parent / name


def child(root: Path, parent: Path, name: str) -> Path:
    """``parent / name`` for a single safe component ``name``, checked to stay inside ``root``."""
    path = component(parent, name)
    inside(root, path)
    return path
