"""Per-service rules: one target service and the container kept for it -> decisions.

Follows upstream's per-service step generation and update strategies (engine.md §7.3, §8, §9,
§10). Each rule returns `Decision`s: a step plus whether it needs the app's update lock; the
app planner turns lock-needing decisions into one `takeLock` while the lock is not held.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from supervisor.model.current import ContainerInfo
from supervisor.model.spec import ContainerSpec, truthy
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
from supervisor.planner.specs import spec_labels, spec_network_mode

DEFAULT_STRATEGY = "download-then-kill"
STRATEGIES = frozenset(
    {"download-then-kill", "kill-then-download", "delete-then-download", "hand-over"})
KILL_FIRST = frozenset({"kill-then-download", "delete-then-download"})
STRATEGY_LABEL = "io.balena.update.strategy"
HANDOVER_TIMEOUT_LABEL = "io.balena.update.handover-timeout"
REQUIRES_REBOOT_LABEL = "io.balena.update.requires-reboot"
_USERLAND_PROXY = re.compile(r"userland proxy.*cannot assign requested address$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    needs_lock: bool = False


@dataclass
class Pair:
    """A target service, its spec and the container kept for it, with what the app knows."""

    target: TargetService
    spec: ContainerSpec
    current: ContainerInfo | None
    commit: str
    image_ready: bool  # the target image is in the engine
    all_images_ready: bool  # every target image of the app is in the engine
    special_kill: bool  # the container uses a network/volume that is being recreated
    # computed only when asked: what creating the container needs (images, networks,
    # volumes, the container of `network_mode: service:<x>`), and what starting it needs
    # on top of that (every dependency settled and started, §9)
    can_create: Callable[[], bool]
    deps_met: Callable[[], bool]

    @property
    def labels(self) -> Mapping[str, str]:
        return spec_labels(self.spec)

    @property
    def strategy(self) -> str:
        value = self.labels.get(STRATEGY_LABEL, "")
        return value if value in STRATEGIES else DEFAULT_STRATEGY

    @property
    def requires_reboot(self) -> bool:
        return truthy(self.labels.get(REQUIRES_REBOOT_LABEL, ""))


def kill(c: ContainerInfo) -> Decision:
    return Decision(Kill(container_id=c.id, name=c.name, app_id=c.app_id,
                         service_name=c.service_name, commit=c.commit), needs_lock=True)


def handover_timeout(labels: Mapping[str, str]) -> int:
    raw = labels.get(HANDOVER_TIMEOUT_LABEL, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else 60000


def same_config(cur: ContainerInfo, spec: ContainerSpec, image_id: str | None) -> bool:
    """The container runs the target's config and image (the run state aside).

    `network_mode: service:<x>` is outside the hash (it names a container id): the container
    must be joined to the container currently kept for <x>, so it is recreated with it.
    """
    if not spec.config_matches(cur.config_hash) or image_id is None or cur.image != image_id:
        return False
    if spec.network_service is not None:
        return False  # <x> has no container: whatever this one joined is gone
    if not spec.depends_on:  # `service:<x>` makes <x> a dependency: nothing to join
        return True
    mode = spec_network_mode(spec)
    return not mode.startswith("container:") or cur.network_mode == mode


def in_target_state(cur: ContainerInfo, spec: ContainerSpec, image_id: str | None) -> bool:
    """Nothing but the run state left to do: same config and already renamed."""
    return cur.name == spec.name and same_config(cur, spec, image_id)


def plan_service(p: Pair, ctx: PlanContext) -> list[Decision]:
    if p.current is None:
        return _install(p, ctx)
    if not p.special_kill and same_config(p.current, p.spec, ctx.image_ids.get(p.target.image)):
        return _settle(p, p.current, ctx)
    return _update(p, p.current, ctx)


def _noop(p: Pair, why: str) -> list[Decision]:
    return [Decision(Noop(f"{p.target.name}: {why}", app_id=p.spec.app_id))]


def _fetch_or_wait(p: Pair, ctx: PlanContext) -> list[Decision]:
    if p.target.image in ctx.downloading:
        return _noop(p, f"downloading {p.target.image}")
    return [Decision(Fetch(image=p.target.image, app_id=p.spec.app_id,
                           service_name=p.target.name, commit=p.commit))]


def _install(p: Pair, ctx: PlanContext) -> list[Decision]:
    """No container: fetch, then create (and start) once every dependency is met."""
    if not p.image_ready:
        return _fetch_or_wait(p, ctx)
    if p.requires_reboot and p.target.running:
        # created now, started after the next reboot: create it without waiting for its
        # dependencies to start, so a chain of such services needs one reboot, not one each
        if not p.can_create():
            return _noop(p, "waiting for what its creation needs")
        return [Decision(Start(spec=p.spec, commit=p.commit, start=False), needs_lock=True)]
    if not p.deps_met():
        # a start is coming (its network, volume or dependency is on the way): ask for the
        # app's lock now, in the same batch, rather than one round later
        # (not while a reboot is pending: then only waiting is left, and the reboot comes first)
        return [Decision(Noop(f"{p.target.name}: waiting for dependencies",
                              app_id=p.spec.app_id), needs_lock=not ctx.reboot_required)]
    return [Decision(Start(spec=p.spec, commit=p.commit, start=p.target.running),
                     needs_lock=True)]


def _settle(p: Pair, cur: ContainerInfo, ctx: PlanContext) -> list[Decision]:
    """Same config: rename for a release-only change, start or stop for the run state."""
    if cur.name != p.spec.name:
        if p.strategy == DEFAULT_STRATEGY and not p.all_images_ready:
            return _noop(p, "waiting for the release's images")
        return [Decision(UpdateMetadata(
            container_id=cur.id, old_name=cur.name, new_name=p.spec.name, app_id=cur.app_id,
            service_name=cur.service_name, commit=p.commit), needs_lock=True)]
    if p.target.running and not cur.running:
        if not (cur.state == "created" or _userland_proxy_race(cur)):
            return []  # exited: Docker's restart policy decides, never the supervisor
        if p.requires_reboot and _created_this_boot(cur, ctx):
            if ctx.reboot_required:
                # breadcrumb set: wait; once only waiting is left the plan settles (core)
                return _noop(p, "waiting for a reboot")
            return [Decision(RequireReboot(app_id=cur.app_id, service_name=cur.service_name))]
        if not p.deps_met():
            return _noop(p, "waiting for dependencies")
        return [Decision(Start(spec=p.spec, commit=p.commit, container_id=cur.id),
                         needs_lock=True)]
    if not p.target.running and cur.running:
        return [Decision(Stop(container_id=cur.id, name=cur.name, app_id=cur.app_id,
                              service_name=cur.service_name, commit=cur.commit),
                         needs_lock=True)]
    return []


def _update(p: Pair, cur: ContainerInfo, ctx: PlanContext) -> list[Decision]:
    """Config differs (or a network/volume it uses is recreated): the update strategy."""
    strategy = p.strategy
    if strategy in KILL_FIRST:
        return [kill(cur)]
    if not p.image_ready:
        return _fetch_or_wait(p, ctx)
    # hand-over starts the new container at once: not for a service that must stay stopped
    # or wait for a reboot, nor when a resource it uses must be recreated first; and there
    # is only something to hand over when the old container runs
    if (strategy == "hand-over" and not p.special_kill and p.target.running
            and not p.requires_reboot and cur.running):
        if p.deps_met():
            return [Decision(Handover(container_id=cur.id, name=cur.name, spec=p.spec,
                                      commit=p.commit, timeout_ms=handover_timeout(p.labels)))]
        return _noop(p, "hand-over waits for dependencies")
    if p.all_images_ready:
        return [kill(cur)]
    return _noop(p, "waiting for the release's images before killing")


def _userland_proxy_race(cur: ContainerInfo) -> bool:
    """Exited on a host interface race: upstream starts these again (engine.md §9)."""
    return cur.state == "exited" and bool(_USERLAND_PROXY.search(cur.exit_error or ""))


def _created_this_boot(cur: ContainerInfo, ctx: PlanContext) -> bool:
    """Both are UTC ISO-8601 strings, compared to the finest digit each has (a container
    made just before a dry-run reboot shares its second); without a known boot time assume
    it is recent."""
    return not ctx.boot_time or iso_instant(cur.created) >= iso_instant(ctx.boot_time)


def iso_instant(stamp: str) -> tuple[str, int]:
    """`2024-06-01T00:00:00.5Z` -> ("2024-06-01T00:00:00", 500000000): the second and the
    nanoseconds after it, so that stamps of different precision order correctly."""
    second, rest = stamp[:19], stamp[19:]
    digits = ""
    if rest.startswith("."):
        for ch in rest[1:10]:
            if ch not in "0123456789":
                break
            digits += ch
    return second, int(digits.ljust(9, "0"))
