"""Target polling under a fake clock: ETags, 304, backoff, jitter, poll_now, health."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from supervisor.cloud.http import CloudError, Response
from supervisor.cloud.poller import Poller
from supervisor.errors import InternalError, TargetInvalid

UUID = "dev1"


class FakeCloud:
    """Answers GET /device/v3/<uuid>/state from a script; records the If-None-Match sent."""

    def __init__(self, *answers: Response | Exception) -> None:
        self.answers = list(answers)
        self.etags_sent: list[str | None] = []

    async def request(self, method: str, path: str, *, body: Any = None,
                      key: str | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        assert (method, path) == ("GET", f"/device/v3/{UUID}/state")
        self.etags_sent.append((headers or {}).get("If-None-Match"))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Sink:
    def __init__(self, refuse: bool = False) -> None:
        self.targets: list[tuple[Any, str | None, bool]] = []
        self.reapplied: list[tuple[bool, bool]] = []
        self.refuse = refuse

    async def new_target(self, body: Any, etag: str | None, *, force: bool) -> None:
        self.targets.append((body, etag, force))
        if self.refuse:
            raise TargetInvalid("apps", "bad")

    async def reapply(self, *, force: bool, cancel: bool) -> None:
        self.reapplied.append((force, cancel))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def _until(check: Callable[[], bool], rounds: int = 10_000) -> None:
    """Let the loop run until `check()` holds (bounded, so a bug fails instead of hanging)."""
    for _ in range(rounds):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def _target(n: int) -> Response:
    body = {UUID: {"name": f"n{n}", "config": {}, "apps": {}}}
    return Response(200, {"etag": f'"e{n}"'}, json.dumps(body).encode())


def _poller(cloud: FakeCloud, sink: Sink, clock: Clock, *, interval_ms: int = 900_000,
            etag: str | None = None, jitter: float = 0.0) -> Poller:
    return Poller(client=cloud, uuid=lambda: UUID, sink=sink, interval_ms=lambda: interval_ms,
                  etag=etag, clock=clock, sleep=clock.sleep,
                  jitter=lambda top: min(jitter, top), log=lambda message: None)


def test_etag_is_sent_and_a_304_changes_nothing() -> None:
    async def scenario() -> None:
        cloud = FakeCloud(_target(1), Response(304), _target(2))
        sink, clock = Sink(), Clock()
        poller = _poller(cloud, sink, clock, etag='"cached"')
        assert await poller.fetch() == "new"
        assert await poller.fetch() == "unchanged"
        assert await poller.fetch() == "new"
        assert cloud.etags_sent == ['"cached"', '"e1"', '"e1"']
        assert [(t[0][UUID]["name"], t[1], t[2]) for t in sink.targets] == \
            [("n1", '"e1"', False), ("n2", '"e2"', False)]
        assert sink.reapplied == []

    asyncio.run(scenario())


def test_an_api_fetch_with_304_reapplies_with_force_and_cancel() -> None:
    async def scenario() -> None:
        cloud = FakeCloud(Response(304), _target(3))
        sink, clock = Sink(), Clock()
        poller = _poller(cloud, sink, clock, etag='"e1"')
        poller.poll_now(force=True, cancel=True)
        poller.poll_now(force=True, cancel=False)
        await _until(lambda: len(cloud.etags_sent) == 2 and not poller._api_tasks)
        assert sink.reapplied == [(True, True)]
        assert sink.targets == [({UUID: {"name": "n3", "config": {}, "apps": {}}}, '"e3"', True)]
        assert poller.last_success == 0.0  # API fetches do not feed the healthcheck

    asyncio.run(scenario())


def test_errors_back_off_from_15_s_doubling_up_to_the_interval_then_reset() -> None:
    async def scenario() -> None:
        down = CloudError("connection refused")
        cloud = FakeCloud(down, Response(500), down, down, down, down, _target(1),
                          down, Response(304))
        sink, clock = Sink(), Clock()
        poller = _poller(cloud, sink, clock, interval_ms=100_000, jitter=7.0)
        task = asyncio.create_task(poller.run())
        await _until(lambda: not cloud.answers and len(clock.slept) >= 9)
        task.cancel()
        assert clock.slept == [15, 30, 60, 100, 100, 100, 107, 15, 107]
        assert len(sink.targets) == 1

    asyncio.run(scenario())


@pytest.mark.parametrize(("interval_ms", "top"), [(900_000, 60.0), (5_000, 5.0)])
def test_jitter_stays_below_60_s_and_below_the_interval(interval_ms: int, top: float) -> None:
    asked: list[float] = []

    def jitter(limit: float) -> float:
        asked.append(limit)
        return limit / 2

    poller = Poller(client=FakeCloud(), uuid=lambda: UUID, sink=Sink(),
                    interval_ms=lambda: interval_ms, jitter=jitter)
    assert poller.next_delay(True) == interval_ms / 1000 + top / 2
    assert asked == [top]


def test_a_refused_target_is_not_a_poll_failure_and_is_not_fetched_again() -> None:
    async def scenario() -> None:
        cloud = FakeCloud(_target(1), Response(304))
        sink, clock = Sink(refuse=True), Clock()
        poller = _poller(cloud, sink, clock)
        assert await poller.poll()
        assert await poller.poll()
        assert poller.failures == 0
        assert len(sink.targets) == 1 and cloud.etags_sent == [None, '"e1"']

    asyncio.run(scenario())


def test_healthy_until_no_poll_succeeded_for_twice_the_interval() -> None:
    async def scenario() -> None:
        cloud = FakeCloud(_target(1), CloudError("down"))
        sink, clock = Sink(), Clock()
        poller = _poller(cloud, sink, clock, interval_ms=60_000)
        clock.now = 50
        assert await poller.poll()
        clock.now = 100
        assert not await poller.poll()
        assert poller.healthy() == (True, "")
        clock.now = 169
        assert poller.healthy()[0]
        clock.now = 170
        ok, reason = poller.healthy()
        assert not ok and "120" in reason

    asyncio.run(scenario())


def test_a_target_that_could_not_be_stored_is_fetched_again() -> None:
    class FlakySink(Sink):
        async def new_target(self, body: Any, etag: str | None, *, force: bool) -> None:
            self.targets.append((body, etag, force))
            if len(self.targets) == 1:
                raise InternalError("database is locked")

    async def scenario() -> None:
        cloud = FakeCloud(_target(1), _target(1))
        sink, clock = FlakySink(), Clock()
        poller = _poller(cloud, sink, clock, etag='"e0"')
        assert await poller.poll()  # the cloud answered: not a poll failure
        assert await poller.poll()
        assert cloud.etags_sent == ['"e0"', '"e0"']
        assert poller.etag == '"e1"' and len(sink.targets) == 2

    asyncio.run(scenario())
