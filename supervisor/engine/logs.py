"""Following container output: one thread per supervised container, lines to the event loop.

Data flow: the runtime calls `follow(cid)` for running containers at startup and on Docker
`start` events, `unfollow(cid)` on `destroy` (engine.md §2.3). Each follower thread reads
`GET /containers/<id>/logs?follow=1&timestamps=1&since=<t>` on its own docker-py client,
splits it into lines (demultiplexing stdout/stderr when the container has no TTY; with a TTY,
which is our default, everything is stdout) and puts `LogMessage` batches in a bounded inbox.
One callback per batch (`loop.call_soon_threadsafe`) hands them to `sink` (`LogHub.publish_many`)
on the loop. A full inbox makes the follower wait, never the loop: Docker keeps the container's
log on disk, so a slow supervisor only reads later.

`BALENA_LOGS_LEVEL` (container env, config.md §10.2): `none` -> not followed; `err`/`error` ->
stderr only. A stream that ends while the container still runs (engine restart) is resumed from
the last line's timestamp; when the container has stopped the follower ends, and the next
`follow()` (its restart) starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import docker
import docker.errors

from supervisor.engine import dockerpy_private
from supervisor.engine.docker import normalise_labels
from supervisor.logs import LogMessage
from supervisor.model.spec import parse_container_name

_LOGGER = logging.getLogger(__name__)

Sink = Callable[[list[LogMessage]], None]

MAX_LINE = 64 * 1024  # a longer run of bytes without a newline is cut into lines this long
_HEADER = struct.Struct(">BxxxL")  # multiplexed frame: stream (1 stdout, 2 stderr), size
_TS = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def parse_timestamp(raw: bytes) -> int | None:
    """Docker's RFC 3339 nano timestamp -> ns since the epoch (None if malformed)."""
    match = _TS.match(raw)
    if match is None:
        return None
    zone = "+00:00" if match[3] == b"Z" else match[3].decode()
    try:
        base = datetime.fromisoformat(match[1].decode() + zone)
    except ValueError:
        return None
    frac = int((match[2] or b"0").ljust(9, b"0"))
    return int(base.timestamp()) * 1_000_000_000 + frac


@dataclass(frozen=True, slots=True)
class Source:
    """Who wrote the lines: the service identity stamped on every message."""

    app_id: int
    service_name: str
    service_id: int
    image_id: int


def source_of(info: dict[str, Any]) -> Source | None:
    """The identity of a supervised container from its inspect data; None if unsupervised."""
    config = info.get("Config") or {}
    labels = normalise_labels(config.get("Labels"))
    if labels.get("io.balena.supervised") is None or "io.balena.app-id" not in labels:
        return None
    parsed = parse_container_name(info.get("Name", ""))
    try:
        app_id = int(labels["io.balena.app-id"])
        service_id = int(labels.get("io.balena.service-id", "0"))
    except ValueError:
        return None
    name = labels.get("io.balena.service-name") or (parsed.service_name if parsed else "")
    return Source(app_id=app_id, service_name=name, service_id=service_id,
                  image_id=parsed.image_id if parsed else 0)


def logs_level(info: dict[str, Any]) -> str:
    """`BALENA_LOGS_LEVEL` of the container, lowercased ("" when unset)."""
    for item in (info.get("Config") or {}).get("Env") or ():
        key, _, value = item.partition("=")
        if key == "BALENA_LOGS_LEVEL":
            return value.strip().lower()
    return ""


def run_start(info: dict[str, Any]) -> int | None:
    """ns just after the previous run ended (`State.FinishedAt`), else the creation time."""
    for stamp in ((info.get("State") or {}).get("FinishedAt"), info.get("Created")):
        ns = parse_timestamp(stamp.encode()) if isinstance(stamp, str) else None
        if ns is not None and ns > 0:  # "0001-01-01T00:00:00Z" means never
            return ns + 1
    return None


class LineSplitter:
    """Bytes of a logs response -> `(is_stderr, ns, text)` lines. Handles frames and lines
    split across reads, `\\r\\n` from TTYs, and lines without a (parsable) timestamp."""

    def __init__(self, *, tty: bool) -> None:
        self.tty = tty
        self._raw = b""  # multiplexed bytes not yet parsed into a frame
        self._partial = {False: b"", True: b""}  # per stream: text after the last newline

    def feed(self, data: bytes) -> list[tuple[bool, int, str]]:
        out: list[tuple[bool, int, str]] = []
        if self.tty:
            self._lines(False, data, out)
            return out
        self._raw += data
        while len(self._raw) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._raw)
            if len(self._raw) < _HEADER.size + size:
                break
            payload = self._raw[_HEADER.size:_HEADER.size + size]
            self._raw = self._raw[_HEADER.size + size:]
            self._lines(kind == 2, payload, out)
        return out

    def flush(self) -> list[tuple[bool, int, str]]:
        """What is left without a final newline (the stream ended)."""
        out: list[tuple[bool, int, str]] = []
        for is_err, rest in self._partial.items():
            if rest:
                out.append(_line(is_err, rest))
                self._partial[is_err] = b""
        return out

    def _lines(self, is_err: bool, data: bytes, out: list[tuple[bool, int, str]]) -> None:
        buf = self._partial[is_err] + data
        *complete, rest = buf.split(b"\n")
        out.extend(_line(is_err, raw) for raw in complete)
        while len(rest) > MAX_LINE:
            out.append(_line(is_err, rest[:MAX_LINE]))
            rest = rest[MAX_LINE:]
        self._partial[is_err] = rest


def _line(is_err: bool, raw: bytes) -> tuple[bool, int, str]:
    stamp, sep, text = raw.partition(b" ")
    ns = parse_timestamp(stamp) if sep else None
    if ns is None:  # no timestamp prefix: keep the whole line, stamp it now
        ns, text = time.time_ns(), raw
    return is_err, ns, text.rstrip(b"\r").decode("utf-8", errors="replace")


@dataclass(eq=False)
class _Follower:
    cid: str
    since_ns: int
    from_start: bool = False  # since_ns is refined from the container's start (see follow)
    stop: threading.Event = field(default_factory=threading.Event)
    kicked: bool = False  # follow() was called again: reconnect instead of ending
    response: Any = None
    thread: threading.Thread | None = None
    last_ns: int | None = None
    failures: int = 0


class LogFollowers:
    """Container log followers. `follow`/`unfollow`/`on_docker_event` run on the event loop;
    `sink(batch)` is called there too. `close()` stops every thread."""

    def __init__(self, base_url: str, sink: Sink, *, inbox_size: int = 2048,
                 retry_delay: float = 1.0, loop: asyncio.AbstractEventLoop | None = None,
                 ) -> None:
        self.base_url = base_url
        self._sink = sink
        self._inbox_size = inbox_size
        self._retry_delay = retry_delay
        self._loop = loop
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._followers: dict[str, _Follower] = {}
        self._inbox: list[LogMessage] = []
        self._scheduled = False
        self._closed = False
        self._api: docker.APIClient | None = None
        self._client_lock = threading.Lock()

    # -- loop side -----------------------------------------------------------------------------

    def following(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._followers)

    def attached(self, cid: str) -> bool:
        """True while a logs stream of `cid` is open (Docker answered; lines will flow)."""
        with self._lock:
            follower = self._followers.get(cid)
        return follower is not None and follower.response is not None

    def follow(self, cid: str, *, since: float | None = None, from_start: bool = False) -> None:
        """Follow `cid` from `since` (epoch seconds; default now). `from_start`: from the
        start of its current run instead (its previous `FinishedAt`, else its creation), for a
        container that just started: what it printed before we attached is kept, earlier runs
        are not replayed. Idempotent: when already followed, the follower reconnects after its
        stream ends instead of stopping (a restart after `die`). Unsupervised containers are
        inspected once and dropped."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                return
            current = self._followers.get(cid)
            if current is not None:
                current.kicked = True
                return
            since_ns = time.time_ns() if since is None else int(since * 1e9)
            follower = _Follower(cid=cid, since_ns=since_ns, from_start=from_start)
            self._followers[cid] = follower
        follower.thread = threading.Thread(target=self._run, args=(follower,),
                                           name=f"logs-{cid[:12]}", daemon=True)
        follower.thread.start()

    def unfollow(self, cid: str) -> None:
        with self._lock:
            follower = self._followers.pop(cid, None)
        if follower is not None:
            self._stop(follower)

    def on_docker_event(self, event: dict[str, Any]) -> None:
        """Wire Docker container events: `start` follows from the start of the run (nothing
        printed before the follower attaches is lost), `destroy` unfollows."""
        if event.get("Type", "container") != "container":
            return
        cid = event.get("id") or (event.get("Actor") or {}).get("ID")
        if not cid:
            return
        action = event.get("Action") or event.get("status")
        if action == "start":
            self.follow(cid, from_start=True)
        elif action == "destroy":
            self.unfollow(cid)

    def close(self, timeout: float = 2.0) -> None:
        with self._lock:
            self._closed = True
            followers = list(self._followers.values())
            self._followers.clear()
            self._cond.notify_all()
        for follower in followers:
            self._stop(follower)
        deadline = time.monotonic() + timeout
        for follower in followers:
            if follower.thread is not None:
                follower.thread.join(max(0.0, deadline - time.monotonic()))
        if self._api is not None:
            self._api.close()

    def _drain(self) -> None:
        with self._cond:
            batch, self._inbox = self._inbox, []
            self._scheduled = False
            self._cond.notify_all()
        if batch:
            self._sink(batch)

    # -- follower threads ------------------------------------------------------------------------

    def _client(self) -> docker.APIClient:
        # Not `_lock`: creating the client talks to Docker, and the loop takes `_lock`.
        with self._client_lock:
            if self._api is None:
                # Its own client: streams held open for hours must not use the engine pool.
                # No read timeout: a quiet container is not an error; close() ends the read.
                self._api = docker.APIClient(base_url=self.base_url, version="auto",
                                             timeout=None, max_pool_size=64)
            return self._api

    def _stop(self, follower: _Follower) -> None:
        follower.stop.set()
        response = follower.response
        if response is not None:
            try:
                dockerpy_private.shutdown(response)
            except Exception:  # already closed, or the socket is gone: the thread ends anyway
                _LOGGER.debug("closing log stream of %s failed", follower.cid, exc_info=True)

    def _run(self, follower: _Follower) -> None:
        while not follower.stop.is_set():
            try:
                running = self._stream(follower)
                follower.failures = 0
            except docker.errors.NotFound:
                running = False
            except Exception as err:  # engine restarted, socket closed...: retry below
                if follower.stop.is_set():
                    break  # we closed the socket ourselves
                log = _LOGGER.warning if follower.failures else _LOGGER.debug
                log("log stream of %s failed: %r", follower.cid[:12], err)
                running = True
                follower.failures += 1
            if follower.stop.is_set():
                break
            with self._lock:
                if follower.kicked:
                    follower.kicked = False
                    continue
                if not running:
                    if self._followers.get(follower.cid) is follower:
                        del self._followers[follower.cid]
                    return
            follower.stop.wait(self._retry_delay * min(2 ** follower.failures, 30))

    def _stream(self, follower: _Follower) -> bool:
        """Read one logs response to its end; True when the container still runs after it."""
        api = self._client()
        info = api.inspect_container(follower.cid)
        source = source_of(info)
        level = logs_level(info)
        if source is None or level == "none":
            return False
        if follower.from_start and follower.last_ns is None:
            follower.since_ns = run_start(info) or follower.since_ns
            follower.from_start = False
        since = follower.since_ns if follower.last_ns is None else follower.last_ns
        params = {"stdout": 0 if level in ("err", "error") else 1, "stderr": 1,
                  "timestamps": 1, "follow": 1, "tail": "all",
                  "since": f"{since // 1_000_000_000}.{since % 1_000_000_000:09d}"}
        response = dockerpy_private.open_stream(api, "/containers/{0}/logs", follower.cid,
                                                params=params)
        follower.response = response
        try:
            if follower.stop.is_set():
                return False
            dockerpy_private.raise_for_status(api, response)
            splitter = LineSplitter(tty=bool((info.get("Config") or {}).get("Tty")))
            skip_until = follower.last_ns  # a resumed stream repeats lines up to here
            for chunk in _chunks(response):
                lines = splitter.feed(chunk)
                if lines:
                    skip_until = self._emit(follower, source, lines, skip_until)
            self._emit(follower, source, splitter.flush(), skip_until)
        finally:
            follower.response = None
            response.close()
        if follower.stop.is_set():
            return False
        state = (api.inspect_container(follower.cid).get("State") or {})
        return bool(state.get("Running"))

    def _emit(self, follower: _Follower, source: Source,
              lines: list[tuple[bool, int, str]], skip_until: int | None) -> int | None:
        batch = []
        for is_err, ns, text in lines:
            if skip_until is not None:
                if ns <= skip_until:
                    continue
                skip_until = None
            follower.last_ns = ns
            batch.append(LogMessage(message=text, timestamp=ns // 1_000_000, is_stderr=is_err,
                                    service_name=source.service_name,
                                    service_id=source.service_id, app_id=source.app_id,
                                    image_id=source.image_id))
        if batch:
            self._post(follower, batch)
        return skip_until

    def _post(self, follower: _Follower, batch: list[LogMessage]) -> None:
        with self._cond:
            # Back-pressure: wait for the loop to take what is there (Docker buffers on disk).
            while (len(self._inbox) >= self._inbox_size and not follower.stop.is_set()
                   and not self._closed):
                self._cond.wait(0.5)
            if follower.stop.is_set() or self._closed:
                return
            self._inbox.extend(batch)
            if self._scheduled:
                return
            self._scheduled = True
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: shutting down
            with self._cond:
                self._scheduled = False


def _chunks(response: Any) -> Iterator[bytes]:
    """The body as it arrives (`read1`: whatever is there, never waiting to fill a buffer)."""
    raw = response.raw
    while True:
        data = raw.read1(65536)
        if not data:
            return
        yield data
