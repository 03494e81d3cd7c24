"""Secrets stay private, the lock root is ours, and a removed service's key dies.

Real files and a real SQLite database in a temp dir; key revocation through the HTTP app over
the real runtime (managed mode, so keys are checked).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from supervisor.api.actions import RuntimeApi
from supervisor.api.app import build_app
from supervisor.errors import ConfigError
from supervisor.fsperm import owned_directory
from supervisor.host.hostconfig import HostConfigPatch, apply_patch
from supervisor.model.current import Current
from supervisor.model.target import parse_local_target
from supervisor.reconciler import LoopState
from supervisor.runtime import Runtime
from supervisor.settings import load_settings
from supervisor.store import AsyncStore, Store

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

UUID = "c" * 32


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# ------------------------------------------------------------------------------- file modes

def test_a_new_database_and_its_wal_and_shm_are_0600_in_a_0700_dir(tmp_path: Path) -> None:
    db = tmp_path / "data" / "database.sqlite"
    with Store(db) as store:
        store.global_api_key()  # a write: the WAL and its index exist now
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert all(p.exists() for p in files)
        assert [mode(p) for p in files] == [0o600, 0o600, 0o600]
    assert mode(db.parent) == 0o700


def test_open_fixes_the_modes_of_existing_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "database.sqlite"
    with Store(db) as store:
        store.global_api_key()
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        for path in files:
            path.chmod(0o644)  # as an older version left them
    data.chmod(0o755)
    with Store(db) as store:
        store.regenerate_api_key(store.global_api_key())  # a write: -wal and -shm exist
        assert [mode(p) for p in files] == [0o600, 0o600, 0o600]
    assert mode(data) == 0o700


def test_a_data_dir_we_do_not_own_keeps_its_mode(tmp_path: Path) -> None:
    data = tmp_path / "shared"
    data.mkdir(mode=0o755)
    os.chown(data, 65534, 65534)
    with Store(data / "database.sqlite") as store:
        store.global_api_key()
    assert mode(data) == 0o755
    assert mode(data / "database.sqlite") == 0o600


def test_redsocks_conf_is_written_0600(tmp_path: Path) -> None:
    apply_patch(tmp_path, HostConfigPatch(proxy={"type": "socks5", "ip": "p.example",
                                                 "port": 1080, "password": "secret"}),
                UUID, lambda _name: None)
    conf = tmp_path / "system-proxy" / "redsocks.conf"
    assert 'password = "secret"' in conf.read_text()
    assert mode(conf) == 0o600
    apply_patch(tmp_path, HostConfigPatch(no_proxy=("10.0.0.0/8",), proxy={"ip": "q.example"}),
                UUID, lambda _name: None)
    assert mode(conf) == 0o600  # rewritten: still private


# -------------------------------------------------------------------------------- lock root

def test_lock_root_is_created_and_accepted_when_ours(tmp_path: Path) -> None:
    root = tmp_path / "tmp" / "balena-supervisor"
    assert owned_directory(root, "--locks-dir") == root
    assert root.is_dir() and not root.is_symlink()
    assert owned_directory(root, "--locks-dir") == root  # again: it exists


def test_lock_root_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    link = tmp_path / "balena-supervisor"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        owned_directory(link, "--locks-dir")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="is a symbolic link"):
        owned_directory(dangling, "--locks-dir")


def test_lock_root_of_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "balena-supervisor"
    root.mkdir()
    os.chown(root, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        owned_directory(root, "--locks-dir")


# ---------------------------------------------------------------------------- the runtime

def settings_for(tmp_path: Path, **config: Any) -> Any:
    boot = tmp_path / "boot"
    boot.mkdir(exist_ok=True)
    (boot / "config.json").write_text(json.dumps({"uuid": UUID, **config}))
    return load_settings({
        "data_dir": str(tmp_path / "data"), "boot_dir": str(boot),
        "state_dir": str(tmp_path / "state"), "locks_dir": str(tmp_path / "locks"),
        "listen": "127.0.0.1:48484", "host_actions": "dry-run",
        "docker_host": f"unix://{tmp_path}/no-engine.sock"}, {})


def test_start_refuses_a_symlinked_lock_root_before_anything_else(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    (tmp_path / "real-locks").mkdir()
    (tmp_path / "locks").symlink_to(tmp_path / "real-locks")
    with pytest.raises(ConfigError, match="is a symbolic link"):
        asyncio.run(Runtime(settings).start())
    assert not (tmp_path / "data").exists()  # refused before the database was opened


class _Loop:
    def __init__(self) -> None:
        self.state = LoopState()
        self.current: Current | None = Current()
        self.batch_in_flight = False

    def mark_dirty(self, *, force: bool = False) -> None: ...

    def target_changed(self, *, force: bool = False) -> None: ...


def local(apps: dict[int, list[str]]) -> dict[str, Any]:
    """A local-format target: each service asks for the supervisor API."""
    return {"local": {"name": "dev", "config": {}, "apps": {str(app_id): {
        "name": f"app{app_id}", "commit": f"c0ffee{app_id}", "releaseId": app_id,
        "services": {str(i): {"serviceName": svc, "imageId": i, "image": "busybox",
                              "environment": {},
                              "labels": {"io.balena.features.supervisor-api": "1"}}
                     for i, svc in enumerate(services, start=1)}}
        for app_id, services in apps.items()}}}


@pytest.fixture
def managed(tmp_path: Path) -> Iterator[tuple[Runtime, TestClient, asyncio.AbstractEventLoop]]:
    settings = settings_for(tmp_path, apiEndpoint="http://127.0.0.1:9", deviceApiKey="d" * 32)
    assert not settings.unmanaged
    rt = Runtime(settings)
    loop = asyncio.new_event_loop()
    rt.store = loop.run_until_complete(AsyncStore.open(settings.db_path))
    loop.run_until_complete(rt.store.global_api_key())
    rt.reconciler = _Loop()  # type: ignore[assignment]
    rt._device = rt.device_view()
    rt.publish()
    try:
        with TestClient(build_app(RuntimeApi(rt))) as client:
            yield rt, client, loop
    finally:
        loop.run_until_complete(rt.store.close())
        loop.close()


def test_a_removed_services_key_gets_401(
        managed: tuple[Runtime, TestClient, asyncio.AbstractEventLoop]) -> None:
    rt, client, loop = managed

    def set_target(apps: dict[int, list[str]]) -> None:
        target = parse_local_target(local(apps), device_uuid=UUID)
        loop.run_until_complete(rt.set_target(target, source="cloud"))

    def answer(key: str) -> int:
        return client.get("/v2/version", headers={"Authorization": f"Bearer {key}"}).status_code

    set_target({1: ["main", "side"], 2: ["web"]})
    keys = rt.device_context().supervisor_api_keys
    main, side, web = keys[(1, "main")], keys[(1, "side")], keys[(2, "web")]
    assert [answer(k) for k in (main, side, web)] == [200, 200, 200]

    set_target({1: ["main"], 2: ["web"]})  # the service `side` leaves
    assert [answer(k) for k in (main, side, web)] == [200, 401, 200]

    set_target({1: ["main"]})  # app 2 leaves
    assert [answer(k) for k in (main, web)] == [200, 401]
    assert rt.device_context().supervisor_api_keys == {(1, "main"): main}

    set_target({1: ["main"], 2: ["web"]})  # back: a new key, the old one stays dead
    new_web = rt.device_context().supervisor_api_keys[(2, "web")]
    assert new_web != web and answer(new_web) == 200 and answer(web) == 401
    global_key = loop.run_until_complete(rt.store.global_api_key())
    set_target({})  # nothing left: the global key is never revoked
    assert (answer(global_key), answer(main), answer(new_web)) == (200, 401, 401)
