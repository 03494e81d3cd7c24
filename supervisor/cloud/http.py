"""The cloud HTTP client: one JSON request at a time, standard library only.

Every cloud call of the agent goes through `CloudClient.request()`: provisioning
(`provision.py`), target polling (`poller.py`), state and tag reports (`reporter.py`). The
blocking `urllib` call runs in a worker thread (`asyncio.to_thread`), so the event loop never
waits on the network. There are no automatic retries: callers own their backoff (state.md §5.2,
§6.4). Environment proxies are ignored on purpose: balenaOS proxies at the OS level (redsocks).
HTTPS trusts the system's CAs plus config.json `balenaRootCA` (`tls_context`), as the log
stream does: a self-signed openBalena install works.

Answers are bounded (`MAX_BODY`, 32 MiB, far above any real target state): the body is read
64 KiB at a time and refused as soon as it passes the bound, and a gzip body is inflated in
steps that never produce more than the bound, so a gzip bomb costs at most the bound in memory
before it is refused with a `CloudError` saying so (the agent's calls and the devcloud proxy).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import ssl
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from supervisor.errors import ConfigError, SupervisorError

DEFAULT_TIMEOUT_S = 59.0  # apiRequestTimeout (config.md §1.2)
MAX_BODY = 32 * 1024 * 1024  # an answer's bytes, read and (when gzip) inflated: see above
_CHUNK = 64 * 1024

# An empty ProxyHandler: urllib would otherwise read http_proxy & co from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def tls_context(root_ca_b64: str | None = None) -> ssl.SSLContext:
    """The system's CAs, plus config.json `balenaRootCA` (base64 of a PEM bundle) when set:
    an openBalena or development backend signed by its own CA."""
    context = ssl.create_default_context()
    if root_ca_b64:
        try:
            context.load_verify_locations(cadata=base64.b64decode(root_ca_b64).decode("ascii"))
        except (ValueError, UnicodeDecodeError, ssl.SSLError) as err:
            raise ConfigError(f"balenaRootCA is not a base64 PEM bundle: {err}") from err
    return context


def opener(context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    """A urllib opener without environment proxies, trusting `context` for HTTPS."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


class CloudError(SupervisorError):
    """A cloud call failed: no answer (`status` None) or an unexpected HTTP status."""

    http_status = 503

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None, body: bytes = b"") -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds, from a Retry-After header
        self.body = body


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8")) if self.body else None
        except (UnicodeDecodeError, ValueError) as err:
            raise CloudError(f"the cloud sent invalid JSON: {err}", status=self.status) from err

    def error(self, what: str) -> CloudError:
        """The CloudError for an unexpected status of this response."""
        detail = self.body[:200].decode("utf-8", "replace").strip()
        return CloudError(
            f"{what}: HTTP {self.status}" + (f" {detail}" if detail else ""),
            status=self.status, retry_after=parse_retry_after(self.headers.get("retry-after")),
            body=self.body,
        )


class Requester(Protocol):
    """What the cloud modules need of a client (CloudClient, or a fake in unit tests)."""

    async def request(self, method: str, path: str, *, body: Any = None,
                      key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Response: ...


class CloudClient:
    """JSON requests to the API endpoint, authenticated with the device (or a given) key."""

    def __init__(self, endpoint: str | Callable[[], str], *, api_key: Callable[[], str],
                 user_agent: str, timeout: float = DEFAULT_TIMEOUT_S,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._endpoint = endpoint
        self._api_key = api_key
        self.user_agent = user_agent
        self.timeout = timeout
        self._opener = _OPENER if ssl_context is None else opener(ssl_context)

    @property
    def endpoint(self) -> str:
        value = self._endpoint() if callable(self._endpoint) else self._endpoint
        return value.rstrip("/")

    async def request(self, method: str, path: str, *, body: Any = None,
                      key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        """Send one request; any HTTP status is a Response, no answer at all a CloudError."""
        url = self.endpoint + path
        all_headers = {
            "User-Agent": self.user_agent,
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
            "Authorization": f"Bearer {key if key is not None else self._api_key()}",
            **(headers or {}),
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        return await asyncio.to_thread(send, request, self.timeout, self._opener)


def send(request: urllib.request.Request, timeout: float,
         via: urllib.request.OpenerDirector = _OPENER, *, limit: int = MAX_BODY) -> Response:
    """Blocking: run in a worker thread. Any HTTP status is a Response; an answer over
    `limit` bytes (read, or inflated) is a CloudError."""
    try:
        with via.open(request, timeout=timeout) as answer:
            return _response(answer.status, answer.headers, answer, limit)
    except urllib.error.HTTPError as err:
        with err:
            return _response(err.code, err.headers, err, limit)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise CloudError(f"cannot reach {request.full_url}: {reason}") from err


class _Readable(Protocol):
    def read(self, amt: int, /) -> bytes: ...


def _response(status: int, headers: Any, answer: _Readable, limit: int) -> Response:
    names = {k.lower(): v for k, v in (headers.items() if headers is not None else ())}
    body = _read(answer, status, limit)
    if names.get("content-encoding", "").lower() == "gzip" and body:
        body = _gunzip(body, status, limit)
    return Response(status=status, headers=names, body=body)


def _too_big(status: int, limit: int, what: str) -> CloudError:
    return CloudError(f"the cloud's answer is too large: {what} more than {limit} bytes",
                      status=status)


def _read(answer: _Readable, status: int, limit: int) -> bytes:
    """The body, 64 KiB at a time (never a buffer of `limit` up front), refused past `limit`.
    Pieces are joined once at the end: a growing buffer would over-allocate past the bound."""
    pieces: list[bytes] = []
    size = 0
    while chunk := answer.read(_CHUNK):
        pieces.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _too_big(status, limit, "its body is")
    return b"".join(pieces)


def _gunzip(body: bytes, status: int, limit: int) -> bytes:
    """Inflate gzip member after member, 64 KiB of output per step, refused past `limit`."""
    pieces: list[bytes] = []
    size = 0
    data = body
    try:
        while data:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            while not inflater.eof:
                # max_length >= 1 (0 would mean unbounded): at most one byte past the limit.
                piece = inflater.decompress(data, min(_CHUNK, limit + 1 - size))
                pieces.append(piece)
                size += len(piece)
                if size > limit:
                    raise _too_big(status, limit, "inflated, it is")
                data = inflater.unconsumed_tail
                if not (piece or data or inflater.eof):  # input used up, no end marker
                    raise EOFError("the gzip stream ends before its end marker")
            data = inflater.unused_data  # a next gzip member, as gzip.decompress accepts
    except (zlib.error, EOFError) as err:
        raise CloudError(f"the cloud sent a corrupt gzip body: {err}", status=status) from err
    return b"".join(pieces)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date; None when unusable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)
