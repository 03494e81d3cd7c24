"""Host integration in the running supervisor: when the host features act (docs/host.md).

The runtime builds one `HostIntegration`, tells it on every publish what the target and the
local mode are (`observe()`, cheap: it only wakes the loop when either changed), and runs
`run()` as one of its tasks. The loop applies, at start and after every change:

* `SUPERVISOR_CONNECTIVITY_CHECK`: switches the connectivity check (`host/connectivity.py`);
  its result drives the LED's offline pattern and the healthcheck (`health()`);
* the extra-firmware volume (`host/firmware.py`), once, at the first pass;
* `HOST_DISCOVERABILITY`: avahi's units (`host/systemd.py`), on change;
* `HOST_FIREWALL_MODE`, local mode, host-network services, API port: the firewall
  (`host/firewall.py`) is loaded again whenever what it depends on changed;
* `SUPERVISOR_VPN_CONTROL` (managed devices): openvpn, forced on at the first apply after
  boot, switched at most once an hour; a rate-limited switch is retried when the hour ends.

The systemd calls follow `--host-actions` (dry run: logged and recorded), the firewall follows
`--firewall`. A failure is logged and never stops the loop or the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.board.led import Led
from supervisor.engine.runner import AsyncEngine
from supervisor.errors import SupervisorError
from supervisor.host.actions import HostActions, Recorder
from supervisor.host.connectivity import ConnectivityMonitor
from supervisor.host.firewall import (
    Firewall,
    FirewallConfig,
    FirewallResult,
    has_host_network_services,
    make_firewall,
)
from supervisor.host.firmware import ensure_extra_firmware
from supervisor.host.systemd import (
    Discoverability,
    Units,
    VpnControl,
    truthy,
    units_for,
    vpn_target,
)
from supervisor.model.config_vars import VPN_CONTROL, DeviceConfig, lookup
from supervisor.model.target import TargetState
from supervisor.settings import Settings

_LOGGER = logging.getLogger(__name__)

RETRY_S = 60.0  # a failed VPN switch or extra-firmware volume is tried again after this


@dataclass(frozen=True)
class HostInputs:
    """What the host features depend on: the target's config and services, local mode."""

    target: TargetState | None
    local_mode: bool


class HostIntegration:
    """Applies the host features; `units`/`firewall`/`monitor` are injectable for tests."""

    def __init__(self, settings: Settings, led: Led, *, firewall: Firewall | None = None,
                 monitor: ConnectivityMonitor | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.led = led
        self.firewall = firewall or make_firewall(settings.firewall)
        self.monitor = monitor or ConnectivityMonitor(
            settings.api_endpoint, vpn_status_dir=settings.vpn_status_dir)
        self.monitor.on_change(self._connectivity_changed)
        self.vpn: VpnControl | None = None
        self.discoverability: Discoverability | None = None
        self.engine: AsyncEngine | None = None
        self._firmware_done = False
        self.firewall_config: FirewallConfig | None = None  # the last one loaded (or tried)
        self.firewall_result: FirewallResult | None = None
        self.applied = 0  # completed passes (tests wait for it)
        self._inputs: HostInputs | None = None
        self._wake = asyncio.Event()
        self._vpn_initial = True

    # -- what the runtime calls ------------------------------------------------------------------

    def observe(self, target: TargetState | None, local_mode: bool) -> None:
        """Called on every publish: wake the loop when the target or the local mode changed."""
        seen = self._inputs
        if seen is None or seen.target is not target or seen.local_mode != local_mode:
            self._inputs = HostInputs(target, local_mode)
            self._wake.set()

    def health(self) -> tuple[bool, str]:
        """The connectivity part of the api-binder check (state.md §7)."""
        if self.monitor.connected:
            return True, ""
        host, port = self.monitor.target or ("", 0)
        return False, f"the cloud API host {host}:{port} is unreachable (connectivity check)"

    def bind(self, host: HostActions | None, record: Recorder | None = None,
             units: Units | None = None, engine: AsyncEngine | None = None) -> None:
        """The systemd side, once the host actions backend is known (`--host-actions`), and
        the engine (for the extra-firmware volume)."""
        self.engine = engine
        if units is None:
            assert host is not None
            units = units_for(host, None, record)
        self.vpn = VpnControl(units, clock=self._clock)
        self.discoverability = Discoverability(units)

    async def run(self) -> None:
        """The connectivity check and the apply loop, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.monitor.run(), name="connectivity")
            group.create_task(self._loop(), name="host-apply")

    # -- the loop --------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            retry = await self.apply_once()
            if retry is not None and not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(retry):
                        await self._wake.wait()
                self._wake.set()  # retry (or a change came): apply again

    async def apply_once(self) -> float | None:
        """One pass over every feature. Returns when to try again (None: nothing pending)."""
        inputs = self._inputs or HostInputs(None, self.settings.unmanaged)
        raw = inputs.target.config if inputs.target is not None else {}
        config = DeviceConfig.of(raw, unmanaged=self.settings.unmanaged)
        self.monitor.set_enabled(config.flag("SUPERVISOR_CONNECTIVITY_CHECK"))
        retries: list[float] = []
        if self.engine is not None and not self._firmware_done:
            self._firmware_done = await ensure_extra_firmware(self.engine, self.settings)
            if not self._firmware_done:
                retries.append(RETRY_S)
        if self.discoverability is not None:
            # A failure (logged) is tried again at the next change, as upstream: a host
            # without avahi must not get the same error every minute.
            await self.discoverability.apply(config.flag("HOST_DISCOVERABILITY"))
        await self._firewall(inputs, lookup(raw, "HOST_FIREWALL_MODE"))
        if self.vpn is not None:
            vpn_retry = await self._vpn(lookup(raw, VPN_CONTROL))
            if vpn_retry is not None:
                retries.append(vpn_retry)
        self.applied += 1
        return min(retries) if retries else None

    async def _firewall(self, inputs: HostInputs, mode: str | None) -> None:
        target = inputs.target
        cfg = FirewallConfig(
            mode=mode, local_mode=inputs.local_mode,
            host_network_services=target is not None and has_host_network_services(target),
            listen_port=self.settings.listen_port)
        if cfg == self.firewall_config:
            return
        # A failure is logged by the runner and not retried until something changes (as
        # upstream): retrying a broken iptables every pass would only flood the log.
        self.firewall_config = cfg
        self.firewall_result = await self.firewall.apply(cfg)

    async def _vpn(self, raw: str | None) -> float | None:
        assert self.vpn is not None
        if self.settings.unmanaged:  # no VPN to manage (upstream skips the step too)
            return None
        wanted = vpn_target(raw, initial=self._vpn_initial)
        try:
            current = await self.vpn.current()
            step = self.vpn.step(current, wanted, managed=not self.settings.unmanaged)
            if step is None:  # settled: what upstream does after a successful apply
                self.vpn.reset_rate_limit()
                if self._vpn_initial:  # boot's forced "on" is done: now the target's value
                    self._vpn_initial = False
                    return 0.0 if raw is not None else None
                return None
            if step == "noop":
                _LOGGER.info("VPN switch postponed by the rate limit (%.0f s)",
                             self.vpn.retry_in())
                return self.vpn.retry_in()
            await self.vpn.set_enabled(truthy(wanted))
        except SupervisorError as err:
            _LOGGER.error("Could not switch the VPN: %s", err)
            return max(self.vpn.retry_in(), RETRY_S)
        return 0.0  # check it settled

    async def _connectivity_changed(self, online: bool) -> None:
        await self.led.set_offline(not online)

