"""``podium describe``'s prose: a pure function of an object and its events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from client.cli.cluster import short_age


def _map(values: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(values.items())) or "<none>"


def _lines(pairs: Sequence[tuple[str, str]], indent: int = 0) -> str:
    width = max((len(k) for k, _ in pairs), default=0) + 2
    return "".join(f"{' ' * indent}{k + ':':<{width}}{v}\n" for k, v in pairs)


def _conditions(conditions: Sequence[Any]) -> str:
    if not conditions:
        return "Conditions:  <none>\n"
    out = "Conditions:\n"
    width = max(len(c.type) for c in conditions) + 2
    out += f"  {'Type':<{width}}Status  Reason / Message\n"
    for c in conditions:
        why = " ".join(x for x in (c.reason, " ".join(c.message.split())) if x)
        out += f"  {c.type:<{width}}{c.status:<8}{why}\n"
    return out


def _events(events: Sequence[Any]) -> str:
    if not events:
        return "Events:  <none>\n"
    out = "Events:\n"
    rows = [("Type", "Reason", "Age", "From", "Message")]
    for e in sorted(events, key=lambda e: e.last_timestamp.seconds):
        when = e.last_timestamp if e.last_timestamp.seconds else e.metadata.creation_timestamp
        age = short_age(when) + (f" (x{e.count})" if e.count > 1 else "")
        rows.append((e.type or "Normal", e.reason, age, e.source.component or "-",
                     " ".join(e.message.split())))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        out += "  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True))
        out += f"  {r[4]}\n"
    return out


def _meta(obj: Any) -> list[tuple[str, str]]:
    m = obj.metadata
    pairs = [("Name", m.name)]
    if m.namespace:
        pairs.append(("Namespace", m.namespace))
    pairs += [("Labels", _map(m.labels)), ("Annotations", _map(m.annotations))]
    if m.HasField("creation_timestamp"):
        pairs.append(("CreationTimestamp", m.creation_timestamp.ToJsonString()))
    return pairs


def _containers(pod: Any) -> str:
    statuses = {cs.name: cs for cs in pod.status.container_statuses}
    out = "Containers:\n"
    for c in pod.spec.containers:
        cs = statuses.get(c.name)
        pairs = [("Image", c.image)]
        if c.command or c.args:
            pairs.append(("Command", " ".join([*c.command, *c.args])))
        if c.ports:
            pairs.append(("Ports", ", ".join(f"{p.container_port}/{p.protocol or 'TCP'}"
                                              for p in c.ports)))
        if cs is not None:
            state = cs.state.WhichOneof("state") or "waiting"
            detail = getattr(cs.state, state)
            reason = getattr(detail, "reason", "")
            code = f", exit code {detail.exit_code}" if state == "terminated" else ""
            why = f" ({reason})" if reason else ""
            pairs += [("State", f"{state.capitalize()}{why}{code}"),
                      ("Ready", str(cs.ready)), ("Restart Count", str(cs.restart_count))]
        for kind in ("limits", "requests"):
            values = getattr(c.resources, kind)
            if values:
                pairs.append((kind.capitalize(), _map(values)))
        out += f"  {c.name}:\n" + _lines(pairs, indent=4)
    return out


def _pod(pod: Any) -> str:
    s = pod.status
    pairs = [("Node", pod.spec.node_name or "<none>"), ("Status", s.phase or "Pending")]
    if s.reason or s.message:
        pairs.append(("Reason", " ".join(x for x in (s.reason, s.message) if x)))
    pairs += [("IP", s.pod_ip or "<none>"), ("QoS Class", s.qos_class or "<none>")]
    for owner in pod.metadata.owner_references:
        pairs.append(("Controlled By", f"{owner.kind}/{owner.name}"))
    return _lines(pairs) + _containers(pod) + _conditions(s.conditions)


def _deployment(d: Any) -> str:
    want = d.spec.replicas if d.spec.HasField("replicas") else 1
    st = d.status
    strategy = d.spec.strategy.type or "RollingUpdate"
    pairs = [("Selector", _map(d.spec.selector.match_labels)),
             ("Replicas", f"{want} desired | {st.updated_replicas} updated | {st.replicas} total"
                          f" | {st.available_replicas} available"
                          f" | {st.unavailable_replicas} unavailable"),
             ("StrategyType", strategy)]
    images = ", ".join(f"{c.name}={c.image}" for c in d.spec.template.spec.containers)
    pairs.append(("Images", images or "<none>"))
    return _lines(pairs) + _conditions(st.conditions)


def _replica_set(rs: Any) -> str:
    want = rs.spec.replicas if rs.spec.HasField("replicas") else 1
    owners = ", ".join(f"{o.kind}/{o.name}" for o in rs.metadata.owner_references) or "<none>"
    pairs = [("Selector", _map(rs.spec.selector.match_labels)), ("Controlled By", owners),
             ("Replicas", f"{rs.status.replicas} current / {want} desired"),
             ("Pods Ready", str(rs.status.ready_replicas))]
    return _lines(pairs) + _conditions(rs.status.conditions)


def _target(port: Any) -> str:
    target = port.target_port
    value = target.str_value if target.WhichOneof("value") == "str_value" else \
        str(target.int_value or port.port)
    return f"{value}/{port.protocol or 'TCP'}"


def _serving(port: Any, endpoints: Any) -> str:
    """The ready addresses behind one Service port, as kubectl shows them (ip:port)."""
    if endpoints is None:
        return "<none>"
    found = [f"{a.ip}:{p.port}" for s in endpoints.subsets for p in s.ports
             if p.name == port.name and (p.protocol or "TCP") == (port.protocol or "TCP")
             for a in s.addresses]
    if len(found) > 3:
        return ",".join(found[:3]) + f" + {len(found) - 3} more..."
    return ",".join(found) or "<none>"


def _service(svc: Any, endpoints: Any = None) -> str:
    spec = svc.spec
    pairs = [("Selector", _map(spec.selector)), ("Type", spec.type or "ClusterIP"),
             ("IP", spec.cluster_ip or "<none>")]
    if spec.external_ips:
        pairs.append(("External IPs", ",".join(spec.external_ips)))
    ingress = [i.ip or i.hostname for i in svc.status.load_balancer.ingress]
    if ingress:
        pairs.append(("LoadBalancer Ingress", ", ".join(ingress)))
    for port in spec.ports:
        name = port.name or "<unset>"
        pairs += [("Port", f"{name}  {port.port}/{port.protocol or 'TCP'}"),
                  ("TargetPort", _target(port))]
        if port.node_port:
            pairs.append(("NodePort", f"{name}  {port.node_port}/{port.protocol or 'TCP'}"))
        pairs.append(("Endpoints", _serving(port, endpoints)))
    if not spec.ports:  # headless without ports: the addresses alone
        subsets = endpoints.subsets if endpoints is not None else ()
        pairs.append(("Endpoints", ",".join(a.ip for s in subsets for a in s.addresses)
                      or "<none>"))
    pairs.append(("Session Affinity", spec.session_affinity or "None"))
    if spec.external_traffic_policy:
        pairs.append(("External Traffic Policy", spec.external_traffic_policy))
    return _lines(pairs)


def _endpoints(ep: Any) -> str:
    if not ep.subsets:
        return "Subsets:  <none>\n"
    out = "Subsets:\n"
    for subset in ep.subsets:
        out += _lines([("Addresses", ",".join(a.ip for a in subset.addresses) or "<none>"),
                       ("NotReadyAddresses",
                        ",".join(a.ip for a in subset.not_ready_addresses) or "<none>")],
                      indent=2)
        if not subset.ports:
            out += "  Ports:  <none>\n"
            continue
        rows = [("Name", "Port", "Protocol"), ("----", "----", "--------")]
        rows += [(p.name or "<unset>", str(p.port), p.protocol or "TCP") for p in subset.ports]
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        out += "  Ports:\n" + "".join(
            f"    {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}\n" for r in rows)
    return out


def _node(node: Any) -> str:
    s = node.status
    pairs = [("Addresses", ", ".join(f"{a.type}={a.address}" for a in s.addresses) or "<none>"),
             ("PodCIDR", node.spec.pod_cidr or "<none>"),
             ("Unschedulable", str(node.spec.unschedulable)),
             ("Capacity", _map(s.capacity)), ("Allocatable", _map(s.allocatable))]
    if node.spec.taints:
        pairs.append(("Taints", ", ".join(f"{t.key}={t.value}:{t.effect}"
                                          for t in node.spec.taints)))
    return _lines(pairs) + _conditions(s.conditions)


_BODIES = {"Pod": _pod, "Deployment": _deployment, "ReplicaSet": _replica_set,
           "Node": _node, "Endpoints": _endpoints}


def describe(kind: str, obj: Any, events: Sequence[Any], *, endpoints: Any = None) -> str:
    """The prose of `obj`; a Service shows the addresses of its `endpoints` (the
    Endpoints message of the same name, None if there is none)."""
    if kind == "Service":
        body = _service(obj, endpoints)
    else:
        show = _BODIES.get(kind)
        body = show(obj) if show else ""
    return _lines(_meta(obj)) + body + _events(events)


def related(client: Any, kind: str, obj: Any) -> dict[str, Any]:
    """What `describe` shows beside the object, read through `client`:
    ``describe(kind, obj, events, **related(client, kind, obj))``."""
    from client.api import NotFound

    if kind != "Service":
        return {}
    try:
        return {"endpoints": client.get("Endpoints", obj.metadata.name, obj.metadata.namespace)}
    except NotFound:
        return {"endpoints": None}
