"""v2 endpoints (api.md §4), plus our `GET /v2/locks` and `GET /v2/plan`.

Handlers parse, check scopes and shape responses; reads come from the snapshot (views cached
per snapshot), changes go through `ctx.actions`. `api/app.py` maps raised errors to responses.
"""

from __future__ import annotations

import re
from typing import Literal

from starlette.responses import Response

from supervisor.actions.messages import V2_SERVICE_ENDPOINT_ERROR
from supervisor.api import views
from supervisor.api.params import ApiRequest, check_int, check_string, check_truthy, js_truthy
from supervisor.api.streams import SlotStreamingResponse, stream_slots
from supervisor.cloud.tags import RESERVED_PREFIXES
from supervisor.errors import BadRequest
from supervisor.journal import JournalParams

_UNAUTHORIZED = {"status": "failed", "message": "Unauthorized"}
_BAD_TAGS = "Invalid tags body, must be an object like `{[tagKey: string]: string}`"
_SPACE = re.compile(r"\s")


async def _service_action(r: ApiRequest, action: Literal["restart", "stop", "start"]) -> Response:
    app_id = check_int(r.path("appId"))
    image_id = check_int(r.field("imageId"))
    service_name = check_string(r.field("serviceName"))
    force = check_truthy(r.field("force"))
    if not app_id:
        return views.failed("Invalid app id", 400)
    if not r.auth.is_scoped(app_id):
        return views.json(_UNAUTHORIZED, 401)
    if not service_name and not image_id:
        raise BadRequest(V2_SERVICE_ENDPOINT_ERROR)
    await r.ctx.actions.service_action(action, app_id, service_name, image_id, force)
    return views.html_text("OK")


async def restart_service(r: ApiRequest) -> Response:
    return await _service_action(r, "restart")


async def stop_service(r: ApiRequest) -> Response:
    return await _service_action(r, "stop")


async def start_service(r: ApiRequest) -> Response:
    return await _service_action(r, "start")


async def _app_action(r: ApiRequest, purge: bool) -> Response:
    app_id = check_int(r.path("appId"))
    force = check_truthy(r.field("force"))
    if not app_id:
        return views.failed("Missing app id", 400)
    if not r.auth.is_scoped(app_id):
        return views.json(_UNAUTHORIZED, 401)
    actions = r.ctx.actions
    await (actions.purge_app(app_id, force) if purge else actions.restart_app(app_id, force))
    return views.html_text("OK")


async def purge(r: ApiRequest) -> Response:
    return await _app_action(r, purge=True)


async def restart(r: ApiRequest) -> Response:
    return await _app_action(r, purge=False)


async def applications_state(r: ApiRequest) -> Response:
    snapshot, apps = r.ctx.snapshot, r.auth.apps
    return views.json_bytes(r.cache.get(snapshot, ("apps", apps),
                                        lambda: views.applications_state(snapshot, apps)))


async def application_state(r: ApiRequest) -> Response:
    raw = r.path("appId")
    app_id = check_int(raw)
    if not app_id:
        return views.failed(f"Invalid application ID: {raw}", 400)
    try:
        state = views.app_legacy_state(r.ctx.snapshot, app_id)
    except Exception:
        return views.failed(f"Unable to retrieve state for application ID: {app_id}", 500)
    # Out of scope looks exactly like a missing app (api.md §2.5).
    if state is None or not r.auth.is_scoped(app_id):
        return views.failed(f"Application ID does not exist: {app_id}", 409)
    return views.json(state)


async def local_target_get(r: ApiRequest) -> Response:
    return views.json({"status": "success", "state": await r.ctx.actions.get_local_target()})


async def local_target_post(r: ApiRequest) -> Response:
    if not (r.ctx.local_mode or r.ctx.unmanaged):
        return views.failed("Target state can only set when device is in local mode", 400)
    # Upstream passes `body.force` with plain JavaScript truthiness here, not checkTruthy.
    await r.ctx.actions.set_local_target(r.body, js_truthy(r.field("force")))
    return views.json({"status": "success", "message": "OK"})


async def device_info(r: ApiRequest) -> Response:
    device = r.ctx.snapshot.device
    return views.json({"status": "success",
                       "info": {"arch": device.arch, "deviceType": device.device_type}})


async def version(r: ApiRequest) -> Response:
    return views.json({"status": "success", "version": r.version})


async def container_id(r: ApiRequest) -> Response:
    query = r.request.query_params
    names = query.getlist("serviceName") or query.getlist("service")
    snapshot, apps = r.ctx.snapshot, r.auth.apps
    if not names:
        return views.json_bytes(r.cache.get(snapshot, ("containerIds", apps),
                                            lambda: views.container_id_map(snapshot, apps)))
    # A repeated parameter is an array upstream, which never equals a service name.
    wanted = names[0] if len(names) == 1 else None
    for container in views.scoped_containers(snapshot, apps):
        if container.service_name == wanted:
            return views.json({"status": "success", "containerId": container.id})
    return views.failed("Could not find service with that name", 503)


async def state_status(r: ApiRequest) -> Response:
    snapshot, apps = r.ctx.snapshot, r.auth.apps
    return views.json_bytes(r.cache.get(snapshot, ("status", apps),
                                        lambda: views.state_status(snapshot, apps)))


async def device_name(r: ApiRequest) -> Response:
    return views.json({"status": "success", "deviceName": r.ctx.snapshot.device.name})


async def tags_get(r: ApiRequest) -> Response:
    return views.json({"status": "success", "tags": await r.ctx.actions.get_tags()})


async def tags_patch(r: ApiRequest) -> Response:
    body = r.body
    # Upstream also lets a JSON array through (index keys); we refuse it (docs/api.md).
    if not isinstance(body, dict):
        raise BadRequest(_BAD_TAGS)
    for key, value in body.items():
        if not isinstance(value, str):
            raise BadRequest(_BAD_TAGS)
        if _SPACE.search(key):
            raise BadRequest("Tag keys cannot contain whitespace")
        # Not upstream's: the cloud refuses these keys, so they could never be reported.
        for prefix in RESERVED_PREFIXES:
            if key.startswith(prefix):
                raise BadRequest(f"Tag keys beginning with {prefix} are reserved.")
    await r.ctx.actions.set_tags(body)
    return views.json({"status": "success"}, 202)


async def vpn(r: ApiRequest) -> Response:
    enabled, connected = await r.ctx.actions.vpn_status()
    return views.json({"status": "success", "vpn": {"enabled": enabled, "connected": connected}})


async def cleanup_volumes(r: ApiRequest) -> Response:
    # A scoped key cleans only its own apps' orphans (deliberate fix of api.md §4.16).
    await r.ctx.actions.cleanup_volumes(r.auth.apps)
    return views.json({"status": "success"})


def _opt_str(r: ApiRequest, name: str) -> str | None:
    value = r.field(name)
    if isinstance(value, str):
        if "\0" in value:  # no argv entry can hold it: a client error, not a failed exec
            raise BadRequest(f"Invalid {name}: must not contain a NUL character")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def journal_params(r: ApiRequest) -> JournalParams:
    return JournalParams(
        all=check_truthy(r.field("all")),
        follow=check_truthy(r.field("follow")),
        count=check_int(r.field("count"), positive=True),
        unit=_opt_str(r, "unit"),
        container_id=_opt_str(r, "containerId"),
        format=_opt_str(r, "format") or "short",
        since=_opt_str(r, "since"),
        until=_opt_str(r, "until"),
    )


async def journal_logs(r: ApiRequest) -> Response:
    params = journal_params(r)
    # Each journal read is a journalctl process: capped like the other streams (429/503).
    slot = stream_slots(r.request).acquire(r.auth.key)
    try:
        stream = await r.ctx.actions.journal_logs(params)
    except BaseException:
        slot.release()
        raise
    # No content type: upstream pipes journalctl's stdout as is.
    return SlotStreamingResponse(stream, slot, status_code=200)


async def locks(r: ApiRequest) -> Response:
    held = [lock for lock in await r.ctx.locks()
            if not isinstance(lock.get("appId"), int) or r.auth.is_scoped(lock["appId"])]
    return views.json({"status": "success", "locks": held})


async def plan(r: ApiRequest) -> Response:
    snapshot, apps = r.ctx.snapshot, r.auth.apps
    return views.json_bytes(r.cache.get(snapshot, ("plan", apps),
                                        lambda: views.plan_view(snapshot, apps)))
