"""Networks and volumes of one app: what to create, what to remove, what is changing.

A network or volume whose config changed is removed and created again; the services using it
are killed first (the app planner does that from `changing`). A remove is emitted only once no
container uses the resource. Volumes no longer referenced are kept (upstream since v10); they
go only with their app, unless `keep_volumes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from supervisor.model.compose import NetworkSpec, VolumeSpec, app_networks, network_spec, volume_spec
from supervisor.model.current import ContainerInfo, NetworkInfo, VolumeInfo
from supervisor.model.steps import CreateNetwork, CreateVolume, RemoveNetwork, RemoveVolume, Step
from supervisor.model.target import TargetApp


@dataclass
class ResourcePlan:
    steps: list[Step] = field(default_factory=list)
    changing: set[str] = field(default_factory=set)  # docker names being removed/recreated
    missing: set[str] = field(default_factory=set)  # docker names not yet created


def network_specs(app: TargetApp) -> dict[str, NetworkSpec]:
    specs = {}
    for name, cfg in app_networks(app).items():
        spec = network_spec(app, name, cfg)
        specs[spec.name] = spec
    return specs


def volume_specs(app: TargetApp) -> dict[str, VolumeSpec]:
    if app.release is None:
        return {}
    specs = {}
    for name, cfg in app.release.volumes.items():
        spec = volume_spec(app, name, cfg)
        specs[spec.name] = spec
    return specs


def _users(containers: tuple[ContainerInfo, ...], docker_name: str) -> bool:
    return any(docker_name in c.networks or docker_name == c.network_mode for c in containers)


def plan_networks(
    specs: dict[str, NetworkSpec],
    current: tuple[NetworkInfo, ...],
    containers: tuple[ContainerInfo, ...],
) -> ResourcePlan:
    out = ResourcePlan()
    by_name: dict[str, list[NetworkInfo]] = {}
    for net in current:
        by_name.setdefault(net.name, []).append(net)
    for name, nets in sorted(by_name.items()):
        spec = specs.get(name)
        extras = nets[1:]  # moby can create duplicates with the same name
        for dup in extras:
            out.steps.append(RemoveNetwork(network_id=dup.id, name=name, app_id=dup.app_id or 0))
        net = nets[0]
        if spec is not None and not spec.config_only and net.config_hash in (None, spec.config_hash):
            # no hash: created by upstream; keep it rather than kill services to recreate it
            continue
        out.changing.add(name)
        if not _users(containers, name):
            out.steps.append(RemoveNetwork(network_id=net.id, name=name, app_id=net.app_id or 0))
    for name, spec in sorted(specs.items()):
        if spec.config_only:
            continue  # a config-only network (all services on host networking) is never created
        if name not in by_name:
            out.missing.add(name)
            out.steps.append(CreateNetwork(spec=spec))
    return out


def plan_volumes(
    specs: dict[str, VolumeSpec],
    current: tuple[VolumeInfo, ...],
    containers: tuple[ContainerInfo, ...],
    volume_users: dict[str, set[str]],
) -> ResourcePlan:
    """`volume_users` maps a volume's docker name to the ids of the containers mounting it."""
    out = ResourcePlan()
    present = {v.name: v for v in current}
    for name, spec in sorted(specs.items()):
        vol = present.get(name)
        if vol is None:
            out.missing.add(name)
            out.steps.append(CreateVolume(spec=spec))
        elif vol.config_hash is not None and vol.config_hash != spec.config_hash:
            out.changing.add(name)
            if not volume_users.get(name):
                out.steps.append(RemoveVolume(name=name, app_id=vol.app_id))
    return out
