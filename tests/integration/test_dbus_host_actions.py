"""Host actions over a real, private dbus-daemon with fake logind/systemd objects on it.

No skip: `dbus-daemon` (Debian package `dbus`) must be installed. The fake owns
`org.freedesktop.login1` and `org.freedesktop.systemd1` on the private bus and records calls.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jeepney import (
    DBusNameFlags,
    HeaderFields,
    Message,
    MessageType,
    new_error,
    new_method_return,
)
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection
from jeepney.wrappers import unwrap_msg

from supervisor.errors import ConfigError, SupervisorError
from supervisor.host.actions import (
    DryRunHostActions,
    LogindHostActions,
    choose_host_actions,
    restart_host_services,
)
from supervisor.host.dbus import DBusCallError

# a private dbus-daemon, no Docker: these run (and fail) without the engine
pytestmark = pytest.mark.no_engine

LOGIN1 = ("org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager")
SYSTEMD1 = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager")
UNIT_PREFIX = "/org/freedesktop/systemd1/unit/"


def _unit_path(unit: str) -> str:
    """systemd's object path for a unit: bytes outside [A-Za-z0-9] become _XX."""
    return UNIT_PREFIX + "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}"
                                 for c in unit)


def _start_bus(folder: Path) -> tuple[subprocess.Popen[str], str]:
    exe = shutil.which("dbus-daemon")
    assert exe, "dbus-daemon is missing: install the Debian package `dbus`"
    proc = subprocess.Popen(
        [exe, "--session", "--nofork", "--print-address", f"--address=unix:path={folder}/bus"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    assert address.startswith("unix:"), f"dbus-daemon did not start: {address!r}"
    return proc, address


@pytest.fixture
def bus_address() -> Iterator[str]:
    # A short private path: unix socket paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="dbus-") as folder:
        proc, address = _start_bus(Path(folder))
        try:
            yield address
        finally:
            proc.terminate()
            proc.wait(timeout=10)


class FakeHost(threading.Thread):
    """Owns login1 + systemd1 on the bus; answers and records method calls."""

    def __init__(self, address: str, units: dict[str, list[str]] | None = None) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.units = units or {}  # loaded unit -> its PartOf list
        self.calls: list[tuple[str, str, str, str, tuple[Any, ...]]] = []
        self.ready = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        with open_dbus_connection(self.address) as conn:
            for name in (LOGIN1[0], SYSTEMD1[0]):
                reply = conn.send_and_get_reply(
                    message_bus.RequestName(name, DBusNameFlags.do_not_queue), timeout=5)
                assert unwrap_msg(reply) == (1,)  # primary owner
            self.ready.set()
            while not self.done.is_set():
                try:
                    msg = conn.receive(timeout=0.05)
                except TimeoutError:
                    continue
                if msg.header.message_type == MessageType.method_call:
                    conn.send(self.handle(msg))

    def handle(self, msg: Message) -> Message:
        f = msg.header.fields
        dest, path = f.get(HeaderFields.destination), f.get(HeaderFields.path)
        iface, member = f.get(HeaderFields.interface), f.get(HeaderFields.member)
        self.calls.append((dest, path, iface, member, tuple(msg.body)))
        if (dest, path, iface) == LOGIN1 and member in ("Reboot", "PowerOff"):
            return new_method_return(msg)
        if (dest, path, iface) == SYSTEMD1:
            unit = msg.body[0]
            if member == "GetUnit":
                if unit not in self.units:
                    return new_error(msg, "org.freedesktop.systemd1.NoSuchUnit", "s",
                                     (f"Unit {unit} not loaded.",))
                return new_method_return(msg, "o", (_unit_path(unit),))
            if member in ("RestartUnit", "StartUnit", "StopUnit"):
                if unit not in self.units:
                    return new_error(msg, "org.freedesktop.systemd1.NoSuchUnit", "s",
                                     (f"Unit {unit} not found.",))
                return new_method_return(msg, "o", ("/org/freedesktop/systemd1/job/7",))
        if iface == "org.freedesktop.DBus.Properties" and str(path).startswith(UNIT_PREFIX):
            paths = {_unit_path(u): u for u in self.units}
            if path in paths and msg.body == ("org.freedesktop.systemd1.Unit", "PartOf"):
                return new_method_return(msg, "v", (("as", self.units[paths[path]]),))
        return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (str(member),))

    def methods(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(member, body) for _, _, _, member, body in self.calls]


@pytest.fixture
def host(bus_address: str) -> Iterator[FakeHost]:
    fake = FakeHost(bus_address, units={
        "redsocks.service": [],
        "resin-proxy-config.service": [],
        "avahi-daemon.service": [],
        "avahi-daemon.socket": [],
    })
    fake.start()
    assert fake.ready.wait(10), "fake logind/systemd did not come up"
    yield fake
    fake.done.set()
    fake.join(timeout=5)


def test_reboot_calls_logind_reboot_false(host: FakeHost, bus_address: str) -> None:
    asyncio.run(LogindHostActions(bus_address).reboot())
    assert host.calls == [(*LOGIN1, "Reboot", (False,))]


def test_shutdown_calls_logind_poweroff_false(host: FakeHost, bus_address: str) -> None:
    asyncio.run(LogindHostActions(bus_address).shutdown())
    assert host.calls == [(*LOGIN1, "PowerOff", (False,))]


def test_restart_service_calls_systemd_restart_unit(host: FakeHost, bus_address: str) -> None:
    asyncio.run(LogindHostActions(bus_address).restart_service("redsocks"))
    assert host.calls == [(*SYSTEMD1, "RestartUnit", ("redsocks.service", "fail"))]


def test_start_and_stop_units(host: FakeHost, bus_address: str) -> None:
    async def scenario() -> None:
        actions = LogindHostActions(bus_address)
        await actions.start_service("avahi-daemon")
        await actions.start_service("avahi-daemon.socket")
        await actions.stop_service("avahi-daemon.socket")

    asyncio.run(scenario())
    assert host.methods() == [("StartUnit", ("avahi-daemon.service", "fail")),
                              ("StartUnit", ("avahi-daemon.socket", "fail")),
                              ("StopUnit", ("avahi-daemon.socket", "fail"))]


def test_unit_part_of(bus_address: str) -> None:
    fake = FakeHost(bus_address, units={"redsocks.service": ["redsocks-conf.target"]})
    fake.start()
    assert fake.ready.wait(10)
    try:
        async def scenario() -> tuple[tuple[str, ...], tuple[str, ...]]:
            actions = LogindHostActions(bus_address)
            return await actions.unit_part_of("redsocks"), await actions.unit_part_of("nope")

        assert asyncio.run(scenario()) == (("redsocks-conf.target",), ())
    finally:
        fake.done.set()
        fake.join(timeout=5)


def test_systemd_errors_surface_as_supervisor_errors(host: FakeHost, bus_address: str) -> None:
    with pytest.raises(DBusCallError) as err:
        asyncio.run(LogindHostActions(bus_address).restart_service("missing"))
    assert isinstance(err.value, SupervisorError)
    assert err.value.name == "org.freedesktop.systemd1.NoSuchUnit"
    assert "RestartUnit" in err.value.message


def test_reboot_without_logind_fails_clearly(bus_address: str) -> None:
    with pytest.raises(DBusCallError, match="Reboot"):
        asyncio.run(LogindHostActions(bus_address).reboot())


def test_unreachable_bus_fails_fast(tmp_path: Path) -> None:
    # an error, not a retry loop: the generous limit only turns a hang into a failure
    with pytest.raises(DBusCallError):
        asyncio.run(asyncio.wait_for(
            LogindHostActions(f"unix:path={tmp_path}/no-bus").reboot(), 60))


def test_restart_host_services_falls_back_to_resin_name(host: FakeHost,
                                                        bus_address: str) -> None:
    asyncio.run(restart_host_services(LogindHostActions(bus_address),
                                      ["balena-proxy-config", "redsocks"]))
    restarts = [body for member, body in host.methods() if member == "RestartUnit"]
    assert restarts == [("balena-proxy-config.service", "fail"),
                        ("resin-proxy-config.service", "fail"),
                        ("redsocks.service", "fail")]


def test_restart_host_services_skips_units_part_of_redsocks_conf_target(
        bus_address: str) -> None:
    fake = FakeHost(bus_address, units={
        "balena-proxy-config.service": ["redsocks-conf.target"],
        "redsocks.service": ["redsocks-conf.target", "multi-user.target"]})
    fake.start()
    assert fake.ready.wait(10)
    try:
        asyncio.run(restart_host_services(LogindHostActions(bus_address),
                                          ["balena-proxy-config", "redsocks"]))
        assert [m for m, _ in fake.methods() if m == "RestartUnit"] == []
        assert [m for m, _ in fake.methods()].count("GetUnit") == 2
    finally:
        fake.done.set()
        fake.join(timeout=5)


def test_restart_host_services_reports_when_no_name_works(host: FakeHost,
                                                          bus_address: str) -> None:
    with pytest.raises(SupervisorError, match="Could not restart ghost"):
        asyncio.run(restart_host_services(LogindHostActions(bus_address), ["ghost"]))


def test_auto_picks_logind_when_it_answers(host: FakeHost, bus_address: str) -> None:
    actions = choose_host_actions("auto", bus_address)
    assert isinstance(actions, LogindHostActions)
    assert actions.bus_address == bus_address


def test_auto_falls_back_to_dry_run_without_logind(bus_address: str) -> None:
    assert isinstance(choose_host_actions("auto", bus_address), DryRunHostActions)


def test_auto_falls_back_to_dry_run_without_a_bus(tmp_path: Path) -> None:
    assert isinstance(choose_host_actions("auto", f"unix:path={tmp_path}/x"), DryRunHostActions)


def test_explicit_choices() -> None:
    assert isinstance(choose_host_actions("systemd", None), LogindHostActions)
    assert isinstance(choose_host_actions("dry-run", None), DryRunHostActions)
    with pytest.raises(ConfigError, match="reboot-o-matic"):
        choose_host_actions("reboot-o-matic", None)


def test_dry_run_records_and_touches_nothing(host: FakeHost, bus_address: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    recorded: list[tuple[str, dict[str, Any]]] = []

    async def record(action: str, details: dict[str, Any]) -> None:
        recorded.append((action, details))

    async def scenario() -> tuple[str, ...]:
        actions = choose_host_actions("dry-run", bus_address, record)
        await actions.reboot()
        await actions.shutdown()
        await actions.restart_service("redsocks")
        await restart_host_services(actions, ["balena-proxy-config"])
        return await actions.unit_part_of("redsocks")

    with caplog.at_level("INFO"):
        assert asyncio.run(scenario()) == ()
    assert recorded == [("reboot", {}), ("shutdown", {}),
                        ("restart-service", {"unit": "redsocks.service"}),
                        ("restart-service", {"unit": "balena-proxy-config.service"})]
    assert "Dry run: would reboot" in caplog.text
    assert host.calls == []  # nothing reached the bus


def test_dry_run_without_recorder(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        asyncio.run(DryRunHostActions().reboot())
    assert "Dry run: would reboot" in caplog.text
