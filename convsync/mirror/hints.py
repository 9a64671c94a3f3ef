"""Change hints: a server whose conversations list carries ``updated_at`` says which conversations changed.

The public Conversation object has no ``updated_at`` (spec §2.2), so without it a message added elsewhere is
found by the poll policy (``convsync.mirror.pollpolicy``). A server that adds it lets the lists pass poll a
conversation at once when its stamp differs from the one the previous listing showed (a conversation seen
for the first time has nothing to differ from: its first look reads it anyway).

Whether the hint can be trusted is learnt per server (one ``ChangeHints`` per engine): a read that finds new
messages the list did not announce (its stamp unchanged since the conversation's previous read) must be
announced by a later listing; when the second listing after that read still shows the old stamp, the list
lies (the field means something else, or is not kept up to date): the hint is ignored from then on, which is
logged once at warning. The second, not the first: a listing whose request the server answered just before
the message was stored, but which was looked at after the read, shows the old stamp honestly.

``changed`` is pure; ``ChangeHints`` keeps the stamps under its own lock (the lists pass and conversation
reads call it from different workers), never held across a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime

from convsync.api.models import Conversation

log = logging.getLogger(__name__)

LISTINGS_TO_ANNOUNCE = 2  # listings after a read with unannounced news before the list is called a liar


def changed(seen: Mapping[str, datetime | None], listing: Sequence[Conversation]) -> list[str]:
    """The conversations of ``listing`` whose ``updated_at`` differs from the one ``seen`` last (those without
    a stamp, now or then, and those not seen before are not among them)."""
    out = []
    for conversation in listing:
        before = seen.get(conversation.id)
        if conversation.updated_at is not None and before is not None and before != conversation.updated_at:
            out.append(conversation.id)
    return out


class ChangeHints:
    """One server's ``updated_at`` stamps as listed, and whether they are trusted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, datetime | None] = {}  # the stamp the latest listing showed
        self._at_read: dict[str, datetime | None] = {}  # the listed stamp when the conversation was last read
        self._unannounced: dict[str, tuple[datetime | None, int]] = {}  # news read: (stamp then, listings since)
        self._trusted = True
        self._noticed = False
        self._stamped = False  # the latest listing carried updated_at

    @property
    def announcing(self) -> bool:
        """Whether the server's list announces changes: its latest listing carried stamps, and it is trusted
        (the lists pass then runs every ``poll.conversations_seconds``, not stretched: ``PollPolicy``)."""
        with self._lock:
            return self._trusted and self._stamped

    @property
    def trusted(self) -> bool:
        with self._lock:
            return self._trusted

    def listed(self, listing: Sequence[Conversation]) -> list[str]:
        """A conversations list was read: the conversations to poll now (none while the hint is not trusted)."""
        with self._lock:
            found = changed(self._seen, listing)
            self._stamped = any(c.updated_at is not None for c in listing)
            for conversation in listing:
                self._seen[conversation.id] = conversation.updated_at
                pending = self._unannounced.get(conversation.id)
                if pending is None:
                    continue
                stamp, listings = pending
                if conversation.updated_at != stamp:
                    del self._unannounced[conversation.id]  # announced after all
                elif listings + 1 < LISTINGS_TO_ANNOUNCE:
                    self._unannounced[conversation.id] = (stamp, listings + 1)
                else:
                    del self._unannounced[conversation.id]
                    self._distrust()
            if not self._trusted:
                return []
            if not self._noticed and self._stamped:
                self._noticed = True
                log.info("the server's conversations list carries updated_at: a change it announces is read now")
            return found

    def read(self, cid: str, *, news: bool) -> None:
        """``cid``'s messages were read; ``news``: the read found messages the transcript did not have."""
        with self._lock:
            stamp = self._seen.get(cid)
            if (
                news
                and self._trusted
                and stamp is not None
                and cid in self._at_read
                and self._at_read[cid] == stamp
                and cid not in self._unannounced
            ):
                self._unannounced[cid] = (stamp, 0)  # a later listing must show a new stamp
            self._at_read[cid] = stamp

    def _distrust(self) -> None:
        if self._trusted:
            self._trusted = False
            self._unannounced.clear()
            log.warning(
                "the server's conversations list did not announce new messages in its updated_at: convsync no "
                "longer trusts it and finds remote changes by polling (docs/performance.md)"
            )
