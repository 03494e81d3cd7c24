"""Restart, purge and service actions on an app's containers (api.md §3.5-3.6, §4.1-4.3, §5).

Data flow: API route -> `RuntimeActions` -> here -> `exclusive.ActionGate` (one action per app,
never during a loop batch) -> update locks -> executor steps (`Kill`, `Stop`, `Start`: the
loop's own step functions, so they are journalled, fire lifecycle triggers and log the same
dashboard messages) -> mark the loop dirty -> the reconciler recreates what was killed -> we
wait on the snapshot until the app runs again. Docker is reached only through the engine
runner; nothing here imports docker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from supervisor.api.context import (
    APP_NOT_FOUND,
    SERVICE_NOT_FOUND,
    TARGET_SERVICE_NOT_FOUND,
    V2_SERVICE_ENDPOINT_ERROR,
    ServiceAction,
)
from supervisor.device_flags import lock_override
from supervisor.errors import BadRequest, ConfigError, EngineConflict, NotFound, SupervisorError
from supervisor.exclusive import ActionGate, holding_app, update_locks, wait_recreated
from supervisor.executor import Executor, ExecutorHooks
from supervisor.lifecycle import IN_FLIGHT, phase_from_container
from supervisor.model.current import ContainerInfo, Current
from supervisor.model.spec import VolumeSpec, container_spec
from supervisor.model.steps import Kill, Start, Stop
from supervisor.model.target import TargetApp, TargetService, TargetState

if TYPE_CHECKING:
    from supervisor.runtime import Runtime

_LOGGER = logging.getLogger(__name__)

RECREATE_TIMEOUT = 300.0  # restart/purge block until the app runs again (a pull may be due)
PURGE_ATTEMPTS = 5


def pick_container(containers: Sequence[ContainerInfo], service_name: str | None,
                   image_id: int | None) -> ContainerInfo:
    """The container a v2 service action targets (api.md §4.1). With a single container the
    given name/imageId are ignored (upstream quirk); else `imageId == X or serviceName == Y`,
    newest container first."""
    if not containers:
        raise NotFound(APP_NOT_FOUND)
    if len(containers) == 1:
        return containers[0]
    for c in sorted(containers, key=lambda c: c.created, reverse=True):
        if (image_id is not None and c.image_id == image_id) or (
                service_name and c.service_name == service_name):
            return c
    raise NotFound(SERVICE_NOT_FOUND)


def target_service(target: TargetState | None, app_id: int,
                   container: ContainerInfo) -> tuple[TargetApp, TargetService]:
    """The target app and the service a current container belongs to."""
    app = next((a for a in target.apps.values() if a.app_id == app_id), None) if target else None
    if app is None:
        raise SupervisorError(f"Application with ID {app_id} is not in the target state")
    services = app.release.services if app.release is not None else {}
    svc = services.get(container.service_name) or next(
        (s for s in services.values() if s.image_id == container.image_id), None)
    if svc is None:
        raise NotFound(TARGET_SERVICE_NOT_FOUND)
    return app, svc


def extra_firmware_volume(os_config: object) -> str | None:
    """config.json `os.kernel.extraFirmwareVol`: the volume the OS loads firmware from."""
    kernel = os_config.get("kernel") if isinstance(os_config, dict) else None
    name = kernel.get("extraFirmwareVol") if isinstance(kernel, dict) else None
    return name if isinstance(name, str) and name else None


async def _no_reboot() -> None:
    return None


class AppActions:
    def __init__(self, runtime: Runtime, gate: ActionGate) -> None:
        self._rt = runtime
        self._gate = gate
        self._executor: Executor | None = None
        self.recreate_timeout = RECREATE_TIMEOUT

    @property
    def executor(self) -> Executor:
        """The loop's step functions on the runtime's parts (built once the runtime started)."""
        if self._executor is None:
            rt = self._rt
            self._executor = Executor(
                engine=rt.engine, store=rt.store, lifecycles=rt.lifecycles, locks=rt.locks,
                hooks=ExecutorHooks(progress=lambda step, status, pct: None, log=rt.log,
                                    require_reboot=_no_reboot, image_name=rt.image_name),
            )
        return self._executor

    # -- whole apps --------------------------------------------------------------------------

    async def restart(self, app_id: int, force: bool) -> None:
        """Kill every container of the app; the loop recreates them (api.md §5.1)."""
        rt = self._rt
        async with self._gate.hold([app_id]):
            current = await self._current_app(app_id)
            containers = current.containers_of(app_id)
            async with update_locks(rt, {app_id: self._lock_services(app_id, containers)},
                                    force=self._force(force)):
                async with holding_app(rt, app_id):  # kill all first, then recreate all
                    await self._kill(containers)
                await wait_recreated(rt, app_id, {c.id for c in containers},
                                     limit=self.recreate_timeout)

    async def purge(self, app_id: int, force: bool) -> None:
        """Restart with empty volumes (api.md §5.2); images are kept."""
        rt = self._rt
        async with self._gate.hold([app_id]):
            current = await self._current_app(app_id)
            rt.log(f"Purging data for app {app_id}")
            try:
                services = self._lock_services(app_id, current.containers_of(app_id))
                async with update_locks(rt, {app_id: services}, force=self._force(force)):
                    async with holding_app(rt, app_id):
                        killed = await self._kill_and_remove_volumes(app_id, current)
                        await self._recreate_extra_firmware()
                    await wait_recreated(rt, app_id, killed, limit=self.recreate_timeout)
            except SupervisorError as err:
                rt.log(f"Error purging data: {err}")
                raise
            rt.log("Purged data")

    async def _kill_and_remove_volumes(self, app_id: int, current: Current) -> set[str]:
        """Kill the app's containers, then remove its volumes; again if a container came
        back in between (a new target arriving during the hold replaces it)."""
        rt = self._rt
        killed: set[str] = set()
        busy: list[str] = []
        for _attempt in range(PURGE_ATTEMPTS):
            containers = current.containers_of(app_id)
            killed |= {c.id for c in containers}
            await self._kill(containers)
            busy = []
            for vol in current.volumes:
                if vol.app_id != app_id or not vol.labels.get("io.balena.supervised"):
                    continue
                rt.log(f"Removing volume '{vol.name}'")
                try:
                    await rt.engine.remove_volume(vol.name)
                except EngineConflict:
                    busy.append(vol.name)
            if not busy:
                return killed
            current = await rt.engine.observe()
        raise SupervisorError(f"Could not remove volume(s) {', '.join(busy)} of app {app_id}: "
                              "still in use")

    async def _recreate_extra_firmware(self) -> None:
        rt = self._rt
        try:
            name = extra_firmware_volume(rt.settings.config_json.os_config)
        except ConfigError as err:
            _LOGGER.warning("not recreating the extra firmware volume: %s", err)
            return
        if name is None:
            return  # the OS has none configured, so the engine has none either
        try:
            await rt.engine.remove_volume(name)
        except EngineConflict:
            rt.log(f"Error removing volume '{name}': still in use by another app")
            return
        await rt.engine.create_volume(VolumeSpec(name, "local", {}, {}, ""))

    # -- one service -------------------------------------------------------------------------

    async def service_action(self, action: ServiceAction, app_id: int,
                             service_name: str | None, image_id: int | None,
                             force: bool) -> None:
        async with self._gate.hold([app_id]):
            containers = (await self._rt.engine.observe()).containers_of(app_id)
            container = pick_container(containers, service_name, image_id)
            app, svc = target_service(self._rt.target, app_id, container)
            await self._one(action, container, containers, app, svc, force)

    async def v1_action(self, action: Literal["stop", "start"], app_id: int,
                        force: bool) -> str:
        """`/v1/apps/:appId/{stop,start}`: single-container apps only (api.md §3.6)."""
        async with self._gate.hold([app_id]):
            containers = (await self._rt.engine.observe()).containers_of(app_id)
            if not containers:
                raise BadRequest(APP_NOT_FOUND)
            if len(containers) > 1:
                raise BadRequest(V2_SERVICE_ENDPOINT_ERROR)
            container = containers[0]
            app, svc = target_service(self._rt.target, app_id, container)
            await self._one(action, container, containers, app, svc, force)
            return container.id

    async def _one(self, action: ServiceAction, container: ContainerInfo,
                   containers: Sequence[ContainerInfo], app: TargetApp, svc: TargetService,
                   force: bool) -> None:
        rt = self._rt
        if action == "start":  # never under update locks (locks.md §9)
            await self._start(container, containers, app, svc)
            return
        services = self._lock_services(container.app_id, containers)
        async with update_locks(rt, {container.app_id: services}, force=self._force(force)):
            if action == "stop":
                # Kept, exited: the loop never starts an exited container (engine.md §9).
                await self._run_aligned(container, Stop(
                    container_id=container.id, name=container.name, app_id=container.app_id,
                    service_name=container.service_name, commit=container.commit))
                return
            await self._kill([container])
            rt.reconciler.mark_dirty()
            await wait_recreated(rt, container.app_id, {container.id},
                                 only={container.service_name}, limit=self.recreate_timeout)

    async def _start(self, container: ContainerInfo, containers: Sequence[ContainerInfo],
                     app: TargetApp, svc: TargetService) -> None:
        if container.running:
            return  # Docker's 304 "already started" is a success upstream
        rt = self._rt
        spec = container_spec(app, svc, rt.device_context(),
                              image_ref=rt.image_ids.get(svc.image, svc.image),
                              container_ids={c.service_name: c.id for c in containers})
        await self._run_aligned(container, Start(spec=spec, commit=container.commit,
                                                 container_id=container.id))

    # -- helpers -------------------------------------------------------------------------------

    async def _current_app(self, app_id: int) -> Current:
        current = await self._rt.engine.observe()
        if app_id not in current.app_ids():
            raise SupervisorError(f"Application with ID {app_id} is not in the current state")
        return current

    def _lock_services(self, app_id: int, containers: Sequence[ContainerInfo]) -> set[str]:
        """What the loop's takeLock would lock: current and target services of the app."""
        names = {c.service_name for c in containers}
        target = self._rt.target
        for app in target.apps.values() if target is not None else ():
            if app.app_id == app_id and app.release is not None:
                names |= set(app.release.services)
        return names

    def _force(self, force: bool) -> bool:
        return force or lock_override(self._rt.target)

    def _align(self, container: ContainerInfo) -> None:
        """Re-seat the lifecycle record from Docker when the loop has not observed a change
        yet (a crash, our own stop), so the executor's triggers start from the truth."""
        key = (container.app_id, container.service_name, container.commit)
        lifecycle = self._rt.lifecycles.get(key)
        phase = phase_from_container(container)
        if lifecycle is not None and lifecycle.state not in IN_FLIGHT and lifecycle.state != phase:
            self._rt.lifecycles.reseat(key, phase)

    async def _run_aligned(self, container: ContainerInfo, step: Stop | Start) -> None:
        self._align(container)
        await self.executor.run(step)

    async def stop_all(self) -> list[str]:
        """Stop every running supervised container, keeping it (reboot/shutdown: the seed's
        "first try to stop applications"); returns the ids stopped."""
        current = self._rt.reconciler.current  # kept fresh by Docker events
        running = [c for c in current.containers if c.running] if current else []
        await self._apply_to(running, Stop)
        return [c.id for c in running]

    async def _kill(self, containers: Sequence[ContainerInfo]) -> None:
        await self._apply_to(containers, Kill)

    async def _apply_to(self, containers: Sequence[ContainerInfo],
                        step: type[Stop] | type[Kill]) -> None:
        """One Stop or Kill per container, in one batch, from records aligned with Docker."""
        for c in containers:
            self._align(c)
        steps = tuple(step(container_id=c.id, name=c.name, app_id=c.app_id,
                           service_name=c.service_name, commit=c.commit) for c in containers)
        if steps:
            await self.executor.apply(steps)


__all__ = ["AppActions", "extra_firmware_volume", "pick_container", "target_service"]
