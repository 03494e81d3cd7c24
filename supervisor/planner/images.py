"""Image housekeeping: remove images we pulled that nothing uses or wants any more."""

from __future__ import annotations

from supervisor.model.current import Current
from supervisor.model.steps import RemoveImage, Step
from supervisor.model.target import TargetState
from supervisor.planner.context import PlanContext


def target_image_names(target: TargetState) -> set[str]:
    return {
        svc.image
        for app in target.apps.values()
        if app.release is not None
        for svc in app.release.services.values()
    }


def image_steps(current: Current, target: TargetState, ctx: PlanContext) -> tuple[Step, ...]:
    """removeImage for managed images that no container uses and no target service names.

    Only images recorded as pulled by us (`ctx.managed_images`) are candidates: the
    supervisor never deletes an image it did not fetch. Skipped while a download runs (the
    old image may still be needed) and when `keep_images` (local mode, intermediate applies).
    """
    if ctx.downloading or ctx.keep_images:
        return ()
    wanted_ids = {ctx.image_ids[name] for name in target_image_names(target) if name in ctx.image_ids}
    wanted_names = target_image_names(target)
    in_use = {c.image for c in current.containers}
    present = {img.id for img in current.images}
    steps: list[Step] = []
    removed: set[str] = set()
    for name, image_id in sorted(ctx.managed_images.items()):
        if (
            image_id in present
            and image_id not in in_use
            and image_id not in wanted_ids
            and name not in wanted_names
            and image_id not in removed
        ):
            removed.add(image_id)
            steps.append(RemoveImage(image_id=image_id, name=name))
    return tuple(steps)
