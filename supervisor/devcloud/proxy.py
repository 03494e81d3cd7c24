"""The supervisor API proxy (`POST /supervisor/<path>`) and instant-update notifications, as
open-balena-api's device-proxy (src/features/device-proxy/device-proxy.ts, v49) does them.

The body names devices with `appId`, `deviceId` and/or `uuid` (all given must match: 400
`At least one filter must be specified` without any; `App ID must be a valid integer if
specified`...), `method` (default POST; PUT, PATCH, POST, HEAD, DELETE, GET, else 400
`Invalid method '<m>'`) and `data` (the JSON body; none without it). Each "online" device (here:
one that reported `api_port` and `api_secret`; none: 404 `No online device(s) found`) is called
at `<path>?apikey=<api_secret>`, the original query string dropped. One device: its answer is
checked and passed on (JSON as JSON; text/plain or text/html only when made of letters,
digits, whitespace and :'.?!,/-, sent as text/plain; no content type: the status alone; else:
500 `{"error": "Bad API response from supervisor"}`). Several devices: 207 with
`[{"statusCode", "body"}]` in device id order. A device that does not answer: 502.

A local development fleet: every device runs on this machine, so a device is reached at
127.0.0.1:<its reported api_port>; the reported ip_address is never used (openBalena goes
through its VPN, which this project does not provide).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import Response as HttpResponse

from supervisor.cloud.http import CloudError, Response, send
from supervisor.errors import BadRequest, NotFound

_LOGGER = logging.getLogger(__name__)

DEVICE_HOST = "127.0.0.1"
TIMEOUT_S = 30.0
NOTIFY_TIMEOUT_S = 5.0


class DeviceUnreachable(Exception):
    pass


def device_address(device: Mapping[str, Any]) -> tuple[str, str]:
    """(base URL, API key) of a device from its last report."""
    state = device.get("state") or {}
    port, secret = state.get("api_port"), state.get("api_secret")
    if not isinstance(port, int) or not secret:
        raise DeviceUnreachable(f"device {device.get('uuid')} has not reported its API "
                                "port and key yet")
    return f"http://{DEVICE_HOST}:{port}", str(secret)


METHODS = ("PUT", "PATCH", "POST", "HEAD", "DELETE", "GET")
_PLAIN = re.compile(r"[A-Za-z0-9\s:'.?!,/-]*")
_BAD = {"error": "Bad API response from supervisor"}


async def call_device(device: Mapping[str, Any], path: str, *, method: str = "POST",
                      data: Any = None, limit_s: float = TIMEOUT_S) -> Response:
    """`<method> <path>?apikey=<api_secret>`, `data` as the JSON body (none when None)."""
    base, secret = device_address(device)
    url = base + "/" + quote(path.lstrip("/"), safe="/:@!$&'()*+,;=-._~") \
        + "?apikey=" + quote(secret, safe="")
    body = None
    headers = {"Accept": "*/*"}
    if data is not None:
        body = json.dumps(data).encode("utf-8")
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, method=method.upper(), headers=headers)
    try:
        return await asyncio.to_thread(send, request, limit_s)
    except CloudError as err:
        raise DeviceUnreachable(str(err)) from err


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not str(value).isdigit():
        raise BadRequest(f"{what} must be a valid integer if specified")
    return int(value)


async def supervisor_proxy(request: Request) -> HttpResponse:
    cloud: Any = request.app.state.cloud
    cloud.require_admin(request)
    body = await cloud.json(request)
    app_id, device_id, uuid = body.get("appId"), body.get("deviceId"), body.get("uuid")
    if app_id is not None:
        app_id = _check_int(app_id, "App ID")
    if device_id is not None:
        device_id = _check_int(device_id, "Device ID")
    if uuid is not None and not isinstance(uuid, str):
        raise BadRequest("UUID must be a valid string if specified")
    if app_id is None and device_id is None and uuid is None:
        raise BadRequest("At least one filter must be specified")
    method = str(body.get("method") or "POST").upper()
    if method not in METHODS:
        raise BadRequest(f"Invalid method '{method}'")
    devices = [d for d in await cloud.db.run(cloud.db.devices, app_id)
               if device_id in (None, d["id"]) and uuid in (None, d["uuid"])
               and _online(d)]
    if not devices:
        raise NotFound("No online device(s) found")
    path = "/" + request.path_params["path"]
    try:
        answers = await asyncio.gather(*(call_device(d, path, method=method,
                                                     data=body.get("data"))
                                         for d in devices))
    except DeviceUnreachable as err:
        return JSONResponse({"error": str(err)}, status_code=502)
    if len(answers) == 1:
        return passthrough(answers[0])
    return JSONResponse([{"statusCode": a.status, "body": _body(a)} for a in answers],
                        status_code=207)


def _online(device: Mapping[str, Any]) -> bool:
    try:
        device_address(device)
    except DeviceUnreachable:
        return False
    return True


def passthrough(answer: Response) -> HttpResponse:
    """One device's answer, checked as openBalena's validateSupervisorResponse does."""
    kind = answer.headers.get("content-type")
    if kind is None:
        return HttpResponse(status_code=answer.status)
    text = answer.body.decode("utf-8", "replace")
    if re.match(r"application/json", kind, re.IGNORECASE):
        try:
            return JSONResponse(json.loads(text), status_code=answer.status)
        except ValueError:
            return JSONResponse(_BAD, status_code=500)
    if re.match(r"text/(plain|html)", kind):
        if _PLAIN.fullmatch(text):
            return HttpResponse(text, status_code=answer.status, media_type="text/plain")
        return JSONResponse(_BAD, status_code=500)
    return JSONResponse(_BAD, status_code=500)


def _body(answer: Response) -> Any:
    text = answer.body.decode("utf-8", "replace")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


async def notify_update(devices: list[dict[str, Any]]) -> None:
    """Tell devices a new target is there (`POST /v1/update`), best effort."""
    async def one(device: dict[str, Any]) -> None:
        try:
            await call_device(device, "/v1/update", data={}, limit_s=NOTIFY_TIMEOUT_S)
        except DeviceUnreachable as err:
            _LOGGER.info("could not notify %s: %s", device["uuid"], err)

    await asyncio.gather(*(one(d) for d in devices))
