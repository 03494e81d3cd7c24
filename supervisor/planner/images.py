"""Image housekeeping: remove images we pulled that nothing uses or wants any more.

Runs before any app step and alone (engine.md §6 step 3), and only while no download is in
flight (the old image may still be needed) and unless `keep_images` (local mode,
intermediate applies). An image of a service whose new image is still to be downloaded is
kept as its delta source, except under `delete-then-download`, whose point is to free the
disk before the download (engine.md §8, §14.5).
"""

from __future__ import annotations

from supervisor.model.current import Current
from supervisor.model.spec import service_labels
from supervisor.model.steps import RemoveImage, Step
from supervisor.model.target import TargetState
from supervisor.planner.context import PlanContext

STRATEGY_LABEL = "io.balena.update.strategy"


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
    supervisor never deletes an image it did not fetch.
    """
    if ctx.downloading or ctx.keep_images or not ctx.managed_images:
        return ()
    wanted_names = target_image_names(target)
    present = {img.id for img in current.images}
    candidates = [(name, image_id) for name, image_id in sorted(ctx.managed_images.items())
                  if image_id in present and name not in wanted_names]
    if not candidates:
        return ()
    keep = {ctx.image_ids[name] for name in wanted_names if name in ctx.image_ids}
    keep |= {c.image for c in current.containers}  # dead and stopped containers too
    keep |= {ctx.managed_images[name] for name in delta_sources(target, ctx)}
    steps: list[Step] = []
    for name, image_id in candidates:
        if image_id not in keep:
            keep.add(image_id)  # one removeImage per image, whatever its names
            steps.append(RemoveImage(image_id=image_id, name=name))
    return tuple(steps)


def delta_sources(target: TargetState, ctx: PlanContext) -> set[str]:
    """Managed images of the same app and service as a target image still to be downloaded
    (upstream keeps the best one as the delta source; we keep every such image: there is one
    unless housekeeping was interrupted). Not for `delete-then-download` services."""
    waiting: set[tuple[int, str]] = set()
    for app in target.apps.values():
        if app.release is None:
            continue
        for svc in app.release.services.values():
            strategy = service_labels(svc).get(STRATEGY_LABEL, "")
            if svc.image not in ctx.image_ids and strategy != "delete-then-download":
                waiting.add((app.app_id, svc.name))
    return {name for name, owner in ctx.image_owners.items()
            if owner in waiting and name in ctx.managed_images}
