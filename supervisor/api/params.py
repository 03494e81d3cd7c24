"""Request parsing for the device API: bodies and upstream's lenient parameter checks.

Every handler reads its inputs through here, so that `"12"`, `12` and `"12.00"` are the same
appId everywhere and `force` means what it means upstream (api.md §1.3). Bodies follow Express'
body parsers (api.md §1): JSON objects/arrays, form-encoded (qs "extended"), anything else is `{}`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from supervisor.errors import BadRequest

if TYPE_CHECKING:
    from starlette.requests import Request

    from supervisor.api.auth import Auth
    from supervisor.api.context import ApiContext
    from supervisor.api.views import ViewCache

BODY_LIMIT = 10 * 1024 * 1024  # Express' `limit: '10mb'`

_INT_RE = re.compile(r"^-?[0-9]+\.?0*$")
_TRUTHY = frozenset({"1", "true", "on"})


class MalformedBody(BadRequest):
    """The body could not be parsed. Always answered 400 JSON, whatever the route's style."""


class BodyTooLarge(MalformedBody):
    http_status = 413


def check_int(value: object, *, positive: bool = False) -> int | None:
    """upstream `checkInt`: an integer given as a number or a numeric string, else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        result = int(value)
    elif isinstance(value, str) and _INT_RE.match(value):
        result = int(float(value)) if "." in value else int(value)
    else:
        return None
    if positive and result <= 0:
        return None
    return result


def check_truthy(value: object) -> bool:
    """upstream `checkTruthy`: only true, 1, "1", "true", "on" (strings case-insensitive)."""
    if isinstance(value, str):
        return value.lower() in _TRUTHY
    # `True == 1` and `1.0 == 1`, as in JavaScript's switch on numbers.
    return value is True or (not isinstance(value, bool) and value == 1)


def check_string(value: object) -> str | None:
    """upstream `checkString`: a string, unless empty or the words "null"/"undefined"."""
    if not isinstance(value, str) or value in ("", "null", "undefined"):
        return None
    return value


def js_truthy(value: object) -> bool:
    """Plain JavaScript truthiness, for the few places upstream does not use checkTruthy."""
    if isinstance(value, float) and math.isnan(value):
        return False
    return value not in (None, False, 0, "")


def _reject_constant(name: str) -> float:
    # JSON.parse has no NaN/Infinity; accepting them would let nonsense reach the actions.
    raise ValueError(f"Unexpected token {name[0]} in JSON")


def parse_json(raw: bytes) -> Any:
    """body-parser's strict JSON: empty means `{}`; only an object or array is accepted."""
    text = raw.decode("utf-8-sig", errors="strict") if raw else ""
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        return {}
    if stripped[0] not in "{[":
        raise MalformedBody(f"Unexpected token {stripped[0]} in JSON at position 0")
    try:
        return json.loads(stripped, parse_constant=_reject_constant)
    except ValueError as err:
        raise MalformedBody(str(err)) from err


def parse_form(raw: bytes) -> dict[str, Any]:
    """A small `qs` (extended) parser: `a=1`, repeated keys -> list, `a[b]=1`, `a[]=1`."""
    out: dict[str, Any] = {}
    text = raw.decode("utf-8", errors="replace")
    for key, value in parse_qsl(text, keep_blank_values=True):
        head, _, rest = key.partition("[")
        if not rest or not rest.endswith("]") or not head:
            _put(out, key, value)
            continue
        parts = [head, *rest[:-1].split("][")]
        _put_nested(out, parts, value)
    return out


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if key in target:
        existing = target[key]
        target[key] = [*existing, value] if isinstance(existing, list) else [existing, value]
    else:
        target[key] = value


def _put_nested(target: dict[str, Any], parts: list[str], value: str) -> None:
    node = target
    for part, following in itertools.pairwise(parts):
        if following == "":  # `a[]=v` appends to the list at `a`
            existing = node.get(part)
            items = existing if isinstance(existing, list) else (
                [] if existing is None else [existing])
            node[part] = [*items, value]
            return
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    _put(node, parts[-1], value)


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request) -> Any:
    """Parse the body like Express' urlencoded + json parsers; other types give `{}`."""
    ctype = content_type(request)
    if ctype not in ("application/json", "application/x-www-form-urlencoded"):
        return {}
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > BODY_LIMIT:
        raise BodyTooLarge("request entity too large")
    raw = await request.body()
    if len(raw) > BODY_LIMIT:
        raise BodyTooLarge("request entity too large")
    if ctype == "application/json":
        try:
            return parse_json(raw)
        except UnicodeDecodeError as err:
            raise MalformedBody(f"invalid body encoding: {err.reason}") from err
    return parse_form(raw)


@dataclass(slots=True)
class ApiRequest:
    """What a handler gets: the request, the context, the caller, the parsed body, and the
    app-wide view cache and version string."""

    request: Request
    ctx: ApiContext
    auth: Auth
    body: Any
    cache: ViewCache
    version: str

    def field(self, name: str) -> object:
        """`req.body.<name>`: None when absent or when the body is not an object."""
        return self.body.get(name) if isinstance(self.body, dict) else None

    def path(self, name: str) -> str:
        return str(self.request.path_params[name])
