"""podium's registry client against a real registry that uses bearer-token authentication.

Debian's ``docker-registry`` runs with ``auth: token`` and trusts a certificate made
for the session; ``tests/support/token_server.py`` is its token realm. skopeo, an
independent client of the same flow, cross-checks what podium pushes and pulls.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.images import AuthError, Credentials, ImageStore, import_rootfs, pull, push
from tests.conftest import need
from tests.support.registry import (
    Registry,
    make_oci_layout,
    need_registry_tools,
    skopeo,
)
from tests.support.token_server import ISSUER, SERVICE, SigningKey, TokenServer, b64url

USER, PASSWORD = "alice", "s3cret"


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    need(shutil.which("openssl") is not None, "needs the openssl command")
    return SigningKey(tmp_path_factory.mktemp("token-key"))


@pytest.fixture
def token_server(signing_key: SigningKey) -> Iterator[TokenServer]:
    server = TokenServer(signing_key, {USER: PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture
def registry(tmp_dir: Path, token_server: TokenServer, signing_key: SigningKey
             ) -> Iterator[Registry]:
    need_registry_tools()
    reg = Registry(tmp_dir / "registry", token={
        "realm": token_server.realm, "service": SERVICE, "issuer": ISSUER,
        "rootcertbundle": str(signing_key.cert),
    }).start()
    yield reg
    reg.stop()


def _import_busybox(store: ImageStore, busybox_rootfs: Path, tmp_dir: Path) -> str:
    tarball = tmp_dir / "rootfs.tar"
    shutil.make_archive(str(tarball.with_suffix("")), "tar", busybox_rootfs)
    return import_rootfs(store, tarball, "busybox", config={"Cmd": ["sh"]})


def _scopes(server: TokenServer) -> list[str]:
    return [s for query in server.requests for s in query.get("scope", [])]


def test_registry_checks_the_tokens_it_is_given(
    registry: Registry, token_server: TokenServer
) -> None:
    """The setup is not vacuous: no token, or a token with a forged grant, is refused."""
    url = f"http://{registry.host}/v2/private/busybox/tags/list"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    challenge = refused.value.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and f'service="{SERVICE}"' in challenge
    assert 'scope="repository:private/busybox:pull"' in challenge

    token = token_server.token_for(USER, SERVICE, ["repository:private/busybox:pull"])
    header, claims, signature = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    doc["access"][0]["name"] = "private/other"
    forged = ".".join((header, b64url(json.dumps(doc).encode()), signature))
    for bearer, status in ((forged, 401), (token, 404)):  # 404: allowed in, no such repo
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {bearer}"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
        assert answer.value.code == status


def test_push_and_pull_with_a_token(
    registry: Registry, token_server: TokenServer, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    store = ImageStore(tmp_dir / "images")
    _import_busybox(store, busybox_rootfs, tmp_dir)
    target = f"{registry.host}/private/busybox:1"
    digest = push(store, "busybox", target, credentials=Credentials(USER, PASSWORD))
    assert {q.get("service", [""])[0] for q in token_server.requests} == {SERVICE}
    # One token, for what a push needs, serves every request of the push.
    assert _scopes(token_server) == ["repository:private/busybox:pull,push"]

    token_server.requests.clear()
    fresh = ImageStore(tmp_dir / "fresh")
    assert pull(fresh, target, credentials=Credentials(USER, PASSWORD)) == target
    assert fresh.resolve(target) == digest
    [top] = fresh.lower_dirs(target)
    assert (top / "bin/busybox").is_file() and os.readlink(top / "bin/sh") == "/bin/busybox"
    assert fresh.image_config(target).cmd == ["sh"]
    assert _scopes(token_server) == ["repository:private/busybox:pull"]


def test_wrong_or_missing_credentials_are_clear_errors(
    registry: Registry, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    store = ImageStore(tmp_dir / "images")
    _import_busybox(store, busybox_rootfs, tmp_dir)
    target = f"{registry.host}/private/busybox:1"
    with pytest.raises(AuthError, match=f"{registry.host}.*{USER}") as wrong:
        push(store, "busybox", target, credentials=Credentials(USER, "wrong"))
    assert "\n" not in str(wrong.value)
    with pytest.raises(AuthError, match=f"{registry.host}.*user name and password"):
        push(store, "busybox", target)
    push(store, "busybox", target, credentials=Credentials(USER, PASSWORD))
    with pytest.raises(AuthError, match=f"{registry.host}.*{USER}"):
        pull(ImageStore(tmp_dir / "other"), target, credentials=Credentials(USER, "wrong"))
    with pytest.raises(AuthError, match=f"{registry.host}.*user name and password"):
        pull(ImageStore(tmp_dir / "other"), target)


def test_skopeo_reads_what_podium_pushed_and_the_other_way(
    registry: Registry, busybox_rootfs: Path, tmp_dir: Path
) -> None:
    creds = f"{USER}:{PASSWORD}"
    store = ImageStore(tmp_dir / "images")
    _import_busybox(store, busybox_rootfs, tmp_dir)
    target = f"{registry.host}/podium/busybox:v1"
    digest = push(store, "busybox", target, credentials=Credentials(USER, PASSWORD))
    remote = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", creds,
                               f"docker://{target}", workdir=tmp_dir))
    assert remote["Digest"] == digest
    assert remote["Layers"] == [layer.digest for layer in store.manifest("busybox").layers]
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, f"docker://{target}",
           f"oci:{tmp_dir / 'back'}:v1", workdir=tmp_dir)
    assert (tmp_dir / "back/index.json").is_file()

    # skopeo pushes through the same flow; podium pulls it.
    layout = tmp_dir / "layout"
    pushed = make_oci_layout(busybox_rootfs, layout, "v2")
    theirs = f"{registry.host}/skopeo/busybox:v2"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{layout}:v2",
           f"docker://{theirs}", workdir=tmp_dir)
    pull(store, theirs, credentials=Credentials(USER, PASSWORD))
    assert store.resolve(theirs) == pushed
    assert (store.lower_dirs(theirs)[0] / "bin/busybox").is_file()
