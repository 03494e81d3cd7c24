"""Request parsing for the device API: bodies and upstream's lenient parameter checks.

Every handler reads its inputs through here, so that `"12"`, `12` and `"12.00"` are the same
appId everywhere and `force` means what it means upstream (api.md §1.3). Bodies follow Express'
body parsers (api.md §1): JSON objects/arrays, form-encoded (qs "extended"), anything else is `{}`.

`read_body` is the one place where request bodies are read, and every read is bounded before
anything recurses into it or blocks on it: bytes (counted while streaming, spooled to a temp
file past 1 MB), form parameters and bracket depth (body-parser's limits), JSON depth and value
count (ours); large bodies are parsed on a worker thread. docs/security.md lists the bounds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import tempfile
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect

from supervisor.errors import BadRequest
from supervisor.model import config_vars

if TYPE_CHECKING:
    from starlette.requests import Request

    from supervisor.api.auth import Auth
    from supervisor.api.context import ApiContext
    from supervisor.api.views import ViewCache

BODY_LIMIT = 10 * 1024 * 1024  # Express' `limit: '10mb'`
PARAMETER_LIMIT = 1000  # body-parser's urlencoded `parameterLimit`: beyond, 413
FORM_DEPTH_LIMIT = 32  # body-parser's qs `depth` (with strictDepth: deeper is a 400)
JSON_DEPTH_LIMIT = 100  # far above any real target (ours: a handful of levels)
JSON_VALUE_LIMIT = 100_000  # values in one JSON body; a real target has a few thousand
SPOOL_AT = 1024 * 1024  # a body larger than this waits in a temp file, not in memory
OFFLOAD_AT = 64 * 1024  # a body larger than this is parsed on a worker thread
NESTED_TOO_DEEPLY = (f"request body nests too deeply: more than {JSON_DEPTH_LIMIT} levels "
                     "of arrays and objects")

_INT_RE = re.compile(r"-?[0-9]+\.?0*")  # fullmatch: ASCII digits only, as upstream's regex
_STRING_RE = re.compile(r'"[^"]*"')  # after escaped quotes are gone (see _structure)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class MalformedBody(BadRequest):
    """The body could not be parsed. Always answered 400 JSON, whatever the route's style."""


class BodyTooLarge(MalformedBody):
    """Too many bytes, parameters or values: 413, as body-parser answers."""

    http_status = 413


class NestedTooDeeply(MalformedBody):
    """Deeper than JSON_DEPTH_LIMIT: refused before anything recurses into the body."""


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
    elif isinstance(value, str) and _INT_RE.fullmatch(value):
        result = int(float(value)) if "." in value else int(value)
    else:
        return None
    if positive and result <= 0:
        return None
    return result


def check_truthy(value: object) -> bool:
    """upstream `checkTruthy`: only true, 1, "1", "true", "on" (strings case-insensitive);
    the one implementation is model/config_vars.py's."""
    return config_vars.check_truthy(value)


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


def _structure(text: str) -> str:
    """The JSON text without its string literals (C-speed regex passes, no recursion): what
    is left are the brackets, commas and scalars that give a body its shape."""
    if '"' not in text:
        return text
    if "\\" in text:
        # `\\` first, so that what remains of `\"` is an escaped quote inside a string.
        text = text.replace("\\\\", "").replace('\\"', "")
    return _STRING_RE.sub("", text)


def _max_depth(structure: str) -> int:
    brackets = _NOT_BRACKET_RE.sub("", structure)
    depth = deepest = 0
    # In slices: a C-level loop over a long string would hold the GIL in one piece.
    for start in range(0, len(brackets), 65536):
        levels = list(itertools.accumulate(
            map(_STEP.__getitem__, brackets[start:start + 65536]), initial=depth))
        depth = levels[-1]
        deepest = max(deepest, max(levels))
    return deepest


def check_json_shape(text: str) -> None:
    """Refuse a JSON body that nests deeper than JSON_DEPTH_LIMIT or holds more than
    JSON_VALUE_LIMIT values, before anything recurses into it (json.loads, the target
    parser, error reports). Linear time; brackets inside strings do not count."""
    if text.count("[") + text.count("{") <= JSON_DEPTH_LIMIT and \
            text.count(",") < JSON_VALUE_LIMIT:
        return  # the common case: too few brackets to nest too deeply, few values
    structure = _structure(text)
    openers = structure.count("[") + structure.count("{")
    if openers + structure.count(",") > JSON_VALUE_LIMIT:
        raise BodyTooLarge(f"request body has too many values (more than {JSON_VALUE_LIMIT})")
    if openers > JSON_DEPTH_LIMIT and _max_depth(structure) > JSON_DEPTH_LIMIT:
        raise NestedTooDeeply(NESTED_TOO_DEEPLY)


def parse_json(raw: bytes) -> Any:
    """body-parser's strict JSON: empty means `{}`; only an object or array is accepted."""
    text = raw.decode("utf-8-sig", errors="strict") if raw else ""
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        return {}
    if stripped[0] not in "{[":
        raise MalformedBody(f"Unexpected token {stripped[0]} in JSON at position 0")
    check_json_shape(stripped)
    try:
        return json.loads(stripped, parse_constant=_reject_constant)
    except ValueError as err:
        raise MalformedBody(str(err)) from err
    except RecursionError as err:  # a safety net: check_json_shape should have said so
        raise NestedTooDeeply(NESTED_TOO_DEEPLY) from err


def parse_form(raw: bytes) -> dict[str, Any]:
    """A small `qs` (extended) parser: `a=1`, repeated keys -> list, `a[b]=1`, `a[]=1`.

    body-parser's bounds: more than PARAMETER_LIMIT parameters is a 413 (counted before any
    parsing), keys nest at most FORM_DEPTH_LIMIT brackets deep (deeper is a 400). Linear in
    the body's size: repeated keys append in place."""
    text = raw.decode("utf-8", errors="replace")
    if text.count("&") >= PARAMETER_LIMIT:
        raise BodyTooLarge("too many parameters")
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        head, _, rest = key.partition("[")
        if not rest or not rest.endswith("]") or not head:
            _put(out, key, value)
            continue
        parts = [head, *rest[:-1].split("][")]
        if len(parts) - 1 > FORM_DEPTH_LIMIT:
            raise MalformedBody("The input exceeded the depth")
        _put_nested(out, parts, value)
    return out


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if key not in target:
        target[key] = value
    elif isinstance(target[key], list):
        target[key].append(value)
    else:
        target[key] = [target[key], value]


def _put_nested(target: dict[str, Any], parts: list[str], value: str) -> None:
    node = target
    for part, following in itertools.pairwise(parts):
        if following == "":  # `a[]=v` appends to the list at `a`
            existing = node.get(part)
            if isinstance(existing, list):
                existing.append(value)
            else:
                node[part] = [value] if existing is None else [existing, value]
            return
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    _put(node, parts[-1], value)


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_limited(request: Request, limit: int = BODY_LIMIT) -> bytes:
    """The raw body, counted while it streams in: past `limit` bytes it is refused (413)
    at once, whatever Content-Length said or did not say (chunked). Beyond SPOOL_AT bytes
    the body waits in an anonymous temporary file, so memory never holds more than that
    until the body is known to fit."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge("request entity too large")
    buffer = bytearray()
    spool: IO[bytes] | None = None
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge("request entity too large")
            if spool is None and size <= SPOOL_AT:
                buffer += chunk
                continue
            if spool is None:
                spool = await asyncio.to_thread(tempfile.TemporaryFile)
                buffer += chunk
                chunk, buffer = bytes(buffer), bytearray()
            await asyncio.to_thread(spool.write, chunk)
        if spool is not None:
            return await asyncio.to_thread(_read_back, spool)
    except ClientDisconnect as err:
        raise MalformedBody("request body incomplete: the client went away") from err
    finally:
        if spool is not None:
            await asyncio.to_thread(spool.close)
    return bytes(buffer)


def _read_back(spool: IO[bytes]) -> bytes:
    spool.seek(0)
    return spool.read()


def parse_body(ctype: str, raw: bytes) -> Any:
    if ctype == "application/json":
        try:
            return parse_json(raw)
        except UnicodeDecodeError as err:
            raise MalformedBody(f"invalid body encoding: {err.reason}") from err
    return parse_form(raw)


async def read_body(request: Request) -> Any:
    """Parse the body like Express' urlencoded + json parsers; other types give `{}` (and
    are never read). This is the one place where request bodies are read and parsed."""
    ctype = content_type(request)
    if ctype not in ("application/json", "application/x-www-form-urlencoded"):
        return {}
    raw = await read_limited(request)
    if len(raw) > OFFLOAD_AT:
        # A large body is parsed on a worker thread: the API, the healthcheck and the loop
        # keep answering meanwhile.
        return await asyncio.to_thread(parse_body, ctype, raw)
    return parse_body(ctype, raw)


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
