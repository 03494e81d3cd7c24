"""Config hashes: how the planner tells whether a container runs its target's config.

`model/spec.py` hashes every create body it builds and puts the hash on the container as a
label; the planner compares that label with the target spec's hash instead of rebuilding the
config from inspect data. The hash follows upstream's comparison (engine.md §4.6): the array
fields compared regardless of order are hashed in a canonical order, so a target that only
reorders them recreates nothing. Releases before that rule hashed the body as it was, order
included: `legacy_container_config_hash` still computes that hash, so their containers are
kept through an upgrade. Pure: no Docker, no files, no clock.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

# engine.md §4.6: `volumes` (binds, mounts), `devices`, `capAdd`, `capDrop`, `dnsOpt`,
# `extraHosts`, `ulimitsArray`, `groupAdd` and `securityOpt` compare regardless of order
# (`tmpfs` and anonymous volumes are maps already); `dns` and `dnsSearch` keep theirs.
UNORDERED_HOST_FIELDS = ("Binds", "Mounts", "Devices", "CapAdd", "CapDrop", "DnsOptions",
                         "ExtraHosts", "Ulimits", "GroupAdd", "SecurityOpt")

Endpoints = tuple[tuple[str, dict[str, Any]], ...]


def stable_hash(data: object) -> str:
    """sha256 of `data` as canonical JSON (sorted keys): equal data, equal hash."""
    return hashlib.sha256(_canonical(data).encode()).hexdigest()


def _canonical(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def container_config_hash(body: dict[str, Any], extra_networks: Endpoints) -> str:
    """The hash of a container create body (before the hash label, `Image` and the
    device-name variables go in) and of the networks it joins after creation."""
    return stable_hash(_comparable(body, extra_networks))


def legacy_container_config_hash(body: dict[str, Any],
                                 extra_networks: Endpoints) -> Callable[[], str]:
    """The order-sensitive hash earlier releases labelled containers with, computed when first
    called. It copies what `container_spec` changes in the body after hashing, so call it
    at the moment `container_config_hash` is called."""
    legacy = {"body": {**body, "Labels": dict(body["Labels"]),
                       "HostConfig": dict(body["HostConfig"])},
              "extra_networks": extra_networks}
    return functools.cache(functools.partial(stable_hash, legacy))


def _unordered(items: list[Any]) -> list[Any]:
    """A canonical order for a list compared as a multiset (upstream sorts, then compares)."""
    return sorted(items, key=_canonical)


def _comparable(body: dict[str, Any], extra_networks: Endpoints) -> dict[str, Any]:
    """What the hash covers: the create body with every order-insensitive list of §4.6 in a
    canonical order. Published ports and network aliases are sets too; networks are keyed by
    name, so only what they are, not the order they are listed in, counts."""
    host = dict(body["HostConfig"])
    for key in UNORDERED_HOST_FIELDS:
        host[key] = _unordered(host[key])
    if "PortBindings" in host:
        host["PortBindings"] = {k: _unordered(v) for k, v in host["PortBindings"].items()}
    endpoints = body["NetworkingConfig"]["EndpointsConfig"]
    return {
        "body": {**body, "HostConfig": host,
                 "NetworkingConfig": {"EndpointsConfig": {
                     name: _comparable_endpoint(ep) for name, ep in endpoints.items()}}},
        "networks": {name: _comparable_endpoint(ep) for name, ep in extra_networks},
    }


def _comparable_endpoint(endpoint: dict[str, Any]) -> dict[str, Any]:
    return {**endpoint, "Aliases": sorted(endpoint.get("Aliases") or ())}
