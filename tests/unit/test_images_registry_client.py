"""The registry client's token flow and redirects, against a small in-process fake."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.images import AuthError, Credentials, ImageStore, pull
from runtime.images.digest import digest_bytes
from runtime.images.registry import RegistryClient, is_loopback
from tests.unit.test_images_store import tar_of

LAYER = tar_of({"hello": b"token flow"})
CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
                     "rootfs": {"type": "layers", "diff_ids": [digest_bytes(LAYER)]}}).encode()
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": digest_bytes(CONFIG), "size": len(CONFIG)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest_bytes(LAYER), "size": len(LAYER)}],
}).encode()
BLOBS = {digest_bytes(b): b for b in (LAYER, CONFIG)}
USER, PASSWORD, TOKEN = "alice", "pw", "tok-123"


class FakeRegistry(http.server.BaseHTTPRequestHandler):
    token_requests: list[dict[str, list[str]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/token":
            self.token_requests.append(urllib.parse.parse_qs(url.query))
            basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != basic:
                return self._send(401, b"{}")
            return self._send(200, json.dumps({"token": TOKEN}).encode())
        if url.path.startswith("/storage/"):
            return self._send(200, BLOBS["sha256:" + url.path.rsplit("/", 1)[1]])
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            host = self.headers["Host"]
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}/token",'
                             'service="fake",scope="repository:team/app:pull"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if url.path == "/v2/team/app/manifests/1":
            return self._send(200, MANIFEST, "application/vnd.oci.image.manifest.v1+json")
        if url.path.startswith("/v2/team/app/blobs/"):
            digest = url.path.rsplit("/", 1)[1]
            self.send_response(307)  # as registries send blobs to their storage
            self.send_header("Location", f"/storage/{digest.split(':')[1]}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._send(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"no such"}]}')

    def _send(self, status: int, body: bytes, media_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeRegistry.token_requests = []
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_bearer_token_flow_and_redirected_blobs(fake: str, tmp_dir: Path) -> None:
    store = ImageStore(tmp_dir / "images")
    name = pull(store, f"{fake}/team/app:1", credentials=Credentials(USER, PASSWORD))
    assert store.image_config(name).cmd == ["/hello"]
    assert (store.lower_dirs(name)[0] / "hello").read_bytes() == b"token flow"
    assert FakeRegistry.token_requests[0] == {"service": ["fake"],
                                              "scope": ["repository:team/app:pull"]}


def test_token_service_refusal_is_an_auth_error(fake: str, tmp_dir: Path) -> None:
    with pytest.raises(AuthError, match="token service"):
        pull(ImageStore(tmp_dir / "images"), f"{fake}/team/app:1",
             credentials=Credentials(USER, "wrong"))


def test_registry_errors_carry_the_registry_message(fake: str, tmp_dir: Path) -> None:
    with pytest.raises(Exception, match="NAME_UNKNOWN"):
        pull(ImageStore(tmp_dir / "images"), f"{fake}/team/other:1",
             credentials=Credentials(USER, PASSWORD))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1:5000", True), ("localhost", True), ("localhost:80", True),
     ("[::1]:5000", True), ("127.8.9.1", True), ("example.test:5000", False),
     ("10.0.0.1:5000", False), ("[fe80::1]:5000", False)],
)
def test_plain_http_only_for_loopback_or_when_asked(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert RegistryClient(host).scheme == ("http" if loopback else "https")
    assert RegistryClient(host, insecure=True).scheme == "http"
