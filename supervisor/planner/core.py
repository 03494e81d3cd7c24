"""`plan()`: strict gating first (supervisor0, image housekeeping), then every app."""

from __future__ import annotations

from supervisor.model.current import Current
from supervisor.model.steps import EnsureSupervisorNetwork, Fetch, Noop, Step
from supervisor.model.target import TargetState
from supervisor.planner.apps import AppPlanner
from supervisor.planner.context import PlanContext
from supervisor.planner.images import image_steps
from supervisor.planner.services import uses_supervisor_api


def plan(current: Current, target: TargetState | None, ctx: PlanContext) -> tuple[Step, ...]:
    """The next batch of independent steps; empty when current matches target."""
    if target is None:
        return ()  # no target yet: touch nothing
    if not current.supervisor0_ok and _needs_supervisor0(target):
        return (EnsureSupervisorNetwork(),)
    housekeeping = image_steps(current, target, ctx)
    if housekeeping:
        return housekeeping
    apps = {app.app_id: app for app in target.apps.values()}
    steps: list[Step] = []
    for app_id in sorted(set(apps) | current.app_ids()):
        steps.extend(AppPlanner(app_id, apps.get(app_id), current, ctx).steps())
    steps = _one_fetch_per_image(steps)
    if not steps and ctx.downloading:
        steps.append(Noop("waiting for downloads"))
    return tuple(steps)


def _needs_supervisor0(target: TargetState) -> bool:
    for app in target.apps.values():
        if app.release is None:
            continue
        for svc in app.release.services.values():
            if uses_supervisor_api(svc) and svc.config.network_mode != "host":
                return True
    return False


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
