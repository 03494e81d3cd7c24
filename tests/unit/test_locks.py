"""Update locks (locks.md §3, §5, §11) on real files in a temp dir: `LockDir` and `UpdateLocks`.

What counts as a lock (a file, a directory, a dangling symlink named like one), who owns it
(uid 65534 = the supervisor, anyone else = the user), all-or-nothing taking, `force`, reuse of
the supervisor's own leftovers and a cleanup that never touches user locks. Ownership needs
root (chown to 65534), which is how the supervisor runs on a device and in this suite.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from supervisor.errors import UpdatesLocked
from supervisor.locks import (
    LOCK_NAMES,
    SUPERVISOR_UID,
    LockDir,
    UpdateLocks,
    container_path,
    unlink,
)

APP = 123

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lock ownership needs root (chown)")


def svc_dir(root: Path, service: str, app: int = APP) -> Path:
    path = root / "services" / str(app) / service
    path.mkdir(parents=True, exist_ok=True)
    return path


def user_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    os.chown(path, 0, 0)
    return path


def supervisor_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    os.chown(path, SUPERVISOR_UID, SUPERVISOR_UID)
    return path


def locked_text(service: str, app: int = APP) -> str:
    return f"Lockfile exists for {{ appId: {app}, service: {service} }}"  # locks.md §5 step 4


def names(root: Path) -> set[str]:
    return {str(p.relative_to(root / "services")) for p in (root / "services").rglob("*")
            if p.name in LOCK_NAMES}


# -- what a lock is ------------------------------------------------------------------------------

def test_take_creates_both_files_owned_by_the_supervisor(tmp_path: Path) -> None:
    locks = LockDir(tmp_path)
    taken = locks.take(APP, ["one", "two"], force=False)
    assert names(tmp_path) == {f"{APP}/{s}/{n}" for s in ("one", "two") for n in LOCK_NAMES}
    assert sorted(map(str, taken)) == sorted(str(tmp_path / "services" / str(APP) / s / n)
                                             for s in ("one", "two") for n in LOCK_NAMES)
    for path in taken:
        assert path.lstat().st_uid == SUPERVISOR_UID
    assert {(lock.service_name, lock.owner) for lock in locks.find(APP)} == {
        ("one", "supervisor"), ("two", "supervisor")}


@pytest.mark.parametrize("name", LOCK_NAMES)
@pytest.mark.parametrize("kind", ["file", "directory", "dangling symlink"])
def test_a_file_a_directory_or_a_dangling_symlink_is_a_user_lock(
        tmp_path: Path, name: str, kind: str) -> None:
    path = svc_dir(tmp_path, "two") / name
    if kind == "file":
        user_file(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "nowhere")
        assert not path.exists()  # dangling: only lstat sees it
    locks = LockDir(tmp_path)

    found = locks.find(APP)
    assert [(lock.service_name, lock.path, lock.owner) for lock in found] == [
        ("two", str(path), "user")]
    assert locks.user_locks(APP) == found
    with pytest.raises(UpdatesLocked) as refused:
        locks.take(APP, ["one", "two"], force=False)
    assert str(refused.value) == locked_text("two")
    assert (refused.value.app_id, refused.value.service) == (APP, "two")
    # all or nothing: the locks taken on "one" are gone, the user's lock is still there
    assert names(tmp_path) == {f"{APP}/two/{name}"}
    assert os.path.lexists(path)


@pytest.mark.parametrize("kind", ["file", "directory", "dangling symlink"])
def test_force_replaces_a_user_lock(tmp_path: Path, kind: str) -> None:
    path = svc_dir(tmp_path, "two") / "updates.lock"
    if kind == "file":
        user_file(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "nowhere")
    locks = LockDir(tmp_path)
    taken = locks.take(APP, ["two"], force=True)
    assert path in taken
    assert path.is_file() and not path.is_symlink()
    assert path.lstat().st_uid == SUPERVISOR_UID
    assert locks.user_locks(APP) == []


def test_force_cannot_remove_a_non_empty_lock_directory(tmp_path: Path) -> None:
    """unlock's rmdir leaves a non-empty directory (locks.md §3): the lock stays held."""
    path = svc_dir(tmp_path, "two") / "updates.lock"
    path.mkdir()
    user_file(path / "inside")
    with pytest.raises(UpdatesLocked) as refused:
        LockDir(tmp_path).take(APP, ["two"], force=True)
    assert str(refused.value) == locked_text("two")
    assert (path / "inside").exists()


# -- the supervisor's leftovers --------------------------------------------------------------------

def test_leftover_supervisor_locks_are_reused(tmp_path: Path) -> None:
    """An existing supervisor-owned lock is reused as it is; only the missing one is created
    (locks.md §12, "An existing supervisor-owned resin-updates.lock is reused")."""
    leftover = supervisor_file(svc_dir(tmp_path, "two") / "resin-updates.lock")
    inode = leftover.lstat().st_ino
    locks = LockDir(tmp_path)
    assert [lock.owner for lock in locks.find(APP)] == ["supervisor"]
    assert locks.user_locks(APP) == []

    taken = locks.take(APP, ["two"], force=False)
    assert leftover in taken
    assert leftover.lstat().st_ino == inode
    assert (leftover.parent / "updates.lock").lstat().st_uid == SUPERVISOR_UID


def test_a_leftover_supervisor_directory_is_reused_and_released(tmp_path: Path) -> None:
    leftover = svc_dir(tmp_path, "one") / "updates.lock"
    leftover.mkdir()
    os.chown(leftover, SUPERVISOR_UID, SUPERVISOR_UID)
    locks = UpdateLocks(tmp_path)

    async def scenario() -> None:
        await locks.take(APP, ["one"], force=False)
        assert names(tmp_path) == {f"{APP}/one/{n}" for n in LOCK_NAMES}
        await locks.release(APP)

    asyncio.run(scenario())
    assert names(tmp_path) == set()


def test_a_refused_take_also_drops_the_leftovers_it_counted(tmp_path: Path) -> None:
    """On any error, everything taken so far goes, leftovers included (locks.md §5 step 5)."""
    supervisor_file(svc_dir(tmp_path, "one") / "updates.lock")
    user_file(svc_dir(tmp_path, "two") / "resin-updates.lock")
    with pytest.raises(UpdatesLocked):
        LockDir(tmp_path).take(APP, ["one", "two"], force=False)
    assert names(tmp_path) == {f"{APP}/two/resin-updates.lock"}


def test_cleanup_removes_only_supervisor_locks(tmp_path: Path) -> None:
    for name in LOCK_NAMES:
        supervisor_file(svc_dir(tmp_path, "one") / name)
        user_file(svc_dir(tmp_path, "two") / name)
        supervisor_file(svc_dir(tmp_path, "one", app=APP + 1) / name)
    user_dir = svc_dir(tmp_path, "three") / "updates.lock"
    user_dir.mkdir()
    locks = LockDir(tmp_path)

    assert locks.clean_supervisor_locks(APP) == 2
    assert names(tmp_path) == {f"{APP}/two/{n}" for n in LOCK_NAMES} | {
        f"{APP}/three/updates.lock"} | {f"{APP + 1}/one/{n}" for n in LOCK_NAMES}
    assert locks.clean_supervisor_locks() == 2  # every app
    assert names(tmp_path) == {f"{APP}/two/{n}" for n in LOCK_NAMES} | {
        f"{APP}/three/updates.lock"}
    for name in LOCK_NAMES:
        assert (svc_dir(tmp_path, "two") / name).lstat().st_uid == 0


def test_release_cleans_leftovers_of_the_app_and_keeps_user_locks(tmp_path: Path) -> None:
    supervisor_file(svc_dir(tmp_path, "gone") / "updates.lock")  # a service no longer there
    user_file(svc_dir(tmp_path, "two") / "updates.lock")
    locks = UpdateLocks(tmp_path)

    async def scenario() -> None:
        assert await locks.leftover_apps() == frozenset({APP})
        await locks.take(APP, ["one"], force=False)
        assert await locks.leftover_apps() == frozenset()  # held: not a leftover
        await locks.release(APP)

    asyncio.run(scenario())
    assert names(tmp_path) == {f"{APP}/two/updates.lock"}


# -- where locks are looked for --------------------------------------------------------------------

def test_find_skips_what_is_not_an_app_or_service_dir(tmp_path: Path) -> None:
    user_file(tmp_path / "services" / "notanapp" / "one" / "updates.lock")
    user_file(tmp_path / "services" / str(APP) / "updates.lock")  # not in a service dir
    user_file(tmp_path / "elsewhere" / "updates.lock")
    (tmp_path / "services" / str(APP) / "linked").symlink_to(tmp_path / "elsewhere")
    user_file(svc_dir(tmp_path, "one") / "other.lock")
    assert LockDir(tmp_path).find() == []
    assert LockDir(tmp_path / "missing").find() == []


def test_unlink_removes_files_empty_dirs_and_symlinks_and_never_raises(tmp_path: Path) -> None:
    file = user_file(tmp_path / "a")
    empty = tmp_path / "b"
    empty.mkdir()
    full = tmp_path / "c"
    full.mkdir()
    user_file(full / "x")
    link = tmp_path / "d"
    link.symlink_to(tmp_path / "nowhere")
    for path in (file, empty, full, link, tmp_path / "missing"):
        unlink(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


# -- one supervisor operation per app ------------------------------------------------------------

def test_one_owner_at_a_time(tmp_path: Path) -> None:
    locks = UpdateLocks(tmp_path)

    async def scenario() -> None:
        await locks.take(APP, ["one"], force=False, owner="loop")
        await locks.take(APP, ["two"], force=False, owner="loop")  # the same owner adds
        assert locks.held_apps("loop") == frozenset({APP})
        assert locks.foreign_apps("action") == frozenset({APP})
        assert locks.foreign_apps("loop") == frozenset()
        with pytest.raises(UpdatesLocked) as refused:
            await locks.take(APP, ["one"], force=True, owner="action")
        assert str(refused.value) == (
            f"Locks for app {APP} are being held by another supervisor operation")  # §5 step 2
        await locks.release(APP, owner="action")  # not theirs: a no-op
        assert names(tmp_path) == {f"{APP}/{s}/{n}" for s in ("one", "two") for n in LOCK_NAMES}
        await locks.release(APP, owner="loop")
        assert names(tmp_path) == set()
        await locks.take(APP, ["one"], force=False, owner="action")
        assert locks.held_apps("action") == frozenset({APP})

    asyncio.run(scenario())


def test_handover_signal_files(tmp_path: Path) -> None:
    locks = LockDir(tmp_path)
    assert not locks.handover_signalled(APP, "one")
    user_file(svc_dir(tmp_path, "one") / "resin-kill-me")
    assert locks.handover_signalled(APP, "one")
    user_file(svc_dir(tmp_path, "one") / "handover-complete")
    locks.clear_handover(APP, "one")
    assert not locks.handover_signalled(APP, "one")
    assert sorted(p.name for p in svc_dir(tmp_path, "one").iterdir()) == []


def test_container_path_is_what_a_service_sees() -> None:
    assert container_path("/host/locks/services/1/main/resin-updates.lock") == \
        "/tmp/balena/resin-updates.lock"
    assert container_path("") == ""
