"""What open-balena-api answers to what a device sends: the devcloud's device-facing handlers
for registration, state reports and tag reports, rule for rule as openBalena applies them.

Each rule names its source in open-balena-api (v49; docs/fleet.md "Works against openBalena"):

- `POST /device/register` (device-provisioning/register.ts): `application` an integer, else
  400 `Application ID must be a valid integer`; `device_type` missing: 400 `Device type must
  be specified`; `uuid` missing: 400 `UUID must be specified`; a known uuid: 409 `"uuid" must
  be unique.`, a known api_key: 409 `"key" must be unique.`
  (gracefully-deny-conflicting-registrations.ts); an unknown slug: 404 `Unknown device type
  <slug>` (device-types/device-types.ts; the slugs known here are the fleets'). The answer is
  `{id, uuid, api_key}`. A provisioning key may do this and nothing else (api-keys: its
  permissions): it cannot read a device nor set a device key.
- `PATCH /device/v3/state` (device-state/routes/state-patch-v3.ts): no device: 400; a device
  the key does not own: 401; every commit named in `apps` (`release_uuid` and `releases`
  keys) must be a successful release of that app, and every service `image` (the part before
  `@`) an image of those releases, else 401 for the whole PATCH. Only `v3ValidPatchFields`
  and the metrics are kept (state-patch-utils.ts).
- `PATCH /device/v3/tags` (tags-patch-v3.ts, tags/validation.ts): keys with whitespace or
  beginning with `io.resin.`/`io.balena.` make the whole body a 400; no tags: 400.

Where openBalena is lenient but what the agent sends would still be wrong (a status longer than
the model keeps, an os_variant it drops), the devcloud keeps the value as openBalena would and
records a violation (`GET /admin/violations`): tests assert there is none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from supervisor.errors import BadRequest, Conflict, NotFound, Unauthorized

_LOGGER = logging.getLogger(__name__)

V3_FIELDS = ("status", "is_online", "os_version", "os_variant", "supervisor_version",
             "provisioning_progress", "provisioning_state", "ip_address", "mac_address",
             "api_port", "api_secret", "cpu_id", "is_undervolted", "update_status")
METRIC_FIELDS = ("memory_usage", "memory_total", "storage_usage", "storage_total", "cpu_temp",
                 "cpu_usage", "storage_block_device")
RESERVED_TAG_PREFIXES = ("io.resin.", "io.balena.")
STATUS_MAX = 50
OS_VARIANTS = ("dev", "prod")
_TYPES: dict[str, tuple[type, ...]] = {
    "status": (str,), "os_version": (str,), "os_variant": (str,), "supervisor_version": (str,),
    "provisioning_state": (str,), "ip_address": (str,), "mac_address": (str,),
    "api_secret": (str,), "cpu_id": (str,), "storage_block_device": (str,),
    "update_status": (str,), "is_online": (bool,), "is_undervolted": (bool,),
    "api_port": (int,), "provisioning_progress": (int,), "memory_usage": (int,),
    "memory_total": (int,), "storage_usage": (int,), "storage_total": (int,),
    "cpu_temp": (int, float), "cpu_usage": (int, float),
}


def tag_key_error(key: str) -> str | None:
    """tags/validation.ts checkTagKeyValidity, in its words."""
    if any(c.isspace() for c in key):
        return "Tag keys cannot contain whitespace."
    for prefix in RESERVED_TAG_PREFIXES:
        if key.startswith(prefix):
            return f"Tag keys beginning with {prefix} are reserved."
    return None


def check_tags(body: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The tags of each device, or BadRequest (the zod schema of tags-patch-v3.ts)."""
    out: dict[str, dict[str, str]] = {}
    for uuid, tags in body.items():
        if tags is None:
            continue
        if not isinstance(tags, dict):
            raise BadRequest(f"the tags of {uuid} must be an object")
        for key, value in tags.items():
            why = tag_key_error(key)
            if why is not None or not isinstance(value, str):
                raise BadRequest(why or f"the value of tag {key!r} must be a string")
        out[uuid] = tags
    if not out:
        raise BadRequest("no device in the body")
    if not any(out.values()):
        raise BadRequest("No tags were sent to be updated.")
    return out


def release_criteria(state: Mapping[str, Any]) -> dict[str, tuple[set[str], list[str]]]:
    """Per app uuid: the commits and image locations a report names (state-patch-v3.ts)."""
    criteria: dict[str, tuple[set[str], list[str]]] = {}
    apps = state.get("apps")
    if apps is None:
        return criteria
    if not isinstance(apps, dict):
        raise BadRequest("apps must be an object")
    for app_uuid, app in apps.items():
        if not isinstance(app, dict):
            raise BadRequest(f"apps.{app_uuid} must be an object")
        commits, images = criteria.setdefault(app_uuid, (set(), []))
        if app.get("release_uuid"):
            commits.add(str(app["release_uuid"]))
        releases = app.get("releases") or {}
        if not isinstance(releases, dict):
            raise BadRequest(f"apps.{app_uuid}.releases must be an object")
        for commit, release in releases.items():
            commits.add(commit)
            services = (release or {}).get("services") if isinstance(release, dict) else None
            for svc in (services or {}).values():
                image = svc.get("image") if isinstance(svc, dict) else None
                if not isinstance(image, str):
                    raise BadRequest(f"apps.{app_uuid}.releases.{commit}: a service without "
                                     "an image")
                images.append(image.split("@", 1)[0])
    return criteria


def check_releases(criteria: Mapping[str, tuple[set[str], list[str]]],
                   known: Mapping[str, Mapping[str, set[str]]]) -> None:
    """`known`: app uuid -> successful commit -> image locations. Unauthorized when a report
    names a commit that is not one of the app's, or an image that is not one of theirs."""
    for app_uuid, (commits, images) in criteria.items():
        releases = known.get(app_uuid, {})
        if any(c not in releases for c in commits):
            raise Unauthorized("Unauthorized")
        locations = set().union(*(releases[c] for c in commits)) if commits else set()
        if any(i not in locations for i in images):
            raise Unauthorized("Unauthorized")


def device_fields(state: Mapping[str, Any], violations: list[str], uuid: str) -> dict[str, Any]:
    """The fields openBalena keeps of a report, type-checked (400 for a wrong type, as Pine's
    typed columns answer); lenient rules become violations."""
    fields = {k: state[k] for k in (*V3_FIELDS, *METRIC_FIELDS) if k in state}
    for key, value in fields.items():
        types = _TYPES.get(key)
        if value is None or types is None:
            continue
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise BadRequest(f"{key} has the wrong type: {value!r}")
    status = fields.get("status")
    if isinstance(status, str) and len(status) > STATUS_MAX:
        violations.append(f"{uuid}: status longer than {STATUS_MAX} characters: {status!r}")
        fields["status"] = status[:STATUS_MAX]
    variant = fields.get("os_variant")
    if variant is not None and variant not in OS_VARIANTS:
        violations.append(f"{uuid}: os_variant {variant!r} is dropped by openBalena")
        del fields["os_variant"]
    if "logs_channel" in state:
        fields["logs_channel"] = state["logs_channel"]  # kept for display: not a column
    if "apps" in state:
        fields["apps"] = state["apps"]
    return fields


# ---------------------------------------------------------------------------- handlers


async def register(request: Request) -> Response:
    cloud: Any = request.app.state.cloud
    fleet_id = await cloud.db.run(cloud.db.fleet_of_provisioning_key, cloud.bearer(request))
    if fleet_id is None:
        raise Unauthorized("Unauthorized")
    body = await cloud.json(request)
    application = body.get("application")
    if isinstance(application, bool) or not str(application).isdigit():
        raise BadRequest("Application ID must be a valid integer")
    if int(application) != fleet_id:
        raise Unauthorized("Unauthorized")
    slug, uuid, api_key = body.get("device_type"), body.get("uuid"), body.get("api_key")
    if slug is None:
        raise BadRequest("Device type must be specified")
    if uuid is None:
        raise BadRequest("UUID must be specified")
    if not isinstance(uuid, str) or not uuid or not isinstance(slug, str) \
            or not isinstance(api_key, str | None):
        raise BadRequest("uuid, device_type and api_key must be strings")
    if await cloud.db.run(cloud.db.has_device, uuid):
        raise Conflict('"uuid" must be unique.')
    if api_key and await cloud.db.run(cloud.db.device_by_key, api_key) is not None:
        raise Conflict('"key" must be unique.')
    if slug not in await cloud.db.run(cloud.db.device_types):
        raise NotFound(f"Unknown device type {slug}")
    device = await cloud.db.run(cloud.db.register_device, fleet_id, uuid, slug, api_key or "")
    _LOGGER.info("registered device %s (id %s) in fleet %s", uuid, device["id"], fleet_id)
    return JSONResponse({"id": device["id"], "uuid": uuid, "api_key": device["api_key"]},
                        status_code=201)


async def report_state(request: Request) -> Response:
    cloud: Any = request.app.state.cloud
    device = await _caller(cloud, request)  # before the body is read
    body = await cloud.json(request)
    reports = {uuid: state for uuid, state in body.items() if state is not None}
    if not reports:
        raise BadRequest("no device in the body")
    updates = []
    for uuid, state in reports.items():
        if not isinstance(state, dict):
            raise BadRequest(f"the report of {uuid} must be an object")
        if device["uuid"] != uuid:  # devices.length !== deviceIds.length
            raise Unauthorized("Unauthorized")
        criteria = release_criteria(state)
        known = await cloud.db.run(cloud.db.fleet_releases, device["fleet_id"])
        try:
            check_releases(criteria, known)
        except Unauthorized:
            cloud.violations.append(f"{uuid}: 401, the report names a release or image that "
                                    f"is not its fleet's: {sorted(criteria)}")
            raise
        updates.append(device_fields(state, cloud.violations, uuid))
    for fields in updates:
        await cloud.db.run(cloud.db.merge_state, device["id"], fields)
    return PlainTextResponse("OK")


async def report_tags(request: Request) -> Response:
    cloud: Any = request.app.state.cloud
    device = await _caller(cloud, request)  # before the body is read
    try:
        body = check_tags(await cloud.json(request))
    except BadRequest as err:
        cloud.violations.append(f"tags refused: {err}")
        raise
    if any(uuid != device["uuid"] for uuid in body):
        raise Unauthorized("Unauthorized")
    for tags in body.values():
        await cloud.db.run(cloud.db.set_tags, device["id"], tags)
    return PlainTextResponse("OK")


async def _caller(cloud: Any, request: Request) -> dict[str, Any]:
    device: dict[str, Any] | None = await cloud.db.run(cloud.db.device_by_key,
                                                       cloud.bearer(request))
    if device is None:
        raise Unauthorized("Unauthorized")
    return device
