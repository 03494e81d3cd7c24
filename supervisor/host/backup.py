"""Backup restore after an OS migration (state.md §10).

An OS migration may leave `<data-dir>/backup.tgz`: one top-level directory per named volume of
the device's app. On the first target stored after provisioning, the runtime (wiring still to
come) stores the target, then runs `restore_with_retry(data_dir, target, volumes)`:

  extract the archive into `<data-dir>/backup` (cleared first: a crashed run may have left it)
  -> `plan_restore`: each top-level directory must be a volume declared by the first app's
     release, else `BackupError` (upstream's texts)
  -> for each: `volumes.recreate_volume(app_id, name, config)` removes the Docker volume
     `<appId>_<name>` if a crashed run left it, creates it and returns its mountpoint, and
     `move_contents` moves the directory's entries there
  -> the archive and the directory are deleted.

Any failure is logged and the whole restore is retried after `bootstrapRetryDelay`. The
engine side (`VolumeRestorer`) belongs to the wiring; everything else is here and is tested
on temp dirs.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tarfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from supervisor.errors import SupervisorError
from supervisor.model.compose import VolumeConfig
from supervisor.model.target import TargetState

_LOGGER = logging.getLogger(__name__)

BACKUP_FILE = "backup.tgz"
BACKUP_DIR = "backup"
MAX_MEMBERS = 1_000_000
MAX_BYTES = 64 * 1024**3


class BackupError(SupervisorError):
    """The migration backup cannot be restored as it is."""


@dataclass(frozen=True, slots=True)
class VolumeRestore:
    name: str  # as declared in the release
    source: Path  # the extracted directory
    config: VolumeConfig


@dataclass(frozen=True, slots=True)
class RestorePlan:
    app_id: int
    app_uuid: str
    volumes: tuple[VolumeRestore, ...]


class VolumeRestorer(Protocol):
    """The engine side, given by the wiring."""

    async def recreate_volume(self, app_id: int, name: str, config: VolumeConfig) -> Path:
        """Remove the volume `<app_id>_<name>` if present, create it, return its mountpoint."""
        ...


def backup_file(data_dir: str | Path) -> Path:
    return Path(data_dir) / BACKUP_FILE


def plan_restore(target: TargetState, entries: Mapping[str, bool],
                 backup_dir: Path) -> RestorePlan:
    """Map the archive's top-level entries (name -> is a directory) to the first app's
    declared volumes. Pure."""
    if not target.apps:
        raise BackupError("No apps in the target state")
    app = next(iter(target.apps.values()))
    declared = app.release.volumes if app.release is not None else {}
    volumes = []
    for name, is_dir in sorted(entries.items()):
        if not is_dir:
            raise BackupError(f"Invalid backup: {name} is not a directory")
        if name not in declared:
            raise BackupError(
                f"Invalid backup: {name} is present in backup but not in target state")
        volumes.append(VolumeRestore(name=name, source=backup_dir / name,
                                     config=declared[name]))
    return RestorePlan(app_id=app.app_id, app_uuid=app.uuid, volumes=tuple(volumes))


def extract_backup(data_dir: str | Path, *, max_members: int = MAX_MEMBERS,
                   max_bytes: int = MAX_BYTES) -> dict[str, bool]:
    """Extract `backup.tgz` into `<data-dir>/backup` (emptied first) and return its top-level
    entries (name -> is a directory). Blocking. Unsafe members (absolute paths, `..`, links
    leaving the directory, devices) are refused by tarfile's `data` filter."""
    archive = backup_file(data_dir)
    target = Path(data_dir) / BACKUP_DIR
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            total = 0
            for member in tar:
                members.append(member)
                total += max(member.size, 0)
                if len(members) > max_members:
                    raise BackupError(f"Invalid backup: more than {max_members} entries")
                if total > max_bytes:
                    raise BackupError(f"Invalid backup: more than {max_bytes} bytes")
            tar.extractall(target, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise BackupError(f"Invalid backup: cannot extract {archive.name}: {err}") from err
    return {entry.name: entry.is_dir() and not entry.is_symlink()
            for entry in target.iterdir()}


def move_contents(source: Path, mountpoint: Path) -> None:
    """Move every entry of `source` into `mountpoint` (replacing same-named ones). Blocking."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        dest = mountpoint / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        shutil.move(str(entry), str(dest))


def clean_up(data_dir: str | Path) -> None:
    """Delete the extracted directory, then the archive. Blocking."""
    shutil.rmtree(Path(data_dir) / BACKUP_DIR, ignore_errors=True)
    backup_file(data_dir).unlink(missing_ok=True)


async def restore_backup(data_dir: str | Path, target: TargetState,
                         volumes: VolumeRestorer) -> bool:
    """One attempt. False when there is no backup; raises on any failure."""
    if not await asyncio.to_thread(backup_file(data_dir).is_file):
        return False
    _LOGGER.info("Migration backup detected")
    entries = await asyncio.to_thread(extract_backup, data_dir)
    plan = plan_restore(target, entries, Path(data_dir) / BACKUP_DIR)
    for volume in plan.volumes:
        _LOGGER.debug("Creating volume %s from backup", volume.name)
        mountpoint = await volumes.recreate_volume(plan.app_id, volume.name, volume.config)
        await asyncio.to_thread(move_contents, volume.source, mountpoint)
    await asyncio.to_thread(clean_up, data_dir)
    return True


async def restore_with_retry(data_dir: str | Path, target: TargetState,
                             volumes: VolumeRestorer, *, retry_delay_s: float,
                             log: Callable[[str], None],
                             sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> bool:
    """`restore_backup` until it succeeds, logging each failure (upstream's text)."""
    while True:
        try:
            return await restore_backup(data_dir, target, volumes)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # any failure: the archive stays, try again later
            log(f"Error restoring migration backup, retrying: {err}")
            await sleep(retry_delay_s)
