"""Per-service rules: pairing a current container with its target, and update strategies.

Each function returns `Decision`s: a step plus whether it needs the app's update lock. The app
planner turns lock-needing decisions into a single `takeLock` while the lock is not held.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from supervisor.model.compose import ContainerSpec
from supervisor.model.current import ContainerInfo
from supervisor.model.steps import (
    Fetch,
    Handover,
    Kill,
    Noop,
    RequireReboot,
    Start,
    Step,
    Stop,
    UpdateMetadata,
)
from supervisor.model.target import TargetService
from supervisor.planner.context import PlanContext

STRATEGIES = ("download-then-kill", "kill-then-download", "delete-then-download", "hand-over")
_TRUTHY = {"1", "true", "on", "yes"}
_USERLAND_PROXY = re.compile(r"userland proxy.*cannot assign requested address$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    needs_lock: bool = False


def label_true(labels: dict[str, str] | object, name: str) -> bool:
    value = labels.get(name) if isinstance(labels, dict) else None
    return str(value).strip().lower() in _TRUTHY if value is not None else False


def uses_supervisor_api(svc: TargetService) -> bool:
    return label_true(svc.labels, "io.balena.features.supervisor-api")


def strategy_of(labels: dict[str, str] | object) -> str:
    value = labels.get("io.balena.update.strategy") if isinstance(labels, dict) else None
    return value if value in STRATEGIES else "download-then-kill"


def handover_timeout(labels: dict[str, str]) -> int:
    raw = labels.get("io.balena.update.handover-timeout", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else 60000


def kill(c: ContainerInfo) -> Decision:
    return Decision(
        Kill(container_id=c.id, name=c.name, app_id=c.app_id, service_name=c.service_name,
             commit=c.commit),
        needs_lock=True,
    )


@dataclass(frozen=True, slots=True)
class ServiceInputs:
    """What the app planner knows about one service pair."""

    current: ContainerInfo | None
    target: TargetService | None
    spec: ContainerSpec | None
    commit: str
    image_ready: bool  # the target image is in the engine
    all_images_ready: bool  # every target image of the app is in the engine
    deps_met: bool  # start dependencies (§9)
    special_kill: bool  # uses a network/volume that is changing


def fetch_or_wait(inp: ServiceInputs, ctx: PlanContext) -> Decision:
    assert inp.target is not None
    if inp.target.image in ctx.downloading:
        return Decision(Noop(f"downloading {inp.target.image}"))
    return Decision(
        Fetch(image=inp.target.image, app_id=inp.spec.app_id if inp.spec else 0,
              service_name=inp.target.name, commit=inp.commit)
    )


def install_decisions(inp: ServiceInputs, ctx: PlanContext) -> list[Decision]:
    """No current container: fetch, then start once dependencies are met."""
    assert inp.target is not None and inp.spec is not None
    if not inp.image_ready:
        return [fetch_or_wait(inp, ctx)]
    if not inp.deps_met:
        return [] if ctx.reboot_required else [Decision(Noop(f"{inp.target.name}: dependencies"))]
    start = inp.target.running and not label_true(
        inp.target.labels, "io.balena.update.requires-reboot"
    )
    return [Decision(Start(spec=inp.spec, commit=inp.commit, start=start), needs_lock=True)]


def same_config(inp: ServiceInputs, ctx: PlanContext) -> bool:
    cur, spec, tgt = inp.current, inp.spec, inp.target
    assert cur is not None and spec is not None and tgt is not None
    image_id = ctx.image_ids.get(tgt.image)
    return cur.config_hash == spec.config_hash and image_id is not None and cur.image == image_id


def update_decisions(inp: ServiceInputs, ctx: PlanContext) -> list[Decision]:
    """A current container and a target for the same service name."""
    cur, tgt, spec = inp.current, inp.target, inp.spec
    assert cur is not None and tgt is not None and spec is not None
    if not inp.special_kill and same_config(inp, ctx):
        return _settle(inp, ctx)
    return _strategy(inp, ctx)


def _settle(inp: ServiceInputs, ctx: PlanContext) -> list[Decision]:
    """Same config: rename for a release-only change, start or stop for the run state."""
    cur, tgt, spec = inp.current, inp.target, inp.spec
    assert cur is not None and tgt is not None and spec is not None
    if cur.name != spec.name:
        if strategy_of(tgt.labels) == "download-then-kill" and not inp.all_images_ready:
            return [Decision(Noop(f"{tgt.name}: waiting for the release's images"))]
        return [Decision(
            UpdateMetadata(container_id=cur.id, old_name=cur.name, new_name=spec.name,
                           app_id=cur.app_id, service_name=cur.service_name, commit=inp.commit),
            needs_lock=True,
        )]
    if tgt.running and not cur.running:
        if cur.state == "created" or _userland_proxy_race(cur):
            if label_true(tgt.labels, "io.balena.update.requires-reboot") and _created_this_boot(
                cur, ctx
            ):
                if ctx.reboot_required:
                    return []
                return [Decision(RequireReboot(app_id=cur.app_id, service_name=cur.service_name))]
            if not inp.deps_met:
                return [Decision(Noop(f"{tgt.name}: dependencies"))]
            return [Decision(Start(spec=spec, commit=inp.commit, container_id=cur.id),
                             needs_lock=True)]
        return []  # exited: Docker's restart policy decides, never the supervisor
    if not tgt.running and cur.running:
        return [Decision(
            Stop(container_id=cur.id, name=cur.name, app_id=cur.app_id,
                 service_name=cur.service_name, commit=cur.commit),
            needs_lock=True,
        )]
    return []


def _strategy(inp: ServiceInputs, ctx: PlanContext) -> list[Decision]:
    cur, tgt, spec = inp.current, inp.target, inp.spec
    assert cur is not None and tgt is not None and spec is not None
    strategy = strategy_of(tgt.labels)
    if strategy in ("kill-then-download", "delete-then-download"):
        return [kill(cur)]
    if not inp.image_ready:
        return [fetch_or_wait(inp, ctx)]
    if strategy == "hand-over" and not inp.special_kill:
        if inp.deps_met and inp.all_images_ready:
            return [Decision(Handover(container_id=cur.id, name=cur.name, spec=spec,
                                      commit=inp.commit,
                                      timeout_ms=handover_timeout(dict(tgt.labels))))]
        return [Decision(Noop(f"{tgt.name}: hand-over waits for dependencies"))]
    if inp.all_images_ready:
        return [kill(cur)]
    return [Decision(Noop(f"{tgt.name}: waiting for the release's images before killing"))]


def _userland_proxy_race(cur: ContainerInfo) -> bool:
    return bool(_USERLAND_PROXY.search(cur.exit_error or ""))


def _created_this_boot(cur: ContainerInfo, ctx: PlanContext) -> bool:
    return not ctx.boot_time or cur.created[:19] >= ctx.boot_time[:19]
