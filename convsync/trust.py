"""Where convsync's trust in the server comes from, and the settings that weaken it.

Refused by the client (``convsync.api.client``): a certificate that fails verification, and any redirect
other than a GET's within the base URL's origin. Warned about here, at every start and reload, in
``convsync status`` and as ``convsync doctor`` problems: ``server.verify_tls: false``, and ``http://`` to a
host that is not this machine (the API key and every prompt would cross the network in clear). The rules
and their fixes are in docs/config.md ("Trust").
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from convsync.config import Config

# OpenSSL's verify results (X509_V_ERR_*) whose fix is not a trust setting.
_NOT_YET_VALID = 9
_EXPIRED = 10
_HOST_MISMATCH = (62, 64)  # a host name, an IP address

_LAST_RESORT = "server.verify_tls: false only as a last resort, for a test server"
TRUST_FIX = (
    "set server.ca_bundle to a PEM file of the CA that issued the server's certificate, or "
    "server.truststore: true to use the operating system's trust store (where a company CA is usually "
    f"installed); {_LAST_RESORT}"
)


def tls_failure_fix(verify_code: int | None) -> str:
    """The fix of a failed certificate verification, in config keys (trust settings before verify_tls)."""
    if verify_code in _HOST_MISMATCH:
        return (
            "the certificate is for another host name: write the one it names in server.url (the name the "
            "server's operators publish, not an IP address or an alias); if a private CA issued it, "
            f"server.ca_bundle or server.truststore: true must trust that CA as well; {_LAST_RESORT}"
        )
    if verify_code in (_EXPIRED, _NOT_YET_VALID):
        return (
            "the certificate is outside its validity period: check this machine's clock, else the server's "
            "operators must renew the certificate (server.ca_bundle and server.truststore cannot make it "
            f"valid); {_LAST_RESORT}"
        )
    return TRUST_FIX


@dataclass(frozen=True, slots=True)
class TrustWarning:
    """A setting that exposes the key or the prompts; ``key`` is the config key to change."""

    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}. Fix: {self.fix}"


def trust_warnings(config: Config) -> tuple[TrustWarning, ...]:
    """What in ``config`` lets someone else read or impersonate the server; empty when nothing does."""
    found: list[TrustWarning] = []
    if not config.verify_tls:
        found.append(
            TrustWarning(
                "server.verify_tls",
                "TLS certificate verification is off: anyone on the network path can pose as the server "
                "and receive the API key and every prompt",
                "remove `verify_tls: false`; trust the server's CA with server.ca_bundle (a PEM file) or "
                "server.truststore: true (the operating system's store)",
            )
        )
    parts = urlsplit(config.url)
    host = parts.hostname or ""
    if parts.scheme == "http" and not is_loopback(host):
        found.append(
            TrustWarning(
                "server.url",
                f"plain http:// to {host}, which is not this machine: the API key and every prompt cross the "
                "network unencrypted",
                "use the server's https:// address; plain http:// is only for a server on this machine "
                "(localhost, 127.0.0.1, ::1)",
            )
        )
    if config.auth == "none" and not is_loopback(host):
        found.append(
            TrustWarning(
                "server.auth",
                f"no key is sent to {host}, which is not this machine: a server that needs none serves anyone "
                "who can reach it",
                "auth: none is for an agent server on this machine (localhost); for a deployment use "
                "auth: bearer (or snowflake) with a key",
            )
        )
    return tuple(found)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` (and ``*.localhost``, RFC 6761) or a loopback IP."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def log_trust_warnings(config: Config, log: logging.Logger) -> None:
    """One warning line per weakened setting (at start and at each reload)."""
    for warning in trust_warnings(config):
        log.warning("%s", warning)
