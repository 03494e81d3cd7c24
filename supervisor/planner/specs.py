"""Container specs of the target services, as the planner compares them with Docker.

`container_spec` (model/compose.py) is pure but costs tens of microseconds per service, which
dominates a plan of a thousand services. The target object only changes when a new target
arrives, so specs are memoised for the current (target, device) pair: the cache holds the
target itself (so identities stay valid) and is dropped as soon as either changes. Results
depend only on the arguments, so `plan()` stays a pure function.

`network_mode: service:<x>` is resolved against the container the planner keeps for <x>; when
<x> has none the spec stays unresolved (`network_service` set) and the service waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from supervisor.errors import SupervisorError
from supervisor.model.spec import ContainerSpec, DeviceContext, container_spec
from supervisor.model.target import TargetApp, TargetService, TargetState

SpecResult = ContainerSpec | SupervisorError
_MAX_ENTRIES = 50_000  # a safety net; one target generation never comes near it


@dataclass
class _Cache:
    target: TargetState | None = None
    device: DeviceContext | None = None
    entries: dict[tuple[int, str, str, str | None], SpecResult] = field(default_factory=dict)


_CACHE = _Cache()


def clear_spec_cache() -> None:
    """Forget every memoised spec (benchmarks use it to time a cold plan)."""
    _CACHE.target = _CACHE.device = None
    _CACHE.entries = {}


def _entries(target: TargetState, device: DeviceContext) -> dict[
        tuple[int, str, str, str | None], SpecResult]:
    cache = _CACHE
    if cache.target is not target or not (cache.device is device or cache.device == device):
        cache.target, cache.device, cache.entries = target, device, {}
    elif len(cache.entries) > _MAX_ENTRIES:
        cache.entries = {}
    return cache.entries


def network_service(svc: TargetService) -> str | None:
    """<x> of `network_mode: service:<x>`, else None."""
    mode = svc.config.network_mode
    if mode is None or not mode.startswith("service:"):
        return None
    return mode[len("service:"):].strip() or None


def service_specs(
    target: TargetState,
    app: TargetApp,
    device: DeviceContext,
    image_ids: Mapping[str, str],
    container_ids: Mapping[str, str],
) -> dict[str, SpecResult]:
    """Spec (or the error building it) of every service of `app`'s release.

    `container_ids` maps a service name to the id of the container kept for it. A spec that
    cannot be built (no scoped API key, a device name with a newline) is returned as the
    error, so one bad service holds back itself and its dependents, not the whole device.
    """
    if app.release is None:
        return {}
    entries = _entries(target, device)
    out: dict[str, SpecResult] = {}
    for name, svc in app.release.services.items():
        image_ref = image_ids.get(svc.image, svc.image)
        dep = network_service(svc)
        dep_id = container_ids.get(dep) if dep is not None else None
        key = (app.app_id, name, image_ref, dep_id)
        result = entries.get(key)
        if result is None:
            try:
                result = container_spec(
                    app, svc, device, image_ref=image_ref,
                    # only resolve `service:<x>` when <x> has a container
                    container_ids={dep: dep_id} if dep is not None and dep_id else None,
                )
            except SupervisorError as err:
                result = err
            entries[key] = result
        out[name] = result
    return out


def resources_used(spec: ContainerSpec) -> set[str]:
    """Docker names of the app networks and named volumes a spec needs to exist."""
    host = spec.body.get("HostConfig") or {}
    used = {str(host.get("NetworkMode") or "")} | {name for name, _ in spec.extra_networks}
    for bind in host.get("Binds") or ():
        source = str(bind).split(":", 1)[0]
        if not source.startswith("/"):
            used.add(source)
    for mount in host.get("Mounts") or ():
        if mount.get("Type") == "volume" and mount.get("Source"):
            used.add(str(mount["Source"]))
    used.discard("")
    return used


def spec_network_mode(spec: ContainerSpec) -> str:
    return str((spec.body.get("HostConfig") or {}).get("NetworkMode") or "")


def spec_labels(spec: ContainerSpec) -> Mapping[str, str]:
    """The service's merged, normalised labels (plus the supervisor's own)."""
    labels = spec.body.get("Labels")
    return labels if isinstance(labels, dict) else {}
