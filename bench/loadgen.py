"""bench/service.py's load generator, run inside a node's network namespace.

    nsenter --net=NETNS python bench/loadgen.py

Reads one JSON command a line on stdin and answers with JSON lines on stdout:
``load`` (threads making HTTP/1.0 GETs, one new TCP connection each, to targets
in turn or at random, from a given source address, for a duration from a common
start; with the namespace's TCP counters and the time per request), ``count`` and ``poll``
(ask one target until an answer names the wanted pod). Standard library only, so
it starts fast in the namespace.
"""

from __future__ import annotations

import json
import math
import random
import socket
import sys
import threading
import time
from collections import Counter
from typing import IO, Any

REQUEST = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"
REQUEST_TIMEOUT = 3.0  # seconds; longer is an error
POLL_THREADS, POLL_PAUSE = 2, 0.002


def fetch(addr: tuple[str, int], source: str = "") -> str:
    """One GET on a new connection (from the ``source`` address when given); the body
    (a pod's name), or an exception."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(REQUEST_TIMEOUT)
        if source:
            s.bind((source, 0))
        s.connect(addr)
        s.sendall(REQUEST)
        chunks = []
        while data := s.recv(4096):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b" ", 2)
    if len(status) < 2 or status[1] != b"200":
        raise ValueError(f"answer {head[:40]!r}")
    return body.decode(errors="replace").strip()


def _error_kind(e: Exception) -> str:
    return type(e).__name__


# Counters of this network namespace's TCP stack that say why connections stall:
# a SYN sent again (a second lost per connection) and resets sent.
TCP_COUNTERS = {"TcpExt": ("TCPSynRetrans", "TCPTimeouts"), "Tcp": ("OutRsts", "AttemptFails")}


def tcp_counters() -> dict[str, int]:
    """The namespace's ``TCP_COUNTERS`` from /proc/net/netstat and /proc/net/snmp."""
    found: dict[str, int] = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        with open(path) as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=True):
            group, _, keys = names.partition(": ")
            wanted = TCP_COUNTERS.get(group, ())
            for key, value in zip(keys.split(), values.partition(": ")[2].split(), strict=True):
                if key in wanted:
                    found[key] = int(value)
    return found


def load(targets: list[tuple[str, int]], threads: int, start_at: float,
         duration: float, shuffle: bool = False, source: str = "") -> dict[str, Any]:
    """``threads`` clients, each cycling over ``targets`` (offset by its index; drawn at
    random if ``shuffle``), from ``start_at`` (monotonic) for ``duration`` s, from the
    ``source`` address if given; only requests completed in time count. With the
    counts: the namespace's ``TCP_COUNTERS`` over the run, and the time per request."""
    end = start_at + duration
    lock = threading.Lock()
    ok, errors, bodies = [0], Counter[str](), Counter[str]()
    took: list[float] = []  # seconds per request completed in time

    def client(index: int) -> None:
        mine_ok, mine_errors, mine_bodies = 0, Counter[str](), Counter[str]()
        mine_took: list[float] = []
        k = index
        draw = random.Random()
        while (now := time.monotonic()) < start_at:
            time.sleep(min(0.01, start_at - now))
        while True:
            addr = draw.choice(targets) if shuffle else targets[k % len(targets)]
            k += 1
            began = time.monotonic()
            try:
                body = fetch(addr, source)
            except (OSError, ValueError) as e:
                if time.monotonic() < end:
                    mine_errors[_error_kind(e)] += 1
            else:
                if (done := time.monotonic()) < end:
                    mine_ok += 1
                    mine_bodies[body] += 1
                    mine_took.append(done - began)
            if time.monotonic() >= end:
                break
        with lock:
            ok[0] += mine_ok
            errors.update(mine_errors)
            bodies.update(mine_bodies)
            took.extend(mine_took)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    before = tcp_counters()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    after = tcp_counters()
    took.sort()
    return {"ok": ok[0], "errors": dict(errors), "bodies": dict(bodies),
            "tcp": {k: after[k] - before[k] for k in after},
            "took_ms": {"p50": _rank(took, 0.5), "p99": _rank(took, 0.99),
                        "max": _rank(took, 1.0)}}


def _rank(ordered: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted seconds, in ms."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 2)


def poll(target: tuple[str, int], want: str, timeout: float, out: IO[str]) -> None:
    """Asks ``target`` until an answer names ``want``; says when polling began, then
    the monotonic time of that answer (None after ``timeout`` s)."""
    found = threading.Event()
    hit: list[float] = []
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    began = time.monotonic()

    def client() -> None:
        while not found.is_set() and time.monotonic() - began < timeout:
            try:
                body = fetch(target)
            except (OSError, ValueError) as e:
                body = f"error:{_error_kind(e)}"
            now = time.monotonic()
            with lock:
                counts[body] += 1
                if body == want and not hit:
                    hit.append(now)
                    found.set()
            time.sleep(POLL_PAUSE)

    workers = [threading.Thread(target=client) for _ in range(POLL_THREADS)]
    for w in workers:
        w.start()
    print(json.dumps({"polling": began}), file=out, flush=True)
    for w in workers:
        w.join()
    print(json.dumps({"hit": hit[0] if hit else None, "counts": dict(counts)}),
          file=out, flush=True)


def worker_main() -> int:
    """One JSON command a line on stdin, the answers as JSON lines on stdout."""
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "load":
            targets = [(str(ip), int(port)) for ip, port in cmd["targets"]]
            answer = load(targets, int(cmd["threads"]), float(cmd["start_at"]),
                          float(cmd["duration"]), bool(cmd.get("shuffle")),
                          str(cmd.get("source", "")))
            print(json.dumps(answer), flush=True)
        elif cmd["op"] == "count":
            addr = (str(cmd["target"][0]), int(cmd["target"][1]))
            print(json.dumps(load([addr], 1, time.monotonic(), float(cmd["duration"]))),
                  flush=True)
        elif cmd["op"] == "poll":
            poll((str(cmd["target"][0]), int(cmd["target"][1])), str(cmd["want"]),
                 float(cmd["timeout"]), sys.stdout)
        else:
            print(json.dumps({"error": f"unknown op {cmd['op']!r}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
