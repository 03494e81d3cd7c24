"""Connectivity check: is the cloud's API host reachable? (config.md §11, state.md §7)

Every 10 s (`interval`) `ConnectivityMonitor.run()` opens a TCP connection to the API host
(port from the URL, else 443 for https and 80 otherwise) and closes it. The result is the
observable `online` state; callbacks run on every change, the first result included. Their
users (wired later): the healthcheck (`/v1/healthy` fails while offline), the state report,
and the board LED's offline pattern (`led.set_offline(not online)`).

As upstream: the check counts as passing while it is disabled (`SUPERVISOR_CONNECTIVITY_CHECK`
false) and while the VPN is up (`<vpn_status>/active` exists; checked before every attempt
instead of upstream's inotify watch), and an unmanaged device (no API endpoint) is never
checked. `check_once()` never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

_LOGGER = logging.getLogger(__name__)

CHECK_INTERVAL_S = 10.0
CONNECT_TIMEOUT_S = 5.0
VPN_STATUS_DIR = "/mnt/root/run/openvpn/vpn_status"

ChangeCallback = Callable[[bool], Awaitable[None] | None]


def api_host_port(api_endpoint: str) -> tuple[str, int] | None:
    """(host, port) to check; None when there is no endpoint (unmanaged) or no host in it."""
    if not api_endpoint:
        return None
    try:
        url = urlsplit(api_endpoint)
        port = url.port
    except ValueError:
        return None
    if not url.hostname:
        return None
    return url.hostname, port or (443 if url.scheme == "https" else 80)


class ConnectivityMonitor:
    """The TCP check loop and its state. `online` is None until the first result."""

    def __init__(self, api_endpoint: str, *, enabled: bool = True,
                 vpn_status_dir: Path | str = VPN_STATUS_DIR,
                 interval: float = CHECK_INTERVAL_S,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.target = api_host_port(api_endpoint)
        self.enabled = enabled
        self.vpn_active_file = Path(vpn_status_dir) / "active"
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.online: bool | None = None
        self._callbacks: list[ChangeCallback] = []
        self._wake = asyncio.Event()

    @property
    def connected(self) -> bool:
        """For the healthcheck: only a failed check counts as disconnected."""
        return self.online is not False

    def on_change(self, callback: ChangeCallback) -> None:
        self._callbacks.append(callback)

    def set_enabled(self, enabled: bool) -> None:
        """SUPERVISOR_CONNECTIVITY_CHECK changed; the next check comes at once."""
        if enabled != self.enabled:
            _LOGGER.debug("Connectivity check enabled: %s", enabled)
            self.enabled = enabled
            self._wake.set()

    async def check_once(self) -> bool:
        """One check: True when disabled, when the VPN is up, or when the connect works."""
        if not self.enabled or self.target is None:
            return True
        if await asyncio.to_thread(os.path.lexists, self.vpn_active_file):
            return True  # the VPN works, so the cloud is reachable: no need to probe
        host, port = self.target
        try:
            async with asyncio.timeout(self.connect_timeout):
                _reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as err:
            _LOGGER.debug("Connectivity check to %s:%s failed: %s", host, port, err)
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def run(self) -> None:
        """Check every `interval` seconds until cancelled. Unmanaged: return at once."""
        if self.target is None:
            _LOGGER.debug("No API endpoint specified, skipping connectivity check")
            return
        while True:
            self._wake.clear()
            await self._publish(await self.check_once())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def _publish(self, online: bool) -> None:
        if online == self.online:
            return
        self.online = online
        _LOGGER.info("Internet Connectivity: OK" if online else "Waiting for connectivity...")
        for callback in self._callbacks:
            try:
                result = callback(online)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # one broken listener must not stop the check
                _LOGGER.exception("Connectivity change callback failed")
