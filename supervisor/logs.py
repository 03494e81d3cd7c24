"""The device log: container output and system messages, fanned out to live readers.

Data flow: container log followers (`engine/logs.py`, one thread per container) hand batches of
`LogMessage` to the event loop, which calls `LogHub.publish_many`; `Runtime.log()` calls
`LogHub.on_system_log` for every system message (engine.md §17). Readers (`GET /v2/local/logs`,
later the cloud log backend) `subscribe()` and get their own bounded queue: a slow reader loses
lines (counted, then announced by one system line when it catches up) but never delays the
loop, the followers or the other readers.

Everything here runs on the event loop thread. `publish` called from another thread is
forwarded to the loop, so a stray call cannot corrupt a queue.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_QUEUE = 1024  # lines per reader: ~200 KB of typical log lines
STREAMING = b'{"message":"Streaming logs","isSystem":true}\n'  # upstream's first line


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class LogMessage:
    """One line of the device log, as upstream's logger carries it (config.md §10.1)."""

    message: str
    timestamp: int  # ms since the epoch
    is_system: bool = False
    is_stderr: bool = False
    service_name: str | None = None
    service_id: int | None = None
    app_id: int | None = None
    image_id: int | None = None

    @classmethod
    def system(cls, message: str, *, is_stderr: bool = False,
               timestamp: int | None = None) -> LogMessage:
        return cls(message=message, timestamp=now_ms() if timestamp is None else timestamp,
                   is_system=True, is_stderr=is_stderr)

    def to_json(self) -> dict[str, Any]:
        """The wire object of `/v2/local/logs` (api.md §4.9): system lines carry `isSystem`
        and `isStdErr` only when true; service lines carry the service's identity."""
        if self.is_system:
            out: dict[str, Any] = {"message": self.message, "isSystem": True,
                                   "timestamp": self.timestamp}
            if self.is_stderr:
                out["isStdErr"] = True
            return out
        return {
            "message": self.message,
            "isStdErr": self.is_stderr,
            "timestamp": self.timestamp,
            "serviceId": self.service_id,
            "serviceName": self.service_name,
            "appId": self.app_id,
            "imageId": self.image_id,
        }

    def ndjson(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":"),
                          ensure_ascii=False).encode() + b"\n"


def dropped_message(count: int) -> LogMessage:
    """The line a reader gets where it lost `count` lines to its full queue."""
    lines = "line" if count == 1 else "lines"
    return LogMessage.system(f"Warning: {count} log {lines} dropped: this reader is too slow",
                             is_stderr=True)


class Closed(Exception):
    """The subscription was closed and its queue is empty."""


class Subscription(Generic[T]):
    """One reader's bounded queue. `offer` never blocks: when full, the item is counted as
    dropped, and `announce(count)` is queued in its place once there is room again (or handed
    out as soon as the reader has drained everything before the gap)."""

    def __init__(self, maxsize: int, announce: Callable[[int], T],
                 on_close: Callable[[Subscription[T]], None] | None = None,
                 accept: Callable[[T], bool] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._announce = announce
        self._accept = accept
        self._on_close = on_close
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self.pending_drops = 0  # lost since the last announcement
        self.total_dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, item: T) -> bool:
        """Queue `item` unless the queue is full; False when it was dropped (or closed).
        Items the reader does not want (`accept`) are skipped, and count as delivered."""
        if self._closed:
            return False
        if self._accept is not None and not self._accept(item):
            return True
        if self.pending_drops and len(self._items) < self.maxsize:
            self._items.append(self._announce(self.pending_drops))
            self.pending_drops = 0
        if len(self._items) >= self.maxsize:
            self.pending_drops += 1
            self.total_dropped += 1
            return False
        self._items.append(item)
        self._ready.set()
        return True

    def get_nowait(self) -> T | None:
        """The next item, the drop announcement, or None when there is nothing to read."""
        if self._items:
            return self._items.popleft()
        if self.pending_drops:
            count, self.pending_drops = self.pending_drops, 0
            return self._announce(count)
        return None

    async def get(self) -> T:
        """The next item; raises `Closed` once closed and drained. Safe to cancel."""
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self._closed:
                raise Closed
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """Stop receiving; a reader blocked in `get` wakes up (and drains what is left)."""
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        if self._on_close is not None:
            self._on_close(self)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except Closed:
            raise StopAsyncIteration from None

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Fanout(Generic[T]):
    """Delivers every item to every open subscription. Loop thread only (see `publish`)."""

    def __init__(self, *, queue_size: int, announce: Callable[[int], T]) -> None:
        self.queue_size = queue_size
        self._announce = announce
        self._subs: list[Subscription[T]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.total_dropped = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def _bind(self) -> None:
        # The loop of the latest subscriber: the one readers wait on.
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def _off_loop(self) -> bool:
        return self._loop_thread is not None and threading.get_ident() != self._loop_thread

    def subscribe(self, *, maxsize: int | None = None, initial: Iterable[T] = (),
                  accept: Callable[[T], bool] | None = None) -> Subscription[T]:
        """A new reader (call from a coroutine). Close it, or use it as a context manager.
        `accept(item)` is asked at publish time: rejected items never take a queue slot."""
        self._bind()
        sub = Subscription(maxsize or self.queue_size, self._announce, self._remove, accept)
        for item in initial:
            sub.offer(item)
        self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription[T]) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def deliver(self, items: Iterable[T]) -> None:
        if self._off_loop():
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self.deliver, list(items))
            return
        subs = list(self._subs)
        for item in items:
            for sub in subs:
                if not sub.offer(item):
                    self.total_dropped += 1

    def close(self) -> None:
        """End every subscription (shutdown): readers finish what they hold, then stop."""
        for sub in list(self._subs):
            sub.close()


class LogHub:
    """The device log. `backlog` > 0 keeps that many recent lines for readers that ask for
    them (`subscribe(replay=True)`); upstream keeps none (lines with no reader are lost)."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE, backlog: int = 0) -> None:
        self._fanout: Fanout[LogMessage] = Fanout(queue_size=queue_size,
                                                  announce=dropped_message)
        self._recent: deque[LogMessage] = deque(maxlen=backlog or None)
        self._backlog = backlog
        # SUPERVISOR_LOG_CONTROL: when off, no line is published to any reader (config.md §5)
        self.enabled = True

    @property
    def subscribers(self) -> int:
        return self._fanout.subscribers

    @property
    def total_dropped(self) -> int:
        """Lines lost to slow readers since start (one per reader that missed it)."""
        return self._fanout.total_dropped

    def subscribe(self, *, replay: bool = False, maxsize: int | None = None,
                  accept: Callable[[LogMessage], bool] | None = None,
                  ) -> Subscription[LogMessage]:
        initial = list(self._recent) if replay else ()
        return self._fanout.subscribe(maxsize=maxsize, initial=initial, accept=accept)

    def publish(self, message: LogMessage) -> None:
        self.publish_many((message,))

    def publish_many(self, messages: Iterable[LogMessage]) -> None:
        if not self.enabled:
            return
        batch = list(messages)
        if self._backlog:
            self._recent.extend(batch)
        self._fanout.deliver(batch)

    def system(self, message: str, *, is_stderr: bool = False) -> None:
        """A system message (dashboard style: `Killed service 'main sha256:...'`)."""
        self.publish(LogMessage.system(message, is_stderr=is_stderr))

    def on_system_log(self, entry: tuple[float, str]) -> None:
        """A `Runtime.log_listeners` callable: `(time.time(), message)`."""
        stamp, message = entry
        self.publish(LogMessage.system(message, timestamp=int(stamp * 1000)))

    def close(self) -> None:
        self._fanout.close()
