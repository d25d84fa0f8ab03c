"""``podium top pods|nodes``: CPU and memory in use, as ``kubectl top`` prints them.

The figures come from each node's agent through the scheduler (``Client.stats``).
Agents report CPU as cumulative time (the cgroup's usage counter), so a rate is
the difference of two samples taken ``--interval`` apart, over the time between
them as the agent stamped them; a figure that already carries a rate
(``usage_nano_cores``) is used as it is, and then one sample is enough. Memory
is the working set, as the kubelet and the OOM killer count it.

A node whose agent does not answer is one line on stderr; the other nodes' rows
still print, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from client.cli.cluster import namespace, server_options

MI = 1024 * 1024
UNKNOWN = "<unknown>"

_HELP = "CPU and memory in use by pods or nodes"
_EXAMPLES = {
    "top": """examples:
  podium top pods
  podium top nodes
""",
    "pods": """examples:
  podium top pods
  podium top pods -A --sort-by cpu
  podium top pods -l app=web --containers
  podium top pods web-6dr2k -n team
""",
    "nodes": """examples:
  podium top nodes
  podium top nodes node-1
  podium top nodes -l zone=a --sort-by memory
""",
}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("top", help=_HELP, description=_HELP, parents=[common],
                           epilog=_EXAMPLES["top"],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    group.set_defaults(func=None, group_usage=group.format_help)
    which = group.add_subparsers(dest="what", metavar="pods|nodes", parser_class=type(group))

    def command(name: str, help: str, aliases: list[str],
                all_namespaces: bool) -> argparse.ArgumentParser:
        c: argparse.ArgumentParser = which.add_parser(
            name, help=help, description=help, aliases=aliases, epilog=_EXAMPLES[name],
            parents=[common, server_options(all_namespaces=all_namespaces)],
            formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("names", nargs="*", metavar="NAME")
        c.add_argument("-l", "--selector", default="", metavar="SELECTOR",
                       help="label selector: app=web,tier!=db")
        c.add_argument("--sort-by", choices=("cpu", "memory"), default=None,
                       help="largest first (default: by name)")
        c.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                       help="time between the two CPU samples (default 1)")
        return c

    c = command("pods", "CPU (millicores) and memory (Mi) of each pod", ["pod", "po"], True)
    c.add_argument("--containers", action="store_true", help="a row per container")
    c.set_defaults(func=cmd_top_pods)
    c = command("nodes", "CPU and memory of each node, and their share of what is allocatable",
                ["node", "no"], False)
    c.set_defaults(func=cmd_top_nodes)


# --- rates and cells (no I/O) -----------------------------------------------------


def _ns(ts: Any, fallback: int) -> int:
    """A protobuf Timestamp in nanoseconds; ``fallback`` when it is unset."""
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos) if ts.seconds or ts.nanos \
        else fallback


@dataclass(frozen=True)
class Sample:
    """One node's StatsResponse and when it arrived (for figures the agent did not stamp)."""
    response: Any
    received_ns: int

    @property
    def node_ns(self) -> int:
        return _ns(self.response.node.time, self.received_ns)


def nano_cores(before: Any | None, before_ns: int, after: Any, after_ns: int) -> int | None:
    """CPU in use (1e9 = one core busy) from two CpuStats; None when it cannot be told
    (one sample only, no time between them, or the counter went back: a restart)."""
    if after.usage_nano_cores:
        return int(after.usage_nano_cores)
    if before is None or after_ns <= before_ns:
        return None
    used = int(after.usage_core_nanoseconds) - int(before.usage_core_nanoseconds)
    if used < 0:
        return None
    return round(used * 1_000_000_000 / (after_ns - before_ns))


def needs_second_sample(response: Any) -> bool:
    """Whether some CPU figure in ``response`` is a bare counter with no rate."""
    figures = [response.node.cpu, *(cs.cpu for p in response.pods for cs in p.containers)]
    return any(not f.usage_nano_cores for f in figures)


def cpu_cell(nanos: int | None) -> str:
    return UNKNOWN if nanos is None else f"{round(nanos / 1_000_000)}m"


def memory_cell(nbytes: int | None) -> str:
    return UNKNOWN if nbytes is None else f"{nbytes // MI}Mi"


def percent_cell(used: float | None, allocatable: float | None) -> str:
    if used is None or not allocatable:
        return UNKNOWN
    return f"{int(used * 100 / allocatable)}%"


@dataclass(frozen=True)
class Usage:
    """What a pod, container or node uses: CPU in nano-cores (None: not known) and
    memory in bytes."""
    nano_cores: int | None
    memory: int


def container_usage(before: Sample | None, after: Sample) -> dict[tuple[str, str], list[
        tuple[str, Usage]]]:
    """(namespace, pod name) → [(container name, Usage)] from the samples of one node.
    A container is matched with its earlier sample by ID, so one that restarted in
    between has no CPU figure rather than a wrong one."""
    earlier: dict[str, Any] = {}
    if before is not None:
        for p in before.response.pods:
            for cs in p.containers:
                earlier[cs.container_id or f"{p.uid}/{cs.name}"] = cs
    out: dict[tuple[str, str], list[tuple[str, Usage]]] = {}
    for p in after.response.pods:
        rows = out.setdefault((p.namespace, p.name), [])
        for cs in p.containers:
            old = earlier.get(cs.container_id or f"{p.uid}/{cs.name}")
            old_ns = _ns(old.time, before.node_ns) if old is not None and before else 0
            cpu = nano_cores(old.cpu if old is not None else None, old_ns, cs.cpu,
                             _ns(cs.time, after.node_ns))
            rows.append((cs.name, Usage(cpu, int(cs.memory.working_set_bytes))))
    return out


def pod_total(containers: Iterable[tuple[str, Usage]]) -> Usage:
    """A pod's use, the sum of its containers'; CPU unknown only if every container's is."""
    found = list(containers)
    cpus = [u.nano_cores for _, u in found if u.nano_cores is not None]
    cpu = sum(cpus) if cpus or not found else None
    return Usage(cpu, sum(u.memory for _, u in found))


def node_usage(before: Sample | None, after: Sample) -> Usage:
    node = after.response.node
    cpu = nano_cores(before.response.node.cpu if before else None,
                     before.node_ns if before else 0, node.cpu, after.node_ns)
    return Usage(cpu, int(node.memory.working_set_bytes))


def allocatable(node: Any | None, stats: Any) -> tuple[float | None, float | None]:
    """A node's allocatable CPU (cores) and memory (bytes): from its Node object, else
    from what the agent reports of itself."""
    from proto.quantity import QuantityError, parse_quantity

    def read(name: str, fallback: float) -> float | None:
        for source in (node.status.allocatable if node is not None else {},
                       stats.status.allocatable):
            if name in source:
                try:
                    return float(parse_quantity(source[name]))
                except QuantityError:
                    continue
        return fallback or None

    return read("cpu", stats.cpu.limit_cores), read("memory", float(stats.memory.limit_bytes))


def sort_rows(rows: list[tuple[list[str], Usage]], by: str | None) -> list[list[str]]:
    if by == "cpu":
        rows = sorted(rows, key=lambda r: -(r[1].nano_cores or 0))
    elif by == "memory":
        rows = sorted(rows, key=lambda r: -r[1].memory)
    return [cells for cells, _ in rows]


# --- sampling -----------------------------------------------------------------------


def sample(nodes: list[str], interval: float, ask: Callable[[str], Any]
           ) -> tuple[dict[str, tuple[Sample | None, Sample]], dict[str, Exception]]:
    """Each node's two samples (the first None when one was enough) and each failure.
    Nodes are asked together, so one that does not answer delays the others once."""
    from client.api import Unreachable

    def once(names: list[str]) -> dict[str, Sample | Exception]:
        def one(node: str) -> Sample | Exception:
            try:
                response = ask(node)
            except Unreachable:
                raise  # the scheduler itself: the whole command fails
            except Exception as e:  # noqa: BLE001 - one node's failure is its row's
                return e
            return Sample(response, time.time_ns())

        with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))

    first = once(nodes)
    failed = {n: r for n, r in first.items() if isinstance(r, Exception)}
    good = {n: r for n, r in first.items() if isinstance(r, Sample)}
    again = [n for n, s in good.items() if needs_second_sample(s.response)]
    second: dict[str, Sample | Exception] = {}
    if again:
        time.sleep(interval)
        second = once(again)
    out: dict[str, tuple[Sample | None, Sample]] = {}
    for node, s in good.items():
        later = second.get(node)
        if isinstance(later, Exception):
            failed[node] = later
        elif later is None:
            out[node] = (None, s)
        else:
            out[node] = (s, later)
    return out, failed


def _report(failed: dict[str, Exception]) -> None:
    from client.api import ServerError
    from client.cli import one_line

    for node, e in sorted(failed.items()):
        why = e.details if isinstance(e, ServerError) else one_line(e)
        sys.stderr.write(f"podium: top: no figures from node {node}: {why}\n")


# --- commands -----------------------------------------------------------------------


def cmd_top_pods(args: argparse.Namespace) -> int:
    from client.cli import UsageError
    from client.cli.cluster import connect
    from client.cli.output import table

    if args.interval <= 0:
        raise UsageError("top: --interval must be more than 0 seconds")
    ns = "" if args.all_namespaces else namespace(args)
    with connect(args) as c:
        if args.names:
            pods = [c.get("Pod", name, ns or "default") for name in args.names]
        else:
            pods = c.list("Pod", ns, args.selector)
        idle = [p for p in pods if not _measurable(p)]
        pods = [p for p in pods if _measurable(p)]
        wanted = {(p.metadata.namespace, p.metadata.name): p.spec.node_name for p in pods}
        nodes = sorted(set(wanted.values()))
        only = args.names[0] if len(args.names) == 1 else ""
        samples, failed = sample(nodes, args.interval,
                                 lambda node: c.stats(node, ns, only))
    rows: list[tuple[list[str], Usage]] = []
    missing = []
    for node, (before, after) in samples.items():
        usage = container_usage(before, after)
        for key, node_name in wanted.items():
            if node_name != node:
                continue
            if key not in usage:
                missing.append(key)
                continue
            prefix = [key[0]] if args.all_namespaces else []
            if args.containers:
                rows += [([*prefix, key[1], name, cpu_cell(u.nano_cores), memory_cell(u.memory)],
                          u) for name, u in usage[key]]
            else:
                total = pod_total(usage[key])
                rows.append(([*prefix, key[1], cpu_cell(total.nano_cores),
                              memory_cell(total.memory)], total))
    rows.sort(key=lambda r: r[0][:-2])
    headers = [*(["NAMESPACE"] if args.all_namespaces else []), *(
        ["POD", "NAME"] if args.containers else ["NAME"]), "CPU(cores)", "MEMORY(bytes)"]
    if rows:
        table(headers, sort_rows(rows, args.sort_by))
    _report(failed)
    for p in idle if args.names else []:
        sys.stderr.write(f"podium: top: pod {p.metadata.name} is not running "
                         f"({p.status.phase or 'Pending'}): it has no figures\n")
    named = set(args.names)
    for key in sorted(missing):
        if key[1] in named:  # a pod asked for by name has no figures: say so
            sys.stderr.write(f"podium: top: no figures for pod {key[1]} yet "
                             f"(its node's agent does not report it)\n")
    if not rows and not failed and not named:
        where = f" in {ns} namespace" if ns else ""
        sys.stderr.write(f"No resources found{where}.\n")
    return 1 if failed or any(k[1] in named for k in missing) or (idle and named) else 0


def _measurable(pod: Any) -> bool:
    return bool(pod.spec.node_name and pod.status.phase == "Running"
                and not pod.metadata.HasField("deletion_timestamp"))


def cmd_top_nodes(args: argparse.Namespace) -> int:
    from client.cli import UsageError
    from client.cli.cluster import connect
    from client.cli.output import table

    if args.interval <= 0:
        raise UsageError("top: --interval must be more than 0 seconds")
    with connect(args) as c:
        if args.names:
            nodes = [c.get("Node", name, "") for name in args.names]
        else:
            nodes = c.list("Node", "", args.selector)
        by_name = {n.metadata.name: n for n in nodes}
        # A pod filter that no pod name can match (names are DNS labels): the agent
        # then sends the node's figures without reading every pod's cgroups.
        samples, failed = sample(sorted(by_name), args.interval,
                                 lambda node: c.stats(node, "", "-"))
    rows: list[tuple[list[str], Usage]] = []
    for name in sorted(by_name):
        if name not in samples:
            rows.append(([name, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN], Usage(None, 0)))
            continue
        before, after = samples[name]
        u = node_usage(before, after)
        cores, memory = allocatable(by_name[name], after.response.node)
        cpu_cores = u.nano_cores / 1e9 if u.nano_cores is not None else None
        rows.append(([name, cpu_cell(u.nano_cores), percent_cell(cpu_cores, cores),
                      memory_cell(u.memory), percent_cell(u.memory, memory)], u))
    if rows:
        table(["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"],
              sort_rows(rows, args.sort_by))
    else:
        sys.stderr.write("No resources found.\n")
    _report(failed)
    return 1 if failed else 0
