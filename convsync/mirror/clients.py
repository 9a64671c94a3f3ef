"""The engine's API client: made from the configuration (unless one is handed in), replaced on a reload.

A reload that changes how the server is reached (URL, key, TLS, timeout) or the rate limit makes a new client;
the old one is retired, not closed, since a worker may still be in a request on it: retired clients are
closed when the engine stops. A client handed in (tests, the demo) belongs to its giver and is never closed.
"""

from __future__ import annotations

import contextlib

from convsync.api.client import AgentClient
from convsync.config import Config

CLIENT_KEYS = ("url", "auth", "api_key", "verify_tls", "ca_bundle", "use_truststore", "timeout_seconds")
RATE_KEYS = ("rate_limit_requests", "rate_limit_window_seconds", "rate_limit_background_share")


def build_client(config: Config) -> AgentClient:
    # The engine retries with its own backoff; don't hold a worker for long.
    return AgentClient.from_config(config, max_retries=2)


class Clients:
    def __init__(self, config: Config, client: AgentClient | None) -> None:
        self.current = client if client is not None else build_client(config)
        self._owned = client is None
        self._retired: list[AgentClient] = []

    def reload(self, old: Config, new: Config) -> None:
        """A new client when ``new`` reaches the server differently (only if the client is ours)."""
        if self._owned and any(getattr(old, k) != getattr(new, k) for k in CLIENT_KEYS + RATE_KEYS):
            self._retired.append(self.current)
            self.current = build_client(new)

    def close(self) -> None:
        """Close the retired clients and ours: a request blocked in one of them fails at once."""
        clients = [*self._retired, self.current] if self._owned else list(self._retired)
        self._retired.clear()
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
