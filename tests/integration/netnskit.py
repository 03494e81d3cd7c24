"""Network namespaces made by a test: a "device" and a "peer" joined by one veth pair.

Everything runs through `ip netns exec`, so the host's own interfaces and iptables tables are
never touched: the veth pair is created inside the device namespace with its far end placed
straight into the peer namespace. `NetnsPair` deletes both namespaces (and kills what runs in
them) on exit, even when the test failed. Needs root and iproute2 (`ip`); without them the
tests skip on a laptop and fail in CI (dockerkit.unavailable).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from types import TracebackType

from tests.integration import dockerkit

DEVICE_V4, PEER_V4 = "10.213.97.1", "10.213.97.2"
DEVICE_V6, PEER_V6 = "fd5b:7a1e:1::1", "fd5b:7a1e:1::2"
_counter = itertools.count()

# A TCP server standing in for the API (and other host services): accepts and closes.
SERVER = r"""
import select, socket, sys
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(16)
    socks.append(s)
print("READY", flush=True)
while True:
    ready, _, _ = select.select(socks, [], [])
    for s in ready:
        conn, _ = s.accept()
        conn.close()
"""

CLIENT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10).close()
    print("ok")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
except OSError as err:
    print("error", err.errno)
"""


def require_netns() -> None:
    if os.geteuid() != 0:
        dockerkit.unavailable("network namespace tests need root")
    for tool in ("ip", "iptables-restore", "ip6tables-restore"):
        if shutil.which(tool) is None:
            dockerkit.unavailable(f"{tool} is missing (Debian packages iproute2, iptables)")


def run(argv: Sequence[str], stdin: str | None = None) -> str:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, f"{' '.join(argv)} failed: {done.stderr.strip()}"
    return done.stdout


class NetnsPair:
    """`device` and `peer` namespaces; `device_if` is the device's end of the veth pair."""

    def __init__(self, device_if: str = "eth1") -> None:
        tag = f"{os.getpid() % 100000}x{next(_counter)}"
        self.device, self.peer = f"bpyfw{tag}d", f"bpyfw{tag}p"
        self.device_if = device_if
        self._procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> NetnsPair:
        try:
            for ns in (self.device, self.peer):
                run(["ip", "netns", "add", ns])
                self.exec(ns, "ip", "link", "set", "lo", "up")
            self.exec(self.device, "ip", "link", "add", self.device_if, "type", "veth",
                      "peer", "name", "eth0", "netns", self.peer)
            for ns, iface, v4, v6 in ((self.device, self.device_if, DEVICE_V4, DEVICE_V6),
                                      (self.peer, "eth0", PEER_V4, PEER_V6)):
                self.exec(ns, "ip", "addr", "add", f"{v4}/24", "dev", iface)
                self.exec(ns, "ip", "-6", "addr", "add", f"{v6}/64", "dev", iface, "nodad")
                self.exec(ns, "ip", "link", "set", iface, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def close(self) -> None:
        for proc in self._procs:
            proc.kill()
            proc.wait(timeout=10)
        for ns in (self.device, self.peer):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False,
                           timeout=60)

    def exec(self, ns: str, *argv: str, stdin: str | None = None) -> str:
        return run(["ip", "netns", "exec", ns, *argv], stdin)

    def prefix(self) -> tuple[str, ...]:
        """Runs a program in the device namespace (the firewall's `Commands.prefix`)."""
        return ("ip", "netns", "exec", self.device)

    def serve(self, *ports: int) -> None:
        """Listen on `ports` (IPv4 and IPv6) in the device namespace until the pair closes."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.device, sys.executable, "-c",
                                 SERVER, *map(str, ports)], stdout=subprocess.PIPE, text=True)
        self._procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY", "the test server did not start"

    def connect(self, address: str, port: int) -> str:
        """From the peer namespace: "ok", "refused" (a REJECT), "timeout" or "error N"."""
        return self.exec(self.peer, sys.executable, "-c", CLIENT, address, str(port)).strip()
