"""Host actions: reboot, power off and systemd unit control, behind one protocol.

`runtime.py` builds one backend with `choose_host_actions()` (`--host-actions`); the API's
reboot/shutdown, the reconciler's reboot step, host-config (proxy service restarts) and host
discoverability (avahi) call it. `LogindHostActions` talks D-Bus to systemd-logind/systemd;
`DryRunHostActions` only logs and records, for development machines and tests.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from supervisor.errors import ConfigError, SupervisorError
from supervisor.host import dbus

_LOGGER = logging.getLogger(__name__)

HOST_ACTION_CHOICES = ("auto", "systemd", "dry-run")
Recorder = Callable[[str, dict[str, Any]], Awaitable[None]]

# Units that changed name with the resin -> balena rename; either may exist on the host.
LEGACY_UNIT_NAMES: dict[str, tuple[str, ...]] = {"balena-proxy-config": ("resin-proxy-config",)}
# The OS reacts to redsocks.conf by itself when the proxy units are PartOf this target.
REDSOCKS_CONF_TARGET = "redsocks-conf.target"
SYSTEMD_NAME = "org.freedesktop.systemd1"
LOGIN1_NAME = "org.freedesktop.login1"

_UNIT_SUFFIX = re.compile(
    r"\.(service|socket|target|timer|mount|automount|path|slice|scope|device|swap)$")


def unit_name(name: str) -> str:
    """`redsocks` -> `redsocks.service`; names with a unit suffix are kept."""
    return name if _UNIT_SUFFIX.search(name) else f"{name}.service"


class HostActions(Protocol):
    name: str

    async def reboot(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def restart_service(self, unit: str) -> None: ...

    async def start_service(self, unit: str) -> None: ...

    async def stop_service(self, unit: str) -> None: ...

    async def unit_part_of(self, unit: str) -> tuple[str, ...]:
        """The unit's `PartOf=` list; empty when the unit is not loaded."""
        ...

    async def unit_active_state(self, unit: str) -> str | None:
        """systemd's `ActiveState` of the unit (`active`, `inactive`, ...); None when the
        unit is not loaded."""
        ...


class LogindHostActions:
    """The real thing: logind `Reboot`/`PowerOff`, systemd `RestartUnit` & co over D-Bus."""

    name = "systemd"

    def __init__(self, bus_address: str | None = None) -> None:
        self.bus_address = bus_address

    async def reboot(self) -> None:
        await dbus.call(self.bus_address, dbus.LOGIN1, "Reboot", "b", (False,))

    async def shutdown(self) -> None:
        await dbus.call(self.bus_address, dbus.LOGIN1, "PowerOff", "b", (False,))

    async def restart_service(self, unit: str) -> None:
        await dbus.call(self.bus_address, dbus.SYSTEMD1, "RestartUnit", "ss",
                        (unit_name(unit), "fail"))

    async def start_service(self, unit: str) -> None:
        await dbus.call(self.bus_address, dbus.SYSTEMD1, "StartUnit", "ss",
                        (unit_name(unit), "fail"))

    async def stop_service(self, unit: str) -> None:
        await dbus.call(self.bus_address, dbus.SYSTEMD1, "StopUnit", "ss",
                        (unit_name(unit), "fail"))

    async def unit_part_of(self, unit: str) -> tuple[str, ...]:
        try:
            (path,) = await dbus.call(self.bus_address, dbus.SYSTEMD1, "GetUnit", "s",
                                      (unit_name(unit),))
        except dbus.DBusCallError as err:
            if err.name == dbus.NO_SUCH_UNIT:
                return ()
            raise
        value = await dbus.get_property(self.bus_address, SYSTEMD_NAME, path,
                                        "org.freedesktop.systemd1.Unit", "PartOf")
        return tuple(value)

    async def unit_active_state(self, unit: str) -> str | None:
        try:
            (path,) = await dbus.call(self.bus_address, dbus.SYSTEMD1, "GetUnit", "s",
                                      (unit_name(unit),))
        except dbus.DBusCallError as err:
            if err.name == dbus.NO_SUCH_UNIT:
                return None
            raise
        value = await dbus.get_property(self.bus_address, SYSTEMD_NAME, path,
                                        "org.freedesktop.systemd1.Unit", "ActiveState")
        return str(value)


class DryRunHostActions:
    """Logs what it would do and hands it to `record` (the runtime stores it in SQLite)."""

    name = "dry-run"

    def __init__(self, record: Recorder | None = None) -> None:
        self._record = record
        # what the dry-run units (host/systemd.py) pretended to start or stop, so that
        # GET /v2/device/vpn answers what the VPN control believes
        self.unit_states: dict[str, str] = {}

    async def _do(self, action: str, what: str, **details: Any) -> None:
        _LOGGER.info("Dry run: would %s", what)
        if self._record is not None:
            await self._record(action, details)

    async def reboot(self) -> None:
        await self._do("reboot", "reboot")

    async def shutdown(self) -> None:
        await self._do("shutdown", "shut down")

    async def restart_service(self, unit: str) -> None:
        await self._do("restart-service", f"restart {unit_name(unit)}", unit=unit_name(unit))

    async def start_service(self, unit: str) -> None:
        await self._do("start-service", f"start {unit_name(unit)}", unit=unit_name(unit))

    async def stop_service(self, unit: str) -> None:
        await self._do("stop-service", f"stop {unit_name(unit)}", unit=unit_name(unit))

    async def unit_part_of(self, unit: str) -> tuple[str, ...]:
        return ()

    async def unit_active_state(self, unit: str) -> str | None:
        # no systemd: a unit is loaded only once the dry-run units pretended to switch it
        return self.unit_states.get(unit_name(unit))


def choose_host_actions(choice: str, bus_address: str | None,
                        record: Recorder | None = None) -> HostActions:
    """`--host-actions`: "systemd", "dry-run", or "auto" (systemd if logind answers).

    "auto" probes the bus with a short blocking call: call it at startup, before the
    event loop runs, or through `asyncio.to_thread`.
    """
    if choice == "systemd":
        return LogindHostActions(bus_address)
    if choice == "dry-run":
        return DryRunHostActions(record)
    if choice == "auto":
        if dbus.name_available(bus_address, LOGIN1_NAME):
            return LogindHostActions(bus_address)
        _LOGGER.warning("systemd-logind does not answer on D-Bus; host actions are a dry run")
        return DryRunHostActions(record)
    raise ConfigError(f"Unknown host actions backend {choice!r}; "
                      f"expected one of {', '.join(HOST_ACTION_CHOICES)}")


async def restart_host_services(actions: HostActions, units: Iterable[str]) -> None:
    """Restart the host units host-config asks for (`hostconfig.apply_patch` returns them).

    A unit that is `PartOf` redsocks-conf.target is skipped: the OS already restarts it when
    the file changes. Legacy `resin-*` names are tried when the `balena-*` unit is missing.
    """
    for unit in units:
        names = (unit, *LEGACY_UNIT_NAMES.get(unit, ()))
        part_of: tuple[str, ...] = ()
        for candidate in names:
            part_of = await actions.unit_part_of(candidate)
            if part_of:
                break
        if REDSOCKS_CONF_TARGET in part_of:
            _LOGGER.debug("%s is part of %s; not restarting it", unit, REDSOCKS_CONF_TARGET)
            continue
        failures: list[str] = []
        for candidate in names:
            try:
                await actions.restart_service(candidate)
                break
            except SupervisorError as err:
                failures.append(str(err))
        else:
            raise SupervisorError(f"Could not restart {unit}: {'; '.join(failures)}")
