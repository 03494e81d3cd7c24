"""The failure budget: counted per target in SQLite, exhausted at the limit, reset."""

from __future__ import annotations

import asyncio
from pathlib import Path

from supervisor.cloud.failures import DEFAULT_LIMIT, FailureBudget, limit_from, target_hash
from supervisor.store import AsyncStore


def test_the_limit_comes_from_the_device_config() -> None:
    assert limit_from({}) == DEFAULT_LIMIT == 5
    assert limit_from({"RESIN_SUPERVISOR_UPDATE_FAILURE_LIMIT": "3"}) == 3
    assert limit_from({"BALENA_SUPERVISOR_UPDATE_FAILURE_LIMIT": "2",
                       "RESIN_SUPERVISOR_UPDATE_FAILURE_LIMIT": "3"}) == 2
    assert limit_from({"SUPERVISOR_UPDATE_FAILURE_LIMIT": "0"}) == 0
    assert limit_from({"SUPERVISOR_UPDATE_FAILURE_LIMIT": "nope"}) == DEFAULT_LIMIT


def test_target_hash_ignores_key_order() -> None:
    assert target_hash({"a": 1, "b": {"c": 2, "d": 3}}) == \
        target_hash({"b": {"d": 3, "c": 2}, "a": 1})
    assert target_hash({"a": 1}) != target_hash({"a": 2})


def test_exhausted_after_n_failures_and_remembered_across_restarts(tmp_path: Path) -> None:
    async def scenario() -> None:
        logs: list[str] = []
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            budget = FailureBudget(store, limit=lambda: 3, log=logs.append)
            await budget.set_target("t1")
            assert [await budget.failed(f"boom {n}") for n in range(4)] == \
                [False, False, True, False]
            assert budget.exhausted and budget.reason == "boom 3" and len(logs) == 1
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            again = FailureBudget(store, limit=lambda: 3)
            await again.set_target("t1")
            assert again.exhausted and again.count == 4
            await again.set_target("t2")  # a new target starts from zero
            assert not again.exhausted
            assert await store.failure("t1") is None

    asyncio.run(scenario())


def test_reset_and_a_zero_limit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await AsyncStore.open(tmp_path / "db.sqlite") as store:
            limit = [2]
            budget = FailureBudget(store, limit=lambda: limit[0], log=lambda m: None)
            await budget.set_target("t1")
            await budget.failed("x")
            await budget.failed("x")
            assert budget.exhausted
            await budget.reset()  # a forced update
            assert not budget.exhausted and await store.failure("t1") is None
            for _ in range(5):
                await budget.failed("y")
            limit[0] = 0
            assert not budget.exhausted
            none = FailureBudget(store)
            assert not await none.failed("no target, nothing counted")

    asyncio.run(scenario())
