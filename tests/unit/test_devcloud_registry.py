"""The devcloud's registry tokens (supervisor/devcloud/registry.py): what a device and the
admin may do, and a JWT whose RS256 signature the certificate in its x5c header verifies
(checked with openssl, as the registry checks it with Go's crypto)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

from supervisor.devcloud.registry import TokenIssuer, grant, parse_scopes, repository

SERVICE = "127.0.0.1:5001"


def _part(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def test_repositories_scopes_and_grants() -> None:
    assert repository("127.0.0.1:5001/fleet1/app:latest", SERVICE) == "fleet1/app"
    assert repository("127.0.0.1:5001/app@sha256:" + "a" * 64, SERVICE) == "app"
    assert repository("127.0.0.1:5001/app", SERVICE) == "app"
    assert repository("127.0.0.1:5000/app:1", SERVICE) is None
    assert repository("busybox:latest", SERVICE) is None
    asked = parse_scopes(["repository:fleet1/app:pull", "repository:other/app:push,pull"])
    assert asked == [("fleet1/app", ["pull"]), ("other/app", ["push", "pull"])]
    assert parse_scopes(["registry:catalog:*"]) is None
    assert asked is not None
    assert grant(asked, allowed={"fleet1/app"}, actions=("pull",)) == [
        {"type": "repository", "name": "fleet1/app", "actions": ["pull"]},
        {"type": "repository", "name": "other/app", "actions": []}]
    assert grant(asked, allowed=None, actions=("pull", "push"))[1]["actions"] == ["push", "pull"]


def test_the_token_is_a_jwt_the_certificate_verifies(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path)
    issuer.ensure()
    access = [{"type": "repository", "name": "fleet1/app", "actions": ["pull"]}]
    token = issuer.token(subject="d_u1", service=SERVICE, access=access)
    header64, claims64, sig64 = token.split(".")
    header, claims = _part(header64), _part(claims64)
    assert header["alg"] == "RS256" and len(header["x5c"]) == 1
    assert (claims["iss"], claims["sub"], claims["aud"], claims["access"]) == (
        "devcloud", "d_u1", SERVICE, access)
    assert claims["nbf"] < claims["iat"] < claims["exp"]
    # verify as the registry does: the x5c certificate's key over "header.claims"
    der = base64.b64decode(header["x5c"][0])
    (tmp_path / "cert.der").write_bytes(der)
    pub = subprocess.run(["openssl", "x509", "-inform", "DER", "-in", str(tmp_path / "cert.der"),
                          "-pubkey", "-noout"], check=True, capture_output=True).stdout
    (tmp_path / "pub.pem").write_bytes(pub)
    (tmp_path / "sig").write_bytes(base64.urlsafe_b64decode(sig64 + "=" * (-len(sig64) % 4)))
    ok = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
                         "-signature", str(tmp_path / "sig")],
                        input=f"{header64}.{claims64}".encode(), capture_output=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    tampered = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"),
                               "-signature", str(tmp_path / "sig")],
                              input=f"{header64}.{claims64}x".encode(), capture_output=True)
    assert tampered.returncode != 0
