"""The engine's problems as shown in ``STATUS=``, one per source, and whether the server is in trouble.

Sources are "server", "root", "watch" and "bug"; the root's problem is shown first (nothing happens without
it). A server outage is logged once when it starts and once when the server answers again, not on every
pass; the lists pass and the conversations' reconciles both report to it. Pure: no I/O but the log.
"""

from __future__ import annotations

import logging

from convsync.errors import ApiError, AuthError, TransientError
from convsync.mirror.context import without_ids

log = logging.getLogger(__name__)


class Problems:
    def __init__(self) -> None:
        self._by_source: dict[str, str] = {}
        self.server_trouble = False
        self._lists_logged: str | None = None  # the lists pass's problem as last logged

    def set(self, source: str, text: str | None) -> None:
        if text is None:
            self._by_source.pop(source, None)
        else:
            self._by_source[source] = text

    def get(self, source: str) -> str | None:
        return self._by_source.get(source)

    def __contains__(self, source: str) -> bool:
        return source in self._by_source

    def shown(self) -> str | None:
        """The problem ``STATUS=`` shows: the root's, else any."""
        return self._by_source.get("root") or next(iter(self._by_source.values()), None)

    def lists_failed(self, exc: ApiError) -> None:
        """The lists pass failed with ``exc``."""
        if isinstance(exc, AuthError):
            message = f"the server refused the API key: {exc}"
        elif isinstance(exc, TransientError):
            message = f"the server cannot be reached or failed: {exc}"
        else:
            message = f"listing agents and conversations failed: {exc}"
        # Once per distinct problem: the conversations' own server problems share "server", so comparing with
        # that made this line come back on every lists pass of an outage.
        if self._lists_logged != message:
            log.warning("%s", message)
            self._lists_logged = message
        self.set("server", message)
        self.server_trouble = True

    def lists_answered(self) -> bool:
        """The lists pass succeeded; True when the server was in trouble until now (queued work may go)."""
        self.set("server", None)
        self._lists_logged = None
        if not self.server_trouble:
            return False
        log.info("the server answers again")
        self.server_trouble = False
        return True

    def conversation_failed(self, transient: ApiError | None, auth: ApiError | None) -> None:
        """A conversation's reconcile met the server's failure or refusal."""
        if transient is not None:
            if not self.server_trouble:
                log.warning("the server is unreachable or failing: %s", without_ids(str(transient)))
            self.server_trouble = True
            self.set("server", f"the server cannot be reached or failed: {without_ids(str(transient))}")
        if auth is not None:
            self.set("server", f"the server refused the API key: {auth}")
