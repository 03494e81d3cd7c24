"""`plan()`: strict gating first (supervisor0, image housekeeping), then every app.

Gating follows upstream's `inferNextSteps` (engine.md §6): while the supervisor0 network is
wrong nothing else happens (the services attached to it are killed so it can be recreated);
image housekeeping runs alone when there is any; then each app in the target or in Docker is
planned on its own, merged with the steps of the API's intents for it (planner/intents.py), and
the batches are joined. A pending reboot/shutdown preparation (`StopAll`) replaces the plan.
"""

from __future__ import annotations

from supervisor.model.current import Current
from supervisor.model.spec import SUPERVISOR_NETWORK, wants_supervisor_api
from supervisor.model.steps import EnsureSupervisorNetwork, Fetch, Noop, ReleaseLock, Step
from supervisor.model.target import TargetApp, TargetState
from supervisor.planner.apps import AppObjects, AppPlanner, gate_on_lock
from supervisor.planner.context import PlanContext
from supervisor.planner.device_config import device_config_steps
from supervisor.planner.images import image_steps
from supervisor.planner.intents import app_steps, cleanup_steps, stop_all_steps
from supervisor.planner.services import kill


def plan(current: Current, target: TargetState | None, ctx: PlanContext) -> tuple[Step, ...]:
    """The next batch of independent steps; empty when current matches target and no
    intent of the API is pending."""
    if ctx.intents.stop_all is not None:
        return stop_all_steps(current, target, ctx)  # reboot/shutdown: nothing else
    if target is None:
        return tuple(cleanup_steps(current, ctx))  # no target yet: touch nothing else
    configuring = device_config_steps(ctx.device_config)
    if configuring:  # device configuration runs alone (engine.md §15.2 step 3)
        return configuring
    if not current.supervisor0_ok and _needs_supervisor0(target):
        return _supervisor0_steps(current, target, ctx)
    housekeeping = image_steps(current, target, ctx)
    if housekeeping:
        return housekeeping
    apps: dict[int, TargetApp] = {app.app_id: app for app in target.apps.values()}
    objects = _group_by_app(current)
    app_ids = set(apps) | set(objects) | ctx.locked_apps | ctx.lock_leftovers
    app_ids |= ctx.intents.app_ids
    steps: list[Step] = []
    for app_id in sorted(app_ids):
        objs = objects.get(app_id) or AppObjects()
        own = AppPlanner(app_id, apps.get(app_id), objs, ctx, target).steps()
        steps += app_steps(app_id, own, objs.containers, (v.name for v in objs.volumes), target,
                           ctx.intents.for_app(app_id), ctx)
    steps += cleanup_steps(current, ctx)
    steps = _one_fetch_per_image(steps)
    if not steps and ctx.downloading:
        steps.append(Noop("waiting for downloads"))
    if ctx.reboot_required and all(isinstance(s, Noop) for s in steps):
        return _settle_for_reboot(ctx)
    return tuple(steps)


def _settle_for_reboot(ctx: PlanContext) -> tuple[Step, ...]:
    """Upstream reboots once only waiting is left and a reboot is pending (engine.md §10):
    what waits may well wait for that reboot (a requires-reboot dependency). Release the
    locks we hold, then plan nothing, so the loop settles and the runtime reboots."""
    return tuple(ReleaseLock(app_id=a) for a in sorted(ctx.locked_apps))


def _group_by_app(current: Current) -> dict[int, AppObjects]:
    out: dict[int, AppObjects] = {}
    for c in current.containers:
        out.setdefault(c.app_id, AppObjects()).containers.append(c)
    for n in current.networks:
        if n.app_id is not None:
            out.setdefault(n.app_id, AppObjects()).networks.append(n)
    for v in current.volumes:
        out.setdefault(v.app_id, AppObjects()).volumes.append(v)
    return out


def _needs_supervisor0(target: TargetState) -> bool:
    """Some service reaches the API over supervisor0 (the label, without host networking)."""
    for app in target.apps.values():
        if app.release is None:
            continue
        for svc in app.release.services.values():
            if svc.config.network_mode != "host" and wants_supervisor_api(svc):
                return True
    return False


def _supervisor0_steps(
    current: Current, target: TargetState, ctx: PlanContext
) -> tuple[Step, ...]:
    """Kill the running containers attached to the wrong supervisor0 (Docker refuses to
    remove a network with active endpoints), then recreate it."""
    attached = [c for c in current.containers if c.running and SUPERVISOR_NETWORK in c.networks]
    if not attached:
        return (EnsureSupervisorNetwork(),)
    steps: list[Step] = []
    for app_id in sorted({c.app_id for c in attached}):
        names = [c.service_name for c in current.containers if c.app_id == app_id]
        names += [s for app in target.apps.values() if app.app_id == app_id and app.release
                  for s in app.release.services]
        steps += gate_on_lock(app_id, [kill(c) for c in attached if c.app_id == app_id], names,
                              ctx)
    return tuple(steps)


def _one_fetch_per_image(steps: list[Step]) -> list[Step]:
    seen: set[str] = set()
    out: list[Step] = []
    for step in steps:
        if isinstance(step, Fetch):
            if step.image in seen:
                continue
            seen.add(step.image)
        out.append(step)
    return out
