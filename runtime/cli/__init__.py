"""``podium-runtime``: runc's command line over the runtime library.

Each command is one thin function in ``runtime.cli.commands``; this module only
parses arguments and turns the runtime's errors into one-line messages and exit
codes. Imports stay lazy so a command starts in a few milliseconds.
"""

from __future__ import annotations

import argparse
import sys

from runtime.cli.logging import Logger

VERSION = "0.1.0"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="podium-runtime",
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

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(usage=c.format_usage)  # for "a container ID is required"
        return c

    c = cmd("spec", "write a new config.json in the current directory (or --bundle)")
    c.add_argument("--bundle", "-b", default=".")
    c = cmd("create", "create a container, its init blocked until start")
    c.add_argument("--bundle", "-b", default=".")
    c.add_argument("--pid-file", default=None)
    c.add_argument("--console-socket", default=None,
                   help="with process.terminal: send the pty's master to this unix socket")
    c.add_argument("--no-pivot", action="store_true")
    c.add_argument("id", nargs="?", metavar="ID")
    for name, help in (("start", "start a created container"),
                       ("state", "print a container's OCI state as JSON"),
                       ("pause", "freeze every process of a container"),
                       ("resume", "thaw a paused container")):
        cmd(name, help).add_argument("id", nargs="?", metavar="ID")
    c = cmd("kill", "send a signal (default TERM) to a container's init")
    c.add_argument("--all", "-a", action="store_true", help="signal every process in it")
    c.add_argument("id", nargs="?", metavar="ID")
    c.add_argument("signal", nargs="?", default="TERM")
    c = cmd("delete", "delete a stopped container (--force: kill it first)")
    c.add_argument("--force", "-f", action="store_true")
    c.add_argument("id", nargs="?", metavar="ID")
    c = cmd("run", "create and start a container; wait for it unless --detach")
    c.add_argument("--bundle", "-b", default=".")
    c.add_argument("--detach", "-d", action="store_true")
    c.add_argument("--pid-file", default=None)
    c.add_argument("--log-path", default=None, help="with --detach: CRI log file")
    c.add_argument("--console-socket", default=None,
                   help="with process.terminal: send the pty's master to this unix socket")
    c.add_argument("id", nargs="?", metavar="ID")
    c = cmd("exec", "run a process in a running container")
    c.add_argument("--process", "-p", default=None, help="process.json")
    c.add_argument("--pid-file", default=None)
    c.add_argument("--detach", "-d", action="store_true")
    c.add_argument("--cwd", default=None)
    c.add_argument("--env", "-e", action="append", default=[])
    c.add_argument("--user", "-u", default=None)
    c.add_argument("--tty", "-t", action="store_true", help="give the process a terminal")
    c.add_argument("--console-socket", default=None,
                   help="with --tty: send the pty's master to this unix socket")
    c.add_argument("id", nargs="?", metavar="ID")
    c.add_argument("args", nargs=argparse.REMAINDER)
    c = cmd("list", "list containers")
    c.add_argument("--format", "-f", choices=("table", "json"), default="table")
    c.add_argument("--quiet", "-q", action="store_true")
    c = cmd("ps", "list a container's processes")
    c.add_argument("--format", "-f", choices=("table", "json"), default="table")
    c.add_argument("id", nargs="?", metavar="ID")
    c = cmd("events", "print a container's events (with --stats: its stats once)")
    c.add_argument("--stats", action="store_true")
    c.add_argument("--interval", type=float, default=5.0)
    c.add_argument("id", nargs="?", metavar="ID")
    cmd("features", "print the features this runtime supports (JSON)")
    return p


NEEDS_ID = {"create", "start", "state", "pause", "resume", "kill", "delete", "run", "exec",
            "ps", "events"}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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
    from runtime.cli import commands
    from runtime.errors import RuntimeError_

    args.logger = log
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


if __name__ == "__main__":
    sys.exit(main())
