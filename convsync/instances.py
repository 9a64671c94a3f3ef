"""Several convsync services side by side: instances of the template unit ``convsync@.service``.

::

    ~/.config/systemd/user/convsync.service                        the first config without profiles (as ever)
    ~/.config/systemd/user/convsync@.service                       the template: ExecStart=<convsync> run
    ~/.config/systemd/user/convsync@NAME.service.d/convsync.conf   which config (and profile) NAME runs

NAME is the profile (``--profile``), else the config file's name without ``.yaml``. The instance learns its
config from ``Environment=CONVSYNC_CONFIG=… CONVSYNC_PROFILE=…`` in its drop-in, the way syncthing@ and
openvpn@ units learn theirs from the instance name. Installing never replaces another instance: a NAME that
already serves another config or profile is refused with the way out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from convsync import paths

TEMPLATE_NAME = "convsync@.service"
DROP_IN_NAME = "convsync.conf"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class Instance:
    name: str
    config: Path  # absolute
    profile: str  # "" for a config without profiles

    @property
    def unit(self) -> str:
        return f"convsync@{self.name}.service"

    def drop_in_dir(self) -> Path:
        return paths.systemd_user_unit_dir() / f"{self.unit}.d"

    def drop_in(self) -> Path:
        return self.drop_in_dir() / DROP_IN_NAME

    def drop_in_text(self) -> str:
        words = [_env_word(paths.CONFIG_ENV, str(self.config))]
        if self.profile:
            words.append(_env_word("CONVSYNC_PROFILE", self.profile))
        return (
            "# Written by `convsync service install`: the config this instance of convsync@.service runs.\n"
            "[Service]\n"
            f"Environment={' '.join(words)}\n"
        )


def _env_word(name: str, value: str) -> str:
    """One ``Environment=`` assignment, quoted for systemd (``%`` is a specifier there, so doubled)."""
    text = f"{name}={value}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def name_for(config: Path, profile: str) -> str | None:
    """The instance name for a config and profile; None when no usable name can be made from them."""
    candidate = profile or config.name.removesuffix(".yaml").removesuffix(".yml")
    candidate = re.sub(r"[^A-Za-z0-9_.-]", "_", candidate).lstrip("._-")
    return candidate if _NAME.fullmatch(candidate) else None


def installed(name: str) -> str | None:
    """The drop-in text of instance ``name`` if it is installed."""
    try:
        return (paths.systemd_user_unit_dir() / f"convsync@{name}.service.d" / DROP_IN_NAME).read_text()
    except FileNotFoundError:
        return None


def remaining() -> list[str]:
    """The names of every installed instance."""
    unit_dir = paths.systemd_user_unit_dir()
    return sorted(
        d.name.removeprefix("convsync@").removesuffix(".service.d")
        for d in unit_dir.glob("convsync@?*.service.d")
        if (d / DROP_IN_NAME).exists()
    )


def unit_for(config: Path | None, profile: str) -> str:
    """The unit that runs this config and profile, for the hints convsync prints (``systemctl --user start …``):
    the profile's instance, the instance installed for this config, else ``convsync``."""
    if config is None:
        return "convsync"
    config = config.absolute()
    name = name_for(config, profile)
    if name is None:
        return "convsync"
    if profile or installed(name) == Instance(name, config, profile).drop_in_text():
        return f"convsync@{name}"
    return "convsync"
