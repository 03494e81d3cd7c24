"""A private dbus-daemon and a fake systemd manager on it, for the unit-control tests.

Same recipe as test_dbus_host_actions.py: `dbus-daemon --session` on a socket in a temp dir
(Debian package `dbus`; fails, never skips, without it). `FakeSystemd` owns
`org.freedesktop.systemd1`, keeps an ActiveState per loaded unit (StartUnit -> "active",
StopUnit -> "inactive"), answers GetUnit and the ActiveState property, and records every call.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jeepney import DBusNameFlags, HeaderFields, Message, MessageType, new_error, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection
from jeepney.wrappers import unwrap_msg

SYSTEMD = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1",
           "org.freedesktop.systemd1.Manager")
UNIT_PREFIX = "/org/freedesktop/systemd1/unit/"


def unit_path(unit: str) -> str:
    """systemd's object path for a unit: bytes outside [A-Za-z0-9] become _XX."""
    return UNIT_PREFIX + "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}"
                                 for c in unit)


@contextmanager
def private_bus() -> Iterator[str]:
    """A dbus-daemon on a short private socket path (unix paths are limited to 108 bytes)."""
    exe = shutil.which("dbus-daemon")
    assert exe, "dbus-daemon is missing: install the Debian package `dbus`"
    with tempfile.TemporaryDirectory(prefix="dbus-") as folder:
        proc = subprocess.Popen(
            [exe, "--session", "--nofork", "--print-address",
             f"--address=unix:path={Path(folder)}/bus"], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            address = proc.stdout.readline().strip()
            assert address.startswith("unix:"), f"dbus-daemon did not start: {address!r}"
            yield address
        finally:
            proc.terminate()
            proc.wait(timeout=10)


class FakeSystemd(threading.Thread):
    """systemd1 on the bus. `units` maps loaded units to their ActiveState; members listed
    in `silent` are received and recorded but never answered (to exercise timeouts)."""

    def __init__(self, address: str, units: dict[str, str],
                 silent: tuple[str, ...] = ()) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.units = dict(units)
        self.silent = silent
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.ready = threading.Event()
        self.done = threading.Event()

    def __enter__(self) -> FakeSystemd:
        self.start()
        assert self.ready.wait(10), "fake systemd did not come up"
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(timeout=5)

    def run(self) -> None:
        with open_dbus_connection(self.address) as conn:
            reply = conn.send_and_get_reply(
                message_bus.RequestName(SYSTEMD[0], DBusNameFlags.do_not_queue), timeout=5)
            assert unwrap_msg(reply) == (1,)  # primary owner
            self.ready.set()
            while not self.done.is_set():
                try:
                    msg = conn.receive(timeout=0.05)
                except TimeoutError:
                    continue
                if msg.header.message_type == MessageType.method_call:
                    answer = self.handle(msg)
                    if answer is not None:
                        conn.send(answer)

    def handle(self, msg: Message) -> Message | None:
        f = msg.header.fields
        path, iface = f.get(HeaderFields.path), f.get(HeaderFields.interface)
        member = f.get(HeaderFields.member)
        self.calls.append((str(member), tuple(msg.body)))
        if member in self.silent:
            return None
        if (f.get(HeaderFields.destination), path, iface) == SYSTEMD:
            unit = msg.body[0]
            if unit not in self.units:
                return new_error(msg, "org.freedesktop.systemd1.NoSuchUnit", "s",
                                 (f"Unit {unit} not loaded.",))
            if member == "GetUnit":
                return new_method_return(msg, "o", (unit_path(unit),))
            if member in ("StartUnit", "StopUnit"):
                self.units[unit] = "active" if member == "StartUnit" else "inactive"
                return new_method_return(msg, "o", ("/org/freedesktop/systemd1/job/7",))
        if iface == "org.freedesktop.DBus.Properties" and member == "Get":
            paths = {unit_path(u): u for u in self.units}
            if path in paths and msg.body == ("org.freedesktop.systemd1.Unit", "ActiveState"):
                return new_method_return(msg, "v", (("s", self.units[paths[path]]),))
        return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (str(member),))

    def switches(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The StartUnit/StopUnit calls, in order."""
        return [c for c in self.calls if c[0] in ("StartUnit", "StopUnit")]
