"""The errors of convsync, split by what the caller does about them.

::

    ConvsyncError
     ├── ConfigError             fix the config (names the key, the line and the fix)
     ├── RootUnavailable         the mirror root lost its marker (unmounted disk?): stop acting
     ├── AlreadyRunning          another daemon holds the state directory's lock (or the root's)
     ├── StateUnusable           the state database is newer than this convsync, or corrupt: upgrade or repair
     ├── MissingExtra            the command needs an optional extra that is not installed
     ├── NotRunning              no daemon answers on the control socket (``convsync reload``)
     └── ApiError                anything the Agent API said or failed to say
          ├── TransientError     retry later (connection failed, timeout, 5xx, stream cut)
          │    ├── RateLimited   429: retry after ``retry_after`` seconds
          │    ├── StreamInterrupted  the reply stream ended before ``agent_finished``
          │    └── UntrustedCertificate  the server's TLS certificate cannot be trusted: fix the trust config
          ├── AuthError          401/403: the key is wrong or lacks access; tell the user
          ├── NotFound           404: the object is gone; re-plan
          ├── BadRequest         400/409/412/415/422: the request itself is wrong; don't resend as is
          └── ProtocolError      the server's answer makes no sense (malformed JSON, wrong types): a server bug
               └── RedirectRefused  a redirect to another origin, or of a request with a body: not followed

Library exceptions are translated at the one boundary that uses the library (``raise … from exc``);
``convsync.cli`` turns each class into a message and an exit code.
"""

from __future__ import annotations


class ConvsyncError(Exception):
    """Base of every error convsync raises on purpose."""


class ConfigError(ConvsyncError):
    """The configuration is unusable; ``problems`` lists every problem found, each with its fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class RootUnavailable(ConvsyncError):
    """The mirror root is missing its ``.convsync-root`` marker, so convsync must not touch it."""


class AlreadyRunning(ConvsyncError):
    """Another ``convsync run`` holds the lock of this state directory."""


class StateUnusable(ConvsyncError):
    """The state database cannot be used: written by a newer convsync, or corrupt (the message says the fix)."""


class ApiError(ConvsyncError):
    """The Agent API failed a request.

    ``status`` is the HTTP status (0 when no response arrived), ``code`` the envelope's error code when the
    server sent one, ``error_id`` the server's id for the failure (useful to quote to its operators).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str | None = None,
        error_id: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.error_id = error_id
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.status:
            parts.append(f"(HTTP {self.status}{', ' + self.code if self.code else ''})")
        return " ".join(parts)


class TransientError(ApiError):
    """The request may succeed later: connection failure, timeout, 5xx, a cut stream."""


class RateLimited(TransientError):
    """429: wait ``retry_after`` seconds (``None`` when the server did not say) before the next request."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int = 429,
        code: str | None = None,
        error_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, error_id=error_id)
        self.retry_after = retry_after


class StreamInterrupted(TransientError):
    """The reply stream ended before ``agent_finished``; the prompt itself reached the server."""


class UntrustedCertificate(TransientError):
    """The server's TLS certificate failed verification (unknown CA, wrong host name, expired).

    A command stops with its own exit code, because repeating cannot help until the trust configuration (or
    the server's certificate) changes; a running daemon treats it like an unreachable server and keeps
    trying, so a fixed certificate or a reloaded config takes effect without a restart.
    """


class AuthError(ApiError):
    """401/403: the API key is missing, malformed, wrong or lacks access."""


class NotFound(ApiError):
    """404: the agent, conversation, file or data frame does not exist (any more)."""


class BadRequest(ApiError):
    """400/409/412/415/422: the server refuses the request as it is."""


class ProtocolError(ApiError):
    """The server answered something that does not fit the contract (malformed JSON, wrong types)."""


class MissingExtra(ConvsyncError):
    """The command needs an optional extra (``pip install 'convsync[emulator]'``) that is not installed."""


class RedirectRefused(ProtocolError):
    """The server redirected to another origin (scheme, host or port), or redirected a request with a body.

    Following would send the request, and for a POST the user's text, where the user did not point convsync;
    the message names the target. The usual cause is a wrong ``server.url``.
    """


class NotRunning(ConvsyncError):
    """No daemon answers on the control socket of this state directory."""
