"""Device tags set on the device, reported with `PATCH /device/v3/tags` (state.md §8).

`PATCH /v2/device/tags` hands tags to `set_tags()`: each value that differs from the pending
target (and is not already the reported value) becomes pending. While anything is pending the
loop sends the pending keys every 10 s and, on success, moves them to the reported map. Both
maps live in the store (`tags` table, kinds "target" and "reported"), so a restart resumes a
report that was still pending. Failures back off like state reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import quote

from supervisor.cloud.http import CloudError, Requester

_LOGGER = logging.getLogger(__name__)

INTERVAL_S = 10.0
ERROR_BASE_S = 15.0


class TagStore(Protocol):
    async def tags(self, kind: Literal["reported", "target"]) -> dict[str, str]: ...

    async def set_tags(self, kind: Literal["reported", "target"],
                       tags: Mapping[str, str]) -> None: ...


def pending(target: Mapping[str, str], reported: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in target.items() if reported.get(k) != v}


class TagReporter:
    def __init__(self, *, client: Requester, uuid: Callable[[], str], store: TagStore,
                 interval_ms: Callable[[], int],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 log: Callable[[str], None] = _LOGGER.info) -> None:
        self._client = client
        self._uuid = uuid
        self._store = store
        self._interval_ms = interval_ms
        self._sleep = sleep
        self._log = log
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.failures = 0

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        """Make `tags` pending (only the keys whose value would change), then report soon."""
        async with self._lock:
            target = await self._store.tags("target")
            reported = await self._store.tags("reported")
            changed = False
            for key, value in tags.items():
                if target.get(key) == value:
                    continue
                if key not in target and reported.get(key) == value:
                    continue
                target[key] = value
                changed = True
            if changed:
                await self._store.set_tags("target", target)
        if changed:
            self._wake.set()

    async def get_tags(self) -> list[dict[str, Any]]:
        """The device's tags as the cloud has them: `[{"id", "name", "value"}]`."""
        flt = quote(f"device/uuid eq '{self._uuid()}'", safe="")
        answer = await self._client.request(
            "GET", f"/v7/device_tag?$select=id,tag_key,value&$filter={flt}")
        if not answer.ok:
            raise answer.error("reading device tags failed")
        body = answer.json()
        rows = body.get("d", []) if isinstance(body, dict) else []
        return [{"id": r.get("id"), "name": r.get("tag_key"), "value": r.get("value")}
                for r in rows if isinstance(r, dict)]

    async def report_once(self) -> bool:
        """Send what is pending. True when nothing is left pending."""
        async with self._lock:
            target = await self._store.tags("target")
            reported = await self._store.tags("reported")
            todo = pending(target, reported)
            if not todo:
                if target:  # keys that already match are dropped from the target
                    await self._store.set_tags("target", {})
                return True
        answer = await self._client.request("PATCH", "/device/v3/tags",
                                            body={self._uuid(): todo})
        if not answer.ok:
            raise answer.error("tag report failed")
        async with self._lock:
            target = await self._store.tags("target")
            reported = {**await self._store.tags("reported"), **todo}
            await self._store.set_tags("reported", reported)
            left = pending(target, reported)
            await self._store.set_tags("target", left)
        return not left

    async def run(self) -> None:
        self._wake.set()  # a report left pending by a restart resumes at once
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                try:
                    done = await self.report_once()
                except CloudError as err:
                    self.failures += 1
                    delay = err.retry_after if err.retry_after is not None else min(
                        ERROR_BASE_S * 2 ** (self.failures - 1),
                        max(1.0, self._interval_ms() / 1000))
                    self._log(f"Failed to report device tags, retrying in {delay:.0f} s: {err}")
                    await self._sleep(delay)
                    continue
                self.failures = 0
                if done:
                    break
                await self._sleep(INTERVAL_S)
