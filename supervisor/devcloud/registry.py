"""Registry tokens for a `docker-registry` with `auth: token` in front of the fleets' private
images, as openBalena's registry auth does it (open-balena-api src/features/registry/registry.ts,
v49): a device (basic auth `d_<uuid>` : device key) may pull the repositories of its own
fleet's releases and nothing else; the admin (basic auth `admin` : admin token) may push and
pull anything. A scope the asker may not use is granted with no actions, as the registry token
spec wants (the registry then answers 401/403 for it).

The token is the registry's JWT: RS256, signed by the devcloud's own key, with the certificate
in the `x5c` header; the registry trusts that certificate (`rootcertbundle`). The key and the
self-signed certificate are made once with `openssl` in the data dir (`registry-key.pem`,
`registry-cert.pem`); signing runs `openssl dgst` in a worker thread (the devcloud is a
development tool: no crypto dependency for the agent).

Registry configuration that goes with it (see docs/fleet.md):
    auth: {token: {realm: http://<devcloud>/auth/v1/token, service: <registry host:port>,
                   issuer: devcloud, rootcertbundle: <data dir>/registry-cert.pem}}
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ISSUER = "devcloud"
TTL_S = 600
KEY_FILE = "registry-key.pem"
CERT_FILE = "registry-cert.pem"
_SCOPE = re.compile(r"repository:([^:\s]+):([a-z*,]+)")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenIssuer:
    def __init__(self, directory: Path, issuer: str = ISSUER) -> None:
        self.key = directory / KEY_FILE
        self.cert = directory / CERT_FILE
        self.issuer = issuer

    def ensure(self) -> None:
        """Make the key and certificate once (blocking: call at start)."""
        if self.key.exists() and self.cert.exists():
            return
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-days", "3650", "-subj", "/CN=devcloud-registry",
                        "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, capture_output=True, timeout=120)
        self.key.chmod(0o600)

    def token(self, *, subject: str, service: str, access: list[dict[str, Any]]) -> str:
        """A signed registry JWT (blocking: run in a worker thread)."""
        now = int(time.time())
        pem = self.cert.read_text()
        der_b64 = "".join(line for line in pem.splitlines() if line and "-----" not in line)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [der_b64]}
        claims = {"iss": self.issuer, "sub": subject, "aud": service, "iat": now,
                  "nbf": now - 10, "exp": now + TTL_S, "jti": secrets.token_hex(16),
                  "access": access}
        signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode())
                                 for part in (header, claims))
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True, timeout=60).stdout
        return f"{signing_input}.{_b64url(signature)}"


def parse_scopes(scopes: Iterable[str]) -> list[tuple[str, list[str]]] | None:
    """[(repository, actions)] of `repository:<name>:<actions>` scopes; None if one is not."""
    out = []
    for scope in scopes:
        match = _SCOPE.fullmatch(scope)
        if match is None:
            return None
        out.append((match.group(1), match.group(2).split(",")))
    return out


def repository(image: str, service: str) -> str | None:
    """The repository of `image` on the registry `service` (host:port), else None."""
    host, _, rest = image.partition("/")
    if host != service or not rest:
        return None
    name = rest.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rindex(":")]
    return name


def grant(asked: list[tuple[str, list[str]]], *, allowed: set[str] | None,
          actions: tuple[str, ...]) -> list[dict[str, Any]]:
    """The access claim: each asked repository with the asked actions the asker may use
    (`allowed` None: every repository)."""
    out = []
    for name, wanted in asked:
        ok = allowed is None or name in allowed
        out.append({"type": "repository", "name": name,
                    "actions": [a for a in wanted if ok and a in actions]})
    return out
