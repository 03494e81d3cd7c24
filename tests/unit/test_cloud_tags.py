"""Device tags: pending until the cloud acknowledges them (state.md §8)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor.cloud.http import CloudError, Response
from supervisor.cloud.tags import TagReporter
from supervisor.store import AsyncStore


class FakeCloud:
    def __init__(self) -> None:
        self.patches: list[Any] = []
        self.fail = 0

    async def request(self, method: str, path: str, *, body: Any = None,
                      key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        assert (method, path) == ("PATCH", "/device/v3/tags")
        self.patches.append(body)
        if self.fail:
            self.fail -= 1
            return Response(503, {"retry-after": "9"})
        return Response(200)


def test_only_changes_become_pending_and_are_moved_to_reported(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            await store.set_tags("reported", {"room": "kitchen"})
            cloud = FakeCloud()
            tags = TagReporter(client=cloud, uuid=lambda: "dev1", store=store,
                               interval_ms=lambda: 60_000)
            await tags.set_tags({"room": "kitchen", "floor": "2"})
            assert await store.tags("target") == {"floor": "2"}
            assert await tags.report_once()
            assert cloud.patches == [{"dev1": {"floor": "2"}}]
            assert await store.tags("reported") == {"room": "kitchen", "floor": "2"}
            assert await store.tags("target") == {}
            assert await tags.report_once()  # nothing pending: nothing sent
            assert len(cloud.patches) == 1

    asyncio.run(scenario())


def test_failures_keep_tags_pending_and_honour_retry_after(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            cloud = FakeCloud()
            cloud.fail = 2
            slept: list[float] = []

            async def sleep(seconds: float) -> None:
                slept.append(seconds)

            tags = TagReporter(client=cloud, uuid=lambda: "dev1", store=store,
                               interval_ms=lambda: 60_000, sleep=sleep, log=lambda m: None)
            await tags.set_tags({"a": "1"})
            try:
                await tags.report_once()
            except CloudError as err:
                assert err.retry_after == 9
            assert await store.tags("target") == {"a": "1"}
            task = asyncio.create_task(tags.run())
            for _ in range(500):
                if await store.tags("reported") == {"a": "1"}:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            assert slept == [9]
            assert len(cloud.patches) == 3

    asyncio.run(scenario())
