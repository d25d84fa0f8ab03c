"""Dockerfile builds on the real kernel: RUN in podium's own containers, layers, cache.

The base is the busybox root filesystem imported as ``busybox:latest``; each built
image is then run with the Runtime over an overlay of its layers, and the test
looks at what each step left.
"""

from __future__ import annotations

import http.server
import io
import os
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.api import Runtime
from runtime.images import BuildError, ImageStore, build, import_rootfs
from runtime.images import buildrun as buildrun_module
from runtime.images.dockerfile import DockerfileError
from runtime.images.imageview import ImageView, parse_passwd_user
from runtime.images.oci import parse_config
from runtime.images.process import resolve_process_args
from runtime.spec.model import ContainerConfig, Namespace, Overlay, Process, Root, User
from tests.conftest import need_root

MOUNTS = buildrun_module.BUILD_MOUNTS


@pytest.fixture
def store(tmp_dir: Path, busybox_rootfs: Path) -> ImageStore:
    need_root()
    tarball = tmp_dir / "busybox.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(busybox_rootfs, arcname=".")
    images = ImageStore(tmp_dir / "images")
    import_rootfs(images, tarball, "busybox:latest")
    return images


@pytest.fixture
def context(tmp_dir: Path) -> Path:
    ctx = tmp_dir / "ctx"
    ctx.mkdir()
    return ctx


class Builder:
    """``build`` with this test's runtime root and cgroup parent; output lines kept."""

    def __init__(self, store: ImageStore, tmp_dir: Path, cgroup_parent: str) -> None:
        self.store = store
        self.runtime_root = tmp_dir / "build-runtime"
        self.cgroup_parent = cgroup_parent
        self.lines: list[str] = []

    def __call__(self, context: Path, dockerfile: str, tag: str = "test:1",
                 **kw: object) -> str:
        (context / "Dockerfile").write_text(dockerfile)
        self.lines = []
        return build(self.store, context, tag=tag, progress=self.lines.append,
                     runtime_root=self.runtime_root, cgroup_parent=self.cgroup_parent,
                     **kw)  # type: ignore[arg-type]


@pytest.fixture
def builder(store: ImageStore, tmp_dir: Path, cgroup_parent: str) -> Builder:
    return Builder(store, tmp_dir, cgroup_parent)


def run_image(store: ImageStore, name: str, tmp_dir: Path, cgroup_parent: str,
              args: list[str] | None = None) -> str:
    """Run the image's command (or ``args``) as the image says; its combined output."""
    cfg = store.image_config(name)
    lower = store.lower_dirs(name)
    user = User()
    if cfg.user:
        uid, gid, _ = parse_passwd_user(ImageView(lower), cfg.user)
        user = User(uid=uid, gid=gid)
    scratch = tmp_dir / f"run-{time.monotonic_ns()}"
    for d in ("upper", "work", "merged"):
        (scratch / d).mkdir(parents=True)
    config = ContainerConfig(
        oci_version="1.2.0",
        process=Process(args=tuple(args or resolve_process_args(cfg.entrypoint, cfg.cmd)),
                        env=tuple(cfg.env), cwd=cfg.working_dir or "/", user=user),
        root=Root(path=scratch / "merged", overlay=Overlay(
            lower=tuple(lower), upper=scratch / "upper", work=scratch / "work")),
        mounts=MOUNTS,
        namespaces=tuple(Namespace(t) for t in ("pid", "ipc", "uts", "mount", "network")),
    )
    rt = Runtime(root=tmp_dir / "run-state", cgroup_parent=cgroup_parent)
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        state = rt.create(f"built-{time.monotonic_ns()}", config, stdio=(null, w, w))
    finally:
        os.close(w)
        os.close(null)
    rt.start(state.id)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(state.pid, 0)
    rt.delete(state.id)
    return b"".join(chunks).decode()


DOCKERFILE = """\
# the test image
FROM busybox
ENV GREETING=hello \\
    PLACE=world
RUN echo built > /built.txt && echo "run says $GREETING" \\
    && mkdir /gone && echo x > /gone/file && echo bye > /removed.txt
COPY app.txt /app/
RUN rm /removed.txt && rm -r /gone
WORKDIR /app/work
USER user
RUN id -u > /tmp/uid
CMD ["sh", "-c", "cat /built.txt /app/app.txt /tmp/uid; echo env=$GREETING-$PLACE; pwd; id -u; \
test -e /removed.txt && echo removed:present || echo removed:absent; \
test -e /gone && echo gone:present || echo gone:absent"]
"""


def test_build_then_run_shows_each_step(builder: Builder, store: ImageStore, context: Path,
                                        tmp_dir: Path, cgroup_parent: str) -> None:
    (context / "app.txt").write_text("copied content\n")
    digest = builder(context, DOCKERFILE)
    assert store.resolve("test:1") == digest
    assert "run says hello" in builder.lines  # RUN's output reached progress
    assert "Step 5/9: RUN rm /removed.txt && rm -r /gone" in builder.lines
    cfg = store.image_config("test:1")
    assert cfg.user == "user" and cfg.working_dir == "/app/work"
    assert "GREETING=hello" in cfg.env and "PLACE=world" in cfg.env
    assert len(cfg.diff_ids) == 6  # busybox + RUN, COPY, RUN, WORKDIR, RUN
    out = run_image(store, "test:1", tmp_dir, cgroup_parent).split()
    assert out == ["built", "copied", "content", "1000", "env=hello-world", "/app/work", "1000",
                   "removed:absent", "gone:absent"]


def test_deleting_in_a_later_layer_is_a_whiteout(builder: Builder, store: ImageStore,
                                                  context: Path) -> None:
    (context / "app.txt").write_text("x")
    builder(context, DOCKERFILE)
    manifest = store.manifest("test:1")
    with tarfile.open(store.blob_path(manifest.layers[3].digest)) as tar:  # the RUN rm layer
        names = set(tar.getnames())
    assert {".wh.removed.txt", ".wh.gone"} <= names
    lower = store.lower_dirs("test:1")
    assert (lower[-2] / "removed.txt").exists()  # still in the first RUN's layer (top first)
    view = ImageView(lower)
    assert view.lookup("removed.txt") is None and view.lookup("gone/file") is None


def test_rebuild_uses_the_cache_and_runs_nothing(builder: Builder, store: ImageStore,
                                                 context: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (context / "app.txt").write_text("copied content\n")
    first = builder(context, DOCKERFILE)

    def no_containers(*args: object, **kw: object) -> None:
        raise AssertionError("a cached build ran a container")

    monkeypatch.setattr(buildrun_module, "run_step", no_containers)
    started = time.monotonic()
    second = builder(context, DOCKERFILE)
    elapsed = time.monotonic() - started
    assert second == first  # the same layers and timestamps: the very same image
    assert elapsed < 1.0, elapsed
    assert "run says hello" not in builder.lines
    assert builder.lines.count(" ---> Using cache") == 5  # RUN, COPY, RUN, WORKDIR, RUN
    # A changed source misses from the COPY on, and only from there.
    monkeypatch.undo()
    (context / "app.txt").write_text("changed\n")
    third = builder(context, DOCKERFILE)
    assert third != first
    assert builder.lines.count(" ---> Using cache") == 1


def test_failing_run_names_the_step_and_leaves_nothing(builder: Builder, store: ImageStore,
                                                        context: Path) -> None:
    layers_before = set(os.listdir(store.layers_dir))
    with pytest.raises(BuildError) as e:
        builder(context, "FROM busybox\nENV A=1\nRUN echo one; echo oops >&2; exit 3\n"
                         "CMD sh\n", tag="broken:1")
    message = str(e.value)
    assert message.startswith("Step 3/4: RUN echo one; echo oops >&2; exit 3: ")
    assert "exit code 3" in message and "oops" in message
    assert e.value.exit_code == 3 and "one" in e.value.output
    assert "broken:1" not in " ".join(store.names())
    assert not (store.root / "build-tmp").exists()
    assert not builder.runtime_root.exists() or os.listdir(builder.runtime_root) == []
    assert set(os.listdir(store.layers_dir)) == layers_before
    # the cgroup, mounts and processes: the autouse leak check


def test_unknown_instruction_fails_with_its_line(builder: Builder, store: ImageStore,
                                                 context: Path) -> None:
    with pytest.raises(DockerfileError, match=r"line 3: unknown instruction 'FROBNICATE'"):
        builder(context, "FROM busybox\nRUN true\nFROBNICATE now\n")
    assert not (store.root / "build-cache.json").exists()  # nothing ran


def test_network_is_off_unless_the_host_is_asked_for(builder: Builder, store: ImageStore,
                                                     context: Path) -> None:
    dockerfile = "FROM busybox\nRUN ls /sys/class/net | tr '\\n' ' '\n"
    builder(context, dockerfile)
    assert "lo " in builder.lines  # a new network namespace: only its loopback
    builder(context, dockerfile, network="host", no_cache=True)
    host = sorted(os.listdir("/sys/class/net"))
    assert sorted(os.listdir("/sys/class/net")) != ["lo"]
    assert any(line.split() == host for line in builder.lines), builder.lines


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_dir: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_dir / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(root)))  # type: ignore[misc]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_add_fetches_urls_and_extracts_archives(builder: Builder, store: ImageStore,
                                                context: Path,
                                                http_dir: tuple[Path, str]) -> None:
    www, url = http_dir
    (www / "remote.txt").write_text("from the web\n")
    data = b"inside the archive\n"
    with tarfile.open(context / "bundle.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("pkg/readme")
        info.size, info.uid, info.mode = len(data), 42, 0o640
        tar.addfile(info, io.BytesIO(data))
    (context / "plain.txt").write_text("plain\n")
    builder(context, f"FROM busybox\nADD {url}/remote.txt /dl/\nADD bundle.tar.gz /opt/\n"
                     "ADD plain.txt /plain\n")
    view = ImageView(store.lower_dirs("test:1"))
    assert view.read_file("/dl/remote.txt") == b"from the web\n"
    st = view.stat("/dl/remote.txt")
    assert st is not None and st.st_mode & 0o777 == 0o600  # as Docker gives a download
    assert view.read_file("/opt/pkg/readme") == data
    readme = view.stat("/opt/pkg/readme")
    assert readme is not None and readme.st_uid == 42 and readme.st_mode & 0o777 == 0o640
    assert view.read_file("/plain") == b"plain\n"


def test_multi_stage_copy_from(builder: Builder, store: ImageStore, context: Path) -> None:
    builder(context, "ARG BASE=busybox\nFROM $BASE AS make\nRUN echo artifact > /out.bin\n"
                     "FROM ${BASE}\nCOPY --from=make --chown=user /out.bin /srv/\n"
                     "LABEL stage=final\n")
    cfg = store.image_config("test:1")
    assert cfg.labels == {"stage": "final"}
    assert len(cfg.diff_ids) == 2  # busybox and the COPY: the first stage's RUN is not here
    view = ImageView(store.lower_dirs("test:1"))
    assert view.read_file("/srv/out.bin") == b"artifact\n"
    st = view.stat("/srv/out.bin")
    assert st is not None and st.st_uid == 1000
    history = parse_config(store.read_blob(store.manifest("test:1").config.digest))
    assert history.diff_ids == cfg.diff_ids
