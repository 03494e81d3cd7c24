"""The LED's offline pattern on a plain file in a temp dir, and its hand-over with identify.

The pattern is paced by an injected sleep (`Stepper`): every sleep the pattern asks for is
queued with the LED file's content at that moment, and waits until the test releases it. So
the test reads the exact sequence "on for 200 ms, off for 200 ms, ..." without a clock and
without thresholds. Identify keeps its real timing; the tests only wait for it to end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from supervisor.board.led import SysfsBrightnessLed, SysfsTriggerLed, make_led
from supervisor.board.profiles import (
    DEFAULT_OFFLINE_PATTERN,
    OfflinePattern,
    configs_dir,
    load_board,
    parse_profile,
)
from supervisor.errors import ConfigError
from supervisor.host.connectivity import ConnectivityMonitor

LIMIT = 30.0  # generous wait for a condition on a loaded machine; never a threshold
CYCLE = [("1", 0.2), ("0", 0.2)] * 4 + [("0", 1.0)]  # config.md §8


@dataclass
class Request:
    seconds: float
    led: str  # the LED file when the pattern asked to sleep
    identify_running: bool
    done: asyncio.Future[None]


class Stepper:
    """An injected sleep: queues each request and waits until the test releases it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.led: SysfsBrightnessLed | SysfsTriggerLed | None = None
        self.requests: asyncio.Queue[Request] = asyncio.Queue()

    async def __call__(self, seconds: float) -> None:
        done = asyncio.get_running_loop().create_future()
        running = self.led is not None and self.led.blinking
        # The tiny read is the point of the test: what the LED shows during this sleep.
        self.requests.put_nowait(Request(seconds, self.path.read_text(), running,
                                         done))
        await done

    async def next(self) -> Request:
        return await asyncio.wait_for(self.requests.get(), LIMIT)

    async def steps(self, count: int) -> list[tuple[str, float]]:
        """Release `count` sleeps, returning (LED, seconds) for each."""
        seen = []
        for _ in range(count):
            request = await self.next()
            seen.append((request.led, request.seconds))
            request.done.set_result(None)
        return seen


def _led(tmp_path: Path, pattern: OfflinePattern = DEFAULT_OFFLINE_PATTERN) -> tuple[
        SysfsBrightnessLed, Stepper, Path]:
    path = tmp_path / "brightness"
    path.write_text("0")
    stepper = Stepper(path)
    led = SysfsBrightnessLed(str(path), offline=pattern, sleep=stepper)
    stepper.led = led
    return led, stepper, path


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition()` with a generous limit (a poll, not a timing assumption)."""
    try:
        async with asyncio.timeout(LIMIT):
            while not condition():  # noqa: ASYNC110 - a state to poll, no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_shipped_profiles_carry_the_spec_pattern() -> None:
    for slug in ("raspberrypi4-64", "raspberrypi3", "raspberrypi5", "generic"):
        assert load_board(slug, configs_dir()).led.offline == OfflinePattern(
            blinks=4, on_ms=200, off_ms=200, pause_ms=1000)


def test_offline_pattern_repeats_until_online_again(tmp_path: Path) -> None:
    led, stepper, path = _led(tmp_path)

    async def scenario() -> list[tuple[str, float]]:
        await led.set_offline(True)
        seen = await stepper.steps(2 * len(CYCLE))
        pending = await stepper.next()  # third cycle under way
        await led.set_offline(False)  # online again
        assert pending.done.cancelled() and not led.offline_blinking
        assert path.read_text() == "0"
        assert stepper.requests.empty()
        return seen

    assert asyncio.run(scenario()) == CYCLE * 2


def test_the_profile_sets_pattern_and_timing(tmp_path: Path) -> None:
    profile = tmp_path / "board.toml"
    led_file = tmp_path / "led"
    led_file.write_text("0")
    profile.write_text(f"""slug = "b"\nname = "B"\narch = "aarch64"\n[led]
driver = "sysfs-brightness"\nfile = "{led_file}"
[led.offline]\nblinks = 2\non_ms = 100\noff_ms = 300\npause_ms = 0\n""")
    stepper = Stepper(led_file)
    led = make_led(load_board("board", tmp_path), None, sleep=stepper)

    async def scenario() -> list[tuple[str, float]]:
        await led.set_offline(True)
        seen = await stepper.steps(5)
        await led.set_offline(False)
        return seen

    assert asyncio.run(scenario()) == [("1", 0.1), ("0", 0.3), ("1", 0.1), ("0", 0.3),
                                       ("0", 0.0)]


def test_identify_pauses_the_offline_pattern_which_resumes_after(tmp_path: Path) -> None:
    led, stepper, path = _led(tmp_path)

    async def scenario() -> Request:
        await led.set_offline(True)
        in_flight = await stepper.next()  # offline: LED on, first blink
        await led.blink(0.5)
        await _until(lambda: in_flight.done.cancelled(), "the offline pattern to yield")
        assert not led.offline_blinking
        await _until(lambda: not led.blinking, "identify to end")
        resumed = await stepper.next()
        await led.stop()
        return resumed

    resumed = asyncio.run(scenario())
    assert (resumed.led, resumed.seconds) == ("1", 0.2)  # a fresh cycle
    assert not resumed.identify_running  # never while identify had the LED
    assert path.read_text() == "0"


def test_offline_during_identify_waits_for_it(tmp_path: Path) -> None:
    led, stepper, _path = _led(tmp_path)

    async def scenario() -> tuple[bool, Request]:
        await led.blink(0.5)
        await led.set_offline(True)
        started_during_identify = led.offline_blinking
        first = await stepper.next()
        await led.stop()
        return started_during_identify, first

    started, first = asyncio.run(scenario())
    assert not started
    assert not first.identify_running and (first.led, first.seconds) == ("1", 0.2)


def test_online_during_identify_cancels_the_resume(tmp_path: Path) -> None:
    led, stepper, path = _led(tmp_path)

    async def scenario() -> None:
        await led.set_offline(True)
        await stepper.next()
        await led.blink(0.3)
        await led.set_offline(False)
        await _until(lambda: not led.blinking, "identify to end")
        assert not led.offline_blinking

    asyncio.run(scenario())
    assert path.read_text() == "0"
    assert stepper.requests.empty()


def test_trigger_led_offline_pattern_is_steady_on_off(tmp_path: Path) -> None:
    trigger = tmp_path / "trigger"
    trigger.write_text("none")
    stepper = Stepper(trigger)
    led = SysfsTriggerLed(str(trigger), "timer", "none", sleep=stepper)

    async def scenario() -> list[tuple[str, float]]:
        await led.set_offline(True)
        seen = await stepper.steps(2)
        await led.set_offline(False)
        return seen

    # "timer" would make the kernel blink by itself: the pattern switches steadily instead
    assert asyncio.run(scenario()) == [("default-on", 0.2), ("none", 0.2)]
    assert trigger.read_text() == "none"


def test_the_led_follows_the_connectivity_check(tmp_path: Path) -> None:
    """End to end: a real listener goes away, the LED shows the offline pattern; it comes
    back, the pattern stops."""
    led, stepper, path = _led(tmp_path)

    async def scenario() -> list[tuple[str, float]]:
        async def handle(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        monitor = ConnectivityMonitor(f"http://127.0.0.1:{port}", vpn_status_dir=tmp_path,
                                      interval=0.02)
        followed: list[bool] = []  # changes the LED has fully applied

        async def follow(online: bool) -> None:
            await led.set_offline(not online)
            followed.append(online)

        monitor.on_change(follow)
        task = asyncio.create_task(monitor.run())
        await _until(lambda: followed == [True], "the first check")
        assert not led.offline_blinking and stepper.requests.empty()
        server.close()
        await server.wait_closed()
        seen = await stepper.steps(len(CYCLE))  # offline: the pattern runs
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        # `online` flips before the callback has stopped the pattern (and written the LED
        # off): wait for the callback itself to return, not for the flag.
        await _until(lambda: followed == [True, False, True], "the pattern to stop")
        assert not led.offline_blinking
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()
        await server.wait_closed()
        return seen

    assert asyncio.run(scenario()) == CYCLE
    assert path.read_text() == "0"


def test_bad_offline_pattern_in_a_profile_is_a_config_error() -> None:
    base = {"slug": "b", "name": "B", "arch": "aarch64",
            "led": {"driver": "sysfs-brightness", "file": "/x"}}
    for bad in ({"blinks": 0}, {"on_ms": "200"}, {"pause_ms": -1}, {"off_ms": True},
                {"on_ms": 60_001}):
        led = {**base["led"], "offline": bad}  # type: ignore[dict-item]
        with pytest.raises(ConfigError, match=r"led\.offline\.\w+ must be a whole number"):
            parse_profile({**base, "led": led}, "b.toml")
    with pytest.raises(ConfigError, match=r"\[offline\] must be a table"):
        parse_profile({**base, "led": {**base["led"], "offline": 4}},  # type: ignore[dict-item]
                      "b.toml")
