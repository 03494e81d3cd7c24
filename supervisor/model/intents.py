"""Intents: what an API action asks of the loop, as pure data (DESIGN.md "actions are intents").

An action (restart, purge, a service stop/start/restart, volume cleanup, reboot preparation)
validates its request, builds one of these and hands it to the reconciler's `IntentBook`
(intent_book.py), then awaits the future the book gives back. The book shows the planner an
immutable `IntentView` through `PlanContext.intents`: every pending intent with its id and
stage. `planner/intents.py` turns that view into Kill / Stop / Start / RemoveVolume steps
(each carrying the intent's id), gated on the app's update lock like the loop's own steps;
the one executor runs them; after the next observation the book settles what is done.

Nothing here does I/O; `not_recreated` is the pure test of "the app runs again".
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from supervisor.model.current import Current
from supervisor.model.target import TargetState


@dataclass(frozen=True, slots=True)
class RestartApp:
    """v1/v2 restart, and purge (api.md §5.1-5.2).

    Kill every listed container under the app's lock (`force` honoured) while the app is
    held: the planner creates none of its containers or volumes meanwhile. A purge then
    removes `purge_volumes` (the app's supervised volumes) and recreates the OS's extra
    firmware volume, still held. Then the loop recreates the app; the intent is carried out
    once every target service runs again in a container that is not one of `container_ids`.
    """

    app_id: int
    container_ids: frozenset[str]
    force: bool = False
    purge: bool = False
    purge_volumes: frozenset[str] = frozenset()
    firmware_volume: str | None = None


@dataclass(frozen=True, slots=True)
class RestartService:
    """Kill one container; carried out once its service runs again in a new container."""

    app_id: int
    service_name: str
    container_id: str
    force: bool = False


@dataclass(frozen=True, slots=True)
class StopService:
    """Stop one container and keep it: the loop never starts an exited container."""

    app_id: int
    container_id: str
    force: bool = False


@dataclass(frozen=True, slots=True)
class StartService:
    """Start one existing container of `service_name`; never under update locks (locks.md §9)."""

    app_id: int
    service_name: str
    container_id: str


@dataclass(frozen=True, slots=True)
class StopAll:
    """Reboot/shutdown preparation: stop every running supervised container (each app's lock
    is held by the device action). Once carried out the loop stays held with `reason` (nothing
    more is applied) until the device comes back."""

    reason: str
    force: bool = False


@dataclass(frozen=True, slots=True)
class RemoveVolumes:
    """`GET /v2/cleanup-volumes`: remove these orphaned app volumes; the future's result is the
    list of names removed (a volume still in use is kept)."""

    names: tuple[str, ...]


Intent = RestartApp | RestartService | StopService | StartService | StopAll | RemoveVolumes


class Stage(StrEnum):
    ACT = "act"  # the planner emits the intent's steps
    PURGE = "purge"  # a purge's kills are done: remove the volumes
    WAIT = "wait"  # no steps of its own: waiting for the loop (recreation, the lock's release)


@dataclass(frozen=True, slots=True)
class Pending:
    """One intent as the planner sees it."""

    id: int
    intent: Intent
    stage: Stage = Stage.ACT
    firmware_done: bool = False  # a purge's extra firmware volume was recreated
    attempted: frozenset[str] = frozenset()  # RemoveVolumes: names already tried


@dataclass(frozen=True, slots=True)
class IntentView:
    """The pending intents, immutable: what `PlanContext.intents` holds."""

    pending: tuple[Pending, ...] = ()

    def for_app(self, app_id: int) -> tuple[Pending, ...]:
        return tuple(p for p in self.pending if _app_of(p.intent) == app_id)

    @property
    def app_ids(self) -> frozenset[int]:
        return frozenset(a for p in self.pending if (a := _app_of(p.intent)) is not None)

    @property
    def held_apps(self) -> frozenset[int]:
        """Apps whose containers and volumes the planner must not create or start."""
        return frozenset(p.intent.app_id for p in self.pending
                         if isinstance(p.intent, RestartApp) and p.stage != Stage.WAIT)

    @property
    def stop_all(self) -> Pending | None:
        return next((p for p in self.pending if isinstance(p.intent, StopAll)), None)

    @property
    def cleanup(self) -> tuple[Pending, ...]:
        return tuple(p for p in self.pending if isinstance(p.intent, RemoveVolumes))


def _app_of(intent: Intent) -> int | None:
    return None if isinstance(intent, StopAll | RemoveVolumes) else intent.app_id


def not_recreated(current: Current, target: TargetState | None, app_id: int,
                  old_ids: Collection[str], only: Collection[str] | None = None) -> list[str]:
    """Target services of the app (or of `only`) still lacking a container that is not one
    of `old_ids` and that runs, when the target wants it running."""
    if target is None:
        return []
    app = next((a for a in target.apps.values() if a.app_id == app_id), None)
    if app is None or app.release is None:
        return []
    containers = current.containers_of(app_id)
    waiting = []
    for name, svc in sorted(app.release.services.items()):
        if only is not None and name not in only:
            continue
        if not any(c.service_name == name and c.id not in old_ids and
                   (c.running or not svc.running) for c in containers):
            waiting.append(name)
    return waiting
