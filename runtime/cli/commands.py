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
                   systemd_cgroup=args.systemd_cgroup)


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
    if args.console_socket:
        raise ConfigError("", "--console-socket is not supported yet")
    if args.no_pivot:
        raise ConfigError("", "--no-pivot is not supported: podium always uses pivot_root")
    _runtime(args).create_bundle(args.id, Path(args.bundle),
                                 pid_file=Path(args.pid_file) if args.pid_file else None,
                                 on_warning=args.logger.warning)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    _runtime(args).start(args.id)
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    _print_json(_runtime(args).state(args.id).oci())
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
    rt = _runtime(args)
    bundle = Path(args.bundle)
    if args.detach:
        from runtime.shim import spawn_shim

        log_path = Path(args.log_path) if args.log_path else None
        state = spawn_shim(rt, args.id, bundle.resolve(), log_path)
        if args.pid_file:
            Path(args.pid_file).write_text(str(state.pid))
        return 0
    # Foreground: the container's init becomes our child once stage 1 exits.
    import prctl

    prctl.set_child_subreaper(1)
    rt.create_bundle(args.id, bundle, pid_file=Path(args.pid_file) if args.pid_file else None,
                     on_warning=args.logger.warning)
    try:
        state = rt.start(args.id)
    except BaseException:
        rt.delete(args.id, force=True)
        raise
    code = _wait_forwarding_signals(state.pid)
    rt.delete(args.id, force=True)
    return code


def _wait_forwarding_signals(pid: int) -> int:
    """Wait for ``pid``; signals sent to us go to it, as runc does in the foreground."""
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
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
    pid = rt.exec(args.id, process)
    if args.pid_file:
        Path(args.pid_file).write_text(str(pid))
    if args.detach:
        return 0
    return _wait_forwarding_signals(pid)


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
