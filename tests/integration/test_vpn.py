"""`GET /v2/device/vpn` (api.md §4.15) of a real supervisor process: `connected` follows the
`active` file of `--vpn-status-dir` (a temp dir), `enabled` follows openvpn.service's
ActiveState, read over D-Bus from a fake systemd on a private dbus-daemon (the process is
given that bus as its system bus)."""

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

from supervisor.host.actions import LogindHostActions
from tests.integration.supervisor_proc import SupervisorProc

SYSTEMD = "org.freedesktop.systemd1"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
UNIT_PATH = "/org/freedesktop/systemd1/unit/openvpn_2eservice"


class FakeSystemd(threading.Thread):
    """Owns org.freedesktop.systemd1: GetUnit, and ActiveState of the units it knows."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.states: dict[str, str] = {}  # loaded unit -> ActiveState
        self.ready = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        with open_dbus_connection(self.address) as conn:
            reply = conn.send_and_get_reply(
                message_bus.RequestName(SYSTEMD, DBusNameFlags.do_not_queue), timeout=5)
            assert unwrap_msg(reply) == (1,)
            self.ready.set()
            while not self.done.is_set():
                try:
                    msg = conn.receive(timeout=0.05)
                except TimeoutError:
                    continue
                if msg.header.message_type == MessageType.method_call:
                    conn.send(self.handle(msg))

    def handle(self, msg: Message) -> Message:
        fields = msg.header.fields
        member, path = fields.get(HeaderFields.member), fields.get(HeaderFields.path)
        if member == "GetUnit":
            if msg.body[0] not in self.states:
                return new_error(msg, "org.freedesktop.systemd1.NoSuchUnit", "s",
                                 (f"Unit {msg.body[0]} not loaded.",))
            return new_method_return(msg, "o", (UNIT_PATH,))
        if member == "Get" and path == UNIT_PATH and msg.body == (UNIT_IFACE, "ActiveState") \
                and "openvpn.service" in self.states:
            return new_method_return(msg, "v", (("s", self.states["openvpn.service"]),))
        return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (str(member),))


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    exe = shutil.which("dbus-daemon")
    assert exe, "dbus-daemon is missing: install the Debian package `dbus`"
    with tempfile.TemporaryDirectory(prefix="dbus-") as folder:  # short: 108-byte socket paths
        proc = subprocess.Popen(
            [exe, "--session", "--nofork", "--print-address", f"--address=unix:path={folder}/bus"],
            stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        fake = FakeSystemd(address)
        fake.start()
        try:
            assert fake.ready.wait(10), "fake systemd did not come up"
            yield fake
        finally:
            fake.done.set()
            fake.join(timeout=5)
            proc.terminate()
            proc.wait(timeout=10)


def test_logind_backend_reads_active_state(systemd: FakeSystemd) -> None:
    actions = LogindHostActions(systemd.address)
    assert asyncio.run(actions.unit_active_state("openvpn")) is None  # not loaded
    systemd.states["openvpn.service"] = "activating"
    assert asyncio.run(actions.unit_active_state("openvpn.service")) == "activating"


class VpnSupervisor(SupervisorProc):
    def __init__(self, root: Path, vpn_dir: Path) -> None:
        super().__init__(root)
        self.vpn_dir = vpn_dir

    def args(self) -> list[str]:
        argv = super().args()
        argv[argv.index("--host-actions") + 1] = "systemd"  # the firewall stays a dry run
        return [*argv, "--vpn-status-dir", str(self.vpn_dir)]


def test_device_vpn_reads_the_status_dir_and_openvpn(
        tmp_path: Path, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch,
        docker_host: str) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", systemd.address)  # the process's system bus
    vpn_dir = tmp_path / "vpn_status"
    vpn_dir.mkdir()
    proc = VpnSupervisor(tmp_path / "sup", vpn_dir)

    def vpn() -> Any:
        res = proc.client.get("/v2/device/vpn")
        assert res.status_code == 200, res.text
        return res.json()

    try:
        proc.start()
        assert vpn() == {"status": "success", "vpn": {"enabled": False, "connected": False}}
        (vpn_dir / "active").write_text("")
        assert vpn() == {"status": "success", "vpn": {"enabled": False, "connected": True}}
        systemd.states["openvpn.service"] = "active"
        assert vpn() == {"status": "success", "vpn": {"enabled": True, "connected": True}}
        systemd.states["openvpn.service"] = "deactivating"
        (vpn_dir / "active").unlink()
        assert vpn() == {"status": "success", "vpn": {"enabled": False, "connected": False}}
    finally:
        proc.stop()
