"""A real OCI registry on loopback for tests, and an OCI layout built without podium.

``Registry`` runs Debian's ``docker-registry`` (the distribution registry server)
on 127.0.0.1 and a free port, with its storage in a temporary directory and,
optionally, basic authentication from an htpasswd file or bearer-token
authentication from a token service (``token``: the registry's ``auth.token``
settings). ``make_oci_layout`` writes
an OCI image layout from a root filesystem with only the standard library, so a
second client (skopeo) can push an image podium had no hand in.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bcrypt_hash(password: str) -> str:
    """An htpasswd (bcrypt) hash, from the C library's crypt(3)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


class Registry:
    def __init__(self, workdir: Path, users: dict[str, str] | None = None,
                 token: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.users = users or {}
        self.token = token  # auth.token: realm, service, issuer, rootcertbundle
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        self.storage.mkdir(parents=True)
        auth = ""
        if self.users:
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in self.users.items()))
            auth = f"auth:\n  htpasswd:\n    realm: podium-test\n    path: {htpasswd}\n"
        elif self.token:
            auth = "auth:\n  token:\n" + "".join(f"    {k}: {v}\n" for k, v in self.token.items())
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n{auth}"
        )
        self.log = open(self.workdir / "registry.log", "wb")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("registry exited: " + self.log_text())
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return self
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("registry did not start: " + self.log_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        self.log.close()

    def log_text(self) -> str:
        return (self.workdir / "registry.log").read_text(errors="replace")[-2000:]

    def blob_data(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (distribution's storage layout)."""
        hexpart = digest.split(":")[1]
        return (self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart
                / "data")


def skopeo(*args: str, workdir: Path) -> str:
    policy = workdir / "policy.json"
    if not policy.exists():
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    result = subprocess.run(
        [shutil.which("skopeo") or "skopeo", "--policy", str(policy), *args],
        capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def make_oci_layout(rootfs: Path, dest: Path, tag: str, multi_arch: bool = False) -> str:
    """Write an OCI layout at ``dest`` holding ``rootfs`` as one gzip layer; the manifest digest.

    With ``multi_arch`` the tag points at an index listing the image for this machine
    and for another architecture.
    """
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest.split(":")[1]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(rootfs, arcname=".")
    layer_tar = raw.getvalue()
    layer = put(gzip.compress(layer_tar, mtime=0))
    config = put(json.dumps({
        "architecture": _arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin:/usr/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
    }).encode())
    manifest = put(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }).encode())
    top = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest}
    if multi_arch:
        other = "s390x" if _arch() != "s390x" else "ppc64le"
        index = put(json.dumps({"schemaVersion": 2,
                                "mediaType": "application/vnd.oci.image.index.v1+json",
                                "manifests": [
            {**top, "platform": {"os": "linux", "architecture": other}},
            {**top, "platform": {"os": "linux", "architecture": _arch()}},
        ]}).encode())
        top = {"mediaType": "application/vnd.oci.image.index.v1+json", **index}
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return str(manifest["digest"])


def need_registry_tools() -> None:
    """Debian's docker-registry and skopeo, or a skip (a failure under PODIUM_REQUIRE_ALL)."""
    import shutil

    from tests.conftest import need

    need(os.path.exists(REGISTRY_BIN), "needs Debian's docker-registry package")
    need(shutil.which("skopeo") is not None, "needs Debian's skopeo package")
