"""Running one probe: exec, httpGet and tcpSocket, each to a ``ProbeResult``.

A runner never raises: whatever goes wrong (a refused connection, a timeout, an
exec that cannot start) is a failure whose message is kept for the container's
events and status, as the kubelet's "Liveness probe failed: …" messages are.

    ExecCheck, HTTPGetCheck, TCPSocketCheck
                        a probe's action, resolved (named ports are numbers here)
    ProbeRunner         runs any of them for one container: connects to the pod's
                        IP from the node, execs through the callable it is given
    runtime_exec        that callable, through ``runtime.Runtime.exec``

httpGet follows Kubernetes: a status from 200 to 399 is success; redirects to the
same host name are followed (at most 10), a redirect elsewhere is not followed and
counts as success; HTTPS does not verify the certificate.
"""

from __future__ import annotations

import enum
import http.client
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urljoin, urlsplit

from runtime.processes import wait_with_timeout

if TYPE_CHECKING:
    from runtime.api import Runtime
    from runtime.spec.model import Process

MAX_REDIRECTS = 10
BODY_LIMIT = 10 * 1024  # of a failed response, read for the message
USER_AGENT = "podium-probe/1"


class Result(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    UNKNOWN = "unknown"  # no answer either way (the probe could not be run at all)


class ProbeResult(NamedTuple):
    result: Result
    message: str = ""  # why it failed, or a warning on success


class ExecCheck(NamedTuple):
    command: tuple[str, ...]


class HTTPGetCheck(NamedTuple):
    port: int
    path: str = "/"
    host: str = ""  # "": the pod's IP
    scheme: str = "HTTP"  # or "HTTPS"
    headers: tuple[tuple[str, str], ...] = ()


class TCPSocketCheck(NamedTuple):
    port: int
    host: str = ""


Check = ExecCheck | HTTPGetCheck | TCPSocketCheck

# Runs ``args`` in the container and returns its exit code; raises TimeoutError
# when it has not ended after ``timeout`` seconds (having killed it).
ExecInContainer = Callable[[tuple[str, ...], float], int]


def _failure(message: str) -> ProbeResult:
    return ProbeResult(Result.FAILURE, message)


SUCCESS = ProbeResult(Result.SUCCESS)


class ProbeRunner:
    """Runs probes for one container: ``runner(check, timeout) -> ProbeResult``."""

    def __init__(self, pod_ip: str, exec_in_container: ExecInContainer | None = None) -> None:
        self.pod_ip = pod_ip
        self.exec_in_container = exec_in_container

    def __call__(self, check: Check, timeout: float) -> ProbeResult:
        try:
            if isinstance(check, ExecCheck):
                return self.run_exec(check, timeout)
            if isinstance(check, HTTPGetCheck):
                return run_http_get(check, check.host or self.pod_ip, timeout)
            return run_tcp_socket(check, check.host or self.pod_ip, timeout)
        except Exception as e:  # a runner never raises: a probe that breaks has failed
            return _failure(f"probe error: {type(e).__name__}: {e}")

    def run_exec(self, check: ExecCheck, timeout: float) -> ProbeResult:
        if self.exec_in_container is None:
            return ProbeResult(Result.UNKNOWN, "exec probes are not available here")
        try:
            code = self.exec_in_container(check.command, timeout)
        except TimeoutError:
            return _failure(f"command {list(check.command)} timed out after {timeout:g}s")
        except Exception as e:
            return _failure(f"command {list(check.command)}: {e}")
        if code != 0:
            return _failure(f"command {list(check.command)} exited with {code}")
        return SUCCESS


def run_tcp_socket(check: TCPSocketCheck, host: str, timeout: float) -> ProbeResult:
    if not host:
        return ProbeResult(Result.UNKNOWN, "the pod has no IP yet")
    try:
        with socket.create_connection((host, check.port), timeout=timeout):
            return SUCCESS
    except TimeoutError:
        return _failure(f"dial tcp {_hostport(host, check.port)}: i/o timeout")
    except OSError as e:
        return _failure(f"dial tcp {_hostport(host, check.port)}: {_why(e)}")


def run_http_get(check: HTTPGetCheck, host: str, timeout: float) -> ProbeResult:
    if not host:
        return ProbeResult(Result.UNKNOWN, "the pod has no IP yet")
    scheme = check.scheme.lower() or "http"
    path = check.path if check.path.startswith("/") else "/" + check.path
    url = f"{scheme}://{_hostport(host, check.port)}{path}"
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    headers.update(check.headers)  # the probe's own win (Host, User-Agent, …)
    deadline = time.monotonic() + timeout
    first_host = urlsplit(url).hostname
    for _ in range(MAX_REDIRECTS + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            return _failure(f"Get {url}: timed out after {timeout:g}s")
        try:
            status, location, body = _get(url, headers, left)
        except TimeoutError:
            return _failure(f"Get {url}: timed out after {timeout:g}s")
        except (OSError, http.client.HTTPException, ValueError) as e:
            return _failure(f"Get {url}: {_why(e)}")
        if status in (301, 302, 303, 307, 308) and location:
            target = urljoin(url, location)
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https"):
                return _failure(f"Get {url}: redirect to unsupported {target}")
            if parts.hostname != first_host:
                # As the kubelet: not followed, and a 3xx is a success.
                return ProbeResult(Result.SUCCESS,
                                   f"probe terminated redirects: {url} → {target}")
            url = target
            continue
        if 200 <= status < 400:
            return SUCCESS
        detail = body.decode("utf-8", "replace").strip()
        return _failure(f"HTTP probe failed with statuscode: {status}"
                        + (f": {detail[:200]}" if detail else ""))
    return _failure(f"Get {url}: stopped after {MAX_REDIRECTS} redirects")


def _get(url: str, headers: dict[str, str], timeout: float) -> tuple[int, str, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # as the kubelet: probes do not verify
        conn = http.client.HTTPSConnection(host, parts.port or 443, timeout=timeout,
                                           context=context)
    else:
        conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        body = response.read(BODY_LIMIT) if response.status >= 400 else b""
        return response.status, response.getheader("Location") or "", body
    finally:
        conn.close()


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"connect: {e.strerror.lower()}"
    return str(e) or type(e).__name__


# --- exec through the runtime ---------------------------------------------------------


def runtime_exec(rt: Runtime, container_id: str, template: Process) -> ExecInContainer:
    """An ``ExecInContainer`` for a running container of ``rt``: each call starts
    ``template`` with the probe's args (so it gets the container's user, env, cwd),
    waits for it at most ``timeout`` seconds, and kills it if it is still running.

    It forks: in a process that runs threads, give the probe a callable that goes
    through the fork server instead. The caller must be the exec'd process' reaper
    (its parent, or a child subreaper), as ``Runtime.exec`` says.
    """

    def run(args: tuple[str, ...], timeout: float) -> int:
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            pid = rt.exec(container_id, template._replace(args=args, terminal=False),
                          stdio=(devnull, devnull, devnull))
        finally:
            os.close(devnull)
        return wait_with_timeout(pid, timeout)

    return run
