"""Who is calling: API key extraction, key lookup and app scopes (api.md §2).

`AuthMiddleware` runs before every route except the open ones (`GET /v1/healthy`, `GET /ping`,
`GET /openapi.json`). It stores an `Auth` in the ASGI scope's state; handlers ask it
`is_scoped(app_id)` on app-specific endpoints. Lookups are in memory (`ApiContext.lookup_key`),
so authentication never leaves the event loop. With `--scoped-keys own-apps`, it also
refuses a scoped key on every route that is not about its own apps (docs/security.md).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from supervisor.api.context import ApiContext

_LOGGER = logging.getLogger(__name__)

_HEADER_RE = re.compile(r"^(?:ApiKey|Bearer) (\w+)$", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True, slots=True)
class Auth:
    """The caller: the key it used and the apps it may touch (`None`: every app)."""

    key: str
    apps: frozenset[int] | None

    def is_scoped(self, app_id: int) -> bool:
        return self.apps is None or app_id in self.apps


def key_from_request(query_string: bytes, authorization: str | None) -> str:
    """`?apikey=` (exact name, non-empty) wins over `Authorization: ApiKey|Bearer <\\w+>`."""
    if query_string:
        values = [v for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
                  if k == "apikey"]
        # Express' qs turns a repeated parameter into an array, which is not a key.
        if len(values) == 1 and values[0]:
            return values[0]
    if authorization:
        match = _HEADER_RE.match(authorization)
        if match:
            return match.group(1)
    return ""


def allowed_apps(scopes: object) -> frozenset[int] | None:
    """Scopes -> the app ids they grant; `None` when one of them is global.

    Accepts the stored JSON text, a list of `{"type": "global"}` / `{"type": "app", "appId": N}`
    mappings, or objects with `type` and `app_id`/`appId` attributes.
    """
    if isinstance(scopes, str | bytes):
        try:
            scopes = json.loads(scopes)
        except ValueError:
            return frozenset()
    if not isinstance(scopes, Iterable) or isinstance(scopes, Mapping):
        return frozenset()
    apps: set[int] = set()
    for scope in scopes:
        if isinstance(scope, Mapping):
            kind = scope.get("type")
            app_id = scope.get("appId", scope.get("app_id"))
        else:
            kind = getattr(scope, "type", None)
            app_id = getattr(scope, "app_id", getattr(scope, "appId", None))
        if kind == "global":
            return None
        if kind == "app" and isinstance(app_id, int) and not isinstance(app_id, bool):
            apps.add(app_id)
    return frozenset(apps)


def auth_of(scope: Scope) -> Auth:
    """The `Auth` the middleware attached (routes outside the table use this too)."""
    auth = scope.get("state", {}).get("auth")
    if not isinstance(auth, Auth):
        raise RuntimeError("request did not pass AuthMiddleware")
    return auth


def normalise_path(path: str) -> str:
    """Express matches paths case-insensitively and with one optional trailing slash."""
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path.lower()


async def _send_text(send: Send, status: int, body: str, ctype: str) -> None:
    data = body.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", ctype.encode()), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


class AuthMiddleware:
    """Pure ASGI: 401 `Unauthorized` (text/plain) unless the request carries a known key."""

    def __init__(self, app: ASGIApp, ctx: ApiContext,
                 is_open: Callable[[str, str], bool],
                 scoped_may: Callable[[str, str], bool] | None = None) -> None:
        self.app = app
        self.ctx = ctx
        self.is_open = is_open
        # None: a scoped key may call any route (upstream); else the routes it may call
        self.scoped_may = scoped_may

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if self.is_open(scope["method"], scope["path"]):
            state["auth"] = Auth("", None)
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        key = key_from_request(scope.get("query_string", b""), authorization)
        try:
            auth = self._authenticate(key)
        except Exception as err:  # the key store failed: upstream answers 503 text
            _LOGGER.exception("API key lookup failed")
            await _send_text(send, 503, f"Unexpected error: {err}", "text/html; charset=utf-8")
            return
        if auth is None or (auth.apps is not None and self.scoped_may is not None
                            and not self.scoped_may(scope["method"], scope["path"])):
            await _send_text(send, 401, "Unauthorized", "text/plain; charset=utf-8")
            return
        state["auth"] = auth
        await self.app(scope, receive, send)

    def _authenticate(self, key: str) -> Auth | None:
        ctx = self.ctx
        if ctx.local_mode or ctx.unmanaged:
            # No authentication at all; every app is in scope (api.md §2.3).
            return Auth(key, None)
        record = ctx.lookup_key(key) if key else None
        if record is None:
            return None
        return Auth(key, allowed_apps(record.scopes))
