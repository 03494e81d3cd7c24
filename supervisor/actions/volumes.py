"""`GET /v2/cleanup-volumes`: remove app volumes nothing uses or wants (api.md §4.16).

Data flow: API route -> `RuntimeActions.cleanup_volumes` -> a fresh look at Docker ->
`orphan_volumes()` (pure) -> a `RemoveVolumes` intent the loop carries out (one
`removeVolume` step each; a volume still in use is kept) -> the names removed. Deliberate fix
of upstream: a scoped key only cleans its own apps' volumes (upstream let it remove other
apps' unmounted volumes), and the declared volumes of every target app are protected, not
only the in-scope ones.
"""

from __future__ import annotations

import re

from supervisor.actions.ports import Device
from supervisor.model.current import Current
from supervisor.model.intents import RemoveVolumes
from supervisor.model.target import TargetState

_APP_VOLUME = re.compile(r"^(\d+)_\S+$")


def declared_volumes(target: TargetState | None) -> set[str]:
    """Docker names `<appId>_<name>` of every volume a target release declares."""
    if target is None:
        return set()
    return {f"{app.app_id}_{name}" for app in target.apps.values() if app.release is not None
            for name in app.release.volumes}


def orphan_volumes(current: Current, target: TargetState | None,
                   app_ids: frozenset[int] | None) -> list[str]:
    """App volumes (`<appId>_<name>`) of `app_ids` (None: every app) that no container mounts,
    running or not, and no target release declares. Pure."""
    keep = declared_volumes(target)
    mounted = {name for c in current.containers for name in c.volumes}
    out = []
    for vol in current.volumes:
        match = _APP_VOLUME.match(vol.name)
        if match is None:
            continue  # only the names the supervisor gives; never a stranger's volume
        if app_ids is not None and int(match.group(1)) not in app_ids:
            continue
        if vol.name not in keep and vol.name not in mounted:
            out.append(vol.name)
    return out


async def cleanup_volumes(runtime: Device, app_ids: frozenset[int] | None) -> list[str]:
    """Remove the orphans; returns the names removed."""
    current = await runtime.engine.observe()
    names = orphan_volumes(current, runtime.target, app_ids)
    if not names:
        return []
    removed: list[str] = await runtime.reconciler.submit(RemoveVolumes(tuple(names)))
    return removed
