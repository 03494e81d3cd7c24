"""VPN status for `GET /v2/device/vpn` (api.md §4.15; config.md §4, §5 and §11).

`connected`: openvpn's status directory holds a file named `active` (upstream's
`VPN_STATUS_PATH`, `/mnt/root/run/openvpn/vpn_status`: `--vpn-status-dir` here).
`enabled`: the current `SUPERVISOR_VPN_CONTROL`, which upstream reads from systemd: the
`openvpn.service` unit is loaded and its ActiveState is neither `inactive` nor `deactivating`.
Asked through the host actions backend, so the dry-run backend (no systemd) answers false.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from supervisor.host.actions import HostActions

OPENVPN_UNIT = "openvpn.service"
ACTIVE_FILE = "active"
_DISABLED_STATES = frozenset({"inactive", "deactivating"})


async def vpn_status(status_dir: Path, host: HostActions) -> tuple[bool, bool]:
    """(enabled, connected)."""
    state = await host.unit_active_state(OPENVPN_UNIT)
    enabled = state is not None and state not in _DISABLED_STATES
    connected = await asyncio.to_thread((status_dir / ACTIVE_FILE).exists)
    return enabled, connected
