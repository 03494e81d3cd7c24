"""The cloud client bounds what it reads (cloud/http.py, `MAX_BODY`): a body past the bound
and a gzip body inflating past it are refused with a CloudError saying so, and a gzip bomb
costs about the bound in memory, never its inflated size. Over real HTTP on 127.0.0.1, through
`CloudClient.request` (the agent) and `send` (the devcloud proxy)."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import threading
import tracemalloc
import urllib.request
import zlib
from collections.abc import Iterator

import pytest

from supervisor.cloud.http import MAX_BODY, CloudClient, CloudError, send

BOMB_SIZE = 8 * MAX_BODY  # what the bomb inflates to: 256 MiB of zeros


def make_bomb() -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    parts = [deflate.compress(zeros) for _ in range(BOMB_SIZE // len(zeros))]
    return b"".join(parts) + deflate.flush()


class Served:
    """path -> (status, headers, body); bodies are sent chunked (no Content-Length)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, headers, body = served.answers[self.path]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for start in range(0, len(body), 65536):
                        piece = body[start:start + 65536]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:  # the client stopped reading: that is the point
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    thread = threading.Thread(target=s.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield s
    finally:
        s.server.shutdown()
        s.server.server_close()


def client(served: Served) -> CloudClient:
    return CloudClient(served.url, api_key=lambda: "key", user_agent="test")


def test_gzip_bomb_is_refused_with_memory_about_the_bound(served: Served) -> None:
    bomb = make_bomb()
    served.answers["/v6/device/x/state"] = (200, {"Content-Encoding": "gzip"}, bomb)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with pytest.raises(CloudError, match=f"too large: inflated, it is more than {MAX_BODY}"):
            asyncio.run(client(served).request("GET", "/v6/device/x/state"))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # The bound itself (what a legit answer of that size needs), plus the compressed bomb
    # (under 1 MiB) and bookkeeping; inflating whole would have taken BOMB_SIZE.
    assert len(bomb) < 1024 * 1024
    assert peak < MAX_BODY + 2 * 1024 * 1024, f"peak memory grew by {peak} bytes"


def test_gzip_answer_up_to_the_bound_is_inflated(served: Served) -> None:
    payload = json.dumps({"local": {"name": "x" * 100_000}}).encode()
    # two gzip members, as gzip(1) may produce and gzip.decompress accepts
    body = gzip.compress(payload[:1000]) + gzip.compress(payload[1000:])
    served.answers["/ok"] = (200, {"Content-Encoding": "gzip"}, body)
    served.answers["/over"] = (200, {"Content-Encoding": "gzip"}, body)
    request = urllib.request.Request(served.url + "/ok")
    answer = send(request, 30, limit=len(payload))
    assert answer.status == 200 and answer.json() == {"local": {"name": "x" * 100_000}}
    with pytest.raises(CloudError, match=f"inflated, it is more than {len(payload) - 1} bytes"):
        send(urllib.request.Request(served.url + "/over"), 30, limit=len(payload) - 1)


def test_plain_body_past_the_bound_is_refused_whatever_the_status(served: Served) -> None:
    served.answers["/big"] = (200, {}, b"a" * 300_001)
    served.answers["/big-error"] = (500, {}, b"e" * 300_001)
    served.answers["/fits"] = (200, {}, b"a" * 300_000)
    assert send(urllib.request.Request(served.url + "/fits"), 30, limit=300_000).body == (
        b"a" * 300_000)
    for path in ("/big", "/big-error"):
        with pytest.raises(CloudError, match="too large: its body is more than 300000 bytes"):
            send(urllib.request.Request(served.url + path), 30, limit=300_000)


def test_corrupt_gzip_is_a_cloud_error(served: Served) -> None:
    served.answers["/cut"] = (200, {"Content-Encoding": "gzip"}, gzip.compress(b"{}" * 999)[:-9])
    with pytest.raises(CloudError, match="corrupt gzip body"):
        asyncio.run(client(served).request("GET", "/cut"))


def test_the_bound_is_far_above_any_target_state() -> None:
    assert MAX_BODY == 32 * 1024 * 1024  # docs/security.md says 32 MiB
