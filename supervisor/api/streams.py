"""Streaming and metrics routes: `GET /v2/local/logs`, `GET /v2/events`, `GET /v2/device/metrics`.

Data flow: the log hub (`supervisor/logs.py`) and the event bus (`supervisor/events.py`) hand
each connection its own bounded subscription; these handlers only turn what comes out of it
into bytes (NDJSON for logs, `text/event-stream` for events). A client that disconnects is
unsubscribed at once (upstream leaks its listener, api.md §4.9). Metrics run
`supervisor.system.probe()` in a thread. Authentication is the app's middleware, as for every
route; `/v2/events` also filters app events to the caller's scope.

Two ways to mount them: `stream_routes(ctx)` (Starlette routes) or `stream_endpoints(ctx)`
(for `build_app(ctx, extra=...)`, which adds error mapping and OpenAPI docs).

Every long-lived stream (these two, and `POST /v2/journal-logs` in api/v2.py, which runs a
journalctl) holds a `StreamSlot` of the app's `StreamSlots` for as long as its response runs:
at most STREAMS_PER_KEY per API key (beyond: 429) and STREAMS_TOTAL in all (beyond: 503).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from supervisor import system
from supervisor.api import views
from supervisor.api.auth import Auth
from supervisor.api.endpoint import Endpoint, ErrorStyle
from supervisor.errors import SupervisorError
from supervisor.events import Event, EventBus, state_event
from supervisor.logs import STREAMING, Closed, LogHub

if TYPE_CHECKING:
    from supervisor.api.params import ApiRequest

HEARTBEAT = 15.0  # seconds between SSE comments: keeps proxies and idle timeouts at bay
BATCH = 256  # lines or events written in one chunk when a backlog is waiting
STREAMS_PER_KEY = 8  # open streams of one API key (balena CLI uses one or two)
STREAMS_TOTAL = 32  # open streams in all: each may hold a journalctl process


class TooManyStreams(SupervisorError):
    """This key has STREAMS_PER_KEY streams open already."""

    http_status = 429
    retryable = False


class StreamsBusy(SupervisorError):
    """STREAMS_TOTAL streams are open on the device."""

    http_status = 503


class StreamSlots:
    """Counts open streams per API key and in total (one per app, on the event loop)."""

    def __init__(self, per_key: int = STREAMS_PER_KEY, total: int = STREAMS_TOTAL) -> None:
        self.per_key = per_key
        self.total = total
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._open.total()

    def acquire(self, key: str) -> StreamSlot:
        if self._open[key] >= self.per_key:
            raise TooManyStreams(f"Too many open streams for this API key (at most "
                                 f"{self.per_key}): close one first")
        if self.open >= self.total:
            raise StreamsBusy(f"Too many open streams on this device (at most {self.total}): "
                              "try again later")
        self._open[key] += 1
        return StreamSlot(self, key)

    def _release(self, key: str) -> None:
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]


class StreamSlot:
    """One open stream; `release()` may be called more than once."""

    def __init__(self, slots: StreamSlots, key: str) -> None:
        self._slots: StreamSlots | None = slots
        self._key = key

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._release(self._key)


def stream_slots(request: Request) -> StreamSlots:
    """The app's stream counter (made on first use: one per Starlette app)."""
    state = request.app.state
    slots = getattr(state, "stream_slots", None)
    if not isinstance(slots, StreamSlots):
        slots = StreamSlots()
        state.stream_slots = slots
    return slots


def caller_key(request: Request) -> str:
    auth = request.scope.get("state", {}).get("auth")
    return auth.key if isinstance(auth, Auth) else ""


class SlotStreamingResponse(StreamingResponse):
    """A StreamingResponse that gives its slot back when it ends, however it ends (the
    body finished, the client went away, the send failed)."""

    def __init__(self, content: AsyncIterable[bytes], slot: StreamSlot,
                 **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


def open_stream(request: Request, content: Callable[[], AsyncIterable[bytes]],
                **kwargs: Any) -> Response:
    """Take a slot for the caller's key (429/503 when none is left), then stream."""
    slot = stream_slots(request).acquire(caller_key(request))
    try:
        return SlotStreamingResponse(content(), slot, **kwargs)
    except BaseException:
        slot.release()
        raise


class StreamContext(Protocol):
    """What these routes need from the runtime (`RuntimeApi` grows these members)."""

    @property
    def local_mode(self) -> bool: ...

    @property
    def unmanaged(self) -> bool: ...

    @property
    def logs(self) -> LogHub: ...

    @property
    def events(self) -> EventBus: ...

    @property
    def data_dir(self) -> Path | str: ...


Probe = Callable[[Path | str], system.SystemInfo]
RouteHandler = Callable[[Request], Awaitable[Response]]


def _scope_apps(request: Request) -> frozenset[int] | None:
    """The caller's apps (None: all). Without the auth middleware nothing is filtered."""
    auth = request.scope.get("state", {}).get("auth")
    return auth.apps if isinstance(auth, Auth) else None


def _handlers(ctx: StreamContext, *, probe: Probe,
              heartbeat: float) -> dict[str, RouteHandler]:

    async def local_logs(request: Request) -> Response:
        """NDJSON forever: `Streaming logs`, then every line while in local mode (api.md §4.9:
        outside local mode upstream sends only the first line; so do we)."""

        def local() -> bool:
            return ctx.local_mode or ctx.unmanaged

        async def body() -> AsyncIterator[bytes]:
            # Subscribe inside the generator: its `finally` then always unsubscribes.
            # The mode is judged when a line is logged, as upstream switches backends.
            with ctx.logs.subscribe(accept=lambda _msg: local()) as sub:
                yield STREAMING
                while True:
                    try:
                        first = await sub.get()
                    except Closed:
                        return
                    batch = [first]
                    while len(batch) < BATCH and (more := sub.get_nowait()) is not None:
                        batch.append(more)
                    yield b"".join(m.ndjson() for m in batch)

        # No content type, as upstream (Express pipes a bare stream).
        return open_stream(request, body, status_code=200, media_type=None)

    async def events(request: Request) -> Response:
        apps = _scope_apps(request)

        def visible(ev: Event) -> bool:
            return ev.app_id is None or apps is None or ev.app_id in apps

        def resync() -> bytes:
            latest = ctx.events.latest
            return state_event(latest, apps).sse() if latest is not None else b""

        async def body() -> AsyncIterator[bytes]:
            with ctx.events.subscribe(accept=visible) as sub:
                yield b": connected\n\n" + resync()
                while True:
                    try:
                        first = await asyncio.wait_for(sub.get(), heartbeat)
                    except TimeoutError:
                        yield b": heartbeat\n\n"
                        continue
                    except Closed:
                        return
                    batch = [first]
                    while len(batch) < BATCH and (more := sub.get_nowait()) is not None:
                        batch.append(more)
                    chunk = b"".join(ev.sse() for ev in batch)
                    if any(ev.name == "dropped" for ev in batch):
                        chunk += resync()  # after a gap the client cannot trust its picture
                    if chunk:
                        yield chunk

        return open_stream(request, body, status_code=200, media_type="text/event-stream",
                           headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def metrics(request: Request) -> Response:
        info = await asyncio.to_thread(probe, ctx.data_dir)
        return views.json({"status": "success", **metrics_body(info)})

    return {"local_logs": local_logs, "events": events, "metrics": metrics}


def metrics_body(info: system.SystemInfo) -> dict[str, Any]:
    """`GET /v2/device/metrics` fields (state.md §6.2 names, plus uptime and boot time)."""
    return {
        "cpu_usage": info.cpu_usage,
        "memory_usage": info.memory_usage,
        "memory_total": info.memory_total,
        "storage_usage": info.storage_usage,
        "storage_total": info.storage_total,
        "storage_block_device": info.storage_block_device,
        "cpu_temp": info.cpu_temp,
        "cpu_id": info.cpu_id,
        "uptime": int(info.uptime),
        "boot_time": int(info.boot_time),
    }


_PATHS = (("/v2/local/logs", "local_logs"), ("/v2/events", "events"),
          ("/v2/device/metrics", "metrics"))


class _ExpressRoute(Route):
    """Matched like Express (and api/app.py): case-insensitive, one optional trailing slash."""

    def __init__(self, path: str, endpoint: RouteHandler, methods: Sequence[str]) -> None:
        super().__init__(path, endpoint, methods=list(methods))
        self.path_regex = re.compile(self.path_regex.pattern[:-1] + "/?$", re.IGNORECASE)


def stream_routes(ctx: StreamContext, *, probe: Probe = system.probe,
                  heartbeat: float = HEARTBEAT) -> list[Route]:
    """The three routes as Starlette routes (GET; HEAD is answered by Starlette)."""
    handlers = _handlers(ctx, probe=probe, heartbeat=heartbeat)
    return [_ExpressRoute(path, handlers[name], ["GET"]) for path, name in _PATHS]


def stream_endpoints(ctx: StreamContext, *, probe: Probe = system.probe,
                     heartbeat: float = HEARTBEAT) -> tuple[Endpoint, ...]:
    """The three routes for `build_app(api_ctx, extra=stream_endpoints(ctx))`."""
    handlers = _handlers(ctx, probe=probe, heartbeat=heartbeat)

    def adapt(handler: RouteHandler) -> Callable[[ApiRequest], Awaitable[Response]]:
        async def endpoint(r: ApiRequest) -> Response:
            return await handler(r.request)

        endpoint.__name__ = handler.__name__
        return endpoint

    return tuple(
        Endpoint("GET", path, adapt(handlers[name]), ErrorStyle.STATUS, parse_body=False,
                 doc=OPENAPI[path])
        for path, name in _PATHS
    )


OPENAPI: dict[str, dict[str, Any]] = {
    "/v2/local/logs": {
        "summary": "Stream the device log as NDJSON (balena CLI `balena logs <ip>`)",
        "tags": ["v2"],
        "description": "First line `{\"message\":\"Streaming logs\",\"isSystem\":true}`; then "
                       "system and service lines while the device is in local mode. "
                       "See docs/logs-and-events.md.",
        "responses": {"200": {"description": "Never-ending NDJSON stream",
                              "content": {"application/x-ndjson": {
                                  "schema": {"type": "string"}}}}},
    },
    "/v2/events": {
        "summary": "Server-sent events of state changes (not upstream)",
        "tags": ["extensions"],
        "description": "`state`, `service-status`, `download-progress`, `apply-start`, "
                       "`apply-end`, `lock-wait`, `lock-released`, `error`, `dropped`; a "
                       "comment every 15 s. See docs/logs-and-events.md.",
        "responses": {"200": {"description": "Never-ending event stream",
                              "content": {"text/event-stream": {
                                  "schema": {"type": "string"}}}}},
    },
    "/v2/device/metrics": {
        "summary": "CPU, memory, storage, temperature and uptime (not upstream)",
        "tags": ["extensions"],
        "responses": {"200": {"description": "Metrics", "content": {"application/json": {
            "schema": {"type": "object", "properties": {
                "status": {"const": "success"},
                "cpu_usage": {"type": "integer"}, "memory_usage": {"type": "integer"},
                "memory_total": {"type": "integer"},
                "storage_usage": {"type": ["integer", "null"]},
                "storage_total": {"type": ["integer", "null"]},
                "storage_block_device": {"type": ["string", "null"]},
                "cpu_temp": {"type": ["integer", "null"]},
                "cpu_id": {"type": ["string", "null"]},
                "uptime": {"type": "integer"}, "boot_time": {"type": "integer"}}}}}}},
    },
}
