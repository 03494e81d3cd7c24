"""systemd units over D-Bus: the VPN (`openvpn.service`) and mDNS advertising (avahi).

config.md §5 and §11. `Units` starts, stops and reads the state of host units; `DBusUnits`
talks to systemd's manager with jeepney (supervisor/host/dbus.py, as reboot does), every call
under a timeout; `DryRunUnits` only logs and records, and remembers what it "started" so a
loop built on it converges. `units_for()` picks one to match the resolved `--host-actions`.

On top of it:

* `VpnControl`: `SUPERVISOR_VPN_CONTROL`. The current value is read from the unit's
  ActiveState; `step()` decides whether to switch (managed devices only), with the one-hour
  rate limit; `vpn_target()` forces `true` at the first apply after boot and when unset.
* `Discoverability`: `HOST_DISCOVERABILITY` starts or stops avahi's service and socket, at
  the first call and whenever the value changes.

`host/integration.py` owns when these run; nothing here loops or sleeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol

from supervisor.errors import SupervisorError
from supervisor.host import dbus
from supervisor.host.actions import HostActions, Recorder
from supervisor.model.config_vars import VPN_CONTROL, check_truthy, target_config

_LOGGER = logging.getLogger(__name__)

VPN_UNIT = "openvpn.service"
AVAHI_UNITS = ("avahi-daemon.service", "avahi-daemon.socket")
VPN_RATE_LIMIT_S = 3600.0
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
_VPN_OFF_STATES = ("inactive", "deactivating")

VpnStep = Literal["set", "noop"]


class Units(Protocol):
    name: str

    async def start(self, unit: str) -> None: ...

    async def stop(self, unit: str) -> None: ...

    async def active_state(self, unit: str) -> str | None:
        """The unit's ActiveState ("active", "inactive", ...); None when it is not loaded."""
        ...


class DBusUnits:
    """systemd's `StartUnit`/`StopUnit` (mode "fail") and the unit's ActiveState property."""

    name = "systemd"

    def __init__(self, bus_address: str | None = None,
                 timeout: float = dbus.CALL_TIMEOUT) -> None:
        self.bus_address = bus_address
        self.timeout = timeout

    async def start(self, unit: str) -> None:
        await dbus.call(self.bus_address, dbus.SYSTEMD1, "StartUnit", "ss", (unit, "fail"),
                        limit=self.timeout)

    async def stop(self, unit: str) -> None:
        await dbus.call(self.bus_address, dbus.SYSTEMD1, "StopUnit", "ss", (unit, "fail"),
                        limit=self.timeout)

    async def active_state(self, unit: str) -> str | None:
        try:
            (path,) = await dbus.call(self.bus_address, dbus.SYSTEMD1, "GetUnit", "s", (unit,),
                                      limit=self.timeout)
        except dbus.DBusCallError as err:
            if err.name == dbus.NO_SUCH_UNIT:
                return None
            raise
        value = await dbus.get_property(self.bus_address, dbus.SYSTEMD1.bus_name, path,
                                        UNIT_INTERFACE, "ActiveState", limit=self.timeout)
        return str(value)


class DryRunUnits:
    """Touches nothing: logs `Dry run: would start <unit>` and hands it to `record`."""

    name = "dry-run"

    def __init__(self, record: Recorder | None = None,
                 states: dict[str, str] | None = None) -> None:
        self._record = record
        # what we pretended to do, so loops converge (shared with the dry-run host actions)
        self._states: dict[str, str] = {} if states is None else states

    async def _do(self, verb: str, unit: str, state: str) -> None:
        _LOGGER.info("Dry run: would %s %s", verb, unit)
        self._states[unit] = state
        if self._record is not None:
            await self._record(f"{verb}-unit", {"unit": unit})

    async def start(self, unit: str) -> None:
        await self._do("start", unit, "active")

    async def stop(self, unit: str) -> None:
        await self._do("stop", unit, "inactive")

    async def active_state(self, unit: str) -> str | None:
        return self._states.get(unit)


def units_for(actions: HostActions, bus_address: str | None = None,
              record: Recorder | None = None) -> Units:
    """Follow `--host-actions` (already resolved: "systemd" or "dry-run")."""
    if actions.name == "systemd":
        return DBusUnits(bus_address)
    return DryRunUnits(record, getattr(actions, "unit_states", None))


def truthy(value: str | bool | None) -> bool:
    """Upstream's checkTruthy, from the one table of device config variables."""
    return check_truthy(value)


# ============================================================================ VPN

def vpn_target(raw: str | None, *, initial: bool) -> str:
    """The target SUPERVISOR_VPN_CONTROL: "true" at the first apply after boot and when unset,
    so a device whose VPN was switched off is reachable again after a reboot."""
    given = {} if raw is None else {VPN_CONTROL: raw}
    return target_config(given, initial=initial)[VPN_CONTROL]


def vpn_enabled(active_state: str | None) -> bool:
    """The current value: on unless the unit is inactive or deactivating; not loaded is off."""
    return active_state is not None and active_state not in _VPN_OFF_STATES


class VpnControl:
    """Switches openvpn.service; at most one real attempt per `rate_limit` seconds."""

    def __init__(self, units: Units, *, clock: Callable[[], float] = time.monotonic,
                 rate_limit: float = VPN_RATE_LIMIT_S) -> None:
        self.units = units
        self._clock = clock
        self._rate_limit = rate_limit
        self._last_attempt: float | None = None

    async def current(self) -> bool:
        return vpn_enabled(await self.units.active_state(VPN_UNIT))

    def step(self, current: bool, target: str | None, *, managed: bool) -> VpnStep | None:
        """None: nothing to do. "set": switch now (the attempt is counted). "noop": a switch
        is wanted but one was attempted less than an hour ago; the caller retries later
        without counting this as applied."""
        if not managed or not target or truthy(target) == current:
            return None
        now = self._clock()
        # Only real attempts start the hour (upstream also restarted it on every rate-limited
        # retry, which could postpone the switch for ever; docs/host.md).
        if self._last_attempt is not None and now - self._last_attempt < self._rate_limit:
            return "noop"
        self._last_attempt = now
        return "set"

    async def set_enabled(self, enable: bool) -> None:
        """Start or stop the VPN; a failure raises (the apply fails and is retried)."""
        _LOGGER.info("%s the VPN (%s)", "Starting" if enable else "Stopping", VPN_UNIT)
        if enable:
            await self.units.start(VPN_UNIT)
        else:
            await self.units.stop(VPN_UNIT)

    def retry_in(self) -> float:
        """Seconds until a rate-limited switch may be attempted (0: now)."""
        if self._last_attempt is None:
            return 0.0
        return max(0.0, self._rate_limit - (self._clock() - self._last_attempt))

    def reset_rate_limit(self) -> None:
        """After every successful apply, as upstream does."""
        self._last_attempt = None


# ============================================================================ avahi

class Discoverability:
    """HOST_DISCOVERABILITY: avahi-daemon's service and socket on or off."""

    def __init__(self, units: Units) -> None:
        self.units = units
        self._applied: bool | None = None

    async def apply(self, discoverable: bool) -> bool:
        """Switch at the first call and on change; False (logged, not raised) on failure,
        and the next call tries again."""
        if discoverable == self._applied:
            return True
        try:
            if discoverable:
                _LOGGER.info("Setting host to discoverable")
                for unit in AVAHI_UNITS:
                    await self.units.start(unit)
            else:
                _LOGGER.info("Setting host to undiscoverable")
                for unit in AVAHI_UNITS:
                    await self.units.stop(unit)
        except SupervisorError as err:
            _LOGGER.error("There was an error switching host discoverability: %s", err)
            return False
        self._applied = discoverable
        return True
