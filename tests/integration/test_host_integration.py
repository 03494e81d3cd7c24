"""Host integration as the running supervisor drives it (`supervisor/host/integration.py`).

* VPN and avahi: the integration's passes against a fake systemd on a private dbus-daemon
  (dbuskit), the StartUnit/StopUnit calls read from the fake; the rate limit with a clock.
* Firewall: the integration loads the rules into a network namespace the test creates
  (netnskit) and the test reads them back with iptables-save after each target change.
* Connectivity: a real listener the test opens and closes; the LED is a file in tmp_path.
* End to end: a real `balena-supervisor run` process whose API endpoint is a listener the
  test closes and reopens: /v1/healthy, the log and the LED file follow.

Every wait is for a condition, with a generous limit; no test sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from supervisor.board.led import NullLed, SysfsBrightnessLed
from supervisor.host.connectivity import ConnectivityMonitor
from supervisor.host.firewall import Commands, Firewall
from supervisor.host.integration import HostIntegration
from supervisor.host.systemd import DBusUnits
from supervisor.model.target import TargetState
from supervisor.settings import Settings, load_settings
from tests.builders import make_app, make_service, make_target
from tests.integration import netnskit
from tests.integration.dbuskit import FakeSystemd, private_bus
from tests.integration.netnskit import NetnsPair
from tests.integration.supervisor_proc import SupervisorProc, free_port, local_target
from tests.integration.test_firewall_netns import API, OTHER, chain, expected_chain, reach

OPENVPN = "openvpn.service"
AVAHI = ("avahi-daemon.service", "avahi-daemon.socket")
LIMIT = 60.0  # generous limit for a condition on a loaded machine; never a threshold
UUID = "e" * 32


def settings(tmp_path: Path, *, managed: bool = True, port: int = API) -> Settings:
    boot = tmp_path / "boot"
    boot.mkdir(exist_ok=True)
    config: dict[str, Any] = {"uuid": UUID}
    if managed:
        config.update(apiEndpoint="http://127.0.0.1:9", deviceApiKey="k", deviceId=1,
                      registered_at=1)
    (boot / "config.json").write_text(json.dumps(config))
    return load_settings({
        "data_dir": str(tmp_path / "data"), "boot_dir": str(boot),
        "state_dir": str(tmp_path / "state"), "locks_dir": str(tmp_path / "locks"),
        "listen": f"127.0.0.1:{port}", "host_actions": "dry-run", "firewall": "dry-run",
        "vpn_status_dir": str(tmp_path / "vpn_status")}, {})


def with_config(target: TargetState, **config: str) -> TargetState:
    return replace(target, config=dict(config))


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------- VPN and avahi


@pytest.fixture
def systemd() -> Iterator[tuple[FakeSystemd, str]]:
    with private_bus() as bus, FakeSystemd(bus, {OPENVPN: "inactive", AVAHI[0]: "active",
                                                 AVAHI[1]: "active"}) as fake:
        yield fake, bus


def test_vpn_and_avahi_follow_the_target(tmp_path: Path,
                                         systemd: tuple[FakeSystemd, str]) -> None:
    fake, bus = systemd
    clock = Clock()
    host = HostIntegration(settings(tmp_path), NullLed(), clock=clock)
    host.bind(None, units=DBusUnits(bus))
    empty = make_target()

    async def scenario() -> None:
        # Boot with the VPN off in the target: forced on at the first pass, then the
        # target's value. avahi follows HOST_DISCOVERABILITY's default (true).
        host.observe(with_config(empty, SUPERVISOR_VPN_CONTROL="false"), False)
        assert await host.apply_once() == 0.0  # switched: check again
        assert fake.switches() == [("StartUnit", (AVAHI[0], "fail")),
                                   ("StartUnit", (AVAHI[1], "fail")),
                                   ("StartUnit", (OPENVPN, "fail"))]
        assert await host.apply_once() == 0.0  # boot's "on" settled: now the target's "off"
        assert await host.apply_once() == 0.0
        assert await host.apply_once() is None  # settled
        assert fake.switches()[3:] == [("StopUnit", (OPENVPN, "fail"))]
        assert fake.units[OPENVPN] == "inactive"
        fake.calls.clear()

        # The cloud switches avahi off: its units are stopped, the VPN stays off.
        host.observe(with_config(empty, SUPERVISOR_VPN_CONTROL="false",
                                 HOST_DISCOVERABILITY="false"), False)
        assert await host.apply_once() is None
        assert fake.switches() == [("StopUnit", (AVAHI[0], "fail")),
                                   ("StopUnit", (AVAHI[1], "fail"))]
        fake.calls.clear()

        # VPN on again; openvpn does not stay up, so the switch is wanted again at once:
        # the rate limit holds it for an hour, then it is attempted again.
        host.observe(with_config(empty, BALENA_SUPERVISOR_VPN_CONTROL="true",
                                 HOST_DISCOVERABILITY="false"), False)
        assert await host.apply_once() == 0.0
        fake.units[OPENVPN] = "inactive"
        clock.now += 60
        assert await host.apply_once() == 3600 - 60  # rate-limited: retry when the hour ends
        clock.now += 3600 - 61
        assert await host.apply_once() == 1
        assert fake.switches() == [("StartUnit", (OPENVPN, "fail"))]
        clock.now += 1
        assert await host.apply_once() == 0.0
        assert fake.switches() == [("StartUnit", (OPENVPN, "fail"))] * 2
        assert await host.apply_once() is None

    asyncio.run(scenario())


def test_unmanaged_devices_leave_the_vpn_alone(tmp_path: Path,
                                               systemd: tuple[FakeSystemd, str]) -> None:
    fake, bus = systemd
    host = HostIntegration(settings(tmp_path, managed=False), NullLed())
    host.bind(None, units=DBusUnits(bus))
    host.observe(with_config(make_target(), SUPERVISOR_VPN_CONTROL="false"), True)
    assert asyncio.run(host.apply_once()) is None
    assert [call for call in fake.switches() if call[1][0] == OPENVPN] == []
    assert fake.units[OPENVPN] == "inactive"


def test_dry_run_units_record_and_never_reach_the_bus(
        tmp_path: Path, systemd: tuple[FakeSystemd, str]) -> None:
    from supervisor.host.actions import DryRunHostActions

    fake, _bus = systemd
    recorded: list[tuple[str, dict[str, Any]]] = []

    async def record(action: str, details: dict[str, Any]) -> None:
        recorded.append((action, details))

    host = HostIntegration(settings(tmp_path), NullLed())
    host.bind(DryRunHostActions(record), record)
    host.observe(make_target(), False)

    async def scenario() -> None:
        while await host.apply_once() is not None:
            pass

    asyncio.run(scenario())
    assert recorded == [("start-unit", {"unit": AVAHI[0]}), ("start-unit", {"unit": AVAHI[1]}),
                        ("start-unit", {"unit": OPENVPN})]
    assert fake.calls == []


# ---------------------------------------------------------------------------- firewall


def test_the_firewall_follows_mode_local_mode_and_target(tmp_path: Path) -> None:
    netnskit.require_netns()
    host_net = make_target([make_app(1, [make_service("main", network_mode="host")])])
    bridged = make_target([make_app(1, [make_service("main")])])
    with NetnsPair(device_if="eth1") as pair:
        pair.serve(API, OTHER)
        host = HostIntegration(settings(tmp_path),
                               NullLed(), firewall=Firewall(True, Commands(prefix=pair.prefix())))

        def applied(target: TargetState, local: bool) -> tuple[list[str], list[str]]:
            host.observe(target, local)
            asyncio.run(host.apply_once())
            assert host.firewall_result is not None and host.firewall_result.applied
            return (chain(pair.exec(pair.device, "iptables-save", "-t", "filter"),
                          "BALENA-FIREWALL"),
                    chain(pair.exec(pair.device, "ip6tables-save", "-t", "filter"),
                          "BALENA-FIREWALL"))

        # auto, managed, no host-network service: the host stays open, the API does not.
        assert applied(with_config(bridged, HOST_FIREWALL_MODE="auto"), False) == (
            expected_chain(4, local=False, returns=True),
            expected_chain(6, local=False, returns=True))
        assert reach(pair, OTHER) == ("ok", "ok")
        assert reach(pair, API) == ("refused", "refused")

        # the same inputs again: nothing is loaded again
        result = host.firewall_result
        host.observe(with_config(bridged, HOST_FIREWALL_MODE="auto"), False)
        asyncio.run(host.apply_once())
        assert host.firewall_result is result

        # a host-network service arrives: auto closes the host
        closing = with_config(host_net, HOST_FIREWALL_MODE="auto")
        assert applied(closing, False) == (
            expected_chain(4, local=False, returns=False),
            expected_chain(6, local=False, returns=False))
        assert reach(pair, OTHER) == ("refused", "refused")

        # local mode (the same target object) opens the API on every interface
        assert applied(closing, True)[0] == expected_chain(4, local=True, returns=False)
        assert reach(pair, API) == ("ok", "ok")

        # mode off (the variable removed): the host opens again, the API rules stay
        assert applied(host_net, False)[0] == expected_chain(4, local=False, returns=True)
        assert reach(pair, OTHER) == ("ok", "ok")
        assert reach(pair, API) == ("refused", "refused")


# ---------------------------------------------------------------------------- connectivity


class Listener:
    """A TCP listener on 127.0.0.1 standing in for the cloud's API host: accepts, closes."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def open(self) -> Listener:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def wait_until(condition: Callable[[], bool], what: str, log: Callable[[], str] = str,
               limit: float = LIMIT, every: float = 0.02) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


async def async_until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(LIMIT):
            while not condition():  # noqa: ASYNC110 - a state to poll, no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_connectivity_drives_the_led_and_the_health(tmp_path: Path) -> None:
    cloud = Listener().open()
    led_file = tmp_path / "brightness"
    led_file.write_text("0")
    led = SysfsBrightnessLed(str(led_file))
    monitor = ConnectivityMonitor(f"http://127.0.0.1:{cloud.port}",
                                  vpn_status_dir=tmp_path / "vpn_status", interval=0.05)
    host = HostIntegration(settings(tmp_path), led, monitor=monitor)
    seen: set[str] = set()

    def led_on() -> bool:
        seen.add(led_file.read_text())
        return "1" in seen

    async def scenario() -> list[tuple[bool, str]]:
        host.observe(make_target(), False)
        task = asyncio.create_task(host.run())
        await async_until(lambda: monitor.online is True, "the first check")
        health = [host.health()]
        cloud.close()
        await async_until(lambda: not host.health()[0], "unhealthy while the cloud is gone")
        health.append(host.health())
        await async_until(led_on, "the offline pattern on the LED file")
        assert led.offline_blinking

        # SUPERVISOR_CONNECTIVITY_CHECK=false: healthy and no pattern, though still offline
        host.observe(with_config(make_target(), SUPERVISOR_CONNECTIVITY_CHECK="false"), False)
        await async_until(lambda: host.health()[0] and not led.offline_blinking,
                          "the check disabled")
        assert led_file.read_text() == "0"
        host.observe(make_target(), False)
        await async_until(lambda: led.offline_blinking, "the check enabled again")

        cloud.open()  # the same port: the cloud is back
        await async_until(lambda: host.health()[0], "healthy again")
        await async_until(lambda: not led.offline_blinking, "the pattern to stop")
        assert led_file.read_text() == "0"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return health

    try:
        health = asyncio.run(scenario())
    finally:
        cloud.close()
    assert health == [(True, ""), (False, f"the cloud API host 127.0.0.1:{cloud.port} is "
                                          "unreachable (connectivity check)")]


class ManagedProc(SupervisorProc):
    """A managed device (provisioned already) whose API endpoint is the test's listener."""

    def __init__(self, root: Path, api_port: int) -> None:
        super().__init__(root, config={
            "uuid": UUID, "apiEndpoint": f"http://127.0.0.1:{api_port}", "deviceApiKey": "k",
            "deviceId": 1, "registered_at": 1, "deviceType": "generic-amd64"})
        self.led = root / "led"
        self.led.write_text("0")

    def args(self) -> list[str]:
        return [*super().args(), "--led-file", str(self.led)]


def test_a_supervisor_process_shows_the_cloud_going_away(tmp_path: Path) -> None:
    cloud = Listener(free_port()).open()
    proc = ManagedProc(tmp_path / "sup", cloud.port)
    seen: set[str] = set()

    def healthy() -> int:
        return proc.client.get("/v1/healthy").status_code

    def led_on() -> bool:
        seen.add(proc.led.read_text())
        return "1" in seen

    try:
        proc.start()
        proc.wait_for(lambda: "Internet Connectivity: OK" in proc.log(tail=None),
                      what="the first connectivity check")
        # the host features were applied at start: VPN forced on (managed), avahi, firewall
        proc.wait_for(lambda: all(line in proc.log(tail=None) for line in (
            "Dry run: would start openvpn.service", "Dry run: would start avahi-daemon.socket",
            "Applying firewall mode: off")), what="the host features applied at start")
        assert healthy() == 200 and proc.led.read_text() == "0"

        cloud.close()
        proc.wait_for(lambda: healthy() == 500, what="unhealthy while the cloud is gone")
        assert (f"Healthcheck failed: the cloud API host 127.0.0.1:{cloud.port} is "
                "unreachable (connectivity check)") in proc.log(tail=None)
        wait_until(led_on, "the offline pattern on the LED file", proc.log)
        assert "LED offline pattern started" in proc.log(tail=None)

        cloud.open()
        proc.wait_for(lambda: healthy() == 200, what="healthy again")
        assert proc.log(tail=None).count("Internet Connectivity: OK") == 2
        # logged once the pattern task has ended with the LED off: nothing writes it after
        proc.wait_for(lambda: "LED offline pattern stopped" in proc.log(tail=None),
                      what="the pattern to stop")
        assert proc.led.read_text() == "0"
    finally:
        proc.stop()
        cloud.close()


def test_a_supervisor_process_applies_the_host_features_on_target_change(
        tmp_path: Path) -> None:
    proc = SupervisorProc(tmp_path / "sup")  # unmanaged: local mode, no VPN, no check
    try:
        proc.start()
        proc.wait_for(lambda: "Applying firewall mode: off" in proc.log(tail=None),
                      what="the firewall applied at start")
        target = local_target({})
        target["local"]["config"] = {"HOST_FIREWALL_MODE": "on",
                                     "BALENA_HOST_DISCOVERABILITY": "false"}
        assert proc.post_target(target).status_code == 200
        proc.wait_for(lambda: all(line in proc.log(tail=None) for line in (
            "Applying firewall mode: on", "Dry run: would stop avahi-daemon.service")),
            what="the new config applied")
        assert "openvpn" not in proc.log(tail=None)
    finally:
        proc.stop()
