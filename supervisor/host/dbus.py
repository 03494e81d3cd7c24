"""Thin D-Bus client over jeepney: one short-lived connection per call, always with a timeout.

Used by `host/actions.py` to reach systemd-logind (reboot, power off) and systemd (unit
restarts, PartOf). `bus` is a D-Bus address such as `unix:path=/run/dbus/system_bus_socket`;
None means the system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else the standard socket).
"""

from __future__ import annotations

import asyncio
from typing import Any

from jeepney import DBusAddress, DBusErrorResponse, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io import asyncio as jasyncio
from jeepney.io import blocking as jblocking
from jeepney.wrappers import unwrap_msg

from supervisor.errors import SupervisorError

CALL_TIMEOUT = 10.0

LOGIN1 = DBusAddress("/org/freedesktop/login1", bus_name="org.freedesktop.login1",
                     interface="org.freedesktop.login1.Manager")
SYSTEMD1 = DBusAddress("/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1",
                       interface="org.freedesktop.systemd1.Manager")
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"


class DBusCallError(SupervisorError):
    """A D-Bus method call failed; `name` is the D-Bus error name when the peer answered."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


def bus_spec(address: str | None) -> str:
    """What jeepney's `open_dbus_*` take: an address string or the literal "SYSTEM"."""
    return address or "SYSTEM"


async def call(bus: str | None, target: DBusAddress, method: str, signature: str | None = None,
               body: tuple[Any, ...] = (), *, limit: float = CALL_TIMEOUT) -> tuple[Any, ...]:
    """Call `method` on `target` and return the reply body; errors become `DBusCallError`."""
    what = f"{target.interface}.{method}"
    try:
        async with asyncio.timeout(limit), \
                jasyncio.open_dbus_router(bus_spec(bus)) as router:
            reply = await router.send_and_get_reply(
                new_method_call(target, method, signature, body))
    except TimeoutError as err:
        raise DBusCallError(f"D-Bus call {what} timed out after {limit:g} s") from err
    except (OSError, EOFError, RuntimeError, KeyError, ValueError) as err:
        # KeyError/RuntimeError: no usable bus address; OSError/EOFError: socket trouble.
        raise DBusCallError(f"D-Bus call {what} failed: {err}") from err
    try:
        return tuple(unwrap_msg(reply))
    except DBusErrorResponse as err:
        raise DBusCallError(f"D-Bus call {what} failed: {err}", name=err.name) from err


def name_available(bus: str | None, name: str, *, timeout: float = 1.0) -> bool:
    """True if `name` has an owner on the bus or can be bus-activated. Blocking: startup only."""
    try:
        with jblocking.open_dbus_connection(bus_spec(bus), auth_timeout=timeout) as conn:
            owned = conn.send_and_get_reply(message_bus.NameHasOwner(name), timeout=timeout)
            if unwrap_msg(owned)[0]:
                return True
            activatable = conn.send_and_get_reply(message_bus.ListActivatableNames(),
                                                  timeout=timeout)
            return name in unwrap_msg(activatable)[0]
    except (OSError, EOFError, RuntimeError, KeyError, ValueError, DBusErrorResponse):
        return False


async def get_property(bus: str | None, bus_name: str, path: str, interface: str,
                       prop: str, *, limit: float = CALL_TIMEOUT) -> Any:
    """`org.freedesktop.DBus.Properties.Get` of one property, unwrapped from its variant."""
    target = DBusAddress(path, bus_name=bus_name, interface="org.freedesktop.DBus.Properties")
    ((_signature, value),) = await call(bus, target, "Get", "ss", (interface, prop),
                                        limit=limit)
    return value
