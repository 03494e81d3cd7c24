"""The devcloud's own bounds (docs/security.md "The devcloud"): every route checks its caller
before it reads a body, bodies and inflated log streams are bounded, keys are compared in
constant time, the admin token never goes on a command line, its files are private, and a
device cannot forge lines of its log.

The real server runs as a subprocess on 127.0.0.1 (tests/api/devcloud_proc.py): the bodies
are sent on a raw socket and the server's memory is read from /proc.
"""

from __future__ import annotations

import gzip
import hmac
import select
import socket
import stat
import warnings
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from supervisor.devcloud.cli import Client
from supervisor.devcloud.cli import main as devcloud_main
from supervisor.devcloud.db import Db
from supervisor.devcloud.server import BODY_LIMIT, DevCloud, build_app
from tests.api.devcloud_proc import Cloud, free_port, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

WAIT_S = 30.0  # far beyond an answer that does not wait for the body


def memory(cloud: Cloud, field: str) -> int:
    assert cloud.proc is not None
    for line in Path(f"/proc/{cloud.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_memory(cloud: Cloud) -> None:
    assert cloud.proc is not None
    Path(f"/proc/{cloud.proc.pid}/clear_refs").write_text("5")


def answer_of(sock: socket.socket) -> tuple[int, bytes]:
    """(status, first bytes) of the server's answer; fails if none comes within WAIT_S."""
    sock.settimeout(WAIT_S)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"no answer within {WAIT_S} s: the server waits for the body")
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    headers, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in headers.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(data.split()[1]), body


def head(method: str, path: str, auth: str, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: cloud\r\nAuthorization: {auth}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


# Routes that take a body, each with a caller it must refuse.
BODY_ROUTES = [
    ("POST", "/device/register"),
    ("PATCH", "/v7/device(1)"),
    ("POST", "/api-key/device/1/device-key"),
    ("PATCH", "/device/v3/state"),
    ("PATCH", "/device/v3/tags"),
    ("POST", f"/device/v2/{'feed' * 8}/log-stream"),
    ("POST", "/supervisor/v1/blink"),
    ("POST", "/admin/fleets"),
    ("PATCH", "/admin/fleets/logs"),
    ("POST", "/admin/fleets/logs/releases"),
    ("PATCH", f"/admin/devices/{'feed' * 8}"),
    ("PUT", "/admin/fleets/logs/env/A"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_a_wrong_key_is_refused_before_the_body_is_read(
        cloud: Cloud, method: str, path: str) -> None:
    # The body is announced and never sent: an answer proves it was not waited for.
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=WAIT_S) as sock:
        sock.sendall(head(method, path, "Bearer wrongkey", "Content-Length: 1000000\r\n"))
        status, _ = answer_of(sock)
    assert status in (401, 403)


def test_a_body_announced_over_the_limit_is_refused_unread(cloud: Cloud) -> None:
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=WAIT_S) as sock:
        sock.sendall(head("PATCH", "/device/v3/state", f"Bearer {cloud.key}",
                          f"Content-Length: {BODY_LIMIT + 1}\r\n"))
        status, data = answer_of(sock)
    assert status == 413 and b"request entity too large" in data


def test_a_chunked_body_over_the_limit_is_refused_with_bounded_memory(cloud: Cloud) -> None:
    def upload(total: int) -> tuple[int, int]:
        frame = b"%x\r\n" % (256 * 1024) + b" " * (256 * 1024) + b"\r\n"
        sent = 0
        with socket.create_connection(("127.0.0.1", cloud.port), timeout=WAIT_S) as sock:
            sock.sendall(head("PATCH", "/device/v3/state", f"Bearer {cloud.key}",
                              "Transfer-Encoding: chunked\r\n"))
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)
                sent += 256 * 1024
            status, _ = answer_of(sock)
        return status, sent

    upload(2 * BODY_LIMIT)  # warm up
    before = memory(cloud, "VmRSS")
    reset_peak_memory(cloud)
    status, sent = upload(200 * 1024 * 1024)
    growth = memory(cloud, "VmHWM") - before
    assert status == 413
    assert BODY_LIMIT < sent < 200 * 1024 * 1024  # refused while the body was still coming
    assert growth < BODY_LIMIT, f"peak memory grew by {growth} bytes"


def test_a_gzip_bomb_in_the_log_stream_inflates_in_bounded_steps(cloud: Cloud) -> None:
    # 64 MB of junk lines in ~140 KB of gzip: inflated whole (or all the lines of a request
    # chunk listed at once) it costs the server tens of MB.
    bomb = gzip.compress((b"x" * 1023 + b"\n") * (64 * 1024), compresslevel=9)
    assert len(bomb) < 256 * 1024
    path = f"/device/v2/{cloud.uuid}/log-stream"
    before = memory(cloud, "VmRSS")
    reset_peak_memory(cloud)
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=WAIT_S) as sock:
        sock.sendall(head("POST", path, f"Bearer {cloud.key}",
                          f"Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n") + bomb)
        status, _ = answer_of(sock)
    growth = memory(cloud, "VmHWM") - before
    assert status == 200
    assert growth < 16 * 1024 * 1024, f"peak memory grew by {growth} bytes"


# ------------------------------------------------------------------- constant-time compares

def test_every_key_is_compared_in_constant_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[frozenset[bytes]] = []  # the pairs hmac.compare_digest was given
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append(frozenset(x if isinstance(x, bytes) else str(x).encode()
                                  for x in (a, b)))
        return real(a, b)

    db = Db(tmp_path / "cloud.sqlite")
    with TestClient(build_app(DevCloud(db, "admintoken")), base_url="http://127.0.0.1") as c:
        admin = {"Authorization": "Bearer admintoken"}
        c.post("/admin/fleets", json={"name": "f"}, headers=admin)
        made = c.post("/admin/fleets/f/provisioning-keys", headers=admin).json()
        prov = made["key"]
        uuid, key = "a" * 32, "devicekey1"
        monkeypatch.setattr(hmac, "compare_digest", spy)

        def checked(secret: str, method: str, path: str, match: str | None = None,
                    **kw: Any) -> int:
            """The request's key was compared with the key it matches (itself, or for a
            wrong key the device's) by hmac.compare_digest, not by == or SQL."""
            compared.clear()
            status = c.request(method, path, headers={"Authorization": f"Bearer {secret}"},
                               **kw).status_code
            pair = frozenset({secret.encode(), (match or secret).encode()})
            assert pair in compared, f"{method} {path}: not compared in constant time"
            return status

        assert checked(prov, "POST", "/device/register", json={
            "application": made["applicationId"], "uuid": uuid, "api_key": key,
            "device_type": made["deviceType"]}) == 201
        assert checked(key, "GET", f"/device/v3/{uuid}/state") == 200
        assert checked(key, "PATCH", "/device/v3/state", json={uuid: {"status": "Idle"}}) == 200
        assert checked(key, "PATCH", "/v7/device(1)", json={"device_name": "n"}) == 200
        assert checked(key, "GET", f"/v7/device_tag?$filter=device/uuid eq '{uuid}'") == 200
        # openBalena: a provisioning key does not see devices; it is checked as a device key
        assert checked(prov, "GET", f"/v7/device?$filter=uuid eq '{uuid}'", match=key) == 200
        assert checked("admintoken", "GET", "/admin/fleets") == 200
        assert checked("wrongkey", "GET", f"/device/v3/{uuid}/state", match=key) == 401
    db.close()


# ------------------------------------------------------------------------ the admin token

def test_no_token_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    # refused as unknown (argparse's usage error), not taken as an abbreviation of --token-file
    assert devcloud_main(["--token", "secret", "fleet", "list"], env={}) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and "token-file" not in err.splitlines()[-1]


def test_the_token_from_the_environment_or_a_file_and_private_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # as an older version left it
    cloud = Cloud(data, free_port(), env={"DEVCLOUD_TOKEN": "envtoken1"})
    cloud.start()
    try:
        token_file = data / "admin-token"
        assert token_file.read_text() == "envtoken1\n"
        modes = {p.name: stat.S_IMODE(p.stat().st_mode)
                 for p in (data, token_file, data / "devcloud.sqlite")}
        assert modes == {"data": 0o700, "admin-token": 0o600, "devcloud.sqlite": 0o600}

        listen = ["--listen", f"127.0.0.1:{cloud.port}", "--data-dir", str(tmp_path / "none")]
        assert devcloud_main([*listen, "fleet", "list"], env={"DEVCLOUD_TOKEN": "envtoken1"}) \
            == 0
        assert devcloud_main([*listen, "fleet", "list"], env={"DEVCLOUD_TOKEN": "wrong"}) == 2
        mine = tmp_path / "token"
        mine.write_text("envtoken1\n")
        assert devcloud_main([*listen, "--token-file", str(mine), "fleet", "list"], env={}) == 0
        err = capsys.readouterr().err
        assert "HTTP 401" in err and "envtoken1" not in err
    finally:
        cloud.stop()


def test_a_device_cannot_forge_lines_of_the_log(cloud: Cloud) -> None:
    made = cloud.client().call("POST", "/admin/fleets/logs/provisioning-keys")
    uuid = "b" * 32 + "\nFORGED INFO line\x1b[31m"
    Client(cloud.url, made["key"]).call("POST", "/device/register", {
        "application": made["applicationId"], "uuid": uuid, "api_key": "other",
        "device_type": made["deviceType"]})
    log = cloud.data_dir / "devcloud.log"
    wait_for(lambda: "\\nFORGED INFO line\\x1b[31m" in log.read_text(), "the escaped log line")
    text = log.read_text()
    assert not any(line.startswith("FORGED") for line in text.splitlines())
    assert "\x1b" not in text
