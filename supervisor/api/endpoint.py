"""One route of the device API: its path, handler, error style and auth (used by api/app.py's
route table and by api/streams.py's extra endpoints, so neither imports the other)."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from supervisor.api.params import ApiRequest

Handler = Callable[[ApiRequest], Awaitable[Response]]


class ErrorStyle(enum.Enum):
    """How a route answers errors (upstream is deliberately inconsistent, api.md §1.1)."""

    DEFAULT = "default"  # error middleware: 423 JSON for locks, 503 JSON for anything else
    LEGACY = "legacy"  # BadRequest/NotFound -> text with their status; else DEFAULT
    GO = "go"  # {"Data": "", "Error": msg}: 423 for locks, 500 otherwise (reboot, shutdown)
    HOST_CONFIG = "host-config"  # text: 423 locks, 400 BadRequest, 503 otherwise
    LOCAL_TARGET = "local-target"  # BadRequest -> 400 JSON; else DEFAULT
    TAGS = "tags"  # BadRequest -> 400 JSON; else 500 JSON
    V2_500 = "v2-500"  # anything -> 500 JSON
    HEALTH = "health"  # anything -> 500 `Unhealthy`
    STATUS = "status"  # our routes: the error's own http_status, JSON


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route. `path` uses Starlette's `{param}` syntax; `doc` is its OpenAPI operation
    (only for extra endpoints: the built-in ones are documented in api/openapi.py)."""

    method: str
    path: str
    handler: Handler
    style: ErrorStyle = ErrorStyle.DEFAULT
    auth: bool = True
    parse_body: bool = True
    # A scoped key restricted to its own apps (`--scoped-keys own-apps`) may call it: the
    # app-specific routes, the views filtered by scope, the version, its own regeneration.
    own_apps: bool = False
    doc: Mapping[str, Any] | None = field(default=None, compare=False)
