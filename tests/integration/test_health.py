"""`GET /v1/healthy` of a real supervisor process whose engine goes away and comes back.

The supervisor reaches the real engine through a unix-socket relay owned by the test; cutting
the relay makes the engine unreachable to the supervisor alone. With a 1 s poll interval the
device-state rule (engine.md §15.4: an apply run that has not settled for 2 x the poll
interval) fails the check soon after the engine goes; the test waits for each state change,
never for a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Any

from tests.integration.supervisor_proc import SupervisorProc


class Relay:
    """Forwards connections from `path` to the engine's unix socket, until cut."""

    def __init__(self, path: Path, engine: str) -> None:
        self.path = path
        self.engine = engine
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def open(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """The engine is gone: no new connection, every open one closed."""
        with self.lock:
            listener, self.listener = self.listener, None
            conns, self.conns = self.conns, []
        if listener is not None:
            listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.engine)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class ShortPoll(SupervisorProc):
    """A 1 s poll interval: the apply rule's limit (2 x the interval) is 2 s."""

    def args(self) -> list[str]:
        return [*super().args(), "--poll-interval", "1000"]


def healthy(proc: SupervisorProc) -> int:
    return proc.client.get("/v1/healthy").status_code


def test_unhealthy_while_the_engine_is_gone_and_healthy_again_after(
        tmp_path: Path, docker_host: str, docker_client: Any) -> None:
    assert docker_host.startswith("unix://")
    relay = Relay(tmp_path / "engine.sock", docker_host.removeprefix("unix://"))
    assert len(os.fsencode(relay.path)) < 108  # a unix socket path's limit
    relay.open()
    proc = ShortPoll(tmp_path / "sup", docker_host=f"unix://{relay.path}")
    try:
        proc.start()
        proc.wait_for(lambda: healthy(proc) == 200, what="healthy with the engine there")

        relay.cut()
        proc.wait_for(lambda: healthy(proc) == 500, what="unhealthy without the engine",
                      timeout=120)
        assert "Healthcheck failed: the apply has not settled for" in proc.log()
        assert (proc.client.get("/v1/healthy").text) == "Unhealthy"

        relay.open()
        proc.wait_for(lambda: healthy(proc) == 200, what="healthy again", timeout=120)
    finally:
        proc.stop()
        relay.cut()

