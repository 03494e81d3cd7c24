"""Registry tokens for deltas (state.md §12) from the real devcloud on 127.0.0.1: basic auth
`d_<uuid>` : device key, the service and both scopes in the query, 10 minutes of cache (the
clock is injected: time is moved, never waited for)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from supervisor.cloud.http import CloudClient, CloudError
from supervisor.cloud.registry_auth import RegistryTokens
from tests.api.devcloud_proc import Cloud

SRC = "registry2.example.com/v2/aaaa@sha256:1111"
DEST = "registry2.example.com/v2/bbbb:latest"


def tokens(cloud: Cloud, key: str, now: list[float]) -> RegistryTokens:
    client = CloudClient(cloud.url, api_key=lambda: "unused", user_agent="test")
    return RegistryTokens(client, lambda: (cloud.uuid, key), clock=lambda: now[0])


def test_token_is_fetched_then_cached_for_ten_minutes(cloud: Cloud) -> None:
    now = [1000.0]
    source = tokens(cloud, cloud.key, now)

    async def run() -> list[str]:
        first = await source.token(SRC, DEST)
        now[0] += 599.0
        second = await source.token(SRC, DEST)
        other = await source.token(SRC, "registry2.example.com/v2/cccc:1")
        now[0] += 2.0
        third = await source.token(SRC, DEST)
        return [first, second, other, third]

    first, second, other, third = asyncio.run(run())
    assert first.count(".") == 2  # the registry's JWT (devcloud/registry.py)
    assert second == first  # cached: the devcloud hands out a new token for every request
    assert other != first  # another image pair is another token
    assert third != first  # 10 minutes later: asked again


def test_wrong_key_is_refused(cloud: Cloud) -> None:
    with pytest.raises(CloudError) as caught:
        asyncio.run(tokens(cloud, "wrong", [0.0]).token(SRC, DEST))
    assert caught.value.status == 401


def test_a_device_may_pull_only_its_own_fleets_repositories(cloud: Cloud) -> None:
    """openBalena's registry auth: the token grants pull on the fleet's images, nothing else."""
    registry = "127.0.0.1:5999"
    cloud.client().call("POST", "/admin/fleets/logs/releases", {"services": {
        "main": {"image": f"{registry}/logs/app:1"}}})
    client = CloudClient(cloud.url, api_key=lambda: "unused", user_agent="test")
    basic = base64.b64encode(f"d_{cloud.uuid}:{cloud.key}".encode()).decode()
    query = (f"/auth/v1/token?service={registry}&scope=repository:logs/app:pull,push"
             "&scope=repository:other/app:pull")
    answer = asyncio.run(client.request("GET", query, headers={"Authorization": f"Basic {basic}"}))
    claims64 = answer.json()["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(claims64 + "=" * (-len(claims64) % 4)))
    assert claims["sub"] == f"d_{cloud.uuid}" and claims["aud"] == registry
    assert claims["access"] == [
        {"type": "repository", "name": "logs/app", "actions": ["pull"]},
        {"type": "repository", "name": "other/app", "actions": []}]
