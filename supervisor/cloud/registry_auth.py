"""Credentials for image pulls from the cloud's registry (state.md §12).

The executor's `image_auth` hook asks, for every pull, which credentials go with the image
reference; the engine passes them to the registry only when it asks for them. Upstream's rule:
an image reference that names a registry host is pulled as `d_<device uuid>` with the
device's current API key (the provisioning key while it is still in config.json, else the
device key), `serveraddress` the registry host. A reference without a host (Docker Hub), or a
device without a key, pulls anonymously. The runtime hands in the config.json reader.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from urllib.parse import urlencode

from supervisor.cloud.http import CloudError, Requester
from supervisor.model.images import image_registry, parse_image_name


def pull_auth(image: str, *, uuid: str, api_key: str) -> dict[str, str] | None:
    """docker-py's `auth_config` for pulling `image`, or None for an anonymous pull."""
    registry = image_registry(image)
    if registry is None or not uuid or not api_key:
        return None
    return {"username": f"d_{uuid}", "password": api_key, "serveraddress": registry}


def image_auth_hook(identity: Callable[[], tuple[str, str]]
                    ) -> Callable[[str], dict[str, str] | None]:
    """The executor hook: `identity()` gives (uuid, current API key) at pull time, so a key
    exchanged during provisioning is used from the next pull on."""

    def auth(image: str) -> dict[str, str] | None:
        uuid, api_key = identity()
        return pull_auth(image, uuid=uuid, api_key=api_key)

    return auth


TOKEN_TTL_S = 600.0  # upstream caches a delta token for 10 minutes


class RegistryTokens:
    """Registry tokens for delta downloads (state.md §12): `GET <apiEndpoint>/auth/v1/token
    ?service=<registry>&scope=repository:<dest>:pull&scope=repository:<src>:pull` with basic
    auth `d_<uuid>` : current API key, each kept 10 minutes. Deltas themselves (engine.md
    §14) are not implemented yet: this is what they will authenticate with."""

    def __init__(self, client: Requester, identity: Callable[[], tuple[str, str]], *,
                 clock: Callable[[], float] = time.monotonic, ttl: float = TOKEN_TTL_S) -> None:
        self._client = client
        self._identity = identity
        self._clock = clock
        self._ttl = ttl
        self._cache: dict[tuple[str, str, str], tuple[float, str]] = {}

    async def token(self, src: str, dest: str) -> str:
        registry = image_registry(dest) or ""
        key = (registry, _repository(src), _repository(dest))
        cached = self._cache.get(key)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        uuid, api_key = self._identity()
        basic = base64.b64encode(f"d_{uuid}:{api_key}".encode()).decode()
        query = urlencode([("service", registry), ("scope", f"repository:{key[2]}:pull"),
                           ("scope", f"repository:{key[1]}:pull")], safe=":/@")
        answer = await self._client.request("GET", f"/auth/v1/token?{query}",
                                            headers={"Authorization": f"Basic {basic}"})
        if not answer.ok:
            raise answer.error("registry token")
        body = answer.json()
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise CloudError("registry token: the answer holds no token", status=answer.status)
        self._cache[key] = (self._clock() + self._ttl, token)
        return token


def _repository(image: str) -> str:
    """`registry/repo/name:tag@digest` -> `repo/name`."""
    return parse_image_name(image).repo
