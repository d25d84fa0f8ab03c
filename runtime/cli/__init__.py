"""``podium-runtime``: runc's command line over the runtime library.

Each command is one thin function in ``runtime.cli.commands``; this module only
parses arguments and turns the runtime's errors into one-line messages and exit
codes. Imports stay lazy so a command starts in a few milliseconds.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from runtime.cli.logging import Logger

VERSION = "0.1.0"


# Global options that take a value: the command is the first other word.
_VALUED = {"--root", "--log", "--log-format", "--cgroup-parent"}


def _command_of(argv: list[str]) -> str | None:
    """The command word in ``argv``, before argparse sees it (None if there is none)."""
    words = iter(argv)
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _terminal_columns() -> int:
    """The width help text wraps to, found as ``shutil.get_terminal_size`` finds it."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size().columns or 80
    except OSError:  # stdout is no terminal
        return 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, given its width: left to itself it imports shutil (with
    zlib, bz2 and lzma) to measure the terminal, ~2 ms of every command's start, as
    argparse makes a formatter for each ``add_argument``."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with a known ``command`` only that command's sub-parser is built
    (building all fifteen costs a command ~5 ms of its start)."""
    p = argparse.ArgumentParser(prog="podium-runtime", formatter_class=_HelpFormatter,
                                description="podium's OCI container runtime (runc's command line)")
    p.add_argument("--root", default="/run/podium/runtime", help="state directory")
    p.add_argument("--log", default=None, help="log file (default: stderr)")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--debug", action="store_true", help="log debug messages and tracebacks")
    p.add_argument("--systemd-cgroup", action="store_true",
                   help="read cgroupsPath as slice:prefix:name, mapped onto cgroupfs as "
                        "systemd lays it out (no systemd unit is made)")
    p.add_argument("--cgroup-parent", default="podium", help="parent of container cgroups")
    p.add_argument("-v", "--version", action="store_true", help="print the version")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help, add_arguments) in _COMMANDS.items():
        if command in _COMMANDS and name != command:
            continue
        c = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
        c.set_defaults(usage=c.format_usage)  # for "a container ID is required"
        add_arguments(c)
    return p


def _bundle(c: argparse.ArgumentParser) -> None:
    c.add_argument("--bundle", "-b", default=".")


def _only_id(c: argparse.ArgumentParser) -> None:
    c.add_argument("id", nargs="?", metavar="ID")


def _create(c: argparse.ArgumentParser) -> None:
    _bundle(c)
    c.add_argument("--pid-file", default=None)
    c.add_argument("--console-socket", default=None,
                   help="with process.terminal: send the pty's master to this unix socket")
    c.add_argument("--no-pivot", action="store_true")
    _only_id(c)


def _kill(c: argparse.ArgumentParser) -> None:
    c.add_argument("--all", "-a", action="store_true", help="signal every process in it")
    _only_id(c)
    c.add_argument("signal", nargs="?", default="TERM")


def _delete(c: argparse.ArgumentParser) -> None:
    c.add_argument("--force", "-f", action="store_true")
    _only_id(c)


def _run(c: argparse.ArgumentParser) -> None:
    _bundle(c)
    c.add_argument("--detach", "-d", action="store_true")
    c.add_argument("--pid-file", default=None)
    c.add_argument("--log-path", default=None, help="with --detach: CRI log file")
    c.add_argument("--console-socket", default=None,
                   help="with process.terminal: send the pty's master to this unix socket")
    _only_id(c)


def _exec(c: argparse.ArgumentParser) -> None:
    c.add_argument("--process", "-p", default=None, help="process.json")
    c.add_argument("--pid-file", default=None)
    c.add_argument("--detach", "-d", action="store_true")
    c.add_argument("--cwd", default=None)
    c.add_argument("--env", "-e", action="append", default=[])
    c.add_argument("--user", "-u", default=None)
    c.add_argument("--tty", "-t", action="store_true", help="give the process a terminal")
    c.add_argument("--console-socket", default=None,
                   help="with --tty: send the pty's master to this unix socket")
    _only_id(c)
    c.add_argument("args", nargs=argparse.REMAINDER)


def _list(c: argparse.ArgumentParser) -> None:
    c.add_argument("--format", "-f", choices=("table", "json"), default="table")
    c.add_argument("--quiet", "-q", action="store_true")


def _ps(c: argparse.ArgumentParser) -> None:
    c.add_argument("--format", "-f", choices=("table", "json"), default="table")
    _only_id(c)


def _events(c: argparse.ArgumentParser) -> None:
    c.add_argument("--stats", action="store_true")
    c.add_argument("--interval", type=float, default=5.0)
    _only_id(c)


def _nothing(c: argparse.ArgumentParser) -> None:
    pass


# name: (help, what it takes), in the order of the help text.
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "spec": ("write a new config.json in the current directory (or --bundle)", _bundle),
    "create": ("create a container, its init blocked until start", _create),
    "start": ("start a created container", _only_id),
    "state": ("print a container's OCI state as JSON", _only_id),
    "pause": ("freeze every process of a container", _only_id),
    "resume": ("thaw a paused container", _only_id),
    "kill": ("send a signal (default TERM) to a container's init", _kill),
    "delete": ("delete a stopped container (--force: kill it first)", _delete),
    "run": ("create and start a container; wait for it unless --detach", _run),
    "exec": ("run a process in a running container", _exec),
    "list": ("list containers", _list),
    "ps": ("list a container's processes", _ps),
    "events": ("print a container's events (with --stats: its stats once)", _events),
    "features": ("print the features this runtime supports (JSON)", _nothing),
}


# Commands that move a process into a container's cgroup.
MOVES_INTO_CGROUP = {"create", "run", "exec"}
NEEDS_ID = {"create", "start", "state", "pause", "resume", "kill", "delete", "run", "exec",
            "ps", "events"}


def main(argv: list[str] | None = None) -> int:
    # Start-up (the parser, then the modules a command imports) allocates tens of
    # thousands of objects and frees hardly any, so the cyclic collector would walk
    # them again and again: ~2 ms of a command. It is off until the command's modules
    # are loaded; what start-up made is then frozen out of its reach, which also keeps
    # it from writing to the pages a forked container init shares with this process.
    gc.disable()
    try:
        return _main(argv)
    finally:  # as it was, for a caller in the same process (a test)
        gc.unfreeze()
        gc.enable()


def _main(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else argv
    parser = _parser(_command_of(words))
    args = parser.parse_args(words)
    log = Logger(args.log, args.log_format, args.debug)
    if args.version:
        from runtime.spec.default import OCI_VERSION
        print(f"podium-runtime version {VERSION}\nspec: {OCI_VERSION}")
        return 0
    if args.command is None:
        parser.print_usage(sys.stderr)
        return 2
    if args.command in NEEDS_ID and args.id is None:
        # An empty ID ("") goes on to the runtime, which says why it is invalid.
        sys.stderr.write(args.usage())
        sys.stderr.write(f"podium-runtime {args.command}: a container ID is required\n")
        return 2
    warmer = None
    if args.command in MOVES_INTO_CGROUP:
        from runtime.cli.warm import CgroupWarmer

        warmer = CgroupWarmer.start()  # before the imports below: see warm.py
    from runtime.cli import commands
    from runtime.errors import RuntimeError_

    gc.freeze()  # start-up is over: see main
    gc.enable()
    args.logger = log
    args.cool = warmer.stop if warmer is not None else lambda: None
    try:
        return int(getattr(commands, "cmd_" + args.command)(args) or 0)
    except RuntimeError_ as e:
        log.error(str(e))
        return 1
    except OSError as e:
        if args.debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        log.error(f"{e.strerror or e}{where}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        args.cool()


def command() -> NoReturn:
    """The ``podium-runtime`` executable: ``main``, then out without finalizing the
    interpreter. Tearing down the ~150 modules a command loaded costs it ~8 ms, and
    nothing needs it: the log file is closed after every line, and stdout and stderr
    are flushed here. An exception still ends the normal way, with its traceback."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nobody is left to read
            pass
    os._exit(code)


if __name__ == "__main__":
    command()
