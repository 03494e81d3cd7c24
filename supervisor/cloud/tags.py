"""Device tags set on the device, reported with `PATCH /device/v3/tags` (state.md §8).

`PATCH /v2/device/tags` hands tags to `set_tags()`: each value that differs from the pending
target (and is not already the reported value) becomes pending. While anything is pending the
loop sends the pending keys every 10 s and, on success, moves them to the reported map. Both
maps live in the store (`tags` table, kinds "target" and "reported"), so a restart resumes a
report that was still pending. Failures back off like state reports.

openBalena (docs/fleet.md "Works against openBalena") refuses the whole PATCH with 400 when
one key breaks its rules, so nothing would ever leave the pending set. Keys that break the
rules openBalena states (`tag_key_error`) are dropped from the pending set with a log line
before sending; when the cloud still answers 400, each key is sent alone once to find the
refused ones, which are dropped likewise. An API without `/device/v3/tags` (open-balena-api
older than v44.1.0) answers 404: the tags stay pending, the loop says so once and waits for
the next change instead of retrying.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import quote

from supervisor.cloud.http import CloudError, Requester, Response

_LOGGER = logging.getLogger(__name__)

INTERVAL_S = 10.0
ERROR_BASE_S = 15.0
RESERVED_PREFIXES = ("io.resin.", "io.balena.")
_SPACE = re.compile(r"\s")


class TagStore(Protocol):
    async def tags(self, kind: Literal["reported", "target"]) -> dict[str, str]: ...

    async def set_tags(self, kind: Literal["reported", "target"],
                       tags: Mapping[str, str]) -> None: ...


class TagsUnsupported(CloudError):
    """The cloud has no `/device/v3/tags` (404)."""


def tag_key_error(key: str) -> str | None:
    """Why openBalena refuses a tag key (tags/validation.ts, and the model's non-empty rule),
    in its words; None for a key it takes."""
    if not key:
        return "Tag keys cannot be empty."
    if _SPACE.search(key):
        return "Tag keys cannot contain whitespace."
    for prefix in RESERVED_PREFIXES:
        if key.startswith(prefix):
            return f"Tag keys beginning with {prefix} are reserved."
    return None


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
        self.unsupported = False  # the last attempt met a 404

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
            bad = {k: why for k in target if (why := tag_key_error(k)) is not None}
            for key, why in bad.items():
                self._log(f"Device tag {key!r} dropped: the cloud refuses it ({why})")
                del target[key]
            todo = pending(target, reported)
            if bad or (not todo and target):  # keys that already match leave the target
                await self._store.set_tags("target", todo)
            if not todo:
                return True
        accepted, refused = await self._send(todo)
        async with self._lock:
            target = await self._store.tags("target")
            reported = {**await self._store.tags("reported"), **accepted}
            await self._store.set_tags("reported", reported)
            for key, value in refused.items():
                if target.get(key) == value:  # unless it was set again meanwhile
                    del target[key]
            left = pending(target, reported)
            await self._store.set_tags("target", left)
        return not left

    async def _send(self, todo: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """(accepted, refused) pending tags; other failures raise."""
        answer = await self._patch(todo)
        if answer.ok:
            return todo, {}
        if answer.status != 400:
            raise answer.error("tag report failed")
        accepted: dict[str, str] = {}
        refused: dict[str, str] = {}
        for key, value in todo.items():  # find the keys the cloud refuses, one by one
            one = answer if len(todo) == 1 else await self._patch({key: value})
            if one.ok:
                accepted[key] = value
            elif one.status == 400:
                detail = one.body[:200].decode("utf-8", "replace").strip()
                self._log(f"Device tag {key!r} dropped: the cloud refuses it (HTTP 400 {detail})")
                refused[key] = value
            else:
                raise one.error("tag report failed")
        return accepted, refused

    async def _patch(self, tags: Mapping[str, str]) -> Response:
        answer = await self._client.request("PATCH", "/device/v3/tags",
                                            body={self._uuid(): dict(tags)})
        if answer.status == 404:
            raise TagsUnsupported("the cloud has no /device/v3/tags", status=404)
        return answer

    async def run(self) -> None:
        self._wake.set()  # a report left pending by a restart resumes at once
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                try:
                    done = await self.report_once()
                except TagsUnsupported:
                    if not self.unsupported:
                        self._log("The cloud has no /device/v3/tags (open-balena-api older "
                                  "than v44.1.0): device tags stay pending until they change")
                    self.unsupported = True
                    break
                except CloudError as err:
                    self.failures += 1
                    delay = err.retry_after if err.retry_after is not None else min(
                        ERROR_BASE_S * 2 ** (self.failures - 1),
                        max(1.0, self._interval_ms() / 1000))
                    self._log(f"Failed to report device tags, retrying in {delay:.0f} s: {err}")
                    await self._sleep(delay)
                    continue
                self.failures = 0
                self.unsupported = False
                if done:
                    break
                await self._sleep(INTERVAL_S)
