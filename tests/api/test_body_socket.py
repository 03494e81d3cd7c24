"""Bodies and connections on a real socket, against the API served by uvicorn in a child
process (tests/api/served.py) with the supervisor's own server settings: the child's memory
can be measured, and its event loop never waits for the test's GIL.

- A chunked upload far over the limit is refused while the child's peak memory grows by less
  than the limit (the body is counted while it streams in, never read whole).
- /ping keeps answering while a 10 MB form body of repeated keys is refused, and while a large
  form body is being parsed (parsing happens off the event loop).
- A half-sent request is closed after the header (or request) timeout.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.fakes import GLOBAL_KEY
from tests.api.served import Served, serve_in_child

LIMIT = 10 * 1024 * 1024  # Express' 10 MB
AUTH = f"Authorization: Bearer {GLOBAL_KEY}\r\n".encode()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve_in_child() as child:
        yield child


def read_response(sock: socket.socket, limit_s: float = 60.0) -> tuple[int, bytes]:
    """(status, body) of one response (a body only with a Content-Length)."""
    sock.settimeout(limit_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(head.split()[1]), body


def send_chunked_until_answered(sock: socket.socket, total: int, chunk_size: int) -> int:
    """Send up to `total` bytes as a chunked JSON body; stop as soon as the server answers.
    Returns how many body bytes were sent."""
    piece = b" " * chunk_size
    frame = b"%x\r\n" % chunk_size + piece + b"\r\n"
    sent = 0
    while sent < total:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        sock.sendall(frame)
        sent += chunk_size
    else:
        sock.sendall(b"0\r\n\r\n")  # all sent and no answer yet: end the body
    return sent


def test_a_chunked_upload_over_the_limit_is_refused_with_bounded_memory(
        served: Served) -> None:
    def upload(total: int) -> tuple[int, bytes, int]:
        with socket.create_connection((served.host, served.port), timeout=60) as sock:
            sock.sendall(b"POST /v1/update HTTP/1.1\r\nHost: device\r\n" + AUTH
                         + b"Content-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            sent = send_chunked_until_answered(sock, total, 256 * 1024)
            status, body = read_response(sock)
            return status, body, sent

    upload(2 * LIMIT)  # warm up: every code path of a refusal has run once
    before = served.status("VmRSS")
    served.reset_peak_memory()
    status, body, sent = upload(300 * 1024 * 1024)
    growth = served.status("VmHWM") - before
    assert status == 413
    assert body == b'{"status":"failed","message":"request entity too large"}'
    assert sent > LIMIT  # the server did read past the limit before refusing
    assert growth < LIMIT, f"peak memory grew by {growth} bytes"


def ping(sock: socket.socket) -> float:
    """One `GET /ping` on a kept-alive connection: its latency in seconds."""
    start = time.perf_counter()
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: device\r\n\r\n")
    assert read_response(sock) == (200, b"OK")
    return time.perf_counter() - start


def test_ping_answers_within_100ms_while_a_10mb_form_of_repeated_keys_is_refused(
        served: Served) -> None:
    # The bound: /ping answers in under 100 ms throughout the upload. The body goes
    # in 50 pieces with a /ping between each two (so /ping is asked while the server reads,
    # not only before or after), then /ping is asked again and again until the answer comes
    # (while the server counts and parses). The test is single-threaded: its own GIL adds
    # nothing to a latency. Before the fix the parse froze the event loop for minutes.
    body = b"&".join([b"force=0"] * (LIMIT // 8))  # 1.3 million parameters, just under 10 MB
    assert len(body) < LIMIT
    pieces = 50
    step = -(-len(body) // pieces)
    latencies: list[float] = []
    with socket.create_connection((served.host, served.port), timeout=60) as upload, \
            socket.create_connection((served.host, served.port), timeout=60) as probe:
        ping(probe)  # connected and served once before the upload
        upload.sendall(b"POST /v1/update HTTP/1.1\r\nHost: device\r\n" + AUTH
                       + b"Content-Type: application/x-www-form-urlencoded\r\n"
                       + b"Content-Length: %d\r\n\r\n" % len(body))
        for offset in range(0, len(body), step):
            upload.sendall(body[offset:offset + step])
            latencies.append(ping(probe))
        while not select.select([upload], [], [], 0)[0]:
            latencies.append(ping(probe))
        status, answer = read_response(upload)
    assert len(latencies) >= pieces
    # The one wall-clock check, the issue's own bound (see docs/security.md on its margin).
    assert max(latencies) < 0.1, f"/ping took up to {max(latencies) * 1000:.0f} ms"
    assert (status, answer) == (413, b'{"status":"failed","message":"too many parameters"}')


def test_ping_answers_while_a_large_form_body_is_parsed(served: Served) -> None:
    # One parameter, three million percent-escapes: seconds of unquoting, which must happen
    # on a worker thread. Probes count the /ping answers given between the moment the body
    # is sent and the moment its answer arrives: with the parse on the event loop, none.
    body = b"force=" + b"%41" * 3_000_000
    answered_while_parsing = 0
    with socket.create_connection((served.host, served.port), timeout=60) as sock, \
            httpx.Client(base_url=served.base, timeout=60) as probe:
        assert probe.get("/ping").status_code == 200  # connected before the big request
        sock.sendall(b"POST /v1/update HTTP/1.1\r\nHost: device\r\n" + AUTH
                     + b"Content-Type: application/x-www-form-urlencoded\r\n"
                     + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        while not select.select([sock], [], [], 0)[0]:
            assert probe.get("/ping").status_code == 200
            if not select.select([sock], [], [], 0)[0]:
                answered_while_parsing += 1
        status, _ = read_response(sock)
    assert status == 204
    assert answered_while_parsing >= 5


def test_a_half_sent_request_is_closed_after_the_timeouts() -> None:
    def closed_by_server(sock: socket.socket) -> bool:
        sock.settimeout(30)  # far above the child's 1 s / 2 s timeouts
        try:
            while sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return True

    with serve_in_child("--header-timeout", "1", "--request-timeout", "2") as child:
        address = (child.host, child.port)
        with socket.create_connection(address) as silent:
            assert closed_by_server(silent)
        with socket.create_connection(address) as half_headers:
            half_headers.sendall(b"POST /v1/update HTTP/1.1\r\nHost: device\r\n")
            assert closed_by_server(half_headers)
        with socket.create_connection(address) as half_body:
            half_body.sendall(b"POST /v1/update HTTP/1.1\r\nHost: device\r\n" + AUTH
                              + b"Content-Type: application/json\r\n"
                              b"Content-Length: 100\r\n\r\n{\"force\":")
            assert closed_by_server(half_body)
        with socket.create_connection(address) as second_request:
            # a keep-alive connection: the first request is fine, the second is half-sent
            second_request.sendall(b"GET /ping HTTP/1.1\r\nHost: device\r\n\r\n")
            assert read_response(second_request)[0] == 200
            second_request.sendall(b"GET /ping HTTP/1.1\r\nHo")
            assert closed_by_server(second_request)
        with socket.create_connection(address) as complete:  # the server still serves
            complete.sendall(b"GET /ping HTTP/1.1\r\nHost: device\r\n\r\n")
            assert read_response(complete) == (200, b"OK")
