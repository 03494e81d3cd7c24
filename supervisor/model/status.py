"""Service statuses as the API and the cloud report show them (state.md §6.3). Pure.

Data flow: the runtime calls `build_services` after every observation or lifecycle change and
puts the result in the Snapshot. Containers give the status (engine.md §2.1), overlaid with a
lifecycle phase while work is in flight (Installing, Starting, Stopping); two running
containers of one service with different commits are `Handing over` (older) / `Awaiting
handover` (newer); target services with no container of their release yet are `Downloading`
(with progress) or `Downloaded`.
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

PhaseKey = tuple[int, str, str]  # (app_id, service_name, commit), as lifecycle.Key


def build_services(
    current: Current,
    target: TargetState | None,
    phases: Mapping[PhaseKey, Phase],
    downloads: Mapping[str, ImageProgress],
    image_ids: Mapping[str, str],
) -> tuple[ServiceView, ...]:
    """One view per container, then one per target service without a container of its
    release. `downloads` is keyed by image name; `image_ids` maps image names to the Docker
    ids of the images present."""
    names: dict[int, str] = {}
    wanted: dict[PhaseKey, str] = {}  # target (app, service, commit) -> image name
    if target is not None:
        for app in target.apps.values():
            names[app.app_id] = app.name
            if app.release is not None:
                for svc in app.release.services.values():
                    wanted[(app.app_id, svc.name, app.release.commit)] = svc.image
    by_id: dict[str, str] = {}
    for name, image_id in sorted(image_ids.items()):
        by_id.setdefault(image_id, name)

    running: dict[tuple[int, str], list[ContainerInfo]] = {}
    for c in current.containers:
        if c.running:
            running.setdefault((c.app_id, c.service_name), []).append(c)
    views = [_container_view(c, running, phases, names, wanted, by_id)
             for c in current.containers]
    seen = {(c.app_id, c.service_name, c.commit) for c in current.containers}
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
            pct: int | None
            if progress is not None and progress.status == "Downloading":
                status, pct = "Downloading", progress.progress
            elif svc.image in image_ids:
                status, pct = "Downloaded", None
            else:  # not fetched yet (waiting for its turn, or a failed pull to retry)
                status, pct = "Downloading", progress.progress if progress else 0
            status = _in_flight(phases.get(key)) or status
            views.append(ServiceView(
                app_id=app.app_id, app_uuid=app.uuid, app_name=app.name, service_name=svc.name,
                service_id=svc.service_id, image_id=svc.image_id, release_id=release.release_id,
                commit=release.commit, image=svc.image, status=status, download_progress=pct,
            ))
    return tuple(views)


def _container_view(
    c: ContainerInfo,
    running: Mapping[tuple[int, str], list[ContainerInfo]],
    phases: Mapping[PhaseKey, Phase],
    names: Mapping[int, str],
    wanted: Mapping[PhaseKey, str],
    by_id: Mapping[str, str],
) -> ServiceView:
    key = (c.app_id, c.service_name, c.commit)
    status = _in_flight(phases.get(key)) or _handover_status(c, running) or c.status
    return ServiceView(
        app_id=c.app_id, app_uuid=c.app_uuid, app_name=names.get(c.app_id, ""),
        service_name=c.service_name, service_id=c.service_id, image_id=c.image_id,
        release_id=c.release_id, commit=c.commit, image=_image_name(c, wanted, by_id),
        status=status, container_id=c.id, created_at=c.created, env=c.env,
    )


def _in_flight(phase: Phase | None) -> str | None:
    """Work in flight is the freshest news about a service: it wins over what Docker shows."""
    return phase.value if phase is not None and phase.value in IN_FLIGHT_STATUSES else None


def _handover_status(
    c: ContainerInfo, running: Mapping[tuple[int, str], list[ContainerInfo]]
) -> str | None:
    """Two running containers of one service from different releases: a hand-over."""
    if not c.running:
        return None
    pair = running.get((c.app_id, c.service_name), [])
    if len({o.commit for o in pair}) < 2:
        return None
    newest = max(pair, key=lambda o: (o.created, o.id))
    return "Awaiting handover" if c is newest else "Handing over"


def _image_name(c: ContainerInfo, wanted: Mapping[PhaseKey, str],
                by_id: Mapping[str, str]) -> str:
    """The image *name* (the executor creates containers from the image id, so Docker's
    Config.Image is usually `sha256:...`): the target's name for this release, else a known
    name of the same image, else whatever Docker says."""
    name = wanted.get((c.app_id, c.service_name, c.commit))
    return name or by_id.get(c.image) or c.image_name
