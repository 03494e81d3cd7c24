"""Backup restore (state.md §10) on temp dirs: real tar.gz archives, the declared-volume
check with upstream's texts, the moves into mountpoints, clean-up, and the retry loop. The
engine side is a directory-backed VolumeRestorer (what the wiring does with Docker volumes)."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from supervisor.host.backup import (
    BACKUP_DIR,
    BackupError,
    backup_file,
    extract_backup,
    move_contents,
    plan_restore,
    restore_backup,
    restore_with_retry,
)
from supervisor.model.compose import VolumeConfig
from supervisor.model.target import TargetState, parse_target

DEVICE = "d1ce" * 8


def target(volumes: dict[str, Any], *, second_app: bool = False) -> TargetState:
    apps: dict[str, Any] = {"a" * 32: {"id": 12, "name": "first", "releases": {"c1": {
        "id": 1, "services": {}, "volumes": volumes}}}}
    if second_app:
        apps["b" * 32] = {"id": 13, "name": "second", "releases": {"c2": {
            "id": 2, "services": {}, "volumes": {"other": {}}}}}
    return parse_target({DEVICE: {"name": "d", "config": {}, "apps": apps}},
                        device_uuid=DEVICE)


def make_archive(data_dir: Path, files: dict[str, bytes], *, dirs: tuple[str, ...] = (),
                 prefix: str = "./") -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(backup_file(data_dir), "w:gz") as tar:
        for name in dirs:
            info = tarfile.TarInfo(prefix + name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, body in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


class DirectoryVolumes:
    """Volumes as directories `<root>/<appId>_<name>/_data`, like the engine's local driver."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[int, str, VolumeConfig]] = []

    async def recreate_volume(self, app_id: int, name: str, config: VolumeConfig) -> Path:
        self.calls.append((app_id, name, config))
        volume = self.root / f"{app_id}_{name}"
        if volume.exists():
            await asyncio.to_thread(_rmtree, volume)
        mountpoint = volume / "_data"
        mountpoint.mkdir(parents=True)
        return mountpoint


def _rmtree(path: Path) -> None:
    import shutil
    shutil.rmtree(path)


def test_plan_maps_directories_to_the_first_apps_volumes(tmp_path: Path) -> None:
    t = target({"data": {"driver": "local"}, "cache": {}}, second_app=True)
    plan = plan_restore(t, {"data": True, "cache": True}, tmp_path)
    assert (plan.app_id, plan.app_uuid) == (12, "a" * 32)
    assert [(v.name, v.source) for v in plan.volumes] == [
        ("cache", tmp_path / "cache"), ("data", tmp_path / "data")]


@pytest.mark.parametrize(("entries", "message"), [
    ({"other": True}, "Invalid backup: other is present in backup but not in target state"),
    ({"data": False}, "Invalid backup: data is not a directory"),
])
def test_plan_refuses_what_the_release_does_not_declare(entries: dict[str, bool],
                                                       message: str, tmp_path: Path) -> None:
    with pytest.raises(BackupError) as caught:
        plan_restore(target({"data": {}}, second_app=True), entries, tmp_path)
    assert str(caught.value) == message


def test_plan_needs_an_app(tmp_path: Path) -> None:
    empty = parse_target({DEVICE: {"name": "d", "config": {}, "apps": {}}}, device_uuid=DEVICE)
    with pytest.raises(BackupError, match=r"^No apps in the target state$"):
        plan_restore(empty, {}, tmp_path)


def test_extract_lists_top_level_entries(tmp_path: Path) -> None:
    make_archive(tmp_path, {"data/a.txt": b"A", "data/sub/b.txt": b"B", "loose": b"x"},
                 dirs=("data", "data/sub"))
    (tmp_path / BACKUP_DIR).mkdir()
    (tmp_path / BACKUP_DIR / "stale").write_text("from a crashed run")
    assert extract_backup(tmp_path) == {"data": True, "loose": False}
    assert (tmp_path / BACKUP_DIR / "data" / "sub" / "b.txt").read_bytes() == b"B"


def test_extract_refuses_members_leaving_the_directory(tmp_path: Path) -> None:
    make_archive(tmp_path, {"../escape": b"evil"}, prefix="")
    with pytest.raises(BackupError, match="cannot extract"):
        extract_backup(tmp_path)
    assert not (tmp_path.parent / "escape").exists()


def test_extract_keeps_absolute_members_inside(tmp_path: Path) -> None:
    make_archive(tmp_path, {"/abs/path": b"x"}, prefix="")
    assert extract_backup(tmp_path) == {"abs": True}
    assert (tmp_path / BACKUP_DIR / "abs" / "path").read_bytes() == b"x"


def test_extract_bounds(tmp_path: Path) -> None:
    make_archive(tmp_path, {f"data/{i}": b"x" * 10 for i in range(5)}, dirs=("data",))
    with pytest.raises(BackupError, match="more than 3 entries"):
        extract_backup(tmp_path, max_members=3)
    with pytest.raises(BackupError, match="more than 20 bytes"):
        extract_backup(tmp_path, max_bytes=20)
    backup_file(tmp_path).write_bytes(b"not a tarball")
    with pytest.raises(BackupError, match="cannot extract"):
        extract_backup(tmp_path)


def test_move_contents_replaces_same_named_entries(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "new").write_text("new")
    (src / "file").write_text("new file")
    (dest / "dir").mkdir(parents=True)
    (dest / "dir" / "old").write_text("old")
    (dest / "keep").write_text("kept")
    move_contents(src, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["dir", "file", "keep"]
    assert [p.name for p in (dest / "dir").iterdir()] == ["new"]
    assert not any(src.iterdir())


def test_restore_lands_in_the_declared_volume_and_cleans_up(tmp_path: Path) -> None:
    data_dir, engine = tmp_path / "data", tmp_path / "volumes"
    make_archive(data_dir, {"data/db.sqlite": b"rows", "data/conf/app.ini": b"k=v"},
                 dirs=("data", "data/conf"))
    stale = engine / "12_data" / "_data"
    stale.mkdir(parents=True)
    (stale / "half-done").write_text("left by a crashed restore")
    volumes = DirectoryVolumes(engine)
    t = target({"data": {"driver": "local", "labels": {"x": "y"}}})
    assert asyncio.run(restore_backup(data_dir, t, volumes)) is True
    mountpoint = engine / "12_data" / "_data"
    assert (mountpoint / "db.sqlite").read_bytes() == b"rows"
    assert (mountpoint / "conf" / "app.ini").read_bytes() == b"k=v"
    assert not (mountpoint / "half-done").exists()
    assert volumes.calls == [(12, "data", VolumeConfig(labels={"x": "y"}))]
    assert not backup_file(data_dir).exists()
    assert not (data_dir / BACKUP_DIR).exists()
    assert asyncio.run(restore_backup(data_dir, t, volumes)) is False  # done once


def test_failed_restore_is_retried_and_keeps_the_archive(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    make_archive(data_dir, {"undeclared/x": b"x"}, dirs=("undeclared",))
    t = target({"data": {}})
    logged: list[str] = []
    volumes = DirectoryVolumes(tmp_path / "volumes")

    async def fix_after_sleep(delay: float) -> None:
        assert delay == 30.0
        assert backup_file(data_dir).exists()  # a failed attempt never deletes the archive
        make_archive(data_dir, {"data/x": b"x"}, dirs=("data",))  # e.g. a new release

    ok = asyncio.run(restore_with_retry(data_dir, t, volumes, retry_delay_s=30.0,
                                        log=logged.append, sleep=fix_after_sleep))
    assert ok is True
    assert logged == ["Error restoring migration backup, retrying: Invalid backup: "
                      "undeclared is present in backup but not in target state"]
    assert (tmp_path / "volumes" / "12_data" / "_data" / "x").read_bytes() == b"x"
