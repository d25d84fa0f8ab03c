"""``podium``: the command line people type.

This module only parses arguments and turns errors into one line and exit code 1;
each command group lives in its own module (``image.py``: ``podium image …``),
which adds its parsers in ``register`` and does its work in one thin ``cmd_*``
function per command. Group modules import what a command needs inside that
command, so ``podium --help`` stays quick.

Exit codes: 0 done, 1 the command failed (one line on stderr; ``--debug`` adds the
traceback), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType

VERSION = "0.1.0"

# Command groups in the order ``--help`` lists them: name → module under client.cli.
GROUPS = {"image": "image", "up": "up"}  # up.py registers both up and down
# The cluster verbs, kubectl's: each module registers several top-level commands.
GROUPS.update({"objects": "objects", "show": "show", "workloads": "workloads",
               "top": "top", "cluster": "cluster", "completion": "completion"})

EPILOG = """examples:
  podium apply -f web.yaml
  podium get pods -o wide
  podium describe pod web-6dr2k
  podium top pods -A
  podium image import rootfs.tar.gz busybox:latest
  podium image pull registry.example:5000/team/app:1.2
  podium image ls
  source <(podium completion bash)
"""


class Parser(argparse.ArgumentParser):
    """argparse whose errors name the full command (``podium image pull: …``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def common_options() -> argparse.ArgumentParser:
    """Options every command takes, also after its name (``podium image ls --debug``)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks on errors")
    p.add_argument("--no-color", action="store_true", default=argparse.SUPPRESS,
                   help="no colour even on a terminal (also: NO_COLOR=1)")
    return p


def build_parser() -> Parser:
    p = Parser(prog="podium", description="podium: run containers on your own machines",
               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
               parents=[common_options(), _group("image").store_option()])
    p.set_defaults(debug=False, no_color=False, func=None)
    p.add_argument("--version", action="version", version=f"podium {VERSION}")
    p.add_argument("--server", "-s", metavar="ADDR", default=argparse.SUPPRESS,
                   help="the scheduler, also accepted after the command")
    p.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                   help="the namespace, also accepted after the command")
    sub = p.add_subparsers(dest="group", metavar="COMMAND", parser_class=Parser)
    for name in GROUPS:
        _group(name).register(sub, common_options())
    return p


def _group(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{GROUPS[name]}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, sys.argv[1:] if argv is None else argv)
    func: Callable[[argparse.Namespace], int | None] | None = args.func
    if func is None:
        # A group named without a command prints that group's help (``podium image``).
        usage = getattr(args, "group_usage", parser.format_usage)
        sys.stderr.write(usage())
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        sys.stderr.write("podium: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (``podium logs POD | head``): stop quietly, as a
        # pipeline expects; stdout is pointed at /dev/null so the exit's flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UsageError as e:
        sys.stderr.write(f"podium: {e}\n")
        return 2
    except Exception as e:  # every failure becomes one line; --debug shows where
        if args.debug:
            raise
        # The scheduler's refusals read as kubectl's ("Error from server (NotFound): …").
        from client.api import ServerError

        prefix = "" if isinstance(e, ServerError) else "podium: "
        sys.stderr.write(f"{prefix}{one_line(e)}\n")
        return 1


def _parse(parser: Parser, argv: list[str]) -> argparse.Namespace:
    """Arguments after the first ``--`` go to a command that takes them
    (``podium exec POD --server X -- CMD…``) as ``args.after_dashes``: argparse
    alone cannot tell them from the options written before them."""
    if "--" not in argv:
        return parser.parse_args(argv)
    cut = argv.index("--")
    args = parser.parse_args(argv[:cut])
    if not hasattr(args, "after_dashes"):
        parser.error(f"unrecognized arguments: {' '.join(argv[cut:])}")
    args.after_dashes = argv[cut + 1:]
    return args


def one_line(e: BaseException) -> str:
    """An exception as one line: podium's own messages as they are, OS errors with the path."""
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror}{where}"
    text = " ".join(str(e).split()) or type(e).__name__
    from client.api import ClientError
    from proto.kube import ManifestError
    from runtime.images import ImageError

    own = ImageError | UsageError | ClientError | ManifestError | RuntimeError | TimeoutError
    return text if isinstance(e, own) else f"{type(e).__name__}: {text}"


class UsageError(Exception):
    """Arguments that parse but do not fit together; the message says which."""


if __name__ == "__main__":
    sys.exit(main())
