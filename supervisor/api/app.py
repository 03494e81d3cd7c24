"""The device HTTP API application: route table, middleware, and THE error -> response map.

`build_app(ctx)` returns a Starlette app that behaves like upstream's Express app on the wire
(api.md §1): the request log, then the open routes (`/v1/healthy`, `/ping`), then the auth
middleware, then every v1 and v2 route in upstream order. Handlers (api/v1.py, api/v2.py) raise;
`render_error` is the one place where an exception becomes a response, in the error style of the
route (upstream answers errors differently per endpoint).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor import COMPAT_VERSION
from supervisor.api import openapi, v1, v2, views
from supervisor.api.auth import AuthMiddleware, auth_of, normalise_path
from supervisor.api.context import ApiContext
from supervisor.api.endpoint import Endpoint, ErrorStyle
from supervisor.api.params import ApiRequest, MalformedBody, read_body
from supervisor.errors import BadRequest, NotFound, SupervisorError, UpdatesLocked

_LOGGER = logging.getLogger("supervisor.api")


E = Endpoint
S = ErrorStyle

# Upstream order (api.md §1 "Route order"). Blink and regenerate come before the body parsers.
OPEN_ENDPOINTS: tuple[Endpoint, ...] = (
    E("GET", "/v1/healthy", v1.healthy, S.HEALTH, auth=False, parse_body=False),
    E("GET", "/ping", v1.ping, auth=False, parse_body=False),
)
V1_ENDPOINTS: tuple[Endpoint, ...] = (
    E("POST", "/v1/blink", v1.blink, parse_body=False),
    E("POST", "/v1/regenerate-api-key", v1.regenerate_api_key, parse_body=False, own_apps=True),
    E("POST", "/v1/restart", v1.restart, own_apps=True),
    E("POST", "/v1/apps/{appId}/stop", v1.app_stop, S.LEGACY, own_apps=True),
    E("POST", "/v1/apps/{appId}/start", v1.app_start, S.LEGACY, own_apps=True),
    E("POST", "/v1/reboot", v1.reboot, S.GO),
    E("POST", "/v1/shutdown", v1.shutdown, S.GO),
    E("GET", "/v1/apps/{appId}", v1.app_get, S.LEGACY, own_apps=True),
    E("POST", "/v1/purge", v1.purge, own_apps=True),
    E("POST", "/v1/update", v1.update),
    E("GET", "/v1/device/host-config", v1.host_config_get),
    E("PATCH", "/v1/device/host-config", v1.host_config_patch, S.HOST_CONFIG),
    E("GET", "/v1/device", v1.device),
)
V2_ENDPOINTS: tuple[Endpoint, ...] = (
    E("POST", "/v2/applications/{appId}/restart-service", v2.restart_service, S.LEGACY,
      own_apps=True),
    E("POST", "/v2/applications/{appId}/stop-service", v2.stop_service, S.LEGACY,
      own_apps=True),
    E("POST", "/v2/applications/{appId}/start-service", v2.start_service, S.LEGACY,
      own_apps=True),
    E("POST", "/v2/applications/{appId}/purge", v2.purge, own_apps=True),
    E("POST", "/v2/applications/{appId}/restart", v2.restart, own_apps=True),
    E("GET", "/v2/applications/state", v2.applications_state, own_apps=True),
    E("GET", "/v2/applications/{appId}/state", v2.application_state, S.V2_500, own_apps=True),
    E("GET", "/v2/local/target-state", v2.local_target_get),
    E("POST", "/v2/local/target-state", v2.local_target_post, S.LOCAL_TARGET),
    E("GET", "/v2/local/device-info", v2.device_info, S.V2_500),
    # GET /v2/local/logs is added by the runtime through `build_app(extra=...)`.
    E("GET", "/v2/version", v2.version, own_apps=True),
    E("GET", "/v2/containerId", v2.container_id, own_apps=True),
    E("GET", "/v2/state/status", v2.state_status, own_apps=True),
    E("GET", "/v2/device/name", v2.device_name),
    E("GET", "/v2/device/tags", v2.tags_get, S.V2_500),
    E("PATCH", "/v2/device/tags", v2.tags_patch, S.TAGS),
    E("GET", "/v2/device/vpn", v2.vpn),
    E("GET", "/v2/cleanup-volumes", v2.cleanup_volumes),
    E("POST", "/v2/journal-logs", v2.journal_logs, S.STATUS),
    E("GET", "/v2/locks", v2.locks, S.STATUS),
    E("GET", "/v2/plan", v2.plan, S.STATUS),
)


# -- errors ------------------------------------------------------------------------------------

def _message(exc: BaseException) -> str:
    return str(exc) or "Unknown error"


def render_error(exc: Exception, style: ErrorStyle, method: str, path: str) -> Response:
    """THE map from an exception to the response a client of `style`'s route expects."""
    message = _message(exc)
    if isinstance(exc, MalformedBody):
        # Body parsing happens before any route upstream: always the middleware's format,
        # but a client error (deliberate fix: upstream says 503).
        return views.failed(message, exc.http_status)
    if style is ErrorStyle.HEALTH:
        _LOGGER.error("Healthcheck failed: %s", message)
        return views.html_text("Unhealthy", 500)
    if style is ErrorStyle.GO:
        status = 423 if isinstance(exc, UpdatesLocked) else 500
        _log(exc, method, path, status)
        return views.json({"Data": "", "Error": message}, status)
    if style is ErrorStyle.HOST_CONFIG:
        status = (423 if isinstance(exc, UpdatesLocked)
                  else 400 if isinstance(exc, BadRequest) else 503)
        _log(exc, method, path, status)
        return views.html_text(message, status)
    if style is ErrorStyle.LEGACY and isinstance(exc, BadRequest | NotFound):
        return views.html_text(message, exc.http_status)
    if style in (ErrorStyle.LOCAL_TARGET, ErrorStyle.TAGS) and isinstance(exc, BadRequest):
        return views.failed(message, 400)
    if style in (ErrorStyle.TAGS, ErrorStyle.V2_500):
        _log(exc, method, path, 500)
        return views.failed(message, 500)
    if style is ErrorStyle.STATUS and isinstance(exc, SupervisorError):
        _log(exc, method, path, exc.http_status)
        return views.failed(message, exc.http_status)
    status = 423 if isinstance(exc, UpdatesLocked) else 503
    _log(exc, method, path, status)
    return views.failed(message, status)


def _log(exc: Exception, method: str, path: str, status: int) -> None:
    if isinstance(exc, UpdatesLocked):
        _LOGGER.info("%s %s refused: %s", method, path, exc)  # expected, not an error
    elif isinstance(exc, SupervisorError):
        _LOGGER.error("Error on %s %s: %s", method, path, exc)
    else:
        _LOGGER.error("Error on %s %s", method, path, exc_info=exc)


def _wrap(ep: Endpoint, ctx: ApiContext, cache: views.ViewCache,
          version: str) -> Callable[[Request], Awaitable[Response]]:
    handler, style, parse = ep.handler, ep.style, ep.parse_body

    async def endpoint(request: Request) -> Response:
        try:
            body = await read_body(request) if parse else {}
            return await handler(ApiRequest(request, ctx, auth_of(request.scope), body,
                                            cache, version))
        except Exception as exc:
            return render_error(exc, style, request.method, request.scope["path"])

    endpoint.__name__ = handler.__name__
    return endpoint


# -- routing -----------------------------------------------------------------------------------

class ExpressRoute(Route):
    """A route matched like Express: case-insensitive, one optional trailing slash."""

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]],
                 methods: Sequence[str]) -> None:
        super().__init__(path, endpoint, methods=list(methods))
        pattern = self.path_regex.pattern
        self.path_regex = re.compile(pattern[:-1] + "/?$", re.IGNORECASE)


def _allowed(routes: Iterable[Route], path: str) -> list[str]:
    methods: list[str] = []
    for route in routes:
        if route.path_regex.match(path):
            methods += sorted(route.methods or ())
    return list(dict.fromkeys(methods))


def _not_found_handler(routes: Sequence[Route]) -> Callable[[Request, Exception],
                                                            Awaitable[Response]]:
    async def not_found(request: Request, exc: Exception) -> Response:
        method, path = request.method, request.scope["path"]
        if method == "OPTIONS" and (allowed := _allowed(routes, path)):
            # Express answers OPTIONS itself with the methods of every matching route.
            allow = ",".join(allowed)
            return Response(allow.encode(), 200, headers={
                "allow": allow, "content-type": views.HTML})
        if isinstance(exc, HTTPException) and exc.status_code not in (404, 405):
            return views.text(exc.detail, exc.status_code)
        return views.express_not_found(method, path)

    return not_found


# -- middleware --------------------------------------------------------------------------------

class RequestLogMiddleware:
    """Logs `<METHOD> <path> <status> - <ms> ms`; never the query string (it holds the key)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        elapsed = 0.0

        async def send_logged(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = (time.perf_counter() - start) * 1000
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            if not elapsed:
                elapsed = (time.perf_counter() - start) * 1000
            # reads that succeed are the bulk (apps poll): debug, so they cost nothing at the
            # default level; changes and failures stay visible at info
            quiet = scope["method"] in ("GET", "HEAD") and status < 400
            level = logging.DEBUG if quiet else logging.INFO
            if _LOGGER.isEnabledFor(level):
                _LOGGER.log(level, "%s %s %d - %.3f ms", scope["method"], scope["path"],
                            status, elapsed)


class SafetyNetMiddleware:
    """Anything that escapes a route or a middleware becomes a 503 JSON, as upstream."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:
                raise  # too late for a body: let the server close the connection
            response = render_error(exc, ErrorStyle.DEFAULT, scope["method"], scope["path"])
            await response(scope, receive, send)


# -- the app -----------------------------------------------------------------------------------

def version_string() -> str:
    """What `GET /v2/version` reports: upstream's version, plus `+SUPERVISOR_TAG_EXTRA`."""
    extra = os.environ.get("SUPERVISOR_TAG_EXTRA")
    return f"{COMPAT_VERSION}+{extra}" if extra else COMPAT_VERSION


def endpoints(extra: Sequence[Endpoint] = ()) -> tuple[Endpoint, ...]:
    """Every route in matching order; `extra` ones (log streams...) go after v2."""
    return (*OPEN_ENDPOINTS, *V1_ENDPOINTS, *V2_ENDPOINTS, *extra)


def build_app(ctx: ApiContext, *, extra: Sequence[Endpoint] = (),
              scoped_keys_own_apps: bool = False) -> Starlette:
    """The device API. `extra` adds routes owned elsewhere (e.g. `GET /v2/local/logs`,
    `GET /v2/events`): they get auth, body parsing and error mapping like built-in ones.
    `scoped_keys_own_apps` (`--scoped-keys own-apps`) refuses scoped keys everywhere but
    on `own_apps` routes; by default a scoped key may call any route, as upstream."""
    cache = views.ViewCache()
    version = version_string()
    table = endpoints(extra)
    doc_bytes = views.dumps(openapi.document(
        extra={(ep.method, ep.path): ep.doc for ep in extra if ep.doc is not None}))

    async def openapi_json(request: Request) -> Response:
        return views.json_bytes(doc_bytes)

    routes: list[Route] = [ExpressRoute("/openapi.json", openapi_json, ["GET"])]
    routes += [ExpressRoute(ep.path, _wrap(ep, ctx, cache, version), [ep.method])
               for ep in table]
    open_paths = {normalise_path(ep.path) for ep in table if not ep.auth} | {"/openapi.json"}

    def is_open(method: str, path: str) -> bool:
        return method in ("GET", "HEAD") and normalise_path(path) in open_paths

    own_apps_routes = [route for route, ep in zip(routes[1:], table, strict=True)
                       if ep.own_apps]

    def scoped_may(method: str, path: str) -> bool:
        return any(route.path_regex.match(path) and method in (route.methods or ())
                   for route in own_apps_routes)

    not_found = _not_found_handler(routes)
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestLogMiddleware),
            Middleware(SafetyNetMiddleware),
            Middleware(AuthMiddleware, ctx=ctx, is_open=is_open,
                       scoped_may=scoped_may if scoped_keys_own_apps else None),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )
    app.router.redirect_slashes = False
    app.state.ctx = ctx
    return app
