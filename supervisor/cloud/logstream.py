"""The cloud log backend (config.md §10.3): the device log, streamed to the dashboard.

Data flow: the runtime (wiring still to come) hands every `LogMessage` of the device log to
`LogStream.offer()`: container output from the log followers and system messages alike. `offer`
never blocks and never does I/O: it filters, then appends to a bounded buffer (256 KiB) or
counts the message as dropped. A dedicated sender thread owns the network: one long-lived

    POST <logsEndpoint or apiEndpoint>/device/v2/<uuid>/log-stream
    Authorization: Bearer <device key>, Content-Type: application/x-ndjson,
    Content-Encoding: gzip, Transfer-Encoding: chunked

whose body is a gzip stream of JSON lines, sync-flushed at most every 100 ms. The stream opens
when there is something to send; data flows only after a 5 s grace with no answer from the
server; it is closed after 60 s without messages. Any answer from the server, a close, a
timeout or an error tears it down; the next attempt waits min(5 s x 2^failures, 300 s) from the
previous one. Lines dropped on overflow are announced by `Warning: Suppressed <n> message(s)
due to high load` (system, stderr) once there is room again.

Inputs the wiring sets: `set_credentials` (nothing is kept until the device is provisioned),
`set_local_mode` (local mode: the local backend takes over at once), `set_log_control`
(SUPERVISOR_LOG_CONTROL off drops everything), `logs_level` (serviceId -> that service's
BALENA_LOGS_LEVEL: `none` drops its lines, `err`/`error` keeps stderr only), and for HTTPS
`ssl_context` (`tls_context(balenaRootCA)` trusts a backend's own CA).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import select
import socket
import ssl
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from supervisor.cloud.http import tls_context as tls_context  # re-exported
from supervisor.logs import LogMessage, now_ms

_LOGGER = logging.getLogger(__name__)

MAX_MESSAGE = 10_000  # characters, `[...]` included
OMISSION = "[...]"
MAX_PENDING_BYTES = 256 * 1024
_OVERHEAD = 96  # bytes of JSON around a message, for buffer accounting


@dataclass(frozen=True, slots=True)
class Timing:
    """Upstream's constants (seconds); tests shrink them."""

    backoff_base: float = 5.0
    backoff_max: float = 300.0
    grace: float = 5.0
    idle: float = 60.0
    flush_interval: float = 0.1
    io_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Credentials:
    endpoint: str  # logsEndpoint, else apiEndpoint
    uuid: str
    api_key: str


# ---------------------------------------------------------------------------- pure helpers

def truncate(text: str) -> str:
    """At most MAX_MESSAGE characters, a cut one ending `[...]` (lodash `truncate`)."""
    if len(text) <= MAX_MESSAGE:
        return text
    return text[:MAX_MESSAGE - len(OMISSION)] + OMISSION


def wire_object(msg: LogMessage) -> dict[str, object] | None:
    """The JSON object of one line (config.md §10.1); None for a service line without id."""
    if msg.is_system:
        out: dict[str, object] = {"message": truncate(msg.message), "isSystem": True,
                                  "timestamp": msg.timestamp}
        if msg.is_stderr:
            out["isStdErr"] = True
        return out
    if msg.service_id is None:
        return None
    return {"message": truncate(msg.message), "isStdErr": msg.is_stderr,
            "timestamp": msg.timestamp, "serviceId": msg.service_id}


def passes_level(level: str, is_stderr: bool) -> bool:
    """BALENA_LOGS_LEVEL: `none` -> nothing; `err`/`error` -> stderr only; else all."""
    level = level.strip().lower()
    if level == "none":
        return False
    return is_stderr or level not in ("err", "error")


def backoff_delay(failures: int, timing: Timing) -> float:
    return float(min(timing.backoff_base * 2 ** min(failures, 32), timing.backoff_max))


def suppressed_message(count: int) -> LogMessage:
    return LogMessage.system(f"Warning: Suppressed {count} message(s) due to high load",
                             is_stderr=True, timestamp=now_ms())


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of `data` (the body's length is unknown in advance)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Failure(Exception):
    """The session ended badly: counts towards the backoff."""


# ---------------------------------------------------------------------------- the backend

class LogStream:
    def __init__(self, *, timing: Timing | None = None, max_pending: int = MAX_PENDING_BYTES,
                 ssl_context: ssl.SSLContext | None = None,
                 logs_level: Callable[[int], str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timing = timing or Timing()
        self.max_pending = max_pending
        self._ssl = ssl_context
        self._logs_level = logs_level
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: deque[LogMessage] = deque()
        self._pending_bytes = 0
        self._writable = True
        self._dropped = 0  # since the last announcement
        self._creds: Credentials | None = None
        self._local_mode = False
        self._log_control = True
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._wake_sent = False
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._last_attempt: float | None = None
        # counters for diagnostics and tests
        self.total_dropped = 0
        self.sessions = 0
        self.failures_total = 0
        self.connected = False  # a session is open (grace or streaming)

    # -- inputs (any thread) ------------------------------------------------------------------

    def set_credentials(self, endpoint: str | None, uuid: str | None,
                        api_key: str | None) -> None:
        """Provisioned: where to send and as whom. Any None: not provisioned (drop)."""
        creds = Credentials(endpoint.rstrip("/"), uuid, api_key) \
            if endpoint and uuid and api_key else None
        with self._lock:
            self._creds = creds
            if creds is None:
                self._clear()
        self._wake()

    def set_local_mode(self, local: bool) -> None:
        with self._lock:
            self._local_mode = local

    def set_log_control(self, enabled: bool) -> None:
        with self._lock:
            self._log_control = enabled

    def offer(self, msg: LogMessage) -> bool:
        """Queue one line for the cloud; never blocks. False when it is not kept."""
        return self.offer_many((msg,)) == 1

    def offer_many(self, messages: Iterable[LogMessage]) -> int:
        kept = 0
        with self._lock:
            if self._creds is None or self._local_mode or not self._log_control:
                return 0
            for msg in messages:
                if not msg.is_system:
                    if msg.service_id is None:
                        continue
                    if self._logs_level is not None and not passes_level(
                            self._logs_level(msg.service_id), msg.is_stderr):
                        continue
                size = min(len(msg.message), MAX_MESSAGE) + _OVERHEAD
                if not self._writable or self._pending_bytes + size > self.max_pending:
                    self._writable = False  # until the sender makes room (upstream's drain)
                    self._dropped += 1
                    self.total_dropped += 1
                    continue
                self._pending.append(msg)
                self._pending_bytes += size
                kept += 1
        if kept:
            self._wake()
        return kept

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="log-stream", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the stream cleanly (what is buffered is sent if the stream is up) and join."""
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._wake_r.close()
        self._wake_w.close()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- the sender thread ---------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_sent:
            return
        self._wake_sent = True
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        # drain first, then allow the next wake-up: the other order lets a wake-up sent in
        # between be drained with the flag still set, and every later one is then skipped
        # (the sender sleeps on lines it never hears of). What arrives between the two is
        # not lost: every caller looks at the queue after draining.
        try:
            while self._wake_r.recv(4096, socket.MSG_DONTWAIT):
                pass
        except (BlockingIOError, OSError):
            pass
        self._wake_sent = False

    def _clear(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0
        self._writable = True

    def _take(self) -> list[LogMessage]:
        """Everything buffered; makes room, so an overflow is announced next (in order)."""
        with self._lock:
            batch = list(self._pending)
            self._clear()
            if self._dropped:
                self._pending.append(suppressed_message(self._dropped))
                self._pending_bytes += _OVERHEAD * 2
                self._dropped = 0
            return batch

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                creds, has_data = self._creds, bool(self._pending)
            if creds is None or not has_data:
                select.select([self._wake_r], [], [])
                self._drain_wake()
                continue
            delay = backoff_delay(self._failures, self.timing)
            if self._last_attempt is not None:
                delay -= self._clock() - self._last_attempt
            if delay > 0 and self._stopping.wait(delay):
                break
            self._last_attempt = self._clock()
            self.sessions += 1
            try:
                self._session(creds)
            except (_Failure, OSError, http.client.HTTPException, ssl.SSLError) as err:
                self._failed(err)
            except Exception as err:  # a bad endpoint or a bug: never stop streaming for good
                _LOGGER.exception("log stream: unexpected error")
                self._failed(err)

    def _failed(self, err: BaseException) -> None:
        self._failures += 1
        self.failures_total += 1
        _LOGGER.warning("log stream to the cloud failed (%d in a row): %s", self._failures, err)

    def _connect(self, creds: Credentials) -> http.client.HTTPConnection:
        url = urlsplit(creds.endpoint)
        path = f"{url.path.rstrip('/')}/device/v2/{creds.uuid}/log-stream"
        conn: http.client.HTTPConnection
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(
                url.hostname or "", url.port, timeout=self.timing.io_timeout,
                context=self._ssl or ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(url.hostname or "", url.port,
                                              timeout=self.timing.io_timeout)
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {creds.api_key}")
        conn.putheader("Content-Type", "application/x-ndjson")
        conn.putheader("Content-Encoding", "gzip")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()  # sends the headers now: the server may refuse us at once
        return conn

    def _session(self, creds: Credentials) -> None:
        conn = self._connect(creds)
        self.connected = True
        try:
            sock = conn.sock
            assert sock is not None
            deadline = self._clock() + self.timing.grace
            while (left := deadline - self._clock()) > 0:  # no data before the grace ends
                # a wake-up is new lines (keep waiting: they go out after the grace), a stop
                # or new credentials (end this session)
                if self._wait(sock, left) and (self._stopping.is_set()
                                               or self._creds != creds):
                    return
            self._failures = 0
            self._stream(sock, creds)
        finally:
            self.connected = False
            conn.close()

    def _wait(self, sock: socket.socket, timeout: float) -> bool:
        """Wait up to `timeout` for a wake-up (True) or the end of the timeout (False); raise
        if the server spoke or closed. A readable TLS socket may only hold TLS records of
        its own (a TLS 1.3 session ticket): that is not an answer, keep waiting."""
        deadline = self._clock() + timeout
        while True:
            left = max(deadline - self._clock(), 0.0)
            readable, _, _ = select.select([sock, self._wake_r], [], [], left)
            if sock in readable:
                said = _server_said(sock)
                if said is not None:
                    raise _Failure(f"the server answered or closed: {said!r}")
            if self._wake_r in readable:
                self._drain_wake()
                return True
            if not readable or left <= 0:
                return False

    def _stream(self, sock: socket.socket, creds: Credentials) -> None:
        gz = zlib.compressobj(wbits=31)  # gzip framing
        compressed = b""
        flush_at: float | None = None
        last_data = self._clock()
        while True:
            batch = self._take()
            now = self._clock()
            if batch:
                lines = (wire_object(m) for m in batch)
                compressed += gz.compress(b"".join(
                    json.dumps(o, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
                    for o in lines if o is not None))
                last_data = now
                flush_at = now + self.timing.flush_interval if flush_at is None else flush_at
            stop = self._stopping.is_set() or self._creds != creds
            if flush_at is not None and (now >= flush_at or stop):
                sock.sendall(chunk(compressed + gz.flush(zlib.Z_SYNC_FLUSH)))
                compressed, flush_at = b"", None
            if stop or (flush_at is None and now - last_data >= self.timing.idle):
                sock.sendall(chunk(gz.flush(zlib.Z_FINISH)) + b"0\r\n\r\n")
                return
            waits = [last_data + self.timing.idle - now]
            if flush_at is not None:
                waits.append(flush_at - now)
            self._wait(sock, max(min(waits), 0.0))


def _server_said(sock: socket.socket) -> bytes | None:
    """What a readable socket holds: the first line of an answer, b"" when closed, None when
    there was nothing for the application (TLS records only)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        data = sock.recv(200)
    except (ssl.SSLWantReadError, BlockingIOError):
        return None
    except OSError as err:
        return str(err).encode()
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)
    return data.split(b"\r\n", 1)[0] if data else b"(closed)"
