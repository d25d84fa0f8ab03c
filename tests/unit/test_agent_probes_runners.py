"""The probe runners against fakes and against real loopback servers (no root)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.pods.probe_runners import (
    ExecCheck,
    HTTPGetCheck,
    ProbeResult,
    ProbeRunner,
    Result,
    TCPSocketCheck,
    runtime_exec,
    wait_with_timeout,
)
from runtime.spec.model import Process, User

LOOPBACK = "127.0.0.1"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        port = self.server.server_address[1]
        routes = {
            "/ok": (200, {}),
            "/fail": (500, {}),
            "/missing": (404, {}),
            "/redirect": (302, {"Location": "/ok"}),
            "/redirect-abs": (301, {"Location": f"http://{LOOPBACK}:{port}/ok"}),
            "/redirect-to-fail": (307, {"Location": "/fail"}),
            "/loop": (302, {"Location": "/loop"}),
            "/away": (302, {"Location": "http://elsewhere.invalid/ok"}),
            "/not-modified": (304, {}),
        }
        if self.path == "/slow":
            time.sleep(1.5)
            status, headers = 200, {}
        elif self.path == "/header":
            good = (self.headers.get("X-Probe") == "yes"
                    and self.headers.get("User-Agent", "").startswith("podium-probe"))
            status, headers = (200 if good else 403), {}
        else:
            status, headers = routes.get(self.path, (404, {}))
        body = b"server says no\n" if status >= 400 else b""
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the slow route's client gave up: that is the point

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
    return port


runner = ProbeRunner(LOOPBACK)


@pytest.mark.parametrize(("path", "result", "words"), [
    ("/ok", Result.SUCCESS, ""),
    ("/not-modified", Result.SUCCESS, ""),
    ("/fail", Result.FAILURE, "HTTP probe failed with statuscode: 500: server says no"),
    ("/missing", Result.FAILURE, "statuscode: 404"),
    ("/redirect", Result.SUCCESS, ""),
    ("/redirect-abs", Result.SUCCESS, ""),
    ("/redirect-to-fail", Result.FAILURE, "statuscode: 500"),
    ("/loop", Result.FAILURE, "stopped after 10 redirects"),
    ("/away", Result.SUCCESS, "probe terminated redirects"),
])
def test_http_get(http_port: int, path: str, result: Result, words: str) -> None:
    outcome = runner(HTTPGetCheck(http_port, path), 1.0)
    assert outcome.result is result
    assert words in outcome.message


def test_http_get_sends_the_probe_headers(http_port: int) -> None:
    assert runner(HTTPGetCheck(http_port, "/header"), 1.0).result is Result.FAILURE
    check = HTTPGetCheck(http_port, "/header", headers=(("X-Probe", "yes"),))
    assert runner(check, 1.0) == ProbeResult(Result.SUCCESS)


def test_http_get_times_out(http_port: int) -> None:
    started = time.monotonic()
    outcome = runner(HTTPGetCheck(http_port, "/slow"), 0.3)
    assert time.monotonic() - started < 1.2
    assert outcome.result is Result.FAILURE and "timed out after 0.3s" in outcome.message


def test_http_get_host_overrides_the_pod_ip(http_port: int) -> None:
    elsewhere = ProbeRunner("192.0.2.1")  # TEST-NET: would time out
    assert elsewhere(HTTPGetCheck(http_port, "/ok", host=LOOPBACK), 1.0).result is Result.SUCCESS


def test_http_get_refused() -> None:
    port = closed_port()
    outcome = runner(HTTPGetCheck(port, "/"), 1.0)
    assert outcome.result is Result.FAILURE
    assert outcome.message == f"Get http://{LOOPBACK}:{port}/: connect: connection refused"


def test_https_against_plain_http_fails_cleanly(http_port: int) -> None:
    outcome = runner(HTTPGetCheck(http_port, "/ok", scheme="HTTPS"), 1.0)
    assert outcome.result is Result.FAILURE and outcome.message.startswith("Get https://")


def test_tcp_socket() -> None:
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert runner(TCPSocketCheck(port), 1.0) == ProbeResult(Result.SUCCESS)
    port = closed_port()
    outcome = runner(TCPSocketCheck(port), 1.0)
    assert outcome == ProbeResult(Result.FAILURE,
                                  f"dial tcp {LOOPBACK}:{port}: connect: connection refused")


def test_no_pod_ip_yet_is_unknown() -> None:
    nowhere = ProbeRunner("")
    assert nowhere(TCPSocketCheck(80), 1.0).result is Result.UNKNOWN
    assert nowhere(HTTPGetCheck(80), 1.0).result is Result.UNKNOWN


def test_exec_through_the_given_callable() -> None:
    calls: list[tuple[tuple[str, ...], float]] = []

    def exec_in(args: tuple[str, ...], timeout: float) -> int:
        calls.append((args, timeout))
        if args[0] == "slow":
            raise TimeoutError("still running")
        if args[0] == "broken":
            raise OSError("container c1 is stopped")
        return 0 if args[0] == "true" else 2

    probe = ProbeRunner(LOOPBACK, exec_in)
    assert probe(ExecCheck(("true",)), 1.5) == ProbeResult(Result.SUCCESS)
    assert calls == [(("true",), 1.5)]
    assert probe(ExecCheck(("false",)), 1.0) == ProbeResult(
        Result.FAILURE, "command ['false'] exited with 2")
    assert probe(ExecCheck(("slow",)), 1.0) == ProbeResult(
        Result.FAILURE, "command ['slow'] timed out after 1s")
    assert probe(ExecCheck(("broken",)), 1.0) == ProbeResult(
        Result.FAILURE, "command ['broken']: container c1 is stopped")
    assert runner(ExecCheck(("true",)), 1.0).result is Result.UNKNOWN  # no callable


def test_a_runner_never_raises() -> None:
    def explode(args: tuple[str, ...], timeout: float) -> int:
        raise KeyError("boom")

    assert ProbeRunner(LOOPBACK, explode)(ExecCheck(("x",)), 1.0).result is Result.FAILURE
    bad_host = ProbeRunner("no such host\x00")
    outcome = bad_host(TCPSocketCheck(80), 1.0)
    assert outcome.result is Result.FAILURE and outcome.message


# --- exec through a runtime: a fake one that spawns the process here ------------------


class FakeRuntime:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Process]] = []

    def exec(self, container_id: str, process: Process,
             stdio: tuple[int | None, int | None, int | None] = (None, None, None)) -> int:
        self.seen.append((container_id, process))
        self.pid = os.posix_spawnp(process.args[0], list(process.args), dict(os.environ),
                               file_actions=[(os.POSIX_SPAWN_DUP2, fd, i)
                                             for i, fd in enumerate(stdio) if fd is not None])
        return self.pid


def test_runtime_exec_runs_the_template_with_the_probe_args() -> None:
    rt = FakeRuntime()
    template = Process(args=("app",), cwd="/srv", user=User(1000, 1000), terminal=True)
    run = runtime_exec(rt, "c1", template)  # type: ignore[arg-type]
    assert run(("sh", "-c", "exit 3"), 5.0) == 3
    assert rt.seen == [("c1", template._replace(args=("sh", "-c", "exit 3"), terminal=False))]
    assert run(("true",), 5.0) == 0


def test_runtime_exec_kills_and_reaps_on_timeout() -> None:
    rt = FakeRuntime()
    run = runtime_exec(rt, "c1", Process(args=("x",)))  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        run(("sleep", "30"), 0.2)
    assert time.monotonic() - started < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(rt.pid, os.WNOHANG)  # killed and reaped: nothing left behind


def test_wait_with_timeout_reports_signals() -> None:
    pid = os.posix_spawnp("sh", ["sh", "-c", "kill -TERM $$"], dict(os.environ))
    assert wait_with_timeout(pid, 5.0) == 128 + 15
