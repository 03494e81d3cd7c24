"""Credentials for image pulls from the cloud's registry (state.md §12).

The executor's `image_auth` hook asks, for every pull, which credentials go with the image
reference; the engine passes them to the registry only when it asks for them. Upstream's rule:
an image reference that names a registry host is pulled as `d_<device uuid>` with the
device's current API key (the provisioning key while it is still in config.json, else the
device key), `serveraddress` the registry host. A reference without a host (Docker Hub), or a
device without a key, pulls anonymously. Pure: the runtime hands in the config.json reader.
"""

from __future__ import annotations

from collections.abc import Callable

from supervisor.model.images import image_registry


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
