"""``convsync init --profile NAME``: add a profile to a config file without touching the rest of it.

The profile is appended as text, so every comment and hand edit stays as it is (no YAML round trip, no new
dependency). It lands in the file's ``profiles:`` section when that is the last top-level key, or in a new
``profiles:`` section at the end; otherwise nothing is written and the command prints the exact lines to add
(exit 2). The result is validated before it replaces the file.
"""

from __future__ import annotations

import re
import shlex
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from convsync import paths
from convsync.cli import Exit
from convsync.config import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_ROOT,
    create_root,
    parse_config,
    profiles_layout,
    quoted_scalar,
)
from convsync.errors import ConfigError
from convsync.logs import redact

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Say = Callable[[str], None]


def profile_lines(
    name: str, url: str, root: Path, *, api_key_env: str | None, api_key_file: Path | None, indent: int
) -> list[str]:
    """The profile's entry, its name at column ``indent``."""
    pad = " " * indent
    key = (
        f"api_key_file: {quoted_scalar(str(api_key_file))}"
        if api_key_file is not None
        else f"api_key_env: {api_key_env or DEFAULT_API_KEY_ENV}"
    )
    return [
        f"{pad}{name}:",
        f"{pad}  server:",
        f"{pad}    url: {quoted_scalar(url.strip().rstrip('/'))}",
        f"{pad}    {key}",
        f"{pad}  root: {quoted_scalar(str(root))}",
    ]


def add_profile(
    config_path: Path | None,
    name: str,
    url: str | None,
    *,
    root: Path | None,
    api_key_env: str | None,
    api_key_file: Path | None,
    say: Say = print,
) -> int:
    """Append profile ``name`` to the config (created when missing); exit code per ``cli.Exit``."""
    file = paths.config_file(config_path)

    def refuse(message: str) -> int:
        print(f"convsync init: {redact(message)}", file=sys.stderr)
        return Exit.USAGE

    if not _NAME.fullmatch(name):
        return refuse(f"--profile {name!r}: use letters, digits, _ . - (e.g. --profile work)")
    if not url or urlsplit(url.strip()).scheme not in ("http", "https") or not urlsplit(url.strip()).hostname:
        return refuse("--url is required and must be an http(s) URL, e.g. --url https://HOST/tenants/TENANT/api/v2")
    if api_key_env and api_key_file:
        return refuse("give either --api-key-env or --api-key-file, not both")
    if api_key_env and not _ENV.fullmatch(api_key_env):
        return refuse(f"--api-key-env must name an environment variable, e.g. --api-key-env {DEFAULT_API_KEY_ENV}")
    root_dir = (root or Path(f"{DEFAULT_ROOT}-{name}")).expanduser().absolute()
    key_file = api_key_file.expanduser().absolute() if api_key_file is not None else None
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    layout = profiles_layout(text)
    if layout is None:
        return refuse(f"{file} is not a YAML mapping; fix it first (convsync doctor shows where)")
    if name in layout.names:
        return refuse(f"{file} already has a profile {name!r}; edit it there, or choose another name")
    lines = profile_lines(name, url, root_dir, api_key_env=api_key_env, api_key_file=key_file, indent=layout.indent)
    if layout.section and not layout.section_is_last:
        say(f"The profiles: section of {file} is followed by other keys, so appending could land in the wrong one.")
        say("Nothing was written. Add these lines under `profiles:` yourself:")
        say("\n".join(lines))
        return Exit.USAGE
    addition = [] if layout.section else ["", f"# Added by `convsync init --profile {name}`.", "profiles:"]
    new_text = text + ("" if not text or text.endswith("\n") else "\n") + "\n".join([*addition, *lines]) + "\n"
    try:
        parse_config(new_text, source=file.absolute(), require_key=False, profile=name)
    except ConfigError as exc:
        say(f"The profile would not be valid, so nothing was written to {file}:")
        for problem in exc.problems:
            say(f"  - {redact(problem)}")
        say("These are the lines it would add:")
        say("\n".join(lines))
        return Exit.USAGE
    mode = stat.S_IMODE(file.stat().st_mode) if text else 0o600
    paths.ensure_private_dir(file.parent)
    # Into the file a symlink points at (dotfiles): replacing the link would cut the config off from its repository.
    paths.write_atomically(file.resolve() if text else file, new_text.encode(), mode)
    say(f"Added the profile {name} to {file} (the rest of the file is unchanged).")
    create_root(root_dir, say)
    where = f" --config {shlex.quote(str(file))}" if config_path is not None else ""
    say("Next:")
    if key_file is None:
        say(f"  export {api_key_env or DEFAULT_API_KEY_ENV}=<the key for this server>   (a service needs a key file)")
    say(f"  convsync{where} --profile {name} doctor")
    say(f"  convsync{where} --profile {name} service install   # convsync@{name}.service")
    return Exit.OK
