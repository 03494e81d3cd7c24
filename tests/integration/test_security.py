"""A real supervisor process: secrets left world-readable by an older version are private
once it has started, and a lock root it does not own is refused."""

from __future__ import annotations

import json
import os
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
