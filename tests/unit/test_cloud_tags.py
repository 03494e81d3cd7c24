"""Device tags: pending until the cloud acknowledges them (state.md §8)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

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
            with pytest.raises(CloudError) as failed:
                await tags.report_once()
            assert failed.value.retry_after == 9
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


class PickyCloud:
    """Refuses a whole PATCH with 400 when any key is in `refuse` (a rule the agent does not
    know in advance), or answers `status` to everything."""

    def __init__(self, refuse: frozenset[str] = frozenset(), status: int = 200) -> None:
        self.refuse = refuse
        self.status = status
        self.patches: list[dict[str, str]] = []

    async def request(self, method: str, path: str, *, body: Any = None,
                      key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        tags = body["dev1"]
        self.patches.append(tags)
        if self.status != 200:
            return Response(self.status)
        if self.refuse & set(tags):
            return Response(400, body=b"invalid tag key")
        return Response(200)


def _reporter(store: AsyncStore, cloud: Any, logs: list[str], **kw: Any) -> TagReporter:
    return TagReporter(client=cloud, uuid=lambda: "dev1", store=store,
                       interval_ms=lambda: 60_000, log=logs.append, **kw)


def test_reserved_and_whitespace_keys_are_dropped_before_sending(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            cloud, logs = PickyCloud(), []
            tags = _reporter(store, cloud, logs)
            await tags.set_tags({"io.balena.x": "1", "io.resin.y": "2", "a b": "3", "ok": "4"})
            assert await tags.report_once()
            assert cloud.patches == [{"ok": "4"}]
            assert await store.tags("target") == {}
            assert await store.tags("reported") == {"ok": "4"}
            assert len(logs) == 3
            assert any("'io.balena.x' dropped" in line and "reserved" in line for line in logs)

    asyncio.run(scenario())


def test_a_key_the_cloud_refuses_is_found_and_dropped_the_others_reported(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            cloud, logs = PickyCloud(refuse=frozenset({"bad"})), []
            tags = _reporter(store, cloud, logs)
            await tags.set_tags({"bad": "1", "good": "2", "fine": "3"})
            assert await tags.report_once()
            assert cloud.patches[0] == {"bad": "1", "good": "2", "fine": "3"}
            assert sorted(map(tuple, (p.items() for p in cloud.patches[1:]))) == sorted(
                [(("bad", "1"),), (("good", "2"),), (("fine", "3"),)])
            assert await store.tags("reported") == {"good": "2", "fine": "3"}
            assert await store.tags("target") == {}
            assert [line for line in logs if "'bad' dropped" in line]
            assert await tags.report_once() and len(cloud.patches) == 4  # nothing left

    asyncio.run(scenario())


def test_an_api_without_device_v3_tags_parks_the_loop_instead_of_retrying(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            cloud, logs = PickyCloud(status=404), []
            slept: list[float] = []

            async def sleep(seconds: float) -> None:
                slept.append(seconds)
                await asyncio.sleep(0)

            tags = _reporter(store, cloud, logs, sleep=sleep)
            await tags.set_tags({"a": "1"})
            task = asyncio.create_task(tags.run())
            for _ in range(500):
                if tags.unsupported:
                    break
                await asyncio.sleep(0.01)
            for _ in range(20):  # give a wrong retry loop every chance to show itself
                await asyncio.sleep(0)
            assert tags.unsupported and len(cloud.patches) == 1 and slept == []
            assert await store.tags("target") == {"a": "1"}  # still pending
            assert [line for line in logs if "v44.1.0" in line]
            await tags.set_tags({"a": "2"})  # a change tries again, once
            for _ in range(500):
                if len(cloud.patches) == 2:
                    break
                await asyncio.sleep(0.01)
            for _ in range(20):
                await asyncio.sleep(0)
            task.cancel()
            assert len(cloud.patches) == 2 and slept == []

    asyncio.run(scenario())
