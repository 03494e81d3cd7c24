"""VPN control and host discoverability against a fake systemd on a private dbus-daemon.

The fake (dbuskit.FakeSystemd) records every call; the tests check that our D-Bus backend made
exactly the StartUnit/StopUnit calls config.md §5/§11 asks for, and that the one-hour VPN rate
limit holds. Time is an injected clock, never a sleep.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from supervisor.host.actions import DryRunHostActions, LogindHostActions
from supervisor.host.dbus import DBusCallError
from supervisor.host.systemd import (
    DBusUnits,
    Discoverability,
    DryRunUnits,
    VpnControl,
    units_for,
    vpn_target,
)
from tests.integration.dbuskit import FakeSystemd, private_bus

# a private dbus-daemon, no Docker: these run (and fail) without the engine
pytestmark = pytest.mark.no_engine

OPENVPN = "openvpn.service"
AVAHI = "avahi-daemon.service"
AVAHI_SOCKET = "avahi-daemon.socket"


@pytest.fixture
def bus() -> Iterator[str]:
    with private_bus() as address:
        yield address


@pytest.fixture
def systemd(bus: str) -> Iterator[FakeSystemd]:
    with FakeSystemd(bus, {OPENVPN: "inactive", AVAHI: "active",
                           AVAHI_SOCKET: "active"}) as fake:
        yield fake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_units_start_stop_and_state(systemd: FakeSystemd, bus: str) -> None:
    async def scenario() -> list[str | None]:
        units = DBusUnits(bus)
        seen = [await units.active_state(OPENVPN)]
        await units.start(OPENVPN)
        seen.append(await units.active_state(OPENVPN))
        await units.stop(OPENVPN)
        seen.append(await units.active_state(OPENVPN))
        seen.append(await units.active_state("nope.service"))
        return seen

    assert asyncio.run(scenario()) == ["inactive", "active", "inactive", None]
    assert systemd.switches() == [("StartUnit", (OPENVPN, "fail")),
                                  ("StopUnit", (OPENVPN, "fail"))]


def test_vpn_forced_on_at_first_apply_then_rate_limited(systemd: FakeSystemd,
                                                        bus: str) -> None:
    clock = Clock()
    vpn = VpnControl(DBusUnits(bus), clock=clock)

    async def round_(raw: str | None, *, initial: bool = False) -> str | None:
        """One apply round as the reconciler will run it."""
        current = await vpn.current()
        target = vpn_target(raw, initial=initial)
        step = vpn.step(current, target, managed=True)
        if step == "set":
            await vpn.set_enabled(target == "true")
        return step

    async def scenario() -> list[str | None]:
        start = clock.now
        steps = [await round_("false", initial=True)]  # first apply: forced on
        steps.append(await round_("true"))  # converged: nothing to do
        clock.now = start + 60
        steps.append(await round_("false"))  # a minute after the last attempt: held
        clock.now = start + 3599
        steps.append(await round_("false"))  # 59:59 after: still held
        clock.now = start + 3600
        steps.append(await round_("false"))  # one hour: switched
        steps.append(await round_("false"))  # converged
        steps.append(await round_(None))  # unset means on, but the hour is not over
        vpn.reset_rate_limit()  # a successful apply resets the limit
        steps.append(await round_(None))
        return steps

    assert asyncio.run(scenario()) == ["set", None, "noop", "noop", "set", None, "noop", "set"]
    assert systemd.switches() == [("StartUnit", (OPENVPN, "fail")),
                                  ("StopUnit", (OPENVPN, "fail")),
                                  ("StartUnit", (OPENVPN, "fail"))]


def test_vpn_left_alone_on_unmanaged_devices_and_empty_targets(systemd: FakeSystemd,
                                                               bus: str) -> None:
    vpn = VpnControl(DBusUnits(bus), clock=Clock())
    current = asyncio.run(vpn.current())
    assert current is False
    assert vpn.step(current, "true", managed=False) is None
    assert vpn.step(current, "", managed=True) is None
    assert vpn.step(current, "0", managed=True) is None
    assert vpn.step(current, "On", managed=True) == "set"  # upstream's checkTruthy
    assert systemd.switches() == []


def test_vpn_unit_not_loaded_is_off(bus: str) -> None:
    with FakeSystemd(bus, {}) as fake:
        assert asyncio.run(VpnControl(DBusUnits(bus)).current()) is False
    assert [m for m, _ in fake.calls] == ["GetUnit"]


@pytest.mark.parametrize(("state", "enabled"), [
    ("active", True), ("activating", True), ("reloading", True), ("failed", True),
    ("inactive", False), ("deactivating", False)])
def test_vpn_current_from_active_state(bus: str, state: str, enabled: bool) -> None:
    with FakeSystemd(bus, {OPENVPN: state}):
        assert asyncio.run(VpnControl(DBusUnits(bus)).current()) is enabled


def test_discoverability_at_start_and_on_change(systemd: FakeSystemd, bus: str) -> None:
    avahi = Discoverability(DBusUnits(bus))

    async def scenario() -> list[bool]:
        return [await avahi.apply(True), await avahi.apply(True), await avahi.apply(False),
                await avahi.apply(False), await avahi.apply(True)]

    assert asyncio.run(scenario()) == [True] * 5
    assert systemd.switches() == [
        ("StartUnit", (AVAHI, "fail")), ("StartUnit", (AVAHI_SOCKET, "fail")),  # at start
        ("StopUnit", (AVAHI, "fail")), ("StopUnit", (AVAHI_SOCKET, "fail")),
        ("StartUnit", (AVAHI, "fail")), ("StartUnit", (AVAHI_SOCKET, "fail"))]


def test_discoverability_failure_is_logged_and_retried(bus: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    with FakeSystemd(bus, {}) as fake:  # avahi not installed on this host
        avahi = Discoverability(DBusUnits(bus))
        with caplog.at_level(logging.ERROR, logger="supervisor.host.systemd"):
            first = asyncio.run(avahi.apply(False))
            second = asyncio.run(avahi.apply(False))
    assert (first, second) == (False, False)
    assert caplog.text.count("There was an error switching host discoverability") == 2
    assert fake.switches() == [("StopUnit", (AVAHI, "fail"))] * 2


def test_a_silent_systemd_times_out(bus: str) -> None:
    with FakeSystemd(bus, {OPENVPN: "inactive"}, silent=("StartUnit",)) as fake, \
            pytest.raises(DBusCallError, match=re.escape("StartUnit timed out after 0.3 s")):
        asyncio.run(DBusUnits(bus, timeout=0.3).start(OPENVPN))
    assert fake.switches() == [("StartUnit", (OPENVPN, "fail"))]


def test_units_follow_host_actions(systemd: FakeSystemd, bus: str) -> None:
    recorded: list[tuple[str, dict[str, Any]]] = []

    async def record(action: str, details: dict[str, Any]) -> None:
        recorded.append((action, details))

    real = units_for(LogindHostActions(bus), bus)
    assert isinstance(real, DBusUnits) and real.bus_address == bus
    dry = units_for(DryRunHostActions(), bus, record)
    assert isinstance(dry, DryRunUnits)

    async def scenario() -> list[str | None]:
        vpn, avahi = VpnControl(dry, clock=Clock()), Discoverability(dry)
        before = await vpn.current()  # nothing pretended yet: not loaded
        assert vpn.step(before, "true", managed=True) == "set"
        await vpn.set_enabled(True)
        await avahi.apply(False)
        return [await dry.active_state(OPENVPN), await dry.active_state(AVAHI)]

    assert asyncio.run(scenario()) == ["active", "inactive"]
    assert recorded == [("start-unit", {"unit": OPENVPN}), ("stop-unit", {"unit": AVAHI}),
                        ("stop-unit", {"unit": AVAHI_SOCKET})]
    assert systemd.calls == []  # the dry run never reached the bus
