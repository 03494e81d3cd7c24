"""How the device API is served: uvicorn's settings, and a guard on requests that never end.

Data flow: `runtime.run()` builds the app (api/app.py) and serves it with `server_config()`.
uvicorn alone keeps a connection that sends half a request (or nothing) forever, with its file
descriptor; `GuardedH11Protocol` closes it when the request line and headers have not arrived
within `header_timeout` seconds, or the whole request (body included) within
`request_timeout`, as Node's `headersTimeout`/`requestTimeout` do for upstream. Idle
keep-alive connections are uvicorn's own `timeout_keep_alive`. Past `limit_concurrency`
connections uvicorn answers 503 itself. Long-lived response streams are capped per key and in
total by api/streams.py (`StreamSlots`), not here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

_LOGGER = logging.getLogger(__name__)

HEADER_TIMEOUT = 30.0  # seconds to send the request line and headers
REQUEST_TIMEOUT = 300.0  # seconds to send the whole request, body included
KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open (Node's default too)
LIMIT_CONCURRENCY = 256  # connections (or requests in flight) at once; beyond, a 503


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request.

    The deadline starts with the request's first byte (or with the connection, for the first
    request): `header_timeout` for the headers, `request_timeout` for the body. It is not
    reset by more data, so a client dripping a byte at a time is closed too. Nothing runs
    while a request is complete: a long response stream is not affected.
    """

    header_timeout: float = HEADER_TIMEOUT
    request_timeout: float = REQUEST_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None
        self._started = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._seen_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _receiving(self) -> str | None:
        """"headers" or "body" while a request is partly received, else None."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._seen_request = True
            return "body"
        if state is not h11.IDLE:
            self._seen_request = True
            return None
        if not self._seen_request:
            return "headers"  # a new connection owes us a request
        pending, _closed = self.conn.trailing_data
        return "headers" if pending else None  # else idle: uvicorn's keep-alive timer

    def _watch(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        phase = self._receiving()
        if phase == self._phase:
            return
        if self._phase is None:
            self._started = self.loop.time()  # a request begins
        self._cancel()
        self._phase = phase
        if phase is not None:
            limit = self.header_timeout if phase == "headers" else self.request_timeout
            self._deadline = self.loop.call_at(self._started + limit, self._expired, phase)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        _LOGGER.info("closing a connection: its request %s did not arrive in time", phase)
        self.transport.close()


def server_config(app: ASGIApp, host: str, port: int, *,
                  header_timeout: float = HEADER_TIMEOUT,
                  request_timeout: float = REQUEST_TIMEOUT,
                  limit_concurrency: int = LIMIT_CONCURRENCY) -> uvicorn.Config:
    """The uvicorn settings of the device API (also used by the real-socket tests)."""
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "header_timeout": header_timeout, "request_timeout": request_timeout})
    return uvicorn.Config(
        app, host=host, port=port, http=protocol,
        log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=1, timeout_keep_alive=KEEP_ALIVE,
        limit_concurrency=limit_concurrency,
        server_header=False,  # Express sends no Server header (and it says what we run)
    )
