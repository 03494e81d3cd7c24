"""Step -> engine calls. Exactly one function per step kind; lifecycle triggers around them.

The executor never decides anything: the planner did. It fires the service's lifecycle
triggers (cheap, synchronous, on the loop thread) around the slow Docker work, journals every
step in SQLite while it runs (so a restart knows what was interrupted), and logs the system
messages upstream shows on the dashboard (engine.md §17).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from supervisor.engine.runner import AsyncEngine
from supervisor.errors import (
    EngineConflict,
    InternalError,
    StepFailed,
    SupervisorError,
    UpdatesLocked,
)
from supervisor.lifecycle import Key, Lifecycles
from supervisor.locks import UpdateLocks
from supervisor.model.current import Phase
from supervisor.model.spec import ContainerSpec
from supervisor.model.steps import (
    ChangeConfig,
    CreateNetwork,
    CreateVolume,
    EnsureSupervisorNetwork,
    Fetch,
    Handover,
    Kill,
    Noop,
    RecreateVolume,
    ReleaseLock,
    Remove,
    RemoveImage,
    RemoveNetwork,
    RemoveVolume,
    RequireReboot,
    SetBootConfig,
    SetRebootBreadcrumb,
    Start,
    Step,
    Stop,
    TakeLock,
    UpdateCommit,
    UpdateMetadata,
    describe,
)
from supervisor.store import ImageRecord

_LOGGER = logging.getLogger(__name__)


class ExecutorStore(Protocol):
    """What the executor persists (implemented by store.AsyncStore)."""

    async def journal_begin(self, kind: str, step: dict[str, Any], app_id: int | None,
                            service_name: str | None) -> int: ...
    async def journal_end(self, journal_id: int, outcome: str) -> None: ...
    async def set_current_commit(self, app_id: int, commit: str) -> None: ...
    async def upsert_image(self, image: ImageRecord) -> None: ...
    async def delete_image(self, name: str) -> None: ...


@dataclass
class ExecutorHooks:
    """Callbacks into the runtime: progress, the device log, the reboot breadcrumb."""

    progress: Callable[[Fetch, str, int | None], None]  # (step, status, percent)
    log: Callable[[str], None]
    require_reboot: Callable[[], Awaitable[None]]
    image_auth: Callable[[str], dict[str, str] | None] = lambda ref: None
    # (app id, service name, commit) -> the image name, for `'<service> <image>'` in the log
    image_name: Callable[[int, str, str], str] = lambda app_id, service, commit: ""
    # the device side of changeConfig / setBootConfig (supervisor/device_config.py)
    device_config: DeviceConfigSteps | None = None


class DeviceConfigSteps(Protocol):
    async def change_config(self, step: ChangeConfig) -> None: ...

    async def set_boot_config(self, step: SetBootConfig) -> None: ...


class Executor:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        store: ExecutorStore,
        lifecycles: Lifecycles,
        locks: UpdateLocks,
        hooks: ExecutorHooks,
    ) -> None:
        self.engine = engine
        self.store = store
        self.lifecycles = lifecycles
        self.locks = locks
        self.hooks = hooks
        self._dispatch: dict[type, Callable[[Any], Awaitable[None]]] = {
            Fetch: self._fetch,
            RemoveImage: self._remove_image,
            Kill: self._kill,
            Stop: self._stop,
            Remove: self._remove,
            Start: self._start,
            UpdateMetadata: self._update_metadata,
            Handover: self._handover,
            UpdateCommit: self._update_commit,
            CreateNetwork: self._create_network,
            RemoveNetwork: self._remove_network,
            CreateVolume: self._create_volume,
            RemoveVolume: self._remove_volume,
            RecreateVolume: self._recreate_volume,
            EnsureSupervisorNetwork: self._ensure_supervisor_network,
            TakeLock: self._take_lock,
            ReleaseLock: self._release_lock,
            RequireReboot: self._require_reboot,
            ChangeConfig: self._change_config,
            SetBootConfig: self._set_boot_config,
            SetRebootBreadcrumb: self._set_reboot_breadcrumb,
            Noop: self._noop,
        }

    async def apply(self, steps: tuple[Step, ...]) -> None:
        """Run one batch concurrently; raise the first failure once all have finished."""
        results = await asyncio.gather(*(self.run(step) for step in steps), return_exceptions=True)
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise result
        failures = [r for r in results if isinstance(r, BaseException)]
        if not failures:
            return
        for failure in failures:
            if isinstance(failure, UpdatesLocked):
                raise failure
        raise failures[0]

    async def run(self, step: Step) -> None:
        if isinstance(step, Noop):
            return
        desc = describe(step)
        journal_id = await self.store.journal_begin(
            step.kind, desc, desc.get("appId"), desc.get("serviceName")
        )
        try:
            await self._dispatch[type(step)](step)
        except asyncio.CancelledError:
            await asyncio.shield(self.store.journal_end(journal_id, "cancelled"))
            raise
        except UpdatesLocked as err:
            await self.store.journal_end(journal_id, f"locked: {err}")
            raise
        except SupervisorError as err:
            await self.store.journal_end(journal_id, f"failed: {err}")
            raise StepFailed(step, err) from err
        except Exception as err:  # an unexpected bug still fails the step, not the loop
            _LOGGER.exception("step %s crashed", step.kind)
            await self.store.journal_end(journal_id, f"crashed: {err!r}")
            raise StepFailed(step, err) from err
        await self.store.journal_end(journal_id, "done")

    # -- images ----------------------------------------------------------------------------

    async def _fetch(self, step: Fetch) -> None:
        key: Key = (step.app_id, step.service_name, step.commit)
        lc = self.lifecycles.claim(key, "download", Phase.DOWNLOADED)
        lc.download()
        self.hooks.log(f"Downloading image '{step.image}'")
        self.hooks.progress(step, "Downloading", 0)
        try:
            image_id = await self.engine.pull(
                step.image,
                lambda pct: self.hooks.progress(step, "Downloading", pct),
                auth=self.hooks.image_auth(step.image),
            )
        except asyncio.CancelledError:
            self.lifecycles.drop(key)
            raise
        except SupervisorError as err:
            self.lifecycles.drop(key)
            self.hooks.progress(step, "Failed", None)
            self.hooks.log(f"Failed to download image '{step.image}' due to '{err}'")
            raise
        await self.store.upsert_image(ImageRecord(
            name=step.image, docker_image_id=image_id, app_id=step.app_id,
            service_name=step.service_name, commit=step.commit, download_progress=None,
            status="Downloaded",
        ))
        self.hooks.progress(step, "Downloaded", None)
        lc.downloaded()
        self.hooks.log(f"Downloaded image '{step.image}'")

    async def _remove_image(self, step: RemoveImage) -> None:
        self.hooks.log(f"Deleting image '{step.name}'")
        await self.engine.remove_image(step.image_id)
        await self.store.delete_image(step.name)
        self.hooks.log(f"Deleted image '{step.name}'")

    # -- containers ----------------------------------------------------------------------------

    async def _kill(self, step: Kill) -> None:
        await self._stop_container(
            (step.app_id, step.service_name, step.commit), step.container_id, remove=True,
        )

    async def _stop(self, step: Stop) -> None:
        await self._stop_container(
            (step.app_id, step.service_name, step.commit), step.container_id, remove=False,
        )

    def _service(self, app_id: int, service: str, commit: str) -> str:
        """The object of a service log line: `<service> <image>` (engine.md §17)."""
        image = self.hooks.image_name(app_id, service, commit)
        return f"{service} {image}" if image else service

    async def _stop_container(self, key: Key, cid: str, *, remove: bool) -> None:
        lc = self.lifecycles.claim(key, "stop", Phase.RUNNING)
        lc.stop()
        verb = "Killing" if remove else "Stopping"
        name = self._service(*key)
        self.hooks.log(f"{verb} service '{name}'")
        try:
            await self.engine.stop(cid)
            if remove:
                await self.engine.remove(cid, force=True)
        except SupervisorError as err:
            lc.failed(reason=str(err))
            self.hooks.log(f"Failed to kill service '{name}' due to '{err}'")
            raise
        lc.stopped()
        self.hooks.log(f"{'Killed' if remove else 'Stopped'} service '{name}'")

    async def _remove(self, step: Remove) -> None:
        self.hooks.log(f"Removing dead container '{step.name}'")
        await self.engine.remove(step.container_id, force=True)

    async def _start(self, step: Start) -> None:
        spec = step.spec
        key: Key = (spec.app_id, spec.service_name, step.commit)
        name = self._service(*key)
        cid = step.container_id
        if cid is None:
            lc = self.lifecycles.claim(key, "install", Phase.DOWNLOADED)
            lc.install()
            self.hooks.log(f"Installing service '{name}'")
            try:
                cid = await self._create(spec)
            except SupervisorError as err:
                lc.failed(reason=str(err))
                self.hooks.log(f"Failed to install service '{name}' due to '{err}'")
                raise
            lc.installed()
            self.hooks.log(f"Installed service '{name}'")
        else:
            lc = self.lifecycles.claim(key, "start", Phase.INSTALLED)
        if not step.start:
            return
        lc.start()
        self.hooks.log(f"Starting service '{name}'")
        try:
            await self.engine.start(cid)
        except SupervisorError as err:
            lc.failed(reason=str(err))
            self.hooks.log(f"Failed to start service '{name}' due to '{err}'")
            raise
        lc.started()
        self.hooks.log(f"Started service '{name}'")

    async def _create(self, spec: ContainerSpec) -> str:
        try:
            return await self.engine.create(spec)
        except EngineConflict:
            # after a crash the container may already exist under this name: reuse it
            cid = await self.engine.find_container(spec.name)
            if cid is None:
                raise
            return cid

    async def _update_metadata(self, step: UpdateMetadata) -> None:
        await self.engine.rename(step.container_id, step.new_name)

    async def _handover(self, step: Handover) -> None:
        spec = step.spec
        app_id, service = spec.app_id, spec.service_name
        old_key: Key = (app_id, service, _commit_of(step.name))
        new_key: Key = (app_id, service, step.commit)
        old_lc = (self.lifecycles.claim(old_key, "hand_over", Phase.RUNNING)
                  if old_key != new_key else None)
        if old_lc is not None:
            old_lc.hand_over()
        # the old container must not come back after a power cut, and frees its name
        await self.engine.clear_restart_policy(step.container_id)
        if not step.name.startswith("old_"):
            await self.engine.rename(step.container_id, "old_" + step.name)
        await asyncio.to_thread(self.locks.dir.clear_handover, app_id, service)
        lc = self.lifecycles.claim(new_key, "install", Phase.DOWNLOADED)
        lc.install()
        cid = await self._create(spec)
        lc.installed()
        lc.start()
        await self.engine.start(cid)
        lc.await_handover()
        deadline = time.monotonic() + step.timeout_ms / 1000
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self.locks.dir.handover_signalled, app_id, service):
                break
            await asyncio.sleep(0.1)
        lc.handover_complete()
        if old_lc is not None:
            old_lc.stop()
        self.hooks.log(f"Killing service '{self._service(*old_key)}'")
        await self.engine.stop(step.container_id)
        await self.engine.remove(step.container_id, force=True)
        if old_lc is not None:
            old_lc.stopped()
        await asyncio.to_thread(self.locks.dir.clear_handover, app_id, service)

    async def _update_commit(self, step: UpdateCommit) -> None:
        await self.store.set_current_commit(step.app_id, step.commit)

    # -- networks and volumes --------------------------------------------------------------------

    async def _create_network(self, step: CreateNetwork) -> None:
        self.hooks.log(f"Creating network '{step.spec.name}'")
        await self.engine.create_network(step.spec)

    async def _remove_network(self, step: RemoveNetwork) -> None:
        self.hooks.log(f"Removing network '{step.name}'")
        await self.engine.remove_network(step.network_id)

    async def _create_volume(self, step: CreateVolume) -> None:
        self.hooks.log(f"Creating volume '{step.spec.name}'")
        await self.engine.create_volume(step.spec)

    async def _remove_volume(self, step: RemoveVolume) -> None:
        self.hooks.log(f"Removing volume '{step.name}'")
        try:
            await self.engine.remove_volume(step.name)
        except SupervisorError as err:
            if step.intent is not None:
                raise  # a purge or a cleanup: the action that asked decides (intent_book.py)
            self.hooks.log(f"Error removing volume '{step.name}': {err}")  # upstream carries on

    async def _recreate_volume(self, step: RecreateVolume) -> None:
        name = step.spec.name
        try:
            await self.engine.remove_volume(name)
        except EngineConflict:
            self.hooks.log(f"Error removing volume '{name}': still in use by another app")
            return
        await self.engine.create_volume(step.spec)

    async def _ensure_supervisor_network(self, step: EnsureSupervisorNetwork) -> None:
        await self.engine.ensure_supervisor_network()

    # -- locks and reboots -----------------------------------------------------------------------

    async def _take_lock(self, step: TakeLock) -> None:
        self.hooks.log("Taking update locks")
        await self.locks.take(step.app_id, step.services, force=step.force)

    async def _release_lock(self, step: ReleaseLock) -> None:
        self.hooks.log("Releasing update locks")
        await self.locks.release(step.app_id)

    async def _require_reboot(self, step: RequireReboot) -> None:
        await self.hooks.require_reboot()
        self.hooks.log(
            f'Reboot has been scheduled to apply changes: {{"serviceName":"{step.service_name}"}}'
        )

    # -- device configuration (config.md §5.2) ---------------------------------------------------

    async def _change_config(self, step: ChangeConfig) -> None:
        await self._device_config().change_config(step)

    async def _set_boot_config(self, step: SetBootConfig) -> None:
        await self._device_config().set_boot_config(step)

    async def _set_reboot_breadcrumb(self, step: SetRebootBreadcrumb) -> None:
        await self.hooks.require_reboot()

    def _device_config(self) -> DeviceConfigSteps:
        if self.hooks.device_config is None:
            raise InternalError("device configuration steps without a device configuration")
        return self.hooks.device_config

    async def _noop(self, step: Noop) -> None:
        return None


def _commit_of(container_name: str) -> str:
    parts = container_name.rsplit("_", 3)
    return parts[-1] if len(parts) == 4 else ""
