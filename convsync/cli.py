"""The ``convsync`` command line: argument parsing and the one map from errors to messages and exit codes.

Exit codes (the unit file relies on them so that a config error does not restart-loop):

====  ==================  ==========================================================
code  name                meaning
====  ==================  ==========================================================
0     OK                  done
1     BUG                 an unexpected error: a bug, please report it
2     USAGE               wrong command-line arguments
3     DAEMON_NOT_RUNNING  ``status``, ``doctor``: the daemon of this state directory stopped (LSB ``status``)
65    STATE_UNUSABLE      the state database is corrupt or newer than this convsync: ``convsync repair``
69    ROOT_UNAVAILABLE    the mirror root has no ``.convsync-root`` marker
72    MISSING_EXTRA       the command needs an optional extra that is not installed (``emulator``, ``demo``)
73    ALREADY_RUNNING     another ``convsync run`` uses this state directory or this root
75    TRANSIENT           the server is unreachable or failing; trying again later may work
76    TLS_UNTRUSTED       the server's TLS certificate cannot be trusted; the message names the config fix
77    AUTH                the API key is missing, wrong or lacks access
78    CONFIG              the configuration is invalid (a refused redirect too: server.url is probably wrong);
                          the message says which key and how to fix it
====  ==================  ==========================================================

Commands import their modules lazily so that ``convsync status`` does not pay for the emulator's imports.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

from convsync import errors, paths

if TYPE_CHECKING:
    from convsync.config import Config


class Exit(IntEnum):
    OK = 0
    BUG = 1
    USAGE = 2
    DAEMON_NOT_RUNNING = 3  # `convsync status`: no daemon mirrors this state directory (as LSB's status)
    STATE_UNUSABLE = 65
    ROOT_UNAVAILABLE = 69
    MISSING_EXTRA = 72
    ALREADY_RUNNING = 73
    TRANSIENT = 75
    TLS_UNTRUSTED = 76
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
        (errors.MissingExtra, Exit.MISSING_EXTRA),
        (errors.UntrustedCertificate, Exit.TLS_UNTRUSTED),
        (errors.RedirectRefused, Exit.CONFIG),
        (errors.NotRunning, Exit.TRANSIENT),
        (errors.TransientError, Exit.TRANSIENT),
        (errors.ApiError, Exit.TRANSIENT),
    ]
    for cls, code in table:
        if isinstance(exc, cls):
            return code
    return Exit.BUG


def _message_for(exc: BaseException) -> str:
    from convsync.logs import redact
    from convsync.printable import printable_lines

    # Any message may quote a server answer or a library's text: never let a secret or a control character through.
    return printable_lines(redact(_describe(exc)))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.ConfigError):
        return "convsync: configuration problem:\n" + "\n".join(f"  - {p}" for p in exc.problems)
    if isinstance(exc, errors.AuthError):
        return (
            f"convsync: the server refused the API key: {_one_line(exc)}\n"
            "  fix: put a current key for this tenant where the config's server.api_key_env/api_key_file/"
            "api_key_command points (a new key comes from the web UI), check it with `convsync doctor`, then start "
            f"convsync again (as a service: systemctl --user restart {_unit()})"
        )
    if isinstance(exc, errors.ApiError):
        return f"convsync: the Agent API failed: {_one_line(exc)}"
    if isinstance(exc, errors.ConvsyncError):
        return f"convsync: {exc}"
    return f"convsync: unexpected error (a bug; please report it): {type(exc).__name__}: {exc}"


def _unit() -> str:
    """The unit of this config and profile, as the environment names them (an instance's drop-in sets both)."""
    import os

    from convsync.instances import unit_for

    return unit_for(paths.config_file(None), os.environ.get("CONVSYNC_PROFILE", "").strip())


def _one_line(exc: BaseException) -> str:
    """An error's text that may quote the server, kept on its line (a newline in it could forge the fix)."""
    from convsync.printable import printable

    return printable(str(exc))


_EXAMPLES = "examples:\n"
# Set by a subcommand's own -v/-q/--config (merged with the ones given before the subcommand).
_SUB_DEST = {"verbose": "sub_verbose", "quiet": "sub_quiet", "config": "sub_config", "profile": "sub_profile"}


def _global_options(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    """-v, -q and --config: accepted before the subcommand and after it, as git and rclone users expect."""

    def dest(name: str) -> str:
        return _SUB_DEST[name] if sub else name

    group = parser.add_argument_group("global options (also accepted before the command)" if sub else None)
    group.add_argument(
        "-v", "--verbose", action="count", default=0, dest=dest("verbose"), help="more log output (repeatable)"
    )
    group.add_argument(
        "-q", "--quiet", action="count", default=0, dest=dest("quiet"), help="less log output (repeatable)"
    )
    group.add_argument(
        "--config",
        type=Path,
        default=None,
        dest=dest("config"),
        metavar="FILE",
        help="config file (default: $CONVSYNC_CONFIG, then ~/.config/convsync/config.yaml)",
    )
    group.add_argument(
        "--profile",
        default=None,
        dest=dest("profile"),
        metavar="NAME",
        help="which of the config's profiles (default: $CONVSYNC_PROFILE, or the only one)",
    )


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, description: str, examples: str
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=_EXAMPLES + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, sub=True)
    return parser


EXIT_CODES_TEXT = "\n".join(
    [
        "exit codes:",
        "  0   done",
        "  1   an unexpected error: a bug, please report it",
        "  2   wrong command-line arguments",
        "  3   status, doctor: the convsync daemon of this state directory stopped",
        "  65  the state database is corrupt or newer than this convsync (the message says: upgrade, or repair)",
        "  69  the mirror root has no .convsync-root marker (unmounted disk?)",
        "  72  the command needs an optional extra that is not installed (the message says how to add it)",
        "  73  another convsync run uses this state directory or this root",
        "  75  the server is unreachable or failing; trying again later may work",
        "  76  the server's TLS certificate cannot be trusted (the message names server.ca_bundle / truststore)",
        "  77  the API key is missing, wrong or lacks access",
        "  78  the configuration is invalid (or a redirect was refused); the message names the key and the fix",
    ]
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; also the source of the man page and the shell completions."""
    parser = argparse.ArgumentParser(
        prog="convsync",
        description="Mirror Sema4.ai Agent API conversations as local folders: prompt.txt in, transcript.md out.",
        epilog=EXIT_CODES_TEXT + "\n\nRun `convsync COMMAND --help` for a command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _global_options(parser, sub=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub,
        "init",
        "write a config file and create the mirror root",
        "Write a commented config file (mode 0600) and create the mirror root with its .convsync-root marker.\n"
        "The API key itself never goes into the config: name the variable or the private file that holds it.\n"
        "With --profile NAME, append that profile to the config instead (comments and edits kept; docs/config.md).",
        "  convsync init --url https://HOST/tenants/TENANT/api/v2\n"
        "  convsync init --url https://HOST/tenants/TENANT/api/v2 --api-key-file ~/.config/convsync/api-key\n"
        "  convsync --config work.yaml init --url https://HOST/tenants/WORK/api/v2 --root ~/Work\n"
        "  convsync --profile work init --url https://HOST/tenants/WORK/api/v2   # adds a profile, keeps the rest",
    )
    p.add_argument("--url", help="the Agent API base URL, e.g. https://host/tenants/T/api/v2")
    p.add_argument("--root", type=Path, help="the mirror root (default ~/Conversations)")
    p.add_argument("--api-key-env", default=None, metavar="VAR", help="environment variable holding the API key")
    p.add_argument(
        "--api-key-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="private file holding the API key (for services)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing config file")

    _command(
        sub,
        "run",
        "run the daemon in the foreground",
        "Mirror until stopped (Ctrl-C or SIGTERM); SIGHUP re-reads the config. Logs go to stderr.\n"
        "While it runs, `convsync sync`, `convsync status` and `convsync reload` talk to it (control socket).",
        "  convsync run\n  convsync run -v            # debug output\n  convsync --config work.yaml run",
    )

    _command(
        sub,
        "sync",
        "one full reconcile pass, then exit",
        "Bring the mirror root and the server in line once. When a daemon runs for this config, ask it for a\n"
        "full pass now and wait for it (progress on stderr); otherwise run the pass here, then exit.",
        "  convsync sync\n  convsync sync -q && ls ~/Conversations",
    )

    p = _command(
        sub,
        "status",
        "show every conversation's state",
        "Every conversation: folder, id, state, queued prompts and uploads, transfers, last error.\n"
        "Reads local state only: no API key or network needed. With a daemon running, its live figures come first.",
        "  convsync status\n  convsync status --json | jq '.conversations[] | select(.last_error)'",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    _command(
        sub,
        "repair",
        "rebuild an unusable state database, keeping every queued prompt",
        "Rebuild a state database that is corrupt or unreadable: the queued prompts and uploads are salvaged into\n"
        "a fresh database and the old files are kept aside. Reads local state only: no API key needed.",
        "  convsync repair\n  convsync --config work.yaml repair",
    )

    _command(
        sub,
        "reload",
        "make the running daemon re-read its config",
        "Ask the running daemon (found through its control socket) to re-read its config file, like SIGHUP\n"
        "or `systemctl --user reload convsync`. Exits 75 when no daemon runs for this config.",
        "  convsync reload\n  convsync --config work.yaml reload",
    )

    p = _command(
        sub,
        "doctor",
        "check config, key, server, root and limits; print fixes",
        "Check everything a daemon needs and print each problem with its fix. Checks that need something\n"
        "that failed (the server check needs the key) are named as skipped. Exit code: that of the first failure.",
        "  convsync doctor\n  convsync --config work.yaml doctor",
    )

    p = _command(
        sub,
        "service",
        "install or remove the systemd user service",
        "Write the systemd user unit for this convsync (and enable and start it), or remove it. The first config\n"
        "without profiles gets convsync.service; a profile, or another config, gets its own instance of the\n"
        "template convsync@.service (convsync@NAME.service); installing never replaces another instance.",
        "  convsync service install\n  convsync service install --no-start\n"
        "  convsync --profile work service install     # convsync@work.service\n"
        "  convsync --profile work service uninstall",
    )
    p.add_argument("action", choices=["install", "uninstall"])
    p.add_argument("--no-start", action="store_true", help="write the unit but do not enable/start it")

    p = _command(
        sub,
        "demo",
        "run a scripted session against the built-in emulator",
        "Start the emulator on a free loopback port and a daemon on a demo folder, then play a short session.\n"
        "Needs the `emulator` extra.",
        "  convsync demo\n  convsync demo --keep --dir /tmp/demo",
    )
    p.add_argument("--keep", action="store_true", help="leave the emulator and daemon running afterwards")
    p.add_argument("--dir", type=Path, default=None, help="where to put the demo root (default: a temp dir)")

    p = _command(
        sub,
        "emulator",
        "serve the local emulator of the Agent API",
        "Serve a local emulator of the Agent API (docs/emulator.md). Needs the `emulator` extra.",
        "  convsync emulator\n  convsync emulator --port 9000 --data-dir /tmp/emu --seed-agents 'Sales,Ops'",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8750)
    p.add_argument("--api-key", default=None, help="the bearer key it accepts (default: any s4w_ key)")
    p.add_argument("--data-dir", type=Path, default=None, help="persist state here across restarts")
    p.add_argument("--no-parquet", action="store_true", help="answer 422 to output_format=parquet")
    p.add_argument("--page-size", type=int, default=0, help="paginate lists with next tokens (0 = off)")
    p.add_argument(
        "--next-form",
        choices=["token", "url", "path", "internal-url", "internal-path", "other-scheme"],
        default="token",
        help="how a page names the next one (docs/emulator.md)",
    )
    p.add_argument(
        "--auth",
        choices=["bearer", "snowflake", "none"],
        default="bearer",
        help="the key as a Bearer token, a Snowflake token, or no auth (a local agent server)",
    )
    p.add_argument("--null-collections", action="store_true", help="send empty collections as null")
    p.add_argument(
        "--list-updated-at",
        choices=["off", "on", "stale"],
        default="off",
        help="the conversations list carries updated_at: on (last message), stale (creation time only)",
    )
    p.add_argument("--delete-no-content", action="store_true", help="answer a conversation's DELETE with 204")
    p.add_argument(
        "--hostile-frame-names",
        choices=["encode", "fail"],
        default="encode",
        help="fail (500) on a Parquet frame whose name cannot be a header value, like the real server",
    )
    p.add_argument("--rate-limit", type=int, default=0, help="requests per window before 429 (0 = off)")
    p.add_argument("--seed-agents", default="Demo Agent", help="comma-separated agent names to create")

    p = _command(
        sub,
        "prompt",
        "write a prompt in your editor; it is sent when the editor exits",
        "Open $VISUAL (else $EDITOR, else vi) on an empty draft; when the editor exits with a non-empty draft, its\n"
        "text goes into DIR/prompt.txt in one step and convsync sends it (docs/editors.md). Waits up to 10 s for\n"
        "the daemon to take it. Exit 75 (draft kept) when prompt.txt still holds a prompt not sent yet.",
        "  convsync prompt ~/Conversations/'Demo Agent'/'My chat'\n  cd ~/Conversations/'Demo Agent'/'My chat' && "
        "EDITOR=nano convsync prompt",
    )
    p.add_argument("dir", nargs="?", type=Path, default=None, help="the conversation folder (default: here)")

    p = _command(
        sub,
        "cancel",
        "stop the reply that streams and take back queued prompts",
        "Create DIR/cancel (as `touch cancel` does): the daemon stops the reply that streams (the run is\n"
        "cancelled on the server) and moves prompts still queued into prompt.cancelled-<time>.txt.",
        "  convsync cancel ~/Conversations/'Demo Agent'/'My chat'",
    )
    p.add_argument("dir", nargs="?", type=Path, default=None, help="the conversation folder (default: here)")

    p = _command(
        sub,
        "completion",
        "print a shell completion script (bash, zsh, fish)",
        "Print the completion script for a shell, generated from this command line.",
        "  source <(convsync completion bash)\n"
        "  convsync completion bash > ~/.local/share/bash-completion/completions/convsync\n"
        "  convsync completion zsh > ~/.zfunc/_convsync\n"
        "  convsync completion fish > ~/.config/fish/completions/convsync.fish",
    )
    p.add_argument("shell", choices=["bash", "zsh", "fish"])

    _command(
        sub,
        "man",
        "print the manual page (roff)",
        "Print convsync(1), generated from this command line, in roff.",
        "  convsync man | man -l -\n  convsync man > ~/.local/share/man/man1/convsync.1",
    )
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("convsync")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse, then merge the global options given after the command into those given before it."""
    args = build_parser().parse_args(argv)
    args.verbose += getattr(args, "sub_verbose", 0)
    args.quiet += getattr(args, "sub_quiet", 0)
    if getattr(args, "sub_config", None) is not None:
        args.config = args.sub_config
    if getattr(args, "sub_profile", None) is not None:
        args.profile = args.sub_profile
    return args


_EMULATOR_MODULES = ("fastapi", "uvicorn", "sse_starlette", "python_multipart")


def _require_emulator_extra(command: str) -> None:
    from importlib.util import find_spec

    missing = [name for name in _EMULATOR_MODULES if find_spec(name) is None]
    if missing:
        raise errors.MissingExtra(
            f"{command} needs the `emulator` extra (missing: {', '.join(missing)}). Fix: "
            "pip install 'convsync[emulator]' (from a checkout: pip install '.[emulator]'; "
            "with pipx: pipx install --force '.[emulator]')"
        )


def _dispatch(args: argparse.Namespace) -> int:
    # Imports are local: each command loads only what it uses.
    if args.command == "completion":
        from convsync.completion import completion_script

        sys.stdout.write(completion_script(build_parser(), args.shell))
        return Exit.OK
    if args.command == "man":
        from convsync.manpage import man_page

        sys.stdout.write(man_page(build_parser(), _version()))
        return Exit.OK
    if args.command == "emulator":
        _require_emulator_extra("the emulator")
        from convsync.emulator.server import serve_from_args

        return serve_from_args(args)
    if args.command == "demo":
        _require_emulator_extra("the demo")
        from convsync.demo import run_demo

        return run_demo(keep=args.keep, directory=args.dir)

    from convsync.logs import setup_logging

    setup_logging(verbosity=args.verbose - args.quiet)
    if args.command == "prompt":
        from convsync.promptcmd import run_prompt

        return run_prompt(args.dir)
    if args.command == "cancel":
        from convsync.mirror.cancel import request

        print(f"convsync: asked to cancel ({request((args.dir or Path.cwd()).absolute())})")
        return Exit.OK
    if args.command == "init" and args.profile:
        from convsync.addprofile import add_profile

        return add_profile(
            args.config,
            args.profile,
            args.url,
            root=args.root,
            api_key_env=args.api_key_env,
            api_key_file=args.api_key_file,
        )
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
            return service.install(config_path=args.config, start=not args.no_start, profile=args.profile or "")
        return service.uninstall(args.config, profile=args.profile or "")
    if args.command == "doctor":
        from convsync.doctor import run_doctor

        return run_doctor(config_path=args.config)

    from convsync.config import load_config

    # Read-only commands read local state only: they need no API key (nor does `sync` that a daemon runs).
    config = load_config(args.config, read_key=args.command == "run")
    setup_logging(verbosity=args.verbose - args.quiet, level=config.log_level)
    logging.getLogger(__name__).debug(
        "convsync %s %s: config %s, key from the %s",
        _version(),
        args.command,
        config.config_file,
        config.api_key_source or "nowhere (not needed)",
    )
    if args.command == "run":
        from convsync.daemon import run_daemon

        return run_daemon(config, config_path=args.config)
    if args.command == "sync":
        return _sync(config, args.config, quiet=args.quiet > 0)
    if args.command == "reload":
        from convsync import control

        reply = control.request(paths.state_dir(config.state_dir), "reload", timeout=90)
        control.raise_for(reply)
        print("convsync: the daemon re-read its configuration")
        return Exit.OK
    if args.command == "repair":
        from convsync.repair import run_repair

        return run_repair(config)
    if args.command == "status":
        from convsync import control
        from convsync.statusreport import print_status

        try:
            live: dict[str, object] | None = control.request(paths.state_dir(config.state_dir), "status", timeout=5)
        except (errors.ConvsyncError, OSError, ValueError):  # no daemon, or one too busy to answer: files only
            live = None
        return print_status(config, as_json=args.json, live=live)
    raise AssertionError(f"unhandled command {args.command}")


def _sync(config: Config, config_path: Path | None, *, quiet: bool) -> int:
    """``convsync sync``: through the running daemon when there is one (it holds the key), else a pass of its own."""
    from convsync import control
    from convsync.config import load_config

    def progress(message: str) -> None:
        if not quiet:
            from convsync.printable import printable

            print(f"convsync: {printable(message)}", file=sys.stderr, flush=True)

    try:
        reply = control.request(
            paths.state_dir(config.state_dir), "sync", progress, timeout=control.PASS_TIMEOUT_SECONDS + 60
        )
    except errors.NotRunning:
        from convsync.daemon import sync_once

        return sync_once(load_config(config_path, require_key=True, profile=config.profile))
    control.raise_for(reply)
    logging.getLogger(__name__).info("sync done by the running daemon: %s", reply.get("summary", ""))
    return Exit.OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile is not None:
        import os

        # --profile NAME is $CONVSYNC_PROFILE=NAME for everything this command reads (a reload included).
        os.environ["CONVSYNC_PROFILE"] = args.profile
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return Exit.OK
    except BrokenPipeError as exc:
        if not _reader_gone():
            print(_message_for(exc), file=sys.stderr)
            return exit_code_for(exc)
        return Exit.OK
    except Exception as exc:
        print(_message_for(exc), file=sys.stderr)
        return exit_code_for(exc)


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader left (``convsync status | head``): nothing failed, and the rest of
    the output has nowhere to go. Then stdout becomes /dev/null, so the exit's flush does not fail again."""
    import os
    import select

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poller.poll(0)):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return True


if __name__ == "__main__":
    sys.exit(main())
