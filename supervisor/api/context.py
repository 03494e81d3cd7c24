"""What the API needs from the rest of the supervisor: a snapshot to read and actions to call.

The runtime implements `ApiContext` and `Actions`; the API layer only parses requests, checks
scopes and shapes responses. GET handlers read `ApiContext.snapshot` (no I/O); everything that
changes the device goes through `Actions`, whose methods raise `supervisor.errors.*` on failure
(the API maps them to upstream's status codes and bodies in `api/app.py`).

Upstream's message texts live in `actions/messages.py` (the actions raise `BadRequest`/
`NotFound` with them) and `JournalParams` in `journal.py`: import them from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from supervisor.actions.messages import ServiceAction
from supervisor.journal import JournalParams
from supervisor.model.current import Snapshot


class KeyRecord(Protocol):
    """A stored API key (`store.ApiKey` satisfies it)."""

    @property
    def key(self) -> str: ...

    @property
    def scopes(self) -> object:
        """`[{"type": "global"}]` or `[{"type": "app", "appId": N}, ...]` (or its JSON text)."""
        ...


class Actions(Protocol):
    """Every side effect the API can ask for. All async; errors are `supervisor.errors.*`.

    Raise `UpdatesLocked` when a user update lock refuses the action (the API answers 423),
    `BadRequest`/`NotFound` with the messages above where a method says so, anything else for
    "this failed" (503 on most routes).
    """

    async def update(self, force: bool, cancel: bool) -> bool:
        """`POST /v1/update`: start a target fetch in the background when `force` or instant
        updates are on, and return True (204); return False when nothing was started (202)."""
        ...

    async def blink(self) -> None:
        """`POST /v1/blink`: start the 15 s identify pattern and return at once."""
        ...

    async def reboot(self, force: bool) -> None:
        """`POST /v1/reboot`: take every app's locks, then reboot after replying.
        `UpdatesLocked` for a lock or a host OS update breadcrumb (without `force`)."""
        ...

    async def shutdown(self, force: bool) -> None:
        """`POST /v1/shutdown`: as `reboot`, then power off."""
        ...

    async def restart_app(self, app_id: int, force: bool) -> None:
        """`POST /v1/restart`, `POST /v2/applications/:appId/restart`: recreate every container
        of the app; returns when done. Any error when the app is not in the current state."""
        ...

    async def purge_app(self, app_id: int, force: bool) -> None:
        """`POST /v1/purge`, `POST /v2/applications/:appId/purge`: recreate the app with empty
        volumes (api.md §5.2)."""
        ...

    async def service_action(self, action: ServiceAction, app_id: int,
                             service_name: str | None, image_id: int | None,
                             force: bool) -> None:
        """`POST /v2/applications/:appId/{restart,stop,start}-service`.
        `NotFound(APP_NOT_FOUND)` when the app has no services, `NotFound(SERVICE_NOT_FOUND)` when
        no container matches, `NotFound(TARGET_SERVICE_NOT_FOUND)` when the target lacks it.
        For a single-service app the given name/imageId are ignored (upstream quirk)."""
        ...

    async def v1_stop(self, app_id: int, force: bool) -> str:
        """`POST /v1/apps/:appId/stop`: stop the single container, keep it; return its id.
        `BadRequest(APP_NOT_FOUND)` for no services, `BadRequest(V2_SERVICE_ENDPOINT_ERROR)` for
        several, `NotFound(TARGET_SERVICE_NOT_FOUND)` when the target lacks the service."""
        ...

    async def v1_start(self, app_id: int) -> str:
        """`POST /v1/apps/:appId/start`: as `v1_stop`, but start it (no locks)."""
        ...

    async def regenerate_api_key(self, old_key: str) -> str:
        """`POST /v1/regenerate-api-key`: replace `old_key` (dead at once) and return the new one.
        A global key is queued for the cloud report. Any error for an unknown key."""
        ...

    async def get_host_config(self) -> dict[str, Any]:
        """`GET /v1/device/host-config`: `{"network": {"hostname": ..., "proxy"?: {...}}}`."""
        ...

    async def patch_host_config(self, body: object, force: bool) -> None:
        """`PATCH /v1/device/host-config` with the raw body. Raise
        `BadRequest("Could not parse host config input to a valid format:\\n<report>")` when it
        does not validate (api.md §3.12), `UpdatesLocked` on locks."""
        ...

    async def health(self) -> tuple[bool, str]:
        """`GET /v1/healthy`: (healthy, reason for the log when not)."""
        ...

    async def set_local_target(self, body: object, force: bool) -> None:
        """`POST /v2/local/target-state` (called only in local mode) with the raw v2 body:
        convert, validate (`TargetInvalid` -> 400), store, trigger an apply; return at once."""
        ...

    async def get_local_target(self) -> dict[str, Any]:
        """`GET /v2/local/target-state`: the `state` object, `{"local": {name, config, apps}}`."""
        ...

    async def get_tags(self) -> list[dict[str, Any]]:
        """`GET /v2/device/tags`: `[{"id", "name", "value"}]` from the cloud (errors -> 500)."""
        ...

    async def set_tags(self, tags: Mapping[str, str]) -> None:
        """`PATCH /v2/device/tags`: merge into the target tags reported to the cloud."""
        ...

    async def vpn_status(self) -> tuple[bool, bool]:
        """`GET /v2/device/vpn`: (enabled, connected)."""
        ...

    async def cleanup_volumes(self, app_ids: frozenset[int] | None) -> list[str]:
        """`GET /v2/cleanup-volumes`: remove unmounted volumes not referenced by a target app;
        with `app_ids`, only volumes of those apps (deliberate fix). Returns the removed names."""
        ...

    async def journal_logs(self, params: JournalParams) -> AsyncIterator[bytes]:
        """`POST /v2/journal-logs`: start journalctl and return its stdout as chunks.
        Raise (e.g. `NotFound`) before returning when journalctl cannot run. The iterator is
        closed when the client disconnects: kill journalctl then."""
        ...


class ApiContext(Protocol):
    """The runtime as the API sees it. Properties must be cheap: they run on every request."""

    @property
    def snapshot(self) -> Snapshot:
        """The latest published snapshot (immutable, no I/O)."""
        ...

    @property
    def local_mode(self) -> bool:
        """Local mode: no authentication; `POST /v2/local/target-state` allowed."""
        ...

    @property
    def unmanaged(self) -> bool:
        """No `apiEndpoint`: behaves as local mode for the API."""
        ...

    @property
    def actions(self) -> Actions: ...

    def lookup_key(self, key: str) -> KeyRecord | None:
        """The stored key, from memory (constant time); None when unknown."""
        ...

    async def locks(self) -> list[dict[str, Any]]:
        """`GET /v2/locks`: the update locks held now, e.g.
        `{"appId": 1, "serviceName": "main", "path": "...", "owner": "user"|"supervisor"}`."""
        ...
