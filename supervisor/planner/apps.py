"""Per-app planning: pair services, sequence networks/volumes, gate on the update lock.

Order of emission within an app (engine.md §7.1): remove dead containers; one `takeLock` when
lock-needing steps exist and the lock is not held (and none of those steps yet); service
steps; volume and network steps; and, only when nothing else is left, `updateCommit` and
`releaseLock` together. An app that left the target is taken down in order over rounds:
lock, kill, networks, volumes (unless `keep_volumes`), release (§7.6).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, partial

from supervisor.errors import SupervisorError
from supervisor.model.current import ContainerInfo, NetworkInfo, VolumeInfo
from supervisor.model.spec import ContainerSpec
from supervisor.model.steps import (
    Noop,
    ReleaseLock,
    Remove,
    RemoveNetwork,
    RemoveVolume,
    Step,
    TakeLock,
    UpdateCommit,
)
from supervisor.model.target import TargetApp, TargetService, TargetState
from supervisor.planner.context import PlanContext
from supervisor.planner.resources import (
    network_specs,
    network_users,
    plan_networks,
    plan_volumes,
    removable_volumes,
    volume_specs,
    volume_users,
)
from supervisor.planner.services import Decision, Pair, in_target_state, kill, plan_service
from supervisor.planner.specs import network_service, resources_used, service_specs


@dataclass
class AppObjects:
    """What Docker holds for one app id."""

    containers: list[ContainerInfo] = field(default_factory=list)
    networks: list[NetworkInfo] = field(default_factory=list)
    volumes: list[VolumeInfo] = field(default_factory=list)


def gate_on_lock(
    app_id: int, decisions: list[Decision], names: Iterable[str], ctx: PlanContext
) -> list[Step]:
    """Lock-needing steps run only once the app's lock is held; until then one `takeLock`
    for every service of the app (current and target) replaces them (locks.md §6)."""
    locked = app_id in ctx.locked_apps or app_id in ctx.foreign_locked
    if locked or not any(d.needs_lock for d in decisions):
        return [d.step for d in decisions]
    kept = [d.step for d in decisions if not d.needs_lock]
    return [TakeLock(app_id=app_id, services=tuple(sorted(set(names))), force=ctx.force), *kept]


class AppPlanner:
    """The steps of one app id: `target` is its target app (None: it left the target)."""

    def __init__(
        self,
        app_id: int,
        target: TargetApp | None,
        objects: AppObjects,
        ctx: PlanContext,
        target_state: TargetState,
    ) -> None:
        self.app_id = app_id
        self.target = target
        self.target_state = target_state
        self.ctx = ctx
        self.containers = objects.containers
        self.networks = objects.networks
        self.volumes = objects.volumes
        release = target.release if target is not None else None
        self.services: dict[str, TargetService] = release.services if release else {}
        self.commit = release.commit if release else ""
        self.dead = [c for c in self.containers if c.state == "dead"]
        self.live = [c for c in self.containers if c.state != "dead"]
        # set by _update_app from the network and volume plans
        self._changing_resources: set[str] = set()  # docker names being recreated
        self._not_ready: set[str] = set()  # ... and those not created yet
        self._all_ready = False  # every target image of the app is in the engine

    # -- entry point ---------------------------------------------------------------------------

    def steps(self) -> list[Step]:
        out: list[Step] = [
            Remove(container_id=c.id, name=c.name, app_id=c.app_id, service_name=c.service_name)
            for c in self.dead
        ]
        if self.target is None:
            return out + self._remove_app()
        decisions, resource_steps = self._update_app()
        out += self._gate(decisions)
        out += resource_steps
        return out or self._settled()

    def _gate(self, decisions: list[Decision]) -> list[Step]:
        names = [c.service_name for c in self.containers] + list(self.services)
        return gate_on_lock(self.app_id, decisions, names, self.ctx)

    # -- an app in the target ------------------------------------------------------------------

    @cached_property
    def kept(self) -> dict[str, ContainerInfo]:
        """The container kept per service: the newest live one that is not a hand-over leftover
        (`old_<name>`, restart policy cleared). Every other live container is killed."""
        kept: dict[str, ContainerInfo] = {}
        for c in self.live:
            if c.handover_old:
                continue
            other = kept.get(c.service_name)
            if other is None or (c.created, c.id) > (other.created, other.id):
                kept[c.service_name] = c
        return kept

    @cached_property
    def specs(self) -> dict[str, ContainerSpec | SupervisorError]:
        assert self.target is not None
        ids = {name: c.id for name, c in self.kept.items()}
        return service_specs(self.target_state, self.target, self.ctx.device,
                             self.ctx.image_ids, ids)

    def _update_app(self) -> tuple[list[Decision], list[Step]]:
        assert self.target is not None
        ctx = self.ctx
        nets = plan_networks(network_specs(self.target), self.networks,
                             partial(network_users, self.containers))
        vols = plan_volumes(volume_specs(self.target), self.volumes,
                            partial(volume_users, self.containers))
        self._changing_resources = nets.changing | vols.changing
        self._not_ready = nets.missing | vols.missing | self._changing_resources
        self._all_ready = all(s.image in ctx.image_ids for s in self.services.values())
        dead_services = {c.service_name for c in self.dead}

        decisions: list[Decision] = []
        kept = self.kept
        for c in self.live:
            if kept.get(c.service_name) is not c or c.service_name not in self.services:
                decisions.append(kill(c))  # duplicates, hand-over leftovers, removed services
        for name, svc in sorted(self.services.items()):
            spec = self.specs[name]
            if isinstance(spec, SupervisorError):
                decisions.append(Decision(Noop(f"{name}: {spec}", app_id=self.app_id)))
                continue
            cur = kept.get(name)
            if cur is None:
                if name in dead_services:
                    continue  # its dead container goes first (`remove` above); same name
            elif (cur.running == svc.running and not self._uses_changing(cur)
                  and in_target_state(cur, spec, ctx.image_ids.get(svc.image))):
                continue  # settled: the common case, kept cheap for large fleets
            pair = Pair(
                target=svc, spec=spec, current=cur, commit=self.commit,
                image_ready=svc.image in ctx.image_ids, all_images_ready=self._all_ready,
                special_kill=cur is not None and self._uses_changing(cur),
                can_create=partial(self._can_create, spec),
                deps_met=partial(self._deps_met, spec),
            )
            decisions += plan_service(pair, ctx)
        return decisions, vols.steps + nets.steps

    def _uses_changing(self, c: ContainerInfo) -> bool:
        changing = self._changing_resources
        if not changing:
            return False
        return bool(changing.intersection(c.networks) or changing.intersection(c.volumes)
                    or c.network_mode in changing)

    @cached_property
    def _changing_services(self) -> set[str]:
        """Services not yet in their target state: no container, another config or release,
        or a container about to be killed because a network or volume it uses is recreated."""
        out = set()
        for name, svc in self.services.items():
            cur, spec = self.kept.get(name), self.specs[name]
            if (cur is None or isinstance(spec, SupervisorError) or self._uses_changing(cur)
                    or not in_target_state(cur, spec, self.ctx.image_ids.get(svc.image))):
                out.add(name)
        return out

    def _can_create(self, spec: ContainerSpec) -> bool:
        """Every target image of the app present, the networks and volumes the service uses
        created, and the container it joins with `network_mode: service:<x>` settled."""
        if not self._all_ready or resources_used(spec) & self._not_ready:
            return False
        dep = network_service(self.services[spec.service_name])
        if dep is None:
            return True
        # no container for <x> (spec unresolved), <x> outside the release, or <x> about to
        # be replaced: nothing stable to join yet
        return (spec.network_service is None and dep in self.services
                and dep not in self._changing_services)

    def _deps_met(self, spec: ContainerSpec) -> bool:
        """engine.md §9: creatable, and every dependency settled and started (or created,
        when it must not run). Health is not waited for (upstream neither)."""
        if not self._can_create(spec):
            return False
        for dep in spec.depends_on:
            target = self.services.get(dep)
            if target is None:
                continue  # a dependency outside the release cannot hold us back
            if dep in self._changing_services:
                return False
            if self.kept[dep].state == "created" and target.running:
                return False  # not started yet (maybe this round): wait
        return True

    # -- settling --------------------------------------------------------------------------------

    def _settled(self) -> list[Step]:
        out: list[Step] = []
        if self.commit and self.ctx.commits.get(self.app_id) != self.commit:
            out.append(UpdateCommit(app_id=self.app_id, commit=self.commit))
        out += self._release_lock()
        return out

    def _release_lock(self) -> list[Step]:
        if self.app_id in self.ctx.locked_apps or self.app_id in self.ctx.lock_leftovers:
            return [ReleaseLock(app_id=self.app_id)]
        return []

    # -- an app that left the target ---------------------------------------------------------------

    def _remove_app(self) -> list[Step]:
        """Lock, kill every container, then networks, then volumes, then release the lock."""
        if self.live:
            return self._gate([kill(c) for c in self.live])
        if self.dead:
            return []  # their `remove` is in this batch; resources go once they are gone
        out: list[Step] = [
            RemoveNetwork(network_id=n.id, name=n.name, app_id=self.app_id)
            for n in sorted(self.networks, key=lambda n: (n.name, n.id))
        ]
        if not out and not self.ctx.keep_volumes:
            out = [RemoveVolume(name=v.name, app_id=self.app_id)
                   for v in sorted(removable_volumes(self.volumes), key=lambda v: v.name)]
        return out or self._release_lock()
