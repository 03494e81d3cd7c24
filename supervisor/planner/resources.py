"""Networks and volumes of one app: what to create, what to remove, what is changing.

A network or volume whose config changed is removed and created again; the app planner kills
the services using it first (from `changing`) and starts services only once what they use
exists (from `missing`). A remove is emitted only once no container uses the resource.
Volumes no longer referenced are kept (upstream since v10); they go only with their app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from supervisor.model.current import ContainerInfo, NetworkInfo, VolumeInfo
from supervisor.model.spec import NetworkSpec, VolumeSpec, app_networks, network_spec, volume_spec
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


def network_users(containers: Iterable[ContainerInfo]) -> set[str]:
    """Networks some container (dead ones too: Docker still counts them) is attached to."""
    used: set[str] = set()
    for c in containers:
        used.update(c.networks)
        if c.network_mode:
            used.add(c.network_mode)
    return used


def volume_users(containers: Iterable[ContainerInfo]) -> set[str]:
    used: set[str] = set()
    for c in containers:
        used.update(c.volumes)
    return used


def plan_networks(
    specs: dict[str, NetworkSpec], current: Iterable[NetworkInfo],
    users: Callable[[], set[str]],
) -> ResourcePlan:
    """`users()` gives the names in use (only asked when something must be removed)."""
    out = ResourcePlan()
    in_use: set[str] | None = None
    by_name: dict[str, list[NetworkInfo]] = {}
    for net in current:
        by_name.setdefault(net.name, []).append(net)
    for name, nets in sorted(by_name.items()):
        nets.sort(key=lambda n: n.id)
        for dup in nets[1:]:  # moby can create duplicates with the same name
            out.steps.append(RemoveNetwork(network_id=dup.id, name=name, app_id=dup.app_id or 0))
        net, spec = nets[0], specs.get(name)
        if spec is not None and not spec.config_only and net.config_hash in (
                None, spec.config_hash):
            # no hash: created by upstream; keep it rather than kill services to recreate it
            continue
        out.changing.add(name)
        in_use = users() if in_use is None else in_use
        if name not in in_use:
            out.steps.append(RemoveNetwork(network_id=net.id, name=name, app_id=net.app_id or 0))
    for name, spec in sorted(specs.items()):
        if not spec.config_only and name not in by_name:
            # a config-only network (every service on host networking) is never created
            out.missing.add(name)
            out.steps.append(CreateNetwork(spec=spec))
    return out


def plan_volumes(
    specs: dict[str, VolumeSpec], current: Iterable[VolumeInfo], users: Callable[[], set[str]]
) -> ResourcePlan:
    out = ResourcePlan()
    in_use: set[str] | None = None
    present = {v.name: v for v in current}
    for name, spec in sorted(specs.items()):
        vol = present.get(name)
        if vol is None:
            out.missing.add(name)
            out.steps.append(CreateVolume(spec=spec))
        elif vol.config_hash is not None and vol.config_hash != spec.config_hash:
            out.changing.add(name)
            in_use = users() if in_use is None else in_use
            if name not in in_use:
                out.steps.append(RemoveVolume(name=name, app_id=vol.app_id))
        # no hash: not ours or made by upstream; keep it as it is
    return out


def removable_volumes(volumes: Iterable[VolumeInfo]) -> list[VolumeInfo]:
    """Volumes removed with their app: only those the supervisor created (labelled)."""
    return [v for v in volumes if v.labels.get("io.balena.supervised")]
