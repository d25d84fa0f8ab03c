"""``build`` end to end without a container: FROM scratch, COPY, metadata, cache, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.images import BuildError, DockerfileError, ImageStore, InvalidReference, build
from runtime.images.imageview import ImageView


def make(tmp_path: Path, dockerfile: str, files: dict[str, str]) -> tuple[ImageStore, Path]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    for name, content in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(content)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ImageStore(tmp_path / "store"), ctx


DOCKERFILE = """\
ARG VERSION=1.0
FROM scratch
ARG VERSION
LABEL version=$VERSION
COPY --chmod=755 bin/ /usr/bin/
COPY etc/app.conf /etc/
WORKDIR /srv/data
ENV HOME=/srv
EXPOSE 8080
ENTRYPOINT ["/usr/bin/app"]
CMD ["--serve"]
"""


def test_scratch_image_with_copies(tmp_path: Path) -> None:
    store, ctx = make(tmp_path, DOCKERFILE, {"bin/app": "#!/bin/sh\n", "etc/app.conf": "x=1\n",
                                            "secret": "no"})
    lines: list[str] = []
    digest = build(store, ctx, tag="app:1", build_args={"VERSION": "2.0"},
                   progress=lines.append)
    assert store.resolve("app:1") == digest
    cfg = store.image_config("app:1")
    assert cfg.labels == {"version": "2.0"}
    assert cfg.entrypoint == ["/usr/bin/app"] and cfg.cmd == ["--serve"]
    assert cfg.working_dir == "/srv/data" and cfg.exposed_ports == ["8080/tcp"]
    assert "HOME=/srv" in cfg.env
    assert len(cfg.diff_ids) == 3  # two COPYs and the WORKDIR's directory
    view = ImageView(store.lower_dirs("app:1"))
    st = view.stat("/usr/bin/app")
    assert st is not None and st.st_mode & 0o777 == 0o755
    assert view.read_file("/etc/app.conf") == b"x=1\n"
    assert view.is_dir("/srv/data")
    assert view.lookup("secret") is None
    assert "Step 5/11: COPY --chmod=755 bin/ /usr/bin/" in lines

    # Unchanged: every step from the cache, the very same image.
    lines.clear()
    assert build(store, ctx, tag="app:1", build_args={"VERSION": "2.0"},
                 progress=lines.append) == digest
    assert lines.count(" ---> Using cache") == 3
    # Another build arg changes the label, and every step after it.
    assert build(store, ctx, tag="app:2", build_args={"VERSION": "3.0"}) != digest


def test_unused_build_arg_is_reported(tmp_path: Path) -> None:
    store, ctx = make(tmp_path, "FROM scratch\nENV A=1\n", {})
    lines: list[str] = []
    build(store, ctx, build_args={"NOPE": "1"}, progress=lines.append)
    assert any("NOPE" in line and "not used" in line for line in lines)


def test_errors_name_the_step(tmp_path: Path) -> None:
    store, ctx = make(tmp_path, "FROM scratch\nCOPY missing.txt /\n", {})
    with pytest.raises(BuildError, match=r"^Step 2/2: COPY missing.txt /: missing.txt: not "
                                         "found in the build context"):
        build(store, ctx)
    store, ctx = make(tmp_path, "FROM nosuchimage\n", {})
    with pytest.raises(BuildError, match="Step 1/1: FROM nosuchimage: image nosuchimage:latest not "
                                         "found"):
        build(store, ctx)
    store, ctx = make(tmp_path, "FROM scratch\nUSER a\nCOPY --chown=ghost Dockerfile /\n", {})
    with pytest.raises(BuildError, match="Step 3/3: .*user 'ghost' is not in the image"):
        build(store, ctx)
    store, ctx = make(tmp_path, "FROM scratch\nENV A=${B:?needs B}\n", {})
    with pytest.raises(BuildError, match="Step 2/2: ENV .*B: needs B"):
        build(store, ctx)
    store, ctx = make(tmp_path, "FROM scratch\nCMD x\nBOGUS\n", {})
    with pytest.raises(DockerfileError, match="line 3: unknown instruction 'BOGUS'"):
        build(store, ctx)
    with pytest.raises(InvalidReference, match="invalid image name"):
        build(store, ctx, tag="UPPER:case")
    with pytest.raises(BuildError, match="network 'bridge'"):
        build(store, ctx, network="bridge")
