"""Restart, purge and service actions on an app's containers (api.md §3.5-3.6, §4.1-4.3, §5).

Data flow: API route -> `RuntimeActions` (api/actions.py) -> here: one action per app at a
time (`gate.ActionGate`), a fresh look at Docker to validate the request with upstream's
texts, then an intent (model/intents.py) submitted to the reconciler, whose future we await.
The loop plans the intent's steps (planner/intents.py: `takeLock`, `kill`, `stop`, `start`,
`removeVolume`), the one executor runs them, and the loop resolves the future once the intent
is carried out (restart and purge: the app runs again) or fails (a user lock: 423 at once).
Nothing here calls a mutating engine method.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from typing import Any, Literal

from supervisor.actions.gate import ActionGate
from supervisor.actions.messages import (
    APP_NOT_FOUND,
    SERVICE_NOT_FOUND,
    TARGET_SERVICE_NOT_FOUND,
    V2_SERVICE_ENDPOINT_ERROR,
    ServiceAction,
)
from supervisor.actions.ports import Device
from supervisor.device_flags import lock_override
from supervisor.errors import BadRequest, ConfigError, NotFound, SupervisorError
from supervisor.host.firmware import extra_firmware_volume
from supervisor.model.current import ContainerInfo, Current
from supervisor.model.intents import (
    Intent,
    RestartApp,
    RestartService,
    StartService,
    StopService,
    not_recreated,
)
from supervisor.model.target import TargetApp, TargetService, TargetState

_LOGGER = logging.getLogger(__name__)

RECREATE_TIMEOUT = 300.0  # restart/purge block until the app runs again (a pull may be due)


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


class AppActions:
    def __init__(self, runtime: Device, gate: ActionGate) -> None:
        self._rt = runtime
        self._gate = gate
        self.recreate_timeout = RECREATE_TIMEOUT

    # -- whole apps --------------------------------------------------------------------------

    async def restart(self, app_id: int, force: bool) -> None:
        """Kill every container of the app; the loop recreates them (api.md §5.1)."""
        async with self._gate.hold([app_id]):
            current = await self._current_app(app_id)
            ids = frozenset(c.id for c in current.containers_of(app_id))
            await self._carry_out(RestartApp(app_id, ids, force=self._force(force)),
                                  app_id, ids)

    async def purge(self, app_id: int, force: bool) -> None:
        """Restart with empty volumes (api.md §5.2); images are kept."""
        rt = self._rt
        async with self._gate.hold([app_id]):
            current = await self._current_app(app_id)
            rt.log(f"Purging data for app {app_id}")
            ids = frozenset(c.id for c in current.containers_of(app_id))
            volumes = frozenset(v.name for v in current.volumes
                                if v.app_id == app_id and v.labels.get("io.balena.supervised"))
            intent = RestartApp(app_id, ids, force=self._force(force), purge=True,
                                purge_volumes=volumes, firmware_volume=self._firmware_volume())
            try:
                await self._carry_out(intent, app_id, ids)
            except SupervisorError as err:
                rt.log(f"Error purging data: {err}")
                raise
            rt.log("Purged data")

    def _firmware_volume(self) -> str | None:
        try:
            return extra_firmware_volume(self._rt.settings.config_json.os_config)
        except ConfigError as err:
            _LOGGER.warning("not recreating the extra firmware volume: %s", err)
            return None

    # -- one service -------------------------------------------------------------------------

    async def service_action(self, action: ServiceAction, app_id: int,
                             service_name: str | None, image_id: int | None,
                             force: bool) -> None:
        async with self._gate.hold([app_id]):
            containers = (await self._rt.engine.observe()).containers_of(app_id)
            container = pick_container(containers, service_name, image_id)
            _app, svc = target_service(self._rt.target, app_id, container)
            await self._one(action, container, svc, force)

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
            _app, svc = target_service(self._rt.target, app_id, container)
            await self._one(action, container, svc, force)
            return container.id

    async def _one(self, action: ServiceAction, container: ContainerInfo, svc: TargetService,
                   force: bool) -> None:
        app_id, cid = container.app_id, container.id
        if action == "start":  # never under update locks (locks.md §9)
            if container.running:
                return  # Docker's 304 "already started" is a success upstream
            await self._carry_out(StartService(app_id, svc.name, cid), app_id, {cid})
        elif action == "stop":
            # kept, exited: the loop never starts an exited container (engine.md §9)
            await self._carry_out(StopService(app_id, cid, self._force(force)), app_id, {cid})
        else:
            intent = RestartService(app_id, container.service_name, cid, self._force(force))
            await self._carry_out(intent, app_id, {cid}, only={container.service_name})

    # -- helpers -------------------------------------------------------------------------------

    async def _carry_out(self, intent: Intent, app_id: int, old_ids: Collection[str], *,
                         only: Collection[str] | None = None) -> Any:
        """Submit the intent and wait until the loop carried it out (or it failed)."""
        rt = self._rt
        try:
            async with asyncio.timeout(self.recreate_timeout):
                return await rt.reconciler.submit(intent)
        except TimeoutError:  # the intent is withdrawn (its future was cancelled)
            snap = rt.snapshot
            waiting = not_recreated(snap.current, snap.target, app_id, old_ids, only)
            error = rt.reconciler.state.last_error
            raise SupervisorError(
                f"App {app_id} is not running again after {self.recreate_timeout:.0f} s: "
                f"waiting for {', '.join(waiting) or type(intent).__name__}"
                + (f" (last error: {error})" if error else "")) from None

    async def _current_app(self, app_id: int) -> Current:
        current = await self._rt.engine.observe()  # a read: fresher than the loop's last look
        if app_id not in current.app_ids():
            raise SupervisorError(f"Application with ID {app_id} is not in the current state")
        return current

    def _force(self, force: bool) -> bool:
        return force or lock_override(self._rt.target)


__all__ = ["AppActions", "pick_container", "target_service"]
