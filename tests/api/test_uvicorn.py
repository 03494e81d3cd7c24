"""The app on a real socket: uvicorn on 127.0.0.1 (free port), called with httpx."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from supervisor.api.app import build_app
from tests.api.fakes import APP1_KEY, GLOBAL_KEY, FakeContext


@pytest.fixture
def served() -> Iterator[tuple[str, FakeContext]]:
    ctx = FakeContext()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(build_app(ctx), log_config=None, lifespan="on",
                            server_header=False, date_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", ctx
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_real_socket_round_trips(served: tuple[str, FakeContext]) -> None:
    base, ctx = served
    with httpx.Client(base_url=base, timeout=5) as client:
        ping = client.get("/ping")
        assert (ping.status_code, ping.text) == (200, "OK")
        assert "server" not in ping.headers and "x-powered-by" not in ping.headers
        assert client.get("/v1/device").status_code == 401
        device = client.get("/v1/device", headers={"Authorization": f"Bearer {GLOBAL_KEY}"})
        assert device.status_code == 200
        assert device.json()["api_port"] == 48484
        restart = client.post("/v1/restart", params={"apikey": APP1_KEY},
                              content=b"appId=1&force=1",
                              headers={"content-type": "application/x-www-form-urlencoded"})
        assert (restart.status_code, restart.text) == (200, "OK")
        bad = client.post("/v1/restart", params={"apikey": GLOBAL_KEY}, content=b"{oops",
                          headers={"content-type": "application/json"})
        assert bad.status_code == 400
        with client.stream("POST", "/v2/journal-logs", json={"follow": True},
                           headers={"Authorization": f"ApiKey {GLOBAL_KEY}"}) as stream:
            assert stream.status_code == 200
            assert b"".join(stream.iter_bytes()) == b"line 1\nline 2\n"
    assert ctx.actions.called("restart_app") == [(1, True)]
