"""Per-app planning: pair services, sequence networks/volumes, gate on the update lock.

Order of emission within an app (engine.md §7.1): remove dead containers; one `takeLock` when
lock-needing steps exist and the lock is not held (and none of those steps yet); service
steps; volume and network steps; and, only when nothing else is left, `updateCommit` and
`releaseLock` together.
"""

from __future__ import annotations

from supervisor.model.compose import ContainerSpec, container_spec
from supervisor.model.current import ContainerInfo, Current
from supervisor.model.steps import Noop, ReleaseLock, Remove, RemoveNetwork, RemoveVolume, Step
from supervisor.model.steps import TakeLock, UpdateCommit
from supervisor.model.target import TargetApp
from supervisor.planner.context import PlanContext
from supervisor.planner.resources import network_specs, plan_networks, plan_volumes, volume_specs
from supervisor.planner.services import (
    Decision,
    ServiceInputs,
    install_decisions,
    kill,
    update_decisions,
)


class AppPlanner:
    def __init__(
        self, app_id: int, target: TargetApp | None, current: Current, ctx: PlanContext
    ) -> None:
        self.app_id = app_id
        self.target = target
        self.ctx = ctx
        self.containers = current.containers_of(app_id)
        self.networks = tuple(n for n in current.networks if n.app_id == app_id)
        self.volumes = tuple(
            v for v in current.volumes
            if v.app_id == app_id and v.labels.get("io.balena.supervised")
        )
        self.services = target.release.services if target and target.release else {}
        self.commit = target.release.commit if target and target.release else ""
        self.specs: dict[str, ContainerSpec] = {}
        if target is not None:
            # newest container per service, to resolve `network_mode: service:<x>`
            ids = {c.service_name: c.id for c in sorted(self.containers, key=lambda c: c.created)}
            for name, svc in self.services.items():
                ref = ctx.image_ids.get(svc.image, svc.image)
                self.specs[name] = container_spec(
                    target, svc, ctx.device, image_ref=ref, container_ids=ids
                )

    # -- entry point ---------------------------------------------------------------------------

    def steps(self) -> list[Step]:
        dead = [c for c in self.containers if c.state == "dead"]
        out: list[Step] = [
            Remove(container_id=c.id, name=c.name, app_id=c.app_id, service_name=c.service_name)
            for c in dead
        ]
        live = tuple(c for c in self.containers if c.state != "dead")
        if self.target is None:
            return out + self._remove_app(live)
        decisions, resource_steps = self._update_app(live)
        out += self._gate_on_lock(decisions, live)
        out += resource_steps
        if not out:
            out += self._settled()
        return out

    # -- an app in the target ------------------------------------------------------------------

    def _update_app(self, live: tuple[ContainerInfo, ...]) -> tuple[list[Decision], list[Step]]:
        assert self.target is not None
        vol_users: dict[str, set[str]] = {}
        for c in live:
            for vol in c.volumes:
                vol_users.setdefault(vol, set()).add(c.id)
        nets = plan_networks(network_specs(self.target), self.networks, live)
        vols = plan_volumes(volume_specs(self.target), self.volumes, live, vol_users)
        changing = nets.changing | vols.changing
        not_ready = nets.missing | vols.missing | changing

        by_service: dict[str, list[ContainerInfo]] = {}
        for c in live:
            by_service.setdefault(c.service_name, []).append(c)
        all_ready = all(svc.image in self.ctx.image_ids for svc in self.services.values())
        changing_services = self._changing_services(by_service, all_ready)

        decisions: list[Decision] = []
        for name in sorted(set(by_service) | set(self.services)):
            containers = sorted(by_service.get(name, []), key=lambda c: c.created)
            current = containers[-1] if containers else None
            # extra containers of one service: keep the newest, kill the spurious rest
            decisions += [kill(c) for c in containers[:-1]]
            svc = self.services.get(name)
            if svc is None:
                if current is not None:
                    decisions.append(kill(current))
                continue
            spec = self.specs[name]
            uses = self._resources_used(spec)
            inputs = ServiceInputs(
                current=current,
                target=svc,
                spec=spec,
                commit=self.commit,
                image_ready=svc.image in self.ctx.image_ids,
                all_images_ready=all_ready,
                deps_met=all_ready
                and not (uses & not_ready)
                and self._deps_met(spec, by_service, changing_services),
                special_kill=bool(current is not None and self._current_uses(current) & changing),
            )
            if current is None:
                decisions += install_decisions(inputs, self.ctx)
            else:
                decisions += update_decisions(inputs, self.ctx)
        return decisions, nets.steps + vols.steps

    def _changing_services(
        self, by_service: dict[str, list[ContainerInfo]], all_ready: bool
    ) -> set[str]:
        """Services whose container is missing or not yet what the target wants."""
        out = set()
        for name, svc in self.services.items():
            containers = by_service.get(name)
            if not containers:
                out.add(name)
                continue
            cur = max(containers, key=lambda c: c.created)
            image_id = self.ctx.image_ids.get(svc.image)
            if cur.config_hash != self.specs[name].config_hash or cur.image != image_id:
                out.add(name)
        return out

    def _deps_met(
        self,
        spec: ContainerSpec,
        by_service: dict[str, list[ContainerInfo]],
        changing: set[str],
    ) -> bool:
        for dep in spec.depends_on:
            if dep not in self.services:
                continue  # a dependency outside the release cannot hold us back
            if dep in changing:
                return False
            containers = by_service.get(dep, [])
            if not containers or all(c.state == "created" for c in containers):
                return False
        return True

    @staticmethod
    def _resources_used(spec: ContainerSpec) -> set[str]:
        host = spec.body.get("HostConfig") or {}
        used = {host.get("NetworkMode", "")} | {name for name, _ in spec.extra_networks}
        for bind in host.get("Binds") or ():
            source = str(bind).split(":", 1)[0]
            if not source.startswith("/"):
                used.add(source)
        for mount in host.get("Mounts") or ():
            if mount.get("Type") == "volume" and mount.get("Source"):
                used.add(mount["Source"])
        used.discard("")
        return used

    @staticmethod
    def _current_uses(c: ContainerInfo) -> set[str]:
        return set(c.networks) | set(c.volumes) | ({c.network_mode} if c.network_mode else set())

    # -- locks and settling ----------------------------------------------------------------------

    def _gate_on_lock(
        self, decisions: list[Decision], live: tuple[ContainerInfo, ...]
    ) -> list[Step]:
        if self.app_id in self.ctx.locked_apps or not any(d.needs_lock for d in decisions):
            return [d.step for d in decisions]
        names = sorted({c.service_name for c in live} | set(self.services))
        kept = [d.step for d in decisions if not d.needs_lock]
        return [TakeLock(app_id=self.app_id, services=tuple(names), force=self.ctx.force), *kept]

    def _settled(self) -> list[Step]:
        out: list[Step] = []
        if self.commit and self.ctx.commits.get(self.app_id) != self.commit:
            out.append(UpdateCommit(app_id=self.app_id, commit=self.commit))
        if self.app_id in self.ctx.locked_apps or self.app_id in self.ctx.lock_leftovers:
            out.append(ReleaseLock(app_id=self.app_id))
        return out

    # -- an app that left the target ---------------------------------------------------------------

    def _remove_app(self, live: tuple[ContainerInfo, ...]) -> list[Step]:
        """Lock, kill every container, then networks, then volumes, then release the lock."""
        if live:
            decisions = [kill(c) for c in live]
            return self._gate_on_lock(decisions, live)
        out: list[Step] = [
            RemoveNetwork(network_id=n.id, name=n.name, app_id=self.app_id) for n in self.networks
        ]
        if not out and not self.ctx.keep_volumes:
            out += [RemoveVolume(name=v.name, app_id=self.app_id) for v in self.volumes]
        if not out and (self.app_id in self.ctx.locked_apps
                        or self.app_id in self.ctx.lock_leftovers):
            out.append(ReleaseLock(app_id=self.app_id))
        return out if out else []


__all__ = ["AppPlanner", "Noop"]
