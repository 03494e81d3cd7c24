"""A real supervisor process: secrets left world-readable by an older version are private
once it has started, a lock root it does not own is refused, and a request cannot forge
lines of its log."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from supervisor.store import Store
from tests.integration.supervisor_proc import SupervisorProc


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_secret_files_are_made_private_at_start(sup: Any, tmp_path: Path) -> None:
    root = tmp_path / "sup0"
    data, boot = root / "data", root / "boot"
    db = data / "database.sqlite"
    data.mkdir(parents=True)
    with Store(db) as store:  # a database with keys, left 0644 in a 0755 dir
        store.global_api_key()
    (boot / "system-proxy").mkdir(parents=True)
    redsocks = boot / "system-proxy" / "redsocks.conf"
    redsocks.write_text('redsocks {\n\ttype = socks5;\n\tip = p.example;\n\tport = 1080;\n'
                        '\tlogin = "u";\n\tpassword = "secret";\n}\n')
    config = boot / "config.json"
    config.write_text(json.dumps({"uuid": "e" * 32, "deviceApiKey": "f" * 32}))
    for path in (db, redsocks, config):
        path.chmod(0o644)
    data.chmod(0o755)

    proc = sup()  # starts in tmp_path / "sup0"
    assert proc.root == root
    proc.post_target({"local": {"name": "dev", "config": {}, "apps": {}}})  # a write
    wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
    proc.wait_for(lambda: wal.exists() and shm.exists(), what="the WAL files")
    assert {p.name: oct(mode(p)) for p in (db, wal, shm, redsocks, config)} == {
        p.name: oct(0o600) for p in (db, wal, shm, redsocks, config)}
    assert mode(data) == 0o700


def test_a_lock_root_we_do_not_own_is_refused(tmp_path: Path) -> None:
    for case in ("symlink", "foreign"):
        proc = SupervisorProc(tmp_path / case)
        locks = proc.root / "locks"
        locks.rmdir()
        if case == "symlink":
            (proc.root / "elsewhere").mkdir()
            locks.symlink_to(proc.root / "elsewhere")
        else:
            locks.mkdir()
            os.chown(locks, 65534, 65534)
        proc.start(wait=False)
        assert proc.proc is not None
        assert proc.proc.wait(timeout=60) != 0
        expected = "is a symbolic link" if case == "symlink" else "is owned by uid 65534"
        assert expected in proc.log()
        assert "--locks-dir" in proc.log()
        proc.stop()


def test_a_request_cannot_forge_log_lines(sup: Any) -> None:
    proc = sup()
    forged = "2026-12-07 11:00:00,000 INFO supervisor.api: forged"
    path = "/v1/%0A" + forged.replace(" ", "%20") + "%0D%1B[31m"
    with socket.create_connection(("127.0.0.1", proc.port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: device\r\nContent-Length: 0\r\n\r\n"
                     .encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 404 ")
    escaped = "POST /v1/\\n" + forged + "\\r\\x1b[31m 404"
    proc.wait_for(lambda: escaped in proc.log(tail=None), what="the escaped request log line")
    log = proc.log(tail=None)
    assert not any(line.startswith(forged) for line in log.splitlines())
    assert "\x1b" not in log and "\r" not in log
