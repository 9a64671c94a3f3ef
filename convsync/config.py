"""Configuration: a YAML file → a validated, frozen ``Config``.

The only module that imports yaml. The file is composed to nodes (not loaded to dicts) so every problem can
name its line; all problems are collected and raised together as one ``ConfigError``, each naming the key, the
line and the fix. The API key is resolved here (``$CREDENTIALS_DIRECTORY/convsync-api-key`` first, then the
configured environment variable, file or command), registered for log redaction, and never echoed.

``config.example.yaml`` documents every key with its default; ``docs/config.md`` explains them.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
import shlex
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from convsync import paths
from convsync.api.client import AUTH_SCHEMES, AuthScheme
from convsync.cli import Exit
from convsync.errors import ConfigError
from convsync.logs import LEVEL_NAMES, redact, register_secret

DEFAULT_API_KEY_ENV = "CONVSYNC_API_KEY"
CREDENTIAL_NAME = "convsync-api-key"  # the LoadCredential= id the unit file uses
DEFAULT_ROOT = "~/Conversations"
KEY_COMMAND_TIMEOUT_SECONDS = 30.0
ON_LOCAL_DELETE = ("detach", "delete_remote")


@dataclass(frozen=True, slots=True)
class AgentSelector:
    """One entry of ``agents:``: an agent chosen by ``name`` or ``id``, optionally with its own folder."""

    name: str | None = None
    id: str | None = None
    folder: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    url: str
    api_key: str = field(repr=False)  # resolved from env/file/command/credentials; never logged
    root: Path
    auth: AuthScheme = "bearer"  # how the key is sent; "none": no key (a local agent server)
    agents: tuple[AgentSelector, ...] = ()  # empty: every agent
    verify_tls: bool = True
    ca_bundle: Path | None = None
    use_truststore: bool = False
    timeout_seconds: float = 30.0
    rate_limit_requests: int = 30
    rate_limit_window_seconds: float = 10.0
    rate_limit_background_share: float = 0.5  # polls and re-checks use at most this share of the window
    poll_active_seconds: float = 2.0
    poll_idle_seconds: float = 60.0
    poll_conversations_seconds: float = 30.0
    rescan_seconds: float = 60.0
    debounce_ms: int = 100
    on_local_delete: Literal["detach", "delete_remote"] = "detach"
    log_level: str = "info"
    on_reply: tuple[str, ...] = ()  # a command (argv, no shell) run when a reply finishes (convsync.hooks)
    frame_formats: tuple[str, ...] = ("parquet",)  # data_frames.formats: Parquet always, CSV beside it on request
    state_dir: Path | None = None  # None: platformdirs' user state dir (load_config always fills it in)
    config_file: Path | None = None  # the file this config was read from
    api_key_source: str = ""  # where the key came from, for messages ("environment variable X", "file F", …)
    api_key_problem: str = ""  # why there is no key (only with load_config(require_key=False)), with its fix
    profile: str = ""  # the chosen entry of the file's profiles: ("" for a file without profiles)


# Keys known at each level, for unknown-key suggestions.
_TOP_KEYS = (
    "server",
    "root",
    "agents",
    "poll",
    "data_frames",
    "debounce_ms",
    "on_local_delete",
    "log_level",
    "on_reply",
    "state_dir",
    "profiles",
)
FRAME_FORMATS = ("parquet", "csv")
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PROFILE_ENV = "CONVSYNC_PROFILE"
_SERVER_KEYS = (
    "url",
    "auth",
    "api_key_env",
    "api_key_file",
    "api_key_command",
    "verify_tls",
    "ca_bundle",
    "truststore",
    "timeout_seconds",
    "rate_limit",
)
_RATE_KEYS = ("requests", "per_seconds", "background_share")
_POLL_KEYS = ("active_seconds", "idle_seconds", "conversations_seconds", "rescan_seconds")
_FRAME_KEYS = ("formats",)
_AGENT_KEYS = ("name", "id", "folder")
_ALL_KEYS = {
    **{k: k for k in _TOP_KEYS},
    **{k: f"server.{k}" for k in _SERVER_KEYS},
    **{k: f"server.rate_limit.{k}" for k in _RATE_KEYS},
    **{k: f"poll.{k}" for k in _POLL_KEYS},
    **{k: f"data_frames.{k}" for k in _FRAME_KEYS},
}

_TAG = "tag:yaml.org,2002:"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOOKS_LIKE_KEY = re.compile(r"(?i)^(s4w_|bearer\s)")
_URL_EXAMPLE = "https://HOST/tenants/TENANT/api/v2"


@dataclass(frozen=True, slots=True)
class _KeySource:
    kind: Literal["env", "file", "command"]
    key: str  # the config key that chose it, e.g. "server.api_key_file"
    node: Node | None
    env: str = ""
    file: Path | None = None
    argv: tuple[str, ...] = ()


class _Reader:
    """Walks the composed YAML, converting values and collecting problems."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.base_dir = source.parent
        self._problems: list[tuple[int, str]] = []  # (line, message): reported in file order
        self._constructor = SafeConstructor()
        self._key_nodes: dict[int, Node] = {}

    # -- reporting -------------------------------------------------------------------------------

    def problem(self, key: str, node: Node | None, message: str, fix: str) -> None:
        where = f"{self.source} line {node.start_mark.line + 1}" if node is not None else str(self.source)
        self.add(node.start_mark.line + 1 if node is not None else 0, f"{where}: {key}: {message}. Fix: {fix}")

    def add(self, line: int, message: str) -> None:
        self._problems.append((line, redact(message)))

    @property
    def problems(self) -> list[str]:
        # In file order; problems without a line (defaults, the key's source) come last.
        return [message for _, message in sorted(self._problems, key=lambda p: p[0] or sys.maxsize)]

    def wrong_type(self, key: str, node: Node, expected: str, fix: str) -> None:
        self.problem(key, node, f"expected {expected}, got {_describe(node)}", fix)

    # -- structure -------------------------------------------------------------------------------

    def mapping(self, key: str, node: Node, known: Sequence[str]) -> dict[str, Node] | None:
        """The entries of a mapping node (unknown and duplicate keys reported), or None if not a mapping."""
        if isinstance(node, ScalarNode) and node.tag == _TAG + "null":
            return {}
        if not isinstance(node, MappingNode):
            what = f"{key}" if key else "the file"
            self.wrong_type(what, node, "a mapping of `key: value` lines", f"indent the keys of {what} below it")
            return None
        entries: dict[str, Node] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, ScalarNode) else None
            dotted = f"{key}.{name}" if key else str(name)
            if not isinstance(name, str):
                self.problem(key or "(top level)", key_node, "a key must be a plain word", "use `name: value`")
                continue
            if name in entries:
                self.problem(dotted, key_node, "appears twice", "keep one of them")
                continue
            if name not in known:
                self.problem(dotted, key_node, "unknown key", self._suggest(key, name, known))
                continue
            entries[name] = value_node
            self._key_nodes[id(value_node)] = key_node
        return entries

    def key_of(self, value_node: Node) -> Node:
        """The node of the key a value belongs to (its line is where a missing sub-key is reported)."""
        return self._key_nodes.get(id(value_node), value_node)

    def _suggest(self, section: str, name: str, known: Sequence[str]) -> str:
        prefix = f"{section}." if section else ""
        if name.lower().replace("-", "_") in {"api_key", "key", "token", "apikey", "api_token"}:
            return (
                "do not put the key itself in the config; use server.api_key_env, server.api_key_file "
                "or server.api_key_command"
            )
        close = difflib.get_close_matches(name.lower().replace("-", "_"), known, n=1, cutoff=0.6)
        if close:
            return f"did you mean {prefix}{close[0]}?"
        elsewhere = _ALL_KEYS.get(name)
        if elsewhere and elsewhere != f"{prefix}{name}":
            return f"it belongs at {elsewhere}"
        return f"remove it (known keys here: {', '.join(known)})"

    # -- scalars ---------------------------------------------------------------------------------

    def _value(self, node: Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == _TAG + "null"

    def text(self, key: str, node: Node, fix: str, *, lenient: bool = False) -> str | None:
        """A string; with ``lenient``, a bare number counts as its text (an agent named 2024)."""
        tags = {_TAG + "str"} | ({_TAG + "int", _TAG + "float"} if lenient else set())
        if isinstance(node, ScalarNode) and node.tag in tags:
            return str(node.value) if lenient else cast(str, self._value(node))
        self.wrong_type(key, node, "text", fix)
        return None

    def boolean(self, key: str, node: Node) -> bool | None:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "bool":
            return bool(self._value(node))
        self.wrong_type(key, node, "true or false", f"write `{key.rsplit('.', 1)[-1]}: true` or `false`")
        return None

    def number(
        self,
        key: str,
        node: Node,
        *,
        integer: bool = False,
        minimum: float = 0.0,
        exclusive: bool = True,
        maximum: float | None = None,
        example: str = "30",
    ) -> float | None:
        tags = {_TAG + "int"} if integer else {_TAG + "int", _TAG + "float"}
        leaf = key.rsplit(".", 1)[-1]
        kind = "a whole number" if integer else "a number"
        if not (isinstance(node, ScalarNode) and node.tag in tags):
            self.wrong_type(key, node, kind, f"write `{leaf}: {example}`")
            return None
        value = float(self._value(node))
        too_small = value <= minimum if exclusive else value < minimum
        if not math.isfinite(value) or too_small or (maximum is not None and value > maximum):
            bound = f"greater than {minimum:g}" if exclusive else f"at least {minimum:g}"
            if maximum is not None:
                bound += f" and at most {maximum:g}"
            self.problem(key, node, f"{node.value} is out of range", f"use {kind} {bound}, e.g. `{leaf}: {example}`")
            return None
        return value

    def choice(self, key: str, node: Node, choices: Sequence[str]) -> str | None:
        leaf = key.rsplit(".", 1)[-1]
        fix = f"use one of: {', '.join(choices)}"
        if not (isinstance(node, ScalarNode) and node.tag == _TAG + "str"):
            self.wrong_type(key, node, f"one of {', '.join(choices)}", fix)
            return None
        value = str(node.value).strip().lower()
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            self.problem(
                key,
                node,
                f'"{_short(str(node.value))}" is not allowed',
                f"did you mean `{leaf}: {close[0]}`? ({fix})" if close else fix,
            )
            return None
        return value

    def path(self, key: str, node: Node) -> Path | None:
        raw = self.text(key, node, f"write a path, e.g. `{key.rsplit('.', 1)[-1]}: ~/somewhere`")
        if raw is None:
            return None
        if not raw.strip():
            self.problem(key, node, "is empty", "write a path or remove the key")
            return None
        result = Path(os.path.expandvars(raw.strip())).expanduser()
        # Relative paths are relative to the config file, not to wherever the daemon happens to start.
        return result if result.is_absolute() else self.base_dir / result


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = str(node.tag).removeprefix(_TAG)
    value = _short(str(node.value))
    if tag == "null":
        return "nothing (null)"
    if tag == "bool":
        return f"the boolean {value}"
    if tag in ("int", "float"):
        return f"the number {value}"
    if _LOOKS_LIKE_KEY.match(value):
        return "what looks like an API key"
    return f'the text "{value}"'


def _short(text: str, limit: int = 40) -> str:
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class _Settings:
    """Everything but the resolved key; filled with defaults, overwritten by what the file says."""

    url: str | None = None
    auth: AuthScheme = "bearer"
    key_source: _KeySource | None = None
    root: Path = field(default_factory=lambda: Path(DEFAULT_ROOT).expanduser())
    agents: tuple[AgentSelector, ...] = ()
    verify_tls: bool = True
    ca_bundle: Path | None = None
    use_truststore: bool = False
    timeout_seconds: float = 30.0
    rate_limit_requests: int = 30
    rate_limit_window_seconds: float = 10.0
    rate_limit_background_share: float = 0.5  # polls and re-checks use at most this share of the window
    poll_active_seconds: float = 2.0
    poll_idle_seconds: float = 60.0
    poll_conversations_seconds: float = 30.0
    rescan_seconds: float = 60.0
    debounce_ms: int = 100
    on_local_delete: Literal["detach", "delete_remote"] = "detach"
    log_level: str = "info"
    on_reply: tuple[str, ...] = ()
    frame_formats: tuple[str, ...] = ("parquet",)
    state_dir: Path | None = None
    profile: str = ""


def _parse(reader: _Reader, text: str, profile: str = "") -> _Settings:
    settings = _Settings()
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{reader.source} line {mark.line + 1}, column {mark.column + 1}" if mark else str(reader.source)
        problem = str(exc.problem or exc.context or "syntax error")
        started = exc.context_mark
        if exc.context and started and mark and started.line != mark.line:
            problem += f" ({exc.context} from line {started.line + 1})"
        if "\t" in text or "tab" in problem.lower():
            fix = "indent with spaces, never tabs"
        else:
            fix = "correct the YAML there (indentation; quote values holding `: ` or ` #`)"
        reader.add(mark.line + 1 if mark else 0, f"{where}: the file is not valid YAML: {problem}. Fix: {fix}")
        return settings
    except yaml.YAMLError as exc:
        reader.add(0, f"{reader.source}: the file is not valid YAML: {exc}. Fix: correct it")
        return settings

    top = {} if document is None else reader.mapping("", document, _TOP_KEYS)
    if top is None:
        return settings
    top = _apply_profile(reader, document, top, profile, settings)
    if top is None:
        return settings
    server_node = top.get("server")
    if server_node is None:
        reader.problem(
            "server.url",
            document,
            "missing (there is no server: section)",
            f"add `server:` with `url: {_URL_EXAMPLE}` below it",
        )
        settings.key_source = _KeySource("env", "server.api_key_env", None, env=DEFAULT_API_KEY_ENV)
    else:
        _parse_server(reader, server_node, settings)
    if "root" in top:
        root = reader.path("root", top["root"])
        if root is not None:
            settings.root = root
    _parse_sections(reader, top, settings)
    return settings


def _parse_sections(reader: _Reader, top: dict[str, Node], settings: _Settings) -> None:
    """Every top-level key but ``server``, ``root`` and ``profiles``."""
    if "agents" in top:
        settings.agents = _parse_agents(reader, top["agents"])
    if "poll" in top:
        _parse_poll(reader, top["poll"], settings)
    if "data_frames" in top:
        _parse_data_frames(reader, top["data_frames"], settings)
    if "debounce_ms" in top:
        debounce = reader.number(
            "debounce_ms", top["debounce_ms"], integer=True, exclusive=False, maximum=60_000, example="100"
        )
        if debounce is not None:
            settings.debounce_ms = int(debounce)
    if "on_local_delete" in top:
        policy = reader.choice("on_local_delete", top["on_local_delete"], ON_LOCAL_DELETE)
        if policy is not None:
            settings.on_local_delete = cast(Literal["detach", "delete_remote"], policy)
    if "log_level" in top:
        level = reader.choice("log_level", top["log_level"], LEVEL_NAMES)
        if level is not None:
            settings.log_level = level
    if "state_dir" in top and not reader.is_null(top["state_dir"]):
        settings.state_dir = reader.path("state_dir", top["state_dir"])
    if "on_reply" in top and not reader.is_null(top["on_reply"]):
        settings.on_reply = _parse_command(reader, "on_reply", top["on_reply"])


def _parse_command(reader: _Reader, key: str, node: Node) -> tuple[str, ...]:
    """A command as an argv list of strings (run without a shell); an empty list is no command."""
    fix = f'write it as a list, one item per argument: `{key}: [notify-send, "--", "{{conversation}}", "{{reply}}"]`'
    if not isinstance(node, SequenceNode):
        reader.wrong_type(key, node, "a list", fix)
        return ()
    argv = [reader.text(key, item, fix) for item in node.value]
    if any(a is None for a in argv):
        return ()
    return tuple(a for a in argv if a is not None)


def _choose_profile(
    reader: _Reader, document: Node | None, top: dict[str, Node], wanted: str
) -> tuple[dict[str, Node], str] | None:
    """The top-level entries the chosen profile sees (shared ones overridden by its own) and its name.

    ``profiles:`` maps names to config bodies; keys outside it (but ``root`` and ``state_dir``) are shared by
    every profile. Without a name: the top-level config when it has a ``server:``, else the only profile.
    None after reporting a problem.
    """
    node = top.pop("profiles", None)
    if node is None:
        if wanted:
            reader.problem(
                "profiles",
                document,
                f"there is no profile {wanted!r}: the file has no profiles: section",
                f"drop --profile / ${PROFILE_ENV}, or add `profiles:` with `{wanted}:` below it",
            )
            return None
        return top, ""
    if not isinstance(node, MappingNode) or not node.value:
        reader.wrong_type("profiles", node, "a mapping of profile names to settings", "see docs/config.md")
        return None
    bodies: dict[str, Node] = {}
    for key_node, value_node in node.value:
        name = str(key_node.value) if isinstance(key_node, ScalarNode) else ""
        if not _PROFILE_NAME.fullmatch(name):
            reader.problem(
                "profiles", key_node, f"{_short(name)!r} is not a usable profile name", "use letters, digits, _ . -"
            )
            return None
        bodies[name] = value_node
    if not wanted:
        if "server" in top:  # the file's own top-level config is its default; profiles are chosen by name
            return top, ""
        if len(bodies) != 1:
            reader.problem(
                "profiles",
                node,
                f"the file has {len(bodies)} profiles ({', '.join(bodies)}) and none was chosen",
                f"pass --profile NAME (or set ${PROFILE_ENV})",
            )
            return None
        wanted = next(iter(bodies))
    if wanted not in bodies:
        reader.problem("profiles", node, f"no profile named {wanted!r}", f"use one of: {', '.join(bodies)}")
        return None
    own = reader.mapping(f"profiles.{wanted}", bodies[wanted], [k for k in _TOP_KEYS if k != "profiles"])
    if own is None:
        return None
    # Shared keys are inherited, but not the root and state: two daemons must never share either.
    inherited = {k: v for k, v in top.items() if k not in ("root", "state_dir")}
    return {**inherited, **own}, wanted


def _apply_profile(
    reader: _Reader, document: Node | None, top: dict[str, Node], wanted: str, settings: _Settings
) -> dict[str, Node] | None:
    chosen = _choose_profile(reader, document, top, wanted)
    if chosen is None:
        return None
    entries, settings.profile = chosen
    if settings.profile:
        # Each profile has its own state (one daemon each) and, unless it says otherwise, its own root.
        settings.state_dir = paths.user_state_dir() / "profiles" / settings.profile
        settings.root = Path(f"{DEFAULT_ROOT}-{settings.profile}").expanduser()
    return entries


@dataclass(frozen=True, slots=True)
class ProfilesLayout:
    """Where a config text keeps its profiles, for ``convsync init --profile`` to append one as text."""

    names: tuple[str, ...]
    section: bool  # the file has a top-level ``profiles:``
    section_is_last: bool  # nothing follows it at the top level: lines appended at the end land in it
    indent: int  # the column of its entries


def profiles_layout(text: str) -> ProfilesLayout | None:
    """The layout of ``text``'s profiles; None when it is not a YAML mapping."""
    try:
        document = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if document is None:
        return ProfilesLayout((), section=False, section_is_last=False, indent=2)
    if not isinstance(document, MappingNode):
        return None
    for index, (key_node, value_node) in enumerate(document.value):
        if isinstance(key_node, ScalarNode) and key_node.value == "profiles":
            if not isinstance(value_node, MappingNode):
                return None
            names = tuple(str(k.value) for k, _ in value_node.value if isinstance(k, ScalarNode))
            indent = value_node.value[0][0].start_mark.column if value_node.value else 2
            last = index == len(document.value) - 1 and value_node.flow_style is not True
            return ProfilesLayout(names, section=True, section_is_last=last, indent=indent)
    return ProfilesLayout((), section=False, section_is_last=False, indent=2)


def _parse_server(reader: _Reader, node: Node, settings: _Settings) -> None:
    server = reader.mapping("server", node, _SERVER_KEYS)
    if server is None:
        return
    if "url" not in server or reader.is_null(server["url"]):
        reader.problem(
            "server.url",
            server.get("url", reader.key_of(node)),
            "missing",
            f"add `url: {_URL_EXAMPLE}` under server:",
        )
    else:
        settings.url = _parse_url(reader, server["url"])

    sources = [k for k in ("api_key_env", "api_key_file", "api_key_command") if k in server]
    if len(sources) > 1:
        reader.problem(
            f"server.{sources[1]}",
            server[sources[1]],
            f"only one key source may be set, found {', '.join(sources)}",
            "keep one of them",
        )
    elif sources:
        settings.key_source = _parse_key_source(reader, sources[0], server[sources[0]])
    else:
        settings.key_source = _KeySource("env", "server.api_key_env", None, env=DEFAULT_API_KEY_ENV)

    if "auth" in server:
        auth = reader.choice("server.auth", server["auth"], AUTH_SCHEMES)
        if auth is not None:
            settings.auth = cast(AuthScheme, auth)
    if "verify_tls" in server:
        verify = reader.boolean("server.verify_tls", server["verify_tls"])
        settings.verify_tls = settings.verify_tls if verify is None else verify
    if "ca_bundle" in server and not reader.is_null(server["ca_bundle"]):
        bundle = reader.path("server.ca_bundle", server["ca_bundle"])
        if bundle is not None and not bundle.is_file():
            reader.problem(
                "server.ca_bundle",
                server["ca_bundle"],
                f"{bundle} is not a file",
                "point it at a PEM file of CA certificates, or remove the key",
            )
        else:
            settings.ca_bundle = bundle
    if "truststore" in server:
        use = reader.boolean("server.truststore", server["truststore"])
        if use and importlib.util.find_spec("truststore") is None:
            reader.problem(
                "server.truststore",
                server["truststore"],
                "the truststore package is not installed",
                "pip install 'convsync[truststore]', or set `truststore: false`",
            )
        elif use is not None:
            settings.use_truststore = use
    if "timeout_seconds" in server:
        timeout = reader.number("server.timeout_seconds", server["timeout_seconds"], maximum=3600)
        settings.timeout_seconds = settings.timeout_seconds if timeout is None else timeout
    if "rate_limit" in server:
        rate = reader.mapping("server.rate_limit", server["rate_limit"], _RATE_KEYS)
        if rate is not None and "requests" in rate:
            requests = reader.number(
                "server.rate_limit.requests",
                rate["requests"],
                integer=True,
                minimum=1,
                exclusive=False,
                example="30",
            )
            if requests is not None:
                settings.rate_limit_requests = int(requests)
        if rate is not None and "per_seconds" in rate:
            window = reader.number("server.rate_limit.per_seconds", rate["per_seconds"], example="10")
            if window is not None:
                settings.rate_limit_window_seconds = window
        if rate is not None and "background_share" in rate:
            share = reader.number(
                "server.rate_limit.background_share", rate["background_share"], maximum=1.0, example="0.5"
            )
            if share is not None:
                settings.rate_limit_background_share = share


def _parse_url(reader: _Reader, node: Node) -> str | None:
    raw = reader.text("server.url", node, f"write `url: {_URL_EXAMPLE}`")
    if raw is None:
        return None
    url = raw.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        reader.problem(
            "server.url",
            node,
            f'"{_short(url)}" does not start with https:// or http://',
            f"write the full base URL, e.g. `url: {_URL_EXAMPLE}`",
        )
        return None
    if not parts.hostname or any(c.isspace() for c in url):
        reader.problem(
            "server.url",
            node,
            f'"{_short(url)}" has no host name (or contains spaces)',
            f"write the full base URL, e.g. `url: {_URL_EXAMPLE}`",
        )
        return None
    return url.rstrip("/")


def _parse_key_source(reader: _Reader, name: str, node: Node) -> _KeySource | None:
    key = f"server.{name}"
    if name == "api_key_env":
        env = reader.text(key, node, f"write the variable's name, e.g. `api_key_env: {DEFAULT_API_KEY_ENV}`")
        if env is None:
            return None
        env = env.strip()
        if _LOOKS_LIKE_KEY.match(env) or not _ENV_NAME.fullmatch(env):
            what = "looks like an API key itself" if _LOOKS_LIKE_KEY.match(env) else "is not a variable name"
            reader.problem(
                key,
                node,
                f"the value {what}",
                f"name an environment variable that holds the key, e.g. `api_key_env: "
                f"{DEFAULT_API_KEY_ENV}` (and export {DEFAULT_API_KEY_ENV}=<key>)",
            )
            return None
        return _KeySource("env", key, node, env=env)
    if name == "api_key_file":
        file = reader.path(key, node)
        return None if file is None else _KeySource("file", key, node, file=file)
    # api_key_command: a string (split like a shell would, but run without one) or a list of words.
    fix = 'write the command, e.g. `api_key_command: "pass show sema4/api-key"`'
    argv: list[str] = []
    if isinstance(node, SequenceNode):
        for item in node.value:
            word = reader.text(key, item, fix, lenient=True)
            if word is None:
                return None
            argv.append(word)
    else:
        command = reader.text(key, node, fix)
        if command is None:
            return None
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            reader.problem(key, node, f"cannot split the command: {exc}", "balance its quotes")
            return None
    if not argv:
        reader.problem(key, node, "the command is empty", fix)
        return None
    return _KeySource("command", key, node, argv=tuple(argv))


def _parse_agents(reader: _Reader, node: Node) -> tuple[AgentSelector, ...]:
    fix = "write `agents: all`, or a list of `- name: NAME` / `- id: UUID` entries"
    if isinstance(node, ScalarNode) and node.tag == _TAG + "str":
        if str(node.value).strip().lower() == "all":
            return ()
        reader.problem("agents", node, f'"{_short(str(node.value))}" is not allowed', fix)
        return ()
    if not isinstance(node, SequenceNode):
        reader.wrong_type("agents", node, "`all` or a list", fix)
        return ()
    if not node.value:
        reader.problem("agents", node, "the list is empty, so nothing would be mirrored", fix)
        return ()
    selectors: list[AgentSelector] = []
    seen: dict[str, str] = {}
    for index, item in enumerate(node.value):
        key = f"agents[{index}]"
        selector = _parse_agent(reader, key, item)
        if selector is None:
            continue
        identity = f"id:{selector.id}" if selector.id else f"name:{(selector.name or '').casefold()}"
        if identity in seen:
            reader.problem(key, item, f"selects the same agent as {seen[identity]}", "remove one of them")
            continue
        if selector.folder is not None:
            folder_identity = f"folder:{selector.folder.casefold()}"
            if folder_identity in seen:
                reader.problem(
                    f"{key}.folder",
                    item,
                    f"is also the folder of {seen[folder_identity]}",
                    "give each agent its own folder",
                )
                continue
            seen[folder_identity] = key
        seen[identity] = key
        selectors.append(selector)
    return tuple(selectors)


def _parse_agent(reader: _Reader, key: str, item: Node) -> AgentSelector | None:
    if isinstance(item, ScalarNode) and item.tag != _TAG + "null":
        reader.problem(key, item, "a bare name is ambiguous", f'write `- name: "{_short(str(item.value))}"`')
        return None
    entry = reader.mapping(key, item, _AGENT_KEYS)
    if entry is None:
        return None
    chosen = [k for k in ("name", "id") if k in entry]
    if len(chosen) != 1:
        reader.problem(key, item, "needs exactly one of name or id", "write `- name: NAME` or `- id: UUID`")
        return None
    which = chosen[0]
    raw = reader.text(f"{key}.{which}", entry[which], f"write `{which}: ...`", lenient=True)
    if raw is None:
        return None
    value = raw.strip()
    if which == "id":
        try:
            value = str(uuid.UUID(value))
        except ValueError:
            reader.problem(
                f"{key}.id",
                entry["id"],
                f'"{_short(value)}" is not an agent id (a UUID)',
                "copy the id from the server, or select the agent with `name:` instead",
            )
            return None
    elif not value:
        reader.problem(f"{key}.name", entry["name"], "is empty", "write the agent's name")
        return None
    folder: str | None = None
    if "folder" in entry:
        folder = reader.text(f"{key}.folder", entry["folder"], 'write `folder: "Folder name"`', lenient=True)
        if folder is None:
            return None
        if problem := _folder_problem(folder):
            reader.problem(f"{key}.folder", entry["folder"], problem, "use a plain folder name like `Sales`")
            return None
    if which == "id":
        return AgentSelector(id=value, folder=folder)
    return AgentSelector(name=value, folder=folder)


def _folder_problem(folder: str) -> str | None:
    if not folder.strip():
        return "is empty"
    if folder in (".", "..") or folder.startswith("."):
        return "must not start with a dot"
    if any(c in folder for c in "/\\\0") or any(ord(c) < 32 for c in folder):
        return "must be a single folder name (no /, \\ or control characters)"
    if len(folder.encode()) > 200:
        return "is too long (at most 200 bytes)"
    return None


def _parse_data_frames(reader: _Reader, node: Node, settings: _Settings) -> None:
    section = reader.mapping("data_frames", node, _FRAME_KEYS)
    if section is None or "formats" not in section:
        return
    formats = section["formats"]
    if not isinstance(formats, SequenceNode):
        reader.wrong_type("data_frames.formats", formats, "a list", "write `formats: [parquet, csv]`")
        return
    chosen: list[str] = []
    for item in formats.value:
        value = reader.choice("data_frames.formats", item, FRAME_FORMATS)
        if value is not None and value not in chosen:
            chosen.append(value)
    # Parquet is the exact copy, and what convsync checks a frame against: it is always written.
    settings.frame_formats = ("parquet", *(f for f in chosen if f != "parquet"))


def _parse_poll(reader: _Reader, node: Node, settings: _Settings) -> None:
    poll = reader.mapping("poll", node, _POLL_KEYS)
    if poll is None:
        return
    examples = {
        "active_seconds": "2",
        "idle_seconds": "60",
        "conversations_seconds": "30",
        "rescan_seconds": "60",
    }
    values: dict[str, float] = {}
    for name, example in examples.items():
        if name in poll:
            value = reader.number(f"poll.{name}", poll[name], maximum=86_400, example=example)
            if value is not None:
                values[name] = value
    settings.poll_active_seconds = values.get("active_seconds", settings.poll_active_seconds)
    settings.poll_idle_seconds = values.get("idle_seconds", settings.poll_idle_seconds)
    settings.poll_conversations_seconds = values.get("conversations_seconds", settings.poll_conversations_seconds)
    settings.rescan_seconds = values.get("rescan_seconds", settings.rescan_seconds)
    if settings.poll_idle_seconds < settings.poll_active_seconds:
        reader.problem(
            "poll.idle_seconds",
            poll.get("idle_seconds", poll.get("active_seconds", reader.key_of(node))),
            f"{settings.poll_idle_seconds:g} is shorter than poll.active_seconds ({settings.poll_active_seconds:g})",
            "make idle_seconds at least as long as active_seconds",
        )


# -- the API key ------------------------------------------------------------------------------------


def _credential_file() -> Path | None:
    """``$CREDENTIALS_DIRECTORY/convsync-api-key`` when systemd passed it (``LoadCredential=``)."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        return None
    candidate = Path(directory) / CREDENTIAL_NAME
    return candidate if candidate.exists() else None


def _resolve_key(reader: _Reader, source: _KeySource | None) -> tuple[str, str] | None:
    """(key, description of its source), or None after reporting why there is none."""
    credential = _credential_file()
    if credential is not None:
        try:
            text = credential.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reader.problem(
                "LoadCredential",
                None,
                f"cannot read the systemd credential {credential}: {_os_reason(exc)}",
                f"check the unit's LoadCredential={CREDENTIAL_NAME}:… line",
            )
            return None
        return _checked_key(reader, text, "LoadCredential", None, f"systemd credential {CREDENTIAL_NAME}")
    if source is None:
        return None
    if source.kind == "env":
        value = os.environ.get(source.env)
        if value is None or not value.strip():
            state = "is not set" if value is None else "is empty"
            reader.problem(
                source.key,
                source.node,
                f"the environment variable {source.env} {state}",
                f"export {source.env}=<your key>, or use server.api_key_file "
                "(a service does not see your shell's variables)",
            )
            return None
        return _checked_key(reader, value, source.key, source.node, f"environment variable {source.env}")
    if source.kind == "file":
        assert source.file is not None
        content = _read_key_file(reader, source.file, source.key, source.node)
        if content is None:
            return None
        return _checked_key(reader, content, source.key, source.node, f"file {source.file}")
    return _run_key_command(reader, source)


def _read_key_file(reader: _Reader, file: Path, key: str, node: Node | None) -> str | None:
    fix_write = f"write the key into it: (umask 077; printf '%s' '<key>' > {file})"
    try:
        info = file.stat()
    except FileNotFoundError:
        reader.problem(key, node, f"the key file {file} does not exist", f"{fix_write}, or correct the path")
        return None
    except OSError as exc:
        reader.problem(
            key,
            node,
            f"cannot read the key file {file}: {_os_reason(exc)}",
            f"make it readable by you: chmod 600 {file}",
        )
        return None
    if not stat.S_ISREG(info.st_mode):
        reader.problem(key, node, f"the key file {file} is not a regular file", f"{fix_write}, or correct the path")
        return None
    if info.st_mode & 0o077:
        reader.problem(
            key,
            node,
            f"the key file {file} is accessible by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}); convsync refuses to use it",
            f"chmod 600 {file}",
        )
        return None
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reader.problem(
            key,
            node,
            f"cannot read the key file {file}: {_os_reason(exc)}",
            f"make it readable by you (chmod 600 {file}) and make sure it holds the key as text",
        )
        return None


def _run_key_command(reader: _Reader, source: _KeySource) -> tuple[str, str] | None:
    shown = shlex.join(source.argv)
    try:
        done = subprocess.run(
            source.argv,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=KEY_COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        reader.problem(
            source.key,
            source.node,
            f"command not found: {source.argv[0]}",
            "install it or give its full path",
        )
        return None
    except subprocess.TimeoutExpired:
        reader.problem(
            source.key,
            source.node,
            f"`{shown}` did not finish within {KEY_COMMAND_TIMEOUT_SECONDS:g} seconds",
            "make it print the key without asking",
        )
        return None
    except OSError as exc:
        reader.problem(source.key, source.node, f"cannot run `{shown}`: {_os_reason(exc)}", "fix the command")
        return None
    if done.returncode != 0:
        errors = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        said = f": {_short(errors[-1], 160)}" if errors else ""
        reader.problem(
            source.key,
            source.node,
            f"`{shown}` failed with exit status {done.returncode}{said}",
            "run the command yourself and fix it until it prints the key",
        )
        return None
    return _checked_key(reader, done.stdout, source.key, source.node, f"command `{shown}`")


def _checked_key(reader: _Reader, text: str, key: str, node: Node | None, origin: str) -> tuple[str, str] | None:
    # The key is the first non-empty line (`pass show` prints metadata lines after it).
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        reader.problem(key, node, f"the {origin} gives an empty key", "put the API key there")
        return None
    value = lines[0]
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        reader.problem(
            key,
            node,
            f"the key from the {origin} contains spaces or control characters",
            "the key is a single word; put only the key there",
        )
        return None
    return value, origin


def _os_reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


# -- public entry points ----------------------------------------------------------------------------


def _where_from(explicit: Path | None) -> str:
    if explicit is not None:
        return "--config"
    if os.environ.get(paths.CONFIG_ENV, "").strip():
        return f"${paths.CONFIG_ENV}"
    return "the default location"


def load_config(
    path: Path | None = None, *, require_key: bool = True, read_key: bool = True, profile: str | None = None
) -> Config:
    """Read and validate the config (``path``, else ``$CONVSYNC_CONFIG``, else the user config dir).

    Raises ``ConfigError`` listing every problem found, each with its key, line and fix. With
    ``require_key=False`` (commands that read local state only) a key that cannot be read is no error: the
    config comes back with an empty ``api_key`` and the reason in ``api_key_problem``. ``profile`` (else
    ``$CONVSYNC_PROFILE``) chooses one of the file's ``profiles:``. ``read_key=False`` (commands that never
    send a request: ``status``, ``reload``) does not even look for the key, so an ``api_key_command`` (``pass``, a
    pinentry prompt) is not run for nothing.
    """
    file = paths.config_file(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [
                f"{file}: no config file there (chosen by {_where_from(path)}). Fix: run "
                f"`convsync init --url {_URL_EXAMPLE}`, or pass --config FILE"
            ]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [
                f"{file}: cannot read the config file: {_os_reason(exc)}. "
                f"Fix: make it a readable UTF-8 text file (chmod 600 {file})"
            ]
        ) from None
    chosen = profile if profile is not None else os.environ.get(PROFILE_ENV, "").strip()
    return parse_config(text, source=file, require_key=require_key and read_key, read_key=read_key, profile=chosen)


def parse_config(
    text: str, source: Path, *, require_key: bool = True, read_key: bool = True, profile: str = ""
) -> Config:
    """Validate config ``text`` (read from ``source``, which anchors relative paths and names the file)."""
    reader = _Reader(source.expanduser().absolute())
    settings = _parse(reader, text, profile)
    key_reader = reader if require_key else _Reader(reader.source)
    # With auth: none there is no key to read (a key source the file names anyway is not used).
    resolved = ("", "") if settings.auth == "none" or not read_key else _resolve_key(key_reader, settings.key_source)
    problems = reader.problems
    if problems or (resolved is None and require_key) or settings.url is None:
        if key_reader is not reader:
            problems += key_reader.problems  # a broken config: say everything that is wrong at once
        raise ConfigError(problems or [f"{source}: the configuration is incomplete. Fix: see above"])
    api_key, origin = resolved or ("", "")
    if api_key:
        register_secret(api_key)
    return Config(
        url=settings.url,
        api_key=api_key,
        root=settings.root,
        auth=settings.auth,
        agents=settings.agents,
        verify_tls=settings.verify_tls,
        ca_bundle=settings.ca_bundle,
        use_truststore=settings.use_truststore,
        timeout_seconds=settings.timeout_seconds,
        rate_limit_requests=settings.rate_limit_requests,
        rate_limit_window_seconds=settings.rate_limit_window_seconds,
        rate_limit_background_share=settings.rate_limit_background_share,
        poll_active_seconds=settings.poll_active_seconds,
        poll_idle_seconds=settings.poll_idle_seconds,
        poll_conversations_seconds=settings.poll_conversations_seconds,
        rescan_seconds=settings.rescan_seconds,
        debounce_ms=settings.debounce_ms,
        on_local_delete=settings.on_local_delete,
        log_level=settings.log_level,
        on_reply=settings.on_reply,
        frame_formats=settings.frame_formats,
        state_dir=paths.state_dir(settings.state_dir),
        config_file=reader.source,
        api_key_source=origin,
        api_key_problem="\n".join(key_reader.problems) if resolved is None else "",
        profile=settings.profile,
    )


_INITIAL_CONFIG = """\
# convsync configuration, written by `convsync init`.
# Every key, with its default, is documented in config.example.yaml (docs/config.md explains them);
# keys left out take their defaults. Check this file with `convsync doctor`.

server:
  # The Agent API base URL.
  url: {url}
  # Where the API key comes from: exactly one of api_key_env, api_key_file, api_key_command.
  # Under systemd, $CREDENTIALS_DIRECTORY/{credential} (LoadCredential=) wins when it exists.
{key_lines}

# The mirror root: one folder per agent, one folder per conversation inside.
root: {root}

# Which agents to mirror: all, or a list such as
#   agents:
#     - name: Sales Assistant
#       folder: Sales
#     - id: 1b4e28ba-2fa1-11d2-883f-0016d3cca427
agents: all

# What deleting a conversation folder does: detach (keep it on the server) or delete_remote.
on_local_delete: detach

log_level: info
"""

_ROOT_MARKER_TEXT = (
    "This folder is a convsync mirror root. Keep this file: without it convsync stops touching the folder\n"
    "(that is how it notices an unmounted disk).\n"
)


def write_initial_config(
    config_path: Path | None,
    url: str | None,
    root: Path | None,
    api_key_env: str | None,
    force: bool,
    *,
    api_key_file: Path | None = None,
    out: Callable[[str], None] | None = None,
) -> int:
    """``convsync init``: write a commented config (0600), create the root and its marker; say what next.

    The key source is ``api_key_env`` (default ``CONVSYNC_API_KEY``) or, for a service, ``api_key_file``.
    """
    say = out or print
    file = paths.config_file(config_path)
    env = (api_key_env or DEFAULT_API_KEY_ENV).strip()
    key_file = api_key_file.expanduser().absolute() if api_key_file is not None else None
    root_dir = (root or Path(DEFAULT_ROOT)).expanduser().absolute()
    problems = _init_problems(file, url, root_dir, env, both_sources=bool(api_key_env and key_file), force=force)
    if problems or url is None:
        for problem in problems:
            print(f"convsync init: {redact(problem)}", file=sys.stderr)
        return Exit.USAGE

    text = _INITIAL_CONFIG.format(
        url=quoted_scalar(url.strip().rstrip("/")),
        key_lines="\n".join(_initial_key_lines(env, key_file)),
        root=quoted_scalar(str(root_dir)),
        credential=CREDENTIAL_NAME,
    )
    paths.ensure_private_dir(file.parent)
    paths.write_atomically(file, text.encode(), 0o600)
    say(f"Wrote {file} (mode 0600).")

    create_root(root_dir, say)

    config_arg = f" --config {shlex.quote(str(file))}" if config_path is not None else ""
    if key_file is not None:
        key_step = _key_file_step(key_file)
    elif os.environ.get(env, "").strip():
        key_step = f"  {env} is set in this shell; a service needs the key in a file (docs/service.md)"
    else:
        key_step = f"  export {env}=<your API key>   (or: convsync init --force --api-key-file FILE)"
    say("Next:")
    if key_step:
        say(key_step)
    say(f"  convsync doctor{config_arg}      checks the config, the key and the server")
    say(f"  convsync run{config_arg}         mirrors in the foreground")
    say(f"  convsync service install{config_arg}   or: runs it as a systemd user service")
    return Exit.OK


def create_root(root_dir: Path, say: Callable[[str], None]) -> None:
    """Create the mirror root with its marker (kept when it is there) and say which happened."""
    marker = root_dir / paths.ROOT_MARKER_NAME
    existed = marker.exists()
    root_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not existed:
        paths.write_atomically(marker, _ROOT_MARKER_TEXT.encode(), 0o600)
        say(f"Created the mirror root {root_dir} (with its {paths.ROOT_MARKER_NAME} marker).")
    else:
        say(f"The mirror root {root_dir} already has its {paths.ROOT_MARKER_NAME} marker.")


def _init_problems(
    file: Path, url: str | None, root_dir: Path, env: str, *, both_sources: bool, force: bool
) -> list[str]:
    problems: list[str] = []
    if both_sources:
        problems.append("give either --api-key-env or --api-key-file, not both")
    if not url:
        problems.append(f"--url is required: convsync init --url {_URL_EXAMPLE}")
    else:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"--url {_short(url)!r} is not an http(s) URL; e.g. --url {_URL_EXAMPLE}")
    if not _ENV_NAME.fullmatch(env) or _LOOKS_LIKE_KEY.match(env):
        problems.append(
            "--api-key-env must name an environment variable (not hold the key), "
            f"e.g. --api-key-env {DEFAULT_API_KEY_ENV}"
        )
    if file.exists() and not force:
        problems.append(f"{file} already exists; pass --force to overwrite it")
    if root_dir.exists() and not root_dir.is_dir():
        problems.append(f"the root {root_dir} exists and is not a folder; choose another with --root")
    return problems


def quoted_scalar(value: str) -> str:
    """A YAML double-quoted scalar."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _initial_key_lines(env: str, key_file: Path | None) -> list[str]:
    if key_file is not None:
        lines = [
            f"  api_key_file: {quoted_scalar(str(key_file))}   # must be private: chmod 600",
            f"  # api_key_env: {DEFAULT_API_KEY_ENV}",
        ]
    else:
        example = paths.user_config_dir() / "api-key"
        lines = [f"  api_key_env: {env}", f"  # api_key_file: {example}   # must be private: chmod 600"]
    lines.append('  # api_key_command: "pass show sema4/api-key"   # the first line it prints is the key')
    return lines


def _key_file_step(key_file: Path) -> str:
    """What is left to do about the key file ``init`` was given ("" when it is ready)."""
    try:
        mode = stat.S_IMODE(key_file.stat().st_mode)
    except FileNotFoundError:
        return f"  put your key into {key_file}: (umask 077; printf '%s\\n' '<your API key>' > {key_file})"
    except OSError as exc:
        return f"  make {key_file} readable: {_os_reason(exc)}"
    if mode & 0o077:
        return f"  chmod 600 {key_file}   (convsync refuses a key file others can read)"
    return ""
