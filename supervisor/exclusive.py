"""Keeps API actions from racing each other and the apply loop (api.md §5, locks.md §5.1).

Upstream runs restart and purge through an ExclusiveRunner that aborts the running apply. Our
reconciler has no pause switch, so an action that touches containers here:

1. holds an in-process lock per app (`ActionGate.hold`), waiting at most 10 s, else upstream's
   423 "Locks for app N are being held by another supervisor operation";
2. then waits until the reconciler has no batch in flight, unless that batch only downloads
   (a download touches no container), so the loop's executor and ours never drive the same
   container or lifecycle record at once;
3. holds the app's update lock files while it kills or stops (`update_locks`): a user lock
   refuses with 423 unless forced. Rounds the loop starts meanwhile (Docker events) see the app
   locked by us, take no lock of their own, and recreate what we killed, as restart wants.

Restart and purge also put an intermediate target in place while they kill (`holding_app`),
as upstream does (api.md §5.1-5.2): the app stays in the target with the same images, volumes
and container configs, but every service waits on itself, so the loop creates none of the
app's containers meanwhile (a round planned before a volume was removed would otherwise
recreate a container and make Docker create an unlabelled volume of the same name). Leaving
the hold gives the real target back and wakes the loop, which recreates everything.

`wait_recreated` is how restart and purge return "when the app is running again": it polls
the published snapshot, so it costs no Docker call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.errors import SupervisorError, UpdatesLocked
from supervisor.model.current import Snapshot
from supervisor.model.target import TargetState

if TYPE_CHECKING:
    from supervisor.reconciler import Reconciler
    from supervisor.runtime import Runtime

_LOGGER = logging.getLogger(__name__)

APP_LOCK_WAIT = 10.0  # locks.md §5.1: maxWaitMs for in-process contention
BATCH_WAIT = 120.0  # longest we let an action wait for the loop's batch in flight
POLL = 0.1


class ActionGate:
    """One API action per app at a time, and never while the loop applies a batch."""

    def __init__(self, runtime: Runtime, *, wait: float = APP_LOCK_WAIT,
                 batch_wait: float = BATCH_WAIT) -> None:
        self._rt = runtime
        self._locks: dict[int, asyncio.Lock] = {}
        self.wait = wait
        self.batch_wait = batch_wait

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
            await self._wait_for_batch()
            yield
        finally:
            for lock in reversed(taken):
                lock.release()

    async def _wait_for_batch(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_wait
        while batch_in_flight(self._rt.reconciler):
            if loop.time() > deadline:
                raise SupervisorError("The supervisor is still applying the target state; "
                                      "try again later")
            await asyncio.sleep(0.05)


def batch_in_flight(reconciler: Reconciler) -> bool:
    """A batch that drives containers is running (a download-only batch does not count)."""
    return reconciler.batch_in_flight


@asynccontextmanager
async def update_locks(runtime: Runtime, services: Mapping[int, Collection[str]], *,
                       force: bool) -> AsyncIterator[None]:
    """Hold the supervisor's lock files of every service given, per app (locks.md §5).

    All or nothing: a user lock (without `force`) releases what was taken and raises
    `UpdatesLocked`. An app whose lock the loop already held stays the loop's: we do not
    release it at the end, its `ReleaseLock` step will.
    """
    locks = runtime.locks
    already = locks.held_apps()
    taken: list[int] = []
    if services:
        runtime.log("Taking update locks")
    try:
        for app_id in sorted(services):
            owner = "loop" if app_id in already else "action"
            await locks.take(app_id, sorted(services[app_id]), force=force, owner=owner)
            if app_id not in already:
                taken.append(app_id)
        yield
    finally:
        if taken:
            runtime.log("Releasing update locks")
        for app_id in taken:
            await locks.release(app_id, owner="action")


def hold_app(target: TargetState, app_id: int) -> TargetState:
    """The target with every service of the app depending on itself. Pure.

    `depends_on` is not part of a container's config hash, so running containers are left
    alone; a missing one is never installed, because its dependency (itself) is missing.
    """
    apps = {}
    for uuid, app in target.apps.items():
        if app.app_id == app_id and app.release is not None:
            services = {
                name: replace(svc, config=replace(
                    svc.config, depends_on=(*svc.config.depends_on, name)))
                for name, svc in app.release.services.items()
            }
            app = replace(app, release=replace(app.release, services=services))
        apps[uuid] = app
    return replace(target, apps=apps)


@asynccontextmanager
async def holding_app(runtime: Runtime, app_id: int) -> AsyncIterator[None]:
    """Keep the loop from creating the app's containers until the block ends."""
    original = runtime.target
    if original is None:
        yield
        return
    held = hold_app(original, app_id)
    runtime.target = held
    try:
        yield
    finally:
        if runtime.target is held:  # else a new target arrived meanwhile: it wins
            runtime.target = original
        runtime.reconciler.target_changed()  # wake the loop from its wait on the hold


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


async def all_app_services(runtime: Runtime) -> dict[int, set[str]]:
    """Every app's services to lock for a device-wide action (reboot, host-config):
    the lock dirs on disk plus the services of the containers we run."""
    found = await asyncio.to_thread(lock_dirs, runtime.locks.dir.root)
    for container in runtime.snapshot.current.containers:
        found.setdefault(container.app_id, set()).add(container.service_name)
    return found


def not_recreated(snapshot: Snapshot, app_id: int, old_ids: Collection[str],
                  only: Collection[str] | None = None) -> list[str]:
    """Target services of the app (or of `only`) still lacking a container that is not one
    of `old_ids` and that runs, when the target wants it running. Pure."""
    target = snapshot.target
    if target is None:
        return []
    app = next((a for a in target.apps.values() if a.app_id == app_id), None)
    if app is None or app.release is None:
        return []
    containers = snapshot.current.containers_of(app_id)
    waiting = []
    for name, svc in sorted(app.release.services.items()):
        if only is not None and name not in only:
            continue
        if not any(c.service_name == name and c.id not in old_ids and
                   (c.running or not svc.running) for c in containers):
            waiting.append(name)
    return waiting


async def wait_recreated(runtime: Runtime, app_id: int, old_ids: Collection[str], *,
                         limit: float, only: Collection[str] | None = None) -> None:
    """Return once `not_recreated` is empty; raise after `limit` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while waiting := not_recreated(runtime.snapshot, app_id, old_ids, only):
        if loop.time() > deadline:
            error = runtime.reconciler.state.last_error
            raise SupervisorError(
                f"App {app_id} is not running again after {limit:.0f} s: waiting for "
                f"{', '.join(waiting)}" + (f" (last error: {error})" if error else ""))
        await asyncio.sleep(POLL)
