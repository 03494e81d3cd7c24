"""Releases in, v3 target states out: the devcloud's pure part (no I/O).

A pushed release is a compose-like JSON object:

    {"commit": "<optional, 32 hex generated otherwise>",
     "services": {"main": {"image": "127.0.0.1:5000/app:latest",
                           "environment": {"A": "1"}, "labels": {"x": "y"},
                           "composition": {"command": ["sleep", "infinity"]},
                           "network_mode": "host"}},
     "volumes": {"data": {}}, "networks": {}}

Service keys other than image/environment/labels/running/contract/composition are compose keys
and join `composition`. `normalise_release` gives every service its stable service id (per
fleet and name) and a fresh image id; `build_target` assembles a device's v3 target
(state.md §2.1) with environment precedence release < fleet variable < device variable.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid as uuidlib
from collections.abc import Callable, Mapping
from typing import Any

from supervisor.errors import BadRequest

_DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_COMMIT = re.compile(r"[0-9a-zA-Z_-]{1,255}")
_SERVICE_KEYS = ("image", "environment", "labels", "running", "contract", "composition")


def normalise_release(raw: Any, *, release_id: int, service_id: Callable[[str], int],
                      image_id: Callable[[str], int]) -> tuple[str, dict[str, Any]]:
    """Validate a pushed release; return (commit, the v3 release object)."""
    if not isinstance(raw, dict):
        raise BadRequest("a release must be a JSON object")
    commit = raw.get("commit") or uuidlib.uuid4().hex
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
        raise BadRequest(f"invalid commit {commit!r}")
    services = raw.get("services")
    if not isinstance(services, dict) or not services:
        raise BadRequest("a release needs a non-empty `services` object")
    out: dict[str, Any] = {}
    for name, svc in services.items():
        if not isinstance(name, str) or not _DOCKER_NAME.fullmatch(name):
            raise BadRequest(f"invalid service name {name!r}")
        out[name] = _service(name, svc, service_id(name), image_id(name))
    release: dict[str, Any] = {"id": release_id, "services": out}
    for key in ("volumes", "networks"):
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            raise BadRequest(f"`{key}` must be an object")
        release[key] = copy.deepcopy(value)
    return commit, release


def _service(name: str, svc: Any, sid: int, iid: int) -> dict[str, Any]:
    if not isinstance(svc, dict):
        raise BadRequest(f"service {name}: must be an object")
    image = svc.get("image")
    if not isinstance(image, str) or not image:
        raise BadRequest(f"service {name}: `image` is required")
    composition = svc.get("composition") or {}
    if not isinstance(composition, dict):
        raise BadRequest(f"service {name}: `composition` must be an object")
    composition = {**copy.deepcopy(composition),
                   **{k: copy.deepcopy(v) for k, v in svc.items() if k not in _SERVICE_KEYS}}
    out: dict[str, Any] = {
        "id": sid, "image_id": iid, "image": image,
        "running": bool(svc.get("running", True)),
        "environment": _strings(svc.get("environment"), f"service {name}: environment"),
        "labels": _strings(svc.get("labels"), f"service {name}: labels"),
        "composition": composition,
    }
    if svc.get("contract") is not None:
        out["contract"] = copy.deepcopy(svc["contract"])
    return out


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be an object")
    return {str(k): str(v) for k, v in value.items()}


def build_target(*, device_uuid: str, device_name: str, fleet: Mapping[str, Any],
                 release: tuple[str, Mapping[str, Any]] | None,
                 env: Mapping[str, str], config: Mapping[str, str]) -> dict[str, Any]:
    """The v3 target of one device: its fleet's app, with the chosen release (or none)."""
    releases: dict[str, Any] = {}
    if release is not None:
        commit, body = release
        rel = copy.deepcopy(dict(body))
        for svc in rel["services"].values():
            svc["environment"] = {**svc.get("environment", {}), **env}
        releases[commit] = rel
    return {device_uuid: {
        "name": device_name,
        "config": dict(config),
        "apps": {fleet["uuid"]: {
            "id": fleet["id"], "name": fleet["name"], "class": "fleet", "is_host": False,
            "releases": releases,
        }},
    }}


def etag_of(body: Any) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return f'"{digest[:32]}"'


_ADJECTIVES = ("holy", "quiet", "brave", "misty", "lucky", "rapid", "sunny", "tidy", "wild",
               "young", "bold", "calm", "eager", "fancy", "gentle", "happy")
_NOUNS = ("wildflower", "river", "meadow", "forest", "comet", "harbor", "canyon", "ember",
          "glacier", "island", "lantern", "orchard", "pebble", "summit", "thunder", "willow")


def device_name(uuid: str) -> str:
    """A friendly default name derived from the uuid ("holy-wildflower")."""
    digest = hashlib.sha256(uuid.encode()).digest()
    return f"{_ADJECTIVES[digest[0] % len(_ADJECTIVES)]}-{_NOUNS[digest[1] % len(_NOUNS)]}"
