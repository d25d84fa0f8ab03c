"""``podium apply``, ``create`` and ``delete``: manifests in, objects out.

Manifests are all read and converted before anything is sent, and every object
passes a dry run before the first is stored, so a file with one bad document
changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.cli.cluster import add, connect, namespace, server_options

if TYPE_CHECKING:
    from proto.kube import Converted

_SUFFIXES = (".yaml", ".yml", ".json")

EXAMPLES_APPLY = """  podium apply -f web.yaml
  podium apply -f manifests/
  cat web.yaml | podium apply -f -
"""
EXAMPLES_CREATE = "  podium create -f pod.yaml\n"
EXAMPLES_DELETE = """  podium delete -f web.yaml
  podium delete pod web-6dr2k
  podium delete deployment web -n team
"""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    for name, help, examples, func in (
            ("apply", "create or update objects from manifests (idempotent)", EXAMPLES_APPLY,
             cmd_apply),
            ("create", "create objects from manifests (fails if they exist)", EXAMPLES_CREATE,
             cmd_create)):
        p = add(sub, common, name, help, examples, server_options())
        p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                       help="a YAML/JSON file, a directory of them, or - for stdin")
        p.add_argument("--dry-run", action="store_true", help="validate only, store nothing")
        p.set_defaults(func=func)
    p = add(sub, common, "delete", "delete objects named by manifests or by kind and name",
            EXAMPLES_DELETE, server_options())
    p.add_argument("-f", "--filename", action="append", metavar="FILE",
                   help="delete what these manifests name")
    p.add_argument("kind", nargs="?", help="pods, deployments, services …")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--ignore-not-found", action="store_true",
                   help="say nothing about objects that are already gone")
    p.add_argument("--grace-period", type=int, default=None, metavar="SECONDS",
                   help="pods: seconds to stop (0 with --force: at once)")
    p.add_argument("--force", action="store_true", help="pods: do not wait for the node")
    p.set_defaults(func=cmd_delete)


def _files(names: list[str]) -> list[tuple[str, str]]:
    """(name, text) of each manifest file; directories give their .yaml/.yml/.json."""
    out = []
    for name in names:
        if name == "-":
            out.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(2, "no .yaml, .yml or .json files in", name)
            out.extend((str(p), p.read_text()) for p in found)
        else:
            out.append((name, path.read_text()))
    return out


def load(names: list[str], default_namespace: str | None) -> list[Converted]:
    """Every object of every file, namespaced to ``-n`` where the manifest names none."""
    from client.api import kind_of, unwrap
    from proto.kube import load_objects

    objects = []
    for filename, text in _files(names):
        for converted in load_objects(text, Path(filename).name):
            meta = unwrap(converted.object).metadata
            if kind_of(converted.object).namespaced and not meta.namespace:
                meta.namespace = default_namespace or "default"
            objects.append(converted)
    return objects


def _warn(warnings: Any) -> None:
    for warning in warnings:
        sys.stderr.write(f"Warning: {warning}\n")


def _send(args: argparse.Namespace, create: bool) -> int:
    from client.api import ref

    objects = load(args.filename, getattr(args, "namespace", None))
    for converted in objects:
        _warn(converted.warnings)
    with connect(args) as c:
        for converted in objects:  # all or none: every object must pass first
            if create:
                c.create(converted.object, dry_run=True)
            else:
                c.apply(converted.object, dry_run=True)
        suffix = " (dry run)" if args.dry_run else ""
        if args.dry_run:
            for converted in objects:
                sys.stdout.write(f"{ref(converted.object)} valid{suffix}\n")
            return 0
        # Services go last, so the warnings about where their traffic goes see the
        # Deployments of the same apply; what was done is still told in file order.
        done: dict[int, tuple[str, tuple[str, ...]]] = {}
        try:
            for i in sorted(range(len(objects)), key=lambda i: _is_service(objects[i])):
                if create:
                    c.create(objects[i].object)
                    done[i] = ("created", ())
                else:
                    result = c.apply(objects[i].object)
                    done[i] = (result.action, result.warnings)
        finally:
            for i, converted in enumerate(objects):
                if i in done:
                    _warn(done[i][1])
                    sys.stdout.write(f"{ref(converted.object)} {done[i][0]}\n")
    return 0


def _is_service(converted: Converted) -> bool:
    from client.api import kind_of

    return kind_of(converted.object).kind == "Service"


def cmd_apply(args: argparse.Namespace) -> int:
    return _send(args, create=False)


def cmd_create(args: argparse.Namespace) -> int:
    return _send(args, create=True)


def cmd_delete(args: argparse.Namespace) -> int:
    from client.api import NotFound, kind_info, kind_of, ref, unwrap
    from client.cli import UsageError

    targets: list[tuple[str, str, str]] = []  # kind, namespace, name
    if args.filename:
        if args.kind:
            raise UsageError("delete: give either -f FILE or KIND NAME…, not both")
        for converted in load(args.filename, getattr(args, "namespace", None)):
            meta = unwrap(converted.object).metadata
            targets.append((kind_of(converted.object).kind, meta.namespace, meta.name))
    else:
        if not args.kind:
            raise UsageError("delete: say what to delete: -f FILE or KIND NAME…")
        kind, names = args.kind, list(args.names)
        if "/" in kind:  # kubectl's pod/web form, possibly several
            names = [kind, *names]
            kind = ""
        for name in names:
            k, _, n = name.rpartition("/")
            if not n or not (k or kind):
                raise UsageError(f"delete: {name!r} is not NAME or KIND/NAME")
            info = kind_info(k or kind)
            targets.append((info.kind, namespace(args), n))
        if not targets:
            raise UsageError(f"delete: name the {args.kind} to delete")
    failed = 0
    with connect(args) as c:
        for kind, ns, name in targets:
            try:
                gone = c.delete(kind, name, ns, grace_period=args.grace_period, force=args.force)
            except NotFound as e:
                if not args.ignore_not_found:
                    sys.stderr.write(f"{e}\n")
                    failed = 1
                continue
            sys.stdout.write(f"{ref(gone)} deleted\n")
    return failed
