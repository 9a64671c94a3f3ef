"""The command line as data (commands, their options and choices), read from the argparse parser.

The man page and the shell completions are generated from this, so they cannot drift from what ``convsync``
accepts. argparse keeps its actions in private attributes; this module is the one place that reads them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Option:
    flags: tuple[str, ...]  # e.g. ("-v", "--verbose")
    help: str
    metavar: str  # "" for a flag that takes no value
    choices: tuple[str, ...] = ()
    is_path: bool = False


@dataclass(frozen=True, slots=True)
class Positional:
    name: str
    help: str
    choices: tuple[str, ...] = ()
    is_path: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    summary: str
    description: str
    epilog: str
    options: tuple[Option, ...]
    positionals: tuple[Positional, ...]


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    description: str
    epilog: str
    options: tuple[Option, ...]
    commands: tuple[Command, ...]


def _options(parser: argparse.ArgumentParser) -> tuple[tuple[Option, ...], tuple[Positional, ...]]:
    options: list[Option] = []
    positionals: list[Positional] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        choices = tuple(str(c) for c in action.choices) if action.choices else ()
        is_path = action.type is not None and getattr(action.type, "__name__", "") in ("Path", "PosixPath")
        if action.option_strings:
            takes_value = action.nargs != 0
            metavar = ""
            if takes_value:
                metavar = str(action.metavar or action.dest.upper())
            options.append(
                Option(
                    flags=tuple(action.option_strings),
                    help=action.help or "",
                    metavar=metavar,
                    choices=choices,
                    is_path=is_path,
                )
            )
        else:
            positionals.append(Positional(str(action.metavar or action.dest), action.help or "", choices, is_path))
    return tuple(options), tuple(positionals)


def describe(parser: argparse.ArgumentParser) -> Program:
    """``parser`` (convsync's, with one level of subcommands) as a ``Program``."""
    options, _ = _options(parser)
    commands: list[Command] = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            sub_options, sub_positionals = _options(sub)
            commands.append(
                Command(
                    name=name,
                    summary=summaries.get(name, ""),
                    description=sub.description or "",
                    epilog=sub.epilog or "",
                    options=sub_options,
                    positionals=sub_positionals,
                )
            )
    return Program(
        name=parser.prog,
        description=parser.description or "",
        epilog=parser.epilog or "",
        options=options,
        commands=tuple(commands),
    )
