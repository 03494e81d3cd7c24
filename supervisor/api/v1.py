"""v1 endpoints (api.md §3): parse, check the caller's scope, call an action or read a view.

Errors raised here or by the actions are turned into responses by `api/app.py`, following the
route's error style (each v1 route answers errors in its own legacy format).
"""

from __future__ import annotations

import logging

from starlette.responses import Response

from supervisor.api import views
from supervisor.api.params import ApiRequest, check_int, check_truthy

_LOGGER = logging.getLogger(__name__)

_UNAUTHORIZED = {"status": "failed", "message": "Unauthorized"}


async def healthy(r: ApiRequest) -> Response:
    ok, reason = await r.ctx.actions.health()
    if ok:
        return views.send_status(200)
    _LOGGER.error("Healthcheck failed: %s", reason)
    return views.html_text("Unhealthy", 500)


async def ping(r: ApiRequest) -> Response:
    return views.html_text("OK")


async def blink(r: ApiRequest) -> Response:
    await r.ctx.actions.blink()
    return views.send_status(200)


async def regenerate_api_key(r: ApiRequest) -> Response:
    return views.html_text(await r.ctx.actions.regenerate_api_key(r.auth.key))


async def restart(r: ApiRequest) -> Response:
    app_id = check_int(r.field("appId"))
    force = check_truthy(r.field("force"))
    if app_id is None:
        return views.html_text("Missing app id", 400)
    if not r.auth.is_scoped(app_id):
        return views.json(_UNAUTHORIZED, 401)
    await r.ctx.actions.restart_app(app_id, force)
    return views.html_text("OK")


async def _legacy_service(r: ApiRequest, action: str) -> Response:
    app_id = check_int(r.path("appId"))
    force = check_truthy(r.field("force"))
    if app_id is None:
        return views.html_text("Invalid app id", 400)
    if not r.auth.is_scoped(app_id):
        return views.html_text("Unauthorized", 401)
    actions = r.ctx.actions
    container_id = (await actions.v1_stop(app_id, force) if action == "stop"
                    else await actions.v1_start(app_id))
    return views.json({"containerId": container_id})


async def app_stop(r: ApiRequest) -> Response:
    return await _legacy_service(r, "stop")


async def app_start(r: ApiRequest) -> Response:
    return await _legacy_service(r, "start")


async def reboot(r: ApiRequest) -> Response:
    await r.ctx.actions.reboot(check_truthy(r.field("force")))
    return views.json({"Data": "OK", "Error": None}, 202)


async def shutdown(r: ApiRequest) -> Response:
    await r.ctx.actions.shutdown(check_truthy(r.field("force")))
    return views.json({"Data": "OK", "Error": None}, 202)


async def app_get(r: ApiRequest) -> Response:
    app_id = check_int(r.path("appId"))
    if app_id is None:
        return views.html_text("Missing app id", 400)
    if not r.auth.is_scoped(app_id):
        return views.json({"status": "failed", "message": "Application is not available"}, 401)
    return views.json(views.v1_app(r.ctx.snapshot, app_id))


async def purge(r: ApiRequest) -> Response:
    app_id = check_int(r.field("appId"))
    force = check_truthy(r.field("force"))
    if app_id is None:
        return views.html_text("Invalid or missing appId", 400)
    if not r.auth.is_scoped(app_id):
        return views.json(_UNAUTHORIZED, 401)
    await r.ctx.actions.purge_app(app_id, force)
    return views.json({"Data": "OK", "Error": ""})


async def update(r: ApiRequest) -> Response:
    started = await r.ctx.actions.update(check_truthy(r.field("force")),
                                         check_truthy(r.field("cancel")))
    return views.send_status(204 if started else 202)


async def host_config_get(r: ApiRequest) -> Response:
    return views.json(await r.ctx.actions.get_host_config())


async def host_config_patch(r: ApiRequest) -> Response:
    # `force` is read from the top level of the body, never from inside `network`.
    await r.ctx.actions.patch_host_config(r.body, check_truthy(r.field("force")))
    return views.html_text("OK")


async def device(r: ApiRequest) -> Response:
    snapshot = r.ctx.snapshot
    return views.json_bytes(r.cache.get(snapshot, "v1/device",
                                        lambda: views.v1_device(snapshot)))
