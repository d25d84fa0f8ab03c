"""Manifests, indexes and configs: converted once, errors naming the field; the public API."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import runtime.images
from runtime.images import ManifestError, Platform
from runtime.images.errors import ContentError, ImageError
from runtime.images.oci import (
    OCI_INDEX,
    Descriptor,
    Index,
    kind_of,
    parse_config,
    parse_manifest,
    select_platform,
)

D = "sha256:" + "a" * 64


def manifest(**changes: object) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D,
                   "size": 1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D,
                    "size": 2}],
    }
    doc.update(changes)
    return json.dumps(doc).encode()


def test_parse_manifest() -> None:
    m = parse_manifest(manifest())
    assert m.config.digest == D and [layer.size for layer in m.layers] == [2]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schemaVersion": 1}, "schemaVersion"),
        ({"layers": None}, "layers"),
        ({"config": {"mediaType": "x", "digest": "sha256:zz", "size": 1}}, "config.digest"),
        ({"config": {"mediaType": "x", "digest": D, "size": -1}}, "config.size"),
        ({"layers": [{"mediaType": "text/html", "digest": D, "size": 1}]}, "layers[0]"),
        ({"mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
         "unknown media type"),
    ],
)
def test_bad_manifests_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("[", r"\[")):
        parse_manifest(manifest(**changes))


def test_kind_of_guesses_when_untyped() -> None:
    assert kind_of(b'{"manifests": []}') == OCI_INDEX
    with pytest.raises(ManifestError, match="not JSON"):
        kind_of(b"<html>")


def test_parse_config_defaults() -> None:
    cfg = parse_config(json.dumps({"rootfs": {"diff_ids": [D]}}).encode())
    assert (cfg.entrypoint, cfg.cmd, cfg.env, cfg.labels) == (None, None, [], {})
    with pytest.raises(ManifestError, match=r"diff_ids\[0\]"):
        parse_config(json.dumps({"rootfs": {"diff_ids": ["nope"]}}).encode())
    with pytest.raises(ManifestError, match="Cmd"):
        parse_config(json.dumps({"config": {"Cmd": [1]}, "rootfs": {"diff_ids": []}}).encode())


def _entry(arch: str, variant: str = "", digest: str = D) -> Descriptor:
    return Descriptor("application/vnd.oci.image.manifest.v1+json", digest, 1,
                      platform=Platform("linux", arch, variant))


def test_select_platform() -> None:
    b, c = "sha256:" + "b" * 64, "sha256:" + "c" * 64
    index = Index(OCI_INDEX, (_entry("arm", "v6"), _entry("arm", "v7", b), _entry("amd64", "", c),
                              Descriptor("x", D, 1, platform=Platform("unknown", "unknown"))))
    assert select_platform(index, Platform("linux", "arm", "v7")).digest == b
    assert select_platform(index, Platform("linux", "amd64")).digest == c
    with pytest.raises(ManifestError, match="linux/riscv64.*offered: linux/arm/v6"):
        select_platform(index, Platform("linux", "riscv64"))


def test_exception_tree() -> None:
    assert issubclass(ManifestError, ContentError) and issubclass(ContentError, ImageError)
    from runtime.errors import RuntimeError_
    assert issubclass(ImageError, RuntimeError_)


def test_public_names() -> None:
    assert runtime.images.__all__ == [
        "ArchiveError", "AuthError", "BuildError", "ContentError", "Credentials",
        "DEFAULT_ROOT", "DigestMismatch", "DockerfileError", "ImageConfig", "ImageError",
        "ImageInUse", "ImageNotFound", "ImageStore", "ImageSummary", "InvalidReference",
        "LayerError", "ManifestError", "Platform", "ProcessArgsError", "Progress",
        "PruneReport", "Reference", "RegistryClient", "RegistryError", "TextProgress",
        "UnsafeLayer", "build",
        "host_platform", "import_rootfs", "load_archive", "normalize", "parse_reference",
        "pull", "push", "resolve_process_args", "save_archive",
    ]
    for name in runtime.images.__all__:
        assert getattr(runtime.images, name) is not None


def test_importing_the_package_is_light() -> None:
    code = ("import sys, runtime.images; runtime.images.ImageStore; "
            "bad = [m for m in ('grpc', 'http.client', 'ssl', 'agent', 'scheduler', 'client') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
