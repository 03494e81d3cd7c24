"""The steps that carry out the API's intents (model/intents.py). Pure.

`PlanContext.intents` lists what the API asked for and is not done yet. For each pending
intent in its `ACT` (or `PURGE`) stage this emits the Kill / Stop / Start / RemoveVolume /
RecreateVolume steps, each carrying the intent's id so that the reconciler can route a
failure back to the action that asked (a user lock: 423 at once). Lock-needing steps are
gated on the app's update lock exactly like the loop's own (`takeLock` first, with the
intent's `force`); a start never waits for a lock (locks.md §9).

How intents and the loop's own plan for an app combine (`app_steps`):
- an app held by a restart or purge (`IntentView.held_apps`) gets none of the loop's steps:
  nothing of it is created or started until its kills and volume removals are done;
- the loop's steps that touch a container an intent acts on are dropped for that round;
- one `takeLock` per app: the intent's replaces the loop's (same services).
A pending `StopAll` (reboot/shutdown) replaces the whole plan with the stops.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from supervisor.errors import SupervisorError
from supervisor.model.current import ContainerInfo, Current
from supervisor.model.intents import (
    Pending,
    RemoveVolumes,
    RestartApp,
    RestartService,
    Stage,
    StartService,
    StopService,
)
from supervisor.model.spec import VolumeSpec
from supervisor.model.steps import (
    Kill,
    Noop,
    RecreateVolume,
    RemoveVolume,
    Start,
    Step,
    Stop,
    TakeLock,
)
from supervisor.model.target import TargetApp, TargetState
from supervisor.planner.context import PlanContext
from supervisor.planner.services import Decision
from supervisor.planner.specs import service_specs


def app_steps(app_id: int, own: Sequence[Step], containers: Sequence[ContainerInfo],
              volume_names: Iterable[str], target: TargetState | None,
              pending: Sequence[Pending], ctx: PlanContext) -> list[Step]:
    """The app's steps: its intents' steps merged with the loop's own (`own`)."""
    if not pending:
        return list(own)
    app = _target_app(target, app_id)
    present = set(volume_names)
    decisions: list[tuple[Pending, Decision]] = []
    for p in pending:
        decisions += [(p, d) for d in _decisions(p, containers, present, app, target, ctx)]
    touched = {cid for _, d in decisions if (cid := getattr(d.step, "container_id", None))}
    if app_id in ctx.intents.held_apps:
        own = []  # held: nothing of the app is created, started or changed meanwhile
    kept = [s for s in own if getattr(s, "container_id", None) not in touched]
    locking = [(p, d) for p, d in decisions if d.needs_lock]
    locked = app_id in ctx.locked_apps or app_id in ctx.foreign_locked
    if not locking or locked:
        return [d.step for _, d in decisions] + kept
    take = _take_lock(app_id, containers, app, ctx, locking[0][0],
                      force=any(_force(p) for p, _ in locking))
    return [take, *(d.step for _, d in decisions if not d.needs_lock),
            *(s for s in kept if not isinstance(s, TakeLock))]


def stop_all_steps(current: Current, target: TargetState | None,
                   ctx: PlanContext) -> tuple[Step, ...]:
    """Reboot/shutdown preparation: stop every running container, each app under its lock;
    nothing else happens while a `StopAll` is pending."""
    pending = ctx.intents.stop_all
    assert pending is not None
    steps: list[Step] = []
    for app_id in sorted({c.app_id for c in current.containers if c.running}):
        containers = current.containers_of(app_id)
        stops = [Decision(_stop(c, pending.id), needs_lock=True)
                 for c in containers if c.running]
        steps += _gate(app_id, stops, containers, target, ctx, pending)
    return tuple(steps)


def cleanup_steps(current: Current, ctx: PlanContext) -> list[Step]:
    """Remove the orphaned volumes `GET /v2/cleanup-volumes` asked for (no lock: nothing
    mounts them)."""
    present = {v.name: v for v in current.volumes}
    return [RemoveVolume(name=name, app_id=present[name].app_id, intent=p.id)
            for p in ctx.intents.cleanup if isinstance(p.intent, RemoveVolumes)
            for name in p.intent.names if name in present and name not in p.attempted]


def intents_only(current: Current, target: TargetState | None,
                 ctx: PlanContext) -> tuple[Step, ...]:
    """The intents' steps alone: what a held loop (failure budget) still carries out."""
    if ctx.intents.stop_all is not None:
        return stop_all_steps(current, target, ctx)
    steps: list[Step] = []
    for app_id in sorted(ctx.intents.app_ids):
        steps += app_steps(app_id, (), current.containers_of(app_id),
                           (v.name for v in current.volumes if v.app_id == app_id), target,
                           ctx.intents.for_app(app_id), ctx)
    return tuple(steps + cleanup_steps(current, ctx))


# -- one intent ---------------------------------------------------------------------------------


def _decisions(p: Pending, containers: Sequence[ContainerInfo], volumes: set[str],
               app: TargetApp | None, target: TargetState | None,
               ctx: PlanContext) -> list[Decision]:
    intent = p.intent
    if isinstance(intent, RestartApp):
        if p.stage == Stage.ACT:
            return [Decision(_kill(c, p.id), needs_lock=True) for c in containers
                    if c.id in intent.container_ids]
        if p.stage == Stage.PURGE:
            out = [Decision(RemoveVolume(name=name, app_id=intent.app_id, intent=p.id))
                   for name in sorted(intent.purge_volumes & volumes)]
            if intent.firmware_volume is not None and not p.firmware_done:
                spec = VolumeSpec(intent.firmware_volume, "local", {}, {}, "")
                out.append(Decision(RecreateVolume(spec=spec, intent=p.id)))
            return out
        return []
    if p.stage != Stage.ACT:
        return []
    if isinstance(intent, RestartService):
        return [Decision(_kill(c, p.id), needs_lock=True) for c in containers
                if c.id == intent.container_id]
    if isinstance(intent, StopService):
        # a stopped one too: upstream takes the locks first, so a user lock still refuses
        return [Decision(_stop(c, p.id), needs_lock=True) for c in containers
                if c.id == intent.container_id]
    if isinstance(intent, StartService):
        return [Decision(step) for c in containers
                if c.id == intent.container_id and not c.running
                and (step := _start(c, intent.service_name, containers, app, target, ctx,
                                    p.id))]
    return []


def _start(c: ContainerInfo, service_name: str, containers: Sequence[ContainerInfo],
           app: TargetApp | None, target: TargetState | None, ctx: PlanContext,
           intent: int) -> Step | None:
    """Start the existing container (its spec names the lifecycle record and the log line)."""
    if app is None or target is None:
        return None  # the app left the target: the loop removes its containers
    ids = {other.service_name: other.id for other in containers}
    spec = service_specs(target, app, ctx.device, ctx.image_ids, ids).get(service_name)
    if spec is None:
        return None
    if isinstance(spec, SupervisorError):
        return Noop(f"{service_name}: {spec}", app_id=c.app_id)
    return Start(spec=spec, commit=c.commit, container_id=c.id, intent=intent)


def _gate(app_id: int, decisions: list[Decision], containers: Sequence[ContainerInfo],
          target: TargetState | None, ctx: PlanContext, pending: Pending) -> list[Step]:
    locked = app_id in ctx.locked_apps or app_id in ctx.foreign_locked
    if locked or not any(d.needs_lock for d in decisions):
        return [d.step for d in decisions]
    take = _take_lock(app_id, containers, _target_app(target, app_id), ctx, pending,
                      force=_force(pending))
    return [take, *(d.step for d in decisions if not d.needs_lock)]


def _take_lock(app_id: int, containers: Sequence[ContainerInfo], app: TargetApp | None,
               ctx: PlanContext, pending: Pending, *, force: bool) -> TakeLock:
    """What the loop's `takeLock` would lock: every current and target service of the app."""
    names = {c.service_name for c in containers}
    if app is not None and app.release is not None:
        names |= set(app.release.services)
    return TakeLock(app_id=app_id, services=tuple(sorted(names)), force=ctx.force or force,
                    intent=pending.id)


def _force(p: Pending) -> bool:
    return bool(getattr(p.intent, "force", False))


def _target_app(target: TargetState | None, app_id: int) -> TargetApp | None:
    if target is None:
        return None
    return next((a for a in target.apps.values() if a.app_id == app_id), None)


def _kill(c: ContainerInfo, intent: int) -> Kill:
    return Kill(container_id=c.id, name=c.name, app_id=c.app_id, service_name=c.service_name,
                commit=c.commit, intent=intent)


def _stop(c: ContainerInfo, intent: int) -> Stop:
    return Stop(container_id=c.id, name=c.name, app_id=c.app_id, service_name=c.service_name,
                commit=c.commit, intent=intent)
