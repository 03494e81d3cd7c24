"""The typed target state, and the parsers that build it from JSON (state.md §2, §11).

Data flow: the cloud poller hands the v3 JSON to `parse_target`; `POST /v2/local/target-state`
hands its body to `parse_local_target` (v2 "local" format, or v3). Both return a `TargetState`
(frozen, never mutated) that the store keeps as `to_v3(target)` and the planner reads.
Any problem with the input raises `TargetInvalid(path, reason)` and nothing else.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from supervisor.errors import TargetInvalid
from supervisor.model import compose_values as cv
from supervisor.model.compose import (
    NetworkConfig,
    ServiceConfig,
    VolumeConfig,
    parse_composition,
    parse_network_config,
    parse_volume_config,
)
from supervisor.model.images import normalise_image_name

APP_CLASSES = ("fleet", "app", "block")
MAX_ID = cv.MAX_INT
_CONFIG_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_:]*")
_DOCKER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# printable ASCII except space, double quote, single quote and backtick
_LABEL_NAME_RE = re.compile(r"[\x21\x23-\x26\x28-\x5f\x61-\x7e]+")
_DIGITS_RE = re.compile(r"\s*(\d+)\s*", re.ASCII)  # ASCII: int() takes any Unicode digit
# service keys of the local format that are not compose keys (everything else is composition)
_LOCAL_SERVICE_KEYS = frozenset(
    {"serviceName", "imageId", "image", "environment", "labels", "running", "contract"})


@dataclass(frozen=True, slots=True)
class TargetService:
    """One service of a release. `composition` is the raw compose mapping, kept verbatim so
    `to_v3` stores exactly what was received; `config` is its parsed form."""

    name: str
    service_id: int
    image_id: int
    image: str  # normalised (engine.md §14.1)
    running: bool = True
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    config: ServiceConfig = field(default_factory=ServiceConfig)
    contract: dict[str, Any] | None = None
    ignored_fields: tuple[str, ...] = ()
    composition: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TargetRelease:
    commit: str
    release_id: int
    services: dict[str, TargetService] = field(default_factory=dict)
    volumes: dict[str, VolumeConfig] = field(default_factory=dict)
    networks: dict[str, NetworkConfig] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TargetApp:
    app_id: int
    uuid: str
    name: str
    app_class: str = "fleet"
    is_host: bool = False
    parent_app: str | None = None
    release: TargetRelease | None = None


@dataclass(frozen=True, slots=True)
class TargetState:
    device_uuid: str
    name: str
    config: dict[str, str] = field(default_factory=dict)
    apps: dict[str, TargetApp] = field(default_factory=dict)  # keyed by app uuid


# ============================================================================ field checks

def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _obj(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise cv.expect(value, "an object", path)
    return value


def _required(raw: dict[str, Any], key: str, path: str) -> Any:
    value = raw.get(key)
    if value is None:
        raise TargetInvalid(_join(path, key), "required field is missing")
    return value


def _short_str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise cv.expect(value, "a string", path)
    if len(value) > cv.MAX_NAME:
        raise TargetInvalid(path, "must be at most 255 characters long")
    return value


def _numeric_id(value: object, path: str) -> int:
    """A non-negative integer, or a string holding one (upstream NumericIdentifier)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and (match := _DIGITS_RE.fullmatch(value)):
        number = int(match.group(1)) if len(match.group(1)) <= 19 else MAX_ID + 1
    if number is None or number < 0:
        raise TargetInvalid(path, f"must be a positive integer, got {value!r}")
    if number > MAX_ID:
        raise TargetInvalid(path, f"identifier too large: {value!r}")
    return number


def _key(key: object, path: str, regex: re.Pattern[str] | None, what: str) -> str:
    if not isinstance(key, str) or len(key) > cv.MAX_NAME:
        raise TargetInvalid(path, f"invalid {what} {key!r}: at most 255 characters")
    if regex is not None and not regex.fullmatch(key):
        raise TargetInvalid(path, f"invalid {what} {key!r}")
    return key


def _str_record(value: object, path: str, regex: re.Pattern[str], what: str) -> dict[str, str]:
    record = _obj(value, path)
    for key, item in record.items():
        _key(key, path, regex, what)
        if not isinstance(item, str):
            raise cv.expect(item, "a string", _join(path, key))
    return dict(record)


def _environment(value: object, path: str) -> dict[str, str]:
    return _str_record(value, path, cv.ENV_NAME_RE, "variable name")


def _labels(value: object, path: str) -> dict[str, str]:
    return _str_record(value, path, _LABEL_NAME_RE, "label name")


def _config(value: object, path: str) -> dict[str, str]:
    return _str_record(value, path, _CONFIG_NAME_RE, "config variable name")


def _device_name(value: object, path: str) -> str:
    name = _short_str(value, path)
    if "\n" in name:
        raise TargetInvalid(path, "must not contain newline characters")
    return name


def _bool(value: object, path: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise cv.expect(value, "a boolean", path)
    return value


def _opt_obj(value: object, path: str) -> dict[str, Any] | None:
    return None if value is None else copy.deepcopy(_obj(value, path))


_T = TypeVar("_T")


def _record(value: object, path: str, parse: Callable[[str, Any, str], _T],
            key_re: re.Pattern[str] | None = None, what: str = "name") -> dict[str, _T]:
    """A `{key: item}` object (null/missing = empty), each item parsed at `<path>.<key>`."""
    if value is None:
        return {}
    return {_key(k, path, key_re, what): parse(k, v, _join(path, k))
            for k, v in _obj(value, path).items()}


# ============================================================================ v3

def parse_target(raw: object, *, device_uuid: str) -> TargetState:
    """The v3 target `{"<device uuid>": {name, config, apps}}` (state.md §2)."""
    top = _obj(raw, "")
    for key in top:
        _key(key, "", None, "device uuid")
    if device_uuid not in top:
        raise TargetInvalid(
            "", f"Expected target state for local device with uuid '{device_uuid}'.")
    device = top[device_uuid]
    if not isinstance(device, dict):
        raise TargetInvalid("", f"expected an object for device '{device_uuid}'")
    return TargetState(
        device_uuid=device_uuid,
        name=_device_name(_required(device, "name", ""), "name"),
        config=_config(_required(device, "config", ""), "config"),
        apps=_record(_required(device, "apps", ""), "apps", _app_v3, what="app uuid"),
    )


def _app_v3(uuid: str, raw: object, path: str) -> TargetApp:
    app = _obj(raw, path)
    app_class = app.get("class")
    if app_class is None:
        app_class = "fleet"
    if app_class not in APP_CLASSES:
        raise TargetInvalid(_join(path, "class"), f"must be one of {', '.join(APP_CLASSES)}")
    releases = _record(app.get("releases"), _join(path, "releases"), _release_v3,
                       what="release uuid")
    parent = app.get("parent_app")
    is_host = _bool(app.get("is_host"), _join(path, "is_host"), False)
    release = next(iter(releases.values()), None)  # only the first release is used
    if is_host and release is not None:  # the OS itself is not ours to run (state.md §2.6)
        release = replace(release, services={
            n: s for n, s in release.services.items()
            if s.labels.get("io.balena.image.class", "service") == "service"
            and s.labels.get("io.balena.image.store", "data") == "data"})
    return TargetApp(
        app_id=_numeric_id(_required(app, "id", path), _join(path, "id")),
        uuid=uuid,
        name=_short_str(_required(app, "name", path), _join(path, "name")),
        app_class=app_class,
        is_host=is_host,
        parent_app=None if parent is None else _short_str(parent, _join(path, "parent_app")),
        release=release,
    )


def _release_v3(commit: str, raw: object, path: str) -> TargetRelease:
    release = _obj(raw, path)
    return TargetRelease(
        commit=commit,
        release_id=_numeric_id(_required(release, "id", path), _join(path, "id")),
        services=_record(release.get("services"), _join(path, "services"), _service_v3,
                         _DOCKER_NAME_RE, "service name"),
        **_volumes_and_networks(release, path),
    )


def _volumes_and_networks(raw: dict[str, Any], path: str) -> dict[str, Any]:
    return {
        "volumes": _record(raw.get("volumes"), _join(path, "volumes"),
                           lambda _k, v, p: parse_volume_config(v, path=p),
                           _DOCKER_NAME_RE, "volume name"),
        "networks": _record(raw.get("networks"), _join(path, "networks"),
                            lambda _k, v, p: parse_network_config(v, path=p),
                            _DOCKER_NAME_RE, "network name"),
    }


def _service_v3(name: str, raw: object, path: str) -> TargetService:
    svc = _obj(raw, path)
    composition = _opt_obj(svc.get("composition"), _join(path, "composition")) or {}
    return _service(
        name=name, svc=svc, path=path,
        service_id=_numeric_id(_required(svc, "id", path), _join(path, "id")),
        image_id=_numeric_id(_required(svc, "image_id", path), _join(path, "image_id")),
        composition=composition, composition_path=_join(path, "composition"),
    )


def _service(*, name: str, svc: dict[str, Any], path: str, service_id: int, image_id: int,
             composition: dict[str, Any], composition_path: str) -> TargetService:
    """The fields both formats share: image, environment, labels, running, contract."""
    image = normalise_image_name(
        _short_str(_required(svc, "image", path), _join(path, "image")))
    if len(image) > cv.MAX_NAME:  # normalising may add `:latest`
        raise TargetInvalid(_join(path, "image"), "must be at most 255 characters long")
    config = parse_composition(composition, path=composition_path)
    return TargetService(
        name=name, service_id=service_id, image_id=image_id, image=image,
        running=_bool(svc.get("running"), _join(path, "running"), True),
        environment=_environment(_required(svc, "environment", path),
                                 _join(path, "environment")),
        labels=_labels(_required(svc, "labels", path), _join(path, "labels")),
        config=config,
        contract=_opt_obj(svc.get("contract"), _join(path, "contract")),
        ignored_fields=config.ignored_fields,
        composition=composition,
    )


def to_v3(target: TargetState) -> dict[str, Any]:
    """The v3 JSON of a target; `parse_target(to_v3(t), device_uuid=t.device_uuid) == t`."""
    return {target.device_uuid: {
        "name": target.name,
        "config": dict(target.config),
        "apps": {uuid: _app_to_v3(app) for uuid, app in target.apps.items()},
    }}


def _app_to_v3(app: TargetApp) -> dict[str, Any]:
    out: dict[str, Any] = {"id": app.app_id, "name": app.name, "class": app.app_class,
                           "is_host": app.is_host, "releases": {}}
    if app.parent_app is not None:
        out["parent_app"] = app.parent_app
    if (rel := app.release) is not None:
        out["releases"][rel.commit] = {
            "id": rel.release_id,
            "services": {name: _service_to_v3(s) for name, s in rel.services.items()},
            "volumes": {name: v.to_compose() for name, v in rel.volumes.items()},
            "networks": {name: n.to_compose() for name, n in rel.networks.items()},
        }
    return out


def _service_to_v3(svc: TargetService) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": svc.service_id, "image_id": svc.image_id, "image": svc.image,
        "running": svc.running, "environment": dict(svc.environment),
        "labels": dict(svc.labels), "composition": copy.deepcopy(svc.composition),
    }
    if svc.contract is not None:
        out["contract"] = copy.deepcopy(svc.contract)
    return out


# ============================================================================ local (v2)

def parse_local_target(raw: object, *, device_uuid: str, device_name: str = "") -> TargetState:
    """A `POST /v2/local/target-state` body: the v2 local format (state.md §11), or v3.

    In the local format app uuids are the app ids as strings; a missing `local.name` keeps
    `device_name`; a missing `config` is `{}`; an app without `commit` has no release.
    """
    if not isinstance(raw, dict):
        raise TargetInvalid("", f"expected a JSON object, got {cv.type_name(raw)}")
    if not raw:
        raise TargetInvalid("local", "required field is missing (the body is empty)")
    if "local" not in raw and _looks_v3(raw, device_uuid):
        return parse_target({k: v for k, v in raw.items() if k != "force"},
                            device_uuid=device_uuid)
    local = _obj(_required(raw, "local", ""), "local")
    name = local.get("name")
    apps: dict[str, TargetApp] = {}
    for app in _local_apps(_required(local, "apps", "local"), "local.apps"):
        if app.uuid in apps:
            raise TargetInvalid("local.apps", f"duplicate app id {app.app_id}")
        apps[app.uuid] = app
    return TargetState(
        device_uuid=device_uuid,
        name=device_name if name is None else _device_name(name, "local.name"),
        config={} if local.get("config") is None else _config(local["config"], "local.config"),
        apps=apps,
    )


def _looks_v3(raw: dict[str, Any], device_uuid: str) -> bool:
    return device_uuid in raw or any(
        isinstance(v, dict) and "apps" in v for k, v in raw.items() if k != "force")


def _local_apps(value: object, path: str) -> Iterator[TargetApp]:
    for key, raw in _obj(value, path).items():
        app_path = _join(path, key)
        app_id = _numeric_id(key, app_path)
        app = _obj(raw, app_path)
        commit = app.get("commit")
        if commit is not None and not isinstance(commit, str):
            raise TargetInvalid(_join(app_path, "commit"), "commit must be a string")
        services = _local_services(app.get("services"), _join(app_path, "services"))
        release = None
        if commit is not None:
            _key(commit, _join(app_path, "commit"), None, "commit")
            if app.get("releaseId") is None:
                raise TargetInvalid(_join(app_path, "releaseId"), "required when commit is set")
            release_id = _numeric_id(app["releaseId"], _join(app_path, "releaseId"))
            release = TargetRelease(commit=commit, release_id=release_id, services=services,
                                    **_volumes_and_networks(app, app_path))
        yield TargetApp(
            app_id=app_id, uuid=str(app_id),
            name=_short_str(_required(app, "name", app_path), _join(app_path, "name")),
            release=release,
        )


def _local_services(value: object, path: str) -> dict[str, TargetService]:
    services: dict[str, TargetService] = {}
    for key, raw in ({} if value is None else _obj(value, path)).items():
        svc_path = _join(path, key)
        svc = _obj(raw, svc_path)
        name = _key(_short_str(_required(svc, "serviceName", svc_path),
                               _join(svc_path, "serviceName")),
                    _join(svc_path, "serviceName"), _DOCKER_NAME_RE, "service name")
        if name in services:
            raise TargetInvalid(path, f"duplicate service name '{name}'")
        services[name] = _service(
            name=name, svc=svc, path=svc_path,
            service_id=_numeric_id(key, svc_path),
            image_id=_numeric_id(_required(svc, "imageId", svc_path),
                                 _join(svc_path, "imageId")),
            composition=copy.deepcopy(
                {k: v for k, v in svc.items() if k not in _LOCAL_SERVICE_KEYS}),
            composition_path=svc_path,
        )
    return services
