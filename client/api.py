"""A typed Python client for the scheduler's ClusterService.

    from client import Client
    from proto.kube import load_objects

    with Client() as c:                      # PODIUM_SERVER, else 127.0.0.1:7400
        for doc in load_objects(open("web.yaml").read(), "web.yaml"):
            print(c.apply(doc.object).action)
        pods = c.list("pods", "default", label_selector="app=web")

Objects come back as their own messages (``pod_pb2.Pod``, ``apps_pb2.Deployment``);
methods that take an object accept either such a message or a ``cluster_pb2.Object``.
Kinds may be written as kubectl does: ``Pod``, ``pods``, ``po``.

Errors (one line each)::

    ClientError                  anything this module raises
    ├── Unreachable              no scheduler answers at the address
    └── ServerError              the scheduler said no; .code is the gRPC status
        └── NotFound             the object does not exist
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

import grpc
from google.protobuf.message import Message

from proto.podium.v1 import agent_pb2, cluster_pb2, cluster_pb2_grpc

DEFAULT_SERVER = "127.0.0.1:7400"
DEFAULT_NAMESPACE = "default"
_RETRIES = 4
_FIRST_BACKOFF = 0.1


class KindInfo(NamedTuple):
    kind: str  # "ReplicaSet"
    field: str  # its oneof field in cluster_pb2.Object: "replica_set"
    plural: str  # "replicasets", kubectl's resource name
    group: str  # "apps" or "" for core kinds: ``deployment.apps/web``
    aliases: tuple[str, ...]
    namespaced: bool


KINDS: dict[str, KindInfo] = {k.kind: k for k in (
    KindInfo("Pod", "pod", "pods", "", ("po",), True),
    KindInfo("Deployment", "deployment", "deployments", "apps", ("deploy",), True),
    KindInfo("ReplicaSet", "replica_set", "replicasets", "apps", ("rs",), True),
    KindInfo("Service", "service", "services", "", ("svc",), True),
    KindInfo("Endpoints", "endpoints", "endpoints", "", ("ep",), True),
    KindInfo("Node", "node", "nodes", "", ("no",), False),
    KindInfo("Event", "event", "events", "", ("ev",), True),
    KindInfo("Namespace", "namespace", "namespaces", "", ("ns",), False),
)}
_BY_NAME: dict[str, KindInfo] = {}
for _info in KINDS.values():
    for _name in (_info.kind, _info.plural, _info.kind.lower(), *_info.aliases,
                  f"{_info.kind.lower()}.{_info.group}", f"{_info.plural}.{_info.group}"):
        _BY_NAME.setdefault(_name.lower(), _info)
_BY_FIELD = {info.field: info for info in KINDS.values()}


class ClientError(Exception):
    """A request that did not succeed; the message is one line saying why."""


class Unreachable(ClientError):
    pass


class ServerError(ClientError):
    # kubectl's reason words for the status codes, as in "Error from server (NotFound)".
    REASONS = {
        grpc.StatusCode.NOT_FOUND: "NotFound",
        grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
        grpc.StatusCode.INVALID_ARGUMENT: "Invalid",
        grpc.StatusCode.ABORTED: "Conflict",
        grpc.StatusCode.FAILED_PRECONDITION: "BadRequest",
        grpc.StatusCode.PERMISSION_DENIED: "Forbidden",
        grpc.StatusCode.UNAVAILABLE: "ServiceUnavailable",
        grpc.StatusCode.DEADLINE_EXCEEDED: "Timeout",
    }

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        reason = self.REASONS.get(code, "InternalError")
        super().__init__(f"Error from server ({reason}): {details}")


class NotFound(ServerError):
    pass


def kind_info(kind: str) -> KindInfo:
    """The kind named as kubectl accepts it (``pods``, ``po``, ``Pod``, ``deployment.apps``)."""
    info = _BY_NAME.get(kind.lower())
    if info is None:
        raise ClientError(f'the server doesn\'t have a resource type "{kind}"')
    return info


def wrap(obj: Message) -> cluster_pb2.Object:
    """A typed object in the ``cluster_pb2.Object`` envelope (an envelope as it is)."""
    if isinstance(obj, cluster_pb2.Object):
        return obj
    info = kind_info(obj.DESCRIPTOR.name)
    out = cluster_pb2.Object()
    getattr(out, info.field).CopyFrom(obj)
    return out


def unwrap(obj: cluster_pb2.Object) -> Any:
    """The typed object inside the envelope (``pod_pb2.Pod`` …)."""
    field = obj.WhichOneof("kind")
    if field is None:
        raise ClientError("the server returned an empty object")
    return getattr(obj, field)


def kind_of(obj: Message) -> KindInfo:
    if isinstance(obj, cluster_pb2.Object):
        field = obj.WhichOneof("kind")
        if field is None:
            raise ClientError("empty object: it holds no kind")
        return _BY_FIELD[field]
    return kind_info(obj.DESCRIPTOR.name)


def ref(obj: Message) -> str:
    """kubectl's name of an object: ``deployment.apps/web``, ``pod/web-1``."""
    info = kind_of(obj)
    name = unwrap(wrap(obj)).metadata.name
    group = f".{info.group}" if info.group else ""
    return f"{info.kind.lower()}{group}/{name}"


class ApplyResult(NamedTuple):
    object: Any  # the typed message as stored
    action: str  # "created", "configured" or "unchanged"
    warnings: tuple[str, ...]


class ExecResult(NamedTuple):
    exit_code: int
    stdout: bytes
    stderr: bytes


T = TypeVar("T")


class Client:
    """A connection to one scheduler. Thread-safe; close it (or use ``with``)."""

    def __init__(self, server: str | None = None, *, timeout: float = 10.0) -> None:
        self.server = server or os.environ.get("PODIUM_SERVER") or DEFAULT_SERVER
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.server)
        self.stub = cluster_pb2_grpc.ClusterServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- errors and retries --------------------------------------------------

    def _error(self, err: grpc.RpcError, what: str | Callable[[str], str] = "",
               via: str | Callable[[], str] = "") -> ClientError:
        """``via`` names what the scheduler relays the call to ("the agent of node n1"),
        or finds that name when needed: when the scheduler answers, a failure to
        connect was that one's, not its own. ``what`` is the message of a NOT_FOUND,
        or makes it from the server's."""
        code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (err.details() if isinstance(err, grpc.Call) else "") or str(code)
        if callable(what):
            what = what(details) if code == grpc.StatusCode.NOT_FOUND else ""
        relayed = bool(via) and code in (grpc.StatusCode.UNAVAILABLE,
                                         grpc.StatusCode.DEADLINE_EXCEEDED) and self._answers()
        if relayed and callable(via):
            via = via()
        if relayed and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ServerError(code, f"no answer from {via} in time")
        if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower()
                                                    or "refused" in details.lower()):
            why = "connection refused" if "refused" in details.lower() else details
            if relayed:
                return ServerError(code, f"cannot reach {via}: {why}")
            return Unreachable(f"cannot reach the scheduler at {self.server}: {why} "
                               "— is it running? try `podium up`")
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFound(code, what or details)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ServerError(code, f"no answer from the scheduler at {self.server} "
                                     f"within {self.timeout:g}s")
        return ServerError(code, " ".join(details.split()))

    def _answers(self) -> bool:
        """Whether the scheduler answers now: a one-key read, where any answer but
        UNAVAILABLE or a timeout will do. (Not channel_ready_future: its polling
        thread outlives the call and raises "Channel closed!" after close().)"""
        request = cluster_pb2.GetRequest(kind="Namespace", name=DEFAULT_NAMESPACE)
        try:
            self.stub.Get(request, timeout=1.0)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            return code not in (None, grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.DEADLINE_EXCEEDED)
        return True

    def _unary(self, method: Callable[..., T], request: Any, what: str = "",
               retry_aborted: bool = False, via: str = "") -> T:
        """One call, again after a back-off while the server is UNAVAILABLE (and,
        with ``retry_aborted``, while a request that named no version loses a race)."""
        retry = {grpc.StatusCode.UNAVAILABLE}
        if retry_aborted:
            retry.add(grpc.StatusCode.ABORTED)
        delay = _FIRST_BACKOFF
        for attempt in range(_RETRIES):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                if code not in retry or attempt == _RETRIES - 1:
                    raise self._error(err, what, via) from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _stream(self, call: Iterable[T], what: str | Callable[[str], str] = "",
                via: str | Callable[[], str] = "") -> Iterator[T]:
        try:
            yield from call
        except grpc.RpcError as err:
            if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.CANCELLED:
                return
            raise self._error(err, what, via) from None
        finally:
            cancel = getattr(call, "cancel", None)
            if cancel is not None:
                cancel()

    # --- objects -------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str = DEFAULT_NAMESPACE) -> Any:
        info = kind_info(kind)
        request = cluster_pb2.GetRequest(kind=info.kind, namespace=namespace, name=name)
        found = self._unary(self.stub.Get, request, f'{info.plural} "{name}" not found')
        return unwrap(found)

    def list(self, kind: str, namespace: str = "", label_selector: str = "",
             field_selector: str = "") -> list[Any]:
        """Objects of one kind; namespace "" means every namespace."""
        return self.list_at(kind, namespace, label_selector, field_selector)[0]

    def list_at(self, kind: str, namespace: str = "", label_selector: str = "",
                field_selector: str = "") -> tuple[builtins.list[Any], int]:
        """As ``list``, with the store revision to watch from."""
        request = cluster_pb2.ListRequest(kind=kind_info(kind).kind, namespace=namespace,
                                          label_selector=label_selector,
                                          field_selector=field_selector)
        response = self._unary(self.stub.List, request)
        return [unwrap(item) for item in response.items], response.revision

    def create(self, obj: Message, *, dry_run: bool = False) -> Any:
        response = self._unary(self.stub.Create,
                               cluster_pb2.CreateRequest(object=wrap(obj), dry_run=dry_run))
        return unwrap(response.object)

    def apply(self, obj: Message, *, dry_run: bool = False) -> ApplyResult:
        """Create or update by name; ``action`` says which, or "unchanged"."""
        response = self._unary(self.stub.Apply,
                               cluster_pb2.ApplyRequest(object=wrap(obj), dry_run=dry_run))
        return ApplyResult(unwrap(response.object), response.action, tuple(response.warnings))

    def update(self, obj: Message, *, dry_run: bool = False) -> Any:
        """Replace spec and metadata; metadata.resource_version must be the last one read."""
        response = self._unary(self.stub.Update,
                               cluster_pb2.UpdateRequest(object=wrap(obj), dry_run=dry_run))
        return unwrap(response.object)

    def delete(self, kind: str, name: str, namespace: str = DEFAULT_NAMESPACE, *,
               grace_period: int | None = None, force: bool = False,
               propagation_policy: str = "") -> Any:
        info = kind_info(kind)
        request = cluster_pb2.DeleteRequest(kind=info.kind, namespace=namespace, name=name,
                                            force=force, propagation_policy=propagation_policy)
        if grace_period is not None:
            request.grace_period_seconds = grace_period
        # The scheduler answers ABORTED when the object changed while it was being
        # deleted (a controller wrote its status); this call named no version, so
        # deleting it again is what was asked.
        return unwrap(self._unary(self.stub.Delete, request, f'{info.plural} "{name}" not found',
                                  retry_aborted=True))

    def scale(self, kind: str, name: str, replicas: int,
              namespace: str = DEFAULT_NAMESPACE) -> Any:
        info = kind_info(kind)
        request = cluster_pb2.ScaleRequest(kind=info.kind, namespace=namespace, name=name,
                                           replicas=replicas)
        return unwrap(self._unary(self.stub.Scale, request, f'{info.plural} "{name}" not found'))

    def watch(self, kind: str, namespace: str = "", label_selector: str = "",
              field_selector: str = "", from_revision: int = 0) -> Iterator[Any]:
        """WatchEvents as they come; from revision 0: every current object as
        ADDED, a BOOKMARK, then the changes. Ends when the caller stops iterating."""
        request = cluster_pb2.WatchRequest(kind=kind_info(kind).kind, namespace=namespace,
                                           label_selector=label_selector,
                                           field_selector=field_selector,
                                           from_revision=from_revision)
        return self._stream(self.stub.Watch(request))

    # --- proxied to agents ---------------------------------------------------

    def _agent_of_pod(self, pod: str, namespace: str) -> Callable[[], str]:
        """Names the agent a pod's stream is relayed to, by the pod's node."""
        def name() -> str:
            try:
                node = self.get("Pod", pod, namespace).spec.node_name
            except ClientError:
                node = ""
            return f"the agent of node {node}" if node else f"the agent of pod {pod}'s node"
        return name

    @staticmethod
    def _pod_missing(pod: str) -> Callable[[str], str]:
        """A NOT_FOUND of a pod's stream: the scheduler's ("Pod default/web not found")
        is about the pod; the agent's names the container, or says the pod is not
        on its node yet, and is passed on as it is."""
        return lambda details: (f'pods "{pod}" not found' if details.endswith("not found")
                                else details)

    def logs(self, pod: str, namespace: str = DEFAULT_NAMESPACE, *, container: str = "",
             follow: bool = False, tail: int | None = None,
             previous: bool = False) -> Iterator[bytes]:
        """A container's output as it comes; with ``follow``, until it stops or the
        caller stops iterating. A missing pod or container is NotFound naming it; an
        agent the scheduler cannot reach (here and in ``exec``) is a ServerError
        (ServiceUnavailable) naming the pod's node."""
        request = agent_pb2.LogsRequest(namespace=namespace, pod=pod, container=container,
                                        follow=follow, previous=previous)
        if tail is not None and tail >= 0:  # kubectl's --tail -1: every line
            request.tail_lines = tail
        timeout = None if follow else self.timeout
        call = self.stub.Logs(request, timeout=timeout)
        responses: Iterator[agent_pb2.LogsResponse] = self._stream(
            call, self._pod_missing(pod), self._agent_of_pod(pod, namespace))
        return (r.data for r in responses)

    def exec_stream(self, start: agent_pb2.ExecStart,
                    inputs: Iterable[agent_pb2.ExecRequest] = ()) -> Iterator[Any]:
        """The raw exec stream: ExecResponses (stdout, stderr, then exit) for
        ``start`` followed by ``inputs`` (stdin, resize, close_stdin)."""
        def requests() -> Iterator[agent_pb2.ExecRequest]:
            yield agent_pb2.ExecRequest(start=start)
            yield from inputs
        return self._stream(self.stub.Exec(requests()), self._pod_missing(start.pod),
                            self._agent_of_pod(start.pod, start.namespace or DEFAULT_NAMESPACE))

    def exec(self, pod: str, command: builtins.list[str], namespace: str = DEFAULT_NAMESPACE, *,
             container: str = "", stdin: bytes | None = None) -> ExecResult:
        """Runs a command in a container to its end; its output collected."""
        start = agent_pb2.ExecStart(namespace=namespace, pod=pod, container=container,
                                    command=command, stdin=stdin is not None)
        inputs: builtins.list[agent_pb2.ExecRequest] = []
        if stdin is not None:
            inputs = [agent_pb2.ExecRequest(stdin=stdin), agent_pb2.ExecRequest(close_stdin=True)]
        out, err, code = bytearray(), bytearray(), -1
        for response in self.exec_stream(start, inputs):
            which = response.WhichOneof("response")
            if which == "stdout":
                out += response.stdout
            elif which == "stderr":
                err += response.stderr
            elif which == "exit":
                code = response.exit.exit_code
        return ExecResult(code, bytes(out), bytes(err))

    def stats(self, node: str, namespace: str = "", pod: str = "") -> Any:
        """The ``agent_pb2.StatsResponse`` of one node's agent: cumulative CPU time and
        memory of the node and of its pods (filtered by ``namespace`` and ``pod``).
        An agent the scheduler cannot reach is a ServerError (ServiceUnavailable)
        that names the node; Unreachable means the scheduler itself."""
        request = agent_pb2.StatsRequest(node_name=node, namespace=namespace, pod=pod)
        return self._unary(self.stub.Stats, request, f'nodes "{node}" not found',
                           via=f"the agent of node {node}")
