"""The supervisor API proxy (`POST /supervisor/<path>`) and instant-update notifications.

As in balenaCloud (seed: "Remotely via the API proxy"): the body names the devices with
`uuid`, `deviceId` or `appId` (every device of the fleet), `method` defaults to POST and
`data` is forwarded as the JSON body. Each device is called with the `api_secret` it reported
as its API key. One device: its answer is passed through (status, content type, body). A fleet:
a JSON list of `{"uuid", "deviceId", "status", "body"}` (or `"error"` when unreachable).

A local development fleet: every device runs on this machine, so a device is reached at
127.0.0.1:<its reported api_port>; the reported ip_address is never used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from supervisor.cloud.http import CloudError, Response, send

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


async def call_device(device: Mapping[str, Any], path: str, *, method: str = "POST",
                      data: Any = None, query: Mapping[str, str] | None = None,
                      limit_s: float = TIMEOUT_S) -> Response:
    base, secret = device_address(device)
    url = base + "/" + quote(path.lstrip("/"), safe="/:@!$&'()*+,;=-._~")
    if query:
        url += "?" + urlencode(query)
    body = None
    headers = {"Authorization": f"Bearer {secret}", "Accept": "*/*"}
    if method.upper() not in ("GET", "HEAD"):
        body = json.dumps({} if data is None else data).encode("utf-8")
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, method=method.upper(), headers=headers)
    try:
        return await asyncio.to_thread(send, request, limit_s)
    except CloudError as err:
        raise DeviceUnreachable(str(err)) from err


def result_entry(device: Mapping[str, Any], answer: Response | BaseException) -> dict[str, Any]:
    """One device's result in a fan-out answer."""
    entry: dict[str, Any] = {"uuid": device["uuid"], "deviceId": device["id"]}
    if isinstance(answer, BaseException):
        entry["error"] = str(answer)
        return entry
    entry["status"] = answer.status
    text = answer.body.decode("utf-8", "replace")
    try:
        entry["body"] = json.loads(text) if text else None
    except ValueError:
        entry["body"] = text
    return entry


async def notify_update(devices: list[dict[str, Any]]) -> None:
    """Tell devices a new target is there (`POST /v1/update`), best effort."""
    async def one(device: dict[str, Any]) -> None:
        try:
            await call_device(device, "/v1/update", data={}, limit_s=NOTIFY_TIMEOUT_S)
        except DeviceUnreachable as err:
            _LOGGER.info("could not notify %s: %s", device["uuid"], err)

    await asyncio.gather(*(one(d) for d in devices))
