"""VPN status (api.md §4.15): `connected` from the `active` file of the status dir (real files
in a temp dir), `enabled` from openvpn.service's ActiveState as the host backend reports it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from supervisor.host.actions import DryRunHostActions
from supervisor.host.vpn import vpn_status


class Units(DryRunHostActions):
    """The dry-run backend with a systemd answer for unit states (the D-Bus side is tested
    against a real dbus-daemon in tests/integration/test_vpn.py)."""

    def __init__(self, states: dict[str, str]) -> None:
        super().__init__()
        self.states = states
        self.asked: list[str] = []

    async def unit_active_state(self, unit: str) -> str | None:
        self.asked.append(unit)
        return self.states.get(unit)


def test_connected_follows_the_active_file(tmp_path: Path) -> None:
    host = DryRunHostActions()
    assert asyncio.run(vpn_status(tmp_path, host)) == (False, False)
    (tmp_path / "active").write_text("")
    assert asyncio.run(vpn_status(tmp_path, host)) == (False, True)
    (tmp_path / "active").unlink()
    assert asyncio.run(vpn_status(tmp_path, host)) == (False, False)


def test_other_files_and_a_missing_dir_mean_not_connected(tmp_path: Path) -> None:
    (tmp_path / "inactive").write_text("")
    (tmp_path / "active.tmp").write_text("")
    assert asyncio.run(vpn_status(tmp_path, DryRunHostActions()))[1] is False
    assert asyncio.run(vpn_status(tmp_path / "missing", DryRunHostActions()))[1] is False


@pytest.mark.parametrize(("state", "enabled"), [
    ("active", True), ("activating", True), ("reloading", True), ("failed", True),
    ("inactive", False), ("deactivating", False), (None, False),
])
def test_enabled_is_openvpn_not_inactive_nor_deactivating(tmp_path: Path, state: str | None,
                                                         enabled: bool) -> None:
    host = Units({} if state is None else {"openvpn.service": state})
    assert asyncio.run(vpn_status(tmp_path, host)) == (enabled, False)
    assert host.asked == ["openvpn.service"]


def test_dry_run_status_follows_what_the_dry_run_vpn_control_did(tmp_path: Path) -> None:
    """With --host-actions dry-run, GET /v2/device/vpn answers what VPN control pretended."""
    from supervisor.host.systemd import VpnControl, units_for

    host = DryRunHostActions()
    control = VpnControl(units_for(host))

    async def scenario() -> list[tuple[bool, bool]]:
        seen = [await vpn_status(tmp_path, host)]
        await control.set_enabled(True)
        seen.append(await vpn_status(tmp_path, host))
        await control.set_enabled(False)
        seen.append(await vpn_status(tmp_path, host))
        return seen

    assert asyncio.run(scenario()) == [(False, False), (True, False), (False, False)]
