"""The devcloud HTTP server: the device-facing cloud API, the API proxy and the admin API.

Device-facing (what the agent's `supervisor/cloud` calls; state.md §4-§8), as strict as
open-balena-api (the rules: openbalena.py):
  POST  /device/register                     provisioning key -> new device (201; 409 if known)
  GET   /v7/device?$filter=uuid eq '<uuid>'  lookup for the key exchange (device key or admin)
  PATCH /v7/device(<id>)                     {"device_name"} (initialDeviceName)
  POST  /v7/device_config_variable           {"device", "name", "value"} (initial config)
  POST  /api-key/device/<id>/device-key      {"apiKey"}: set the device key (admin only)
  GET   /device/v3/<uuid>/state              the target, with ETag / If-None-Match -> 304
  PATCH /device/v3/state                     state report (openbalena.py)
  PATCH /device/v3/tags, GET /v7/device_tag  device tags (openbalena.py)
  POST  /device/v2/<uuid>/log-stream         gzip NDJSON logs (see managed.py)
  GET   /auth/v1/token?service=&scope=       a registry token (basic auth d_<uuid>:<device key>)
Proxy (admin token): POST /supervisor/<path>  (see proxy.py)
Admin (admin token): /admin/fleets..., /admin/devices..., GET /admin/violations (the
openBalena rules devices broke), and GET /devices/<uuid>/logs
(NDJSON; `?follow=1` streams new lines, `?count=N`); every change
that alters targets notifies the affected devices with `POST /v1/update`.

Every route checks its caller (admin token, provisioning key or device key) before it reads a
body; bodies are counted while they stream in (10 MB at most, a 413 past it) and parsed with
the device API's bounded JSON parser; keys are compared in constant time (docs/security.md).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from supervisor.api.params import parse_json, read_limited
from supervisor.devcloud import managed, openbalena, proxy
from supervisor.devcloud.db import Db, Kind, Scope
from supervisor.devcloud.registry import TokenIssuer
from supervisor.errors import BadRequest, Forbidden, NotFound, SupervisorError, Unauthorized

BODY_LIMIT = 10 * 1024 * 1024  # bytes of a request body (JSON); a 413 past it

_LOGGER = logging.getLogger(__name__)

_FILTER_UUID = re.compile(r"uuid eq '([^']*)'")

Handler = Callable[[Request], Awaitable[Response]]


class DevCloud:
    """The server's state: the database, the admin token, logs, background notifications."""

    def __init__(self, db: Db, token: str, registry: TokenIssuer | None = None) -> None:
        self.db = db
        self.token = token
        self.registry = registry  # signs registry tokens when set (registry.py)
        self.logs = managed.DeviceLogs()
        self.violations: list[str] = []  # openBalena rules the devices broke (openbalena.py)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- auth ---------------------------------------------------------------------------------

    @staticmethod
    def bearer(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("bearer", "apikey") and value.strip():
            return value.strip()
        return request.query_params.get("apikey", "")

    def is_admin(self, request: Request) -> bool:
        return hmac.compare_digest(self.bearer(request).encode(), self.token.encode())

    def is_device(self, request: Request, device: dict[str, Any]) -> bool:
        key = self.bearer(request)
        return bool(key) and hmac.compare_digest(key.encode(), str(device["api_key"]).encode())

    def require_admin(self, request: Request) -> None:
        if not self.is_admin(request):
            raise Unauthorized("admin token required")

    async def device_of(self, request: Request, uuid: str | None = None) -> dict[str, Any]:
        """The device whose key authenticates the request (and, if given, has `uuid`)."""
        device = await self.db.run(self.db.device_by_key, self.bearer(request))
        if device is None:
            raise Unauthorized("unknown device key")
        if uuid is not None and device["uuid"] != uuid:
            raise Forbidden("this key belongs to another device")
        return device

    @staticmethod
    async def json(request: Request) -> dict[str, Any]:
        return await _json(request)

    # -- notifications --------------------------------------------------------------------------

    def notify(self, devices: list[dict[str, Any]]) -> None:
        task = asyncio.create_task(proxy.notify_update(devices), name="devcloud-notify")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def notify_fleet(self, fleet_id: int) -> None:
        self.notify(await self.db.run(self.db.devices, fleet_id))


# ---------------------------------------------------------------------------- device-facing


async def find_device(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    match = _FILTER_UUID.search(request.query_params.get("$filter", ""))
    if match is None:
        raise BadRequest("this devcloud only answers $filter=uuid eq '<uuid>'")
    try:
        device = await cloud.db.run(cloud.db.device, match.group(1))
    except NotFound:
        return JSONResponse({"d": []})
    if not await _may_see(cloud, request, device):
        return JSONResponse({"d": []})
    select = request.query_params.get("$select", "id,uuid,device_name")
    full = {"id": device["id"], "uuid": device["uuid"], "device_name": device["name"],
            "belongs_to__application": {"__id": device["fleet_id"]}}
    return JSONResponse({"d": [{k: full[k] for k in select.split(",") if k in full}]})


async def _may_see(cloud: DevCloud, request: Request, device: dict[str, Any]) -> bool:
    """The admin and the device itself; a provisioning key may not read devices (openBalena)."""
    return cloud.is_admin(request) or cloud.is_device(request, device)


async def patch_device(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    device = await cloud.db.run(cloud.db.device, int(request.path_params["id"]))
    if not (cloud.is_admin(request) or cloud.is_device(request, device)):
        raise Unauthorized("not allowed to change this device")
    body = await _json(request)
    name = body.get("device_name")
    if name is not None:
        await cloud.db.run(cloud.db.update_device, device["id"], name=str(name))
    return PlainTextResponse("OK")


async def device_config_variable(request: Request) -> Response:
    """POST /v7/device_config_variable {"device", "name", "value"}: the initial configuration
    report of a device (state.md §4.3), with its own key."""
    cloud: DevCloud = request.app.state.cloud
    body = await _json(request)
    device_id, name, value = body.get("device"), body.get("name"), body.get("value")
    if not isinstance(device_id, int) or isinstance(device_id, bool):
        raise BadRequest("device must be a device id")
    if not isinstance(name, str) or not 0 < len(name) <= 256:
        raise BadRequest("name must be a string of 1 to 256 characters")
    if not isinstance(value, str) or len(value) > 1_000_000:
        raise BadRequest("value must be a string of at most 1 MB")
    device = await cloud.db.run(cloud.db.device, device_id)
    if not (cloud.is_admin(request) or cloud.is_device(request, device)):
        raise Unauthorized("not allowed to configure this device")
    await cloud.db.run(cloud.db.set_var, "device", device["id"], "config", name, value)
    cloud.notify([device])
    return JSONResponse({"device": {"__id": device["id"]}, "name": name, "value": value},
                        status_code=201)


async def device_key(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    if not cloud.is_admin(request):  # openBalena: not a provisioning key's permission
        raise Unauthorized("Unauthorized")
    device = await cloud.db.run(cloud.db.device, int(request.path_params["id"]))
    key = (await _json(request)).get("apiKey")
    if not isinstance(key, str) or not key:
        raise BadRequest("apiKey is required")
    await cloud.db.run(cloud.db.update_device, device["id"], api_key=key)
    return JSONResponse(key)


async def target_state(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    device = await cloud.device_of(request, request.path_params["uuid"])
    body, etag = await cloud.db.run(cloud.db.target, device["uuid"])
    await cloud.db.run(cloud.db.touch_poll, device["id"])
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return JSONResponse(body, headers={"ETag": etag})


async def device_tags(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    match = re.search(r"device/uuid eq '([^']*)'", request.query_params.get("$filter", ""))
    if match is None:
        raise BadRequest("this devcloud only answers $filter=device/uuid eq '<uuid>'")
    device = await cloud.db.run(cloud.db.device, match.group(1))
    if not (cloud.is_admin(request) or cloud.is_device(request, device)):
        raise Unauthorized("not allowed to read this device's tags")
    return JSONResponse({"d": await cloud.db.run(cloud.db.tags, device["id"])})


# ---------------------------------------------------------------------------- admin


async def fleets(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    cloud.require_admin(request)
    if request.method == "POST":
        body = await _json(request)
        fleet = await cloud.db.run(cloud.db.create_fleet, str(body.get("name") or ""),
                                   str(body.get("device_type") or "generic-amd64"))
        return JSONResponse(fleet, status_code=201)
    return JSONResponse(await cloud.db.run(cloud.db.fleets))


async def fleet(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    cloud.require_admin(request)
    found = await cloud.db.run(cloud.db.fleet, request.path_params["fleet"])
    if request.method == "PATCH":
        body = await _json(request)
        if "pinned_release" in body:
            await cloud.db.run(cloud.db.pin_fleet, found["id"], body["pinned_release"])
            await cloud.notify_fleet(found["id"])
        found = await cloud.db.run(cloud.db.fleet, found["id"])
    return JSONResponse(found)


async def releases(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    cloud.require_admin(request)
    found = await cloud.db.run(cloud.db.fleet, request.path_params["fleet"])
    if request.method == "POST":
        release = await cloud.db.run(cloud.db.add_release, found["id"], await _json(request))
        await cloud.notify_fleet(found["id"])
        return JSONResponse(release, status_code=201)
    return JSONResponse(await cloud.db.run(cloud.db.releases, found["id"]))


async def provisioning_keys(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    cloud.require_admin(request)
    found = await cloud.db.run(cloud.db.fleet, request.path_params["fleet"])
    key = await cloud.db.run(cloud.db.create_provisioning_key, found["id"])
    return JSONResponse({"key": key, "applicationId": found["id"], "fleet": found["name"],
                         "deviceType": found["device_type"]}, status_code=201)


async def devices(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    cloud.require_admin(request)
    return JSONResponse([_public(d) for d in await cloud.db.run(cloud.db.devices)])


async def device(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    cloud.require_admin(request)
    found = await cloud.db.run(cloud.db.device, request.path_params["uuid"])
    if request.method == "PATCH":
        body = await _json(request)
        if "name" in body:
            await cloud.db.run(cloud.db.update_device, found["id"], name=str(body["name"]))
        if "pinned_release" in body:
            await cloud.db.run(cloud.db.pin_device, found["id"], body["pinned_release"])
        found = await cloud.db.run(cloud.db.device, found["id"])
        cloud.notify([found])
    out = _public(found)
    out["state"] = found["state"]
    out["tags"] = {t["tag_key"]: t["value"] for t in await cloud.db.run(cloud.db.tags, found["id"])}
    out["target"], _ = await cloud.db.run(cloud.db.target, found["uuid"])
    return JSONResponse(out)


async def device_logs(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    cloud.require_admin(request)
    return JSONResponse(cloud.logs.recent(request.path_params["uuid"]))


async def variables(request: Request) -> Response:
    """GET /admin/<fleets|devices>/<ref>/<env|config>: that owner's own variables."""
    cloud: DevCloud = request.app.state.cloud
    cloud.require_admin(request)
    if request.path_params["scope"] not in ("fleets", "devices") \
            or request.path_params["kind"] not in ("env", "config"):
        raise NotFound("use /admin/<fleets|devices>/<ref>/<env|config>")
    scope: Scope = "fleet" if request.path_params["scope"] == "fleets" else "device"
    kind: Kind = "env" if request.path_params["kind"] == "env" else "config"
    ref = request.path_params["ref"]
    owner = await cloud.db.run(cloud.db.fleet if scope == "fleet" else cloud.db.device, ref)
    return JSONResponse(await cloud.db.run(cloud.db.vars, scope, owner["id"], kind))


async def variable(request: Request) -> Response:
    """PUT (body {"value"}) or DELETE /admin/<fleets|devices>/<ref>/<env|config>/<NAME>."""
    cloud: DevCloud = request.app.state.cloud
    cloud.require_admin(request)
    if request.path_params["scope"] not in ("fleets", "devices") \
            or request.path_params["kind"] not in ("env", "config"):
        raise NotFound("use /admin/<fleets|devices>/<ref>/<env|config>/<NAME>")
    scope: Scope = "fleet" if request.path_params["scope"] == "fleets" else "device"
    kind: Kind = "env" if request.path_params["kind"] == "env" else "config"
    ref, name = request.path_params["ref"], request.path_params["name"]
    if scope == "fleet":
        owner = await cloud.db.run(cloud.db.fleet, ref)
        affected = await cloud.db.run(cloud.db.devices, owner["id"])
    else:
        owner = await cloud.db.run(cloud.db.device, ref)
        affected = [owner]
    if request.method == "PUT":
        value = (await _json(request)).get("value")
        if value is None:
            raise BadRequest("value is required")
        await cloud.db.run(cloud.db.set_var, scope, owner["id"], kind, name, str(value))
    else:
        await cloud.db.run(cloud.db.delete_var, scope, owner["id"], kind, name)
    cloud.notify(affected)
    return PlainTextResponse("OK")


def _public(device: dict[str, Any]) -> dict[str, Any]:
    """A device row for listings: no keys; the report's headline fields."""
    state = device.get("state") or {}
    apps = state.get("apps") or {}
    releases = {}
    for app in apps.values():
        for commit, rel in (app.get("releases") or {}).items():
            releases[commit] = rel.get("update_status")
    running = [app.get("release_uuid") for app in apps.values() if app.get("release_uuid")]
    return {
        "id": device["id"], "uuid": device["uuid"], "name": device["name"],
        "fleet_id": device["fleet_id"], "device_type": device["device_type"],
        "pinned_commit": device["pinned_commit"], "api_port": state.get("api_port"),
        "ip_address": state.get("ip_address"), "status": state.get("status"),
        "release": running[0] if running else None, "update_status": releases,
        "last_report": device["last_report"], "last_poll": device["last_poll"],
    }


# ---------------------------------------------------------------------------- plumbing


async def violations(request: Request) -> Response:
    cloud: DevCloud = request.app.state.cloud
    cloud.require_admin(request)
    return JSONResponse(cloud.violations)


async def ping(request: Request) -> Response:
    return PlainTextResponse("OK")


async def _json(request: Request) -> dict[str, Any]:
    """The JSON object body: counted while it streams in (413 past BODY_LIMIT) and parsed with
    the device API's parser (nesting and value counts bounded). Call it only once the caller
    is authenticated."""
    raw = await read_limited(request, BODY_LIMIT)
    if not raw:
        return {}
    try:
        body = parse_json(raw)
    except UnicodeDecodeError as err:
        raise BadRequest(f"invalid JSON: {err.reason}") from err
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not str(value).isdigit():
        raise BadRequest(f"{what} must be a number")
    return int(value)


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SupervisorError)
    return JSONResponse({"error": str(exc)}, status_code=exc.http_status)


def build_app(cloud: DevCloud) -> Starlette:
    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/device/register", openbalena.register, methods=["POST"]),
        Route("/v7/device", find_device, methods=["GET"]),
        Route("/v7/device({id:int})", patch_device, methods=["PATCH"]),
        Route("/v7/device_config_variable", device_config_variable, methods=["POST"]),
        Route("/api-key/device/{id:int}/device-key", device_key, methods=["POST"]),
        Route("/device/v3/{uuid}/state", target_state, methods=["GET"]),
        Route("/device/v3/state", openbalena.report_state, methods=["PATCH"]),
        Route("/device/v3/tags", openbalena.report_tags, methods=["PATCH"]),
        Route("/v7/device_tag", device_tags, methods=["GET"]),
        Route("/device/v2/{uuid}/log-stream", managed.log_stream, methods=["POST"]),
        Route("/auth/v1/token", managed.registry_token, methods=["GET"]),
        Route("/supervisor/{path:path}", proxy.supervisor_proxy, methods=["POST"]),
        Route("/admin/fleets", fleets, methods=["GET", "POST"]),
        Route("/admin/fleets/{fleet}", fleet, methods=["GET", "PATCH"]),
        Route("/admin/fleets/{fleet}/releases", releases, methods=["GET", "POST"]),
        Route("/admin/fleets/{fleet}/provisioning-keys", provisioning_keys, methods=["POST"]),
        Route("/admin/violations", violations, methods=["GET"]),
        Route("/admin/devices", devices, methods=["GET"]),
        Route("/admin/devices/{uuid}", device, methods=["GET", "PATCH"]),
        Route("/admin/devices/{uuid}/logs", device_logs, methods=["GET"]),
        Route("/devices/{uuid}/logs", managed.device_logs, methods=["GET"]),
        Route("/admin/{scope:str}/{ref}/{kind:str}", variables, methods=["GET"]),
        Route("/admin/{scope:str}/{ref}/{kind:str}/{name}", variable, methods=["PUT", "DELETE"]),
    ]
    app = Starlette(routes=routes, exception_handlers={SupervisorError: _error})
    app.state.cloud = cloud
    return app
