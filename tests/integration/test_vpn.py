"""`GET /v2/device/vpn` (api.md §4.15) of a real supervisor process: `connected` follows the
`active` file of `--vpn-status-dir` (a temp dir), `enabled` follows openvpn.service's
ActiveState, read over D-Bus from a fake systemd on a private dbus-daemon (the process is
given that bus as its system bus)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.host.actions import LogindHostActions
from tests.integration.dbuskit import FakeSystemd, private_bus
from tests.integration.supervisor_proc import SupervisorProc


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    """The fake systemd with no unit loaded; a test loads openvpn.service by setting its state."""
    with private_bus() as address, FakeSystemd(address, {}) as fake:
        yield fake


def test_logind_backend_reads_active_state(systemd: FakeSystemd) -> None:
    actions = LogindHostActions(systemd.address)
    assert asyncio.run(actions.unit_active_state("openvpn")) is None  # not loaded
    systemd.units["openvpn.service"] = "activating"
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
        systemd.units["openvpn.service"] = "active"
        assert vpn() == {"status": "success", "vpn": {"enabled": True, "connected": True}}
        systemd.units["openvpn.service"] = "deactivating"
        (vpn_dir / "active").unlink()
        assert vpn() == {"status": "success", "vpn": {"enabled": False, "connected": False}}
    finally:
        proc.stop()
