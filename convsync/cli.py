"""The ``convsync`` command line: argument parsing and the one map from errors to messages and exit codes.

Exit codes (the unit file relies on them so that a config error does not restart-loop):

====  ==================  ==========================================================
code  name                meaning
====  ==================  ==========================================================
0     OK                  done
1     BUG                 an unexpected error: a bug, please report it
2     USAGE               wrong command-line arguments
65    STATE_UNUSABLE      the state database is corrupt or newer than this convsync: ``convsync repair``
69    ROOT_UNAVAILABLE    the mirror root has no ``.convsync-root`` marker
73    ALREADY_RUNNING     another ``convsync run`` uses this state directory
75    TRANSIENT           the server is unreachable or failing; trying again later may work
77    AUTH                the API key is missing, wrong or lacks access
78    CONFIG              the configuration is invalid; the message says which key and how to fix it
====  ==================  ==========================================================

Commands import their modules lazily so that ``convsync status`` does not pay for the emulator's imports.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path

from convsync import errors


class Exit(IntEnum):
    OK = 0
    BUG = 1
    USAGE = 2
    STATE_UNUSABLE = 65
    ROOT_UNAVAILABLE = 69
    ALREADY_RUNNING = 73
    TRANSIENT = 75
    AUTH = 77
    CONFIG = 78


def exit_code_for(exc: BaseException) -> Exit:
    """The documented exit code of an error (most specific class first)."""
    table: list[tuple[type[BaseException], Exit]] = [
        (errors.ConfigError, Exit.CONFIG),
        (errors.AuthError, Exit.AUTH),
        (errors.RootUnavailable, Exit.ROOT_UNAVAILABLE),
        (errors.AlreadyRunning, Exit.ALREADY_RUNNING),
        (errors.StateUnusable, Exit.STATE_UNUSABLE),
        (errors.TransientError, Exit.TRANSIENT),
        (errors.ApiError, Exit.TRANSIENT),
    ]
    for cls, code in table:
        if isinstance(exc, cls):
            return code
    return Exit.BUG


def _message_for(exc: BaseException) -> str:
    from convsync.logs import redact

    # Any message may quote a server answer or a library's text: never let a secret through.
    return redact(_describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.ConfigError):
        return "convsync: configuration problem:\n" + "\n".join(f"  - {p}" for p in exc.problems)
    if isinstance(exc, errors.AuthError):
        return (
            f"convsync: the server refused the API key: {exc}\n"
            "  fix: check the key configured under server.api_key_* (convsync doctor tests it)"
        )
    if isinstance(exc, errors.ApiError):
        return f"convsync: the Agent API failed: {exc}"
    if isinstance(exc, errors.ConvsyncError):
        return f"convsync: {exc}"
    return f"convsync: unexpected error (a bug; please report it): {type(exc).__name__}: {exc}"


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $CONVSYNC_CONFIG, then the user config dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convsync", description="Mirror Agent API conversations as local folders.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="write a config file and create the mirror root")
    _add_config_option(p)
    p.add_argument("--url", help="the Agent API base URL, e.g. https://host/tenants/T/api/v2")
    p.add_argument("--root", type=Path, help="the mirror root (default ~/Conversations)")
    p.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    p.add_argument("--api-key-file", type=Path, default=None, help="private file holding the API key (for services)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config file")

    p = sub.add_parser("run", help="run the daemon in the foreground")
    _add_config_option(p)

    p = sub.add_parser("sync", help="one reconcile pass, then exit")
    _add_config_option(p)

    p = sub.add_parser("status", help="show every conversation's state")
    _add_config_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("repair", help="rebuild an unusable state database, keeping every queued prompt")
    _add_config_option(p)

    p = sub.add_parser("demo", help="run a scripted session against the built-in emulator")
    p.add_argument("--keep", action="store_true", help="leave the emulator and daemon running afterwards")
    p.add_argument("--dir", type=Path, default=None, help="where to put the demo root (default: a temp dir)")

    p = sub.add_parser("emulator", help="serve the local emulator of the Agent API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8750)
    p.add_argument("--api-key", default=None, help="the bearer key it accepts (default: any s4w_ key)")
    p.add_argument("--data-dir", type=Path, default=None, help="persist state here across restarts")
    p.add_argument("--no-parquet", action="store_true", help="answer 422 to output_format=parquet")
    p.add_argument("--page-size", type=int, default=0, help="paginate lists with next tokens (0 = off)")
    p.add_argument("--next-form", choices=["token", "url"], default="token")
    p.add_argument("--rate-limit", type=int, default=0, help="requests per window before 429 (0 = off)")
    p.add_argument("--seed-agents", default="Demo Agent", help="comma-separated agent names to create")

    p = sub.add_parser("service", help="install or remove the systemd user service")
    _add_config_option(p)
    p.add_argument("action", choices=["install", "uninstall"])
    p.add_argument("--no-start", action="store_true", help="write the unit but do not enable/start it")

    p = sub.add_parser("doctor", help="check config, key, server, root and limits; print fixes")
    _add_config_option(p)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    # Imports are local: each command loads only what it uses.
    if args.command == "emulator":
        from convsync.emulator.server import serve_from_args

        return serve_from_args(args)
    if args.command == "demo":
        from convsync.demo import run_demo

        return run_demo(keep=args.keep, directory=args.dir)

    from convsync.logs import setup_logging

    setup_logging(verbosity=args.verbose - args.quiet)
    if args.command == "init":
        from convsync.config import write_initial_config

        return write_initial_config(
            config_path=args.config,
            url=args.url,
            root=args.root,
            api_key_env=args.api_key_env,
            force=args.force,
            api_key_file=args.api_key_file,
        )
    if args.command == "service":
        from convsync import service

        if args.action == "install":
            return service.install(config_path=args.config, start=not args.no_start)
        return service.uninstall()
    if args.command == "doctor":
        from convsync.doctor import run_doctor

        return run_doctor(config_path=args.config)

    from convsync.config import load_config

    config = load_config(args.config)
    setup_logging(verbosity=args.verbose - args.quiet, level=config.log_level)
    if args.command == "run":
        from convsync.daemon import run_daemon

        return run_daemon(config, config_path=args.config)
    if args.command == "sync":
        from convsync.daemon import sync_once

        return sync_once(config)
    if args.command == "repair":
        from convsync.repair import run_repair

        return run_repair(config)
    if args.command == "status":
        from convsync.statusreport import print_status

        return print_status(config, as_json=args.json)
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return Exit.OK
    except Exception as exc:
        print(_message_for(exc), file=sys.stderr)
        return exit_code_for(exc)


if __name__ == "__main__":
    sys.exit(main())
