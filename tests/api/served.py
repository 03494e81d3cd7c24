"""The API app (over the fake context) served by uvicorn in a child process, for tests that
need a real socket AND a process of its own: its memory is measured, or its event loop must
not share the test's GIL.

`python -m tests.api.served [--header-timeout S] [--request-timeout S]` binds 127.0.0.1 on a
free port, prints the port, then serves with the supervisor's own uvicorn settings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Served:
    host: str
    port: int
    pid: int

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def status(self, field: str) -> int:
        """A /proc/<pid>/status field in bytes (VmRSS, VmHWM...)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def reset_peak_memory(self) -> None:
        """Start VmHWM again from the current RSS (Linux: `5` in clear_refs)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")


@contextlib.contextmanager
def serve_in_child(*args: str, start_limit: float = 60.0) -> Iterator[Served]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.api.served", *args], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=None, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], start_limit)
        assert ready, "the child server printed no port"
        port = int(child.stdout.readline())
        served = Served("127.0.0.1", port, child.pid)
        deadline = time.monotonic() + start_limit
        while True:  # serving once /ping answers
            try:
                with socket.create_connection((served.host, port), timeout=5) as sock:
                    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and child.poll() is None, "no /ping"
            time.sleep(0.05)
        yield served
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> None:
    import uvicorn

    from supervisor.api.app import build_app
    from supervisor.api.server import server_config
    from tests.api.fakes import FakeContext

    parser = argparse.ArgumentParser()
    parser.add_argument("--header-timeout", type=float, default=None)
    parser.add_argument("--request-timeout", type=float, default=None)
    args = parser.parse_args()
    # IPPROTO_TCP as uvicorn binds its own: asyncio sets TCP_NODELAY only then (else Nagle
    # and delayed ACKs add 40 ms to small answers, which the real server never has)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    timeouts = {k: v for k, v in (("header_timeout", args.header_timeout),
                                  ("request_timeout", args.request_timeout)) if v is not None}
    config = server_config(build_app(FakeContext()), "127.0.0.1", 0, **timeouts)
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
