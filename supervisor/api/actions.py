"""Intents the API asks for, carried out through the runtime: mark the loop dirty, set a
target, take locks, blink. Handlers never call Docker; these methods only ask the parts that
own Docker, SQLite and the host to act.

Used by: every POST/PATCH route of api/v1.py and api/v2.py (through the `Actions` protocol of
api/context.py); `RuntimeApi` is the `ApiContext` the routes read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from supervisor.api.context import JournalParams, KeyRecord, ServiceAction
from supervisor.errors import BadRequest, NotFound, SupervisorError
from supervisor.model.current import Snapshot
from supervisor.model.target import parse_local_target, to_v3

if TYPE_CHECKING:
    from supervisor.runtime import Runtime

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

    def lookup_key(self, key: str) -> KeyRecord | None:
        return self._rt.store.lookup_api_key_cached(key)

    def locks(self) -> list[dict[str, Any]]:
        return [
            {"appId": lk.app_id, "serviceName": lk.service_name, "path": lk.path,
             "owner": lk.owner, "since": lk.since}
            for lk in self._rt.locks.dir.find()
        ]


class RuntimeActions:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def update(self, force: bool, cancel: bool) -> bool:
        rt = self._rt
        if cancel:
            rt.reconciler.target_changed(force=force)
        else:
            rt.reconciler.mark_dirty(force=force)
        return True

    async def blink(self) -> None:
        await self._rt.led.blink(self._rt.settings.blink_seconds)

    async def reboot(self, force: bool) -> None:
        await self._host_power("reboot", force)

    async def shutdown(self, force: bool) -> None:
        await self._host_power("shutdown", force)

    async def _host_power(self, action: str, force: bool) -> None:
        rt = self._rt
        apps = sorted({c.app_id for c in rt.snapshot.current.containers})
        taken = []
        try:
            for app_id in apps:
                services = sorted({c.service_name for c in rt.snapshot.current.containers_of(app_id)})
                await rt.locks.take(app_id, services, force=force)
                taken.append(app_id)
        except SupervisorError:
            for app_id in taken:
                await rt.locks.release(app_id)
            raise
        rt.log("Rebooting" if action == "reboot" else "Shutting down")

        async def later() -> None:
            await asyncio.sleep(0.1)  # reply first, as upstream does
            try:
                await (rt.host.reboot() if action == "reboot" else rt.host.shutdown())
            finally:
                for app_id in taken:
                    await rt.locks.release(app_id)

        rt._spawn(later())

    async def restart_app(self, app_id: int, force: bool) -> None:
        raise SupervisorError("restart is not implemented yet")

    async def purge_app(self, app_id: int, force: bool) -> None:
        raise SupervisorError("purge is not implemented yet")

    async def service_action(self, action: ServiceAction, app_id: int,
                             service_name: str | None, image_id: int | None,
                             force: bool) -> None:
        raise SupervisorError("service actions are not implemented yet")

    async def v1_stop(self, app_id: int, force: bool) -> str:
        raise SupervisorError("not implemented yet")

    async def v1_start(self, app_id: int) -> str:
        raise SupervisorError("not implemented yet")

    async def regenerate_api_key(self, old_key: str) -> str:
        return await self._rt.store.regenerate_api_key(old_key)

    async def get_host_config(self) -> dict[str, Any]:
        raise SupervisorError("not implemented yet")

    async def patch_host_config(self, body: object, force: bool) -> None:
        raise SupervisorError("not implemented yet")

    async def health(self) -> tuple[bool, str]:
        rt = self._rt
        state = rt.reconciler.state
        if state.applying and not rt._pulling:
            stuck = time.monotonic() - state.heartbeat
            limit = 2 * rt.settings.poll_interval_ms / 1000
            if stuck > limit:
                return False, f"reconciler stuck for {stuck:.0f} s"
        return True, ""

    async def set_local_target(self, body: object, force: bool) -> None:
        rt = self._rt
        target = parse_local_target(body, device_uuid=rt.settings.uuid)
        await rt.set_target(target, source="local", force=force)

    async def get_local_target(self) -> dict[str, Any]:
        rt = self._rt
        if rt.target is None:
            return {"local": {"name": rt.device_name, "config": {}, "apps": {}}}
        body = to_v3(rt.target)
        return body

    async def get_tags(self) -> list[dict[str, Any]]:
        raise NotFound("device tags need a cloud connection")

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        await self._rt.store.set_tags("target", tags)

    async def vpn_status(self) -> tuple[bool, bool]:
        return False, False

    async def cleanup_volumes(self, app_ids: frozenset[int] | None) -> list[str]:
        raise SupervisorError("not implemented yet")

    async def journal_logs(self, params: JournalParams) -> AsyncIterator[bytes]:
        raise BadRequest("journalctl is not available on this device")
