"""The process ``exec`` runs: from ``--process process.json`` or from arguments over
the container's own process settings (env, cwd, user and capabilities of its init)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from runtime.api import Runtime
from runtime.errors import ConfigError
from runtime.security import lookup_user
from runtime.spec.convert import convert_process, load_bundle
from runtime.spec.model import Process


def exec_process_from_args(rt: Runtime, args: argparse.Namespace) -> Process:
    state = rt.state(args.id)
    base = load_bundle(Path(state.bundle)).config.process if state.bundle else Process(args=("sh",))
    if args.process:
        try:
            data = json.loads(Path(args.process).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError("", f"--process {args.process}: {e}") from None
        process = convert_process(data)
    else:
        argv = args.args[1:] if args.args[:1] == ["--"] else args.args
        if not argv:
            raise ConfigError("", "exec: give a command to run, or --process FILE")
        process = base._replace(args=tuple(argv), terminal=args.tty)
    if args.cwd:
        process = process._replace(cwd=args.cwd)
    if args.env:
        process = process._replace(env=process.env + tuple(args.env))
    if args.user:
        process = process._replace(user=lookup_user(Path(state.rootfs), args.user))
    if args.tty:
        process = process._replace(terminal=True)
    if not process.args:
        raise ConfigError("process.args", "must name the program to run")
    return process
