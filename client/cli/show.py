"""``podium get`` and ``podium describe``: objects as tables, JSON, YAML or prose."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from client.cli.cluster import add, connect, namespace, server_options, short_age

EXAMPLES_GET = """  podium get pods
  podium get pods -o wide -A
  podium get deploy web -o yaml
  podium get pods -l app=web -w
  podium get nodes
"""
EXAMPLES_DESCRIBE = """  podium describe pod web-6dr2k
  podium describe deployment web -n team
"""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = add(sub, common, "get", "list objects as a table, or print them as JSON/YAML",
            EXAMPLES_GET, server_options(all_namespaces=True))
    p.add_argument("kind", metavar="KIND",
                   help="pods (po), deployments (deploy), replicasets (rs), services (svc), "
                        "endpoints (ep), nodes (no), events (ev), namespaces (ns)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-o", "--output", choices=("wide", "json", "yaml", "name"), default=None)
    p.add_argument("-l", "--selector", default="", metavar="SELECTOR",
                   help="label selector: app=web,tier!=db")
    p.add_argument("--field-selector", default="", metavar="SELECTOR",
                   help="spec.nodeName=node-1,status.phase=Running")
    p.add_argument("-w", "--watch", action="store_true", help="then print changes as they come")
    p.set_defaults(func=cmd_get)
    p = add(sub, common, "describe", "an object's fields, conditions and events, in prose",
            EXAMPLES_DESCRIBE, server_options())
    p.add_argument("kind", metavar="KIND")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(func=cmd_describe)


# --- tables --------------------------------------------------------------------


def _ready(conditions: Sequence[Any], kind: str = "Ready") -> bool:
    return any(c.type == kind and c.status == "True" for c in conditions)


def pod_status(pod: Any) -> str:
    """What kubectl's STATUS column says: a waiting or terminated reason over the phase."""
    if pod.metadata.HasField("deletion_timestamp"):
        return "Terminating"
    status = pod.status.reason or pod.status.phase or "Pending"
    for cs in pod.status.container_statuses:
        state = cs.state.WhichOneof("state")
        if state == "waiting" and cs.state.waiting.reason:
            status = cs.state.waiting.reason
        elif state == "terminated" and cs.state.terminated.reason and status == "Running":
            status = cs.state.terminated.reason
    return status


def _pod_row(pod: Any, wide: bool) -> list[str]:
    statuses = pod.status.container_statuses
    ready = sum(1 for cs in statuses if cs.ready)
    row = [pod.metadata.name, f"{ready}/{len(pod.spec.containers)}", pod_status(pod),
           str(sum(cs.restart_count for cs in statuses)),
           short_age(pod.metadata.creation_timestamp)]
    if wide:
        row += [pod.status.pod_ip or "<none>", pod.spec.node_name or "<none>"]
    return row


def _deployment_row(d: Any, wide: bool) -> list[str]:
    want = d.spec.replicas if d.spec.HasField("replicas") else 1
    return [d.metadata.name, f"{d.status.ready_replicas}/{want}", str(d.status.updated_replicas),
            str(d.status.available_replicas), short_age(d.metadata.creation_timestamp)]


def _replica_set_row(rs: Any, wide: bool) -> list[str]:
    want = rs.spec.replicas if rs.spec.HasField("replicas") else 1
    return [rs.metadata.name, str(want), str(rs.status.replicas), str(rs.status.ready_replicas),
            short_age(rs.metadata.creation_timestamp)]


def _port(p: Any) -> str:
    node = f":{p.node_port}" if p.node_port else ""
    return f"{p.port}{node}/{p.protocol or 'TCP'}"


def _external(s: Any) -> str:
    """kubectl's EXTERNAL-IP: the load balancer's ingress (pending until the nodes
    are known) and any externalIPs."""
    addresses = [i.ip or i.hostname for i in s.status.load_balancer.ingress]
    addresses += list(s.spec.external_ips)
    if addresses:
        return ",".join(addresses)
    return "<pending>" if s.spec.type == "LoadBalancer" else "<none>"


def _service_row(s: Any, wide: bool) -> list[str]:
    ports = ",".join(_port(p) for p in s.spec.ports) or "<none>"
    row = [s.metadata.name, s.spec.type or "ClusterIP", s.spec.cluster_ip or "<none>",
           _external(s), ports,
           short_age(s.metadata.creation_timestamp)]
    if wide:
        row.append(",".join(f"{k}={v}" for k, v in sorted(s.spec.selector.items())) or "<none>")
    return row


def _endpoints_row(e: Any, wide: bool) -> list[str]:
    found = [f"{a.ip}:{p.port}" for s in e.subsets for a in s.addresses for p in s.ports]
    shown = ",".join(found[:3]) + (f" + {len(found) - 3} more..." if len(found) > 3 else "")
    return [e.metadata.name, shown or "<none>", short_age(e.metadata.creation_timestamp)]


def _node_row(n: Any, wide: bool) -> list[str]:
    status = "Ready" if _ready(n.status.conditions) else "NotReady"
    if n.spec.unschedulable:
        status += ",SchedulingDisabled"
    roles = ",".join(sorted(k.split("/", 1)[1] for k in n.metadata.labels
                            if k.startswith("node-role.kubernetes.io/"))) or "<none>"
    row = [n.metadata.name, status, roles, short_age(n.metadata.creation_timestamp),
           n.status.node_info.podium_version or "<none>"]
    if wide:
        row.append(next((a.address for a in n.status.addresses if a.type == "InternalIP"),
                        "<none>"))
    return row


def _event_row(e: Any, wide: bool) -> list[str]:
    when = e.last_timestamp if e.last_timestamp.seconds else e.metadata.creation_timestamp
    obj = e.involved_object
    return [short_age(when), e.type or "Normal", e.reason, f"{obj.kind.lower()}/{obj.name}",
            " ".join(e.message.split())]


def _namespace_row(ns: Any, wide: bool) -> list[str]:
    return [ns.metadata.name, ns.status.phase or "Active",
            short_age(ns.metadata.creation_timestamp)]


Row = Callable[[Any, bool], list[str]]
# Kind -> (columns, wide extra columns, row function).
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], Row]] = {
    "Pod": (("NAME", "READY", "STATUS", "RESTARTS", "AGE"), ("IP", "NODE"), _pod_row),
    "Deployment": (("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"), (), _deployment_row),
    "ReplicaSet": (("NAME", "DESIRED", "CURRENT", "READY", "AGE"), (), _replica_set_row),
    "Service": (("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"), ("SELECTOR",),
                _service_row),
    "Endpoints": (("NAME", "ENDPOINTS", "AGE"), (), _endpoints_row),
    "Node": (("NAME", "STATUS", "ROLES", "AGE", "VERSION"), ("INTERNAL-IP",), _node_row),
    "Event": (("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"), (), _event_row),
    "Namespace": (("NAME", "STATUS", "AGE"), (), _namespace_row),
}


def _headers(kind: str, wide: bool, with_namespace: bool) -> list[str]:
    columns, extra, _ = TABLES[kind]
    return [*(["NAMESPACE"] if with_namespace else []), *columns, *(extra if wide else ())]


def _row(kind: str, obj: Any, wide: bool, with_namespace: bool) -> list[str]:
    cells = TABLES[kind][2](obj, wide)
    return [obj.metadata.namespace, *cells] if with_namespace else cells


def _print(objs: list[Any], kind: str, args: argparse.Namespace, with_namespace: bool) -> None:
    from client.api import ref
    from client.cli.output import table
    from client.cli.style import status_painter
    from proto.kube import to_manifest

    if args.output == "name":
        for obj in objs:
            sys.stdout.write(f"{ref(obj)}\n")
        return
    if args.output in ("json", "yaml"):
        docs = [to_manifest(obj) for obj in objs]
        doc = docs[0] if len(docs) == 1 and args.names else {
            "apiVersion": "v1", "kind": "List", "items": docs}
        if args.output == "json":
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            import yaml

            sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
        return
    wide = args.output == "wide"
    painter = status_painter(args)
    table(_headers(kind, wide, with_namespace),
          [_row(kind, obj, wide, with_namespace) for obj in objs],
          paint={"STATUS": painter} if painter is not None else None)


def cmd_get(args: argparse.Namespace) -> int:
    from client.api import NotFound, kind_info

    info = kind_info(args.kind)
    ns = "" if args.all_namespaces or not info.namespaced else namespace(args)
    with_namespace = bool(args.all_namespaces and info.namespaced)
    failed = 0
    with connect(args) as c:
        if args.names:
            objs = []
            for name in args.names:
                try:
                    objs.append(c.get(info.kind, name, ns or "default"))
                except NotFound as e:
                    sys.stderr.write(f"{e}\n")
                    failed = 1
        else:
            objs = c.list(info.kind, ns, args.selector, args.field_selector)
            if info.kind == "Event":
                objs.sort(key=lambda e: (e.last_timestamp.seconds, e.metadata.name))
            else:
                objs.sort(key=lambda o: (o.metadata.namespace, o.metadata.name))
        if objs or args.output in ("json", "yaml"):
            if objs or not args.names:
                _print(objs, info.kind, args, with_namespace)
        elif not args.names and not args.watch:
            where = "" if not ns else f" in {ns} namespace"
            sys.stderr.write(f"No resources found{where}.\n")
        if args.watch:
            _watch(c, info.kind, ns, args, with_namespace, set(args.names))
    return failed


def _watch(c: Any, kind: str, ns: str, args: argparse.Namespace, with_namespace: bool,
           names: set[str]) -> None:
    """Rows of each change after what was printed, until interrupted."""
    from client.api import unwrap
    from client.cli.style import status_painter

    _, revision = c.list_at(kind, ns, args.selector, args.field_selector)
    wide = args.output == "wide"
    painter = status_painter(args)
    headers = _headers(kind, wide, with_namespace)
    status = headers.index("STATUS") if painter is not None and "STATUS" in headers else -1
    for event in c.watch(kind, ns, args.selector, args.field_selector, from_revision=revision):
        if event.type == event.ERROR:
            raise RuntimeError(f"watch ended: {event.message}")
        if event.type not in (event.ADDED, event.MODIFIED, event.DELETED):
            continue
        obj = unwrap(event.object)
        if names and obj.metadata.name not in names:
            continue
        if args.output in ("json", "yaml", "name"):
            saved, args.names = args.names, [obj.metadata.name]
            _print([obj], kind, args, with_namespace)
            args.names = saved
        else:
            cells = _row(kind, obj, wide, with_namespace)
            if painter is not None and status >= 0:
                cells[status] = painter(cells[status])
            sys.stdout.write("   ".join(cells) + "\n")
        sys.stdout.flush()


def cmd_describe(args: argparse.Namespace) -> int:
    from client.api import kind_info
    from client.cli.describe import describe, related

    info = kind_info(args.kind)
    ns = namespace(args) if info.namespaced else ""
    with connect(args) as c:
        for i, name in enumerate(args.names):
            obj = c.get(info.kind, name, ns or "default")
            events = []
            if info.kind != "Event":
                events = [e for e in c.list("Event", obj.metadata.namespace)
                          if e.involved_object.name == name
                          and e.involved_object.kind == info.kind]
            if i:
                sys.stdout.write("\n\n")
            sys.stdout.write(describe(info.kind, obj, events, **related(c, info.kind, obj)))
    return 0
