"""Per-item retries: a file or data frame that cannot be fetched waits on its own backoff.

One item the server fails on (a frame whose name it cannot put in a header, a file it cannot read) must not
block the others, nor make the whole conversation look unreachable: it is reported for itself and tried again
later, less and less often, while everything else goes on.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from convsync.mirror.plan import Backoff

ITEM_BACKOFF_BASE = 5.0  # seconds before the first retry of an item
ITEM_BACKOFF_CAP = 900.0  # an item that keeps failing is tried every quarter of an hour

T = TypeVar("T")


class ItemKind(enum.Enum):
    FILE = "file"
    FRAME = "frame"


@dataclass(frozen=True, slots=True)
class ItemKey:
    kind: ItemKind
    name: str  # the server's file_ref or data-frame name


class ItemRetries:
    """The items of one conversation that failed, each with its backoff and the time it may be tried again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._waiting: dict[ItemKey, tuple[Backoff, float]] = {}

    def wait(self, key: ItemKey) -> float:
        """Seconds until ``key`` may be tried again (0: now)."""
        entry = self._waiting.get(key)
        return 0.0 if entry is None else max(0.0, entry[1] - self._clock())

    def failed(self, key: ItemKey) -> float:
        """Record a failure of ``key``; returns the seconds until its next try."""
        backoff = self._waiting.get(key, (Backoff(base=ITEM_BACKOFF_BASE, cap=ITEM_BACKOFF_CAP), 0.0))[0]
        delay = backoff.failed()
        self._waiting[key] = (backoff, self._clock() + delay)
        return delay

    def succeeded(self, key: ItemKey) -> None:
        self._waiting.pop(key, None)

    def fresh_first(self, kind: ItemKind, items: Sequence[T], name: Callable[[T], str]) -> list[T]:
        """``items`` with those that never failed first, each group in its order: a pass ends at an item whose
        connection fails, and one that keeps failing must not be the first in line every time."""
        return sorted(items, key=lambda item: ItemKey(kind, name(item)) in self._waiting)

    def keep_only(self, kind: ItemKind, names: Iterable[str]) -> None:
        """Forget the failures of items of ``kind`` the server no longer lists."""
        listed = set(names)
        for key in [k for k in self._waiting if k.kind is kind and k.name not in listed]:
            del self._waiting[key]

    def next_due(self) -> float | None:
        """Seconds until the earliest waiting item may be tried (``None``: nothing waits)."""
        if not self._waiting:
            return None
        now = self._clock()
        return max(0.0, min(at for _, at in self._waiting.values()) - now)
