"""A token service for a registry that uses bearer-token authentication, for tests.

The distribution registry's ``auth: token`` configuration sends clients to a
``realm`` for a JWT that grants repository actions. ``TokenServer`` is such a
realm on loopback: it checks Basic credentials against a fixed user table, grants
every action asked for in the ``scope`` parameters, and signs the token (RS256)
with a key whose self-signed certificate the registry trusts (its
``rootcertbundle``). The certificate travels in the JWT header's ``x5c`` chain,
which the registry checks against that bundle, so no key id has to be derived.

Keys are made with the ``openssl`` command, and each token is signed with
``openssl dgst``: the standard library has no RSA.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

SERVICE = "podium-test-registry"
ISSUER = "podium-test-token-issuer"
LIFETIME = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """An RSA key and its self-signed certificate, made with ``openssl`` in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = workdir / "token-key.pem"
        self.cert = workdir / "token-cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
             "-days", "2", "-subj", "/CN=podium test token issuer",
             "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True, timeout=60,
        )
        # A PEM body is the certificate's DER in standard base64: what x5c holds.
        lines = self.cert.read_text().split()
        begin = lines.index("CERTIFICATE-----")
        end = lines.index("-----END")
        self.x5c = "".join(lines[begin + 1:end])

    def sign(self, data: bytes) -> bytes:
        """An RSASSA-PKCS1-v1_5 signature with SHA-256 (JWS ``RS256``) over ``data``."""
        return subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=data, check=True, capture_output=True, timeout=30,
        ).stdout

    def jwt(self, claims: dict[str, object]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = (b64url(json.dumps(header).encode()) + "."
                         + b64url(json.dumps(claims).encode()))
        return signing_input + "." + b64url(self.sign(signing_input.encode()))


def access_for(scopes: list[str]) -> list[dict[str, object]]:
    """The JWT ``access`` claim granting every action of ``repository:NAME:a,b`` scopes."""
    granted: list[dict[str, object]] = []
    for scope in scopes:
        for one in scope.split(" "):  # a scope parameter may hold several
            kind, _, rest = one.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name and actions:
                granted.append({"type": kind, "name": name,
                                "actions": [a for a in actions.split(",") if a]})
    return granted


class TokenServer:
    """The token realm on 127.0.0.1 and a free port; ``requests`` records each query."""

    def __init__(self, key: SigningKey, users: dict[str, str]) -> None:
        self.key = key
        self.users = users
        self.requests: list[dict[str, list[str]]] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.realm = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def user_of(self, authorization: str | None) -> str | None:
        """The user a ``Basic`` Authorization header proves, or None."""
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if user in self.users and secrets.compare_digest(self.users[user], password):
            return user
        return None

    def token_for(self, user: str, service: str, scopes: list[str]) -> str:
        now = int(time.time())
        return self.key.jwt({
            "iss": ISSUER, "sub": user, "aud": service,
            "exp": now + LIFETIME, "nbf": now - 10, "iat": now,
            "jti": secrets.token_hex(16), "access": access_for(scopes),
        })

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                server.requests.append(query)
                if url.path != "/token":
                    return self._send(404, {"errors": [{"code": "NOT_FOUND"}]})
                user = server.user_of(self.headers.get("Authorization"))
                if user is None:
                    return self._send(401, {"errors": [{"code": "UNAUTHORIZED",
                                                        "message": "bad credentials"}]})
                service = query.get("service", [""])[0]
                if service != SERVICE:
                    return self._send(400, {"errors": [{"code": "DENIED",
                                                        "message": "unknown service"}]})
                token = server.token_for(user, service, query.get("scope", []))
                return self._send(200, {"token": token, "access_token": token,
                                        "expires_in": LIFETIME})

            def _send(self, status: int, doc: dict[str, object]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
