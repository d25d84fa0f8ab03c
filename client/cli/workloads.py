"""``podium logs``, ``exec``, ``scale`` and ``rollout status|history|undo``."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from client.cli.cluster import add, connect, namespace, server_options

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"

EXAMPLES_LOGS = """  podium logs web-6dr2k
  podium logs web-6dr2k -c sidecar --tail 20 -f
  podium logs web-6dr2k -p
"""
EXAMPLES_EXEC = """  podium exec web-6dr2k -- cat /etc/hostname
  podium exec -it web-6dr2k -- sh
"""
EXAMPLES_SCALE = "  podium scale deployment/web --replicas 5\n"
EXAMPLES_ROLLOUT = """  podium rollout status deployment/web
  podium rollout history deployment/web
  podium rollout undo deployment/web --to-revision 2
"""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add(sub, common, "logs", "print a container's output", EXAMPLES_LOGS, server_options())
    p.add_argument("pod", metavar="POD")
    p.add_argument("-c", "--container", default="")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    p.add_argument("--tail", type=int, default=None, metavar="N",
                   help="only the last N lines (-1: all)")
    p.add_argument("-p", "--previous", action="store_true",
                   help="the previous instance of a restarted container")
    p.set_defaults(func=cmd_logs)

    p = add(sub, common, "exec", "run a command in a running container", EXAMPLES_EXEC,
            server_options())
    p.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the command")
    p.add_argument("-t", "--tty", action="store_true", help="run it under a terminal")
    p.add_argument("-c", "--container", default="")
    p.add_argument("pod", metavar="POD")
    p.add_argument("command", nargs="*", metavar="-- COMMAND",
                   help="the command and its arguments, after --")
    p.set_defaults(func=cmd_exec, after_dashes=[])

    p = add(sub, common, "scale", "set a deployment's or replica set's replicas",
            EXAMPLES_SCALE, server_options())
    p.add_argument("target", metavar="KIND/NAME")
    p.add_argument("name", nargs="?", help="the name, when KIND is given alone")
    p.add_argument("--replicas", type=int, required=True)
    p.set_defaults(func=cmd_scale)

    p = add(sub, common, "rollout", "a deployment's rollout: status, history, undo",
            EXAMPLES_ROLLOUT, server_options())
    p.add_argument("action", choices=("status", "history", "undo"))
    p.add_argument("target", metavar="deployment/NAME")
    p.add_argument("name", nargs="?", help="the name, when KIND is given alone")
    p.add_argument("--to-revision", type=int, default=0, help="undo: this revision")
    p.add_argument("--timeout", type=duration, default=0, metavar="DURATION",
                   help="status: give up after this long (0: wait)")
    p.add_argument("-w", "--watch", default="true", choices=("true", "false"),
                   help="status: wait for the rollout to finish (default true)")
    p.set_defaults(func=cmd_rollout)


def _target(args: argparse.Namespace, verb: str) -> tuple[str, str]:
    from client.api import kind_info
    from client.cli import UsageError

    kind, _, name = args.target.partition("/")
    if not name:
        name = args.name or ""
    if not name:
        raise UsageError(f"{verb}: name the object as KIND/NAME (deployment/web)")
    return kind_info(kind).kind, name


def cmd_logs(args: argparse.Namespace) -> int:
    with connect(args) as c:
        for chunk in c.logs(args.pod, namespace(args), container=args.container,
                            follow=args.follow, tail=args.tail, previous=args.previous):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from client.cli import UsageError
    from client.cli.terminal import run_exec

    command = [*args.command, *args.after_dashes]
    if not command:
        raise UsageError("exec: give the command after --: podium exec POD -- CMD…")
    with connect(args) as c:
        return run_exec(c, args.pod, namespace(args), args.container, command,
                        stdin=args.stdin, tty=args.tty)


def cmd_scale(args: argparse.Namespace) -> int:
    from client.api import ref

    kind, name = _target(args, "scale")
    with connect(args) as c:
        obj = c.scale(kind, name, args.replicas, namespace(args))
    sys.stdout.write(f"{ref(obj)} scaled\n")
    return 0


# --- rollout: revisions are the deployment's ReplicaSets ---------------------


def history(deployment: Any, replica_sets: list[Any]) -> list[tuple[int, Any]]:
    """(revision, ReplicaSet) of each ReplicaSet the deployment controls, oldest first."""
    uid = deployment.metadata.uid
    out = []
    for rs in replica_sets:
        if not any(o.uid == uid and o.controller for o in rs.metadata.owner_references):
            continue
        value = rs.metadata.annotations.get(REVISION, "")
        if value.isdigit():
            out.append((int(value), rs))
    return sorted(out, key=lambda item: item[0])


def status_line(d: Any) -> tuple[bool, str]:
    """Whether the rollout finished, and kubectl's sentence for where it is."""
    name, st = d.metadata.name, d.status
    want = d.spec.replicas if d.spec.HasField("replicas") else 1
    if d.metadata.generation > st.observed_generation:
        return False, "Waiting for deployment spec update to be observed..."
    for cond in st.conditions:
        if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
            raise RuntimeError(f'deployment "{name}" exceeded its progress deadline')
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if st.updated_replicas < want:
        return False, (f"{waiting}{st.updated_replicas} out of {want} new replicas "
                       "have been updated...")
    if st.replicas > st.updated_replicas:
        return False, (f"{waiting}{st.replicas - st.updated_replicas} old replicas "
                       "are pending termination...")
    if st.available_replicas < st.updated_replicas:
        return False, (f"{waiting}{st.available_replicas} of {st.updated_replicas} "
                       "updated replicas are available...")
    return True, f'deployment "{name}" successfully rolled out'


def cmd_rollout(args: argparse.Namespace) -> int:
    from client.cli import UsageError

    kind, name = _target(args, "rollout")
    if kind != "Deployment":
        raise UsageError(f"rollout: only deployments have rollouts, not {kind}")
    ns = namespace(args)
    with connect(args) as c:
        if args.action == "status":
            return _status(c, name, ns, args.timeout, args.watch == "true")
        if args.action == "history":
            d = c.get("Deployment", name, ns)
            sys.stdout.write(f"deployment.apps/{name}\nREVISION  IMAGES\n")
            for revision, rs in history(d, c.list("ReplicaSet", ns)):
                images = ",".join(x.image for x in rs.spec.template.spec.containers)
                sys.stdout.write(f"{revision:<10}{images}\n")
            return 0
        # The controllers write the deployment's status all the time: an update
        # can lose the race (ABORTED), and is then made again on a fresh read.
        import grpc

        from client.api import ServerError

        for attempt in range(5):
            d = c.get("Deployment", name, ns)
            try:
                return _undo(c, d, history(d, c.list("ReplicaSet", ns)), args.to_revision)
            except ServerError as e:
                if e.code != grpc.StatusCode.ABORTED or attempt == 4:
                    raise
        raise AssertionError("unreachable")


def duration(text: str) -> float:
    """kubectl's durations: ``90``, ``90s``, ``2m``, ``1h``, ``1m30s``."""
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?",
                         text.strip())
    if not text.strip() or parts is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 2m, 1h)")
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def _status(c: Any, name: str, ns: str, timeout: float, wait: bool) -> int:
    """The result line on stdout; while waiting, the progress on stderr, and only
    on a terminal, so a script reads one line."""
    from client.cli.style import StatusLine

    deadline = time.monotonic() + timeout if timeout else None
    progress = StatusLine()
    try:
        while True:
            done, line = status_line(c.get("Deployment", name, ns))
            if done or not wait:
                progress.clear()
                sys.stdout.write(line + "\n")
                return 0 if done else 1
            progress.show(line)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f'deployment "{name}" did not finish rolling out '
                                   f"within {timeout:g}s: {line}")
            time.sleep(0.5)
    finally:
        progress.clear()


def _undo(c: Any, d: Any, revisions: list[tuple[int, Any]], to_revision: int) -> int:
    name = d.metadata.name
    if to_revision:
        chosen = [rs for r, rs in revisions if r == to_revision]
        if not chosen:
            raise RuntimeError(f'unable to find revision {to_revision} of deployment "{name}"')
        rs = chosen[0]
    elif len(revisions) < 2:
        raise RuntimeError(f'no previous revision to roll back to for deployment "{name}"')
    else:
        rs = revisions[-2][1]
    template = type(d.spec.template)()
    template.CopyFrom(rs.spec.template)
    template.metadata.labels.pop(HASH_LABEL, None)
    if template == d.spec.template:
        sys.stdout.write(f"deployment.apps/{name} skipped rollback (current template already "
                         "matches)\n")
        return 0
    d.spec.template.CopyFrom(template)
    c.update(d)
    sys.stdout.write(f"deployment.apps/{name} rolled back\n")
    return 0
