"""An OCI distribution (v2) registry client: requests, authentication, blobs, manifests.

Authentication follows the registry's ``WWW-Authenticate`` answer to a request:

- ``Basic``: the credentials go on every request to that registry;
- ``Bearer realm=…,service=…,scope=…`` (the token flow public registries use): the
  client asks ``realm`` for a token for the scope it needs (``pull``, or
  ``pull,push`` for a push) and the challenge's, with the credentials if any,
  caches it per scope and repeats the request with it. A token that expires is
  answered with a new challenge, and so renewed.

Plain http is used only when asked (``insecure``) or for a loopback registry, as
Docker does. Blob downloads follow redirects (registries send them to storage) and
resume with a Range request from what an earlier, interrupted attempt left.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import re
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import BinaryIO

from runtime.images.blobs import BlobWriter
from runtime.images.digest import CHUNK
from runtime.images.errors import AuthError, RegistryError
from runtime.images.oci import INDEX_TYPES, MANIFEST_TYPES
from runtime.images.progress import Progress

USER_AGENT = "podium/0.1"
_MAX_REDIRECTS = 5
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: BinaryIO
    connection: http.client.HTTPConnection

    def read(self) -> bytes:
        try:
            return self.body.read()
        finally:
            self.close()

    def close(self) -> None:
        self.connection.close()


def is_loopback(host: str) -> bool:
    """Whether ``host[:port]`` names this machine (``localhost``, 127.0.0.0/8, ``[::1]``)."""
    if host.startswith("["):
        name = host[1:host.find("]")]
    else:
        name = host.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RegistryClient:
    def __init__(
        self, host: str, credentials: Credentials | None = None, insecure: bool = False,
        timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.credentials = credentials
        self.scheme = "http" if insecure or is_loopback(host) else "https"
        self.timeout = timeout
        self._auth: str | None = None  # Authorization header learnt from a challenge
        self._tokens: dict[str, str] = {}

    # --- the API ------------------------------------------------------------------

    def get_manifest(self, repo: str, target: str) -> tuple[bytes, str]:
        """The bytes and media type of ``repo``'s manifest or index at a tag or digest."""
        accept = ", ".join(MANIFEST_TYPES + INDEX_TYPES)
        resp = self.request("GET", f"/v2/{repo}/manifests/{target}", repo,
                            headers={"Accept": accept})
        self._expect(resp, (200,), f"manifest {repo}:{target}")
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        return resp.read(), media_type

    def has_blob(self, repo: str, digest: str, push: bool = False) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", repo, push=push)
        resp.close()
        if resp.status == 404:
            return False
        self._expect(resp, (200,), f"blob {digest}")
        return True

    def fetch_blob(
        self, repo: str, digest: str, size: int, writer: BlobWriter,
        progress: Progress | None = None,
    ) -> None:
        """Download a blob into ``writer`` (resuming what it has) and commit it (verified)."""
        headers = {"Range": f"bytes={writer.offset}-"} if writer.offset else {}
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", repo, headers=headers)
        if resp.status == 416 or (resp.status == 200 and writer.offset):
            writer.restart()  # the server cannot resume: start over
            if resp.status == 416:
                resp.close()
                resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", repo)
        self._expect(resp, (200, 206), f"blob {digest}")
        try:
            while chunk := resp.body.read(CHUNK):
                writer.write(chunk)
                if progress:
                    progress.advance(digest[:19], writer.offset)
                if writer.offset > size:
                    break  # more than the manifest said: the digest check below fails it
        except (OSError, http.client.HTTPException) as e:
            raise RegistryError(f"blob {digest}: download interrupted at {writer.offset} "
                                f"bytes: {e}") from None
        finally:
            resp.close()
        if writer.offset < size:  # cut short: keep what came for the next attempt to resume
            raise RegistryError(f"blob {digest}: download ended at {writer.offset} of {size} "
                                "bytes; pull again to resume")
        writer.commit()

    def upload_blob(self, repo: str, digest: str, size: int, data: BinaryIO) -> None:
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", repo, push=True)
        resp.read()
        self._expect(resp, (202,), f"upload of {digest}")
        location = resp.headers.get("location", "")
        if not location:
            raise RegistryError(f"upload of {digest}: the registry gave no upload location")
        url = urllib.parse.urljoin(f"{self.scheme}://{self.host}/", location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        resp = self.request("PUT", url, repo, push=True, body=data, headers={
            "Content-Type": "application/octet-stream", "Content-Length": str(size)})
        resp.read()
        self._expect(resp, (201, 204), f"upload of {digest}")

    def put_manifest(self, repo: str, target: str, data: bytes, media_type: str) -> None:
        resp = self.request("PUT", f"/v2/{repo}/manifests/{target}", repo, push=True,
                            body=data, headers={"Content-Type": media_type,
                                                "Content-Length": str(len(data))})
        body = resp.read()
        self._expect(resp, (200, 201, 202), f"manifest {repo}:{target}", body)

    # --- requests, redirects, authentication ------------------------------------------

    def request(
        self, method: str, path_or_url: str, repo: str, headers: dict[str, str] | None = None,
        body: BinaryIO | bytes | None = None, push: bool = False,
    ) -> Response:
        url = path_or_url if "://" in path_or_url else f"{self.scheme}://{self.host}{path_or_url}"
        scope = f"repository:{repo}:{'pull,push' if push else 'pull'}"
        resp = self._send(method, url, headers or {}, body, self._authorization(scope))
        if resp.status == 401:
            challenge = resp.headers.get("www-authenticate", "")
            resp.read()
            self._answer(challenge, scope)
            if body is not None and not isinstance(body, bytes):
                body.seek(0)  # the first attempt may have sent some of it
            resp = self._send(method, url, headers or {}, body, self._authorization(scope))
            if resp.status in (401, 403):
                resp.read()
                who = (f"as {self.credentials.username}" if self.credentials
                       else "anonymously; it needs a user name and password")
                raise AuthError(f"{self.host}: access to {repo} refused {who} "
                                f"({resp.status})", resp.status)
        return resp

    def _authorization(self, scope: str) -> str | None:
        return self._tokens.get(scope) or self._auth

    def _answer(self, challenge: str, scope: str) -> None:
        kind = challenge.split(" ", 1)[0].lower()
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        if kind == "basic":
            if self.credentials is None:
                raise AuthError(f"{self.host}: needs a user name and password", 401)
            self._auth = self.credentials.basic()
        elif kind == "bearer":
            scopes = _scopes(scope, params.get("scope"))
            self._tokens[scope] = "Bearer " + self._token(params, scopes)
        else:
            raise AuthError(f"{self.host}: unsupported authentication {challenge!r}", 401)

    def _token(self, params: dict[str, str], scopes: list[str]) -> str:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"{self.host}: a Bearer challenge without a realm", 401)
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", scope) for scope in scopes]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        auth = self.credentials.basic() if self.credentials else None
        resp = self._send("GET", url, {}, None, auth)
        body = resp.read()
        if resp.status != 200:
            if self.credentials is None:
                problem = "needs a user name and password" if resp.status == 401 else "refused"
            elif resp.status == 401:
                problem = f"refused the password of {self.credentials.username}"
            else:
                problem = f"refused {self.credentials.username}"
            raise AuthError(f"{self.host}: the token service {realm} {problem} "
                            f"({resp.status}){_error_message(body)}", resp.status)
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthError(f"{self.host}: the token service {realm} sent no token", 401)
        return token

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: BinaryIO | bytes | None,
        authorization: str | None,
    ) -> Response:
        origin = urllib.parse.urlsplit(url).netloc
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            conn = self._connect(parts.scheme, parts.netloc)
            sent = dict(headers, **{"User-Agent": USER_AGENT, "Host": parts.netloc})
            if authorization and parts.netloc == origin:
                sent["Authorization"] = authorization  # never to a storage host we are sent to
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            try:
                conn.request(method, target or "/", body=body, headers=sent)
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise RegistryError(f"{method} {url}: {e}") from None
            resp = Response(raw.status, {k.lower(): v for k, v in raw.getheaders()},
                            raw, conn)
            if raw.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                resp.read()
                url = urllib.parse.urljoin(url, resp.headers.get("location", ""))
                continue
            return resp
        raise RegistryError(f"{method} {url}: more than {_MAX_REDIRECTS} redirects")

    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=self.timeout,
                                               context=ssl.create_default_context())
        if scheme != "http":
            raise RegistryError(f"unsupported URL scheme {scheme!r}")
        return http.client.HTTPConnection(netloc, timeout=self.timeout)

    def _expect(self, resp: Response, ok: tuple[int, ...], what: str,
                body: bytes | None = None) -> None:
        if resp.status in ok:
            return
        if body is None:
            body = resp.read()
        message = _error_message(body)
        if resp.status in (401, 403):
            raise AuthError(f"{self.host}: {what}: access refused ({resp.status}){message}",
                            resp.status)
        if resp.status == 404:
            raise RegistryError(f"{self.host}: {what}: not found{message}", 404)
        raise RegistryError(f"{self.host}: {what}: HTTP {resp.status}{message}", resp.status)


def _scopes(wanted: str, challenged: str | None) -> list[str]:
    """The scopes to ask a token for: ours, and the challenge's unless ours covers it.

    A push's first request (does the blob exist?) is challenged for ``pull`` only;
    asking for ``pull,push`` at once saves a second token for the upload.
    """
    if not challenged or challenged == wanted:
        return [wanted]
    resource, _, actions = wanted.rpartition(":")
    other, _, other_actions = challenged.rpartition(":")
    if resource == other and set(other_actions.split(",")) <= set(actions.split(",")):
        return [wanted]
    return [wanted, challenged]


def _error_message(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        return "".join(f": {e.get('code', '')} {e.get('message', '')}".rstrip()
                       for e in errors[:3])
    except (ValueError, AttributeError):
        return ""

