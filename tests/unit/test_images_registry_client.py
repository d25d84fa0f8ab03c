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
from runtime.images.registry import RegistryClient, _scopes, is_loopback
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
USER, PASSWORD = "alice", "pw"


class FakeRegistry(http.server.BaseHTTPRequestHandler):
    token_requests: list[dict[str, list[str]]] = []
    valid_tokens: set[str] = set()  # clear it to expire every token issued so far

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/token":
            self.token_requests.append(urllib.parse.parse_qs(url.query))
            basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != basic:
                return self._send(401, b"{}")
            token = f"tok-{len(self.token_requests)}"
            self.valid_tokens.add(token)
            return self._send(200, json.dumps({"token": token, "expires_in": 300}).encode())
        if url.path.startswith("/storage/"):
            return self._send(200, BLOBS["sha256:" + url.path.rsplit("/", 1)[1]])
        bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.valid_tokens:
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

    def do_HEAD(self) -> None:  # noqa: N802 - the handler's protocol
        bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self.valid_tokens:
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{self.headers["Host"]}'
                             '/token",service="fake",scope="repository:team/app:pull"')
        else:
            digest = urllib.parse.urlsplit(self.path).path.rsplit("/", 1)[1]
            self.send_response(200 if digest in BLOBS else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

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
    FakeRegistry.valid_tokens = set()
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


def test_one_token_serves_every_request_of_a_pull(fake: str, tmp_dir: Path) -> None:
    pull(ImageStore(tmp_dir / "images"), f"{fake}/team/app:1",
         credentials=Credentials(USER, PASSWORD))
    assert len(FakeRegistry.token_requests) == 1  # manifest and both blobs


def test_a_push_asks_for_pull_and_push_at_once(fake: str) -> None:
    client = RegistryClient(fake, Credentials(USER, PASSWORD))
    # Challenged for pull only (does the blob exist?), the client asks for what a
    # push needs, so the upload that follows needs no second token.
    assert client.has_blob("team/app", digest_bytes(LAYER), push=True)
    assert not client.has_blob("team/app", digest_bytes(b"absent"), push=True)
    assert FakeRegistry.token_requests == [{"service": ["fake"],
                                            "scope": ["repository:team/app:pull,push"]}]


def test_an_expired_token_is_renewed(fake: str) -> None:
    client = RegistryClient(fake, Credentials(USER, PASSWORD))
    assert client.get_manifest("team/app", "1")[0] == MANIFEST
    FakeRegistry.valid_tokens.clear()
    assert client.get_manifest("team/app", "1")[0] == MANIFEST
    assert len(FakeRegistry.token_requests) == 2


def test_token_service_errors_name_the_registry_and_the_cause(fake: str) -> None:
    with pytest.raises(AuthError, match=f"{fake}: the token service .* needs a user name "
                                        "and password"):
        RegistryClient(fake).get_manifest("team/app", "1")
    with pytest.raises(AuthError, match=f"{fake}: the token service .* password of alice"):
        RegistryClient(fake, Credentials(USER, "wrong")).get_manifest("team/app", "1")


@pytest.mark.parametrize(
    ("wanted", "challenged", "asked"),
    [("repository:a/b:pull", None, ["repository:a/b:pull"]),
     ("repository:a/b:pull", "repository:a/b:pull", ["repository:a/b:pull"]),
     ("repository:a/b:pull,push", "repository:a/b:pull", ["repository:a/b:pull,push"]),
     ("repository:a/b:pull,push", "repository:a/b:push,pull", ["repository:a/b:pull,push"]),
     ("repository:a/b:pull", "repository:a/b:pull,push",
      ["repository:a/b:pull", "repository:a/b:pull,push"]),
     ("repository:a/b:pull", "registry:catalog:*",
      ["repository:a/b:pull", "registry:catalog:*"])],
)
def test_token_scopes(wanted: str, challenged: str | None, asked: list[str]) -> None:
    assert _scopes(wanted, challenged) == asked
