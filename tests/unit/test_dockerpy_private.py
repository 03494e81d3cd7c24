"""The docker-py private API behind engine/dockerpy_private.py: the names and signatures we
call still exist, and they still do what the log followers need (a versioned URL, an unread
streamed body, 404 -> NotFound, a blocked read cut from another thread). Against a local HTTP
server on 127.0.0.1 standing in for the engine's socket; the real engine is exercised by
tests/integration/test_logs.py."""

from __future__ import annotations

import http.server
import inspect
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.types import CancellableStream

from supervisor.engine import dockerpy_private

OWNERS: dict[str, Any] = {"APIClient": docker.APIClient, "CancellableStream": CancellableStream}


def _undecorated(fn: Any) -> Any:
    """The function under docker-py's decorators (`update_headers` wraps `_get` without
    `functools.wraps`, so its own signature is `(self, *args, **kwargs)`)."""
    while "<locals>" in getattr(fn, "__qualname__", ""):
        inner = [c.cell_contents for c in fn.__closure__ or ()
                 if inspect.isfunction(c.cell_contents)]
        if len(inner) != 1:
            break
        fn = inner[0]
    return fn


@pytest.mark.parametrize("name", sorted(dockerpy_private.PRIVATE_API))
def test_private_names_exist_with_the_signatures_we_call(name: str) -> None:
    owner, attr = name.split(".")
    fn = getattr(OWNERS[owner], attr, None)
    assert callable(fn), f"docker-py no longer has {name}"
    params = tuple(inspect.signature(_undecorated(fn)).parameters)
    assert params == dockerpy_private.PRIVATE_API[name], f"{name} changed: {params}"


def test_the_listed_signatures_are_the_ones_docker_py_7_has() -> None:
    # Guard against the table above being edited to match a changed docker-py by mistake.
    assert dockerpy_private.PRIVATE_API == {
        "APIClient._url": ("self", "pathfmt", "args", "kwargs"),
        "APIClient._get": ("self", "url", "kwargs"),
        "APIClient._raise_for_status": ("self", "response"),
        "CancellableStream.__init__": ("self", "stream", "response"),
        "CancellableStream.close": ("self",),
    }


class _Engine(http.server.BaseHTTPRequestHandler):
    """`/v1.41/containers/quiet/logs`: one line then silence; anything else: 404."""

    seen: list[str] = []
    release = threading.Event()
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.path.startswith("/v1.41/containers/quiet/logs?"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"6\r\nhello\n\r\n")
            self.wfile.flush()
            self.release.wait(60)  # a quiet container: nothing more until the test ends
            return
        body = json.dumps({"message": "No such container: missing"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[docker.APIClient]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    server.daemon_threads = True
    _Engine.seen.clear()
    _Engine.release.clear()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = docker.APIClient(base_url=f"tcp://127.0.0.1:{server.server_address[1]}",
                              version="1.41", timeout=None)
    try:
        yield client
    finally:
        _Engine.release.set()
        client.close()
        server.shutdown()
        server.server_close()


def test_open_stream_builds_the_versioned_url_and_leaves_the_body_unread(
        api: docker.APIClient) -> None:
    response = dockerpy_private.open_stream(api, "/containers/{0}/logs", "quiet",
                                            params={"follow": 1, "stderr": 1})
    try:
        dockerpy_private.raise_for_status(api, response)  # 200: no error
        assert _Engine.seen == ["/v1.41/containers/quiet/logs?follow=1&stderr=1"]
        assert response.raw.read1(65536) == b"hello\n"  # streamed: the server is still open
    finally:
        dockerpy_private.shutdown(response)
        response.close()


def test_raise_for_status_turns_404_into_not_found(api: docker.APIClient) -> None:
    response = dockerpy_private.open_stream(api, "/containers/{0}/logs", "missing", params={})
    with pytest.raises(docker.errors.NotFound, match="No such container: missing"):
        dockerpy_private.raise_for_status(api, response)


def test_shutdown_from_another_thread_ends_a_blocked_read(api: docker.APIClient) -> None:
    response = dockerpy_private.open_stream(api, "/containers/{0}/logs", "quiet",
                                            params={"follow": 1})
    first = threading.Event()
    ended = threading.Event()

    def read() -> None:
        try:
            while response.raw.read1(65536):
                first.set()
        except Exception:  # a shut-down socket may raise instead of reading b""
            pass
        ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert first.wait(30), "the first line never arrived"
    assert not ended.is_set()  # blocked: the server sends nothing more until released
    dockerpy_private.shutdown(response)
    # Generous: the server holds the stream for 60 s, so only the shutdown ends it sooner.
    assert ended.wait(30), "shutdown did not end the blocked read"
    response.close()


def test_no_other_module_uses_docker_py_private_names() -> None:
    # `api._get(`, `client._url(`, `CancellableStream(`...: only the adapter may.
    root = Path(dockerpy_private.__file__).parents[1]
    private = re.compile(r"\b(?:api|client|_api|docker\w*)\s*\.\s*_[a-z]\w*|CancellableStream"
                         r"|\bdocker\.(?:utils|transport|api)\b")
    offenders = [f"{path.relative_to(root)}:{n}: {line.strip()}"
                 for path in sorted(root.rglob("*.py"))
                 if path.name != "dockerpy_private.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if private.search(line)]
    assert offenders == []
