"""The devcloud's side of the managed-device features: device logs and registry tokens.

Routes (registered in server.py): `POST /device/v2/<uuid>/log-stream` (device key),
`GET /devices/<uuid>/logs` (admin token; NDJSON, `?count=N`, `?follow=1`), and
`GET /auth/v1/token` (basic auth `d_<uuid>` : device key, or `admin` : admin token;
state.md §12; the tokens are signed for a token-auth registry, see registry.py).

The log stream's body goes to `ingest()`: gzip (or plain)
NDJSON, read as it arrives, decompressed in bounded steps (a line longer than `MAX_LINE` bytes,
or a stream that would inflate past it, is refused), each line checked and reduced to the
fields of config.md §10.1, plus `serviceName` when the device's target names the serviceId.
`DeviceLogs` keeps the last lines of each device in memory and hands new ones to followers
(`GET /devices/<uuid>/logs?follow=1`, `devcloud logs <uuid> --follow`). A follower that reads
too slowly loses lines rather than slowing the device's stream.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hmac
import json
import logging
import secrets
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from supervisor.devcloud import registry
from supervisor.errors import BadRequest, Unauthorized

_LOGGER = logging.getLogger(__name__)

KEEP_PER_DEVICE = 10_000
MAX_LINE = 256 * 1024  # bytes; the device truncates messages at 10 000 characters
MAX_MESSAGE = 65_536  # characters kept per line: a bound, not the device's truncation
FOLLOW_QUEUE = 1_000
_STEP = 64 * 1024  # decompressed bytes per inflate step


class DeviceLogs:
    def __init__(self, keep: int = KEEP_PER_DEVICE) -> None:
        self.keep = keep
        self._lines: dict[str, deque[dict[str, Any]]] = {}
        self._followers: dict[str, list[asyncio.Queue[dict[str, Any]]]] = {}

    def append(self, uuid: str, entries: list[dict[str, Any]]) -> None:
        self._lines.setdefault(uuid, deque(maxlen=self.keep)).extend(entries)
        for queue in self._followers.get(uuid, ()):
            for entry in entries:
                if queue.full():
                    break  # a slow follower loses lines; the stream never waits
                queue.put_nowait(entry)

    def recent(self, uuid: str, count: int | None = None) -> list[dict[str, Any]]:
        lines = list(self._lines.get(uuid, ()))
        return lines if count is None else lines[max(len(lines) - count, 0):]

    @contextmanager
    def subscribe(self, uuid: str) -> Any:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(FOLLOW_QUEUE)
        self._followers.setdefault(uuid, []).append(queue)
        try:
            yield queue
        finally:
            self._followers[uuid].remove(queue)


def clean_entry(raw: object, names: Mapping[int, str]) -> dict[str, Any] | None:
    """The fields a log line may carry, type-checked; None for anything else."""
    if not isinstance(raw, dict) or not isinstance(raw.get("message"), str):
        return None
    entry: dict[str, Any] = {"message": raw["message"][:MAX_MESSAGE]}
    stamp = raw.get("timestamp")
    if isinstance(stamp, int) and not isinstance(stamp, bool):
        entry["timestamp"] = stamp
    if raw.get("isSystem") is True:
        entry["isSystem"] = True
    elif isinstance(raw.get("serviceId"), int) and not isinstance(raw["serviceId"], bool):
        entry["serviceId"] = raw["serviceId"]
        if raw["serviceId"] in names:
            entry["serviceName"] = names[raw["serviceId"]]
    else:
        return None  # a service line must say which service
    if raw.get("isStdErr") is True:
        entry["isStdErr"] = True
    elif "serviceId" in entry:
        entry["isStdErr"] = False
    return entry


async def ingest(body: AsyncIterator[bytes], *, gzipped: bool, names: Mapping[int, str],
                 sink: Callable[[list[dict[str, Any]]], None]) -> int:
    """Read a log stream to its end, handing each batch of clean lines to `sink`.
    Returns how many lines were not usable (bad JSON or fields)."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
    pending = b""
    rejected = 0

    def lines_of(data: bytes) -> list[bytes]:
        nonlocal pending
        pending += data
        *complete, pending = pending.split(b"\n")
        if len(pending) > MAX_LINE:
            raise BadRequest(f"a log line is longer than {MAX_LINE} bytes")
        return complete

    def take(texts: list[bytes]) -> None:
        nonlocal rejected
        batch = []
        for text in texts:
            if not text.strip():
                continue
            try:
                entry = clean_entry(json.loads(text), names)
            except ValueError:
                entry = None
            if entry is None:
                rejected += 1
            else:
                batch.append(entry)
        if batch:
            sink(batch)

    async for chunk in body:
        if inflate is None:
            take(lines_of(chunk))
            continue
        data = chunk
        while data:
            # One bounded step at a time, its lines handled before the next: a small chunk
            # that inflates to gigabytes never is in memory at once, nor holds the loop.
            try:
                out = inflate.decompress(data, _STEP)
            except zlib.error as err:
                raise BadRequest(f"the log stream is not valid gzip: {err}") from err
            take(lines_of(out))
            data = inflate.unconsumed_tail
            if data:
                await asyncio.sleep(0)
    return rejected


def service_names(target: Mapping[str, Any]) -> dict[int, str]:
    """serviceId -> name, from a device's v3 target (service ids are stable per fleet)."""
    names: dict[int, str] = {}
    for device in target.values():
        for app in (device.get("apps") or {}).values():
            for release in (app.get("releases") or {}).values():
                for name, svc in (release.get("services") or {}).items():
                    if isinstance(svc.get("id"), int):
                        names[svc["id"]] = name
    return names


def render(entry: Mapping[str, Any]) -> str:
    """One line for people: `<time> [<service>|Supervisor] <message>`."""
    stamp = entry.get("timestamp")
    when = datetime.datetime.fromtimestamp(stamp / 1000, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:-3] if isinstance(stamp, int) else "-"
    who = "Supervisor" if entry.get("isSystem") else \
        entry.get("serviceName") or f"service {entry.get('serviceId')}"
    return f"{when} [{who}] {entry.get('message', '')}"


# ---------------------------------------------------------------------------- routes

async def log_stream(request: Request) -> Response:
    cloud: Any = request.app.state.cloud  # server.DevCloud (not imported: server imports us)
    device = await cloud.device_of(request, request.path_params["uuid"])
    target, _ = await cloud.db.run(cloud.db.target, device["uuid"])
    gzipped = request.headers.get("content-encoding", "").lower() == "gzip"
    rejected = await ingest(
        request.stream(), gzipped=gzipped, names=service_names(target),
        sink=lambda batch: cloud.logs.append(device["uuid"], batch))
    if rejected:
        _LOGGER.info("log stream of %s: %d unusable line(s) skipped", device["uuid"], rejected)
    return PlainTextResponse("OK")


async def device_logs(request: Request) -> Response:
    """GET /devices/<uuid>/logs[?count=N][&follow=1]: NDJSON, one log line per line."""
    cloud: Any = request.app.state.cloud
    cloud.require_admin(request)
    uuid = (await cloud.db.run(cloud.db.device, request.path_params["uuid"]))["uuid"]
    raw_count = request.query_params.get("count")
    if raw_count is not None and not (raw_count.isascii() and raw_count.isdigit()):
        raise BadRequest("count must be a number")
    count = None if raw_count is None else int(raw_count)
    follow = request.query_params.get("follow", "") in ("1", "true")
    store: DeviceLogs = cloud.logs

    async def lines() -> AsyncIterator[bytes]:
        with store.subscribe(uuid) as queue:
            for entry in store.recent(uuid, count):
                yield json.dumps(entry).encode() + b"\n"
            while follow:
                yield json.dumps(await queue.get()).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def registry_token(request: Request) -> Response:
    """`GET /auth/v1/token?service=&scope=`: a registry token (state.md §12; registry.py).
    Basic auth `d_<uuid>` : device key (pull of the device's fleet's repositories) or
    `admin` : admin token (push and pull)."""
    cloud: Any = request.app.state.cloud
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    try:
        user, _, key = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        user, key = "", ""
    basic = scheme.lower() == "basic" and bool(key)
    admin = basic and user == "admin" and hmac.compare_digest(key.encode(), cloud.token.encode())
    device = await cloud.db.run(cloud.db.device_by_key, key) if basic and not admin else None
    if not admin and (device is None or user != f"d_{device['uuid']}"):
        raise Unauthorized("basic auth d_<uuid>:<device key> required")
    service = request.query_params.get("service") or ""
    asked = registry.parse_scopes(request.query_params.getlist("scope"))
    if not service or asked is None:
        raise BadRequest("service and scope=repository:<name>:<actions> are required")
    if cloud.registry is None:  # no signing key: an opaque token (deltas only)
        return JSONResponse({"token": secrets.token_hex(16)})
    if admin or device is None:
        access = registry.grant(asked, allowed=None, actions=("pull", "push", "*"))
    else:
        releases = await cloud.db.run(cloud.db.fleet_releases, device["fleet_id"])
        repos = {repo for app in releases.values() for images in app.values()
                 for image in images if (repo := registry.repository(image, service))}
        access = registry.grant(asked, allowed=repos, actions=("pull",))
    token = await asyncio.to_thread(cloud.registry.token, subject=user, service=service,
                                    access=access)
    return JSONResponse({"token": token, "access_token": token,
                         "expires_in": registry.TTL_S})
