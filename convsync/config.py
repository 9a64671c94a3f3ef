"""Configuration: YAML → a validated, frozen ``Config`` (skeleton; implementation in progress)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, slots=True)
class AgentSelector:
    """One entry of ``agents:``: an agent chosen by ``name`` or ``id``, optionally with its own folder name."""

    name: str | None = None
    id: str | None = None
    folder: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    url: str
    api_key: str = field(repr=False)  # resolved from env/file/command/credentials; never logged
    root: Path
    agents: tuple[AgentSelector, ...] = ()  # empty: every agent
    verify_tls: bool = True
    ca_bundle: Path | None = None
    use_truststore: bool = False
    timeout_seconds: float = 30.0
    rate_limit_requests: int = 30
    rate_limit_window_seconds: float = 10.0
    poll_active_seconds: float = 2.0
    poll_idle_seconds: float = 60.0
    poll_conversations_seconds: float = 30.0
    rescan_seconds: float = 60.0
    debounce_ms: int = 100
    on_local_delete: Literal["detach", "delete_remote"] = "detach"
    log_level: str = "info"
    state_dir: Path | None = None  # None: platformdirs' user state dir
