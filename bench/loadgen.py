"""bench/service.py's load generator, run inside a node's network namespace.

    nsenter --net=NETNS python bench/loadgen.py

Reads one JSON command a line on stdin and answers with JSON lines on stdout:
``load`` (threads making HTTP/1.0 GETs, one new TCP connection each, to targets
in turn or at random, for a duration from a common start), ``count`` and ``poll``
(ask one target until an answer names the wanted pod). Standard library only, so
it starts fast in the namespace.
"""

from __future__ import annotations

import json
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


def fetch(addr: tuple[str, int]) -> str:
    """One GET on a new connection; the body (a pod's name), or an exception."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(REQUEST_TIMEOUT)
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


def load(targets: list[tuple[str, int]], threads: int, start_at: float,
         duration: float, shuffle: bool = False) -> dict[str, Any]:
    """``threads`` clients, each cycling over ``targets`` (offset by its index; drawn at
    random if ``shuffle``), from ``start_at`` (monotonic) for ``duration`` s; only
    requests completed in time count."""
    end = start_at + duration
    lock = threading.Lock()
    ok, errors, bodies = [0], Counter[str](), Counter[str]()

    def client(index: int) -> None:
        mine_ok, mine_errors, mine_bodies = 0, Counter[str](), Counter[str]()
        k = index
        draw = random.Random()
        while (now := time.monotonic()) < start_at:
            time.sleep(min(0.01, start_at - now))
        while True:
            addr = draw.choice(targets) if shuffle else targets[k % len(targets)]
            k += 1
            try:
                body = fetch(addr)
            except (OSError, ValueError) as e:
                if time.monotonic() < end:
                    mine_errors[_error_kind(e)] += 1
            else:
                if time.monotonic() < end:
                    mine_ok += 1
                    mine_bodies[body] += 1
            if time.monotonic() >= end:
                break
        with lock:
            ok[0] += mine_ok
            errors.update(mine_errors)
            bodies.update(mine_bodies)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"ok": ok[0], "errors": dict(errors), "bodies": dict(bodies)}


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
                          float(cmd["duration"]), bool(cmd.get("shuffle")))
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
