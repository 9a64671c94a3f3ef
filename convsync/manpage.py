"""``convsync man``: the convsync(1) manual page in roff, generated from the argparse parser.

Generated at run time so the page always matches the installed command line; ``convsync man | man -l -``
reads it, ``convsync man > ~/.local/share/man/man1/convsync.1`` installs it for ``man convsync``.
"""

from __future__ import annotations

import argparse

from convsync.clispec import Command, Option, describe

_FILES = [
    ("~/.config/convsync/config.yaml", "the config file (or --config, or $CONVSYNC_CONFIG); keys: docs/config.md"),
    ("~/.local/state/convsync/", "the state directory: the SQLite state and the instance lock"),
    ("$XDG_RUNTIME_DIR/convsync/", "the running daemon's control socket"),
    ("~/.config/systemd/user/convsync.service", "the user unit written by convsync service install"),
    ("~/.config/systemd/user/convsync@.service", "the template unit of profiles and further configs (convsync@NAME)"),
]
_ENVIRONMENT = [
    ("CONVSYNC_CONFIG", "the config file, when --config is not given"),
    ("CONVSYNC_PROFILE", "the profile, when --profile is not given"),
    ("CONVSYNC_API_KEY", "the API key, when the config says api_key_env: CONVSYNC_API_KEY (the default)"),
    ("CREDENTIALS_DIRECTORY", "under systemd: convsync-api-key there is the API key (LoadCredential=)"),
]


def _text(text: str) -> str:
    """Plain text for roff: backslashes and dashes escaped, no line starting a request."""
    lines = []
    for line in text.replace("\\", "\\e").replace("-", "\\-").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _option(option: Option) -> list[str]:
    flags = ", ".join(f"\\fB{_text(flag)}\\fR" for flag in option.flags)
    value = f" \\fI{_text(option.metavar)}\\fR" if option.metavar else ""
    choices = f" (one of: {', '.join(option.choices)})" if option.choices else ""
    return [".TP", flags + value, _text(option.help + choices)]


def _block(text: str) -> list[str]:
    """A preformatted block (examples, tables), indented."""
    return [".RS", ".nf", _text(text), ".fi", ".RE"]


def _command(prog: str, command: Command, global_flags: set[str]) -> list[str]:
    words = [f"\\fB{prog} {command.name}\\fR"]
    for positional in command.positionals:
        shown = "|".join(positional.choices) or positional.name
        words.append(f"\\fI{_text(shown)}\\fR")
    own = [o for o in command.options if o.flags[0] not in global_flags]
    if own:
        words.append("[\\fIOPTIONS\\fR]")
    lines = [".SS", " ".join(words), _text(command.description or command.summary)]
    for option in own:
        lines += _option(option)
    examples = command.epilog.removeprefix("examples:\n")
    if examples.strip():
        lines += [".PP", "Examples:", *_block(examples)]
    return lines


def man_page(parser: argparse.ArgumentParser, version: str) -> str:
    """The roff source of convsync(1)."""
    program = describe(parser)
    prog = program.name
    global_flags = {o.flags[0] for o in program.options}
    exit_codes = program.epilog.partition("\n\n")[0]
    lines = [
        f'.TH {prog.upper()} 1 "" "{prog} {_text(version)}" "User Commands"',
        ".SH NAME",
        f"{prog} \\- {_text(program.description)}",
        ".SH SYNOPSIS",
        f"\\fB{prog}\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _text(
            "convsync mirrors every conversation with a Sema4.ai agent as a folder: save a prompt into prompt.txt "
            "and the reply streams into transcript.md; files dropped into inbox/ are uploaded. "
            "Global options are accepted before or after the command."
        ),
        ".SH GLOBAL OPTIONS",
    ]
    for option in program.options:
        lines += _option(option)
    lines.append(".SH COMMANDS")
    for command in program.commands:
        lines += _command(prog, command, global_flags)
    lines += [".SH EXIT STATUS", *_block(exit_codes.removeprefix("exit codes:\n"))]
    lines.append(".SH ENVIRONMENT")
    for name, meaning in _ENVIRONMENT:
        lines += [".TP", f"\\fB{name}\\fR", _text(meaning)]
    lines.append(".SH FILES")
    for name, meaning in _FILES:
        lines += [".TP", f"\\fI{_text(name)}\\fR", _text(meaning)]
    lines += [
        ".SH SEE ALSO",
        "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1); the project's docs/ folder (layout.md, config.md, service.md).",
        "",
    ]
    return "\n".join(lines)
