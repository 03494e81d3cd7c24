"""Target-state polling: `GET /device/v3/<uuid>/state` with ETags (state.md §5).

The cloud half of the data flow's entry: a 200 body goes to the `TargetSink` (in production
`sync.CloudSync`, which parses it, hands it to `Runtime.set_target` and caches it with its
ETag in SQLite); a 304 changes nothing, except that a fetch asked for by `POST /v1/update`
re-applies the current target with the caller's `force`/`cancel`.

Loop timing: after a success, the poll interval plus a jitter in [0, min(60 s, interval));
after the n-th consecutive failure, min(interval, 15 s * 2^n) without jitter. `poll_now()`
(from `POST /v1/update`) fetches at once in its own task; its errors are only logged, and it
does not count as the loop's last successful poll (the healthcheck reads that).

Time is injected (`clock`, `sleep`, `jitter`) so the loop runs under a fake clock in tests.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol
from urllib.parse import quote

from supervisor.cloud.http import CloudError, Requester
from supervisor.errors import SupervisorError, TargetInvalid

_LOGGER = logging.getLogger(__name__)

JITTER_MAX_S = 60.0
ERROR_BASE_S = 15.0

FetchResult = Literal["new", "unchanged"]


class TargetSink(Protocol):
    """Where fetched targets go (implemented by CloudSync)."""

    async def new_target(self, body: Any, etag: str | None, *, force: bool) -> None:
        """A 200: a new target body (raises if it cannot be used)."""

    async def reapply(self, *, force: bool, cancel: bool) -> None:
        """A 304 on an API-triggered fetch: apply the current target again."""


class Poller:
    def __init__(
        self,
        *,
        client: Requester,
        uuid: Callable[[], str],
        sink: TargetSink,
        interval_ms: Callable[[], int],
        etag: str | None = None,
        instant_updates: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[float], float] = lambda top: random.uniform(0.0, top),
        log: Callable[[str], None] = _LOGGER.info,
    ) -> None:
        self._client = client
        self._uuid = uuid
        self._sink = sink
        self._interval_ms = interval_ms
        self.etag = etag
        self._instant_updates = instant_updates
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._log = log
        self._lock = asyncio.Lock()  # one fetch at a time (upstream's `getTarget` lock)
        self._api_tasks: set[asyncio.Task[None]] = set()
        self.failures = 0
        self.last_success = clock()  # the healthcheck counts from start until the first poll

    @property
    def interval(self) -> float:
        return max(1.0, self._interval_ms() / 1000)

    def next_delay(self, ok: bool) -> float:
        """The pause after a poll; `failures` already counts a failed one."""
        interval = self.interval
        if ok:
            return interval + self._jitter(min(JITTER_MAX_S, interval))
        return min(interval, ERROR_BASE_S * 2 ** (self.failures - 1))

    async def run(self) -> None:
        if not self._instant_updates():
            await self._sleep(self.next_delay(True))
        while True:
            ok = await self.poll()
            await self._sleep(self.next_delay(ok))

    async def poll(self) -> bool:
        """One cycle of the loop: fetch, count the outcome. False when it failed."""
        try:
            await self.fetch()
        except CloudError as err:
            self.failures += 1
            self._log(f"Failed to get target state for device: {err}")
            return False
        except SupervisorError as err:  # the sink refused the target (and logged why)
            _LOGGER.debug("target not applied: %s", err)
        self.failures = 0
        self.last_success = self._clock()
        return True

    async def fetch(self, *, force: bool = False, from_api: bool = False,
                    cancel: bool = False) -> FetchResult:
        async with self._lock:
            uuid = self._uuid()
            headers = {"If-None-Match": self.etag} if self.etag else {}
            answer = await self._client.request(
                "GET", f"/device/v3/{quote(uuid, safe='')}/state", headers=headers)
            if answer.status == 304 and self.etag:
                if from_api:
                    await self._sink.reapply(force=force, cancel=cancel)
                return "unchanged"
            if not answer.ok:
                raise answer.error("target state request failed")
            body = answer.json()
            etag, previous = answer.headers.get("etag"), self.etag
            self.etag = etag
            try:
                await self._sink.new_target(body, etag, force=force)
            except TargetInvalid:
                raise  # an invalid target stays refused until it changes (its ETag is kept)
            except BaseException:
                self.etag = previous  # not stored: fetch it again next time
                raise
            return "new"

    def poll_now(self, *, force: bool = False, cancel: bool = False) -> None:
        """`POST /v1/update`: fetch now in the background; errors are logged only."""
        task = asyncio.create_task(self._api_fetch(force, cancel), name="cloud-poll-now")
        self._api_tasks.add(task)
        task.add_done_callback(self._api_tasks.discard)

    async def _api_fetch(self, force: bool, cancel: bool) -> None:
        try:
            await self.fetch(force=force, from_api=True, cancel=cancel)
        except SupervisorError as err:
            self._log(f"Failed to get target state for device: {err}")

    def healthy(self, now: float | None = None) -> tuple[bool, str]:
        """Unhealthy when no poll succeeded for 2 x the poll interval (state.md §7)."""
        age = (self._clock() if now is None else now) - self.last_success
        limit = 2 * self.interval
        if age >= limit:
            return False, f"no successful target state poll for {age:.0f} s (limit {limit:.0f} s)"
        return True, ""
