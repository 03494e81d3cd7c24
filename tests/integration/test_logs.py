"""Container log followers against the real engine: lines reach the hub, with the service's
identity, stdout/stderr kept apart, BALENA_LOGS_LEVEL honoured, restarts followed without
repeats, and a slow reader never delaying another one."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import docker
import pytest

from supervisor.engine.logs import LogFollowers
from supervisor.logs import LogHub, LogMessage, Subscription

T = TypeVar("T")
APP_ID = 4242

# Prints `before`, waits for /tmp/go (created by `docker exec`), prints `after`, then idles.
WAIT_THEN_PRINT = ("echo before; while [ ! -e /tmp/go ]; do sleep 0.05; done; "
                   "echo after; exec sleep 600")


def run(fn: Callable[[], Awaitable[T]], timeout: float = 180) -> T:
    return asyncio.run(asyncio.wait_for(fn(), timeout))


@pytest.fixture
def make_container(docker_client: docker.DockerClient,
                   base_image: str) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(script: str, *, tty: bool = True, env: dict[str, str] | None = None,
             service: str = "main", start: bool = True) -> Any:
        image_id, release_id = 31, 41
        container = docker_client.containers.create(
            base_image, ["sh", "-c", script], tty=tty, environment=env or {},
            name=f"{service}_{image_id}_{release_id}_{uuid.uuid4().hex[:10]}",
            labels={"io.balena.supervised": "true", "io.balena.app-id": str(APP_ID),
                    "io.balena.service-id": "77", "io.balena.service-name": service},
        )
        made.append(container)
        if start:
            container.start()
        return container

    yield make
    for container in made:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


async def wait_until(cond: Callable[[], bool], what: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def until_printed(container: Any, text: str, limit: float = 60) -> None:
    """Until the engine has recorded `text` in the container's output."""
    deadline = time.monotonic() + limit
    while text.encode() not in await asyncio.to_thread(container.logs):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} never printed")
        await asyncio.sleep(0.05)


async def next_line(sub: Subscription[LogMessage], limit: float = 60) -> LogMessage:
    return await asyncio.wait_for(sub.get(), limit)


async def lines_until(sub: Subscription[LogMessage], last: str,
                      limit: float = 60) -> list[LogMessage]:
    got: list[LogMessage] = []
    while not got or got[-1].message != last:
        got.append(await next_line(sub, limit))
    return got


def trigger(container: Any) -> None:
    code, _ = container.exec_run(["touch", "/tmp/go"])
    assert code == 0


def test_line_printed_after_attaching_reaches_the_hub(
        docker_host: str, make_container: Callable[..., Any]) -> None:
    container = make_container(WAIT_THEN_PRINT)

    async def main() -> LogMessage:
        hub = LogHub()
        followers = LogFollowers(docker_host, hub.publish_many)
        try:
            with hub.subscribe() as sub:
                await until_printed(container, "before")  # printed before we follow
                followers.follow(container.id)  # since = now, as for a running container
                await wait_until(lambda: followers.attached(container.id), "the follower")
                await asyncio.to_thread(trigger, container)
                return await next_line(sub)
        finally:
            await asyncio.to_thread(followers.close)

    msg = run(main)
    assert msg.message == "after"  # and not `before`: it came before `since`
    assert msg.to_json() == {"message": "after", "isStdErr": False,
                             "timestamp": msg.timestamp, "serviceId": 77,
                             "serviceName": "main", "appId": APP_ID, "imageId": 31}
    assert abs(msg.timestamp - time.time() * 1000) < 30_000


def test_start_event_follows_from_the_start_and_demultiplexes_stderr(
        docker_host: str, make_container: Callable[..., Any]) -> None:
    container = make_container("echo to-out; echo to-err >&2; echo done; exec sleep 600",
                               tty=False, start=False)

    async def main() -> list[LogMessage]:
        hub = LogHub()
        followers = LogFollowers(docker_host, hub.publish_many)
        try:
            with hub.subscribe() as sub:
                await asyncio.to_thread(container.start)
                await until_printed(container, "done")  # out before the event is handled
                followers.on_docker_event({"Type": "container", "Action": "start",
                                           "id": container.id})
                return [await next_line(sub) for _ in range(3)]
        finally:
            await asyncio.to_thread(followers.close)

    got = run(main)
    # Docker reads stdout and stderr from two pipes: their relative order is not kept.
    stdout = [m.message for m in got if not m.is_stderr]
    stderr = [m.message for m in got if m.is_stderr]
    assert stdout == ["to-out", "done"] and stderr == ["to-err"]


def test_logs_level_none_is_not_followed_and_err_keeps_stderr_only(
        docker_host: str, make_container: Callable[..., Any]) -> None:
    silent = make_container("echo hidden; exec sleep 600", env={"BALENA_LOGS_LEVEL": "none"},
                            service="silent")
    errors = make_container("echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2; "
                            "exec sleep 600", tty=False, env={"BALENA_LOGS_LEVEL": "err"},
                            service="errors")

    async def main() -> tuple[list[LogMessage], frozenset[str]]:
        hub = LogHub()
        followers = LogFollowers(docker_host, hub.publish_many)
        try:
            with hub.subscribe() as sub:
                await until_printed(silent, "hidden")
                followers.follow(silent.id, from_start=True)
                followers.follow(errors.id, from_start=True)
                await wait_until(lambda: silent.id not in followers.following(),
                                 "the BALENA_LOGS_LEVEL=none follower to end")
                got = await lines_until(sub, "err-2")
                await asyncio.sleep(0.3)
                while (extra := sub.get_nowait()) is not None:
                    got.append(extra)
                return got, followers.following()
        finally:
            await asyncio.to_thread(followers.close)

    got, following = run(main)
    assert [(m.message, m.service_name, m.is_stderr) for m in got] == [
        ("err-1", "errors", True), ("err-2", "errors", True)]
    assert following == frozenset({errors.id})


def test_restart_is_followed_without_repeating_lines(
        docker_host: str, make_container: Callable[..., Any]) -> None:
    # The container's filesystem survives a restart: count the runs in it.
    container = make_container("n=$(cat /n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /n; "
                               "echo run-$n; exec sleep 600")

    async def main() -> tuple[list[str], frozenset[str]]:
        hub = LogHub()
        followers = LogFollowers(docker_host, hub.publish_many, retry_delay=0.1)
        try:
            with hub.subscribe() as sub:
                followers.follow(container.id, from_start=True)
                first = await next_line(sub)
                await asyncio.to_thread(container.restart, timeout=0)
                # What the runtime does on the `start` event that follows the `die`:
                followers.on_docker_event({"Action": "start", "id": container.id})
                second = await next_line(sub)
                await asyncio.sleep(1.0)
                extra = [m.message for m in iter(sub.get_nowait, None)]
                await asyncio.to_thread(container.remove, force=True)
                followers.on_docker_event({"Action": "destroy", "id": container.id})
                return [first.message, second.message, *extra], followers.following()
        finally:
            await asyncio.to_thread(followers.close)

    messages, following = run(main)
    assert messages == ["run-1", "run-2"]
    assert following == frozenset()


def test_slow_subscriber_does_not_delay_another(
        docker_host: str, make_container: Callable[..., Any]) -> None:
    count = 3000
    container = make_container(
        f"while [ ! -e /tmp/go ]; do sleep 0.05; done; i=0; "
        f"while [ $i -lt {count} ]; do echo line-$i; i=$((i+1)); done; exec sleep 600")

    async def main() -> tuple[list[str], list[str]]:
        hub = LogHub(queue_size=count + 10)
        followers = LogFollowers(docker_host, hub.publish_many, inbox_size=256)
        try:
            with hub.subscribe() as fast, hub.subscribe(maxsize=10) as slow:
                followers.follow(container.id)
                await wait_until(lambda: followers.attached(container.id), "the follower")
                await asyncio.to_thread(trigger, container)
                # all of it, while the slow reader holds a full queue: it held nobody back
                got_fast = [m.message for m in await lines_until(fast, f"line-{count - 1}")]
                # Only now does the slow reader look: it holds its first 10 lines, then a gap.
                got_slow = [(await next_line(slow)).message for _ in range(11)]
                return got_fast, got_slow
        finally:
            await asyncio.to_thread(followers.close)

    fast, slow = run(main, timeout=120)
    assert fast == [f"line-{i}" for i in range(count)]
    assert slow[:10] == [f"line-{i}" for i in range(10)]
    assert slow[10] == f"Warning: {count - 10} log lines dropped: this reader is too slow"


def test_unsupervised_container_is_ignored(
        docker_host: str, docker_client: docker.DockerClient, base_image: str) -> None:
    container = docker_client.containers.run(base_image, ["sh", "-c", "exec sleep 600"],
                                             detach=True, labels={"purpose": "test"})
    try:
        async def main() -> frozenset[str]:
            followers = LogFollowers(docker_host, lambda batch: None)
            try:
                followers.follow(container.id)
                await wait_until(lambda: not followers.following(), "the follower to end")
                return followers.following()
            finally:
                await asyncio.to_thread(followers.close)

        assert run(main) == frozenset()
    finally:
        container.remove(force=True)


def test_unfollow_ends_the_read_of_a_quiet_container(
        docker_host: str, make_container: Callable[..., Any]) -> None:
    # The follower blocks in a read that only the socket shutdown of
    # engine/dockerpy_private.py can end: the container prints nothing more, ever.
    container = make_container(WAIT_THEN_PRINT)
    thread_name = f"logs-{container.id[:12]}"

    def alive() -> bool:
        return any(t.name == thread_name for t in threading.enumerate())

    async def main() -> None:
        followers = LogFollowers(docker_host, lambda batch: None)
        try:
            followers.follow(container.id)
            await wait_until(lambda: followers.attached(container.id), "the follower")
            assert alive()
            followers.unfollow(container.id)
            # Generous limit; without the shutdown the read would last the container's life.
            await wait_until(lambda: not alive(), "the follower thread to end", limit=30)
        finally:
            await asyncio.to_thread(followers.close)

    run(main)
