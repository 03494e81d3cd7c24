"""Registry auth, pure parts: the token request's exact path and header (a recording
Requester stands in for the cloud; the devcloud round trip is tests/api/test_registry_token)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

import pytest

from supervisor.cloud.http import CloudError, Response
from supervisor.cloud.registry_auth import RegistryTokens


class Recorder:
    def __init__(self, answer: Response) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, Mapping[str, str] | None]] = []

    async def request(self, method: str, path: str, *, body: Any = None,
                      key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        self.calls.append((method, path, headers))
        return self.answer


def test_token_request_is_upstreams() -> None:
    cloud = Recorder(Response(200, {}, b'{"token": "t0k"}'))
    source = RegistryTokens(cloud, lambda: ("uuid1", "key1"))
    token = asyncio.run(source.token("registry2.example.com/v2/aaaa@sha256:11",
                                     "registry2.example.com/v2/bbbb:latest"))
    assert token == "t0k"
    basic = base64.b64encode(b"d_uuid1:key1").decode()
    assert cloud.calls == [(
        "GET", "/auth/v1/token?service=registry2.example.com"
        "&scope=repository:v2/bbbb:pull&scope=repository:v2/aaaa:pull",
        {"Authorization": f"Basic {basic}"})]


@pytest.mark.parametrize(("status", "body"), [(401, b"no"), (200, b"{}"), (200, b"[]")])
def test_bad_answers_are_cloud_errors(status: int, body: bytes) -> None:
    source = RegistryTokens(Recorder(Response(status, {}, body)), lambda: ("u", "k"))
    with pytest.raises(CloudError):
        asyncio.run(source.token("r.io/a", "r.io/b"))
