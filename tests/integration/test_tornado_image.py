"""The Tornado example's image (examples/Dockerfile.tornado), built and served by podium.

Dockerfile.tornado starts FROM a Python image from Docker Hub and pip-installs
Tornado; without a registry the same image comes from Debian's packages:
``podium/python:3`` is a debootstrap (minbase) root filesystem with python3 and
python3-tornado, made by ``deploy/images.sh python``. The script keeps that
root filesystem as a tarball in /var/cache/podium, so only the first run on a
machine downloads Debian (about a minute); later runs import the cached tarball
into this test's own store (a few seconds).

The test builds ``FROM podium/python:3`` with a ``web.py`` that answers with its
host name on port 8888, runs the image's Cmd with the Runtime in a network
namespace of its own (``ip netns add``), asks it over HTTP from inside that
namespace, and removes the container and the namespace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.api import Runtime
from runtime.images import ImageStore, build, resolve_process_args
from runtime.images.buildrun import BUILD_MOUNTS
from runtime.spec.model import ContainerConfig, Namespace, Overlay, Process, Root
from tests.conftest import need, need_root

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PODIUM_CACHE", "/var/cache/podium"))
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
PYTHON_TARBALL = CACHE / "python3-bookworm.tar.gz"  # deploy/images.sh's cache
HOSTNAME = "tornado-1"

WEB_PY = """\
import asyncio
import socket

import tornado.web


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write("hello from %s\\n" % socket.gethostname())


async def main():
    tornado.web.Application([(r"/", Hello)]).listen(8888)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
"""

DOCKERFILE = """\
FROM podium/python:3
RUN python3 -c "import tornado; print('tornado', tornado.version)"
WORKDIR /app
COPY web.py .
CMD ["python3", "web.py"]
EXPOSE 8888
"""

# Run inside the pod's network namespace: one HTTP GET, its answer as a JSON line.
ASK = """\
import json, urllib.request
with urllib.request.urlopen("http://127.0.0.1:8888/", timeout=2) as r:
    print(json.dumps({"status": r.status, "server": r.headers.get("Server"),
                      "body": r.read().decode()}))
"""


def _mirror_reachable() -> bool:
    try:
        urllib.request.urlopen(f"{MIRROR}/dists/bookworm/Release", timeout=10).close()
        return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def store(tmp_dir: Path) -> ImageStore:
    """A store holding podium/python:3, made by deploy/images.sh (debootstrap once)."""
    need_root()
    need(PYTHON_TARBALL.exists() or _mirror_reachable(),
         f"podium/python:3 is not cached in {CACHE} and Debian's mirror {MIRROR} cannot be "
         "reached to debootstrap it")
    root = tmp_dir / "images"
    made = subprocess.run(["bash", str(REPO / "deploy/images.sh"), "python"],
                          env={**os.environ, "PODIUM_IMAGE_STORE": str(root),
                               "PODIUM_CACHE": str(CACHE)},
                          capture_output=True, text=True, timeout=1200)
    assert made.returncode == 0, f"deploy/images.sh python failed: {made.stderr[-2000:]}"
    return ImageStore(root)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace with loopback up; its name (``pt…``)."""
    need_root()
    name = f"pt{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def ask(netns: str) -> dict[str, object] | None:
    """The web app's answer from inside ``netns``, or None while nothing listens."""
    result = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", ASK],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return None
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def test_tornado_image_builds_and_serves(store: ImageStore, netns: str, tmp_dir: Path,
                                         cgroup_parent: str) -> None:
    context = tmp_dir / "context"
    context.mkdir()
    (context / "web.py").write_text(WEB_PY)
    (context / "Dockerfile").write_text(DOCKERFILE)
    lines: list[str] = []
    build(store, context, tag="tornado-web:1", progress=lines.append,
          runtime_root=tmp_dir / "build-runtime", cgroup_parent=cgroup_parent)
    assert any(line.startswith("tornado 6.") for line in lines), lines  # RUN saw Debian's
    cfg = store.image_config("tornado-web:1")
    assert cfg.cmd == ["python3", "web.py"]
    assert cfg.working_dir == "/app"
    assert "8888/tcp" in cfg.exposed_ports

    scratch = tmp_dir / "run"
    for d in ("upper", "work", "merged"):
        (scratch / d).mkdir(parents=True)
    config = ContainerConfig(
        oci_version="1.2.0",
        process=Process(args=tuple(resolve_process_args(cfg.entrypoint, cfg.cmd)),
                        env=tuple(cfg.env), cwd=cfg.working_dir or "/"),
        root=Root(path=scratch / "merged", overlay=Overlay(
            lower=tuple(store.lower_dirs("tornado-web:1")), upper=scratch / "upper",
            work=scratch / "work")),
        hostname=HOSTNAME,
        mounts=BUILD_MOUNTS,
        namespaces=(*(Namespace(t) for t in ("pid", "ipc", "uts", "mount")),
                    Namespace("network", f"/run/netns/{netns}")),
    )
    rt = Runtime(root=tmp_dir / "state", cgroup_parent=cgroup_parent)
    log = tmp_dir / "web.log"
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        state = rt.create("tornado-web", config, stdio=(null, out, out))
    finally:
        os.close(out)
        os.close(null)
    exited = False
    try:
        rt.start(state.id)
        answer = None
        deadline = time.monotonic() + 30
        while answer is None and time.monotonic() < deadline:
            pid, _ = os.waitpid(state.pid, os.WNOHANG)
            if pid:
                exited = True
                pytest.fail(f"web.py exited before serving: {log.read_text()[-2000:]}")
            answer = ask(netns)
            if answer is None:
                time.sleep(0.2)
        assert answer is not None, f"nothing answered on 8888 in 30 s: {log.read_text()[-2000:]}"
        assert answer["status"] == 200
        assert answer["body"] == f"hello from {HOSTNAME}\n"
        assert str(answer["server"]).startswith("TornadoServer/")
    finally:
        # web.py is pid 1 of its namespace: SIGTERM without a handler would be ignored.
        if not exited:
            rt.kill(state.id, signal.SIGKILL)
            os.waitpid(state.pid, 0)
        rt.delete(state.id)
