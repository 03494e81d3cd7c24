"""The API's view of the device: `RuntimeApi` (the `ApiContext` the routes read) and
`RuntimeActions` (the `Actions` protocol of api/context.py that every POST/PATCH route of
api/v1.py and api/v2.py calls). Handlers never call Docker.

Container work is an intent (supervisor/actions/apps.py, volumes.py): validated, submitted to
the reconciler, awaited. Device-wide work is in supervisor/actions/device.py. Both are
serialised per app by one `actions.gate.ActionGate`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from supervisor.actions.apps import AppActions
from supervisor.actions.device import DeviceActions
from supervisor.actions.gate import ActionGate
from supervisor.actions.messages import ServiceAction
from supervisor.actions.ports import Device
from supervisor.actions.volumes import cleanup_volumes
from supervisor.api.context import KeyRecord
from supervisor.api.local_target import local_target_state
from supervisor.board.led import Led
from supervisor.errors import NotFound
from supervisor.events import EventBus
from supervisor.health import HealthSource, runtime_health
from supervisor.host.vpn import vpn_status
from supervisor.journal import JournalParams, open_journal
from supervisor.locks import container_path
from supervisor.logs import LogHub
from supervisor.model.current import Snapshot
from supervisor.model.target import TargetState, parse_local_target
from supervisor.settings import Settings
from supervisor.store import AsyncStore


class _Cloud(Protocol):
    def poll_now(self, force: bool, cancel: bool) -> None: ...
    def healthy(self) -> tuple[bool, str]: ...
    async def get_tags(self) -> list[dict[str, Any]]: ...
    async def set_tags(self, tags: Mapping[str, str]) -> None: ...


class Runtime(Device, HealthSource, Protocol):
    """The running supervisor as the API sees it (runtime.py implements it; nothing here
    imports the runtime)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def cloud(self) -> _Cloud | None: ...

    @property
    def local_mode(self) -> bool: ...

    @property
    def logs(self) -> LogHub: ...

    @property
    def events(self) -> EventBus: ...

    @property
    def store(self) -> AsyncStore: ...

    @property
    def led(self) -> Led: ...

    @property
    def device_name(self) -> str: ...

    @property
    def image_ids(self) -> Mapping[str, str]: ...

    async def set_target(self, target: TargetState, *, source: str,
                         force: bool = False) -> None: ...

    async def ensure_scoped_keys(self, target: TargetState) -> None: ...

_LOGGER = logging.getLogger(__name__)


class RuntimeApi:
    """The runtime as the API sees it (implements api.context.ApiContext)."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._actions = RuntimeActions(runtime)

    @property
    def snapshot(self) -> Snapshot:
        return self._rt.snapshot

    @property
    def local_mode(self) -> bool:
        return self._rt.local_mode

    @property
    def unmanaged(self) -> bool:
        return self._rt.settings.unmanaged

    @property
    def actions(self) -> RuntimeActions:
        return self._actions

    @property
    def logs(self) -> LogHub:
        return self._rt.logs

    @property
    def events(self) -> EventBus:
        return self._rt.events

    @property
    def data_dir(self) -> Path:
        return Path(self._rt.settings.data_dir)

    def lookup_key(self, key: str) -> KeyRecord | None:
        return self._rt.store.lookup_api_key_cached(key)

    async def locks(self) -> list[dict[str, Any]]:
        return [
            {"appId": lk.app_id, "serviceName": lk.service_name,
             "path": container_path(lk.path),  # as the service sees it, not the host path
             "owner": lk.owner, "since": lk.since}
            for lk in await self._rt.locks.all_locks()  # a directory walk: off the event loop
        ]


class RuntimeActions:
    """`api.context.Actions` on the real runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self.gate = ActionGate()
        self.apps = AppActions(runtime, self.gate)
        self.device = DeviceActions(runtime, self.gate)

    async def update(self, force: bool, cancel: bool) -> bool:
        return await self.device.update(force, cancel)

    async def blink(self) -> None:
        await self._rt.led.blink(self._rt.settings.blink_seconds)

    async def reboot(self, force: bool) -> None:
        await self.device.power("reboot", force)

    async def shutdown(self, force: bool) -> None:
        await self.device.power("shutdown", force)

    async def restart_app(self, app_id: int, force: bool) -> None:
        await self.apps.restart(app_id, force)

    async def purge_app(self, app_id: int, force: bool) -> None:
        await self.apps.purge(app_id, force)

    async def service_action(self, action: ServiceAction, app_id: int,
                             service_name: str | None, image_id: int | None,
                             force: bool) -> None:
        await self.apps.service_action(action, app_id, service_name, image_id, force)

    async def v1_stop(self, app_id: int, force: bool) -> str:
        return await self.apps.v1_action("stop", app_id, force)

    async def v1_start(self, app_id: int) -> str:
        return await self.apps.v1_action("start", app_id, False)

    async def regenerate_api_key(self, old_key: str) -> str:
        """The old key dies at once. A service's scoped key reaches its container through the
        injected BALENA_SUPERVISOR_API_KEY, which is part of the container's config hash: the
        next apply recreates the container. We do not trigger that apply here, so that the
        caller gets to read its new key first (upstream: "on the next update cycle"). A new
        global key reaches the cloud with the next state report (`api_secret`)."""
        rt = self._rt
        new_key = await rt.store.regenerate_api_key(old_key)  # NotFound for an unknown key
        if rt.target is not None:
            # refresh the keys the container specs inject (runtime-private helper; see report)
            await rt.ensure_scoped_keys(rt.target)
        return new_key

    async def get_host_config(self) -> dict[str, Any]:
        return await self.device.get_host_config()

    async def patch_host_config(self, body: object, force: bool) -> None:
        await self.device.patch_host_config(body, force)

    async def health(self) -> tuple[bool, str]:
        return runtime_health(self._rt).check()

    async def set_local_target(self, body: object, force: bool) -> None:
        rt = self._rt
        target = parse_local_target(body, device_uuid=rt.settings.uuid,
                                    device_name=rt.device_name)
        await rt.set_target(target, source="local", force=force)

    async def get_local_target(self) -> dict[str, Any]:
        rt = self._rt
        source = "local" if rt.local_mode else rt.settings.api_endpoint
        return local_target_state(rt.target, device_name=rt.device_name, source=source,
                                  image_ids=rt.image_ids, unmanaged=rt.settings.unmanaged)

    async def get_tags(self) -> list[dict[str, Any]]:
        if self._rt.cloud is None:
            raise NotFound("device tags need a cloud connection")
        return await self._rt.cloud.get_tags()

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        if self._rt.cloud is not None:
            await self._rt.cloud.set_tags(tags)
        else:
            await self._rt.store.set_tags("target", {**await self._rt.store.tags("target"),
                                                     **tags})

    async def vpn_status(self) -> tuple[bool, bool]:
        return await vpn_status(self._rt.settings.vpn_status_dir, self._rt.host)

    async def cleanup_volumes(self, app_ids: frozenset[int] | None) -> list[str]:
        return await cleanup_volumes(self._rt, app_ids)

    async def journal_logs(self, params: JournalParams) -> AsyncIterator[bytes]:
        return await open_journal(params)
