"""LED drivers against plain files in a temp dir (no real LED on CI): pattern, end, extension."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from supervisor.board.led import (
    NullLed,
    SysfsBrightnessLed,
    SysfsTriggerLed,
    make_led,
)
from supervisor.board.profiles import BoardProfile, LedSpec

TOL = 0.09  # scheduling slack on a busy 2-core CI machine

Changes = list[tuple[float, str]]


async def _record(path: Path, action: Callable[[], Awaitable[None]], watch: float) -> Changes:
    """Run `action`, then poll `path` every 5 ms for `watch` s; return (time, value) changes."""
    changes: Changes = []
    t0 = time.monotonic()
    await action()
    last = None
    while (now := time.monotonic()) - t0 < watch:
        # A thread hop per sample would blur the timing we measure; the file is tiny.
        value = path.read_text()  # noqa: ASYNC240
        if value and value != last:  # "" = caught between truncate and write
            changes.append((now - t0, value))
            last = value
        await asyncio.sleep(0.005)
    return changes


def _phases(changes: Changes, on: str) -> list[tuple[float, float]]:
    """(start, end) of every on-phase."""
    spans, start = [], None
    for t, value in changes:
        if value == on and start is None:
            start = t
        elif value != on and start is not None:
            spans.append((start, t))
            start = None
    assert start is None, "LED left on"
    return spans


def _led_file(tmp_path: Path, initial: str = "0") -> Path:
    path = tmp_path / "brightness"
    path.write_text(initial)
    return path


def test_blink_toggles_200ms_on_200ms_off_for_the_duration(tmp_path: Path) -> None:
    path = _led_file(tmp_path)
    led = SysfsBrightnessLed(str(path))

    async def scenario() -> Changes:
        return await _record(path, lambda: led.blink(1.0), watch=1.6)

    changes = asyncio.run(scenario())
    spans = _phases(changes, "1")
    # 1.0 s = on at 0, 0.4, 0.8 (the last one cut at 1.0)
    assert len(spans) == 3
    for start, end in spans:
        assert end - start == pytest.approx(0.2, abs=TOL)
    starts = [s for s, _ in spans]
    assert [b - a for a, b in itertools.pairwise(starts)] == \
        [pytest.approx(0.4, abs=TOL)] * 2
    assert spans[0][0] < TOL
    assert spans[-1][1] == pytest.approx(1.0, abs=TOL)
    assert changes[-1][1] == "0"
    assert path.read_text() == "0"


def test_second_blink_extends_instead_of_overlapping(tmp_path: Path) -> None:
    path = _led_file(tmp_path)
    led = SysfsBrightnessLed(str(path))

    async def scenario() -> Changes:
        async def start_then_extend() -> None:
            await led.blink(1.0)
            # 0.3 s: off-beat, so a second overlapping pattern would show in the file
            asyncio.get_running_loop().call_later(
                0.3, lambda: asyncio.ensure_future(led.blink(1.0)))
        return await _record(path, start_then_extend, watch=2.2)

    spans = _phases(asyncio.run(scenario()), "1")
    # ends at 0.3 + 1.0 = 1.3: on at 0, 0.4, 0.8, 1.2 (cut at 1.3) - one pattern, same beat
    assert len(spans) == 4
    starts = [s for s, _ in spans]
    for a, b in itertools.pairwise(starts):
        assert b - a == pytest.approx(0.4, abs=TOL)
    assert spans[-1][1] == pytest.approx(1.3, abs=0.07)
    assert path.read_text() == "0"


def test_extension_never_shortens(tmp_path: Path) -> None:
    path = _led_file(tmp_path)
    led = SysfsBrightnessLed(str(path))

    async def scenario() -> tuple[Changes, bool]:
        async def long_then_short() -> None:
            await led.blink(1.0)
            await led.blink(0.1)
        changes = await _record(path, long_then_short, watch=0.9)
        still = led.blinking
        await led.stop()
        return changes, still

    changes, still_blinking = asyncio.run(scenario())
    assert still_blinking
    assert len(_phases([*changes, (9.9, "0")], "1")) >= 2


def test_stop_leaves_led_off_and_ends_the_pattern(tmp_path: Path) -> None:
    path = _led_file(tmp_path)
    led = SysfsBrightnessLed(str(path))

    async def scenario() -> Changes:
        await led.blink(5.0)
        await asyncio.sleep(0.1)  # inside the first on-phase
        assert path.read_text() == "1"
        await led.stop()
        assert not led.blinking
        return await _record(path, lambda: asyncio.sleep(0), watch=0.6)

    changes = asyncio.run(scenario())
    assert changes == [(changes[0][0], "0")]


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
    profile = BoardProfile(slug="b", name="b", arch="aarch64",
                           led=LedSpec(driver="sysfs-brightness", file=str(path), active_low=True))
    led = make_led(profile, None)
    assert isinstance(led, SysfsBrightnessLed)

    async def scenario() -> Changes:
        return await _record(path, lambda: led.blink(0.5), watch=0.8)

    changes = asyncio.run(scenario())
    assert [v for _, v in changes][:3] == ["1", "0", "1"]
    assert path.read_text() == "1"


def test_trigger_led_switches_triggers(tmp_path: Path) -> None:
    trigger = tmp_path / "trigger"
    trigger.write_text("none")
    led = SysfsTriggerLed(str(trigger), "default-on", "none")

    async def scenario() -> Changes:
        return await _record(trigger, lambda: led.blink(0.5), watch=0.8)

    changes = asyncio.run(scenario())
    spans = _phases(changes, "default-on")
    assert len(spans) == 2
    assert trigger.read_text() == "none"


def test_trigger_led_timer_mode_lets_the_kernel_blink(tmp_path: Path) -> None:
    trigger = tmp_path / "trigger"
    trigger.write_text("none")
    for name in ("delay_on", "delay_off"):
        (tmp_path / name).write_text("500")
    led = SysfsTriggerLed(str(trigger), "timer", "none")

    async def scenario() -> Changes:
        return await _record(trigger, lambda: led.blink(0.6), watch=1.0)

    changes = asyncio.run(scenario())
    # first sample is the initial value, read before the task gets to run
    assert [v for _, v in changes] == ["none", "timer", "none"]
    assert changes[1][0] < TOL
    assert changes[2][0] == pytest.approx(0.6, abs=TOL)
    assert (tmp_path / "delay_on").read_text() == "200"
    assert (tmp_path / "delay_off").read_text() == "200"


def test_write_errors_are_logged_once_and_do_not_raise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    led = SysfsBrightnessLed(str(tmp_path / "gone"))

    async def scenario() -> None:
        await led.blink(0.5)
        await asyncio.sleep(0.7)

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert caplog.text.count("Cannot drive the identify LED") == 1
    assert not (tmp_path / "gone").exists()  # never creates the file


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
