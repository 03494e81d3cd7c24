"""Service statuses as the API and the cloud report show them (state.md §6.3). Pure.

Containers give the status (overlaid with a lifecycle phase while work is in flight); target
services with no container yet are `Downloading` (with progress) or `Downloaded`; two running
containers of one service with different commits are `Handing over` / `Awaiting handover`.
"""

from __future__ import annotations

from collections.abc import Mapping

from supervisor.model.current import (
    IN_FLIGHT_STATUSES,
    ContainerInfo,
    Current,
    ImageProgress,
    Phase,
    ServiceView,
)
from supervisor.model.target import TargetState

PhaseKey = tuple[int, str, str]


def build_services(
    current: Current,
    target: TargetState | None,
    phases: Mapping[PhaseKey, Phase],
    downloads: Mapping[str, ImageProgress],
    image_ids: Mapping[str, str],
) -> tuple[ServiceView, ...]:
    views: list[ServiceView] = []
    names: dict[int, str] = {}
    if target is not None:
        names = {app.app_id: app.name for app in target.apps.values()}
    seen: set[PhaseKey] = set()
    names_by_id = {image_id: name for name, image_id in image_ids.items()}
    running: dict[tuple[int, str], list[ContainerInfo]] = {}
    for c in current.containers:
        if c.running:
            running.setdefault((c.app_id, c.service_name), []).append(c)
    for c in current.containers:
        key = (c.app_id, c.service_name, c.commit)
        seen.add(key)
        phase = phases.get(key)
        in_flight = phase is not None and phase.value in IN_FLIGHT_STATUSES
        status = phase.value if phase is not None and in_flight else c.status
        pair = running.get((c.app_id, c.service_name), [])
        if c.running and len({p.commit for p in pair}) > 1:
            newest = max(pair, key=lambda p: p.created)
            status = "Awaiting handover" if c is newest else "Handing over"
        views.append(ServiceView(
            app_id=c.app_id, app_uuid=c.app_uuid, app_name=names.get(c.app_id, ""),
            service_name=c.service_name, service_id=c.service_id, image_id=c.image_id,
            release_id=c.release_id, commit=c.commit,
            image=names_by_id.get(c.image, c.image_name), status=status,
            container_id=c.id, created_at=c.created, env=c.env,
        ))
    if target is None:
        return tuple(views)
    for app in target.apps.values():
        release = app.release
        if release is None:
            continue
        for svc in release.services.values():
            key = (app.app_id, svc.name, release.commit)
            if key in seen:
                continue
            progress = downloads.get(svc.image)
            if progress is not None and progress.status == "Downloading":
                status, pct = "Downloading", progress.progress
            elif svc.image in image_ids:
                status, pct = "Downloaded", None
            else:
                status, pct = "Downloading", progress.progress if progress else 0
            phase = phases.get(key)
            if phase is not None and phase.value in IN_FLIGHT_STATUSES:
                status = phase.value
            views.append(ServiceView(
                app_id=app.app_id, app_uuid=app.uuid, app_name=app.name, service_name=svc.name,
                service_id=svc.service_id, image_id=svc.image_id, release_id=release.release_id,
                commit=release.commit, image=svc.image, status=status, download_progress=pct,
            ))
    return tuple(views)
