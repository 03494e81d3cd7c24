"""LED drivers against plain files in a temp dir (no real LED on CI): pattern, end, extension."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from supervisor.board.led import (
    NullLed,
    SysfsBrightnessLed,
    SysfsTriggerLed,
    make_led,
)
from supervisor.board.profiles import BoardProfile, LedSpec

LIMIT = 30.0  # generous wait for a condition on a loaded machine; never a threshold

Steps = list[tuple[str, float]]


@dataclass
class Request:
    led: str  # the LED file when the pattern asked to sleep
    at: float  # virtual time of the request
    seconds: float
    done: asyncio.Future[None]


class Clock:
    """Injected clock and sleep for the identify pattern: virtual time that only moves when
    the test releases a sleep the pattern asked for. So the test reads the exact sequence of
    (LED value, sleep requested) with no wall clock and no threshold."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.now = 0.0
        self.requests: asyncio.Queue[Request] = asyncio.Queue()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        done = asyncio.get_running_loop().create_future()
        # The tiny read is the point of the test: what the LED shows during this sleep.
        self.requests.put_nowait(Request(self.path.read_text(), self.now, seconds, done))
        await done

    async def next(self) -> Request:
        return await asyncio.wait_for(self.requests.get(), LIMIT)

    def release(self, request: Request) -> tuple[str, float]:
        self.now = request.at + request.seconds
        request.done.set_result(None)
        return request.led, round(request.seconds, 9)

    async def steps(self, count: int) -> Steps:
        return [self.release(await self.next()) for _ in range(count)]


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition()` with a generous limit (a poll, not a timing assumption)."""
    try:
        async with asyncio.timeout(LIMIT):
            while not condition():  # noqa: ASYNC110 - a state to poll, no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def _led_file(tmp_path: Path, initial: str = "0") -> Path:
    path = tmp_path / "brightness"
    path.write_text(initial)
    return path


def _brightness(tmp_path: Path) -> tuple[SysfsBrightnessLed, Clock, Path]:
    path = _led_file(tmp_path)
    clock = Clock(path)
    return SysfsBrightnessLed(str(path), clock=clock.time, identify_sleep=clock.sleep), \
        clock, path


ON, OFF = ("1", 0.2), ("0", 0.2)


def test_blink_toggles_200ms_on_200ms_off_for_the_duration(tmp_path: Path) -> None:
    led, clock, path = _brightness(tmp_path)

    async def scenario() -> Steps:
        await led.blink(1.0)
        seen = await clock.steps(5)
        await _until(lambda: not led.blinking, "the pattern to end")
        return seen

    # 1.0 s = on at 0, 0.4, 0.8 (the last one cut at 1.0), then off for good
    assert asyncio.run(scenario()) == [ON, OFF, ON, OFF, ON]
    assert clock.now == pytest.approx(1.0)
    assert clock.requests.empty()
    assert path.read_text() == "0"


def test_second_blink_extends_instead_of_overlapping(tmp_path: Path) -> None:
    led, clock, path = _brightness(tmp_path)

    async def scenario() -> Steps:
        await led.blink(1.0)
        seen = await clock.steps(1)  # on 0 .. 0.2
        off = await clock.next()  # off 0.2 .. 0.4
        clock.now = 0.3  # off-beat, so a second overlapping pattern would show
        await led.blink(1.0)
        seen.append(clock.release(off))
        seen += await clock.steps(5)
        await _until(lambda: not led.blinking, "the pattern to end")
        return seen

    # ends at 0.3 + 1.0 = 1.3: on at 0, 0.4, 0.8, 1.2 (cut at 1.3) - one pattern, same beat
    assert asyncio.run(scenario()) == [ON, OFF, ON, OFF, ON, OFF, ("1", 0.1)]
    assert clock.now == pytest.approx(1.3)
    assert clock.requests.empty()
    assert path.read_text() == "0"


def test_extension_never_shortens(tmp_path: Path) -> None:
    led, clock, path = _brightness(tmp_path)

    async def scenario() -> Steps:
        await led.blink(1.0)
        await led.blink(0.1)
        seen = await clock.steps(5)
        await _until(lambda: not led.blinking, "the pattern to end")
        return seen

    assert asyncio.run(scenario()) == [ON, OFF, ON, OFF, ON]  # still the full 1.0 s
    assert path.read_text() == "0"


def test_stop_leaves_led_off_and_ends_the_pattern(tmp_path: Path) -> None:
    led, clock, path = _brightness(tmp_path)

    async def scenario() -> Request:
        await led.blink(5.0)
        in_flight = await clock.next()  # inside the first on-phase
        await led.stop()
        assert not led.blinking
        return in_flight

    in_flight = asyncio.run(scenario())
    assert (in_flight.led, in_flight.seconds) == ON
    assert in_flight.done.cancelled()
    assert clock.requests.empty()  # the pattern asked for nothing more
    assert path.read_text() == "0"


def test_blink_returns_immediately(tmp_path: Path) -> None:
    led = SysfsBrightnessLed(str(_led_file(tmp_path)))

    async def scenario() -> bool:
        await led.blink(3.0)
        # returned with the pattern still running: blink did not wait for the 3 s
        running = led.blinking
        await led.stop()
        return running

    assert asyncio.run(scenario())


def test_active_low_swaps_values_and_ends_high(tmp_path: Path) -> None:
    path = _led_file(tmp_path, "1")
    clock = Clock(path)
    profile = BoardProfile(slug="b", name="b", arch="aarch64",
                           led=LedSpec(driver="sysfs-brightness", file=str(path), active_low=True))
    led = make_led(profile, None, clock=clock.time, identify_sleep=clock.sleep)
    assert isinstance(led, SysfsBrightnessLed)

    async def scenario() -> Steps:
        await led.blink(0.5)
        seen = await clock.steps(3)
        await _until(lambda: not led.blinking, "the pattern to end")
        return seen

    assert asyncio.run(scenario()) == [("0", 0.2), ("1", 0.2), ("0", 0.1)]
    assert path.read_text() == "1"


def test_trigger_led_switches_triggers(tmp_path: Path) -> None:
    trigger = tmp_path / "trigger"
    trigger.write_text("none")
    clock = Clock(trigger)
    led = SysfsTriggerLed(str(trigger), "default-on", "none", clock=clock.time,
                          identify_sleep=clock.sleep)

    async def scenario() -> Steps:
        await led.blink(0.5)
        seen = await clock.steps(3)
        await _until(lambda: not led.blinking, "the pattern to end")
        return seen

    assert asyncio.run(scenario()) == [("default-on", 0.2), ("none", 0.2), ("default-on", 0.1)]
    assert trigger.read_text() == "none"


def test_trigger_led_timer_mode_lets_the_kernel_blink(tmp_path: Path) -> None:
    trigger = tmp_path / "trigger"
    trigger.write_text("none")
    for name in ("delay_on", "delay_off"):
        (tmp_path / name).write_text("500")
    clock = Clock(trigger)
    led = SysfsTriggerLed(str(trigger), "timer", "none", clock=clock.time,
                          identify_sleep=clock.sleep)

    async def scenario() -> Steps:
        await led.blink(0.6)
        seen = await clock.steps(1)
        await _until(lambda: not led.blinking, "the pattern to end")
        return seen

    # one sleep for the whole duration: the kernel blinks, we only switch at both ends
    assert asyncio.run(scenario()) == [("timer", 0.6)]
    assert trigger.read_text() == "none"
    assert (tmp_path / "delay_on").read_text() == "200"
    assert (tmp_path / "delay_off").read_text() == "200"


def test_write_errors_are_logged_once_and_do_not_raise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone = tmp_path / "gone"
    now = 0.0
    slept: list[float] = []

    async def advance(seconds: float) -> None:  # nothing to show: virtual time just moves
        nonlocal now
        slept.append(seconds)
        now += seconds

    led = SysfsBrightnessLed(str(gone), clock=lambda: now, identify_sleep=advance)

    async def scenario() -> None:
        await led.blink(0.5)
        await _until(lambda: not led.blinking, "the pattern to end")

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert len(slept) == 3  # the pattern ran through every failing write
    assert caplog.text.count("Cannot drive the identify LED") == 1
    assert not gone.exists()  # never creates the file


# ---------------------------------------------------------------------------- make_led


def _profile(**led: object) -> BoardProfile:
    return BoardProfile(slug="b", name="b", arch="aarch64", led=LedSpec(**led))  # type: ignore[arg-type]


def test_make_led_uses_first_existing_candidate(tmp_path: Path) -> None:
    second = _led_file(tmp_path)
    led = make_led(_profile(driver="sysfs-brightness", file=str(tmp_path / "ACT"),
                            fallback_files=(str(second),)), None)
    assert isinstance(led, SysfsBrightnessLed)
    assert led.path == str(second)


def test_make_led_missing_file_gives_null_led_with_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        led = make_led(_profile(driver="sysfs-brightness", file=str(tmp_path / "x")), None)
    assert isinstance(led, NullLed)
    assert "does not exist" in caplog.text


def test_make_led_override_replaces_profile_file(tmp_path: Path) -> None:
    path = _led_file(tmp_path)
    led = make_led(_profile(driver="none"), str(path))
    assert isinstance(led, SysfsBrightnessLed)
    assert led.path == str(path)


def test_make_led_override_to_trigger_file(tmp_path: Path) -> None:
    trigger = tmp_path / "trigger"
    trigger.write_text("none")
    led = make_led(_profile(driver="none"), str(trigger))
    assert isinstance(led, SysfsTriggerLed)


def test_make_led_missing_override_gives_null_led(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        led = make_led(_profile(driver="sysfs-brightness", file="/x"), str(tmp_path / "nope"))
    assert isinstance(led, NullLed)
    assert str(tmp_path / "nope") in caplog.text


def test_make_led_dev_null_and_driver_none_are_silent(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert isinstance(make_led(_profile(driver="none"), None), NullLed)
        assert isinstance(make_led(_profile(driver="sysfs-brightness", file="/x"), "/dev/null"),
                          NullLed)
    assert caplog.text == ""


def test_null_led_blink_and_stop_do_nothing() -> None:
    async def scenario() -> set[asyncio.Task[object]]:
        before = asyncio.all_tasks()
        led = NullLed()
        await led.blink(3600.0)
        await led.set_offline(True)
        started = asyncio.all_tasks() - before  # a real LED runs its pattern in a task
        await led.stop()
        return started

    assert asyncio.run(scenario()) == set()
