"""LED drivers: identify (`POST /v1/blink`, via api/actions) and the offline pattern.

The identify pattern is config.md §8: 200 ms on / 200 ms off, repeated for `seconds` (15 by
default), LED left off at the end. A second `blink()` while one runs pushes the end time back
instead of starting a second, overlapping pattern.

The offline pattern (`set_offline(True)`, from the connectivity check) is the board profile's
`[led.offline]`: 4 blinks of 200/200 ms, then 1000 ms dark, repeated until `set_offline(False)`.
Identify wins: it pauses the offline pattern and the offline pattern resumes when it ends, so
the two never write the LED at the same time. (Upstream shared one pattern slot: identify was
ignored while offline, and its end stopped the offline pattern.)

sysfs writes are tiny but still blocking I/O: each LED writes from its own single thread, in
order, so a write still in flight when a pattern is cancelled cannot land after the "off".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from supervisor.board.profiles import DEFAULT_OFFLINE_PATTERN, BoardProfile, OfflinePattern

_LOGGER = logging.getLogger(__name__)

IDENTIFY_SECONDS = 15.0
ON_SECONDS = 0.2
OFF_SECONDS = 0.2

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class Led(Protocol):
    async def blink(self, seconds: float = IDENTIFY_SECONDS) -> None:
        """Start (or extend) the identify pattern and return at once."""
        ...

    async def stop(self) -> None:
        """Stop any running pattern (identify and offline) and leave the LED off."""
        ...

    async def set_offline(self, offline: bool) -> None:
        """Start (True) or stop (False) the offline pattern; returns at once."""
        ...


def _write(path: str, value: str) -> None:
    # No O_CREAT: a vanished sysfs node must fail, not leave a stray regular file behind.
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


class _PatternLed:
    """Runs the identify and offline patterns, one at a time; subclasses switch the LED.

    `sleep` paces the offline pattern; `clock` (default: the loop's) and `identify_sleep`
    pace identify. Tests inject them to step through the patterns without a wall clock."""

    def __init__(self, offline: OfflinePattern = DEFAULT_OFFLINE_PATTERN,
                 sleep: Sleep = asyncio.sleep, clock: Clock | None = None,
                 identify_sleep: Sleep = asyncio.sleep) -> None:
        self._task: asyncio.Task[None] | None = None
        self._until = 0.0
        self._write_failed = False
        self._offline_pattern = offline
        self._sleep = sleep
        self._clock = clock
        self._identify_sleep = identify_sleep
        self._offline = False
        self._offline_task: asyncio.Task[None] | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="led")

    @property
    def blinking(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def offline_blinking(self) -> bool:
        return self._offline_task is not None and not self._offline_task.done()

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def _sleep_until(self, when: float) -> None:
        delay = when - self._now()
        if delay > 0:
            await self._identify_sleep(delay)

    async def blink(self, seconds: float = IDENTIFY_SECONDS) -> None:
        loop = asyncio.get_running_loop()
        self._until = max(self._until, self._now() + seconds)
        if not self.blinking:
            self._task = loop.create_task(self._identify(), name="led-identify")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._until = 0.0
        self._offline = False
        await self._stop_offline()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:
            await self._switch(False)

    async def set_offline(self, offline: bool) -> None:
        changed, self._offline = offline != self._offline, offline
        if not offline:
            await self._stop_offline()
        elif not self.blinking:  # else it starts when identify ends
            self._start_offline()
        if changed:  # logged once the LED is off (stopping): nothing writes it after this
            _LOGGER.info("LED offline pattern %s", "started" if offline else "stopped")

    async def _identify(self) -> None:
        await self._stop_offline()  # identify takes the LED...
        await self._run()
        if self._offline:  # ...and hands it back (not after a cancel: that raised)
            self._start_offline()

    def _start_offline(self) -> None:
        if not self.offline_blinking:
            self._offline_task = asyncio.get_running_loop().create_task(
                self._run_offline(), name="led-offline")

    async def _stop_offline(self) -> None:
        task, self._offline_task = self._offline_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run_offline(self) -> None:
        pattern = self._offline_pattern
        try:
            while True:
                for _ in range(pattern.blinks):
                    await self._switch(True, steady=True)
                    await self._sleep(pattern.on_ms / 1000)
                    await self._switch(False, steady=True)
                    await self._sleep(pattern.off_ms / 1000)
                await self._sleep(pattern.pause_ms / 1000)
        except asyncio.CancelledError:
            await self._switch(False, steady=True)
            raise

    async def _run(self) -> None:
        start, cycle = self._now(), 0
        try:
            # Absolute schedule: thread hops for the writes do not make the period drift.
            # `_until` is re-read after every await, so a blink() meanwhile extends this run.
            while (t_on := start + cycle * (ON_SECONDS + OFF_SECONDS)) < self._until:
                await self._sleep_until(t_on)
                await self._switch(True)
                await self._sleep_until(min(t_on + ON_SECONDS, self._until))
                await self._switch(False)
                cycle += 1
        except asyncio.CancelledError:
            await self._switch(False)
            raise

    async def _switch(self, on: bool, *, steady: bool = False) -> None:
        setter = self._set_steady if steady else self._set
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, setter, on)
        except OSError as err:
            if not self._write_failed:  # once: a broken LED must not flood the log
                _LOGGER.warning("Cannot drive the identify LED: %s", err)
                self._write_failed = True

    def _set(self, on: bool) -> None:
        raise NotImplementedError

    def _set_steady(self, on: bool) -> None:
        """Plain on/off for the offline pattern (never a kernel-driven blink)."""
        self._set(on)


class SysfsBrightnessLed(_PatternLed):
    """Writes `on`/`off` to a brightness file such as /sys/class/leds/ACT/brightness."""

    def __init__(self, path: str, on: str = "1", off: str = "0",
                 offline: OfflinePattern = DEFAULT_OFFLINE_PATTERN,
                 sleep: Sleep = asyncio.sleep, clock: Clock | None = None,
                 identify_sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(offline, sleep, clock, identify_sleep)
        self.path, self.on, self.off = path, on, off

    def _set(self, on: bool) -> None:
        _write(self.path, self.on if on else self.off)


class SysfsTriggerLed(_PatternLed):
    """Switches the LED through its trigger file (e.g. "default-on" / "none").

    With `on_trigger = "timer"` the kernel blinks by itself: delay_on/delay_off next to the
    trigger file get the pattern's 200/200 ms and we only switch the trigger at both ends.
    """

    def __init__(self, path_to_trigger: str, on_trigger: str = "default-on",
                 off_trigger: str = "none", offline: OfflinePattern = DEFAULT_OFFLINE_PATTERN,
                 sleep: Sleep = asyncio.sleep, clock: Clock | None = None,
                 identify_sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(offline, sleep, clock, identify_sleep)
        self.path, self.on_trigger, self.off_trigger = path_to_trigger, on_trigger, off_trigger

    def _set(self, on: bool) -> None:
        if on and self.on_trigger == "timer":
            _write(self.path, "timer")  # creates delay_on/delay_off
            folder = Path(self.path).parent
            _write(str(folder / "delay_on"), str(int(ON_SECONDS * 1000)))
            _write(str(folder / "delay_off"), str(int(OFF_SECONDS * 1000)))
            return
        _write(self.path, self.on_trigger if on else self.off_trigger)

    def _set_steady(self, on: bool) -> None:
        steady_on = "default-on" if self.on_trigger == "timer" else self.on_trigger
        _write(self.path, steady_on if on else self.off_trigger)

    async def _run(self) -> None:
        if self.on_trigger != "timer":
            await super()._run()
            return
        try:
            while self._now() < self._until:
                await self._switch(True)
                # The deadline moves when blink() extends it; re-check after each sleep.
                while (remaining := self._until - self._now()) > 0:
                    await self._identify_sleep(remaining)
                await self._switch(False)
        except asyncio.CancelledError:
            await self._switch(False)
            raise


class NullLed:
    """No LED on this board (or `--led-file /dev/null`): identify is a silent no-op."""

    async def blink(self, seconds: float = IDENTIFY_SECONDS) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def set_offline(self, offline: bool) -> None:
        return None


def make_led(profile: BoardProfile, led_file_override: str | None,
             sleep: Sleep = asyncio.sleep, clock: Clock | None = None,
             identify_sleep: Sleep = asyncio.sleep) -> Led:
    """The LED for this board; `--led-file` replaces the profile's file."""
    spec = profile.led
    if led_file_override == os.devnull:
        return NullLed()
    if led_file_override:
        candidates: tuple[str, ...] = (led_file_override,)
        use_trigger = Path(led_file_override).name == "trigger"
    elif spec.driver == "none":
        return NullLed()
    else:
        candidates = spec.candidates
        use_trigger = spec.driver == "sysfs-trigger"
    path = next((c for c in candidates if Path(c).exists()), None)
    if path is None:
        _LOGGER.warning("LED file %s does not exist; identify will not blink",
                        " or ".join(candidates))
        return NullLed()
    if use_trigger:
        return SysfsTriggerLed(path, spec.on_trigger, spec.off_trigger, spec.offline, sleep,
                               clock, identify_sleep)
    on, off = ("0", "1") if spec.active_low else ("1", "0")
    return SysfsBrightnessLed(path, on=on, off=off, offline=spec.offline, sleep=sleep,
                              clock=clock, identify_sleep=identify_sleep)
