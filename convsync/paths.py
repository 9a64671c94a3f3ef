"""Where convsync keeps its files: the config file, the state directory, logs and the systemd user unit.

The only module that imports platformdirs. Directories convsync creates for itself are private (0700).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "convsync"
CONFIG_FILE_NAME = "config.yaml"
CONFIG_ENV = "CONVSYNC_CONFIG"
UNIT_NAME = "convsync.service"


def user_config_dir() -> Path:
    """convsync's directory under the user config dir (``$XDG_CONFIG_HOME/convsync`` on Linux)."""
    return platformdirs.user_config_path(APP_NAME)


def default_config_file() -> Path:
    """The config file used when neither ``--config`` nor ``$CONVSYNC_CONFIG`` names one."""
    return user_config_dir() / CONFIG_FILE_NAME


def config_file(explicit: Path | None) -> Path:
    """The config file to read: ``--config``, then ``$CONVSYNC_CONFIG``, then the user config dir."""
    if explicit is not None:
        return explicit.expanduser()
    from_env = os.environ.get(CONFIG_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    return default_config_file()


def user_state_dir() -> Path:
    """The default state directory (``$XDG_STATE_HOME/convsync``): the SQLite state and the instance lock."""
    return platformdirs.user_state_path(APP_NAME)


def state_dir(configured: Path | None) -> Path:
    """The state directory a config selects (``state_dir:``), or the default one."""
    return configured if configured is not None else user_state_dir()


def systemd_user_unit_dir() -> Path:
    """The user's own systemd unit directory (``$XDG_CONFIG_HOME/systemd/user``)."""
    return platformdirs.user_config_path() / "systemd" / "user"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make the directory itself 0700; return it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)
    return path


ROOT_MARKER_NAME = ".convsync-root"  # marks a folder as a mirror root (the only definition)


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new file, never a torn one.

    A temp file in the same directory (created with ``mode`` from the start, so a secret is never briefly
    world-readable), fsync, rename, fsync of the directory.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; a unit file must stay readable
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
