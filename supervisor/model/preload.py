"""Preloaded apps: `<data-dir>/apps.json` -> a target (state.md §9).

A device image ships apps.json and the images it names, so the device runs its apps before
it ever reaches the network. Data flow: at start, when the device is not provisioned or has
never stored a target, the runtime reads the file (`host/preload.py: read_apps_json`), asks
`apps_json_format` which format it holds, resolves the app uuids of a v2 file from the cloud
(`v2_app_ids`), and calls `parse_apps_json`. The `Preload` it gets is stored like any
target; its `images` are recorded so that images already in the engine count as available
(no pull); its `pin` is kept for the pinning step of provisioning (state.md §4.2 step 6).
Then `host/preload.py: retire_apps_json` renames the file so it is used once.

Three formats:
  v1 (legacy): a JSON array of single-container apps `{appId, name, commit, imageId, env,
      config}`, each becoming app `user-app` with one service `main` (upstream's conversion);
  v2: `{config, apps: {"<appId>": <v2 app>}, pinDevice?}`: apps keyed by numeric ids, as in
      `POST /v2/local/target-state`; their uuids come from the cloud;
  v3: `{config, apps: {"<app uuid>": <v3 app with one release>}, pinDevice?}`.

`target.config` holds the file's `config` as written; merging it with the device's current
configuration (upstream: current values win) is the caller's business. Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from supervisor.errors import SupervisorError, TargetInvalid
from supervisor.model.target import TargetState, parse_target

Format = Literal["v1", "v2", "v3"]
MAX_APPS = 64  # a device runs a handful; a longer list is not an apps.json
LEGACY_APP_UUID = "user-app"
LEGACY_VOLUME = "resin-data"
V2_OFFLINE = ("Cannot migrate from v2 apps.json without Internet connectivity. "
              "Please use balenaCLI v13.5.1+ for offline preload support.")
_V2_SERVICE_KEYS = frozenset({"imageId", "serviceName", "image", "environment", "labels",
                              "running", "serviceId", "contract"})


class PreloadError(SupervisorError):
    """apps.json cannot be used (logged; the device waits for the cloud instead)."""

    retryable = False


@dataclass(frozen=True, slots=True)
class PreloadImage:
    """An image the preload names: recorded so a present image needs no pull."""

    name: str  # normalised
    app_id: int
    app_uuid: str
    service_name: str
    service_id: int
    image_id: int
    release_id: int
    commit: str


@dataclass(frozen=True, slots=True)
class PinRequest:
    """`pinDevice: true`: pin the device to this release of its fleet app once provisioned."""

    app_id: int
    commit: str


@dataclass(frozen=True, slots=True)
class Preload:
    target: TargetState
    images: tuple[PreloadImage, ...]
    pin: PinRequest | None = None


def apps_json_format(raw: object) -> Format:
    """Which format a parsed apps.json holds (upstream: an array is v1; numeric app keys v2)."""
    if isinstance(raw, list):
        return "v1"
    if isinstance(raw, dict) and isinstance(raw.get("apps"), dict) \
            and any(_is_numeric(k) for k in raw["apps"]):
        return "v2"
    return "v3"


def v2_app_ids(raw: object) -> tuple[int, ...]:
    """The app ids of a v2 file, whose uuids the caller asks the cloud for."""
    if apps_json_format(raw) != "v2":
        return ()
    assert isinstance(raw, dict)
    return tuple(int(k) for k in raw["apps"] if _is_numeric(k))


def parse_apps_json(raw: object, *, device_uuid: str,
                    app_uuids: Mapping[int, str] | None = None) -> Preload | None:
    """The parsed JSON of apps.json -> a Preload; None when it holds neither config nor apps
    (the `{}` left by an earlier preload). `app_uuids` resolves a v2 file's app ids; without
    them a v2 file fails with upstream's offline message. Raises only PreloadError."""
    kind = apps_json_format(raw)
    if kind == "v1":
        assert isinstance(raw, list)
        raw = _from_v1(raw)
    elif kind == "v2":
        assert isinstance(raw, dict)
        raw = _from_v2(raw, app_uuids)
    if not isinstance(raw, dict):
        raise PreloadError("Invalid apps.json: expected a JSON object or array")
    config = {} if raw.get("config") is None else raw["config"]
    apps = {} if raw.get("apps") is None else raw["apps"]
    if not isinstance(apps, dict) or not isinstance(config, dict):
        raise PreloadError("Invalid apps.json: apps and config must be objects")
    if not config and not apps:
        return None
    if len(apps) > MAX_APPS:
        raise PreloadError(f"Invalid apps.json: more than {MAX_APPS} apps")
    for uuid, app in apps.items():
        if not isinstance(app, dict) or not isinstance(app.get("releases"), dict) \
                or not app["releases"]:
            raise PreloadError(f"Invalid apps.json: apps.{uuid}.releases must hold a release")
    pin_flag = raw.get("pinDevice")
    if pin_flag is not None and not isinstance(pin_flag, bool):
        raise PreloadError("Invalid apps.json: pinDevice must be a boolean")
    try:
        target = parse_target({device_uuid: {"name": "", "config": config, "apps": apps}},
                              device_uuid=device_uuid)
    except TargetInvalid as err:
        raise PreloadError(f"Invalid apps.json: {err}") from None
    return Preload(target=target, images=_images(target),
                   pin=_pin(target) if pin_flag else None)


def _images(target: TargetState) -> tuple[PreloadImage, ...]:
    return tuple(
        PreloadImage(name=svc.image, app_id=app.app_id, app_uuid=app.uuid,
                     service_name=svc.name, service_id=svc.service_id, image_id=svc.image_id,
                     release_id=app.release.release_id, commit=app.release.commit)
        for app in target.apps.values() if app.release is not None
        for svc in app.release.services.values()
    )


def _pin(target: TargetState) -> PinRequest | None:
    """The first app of class `fleet` and its release (upstream: only one fleet app)."""
    for app in target.apps.values():
        if app.app_class == "fleet" and app.release is not None:
            return PinRequest(app_id=app.app_id, commit=app.release.commit)
    return None


# ---------------------------------------------------------------------------- v1 (legacy)

def _from_v1(apps: list[Any]) -> dict[str, Any]:
    """Upstream's `fromLegacyAppsJson`: every entry becomes app `user-app` (the last one
    wins), and the device config is the merge of every entry's `config`."""
    if len(apps) > MAX_APPS:
        raise PreloadError(f"Invalid apps.json: more than {MAX_APPS} apps")
    config: dict[str, Any] = {}
    converted: dict[str, Any] = {}
    for i, app in enumerate(apps):
        if not isinstance(app, dict):
            raise PreloadError(f"Invalid apps.json: entry {i} must be an object")
        conf = app.get("config") or {}
        env = app.get("env") or {}
        if not isinstance(conf, dict) or not isinstance(env, dict):
            raise PreloadError(f"Invalid apps.json: entry {i}: env and config must be objects")
        commit = app.get("commit")
        if not isinstance(commit, str) or not commit:
            raise PreloadError(f"Invalid apps.json: entry {i}: commit must be a string")
        config.update(conf)
        labels = {
            "io.resin.features.kernel-modules": "1",
            "io.resin.features.firmware": "1",
            "io.resin.features.dbus": "1",
            "io.resin.features.supervisor-api": "1",
            "io.resin.features.resin-api": "1",
            "io.resin.update.strategy":
                conf.get("RESIN_SUPERVISOR_UPDATE_STRATEGY", "download-then-kill"),
            "io.resin.update.handover-timeout":
                conf.get("RESIN_SUPERVISOR_HANDOVER_TIMEOUT", ""),
            "io.resin.legacy-container": "1",
        }
        converted[LEGACY_APP_UUID] = {
            "id": app.get("appId"), "name": app.get("name"), "class": "fleet",
            "releases": {commit: {
                "id": 1, "networks": {}, "volumes": {LEGACY_VOLUME: {}},
                "services": {"main": {
                    "id": 1, "image_id": 1, "image": app.get("imageId"),
                    "labels": labels, "running": True,
                    "environment": {k: v for k, v in env.items()
                                    if not str(k).startswith("RESIN_")},
                    "composition": {
                        "restart": conf.get("RESIN_APP_RESTART_POLICY", "always"),
                        "privileged": True, "networkMode": "host",
                        "volumes": [f"{LEGACY_VOLUME}:/data"],
                    },
                }},
            }},
        }
    return {"config": config, "apps": converted}


# ---------------------------------------------------------------------------- v2

def _from_v2(raw: dict[str, Any], app_uuids: Mapping[int, str] | None) -> dict[str, Any]:
    """Upstream's `fromV2AppsJson`: key apps by their cloud uuid, one release per commit,
    each service keyed by `serviceName` with the rest of its keys as `composition`."""
    apps: dict[str, Any] = {}
    if len(raw["apps"]) > MAX_APPS:
        raise PreloadError(f"Invalid apps.json: more than {MAX_APPS} apps")
    for key, app in raw["apps"].items():
        if not _is_numeric(key):
            raise PreloadError(f"Invalid apps.json: apps.{key}: v2 apps are keyed by app id")
        uuid = (app_uuids or {}).get(int(key))
        if uuid is None:
            raise PreloadError(V2_OFFLINE)
        if not isinstance(app, dict):
            raise PreloadError(f"Invalid apps.json: apps.{key} must be an object")
        commit = app.get("commit")
        releases: dict[str, Any] = {}
        if commit:
            services = app.get("services") or {}
            if not isinstance(services, dict):
                raise PreloadError(f"Invalid apps.json: apps.{key}.services must be an object")
            releases[str(commit)] = {
                "id": app.get("releaseId"),
                "services": {_v2_name(svc, f"apps.{key}.services.{sid}"): _v2_service(sid, svc)
                             for sid, svc in services.items()},
                "volumes": app.get("volumes") or {},
                "networks": app.get("networks") or {},
            }
        apps[uuid] = {"id": int(key), "name": app.get("name"), "class": "fleet",
                      "releases": releases}
    out: dict[str, Any] = {"config": raw.get("config") or {}, "apps": apps}
    if raw.get("pinDevice"):
        out["pinDevice"] = raw["pinDevice"]
    return out


def _v2_name(svc: object, path: str) -> str:
    if not isinstance(svc, dict) or not isinstance(svc.get("serviceName"), str):
        raise PreloadError(f"Invalid apps.json: {path}.serviceName is required")
    return str(svc["serviceName"])


def _v2_service(service_id: str, svc: dict[str, Any]) -> dict[str, Any]:
    out = {"id": service_id, "image_id": svc.get("imageId"), "image": svc.get("image"),
           "environment": svc.get("environment"), "labels": svc.get("labels"),
           "running": svc.get("running"),
           "composition": copy.deepcopy({k: v for k, v in svc.items()
                                         if k not in _V2_SERVICE_KEYS})}
    if svc.get("contract") is not None:
        out["contract"] = svc["contract"]
    return out


def _is_numeric(key: object) -> bool:
    return isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 19
