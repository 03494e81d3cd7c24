"""One API action per app at a time, and the lock files of device-wide actions.

`ActionGate.hold` is upstream's in-process per-app lock (locks.md §5.1): an action waits at
most 10 s for another one on the same app, else answers 423 "Locks for app N are being held
by another supervisor operation". It does not wait for the loop: the loop carries out the
action's intent in its own order (there is one executor).

`update_locks` holds the supervisor's lock files of every app for a device-wide action
(reboot/shutdown preparation, a host-config patch): a user lock refuses it with 423 unless
forced (locks.md §8-§10). Rounds the loop runs meanwhile see the apps locked by someone else
and act under that lock without taking or releasing it (`PlanContext.foreign_locked`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from supervisor.errors import UpdatesLocked
from supervisor.locks import UpdateLocks
from supervisor.model.current import Current

_LOGGER = logging.getLogger(__name__)

APP_LOCK_WAIT = 10.0  # locks.md §5.1: maxWaitMs for in-process contention


class ActionGate:
    """One API action per app at a time."""

    def __init__(self, *, wait: float = APP_LOCK_WAIT) -> None:
        self._locks: dict[int, asyncio.Lock] = {}
        self.wait = wait

    def busy(self, app_id: int) -> bool:
        lock = self._locks.get(app_id)
        return lock is not None and lock.locked()

    @asynccontextmanager
    async def hold(self, app_ids: Iterable[int]) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        taken: list[asyncio.Lock] = []
        try:
            for app_id in sorted(set(app_ids)):  # sorted: two multi-app holds cannot deadlock
                lock = self._locks.setdefault(app_id, asyncio.Lock())
                try:
                    if lock.locked():
                        await asyncio.wait_for(lock.acquire(), max(deadline - loop.time(), 0.01))
                    else:
                        await lock.acquire()
                except TimeoutError:
                    raise UpdatesLocked(
                        f"Locks for app {app_id} are being held by another supervisor operation",
                        app_id=app_id,
                    ) from None
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()


@asynccontextmanager
async def update_locks(locks: UpdateLocks, services: Mapping[int, Collection[str]], *,
                       force: bool, log: Callable[[str], None]) -> AsyncIterator[None]:
    """Hold the supervisor's lock files of every service given, per app (locks.md §5).

    All or nothing: a user lock (without `force`) releases what was taken and raises
    `UpdatesLocked`. An app whose lock the loop already held stays the loop's: we do not
    release it at the end, its `ReleaseLock` step will.
    """
    already = locks.held_apps()
    taken: list[int] = []
    if services:
        log("Taking update locks")
    try:
        for app_id in sorted(services):
            owner = "loop" if app_id in already else "action"
            await locks.take(app_id, sorted(services[app_id]), force=force, owner=owner)
            if app_id not in already:
                taken.append(app_id)
        yield
    finally:
        if taken:
            log("Releasing update locks")
        for app_id in taken:
            await locks.release(app_id, owner="action")


def lock_dirs(root: Path) -> dict[int, set[str]]:
    """`<locks>/services/<appId>/<service>/` directories (real ones, not symlinks) on disk.

    Blocking. Upstream's `withLock` discovers what to lock this way (locks.md §5.1).
    """
    found: dict[int, set[str]] = {}
    try:
        apps = [p for p in root.iterdir() if p.name.isdigit() and p.is_dir()
                and not p.is_symlink()]
    except (FileNotFoundError, NotADirectoryError):
        return found
    for app_dir in apps:
        try:
            names = {p.name for p in app_dir.iterdir() if p.is_dir() and not p.is_symlink()}
        except OSError:
            continue
        if names:
            found[int(app_dir.name)] = names
    return found


async def all_app_services(locks: UpdateLocks, current: Current) -> dict[int, set[str]]:
    """Every app's services to lock for a device-wide action (reboot, host-config):
    the lock dirs on disk plus the services of the containers we run."""
    found = await asyncio.to_thread(lock_dirs, locks.dir.root)
    for container in current.containers:
        found.setdefault(container.app_id, set()).add(container.service_name)
    return found
