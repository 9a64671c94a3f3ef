"""Server names → safe, portable file and folder names, and the check that a path stays inside the root.

Every name the server sends (agent, conversation, file ref, data-frame name) is untrusted. ``safe_name`` turns
it into one path component that every common filesystem accepts; ``unique_name`` adds `` (2)``, `` (3)``… so
that names which differ only in case, Unicode normalisation or look-alike letters (Latin ``a`` and Cyrillic
``\u0430``) do not give two entries that collide or cannot be told apart. Both are pure.

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
# Device names Windows reserves whatever follows the first dot ("nul.txt", "nul.txt_" and "nul .tar.gz" are
# all the device); a folder called "con" is unusable on an SMB share. Superscript digits count as digits there.
_DEVICE_NAMES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{port}{digit}" for port in ("com", "lpt") for digit in "123456789¹²³"]
)
# An extension kept whole when a long name is cut: a dot, then up to 16 letters or digits (".csv", ".tar.gz"
# keeps ".gz").
_MAX_EXTENSION_BYTES = 17
# Letters of other scripts (and the forms NFKC folds) that look like Latin ones, after case folding: two names
# equal under this map would be siblings no one can tell apart. Only used to decide collisions, never to change a
# name (Unicode's full confusables table is larger; these are the look-alikes of the scripts met in practice).
_LOOK_ALIKES = str.maketrans(
    # Cyrillic a b e k m h o p c t y x s i j d q w h l
    "\u0430\u0432\u0435\u043a\u043d\u043c\u043e\u0440\u0441\u0442\u0443\u0445\u0455\u0456\u0458"
    "\u0501\u051b\u051d\u04bb\u04cf"
    # Greek alpha beta epsilon zeta eta iota kappa mu nu omicron rho tau upsilon chi, lunate sigma
    "\u03b1\u03b2\u03b5\u03b6\u03b7\u03b9\u03ba\u03bc\u03bd\u03bf\u03c1\u03c4\u03c5\u03c7\u03f2",
    "abekhmopctyxsijdqwhlabezhikmnoptyxc",
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


def _split_extension(text: str) -> tuple[str, str]:
    """``(stem, extension)`` when ``text`` ends in a short extension of letters and digits, else ``(text, "")``."""
    dot = text.rfind(".")
    ext = text[dot:] if dot > 0 else ""
    if not ext or len(ext.encode("utf-8")) > _MAX_EXTENSION_BYTES or not ext[1:].isalnum():
        return text, ""
    return text[:dot], ext


def _fit(text: str, max_bytes: int) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8, keeping its extension (``….csv`` stays a CSV file)."""
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    stem, ext = _split_extension(text)
    cut = _truncate_utf8(stem, max_bytes - len(ext.encode("utf-8"))).rstrip(". ")
    return cut + ext if cut else _truncate_utf8(text, max_bytes)


def safe_name(raw: str, *, placeholder: str = PLACEHOLDER, max_bytes: int = MAX_NAME_BYTES) -> str:
    """One safe path component for ``raw``.

    - ``/ \\ NUL < > : " | ? *`` and control characters become ``_``;
    - surrounding whitespace and trailing dots are dropped (Windows and SMB drop them silently);
    - leading dots become ``_`` (so no name is hidden or special, and ``.``/``..`` cannot occur);
    - an empty result becomes ``placeholder``; a Windows device name before the first dot (``con``, ``nul.txt``,
      ``aux .tar.gz``) gets a ``_`` right after it (``nul_.txt``);
    - the result is NFC-normalised and at most ``max_bytes`` bytes of UTF-8; a cut keeps the extension.
    """
    text = unicodedata.normalize("NFC", raw)
    text = "".join(REPLACEMENT if _is_unsafe_char(ch) else ch for ch in text)
    text = text.strip().rstrip(". ")
    stripped = text.lstrip(".")
    text = REPLACEMENT * (len(text) - len(stripped)) + stripped
    if not text:
        text = placeholder
    head, dot, rest = text.partition(".")
    if head.rstrip(" ").casefold() in _DEVICE_NAMES:
        text = head + REPLACEMENT + dot + rest
    text = _fit(text, max_bytes).rstrip(". ")
    return text or placeholder


def name_key(name: str) -> str:
    """The collision key of a name: equal keys may be the same entry on a case-insensitive filesystem."""
    return unicodedata.normalize("NFC", name).casefold()


def look_alike_key(key: str) -> str:
    """A ``name_key`` with look-alike letters of other scripts (and NFKC forms: full-width letters…) folded to
    Latin: names with equal look-alike keys would be siblings that cannot be told apart."""
    return unicodedata.normalize("NFKC", key).casefold().translate(_LOOK_ALIKES)


def unique_name(
    base: str,
    taken: Collection[str],
    *,
    keep_extension: bool = False,
    max_bytes: int = MAX_NAME_BYTES,
) -> str:
    """``base`` if its key is free in ``taken`` (a set of ``name_key`` values), else ``base (2)``, ``(3)``…

    A name that only looks like a taken one (``look_alike_key``) counts as taken too. With ``keep_extension``
    the counter goes before the last extension (``report (2).csv``). The result fits in ``max_bytes``; ``base``
    is truncated to make room for the counter.
    """
    # An ASCII key is its own look-alike key, so a lookup in ``taken`` finds those; only the others are folded
    # (folding every taken key on every call made a first mirror of thousands of conversations quadratic in NFKC).
    alike = {_folded(k) for k in taken if not k.isascii()}

    def free(name: str) -> bool:
        key = name_key(name)
        folded = _folded(key)
        return key not in taken and folded not in taken and folded not in alike

    if free(base):
        return base
    stem, ext = base, ""
    if keep_extension and "." in base[1:]:
        dot = base.rindex(".")
        stem, ext = base[:dot], base[dot:]
    n = 2
    while True:
        suffix = f" ({n}){ext}"
        candidate = _truncate_utf8(stem, max_bytes - len(suffix.encode("utf-8"))).rstrip(". ") + suffix
        if free(candidate):
            return candidate
        n += 1


@functools.lru_cache(maxsize=4096)
def _folded(key: str) -> str:
    return look_alike_key(key)


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
