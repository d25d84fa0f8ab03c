"""One thin function per ``podium-runtime`` command, over ``runtime.api.Runtime``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from runtime.api import Runtime
from runtime.errors import ConfigError
from runtime.signals import parse_signal
from runtime.state import Status


def _runtime(args: argparse.Namespace) -> Runtime:
    return Runtime(root=Path(args.root), cgroup_parent=args.cgroup_parent,
                   systemd_cgroup=args.systemd_cgroup, warn=args.logger.warning)


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def cmd_spec(args: argparse.Namespace) -> int:
    from runtime.spec.default import default_config

    path = Path(args.bundle) / "config.json"
    if path.exists():
        raise ConfigError("", f"{path} already exists: remove it first")
    path.write_text(json.dumps(default_config(), indent=2) + "\n")
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    if args.no_pivot:
        raise ConfigError("", "--no-pivot is not supported: podium always uses pivot_root")
    _runtime(args).create_bundle(args.id, Path(args.bundle),
                                 pid_file=Path(args.pid_file) if args.pid_file else None,
                                 console_socket=_path(args.console_socket))
    return 0


def _path(arg: str | None) -> Path | None:
    return Path(arg) if arg else None


# runc's words, so callers that match on them keep working.
_DETACHED_TTY = "cannot allocate tty if podium-runtime will detach without setting console socket"


def cmd_start(args: argparse.Namespace) -> int:
    _runtime(args).start(args.id)
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    # runc's state carries an (empty) "owner" beside the spec's fields; callers that
    # decode runc's output expect the same keys.
    _print_json(_runtime(args).state(args.id).oci() | {"owner": ""})
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    _runtime(args).kill(args.id, parse_signal(args.signal), all_processes=args.all)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    _runtime(args).delete(args.id, force=args.force)
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    _runtime(args).pause(args.id)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    _runtime(args).resume(args.id)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from runtime.spec.convert import load_bundle

    rt = _runtime(args)
    bundle = Path(args.bundle)
    console_socket = _path(args.console_socket)
    if args.detach and console_socket is None:
        from runtime.shim import spawn_shim

        if load_bundle(bundle).config.process.terminal:
            raise ConfigError("process.terminal", _DETACHED_TTY)
        log_path = Path(args.log_path) if args.log_path else None
        state = spawn_shim(rt, args.id, bundle.resolve(), log_path)
        if args.pid_file:
            Path(args.pid_file).write_text(str(state.pid))
        return 0
    # Foreground: the container's init becomes our child once stage 1 exits. Detached
    # with a console socket, the caller owns the terminal and, like create, the init.
    import prctl

    if not args.detach:
        prctl.set_child_subreaper(1)
    rt.store.dir(args.id)  # reject a bad ID before reading anything
    converted = load_bundle(bundle)
    for warning in converted.warnings:
        args.logger.warning(warning)
    config = converted.config
    listener = None
    if config.process.terminal and console_socket is None:
        from runtime.terminal import ConsoleListener

        listener = ConsoleListener()
        console_socket = listener.path
    master = -1
    try:
        rt.create(args.id, config, bundle=bundle.resolve(), pid_file=_path(args.pid_file),
                  console_socket=console_socket)
        args.cool()  # the init is in its cgroup; the container may run for long
        try:
            if listener is not None:
                master = listener.receive()
            state = rt.start(args.id)
        except BaseException:
            rt.delete(args.id, force=True)
            raise
    finally:
        if listener is not None:
            listener.close()
    if args.detach:
        return 0
    code = _wait_forwarding_signals(state.pid, master)
    rt.delete(args.id, force=True)
    return code


def _wait_forwarding_signals(pid: int, master: int = -1) -> int:
    """Wait for ``pid``; signals sent to us go to it, as runc does in the foreground.
    With a terminal's ``master``, copy between it and our stdio meanwhile."""
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    if master >= 0:
        from runtime.terminal import relay

        try:
            status = relay(master, pid)
        finally:
            os.close(master)
    else:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
        else 128 + os.WTERMSIG(status)


def cmd_exec(args: argparse.Namespace) -> int:
    import prctl

    from runtime.cli.process import exec_process_from_args

    prctl.set_child_subreaper(1)
    rt = _runtime(args)
    process = exec_process_from_args(rt, args)
    console_socket = _path(args.console_socket)
    listener = None
    if process.terminal and console_socket is None:
        if args.detach:
            raise ConfigError("process.terminal", _DETACHED_TTY)
        from runtime.terminal import ConsoleListener

        listener = ConsoleListener()
        console_socket = listener.path
    master = -1
    try:
        pid = rt.exec(args.id, process, console_socket=console_socket)
        args.cool()  # the process is in the container's cgroups
        if listener is not None:
            try:
                master = listener.receive()
            except BaseException:
                os.kill(pid, signal.SIGKILL)
                raise
    finally:
        if listener is not None:
            listener.close()
    if args.pid_file:
        Path(args.pid_file).write_text(str(pid))
    if args.detach:
        return 0
    return _wait_forwarding_signals(pid, master)


def cmd_list(args: argparse.Namespace) -> int:
    states = _runtime(args).containers()
    if args.quiet:
        for s in states:
            print(s.id)
    elif args.format == "json":
        _print_json([s.oci() | {"owner": "root"} for s in states])
    else:
        print(f"{'ID':<24}{'PID':<10}{'STATUS':<10}{'BUNDLE':<40}{'CREATED':<32}")
        for s in states:
            pid = s.pid if s.status is not Status.STOPPED else 0
            print(f"{s.id:<24}{pid:<10}{s.status.value:<10}{s.bundle:<40}{s.created:<32}")
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    pids = _runtime(args).ps(args.id)
    if args.format == "json":
        _print_json(pids)
        return 0
    print(f"{'PID':>8}  CMD")
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        print(f"{pid:>8}  {cmdline.strip()}")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    while True:
        stats = rt.stats(args.id)
        _print_json({"type": "stats", "id": args.id, "data": stats._asdict()})
        sys.stdout.flush()
        if args.stats or rt.state(args.id).status is Status.STOPPED:
            return 0
        time.sleep(args.interval)


def cmd_features(args: argparse.Namespace) -> int:
    from runtime.cli.features import features

    _print_json(features())
    return 0
