"""Update locks: the lockfile protocol shared by apps and the supervisor (spec locks.md).

A lock is a file (or directory, or dangling symlink) named `updates.lock` or
`resin-updates.lock` in `<locks-dir>/services/<appId>/<serviceName>/`, which every service
container sees at /tmp/balena and /tmp/resin. The supervisor's own locks are the same files
owned by uid 65534; any other owner is a user lock. Taking the supervisor lock on every service
of an app before a disruptive step is what "updates are locked" refuses.

Blocking file I/O: the async methods run it in a worker thread. One in-process asyncio lock per
app keeps two supervisor operations from holding an app at once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from supervisor.errors import UpdatesLocked

_LOGGER = logging.getLogger(__name__)

LOCK_NAMES = ("updates.lock", "resin-updates.lock")
SUPERVISOR_UID = 65534
HANDOVER_FILES = ("handover-complete", "resin-kill-me")
CONTAINER_LOCK_DIR = "/tmp/balena"  # the lock dir's mount point in every service container


@dataclass(frozen=True, slots=True)
class HeldLock:
    app_id: int
    service_name: str
    path: str
    owner: str  # "user" | "supervisor"
    since: float


def _is_ours(st: os.stat_result) -> bool:
    return st.st_uid == SUPERVISOR_UID


class LockDir:
    """The lock directories under one root; all methods are blocking."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "services"

    def service_dir(self, app_id: int, service: str) -> Path:
        return self.root / str(app_id) / service

    def find(self, app_id: int | None = None) -> list[HeldLock]:
        """Every lock file under the root (or one app), user and supervisor alike."""
        out = []
        apps = [self.root / str(app_id)] if app_id is not None else self._children(self.root)
        for app_dir in apps:
            if not app_dir.name.isdigit():
                continue
            for svc_dir in self._children(app_dir):
                for name in LOCK_NAMES:
                    path = svc_dir / name
                    try:
                        st = path.lstat()  # lstat: a dangling symlink still counts
                    except FileNotFoundError:
                        continue
                    out.append(HeldLock(
                        app_id=int(app_dir.name), service_name=svc_dir.name, path=str(path),
                        owner="supervisor" if _is_ours(st) else "user", since=st.st_mtime,
                    ))
        return out

    @staticmethod
    def _children(path: Path) -> list[Path]:
        try:
            return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def take(self, app_id: int, services: Iterable[str], *, force: bool) -> list[Path]:
        """Create both supervisor lock files in every service dir; all or nothing."""
        taken: list[Path] = []
        try:
            for service in services:
                svc_dir = self.service_dir(app_id, service)
                svc_dir.mkdir(parents=True, exist_ok=True)
                for name in LOCK_NAMES:
                    path = svc_dir / name
                    try:
                        st = path.lstat()
                    except FileNotFoundError:
                        st = None
                    if st is not None and _is_ours(st):
                        taken.append(path)  # left over or already ours
                        continue
                    if st is not None and force:
                        unlink(path)
                    self._create(path, app_id, service)
                    taken.append(path)
        except BaseException:
            for path in taken:
                unlink(path)
            raise
        return taken

    @staticmethod
    def _create(path: Path, app_id: int, service: str) -> None:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            # upstream's text, to the byte: clients and dashboards match on it (locks.md §5)
            raise UpdatesLocked(
                f"Lockfile exists for {{ appId: {app_id}, service: {service} }}",
                app_id=app_id, service=service, path=str(path),
            ) from None
        try:
            os.fchown(fd, SUPERVISOR_UID, SUPERVISOR_UID)
        except PermissionError:  # not root (a developer laptop): owner cannot be set
            _LOGGER.debug("cannot chown %s to %d", path, SUPERVISOR_UID)
        finally:
            os.close(fd)

    def clean_supervisor_locks(self, app_id: int | None = None) -> int:
        """Delete supervisor-owned lock files (crash leftovers); user locks stay."""
        count = 0
        for lock in self.find(app_id):
            if lock.owner == "supervisor":
                unlink(Path(lock.path))
                count += 1
        return count

    def user_locks(self, app_id: int) -> list[HeldLock]:
        return [lock for lock in self.find(app_id) if lock.owner == "user"]

    def handover_signalled(self, app_id: int, service: str) -> bool:
        svc_dir = self.service_dir(app_id, service)
        return any((svc_dir / name).exists() for name in HANDOVER_FILES)

    def clear_handover(self, app_id: int, service: str) -> None:
        for name in HANDOVER_FILES:
            unlink(self.service_dir(app_id, service) / name)


def container_path(path: str) -> str:
    """Where a service sees a lock file (`/tmp/balena/<name>`): what API responses show, never
    the host path of the locks dir."""
    return f"{CONTAINER_LOCK_DIR}/{Path(path).name}" if path else ""


def unlink(path: Path) -> None:
    """Remove a lock file or an empty lock directory; never raises."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    try:
        if stat.S_ISDIR(st.st_mode):
            path.rmdir()
        else:
            path.unlink()
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            _LOGGER.warning("could not remove lock %s: %s", path, err)


class UpdateLocks:
    """Async façade used by the executor and the API actions; remembers who holds which app.

    `owner` tells the reconciliation loop ("loop") from one-shot API actions ("action"): each
    releases only what it took, and one cannot take an app the other holds (upstream's
    in-process per-app lock).
    """

    def __init__(self, root: str | Path) -> None:
        self.dir = LockDir(root)
        self._held: dict[int, tuple[list[Path], float, str]] = {}
        self._app_locks: dict[int, asyncio.Lock] = {}

    def held_apps(self, owner: str = "loop") -> frozenset[int]:
        return frozenset(app for app, held in self._held.items() if held[2] == owner)

    def foreign_apps(self, owner: str = "loop") -> frozenset[int]:
        """Apps held by anyone but `owner`."""
        return frozenset(app for app, held in self._held.items() if held[2] != owner)

    async def take(self, app_id: int, services: Iterable[str], *, force: bool,
                   owner: str = "loop") -> None:
        services = tuple(services)
        lock = self._app_locks.setdefault(app_id, asyncio.Lock())
        async with lock:
            prev = self._held.get(app_id)
            if prev is not None and prev[2] != owner:
                raise UpdatesLocked(
                    f"Locks for app {app_id} are being held by another supervisor operation",
                    app_id=app_id,
                )
            paths = await asyncio.to_thread(self.dir.take, app_id, services, force=force)
            merged = list(dict.fromkeys([*(prev[0] if prev else []), *paths]))
            self._held[app_id] = (merged, prev[1] if prev else time.time(), owner)

    async def release(self, app_id: int, owner: str = "loop") -> None:
        held = self._held.get(app_id)
        if held is not None and held[2] != owner:
            return  # someone else's: they release it
        self._held.pop(app_id, None)
        paths = held[0] if held else []
        await asyncio.to_thread(self._release_sync, app_id, paths)

    def _release_sync(self, app_id: int, paths: list[Path]) -> None:
        for path in paths:
            unlink(path)
        self.dir.clean_supervisor_locks(app_id)

    async def leftover_apps(self) -> frozenset[int]:
        locks = await asyncio.to_thread(self.dir.find)
        return frozenset(
            lock.app_id for lock in locks
            if lock.owner == "supervisor" and lock.app_id not in self._held
        )

    async def all_locks(self) -> list[HeldLock]:
        return await asyncio.to_thread(self.dir.find)

    async def clean_leftovers(self) -> int:
        return await asyncio.to_thread(self.dir.clean_supervisor_locks)
