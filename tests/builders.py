"""Builders for planner and status tests: targets through the real parser, containers from the
real `container_spec`, so a test's "current" is exactly what the executor would have created.

    target = make_target(apps=[make_app(1, [make_service("web"), make_service("db")])])
    ctx = make_ctx(target, present=target_images(target))
    current = make_current(containers=[make_container(target, 1, "web", ctx)], ...)
    steps = plan(current, target, ctx)

`converged(target)` gives the (current, ctx) pair at the fixpoint: every container built from
its spec and running (or created for `running: false`), images present, networks and volumes
created, commits stored, no locks.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from supervisor.model.current import ContainerInfo, Current, ImageInfo, NetworkInfo, VolumeInfo
from supervisor.model.spec import (
    ContainerSpec,
    DeviceContext,
    app_networks,
    container_spec,
    network_spec,
    parse_container_name,
    volume_spec,
    wants_supervisor_api,
)
from supervisor.model.target import TargetApp, TargetService, TargetState, parse_target
from supervisor.planner import PlanContext

DEVICE_UUID = "d1ce" * 8
T0 = "2024-01-01T00:00:00.000000000Z"  # containers created by the builders are "before boot"
BOOT = "2024-06-01T00:00:00"


# ---------------------------------------------------------------------------- targets

@dataclass(frozen=True)
class ServiceDef:
    name: str
    raw: dict[str, Any]


@dataclass(frozen=True)
class AppDef:
    uuid: str
    raw: dict[str, Any]


def _small_id(text: str) -> int:
    return zlib.crc32(text.encode()) % 9000 + 1


def make_service(
    name: str,
    *,
    image: str | None = None,
    service_id: int | None = None,
    image_id: int | None = None,
    running: bool | None = None,
    environment: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    **composition: Any,
) -> ServiceDef:
    """One v3 service; keyword arguments beyond these are compose keys (`depends_on=[...]`)."""
    raw: dict[str, Any] = {
        "id": service_id if service_id is not None else _small_id(name),
        "image_id": image_id if image_id is not None else _small_id("img-" + name),
        "image": image or f"registry.local/{name}:v1",
        "environment": dict(environment or {}),
        "labels": dict(labels or {}),
        "composition": composition,
    }
    if running is not None:
        raw["running"] = running
    return ServiceDef(name, raw)


def make_app(
    app_id: int = 1,
    services: Iterable[ServiceDef] = (),
    *,
    uuid: str | None = None,
    name: str | None = None,
    commit: str | None = "c0mm1t01",
    release_id: int = 1,
    volumes: Mapping[str, Mapping[str, Any]] | None = None,
    networks: Mapping[str, Mapping[str, Any]] | None = None,
) -> AppDef:
    """One v3 app. `commit=None` gives an app with no release."""
    raw: dict[str, Any] = {"id": app_id, "name": name or f"app{app_id}", "releases": {}}
    if commit is not None:
        raw["releases"][commit] = {
            "id": release_id,
            "services": {s.name: s.raw for s in services},
            "volumes": {k: dict(v) for k, v in (volumes or {}).items()},
            "networks": {k: dict(v) for k, v in (networks or {}).items()},
        }
    return AppDef(uuid or f"{app_id:04d}" + "a" * 28, raw)


def make_target(apps: Iterable[AppDef] = (), *, name: str = "device") -> TargetState:
    raw = {DEVICE_UUID: {"name": name, "config": {},
                         "apps": {a.uuid: a.raw for a in apps}}}
    return parse_target(raw, device_uuid=DEVICE_UUID)


def app_of(target: TargetState, app_id: int) -> TargetApp:
    return next(a for a in target.apps.values() if a.app_id == app_id)


def service_of(target: TargetState, app_id: int, name: str) -> TargetService:
    release = app_of(target, app_id).release
    assert release is not None
    return release.services[name]


def target_images(target: TargetState) -> set[str]:
    return {s.image for a in target.apps.values() if a.release is not None
            for s in a.release.services.values()}


# ---------------------------------------------------------------------------- context

def image_id_of(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def make_device(target: TargetState | None = None, **overrides: Any) -> DeviceContext:
    """A device context with a scoped API key for every service that wants one."""
    keys: dict[tuple[int, str], str] = {}
    if target is not None:
        for app in target.apps.values():
            if app.release is None:
                continue
            for svc in app.release.services.values():
                if wants_supervisor_api(svc):
                    keys[(app.app_id, svc.name)] = f"key-{app.app_id}-{svc.name}"
    values: dict[str, Any] = {"device_uuid": DEVICE_UUID, "device_type": "raspberrypi4-64",
                              "device_arch": "aarch64", "os_version": "balenaOS 6.0.0",
                              "device_name": "shy-frost", "supervisor_api_keys": keys}
    values.update(overrides)
    return DeviceContext(**values)


def make_ctx(
    target: TargetState | None = None,
    *,
    present: Iterable[str] = (),
    managed: Iterable[str] | None = None,
    downloading: Iterable[str] = (),
    locked: Iterable[int] = (),
    leftovers: Iterable[int] = (),
    commits: Mapping[int, str] | None = None,
    device: DeviceContext | None = None,
    **flags: Any,
) -> PlanContext:
    """`present`: image names in the engine; `managed` (default: `present`): pulled by us."""
    present = set(present)
    managed_names = present if managed is None else set(managed)
    return PlanContext(
        device=device or make_device(target),
        image_ids={n: image_id_of(n) for n in sorted(present)},
        downloading=frozenset(downloading),
        managed_images={n: image_id_of(n) for n in sorted(managed_names)},
        locked_apps=frozenset(locked),
        lock_leftovers=frozenset(leftovers),
        commits=dict(commits or {}),
        boot_time=flags.pop("boot_time", BOOT),
        **flags,
    )


def target_commits(target: TargetState) -> dict[int, str]:
    return {a.app_id: a.release.commit for a in target.apps.values() if a.release is not None}


# ---------------------------------------------------------------------------- current

def spec_of(
    target: TargetState,
    app_id: int,
    service: str,
    ctx: PlanContext | None = None,
    *,
    container_ids: Mapping[str, str] | None = None,
) -> ContainerSpec:
    ctx = ctx or make_ctx(target)
    svc = service_of(target, app_id, service)
    ids = None if svc.config.network_mode is None or not svc.config.network_mode.startswith(
        "service:") else dict(container_ids or {})
    return container_spec(app_of(target, app_id), svc, ctx.device,
                          image_ref=ctx.image_ids.get(svc.image, svc.image), container_ids=ids)


def container_from_spec(
    spec: ContainerSpec,
    *,
    id: str,
    created: str = T0,
    state: str = "running",
    image: str | None = None,
    service_id: int = 0,
    exit_error: str = "",
) -> ContainerInfo:
    """What `engine.observe()` reports for a container the executor created from `spec`."""
    parsed = parse_container_name(spec.name)
    assert parsed is not None
    body = spec.body
    host = body.get("HostConfig") or {}
    networks: dict[str, tuple[str, ...]] = {}
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    for name, endpoint in [*endpoints.items(), *spec.extra_networks]:
        networks[name] = tuple(endpoint.get("Aliases") or ())
    volumes = [str(b).split(":", 1)[0] for b in host.get("Binds") or ()]
    volumes += [m["Source"] for m in host.get("Mounts") or ()
                if m.get("Type") == "volume" and m.get("Source")]
    env = dict(e.split("=", 1) for e in body.get("Env") or ())
    running = state in ("running", "paused", "restarting")
    return ContainerInfo(
        id=id, name=spec.name, app_id=spec.app_id, app_uuid=spec.app_uuid,
        service_name=spec.service_name, service_id=service_id, image_id=parsed.image_id,
        release_id=parsed.release_id, commit=parsed.commit or "", state=state, running=running,
        image=image if image is not None else str(body.get("Image", "")),
        image_name=str(body.get("Image", "")), created=created,
        started_at=None if state == "created" else created, exit_error=exit_error,
        labels=dict(body.get("Labels") or {}), env=env, networks=networks,
        network_mode=str(host.get("NetworkMode", "")),
        volumes=tuple(v for v in volumes if not v.startswith("/")),
        config_hash=spec.config_hash,
        restart_policy=str((host.get("RestartPolicy") or {}).get("Name", "")),
        handover_old=spec.name.startswith("old_"),
    )


def make_container(
    target: TargetState,
    app_id: int,
    service: str,
    ctx: PlanContext | None = None,
    *,
    id: str | None = None,
    state: str = "running",
    created: str = T0,
    container_ids: Mapping[str, str] | None = None,
    **overrides: Any,
) -> ContainerInfo:
    """The container of a target service as the executor would create it; `overrides` replace
    ContainerInfo fields afterwards (e.g. `config_hash="stale"` for an outdated container)."""
    ctx = ctx or make_ctx(target, present=target_images(target))
    spec = spec_of(target, app_id, service, ctx, container_ids=container_ids)
    svc = service_of(target, app_id, service)
    info = container_from_spec(
        spec, id=id or f"{app_id}-{service}-{spec.config_hash[:8]}", created=created,
        state=state, image=ctx.image_ids.get(svc.image, "sha256:" + "0" * 64),
        service_id=svc.service_id,
    )
    return replace(info, **overrides) if overrides else info


def network_infos(target: TargetState, app_id: int) -> list[NetworkInfo]:
    """The app's networks as created from their specs (config-only ones are never created)."""
    app = app_of(target, app_id)
    out = []
    for name, cfg in app_networks(app).items():
        spec = network_spec(app, name, cfg)
        if spec.config_only:
            continue
        out.append(NetworkInfo(id=f"net-{spec.name}", name=spec.name, app_id=app.app_id,
                               app_uuid=app.uuid, driver=cfg.driver, labels=spec.labels,
                               config_hash=spec.config_hash))
    return out


def volume_infos(target: TargetState, app_id: int) -> list[VolumeInfo]:
    app = app_of(target, app_id)
    if app.release is None:
        return []
    out = []
    for name, cfg in app.release.volumes.items():
        spec = volume_spec(app, name, cfg)
        out.append(VolumeInfo(name=spec.name, app_id=app.app_id, app_uuid=app.uuid,
                              driver=spec.driver, labels=spec.labels,
                              config_hash=spec.config_hash))
    return out


def image_infos(names: Iterable[str]) -> list[ImageInfo]:
    return [ImageInfo(id=image_id_of(n), tags=(n,)) for n in sorted(set(names))]


def make_current(
    containers: Iterable[ContainerInfo] = (),
    *,
    images: Iterable[str] = (),
    networks: Iterable[NetworkInfo] = (),
    volumes: Iterable[VolumeInfo] = (),
    supervisor0_ok: bool = True,
) -> Current:
    """`images` are image names present in the engine (ids from `image_id_of`)."""
    return Current(containers=tuple(containers), images=tuple(image_infos(images)),
                   networks=tuple(networks), volumes=tuple(volumes),
                   supervisor0_ok=supervisor0_ok)


@dataclass
class World:
    """A current state and context pair; tests tweak it and call `plan(w.current, t, w.ctx)`."""

    current: Current
    ctx: PlanContext
    ids: dict[tuple[int, str], str] = field(default_factory=dict)


def converged(target: TargetState, **ctx_flags: Any) -> World:
    """The fixpoint: current is exactly what the target asks for."""
    names = target_images(target)
    ctx = make_ctx(target, present=names, commits=target_commits(target), **ctx_flags)
    containers: list[ContainerInfo] = []
    networks: list[NetworkInfo] = []
    volumes: list[VolumeInfo] = []
    ids: dict[tuple[int, str], str] = {}
    for app in target.apps.values():
        networks += network_infos(target, app.app_id)
        volumes += volume_infos(target, app.app_id)
        if app.release is None:
            continue
        for svc in _dependency_order(app):
            own = {k[1]: v for k, v in ids.items() if k[0] == app.app_id}
            c = make_container(target, app.app_id, svc.name, ctx,
                               state="running" if svc.running else "created",
                               container_ids=own)
            ids[(app.app_id, svc.name)] = c.id
            containers.append(c)
    current = make_current(containers, images=names, networks=networks, volumes=volumes)
    return World(current, ctx, ids)


def _dependency_order(app: TargetApp) -> list[TargetService]:
    """Services with `network_mode: service:<x>` after <x>, so their spec can be resolved."""
    assert app.release is not None
    services = dict(app.release.services)
    ordered: list[TargetService] = []
    while services:
        for name, svc in sorted(services.items()):
            mode = svc.config.network_mode or ""
            dep = mode.split(":", 1)[1].strip() if mode.startswith("service:") else None
            if dep is None or dep not in services:
                ordered.append(services.pop(name))
                break
        else:  # a cycle: cannot be resolved, take them as they are
            ordered += [services.pop(n) for n in sorted(services)]
    return ordered


# ---------------------------------------------------------------------------- model engine

class ModelError(AssertionError):
    """The plan asked for something Docker (or the lock rules) would refuse."""


_LOCKED_KINDS = ("kill", "stop", "start", "updateMetadata")


@dataclass
class ModelEngine:
    """An in-memory Docker + store + locks that applies steps to a Current, strictly.

    Every step must make sense against the model: it names only containers that exist, never
    creates a container whose name is taken, image missing, network or volume missing, never
    removes a network, volume or image still in use, and kill/stop/start/updateMetadata
    only run under the app's update lock. A violation raises `ModelError`.
    """

    target: TargetState
    current: Current
    commits: dict[int, str] = field(default_factory=dict)
    locked: set[int] = field(default_factory=set)
    leftovers: set[int] = field(default_factory=set)
    managed: dict[str, str] = field(default_factory=dict)  # image name -> id pulled by us
    reboot_required: bool = False
    boot_time: str = BOOT
    keep_images: bool = False
    keep_volumes: bool = False
    clock: int = 0
    reboots: int = 0
    # container id -> the target service it was created for (compare_oracle judges them)
    origins: dict[str, TargetService] = field(default_factory=dict)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))

    def __repr__(self) -> str:  # hypothesis prints it: keep it to what tells the case apart
        apps = {a.app_id: {s.name: (s.image, s.running, dict(s.labels), s.composition)
                           for s in (a.release.services.values() if a.release else ())}
                for a in self.target.apps.values()}
        containers = [(c.id, c.name, c.state, (c.config_hash or "-")[:6])
                      for c in self.current.containers]
        networks = [(n.name, (n.config_hash or "-")[:6]) for n in self.current.networks]
        volumes = [(v.name, (v.config_hash or "-")[:6]) for v in self.current.volumes]
        return (f"ModelEngine(target={apps}, containers={containers}, "
                f"images={[i.tags for i in self.current.images]}, "
                f"networks={networks}, volumes={volumes}, "
                f"supervisor0_ok={self.current.supervisor0_ok}, commits={self.commits}, "
                f"locked={self.locked}, leftovers={self.leftovers}, managed={set(self.managed)})")

    # -- the planner's inputs ------------------------------------------------------------------

    def ctx(self) -> PlanContext:
        present = {i.id for i in self.current.images}
        names = target_images(self.target) | set(self.managed)
        image_ids = {n: image_id_of(n) for n in sorted(names) if image_id_of(n) in present}
        return PlanContext(
            device=make_device(self.target), image_ids=image_ids,
            managed_images=dict(self.managed), locked_apps=frozenset(self.locked),
            lock_leftovers=frozenset(self.leftovers), commits=dict(self.commits),
            keep_images=self.keep_images, keep_volumes=self.keep_volumes,
            reboot_required=self.reboot_required, boot_time=self.boot_time,
        )

    def run(self, max_rounds: int) -> list[tuple[Any, ...]]:
        """Plan and apply until the plan is empty (rebooting when one is required)."""
        from supervisor.planner import plan

        history: list[tuple[Any, ...]] = []
        for _ in range(max_rounds):
            steps = plan(self.current, self.target, self.ctx())
            history.append(steps)
            if not steps:
                if not self.reboot_required:
                    return history
                self.reboot()
                continue
            self.apply(steps)
        raise ModelError(f"no convergence in {max_rounds} rounds: "
                         + " | ".join(",".join(s.kind for s in b) for b in history[-4:]))

    def reboot(self) -> None:
        self.reboots += 1
        self.reboot_required = False
        self.boot_time = self._now()[:19]
        self.locked.clear()  # in-memory lock handles die with the process

    # -- steps -----------------------------------------------------------------------------------

    def apply(self, steps: Iterable[Any]) -> None:
        for step in steps:
            app_id = step.spec.app_id if step.kind == "start" else getattr(step, "app_id", None)
            if step.kind in _LOCKED_KINDS and app_id not in self.locked:
                raise ModelError(f"{step.kind} without the lock of app {app_id}: {step}")
            getattr(self, "_" + step.kind)(step)

    def _now(self) -> str:
        self.clock += 1
        return f"2024-06-02T{self.clock // 3600:02d}:{self.clock // 60 % 60:02d}:" \
               f"{self.clock % 60:02d}.000000000Z"

    def _container(self, cid: str) -> ContainerInfo:
        for c in self.current.containers:
            if c.id == cid:
                return c
        raise ModelError(f"no container {cid}")

    def _set_containers(self, containers: Iterable[ContainerInfo]) -> None:
        self.current = replace(self.current, containers=tuple(containers))

    def _replace_container(self, new: ContainerInfo) -> None:
        self._set_containers(new if c.id == new.id else c for c in self.current.containers)

    def _drop_container(self, cid: str) -> None:
        self._container(cid)
        self._set_containers(c for c in self.current.containers if c.id != cid)

    def _fetch(self, step: Any) -> None:
        image_id = image_id_of(step.image)
        self.managed[step.image] = image_id
        if all(i.id != image_id for i in self.current.images):
            images = (*self.current.images, ImageInfo(id=image_id, tags=(step.image,)))
            self.current = replace(self.current, images=images)

    def _removeImage(self, step: Any) -> None:  # named after the step kind
        if any(c.image == step.image_id for c in self.current.containers):
            raise ModelError(f"image {step.name} is used by a container")
        if all(i.id != step.image_id for i in self.current.images):
            raise ModelError(f"no image {step.image_id}")
        self.current = replace(self.current, images=tuple(
            i for i in self.current.images if i.id != step.image_id))
        self.managed = {n: i for n, i in self.managed.items() if i != step.image_id}

    def _kill(self, step: Any) -> None:
        self._drop_container(step.container_id)

    def _remove(self, step: Any) -> None:
        if self._container(step.container_id).state != "dead":
            raise ModelError(f"remove of a container that is not dead: {step.name}")
        self._drop_container(step.container_id)

    def _stop(self, step: Any) -> None:
        c = self._container(step.container_id)
        self._replace_container(replace(c, state="exited", running=False))

    def _start(self, step: Any) -> None:
        if step.container_id is not None:
            c = self._container(step.container_id)
            if c.name != step.spec.name:
                raise ModelError(f"start of {c.name} with the spec of {step.spec.name}")
            self._replace_container(replace(c, state="running", running=True,
                                            started_at=self._now()))
            return
        self._create(step.spec, "running" if step.start else "created")

    def _create(self, spec: ContainerSpec, state: str) -> None:
        if spec.network_service is not None:
            raise ModelError(f"{spec.name}: network_mode service:{spec.network_service} "
                             "unresolved")
        if any(c.name == spec.name for c in self.current.containers):
            raise ModelError(f"container name {spec.name} is taken")
        image = str(spec.body["Image"])
        if all(i.id != image for i in self.current.images):
            raise ModelError(f"{spec.name}: image {image} is not in the engine")
        mode = str(spec.body["HostConfig"]["NetworkMode"])
        needed = [n for n, _ in spec.extra_networks if n != "supervisor0"]
        if mode.startswith("container:"):
            self._container(mode[len("container:"):])
        elif mode not in ("host", "bridge", "none"):
            needed.append(mode)
        names = {n.name for n in self.current.networks}
        for net in needed:
            if net not in names:
                raise ModelError(f"{spec.name}: network {net} does not exist")
        if "supervisor0" in dict(spec.extra_networks) and not self.current.supervisor0_ok:
            raise ModelError(f"{spec.name}: supervisor0 is not ready")
        vols = {v.name for v in self.current.volumes}
        prefix = f"{spec.app_id}_"
        info = container_from_spec(spec, id=f"m{self.clock + 1}", created=self._now(),
                                   state=state, image=image)
        for vol in info.volumes:
            if vol.startswith(prefix) and vol not in vols:
                raise ModelError(f"{spec.name}: volume {vol} does not exist")
        self._set_containers((*self.current.containers, info))
        self.origins[info.id] = service_of(self.target, spec.app_id, spec.service_name)

    def _updateMetadata(self, step: Any) -> None:
        c = self._container(step.container_id)
        if any(o.name == step.new_name for o in self.current.containers):
            raise ModelError(f"container name {step.new_name} is taken")
        parsed = parse_container_name(step.new_name)
        assert parsed is not None
        self._replace_container(replace(c, name=step.new_name, image_id=parsed.image_id,
                                        release_id=parsed.release_id,
                                        commit=parsed.commit or ""))

    def _handover(self, step: Any) -> None:
        self._drop_container(step.container_id)
        self._create(step.spec, "running")

    def _updateCommit(self, step: Any) -> None:
        self.commits[step.app_id] = step.commit

    def _createNetwork(self, step: Any) -> None:
        spec = step.spec
        if any(n.name == spec.name for n in self.current.networks):
            raise ModelError(f"network {spec.name} exists")
        net = NetworkInfo(id=f"n{self._now()}", name=spec.name,
                          app_id=int(spec.labels["io.balena.app-id"]),
                          app_uuid=spec.name.split("_", 1)[0], labels=spec.labels,
                          config_hash=spec.config_hash)
        self.current = replace(self.current, networks=(*self.current.networks, net))

    def _removeNetwork(self, step: Any) -> None:
        if all(n.id != step.network_id for n in self.current.networks):
            raise ModelError(f"no network {step.network_id}")
        for c in self.current.containers:
            if c.running and (step.name in c.networks or c.network_mode == step.name):
                raise ModelError(f"network {step.name} is used by {c.name}")
        self.current = replace(self.current, networks=tuple(
            n for n in self.current.networks if n.id != step.network_id))

    def _createVolume(self, step: Any) -> None:
        spec = step.spec
        if any(v.name == spec.name for v in self.current.volumes):
            raise ModelError(f"volume {spec.name} exists")
        vol = VolumeInfo(name=spec.name, app_id=int(spec.name.split("_", 1)[0]),
                         app_uuid=spec.labels.get("io.balena.app-uuid"), labels=spec.labels,
                         config_hash=spec.config_hash)
        self.current = replace(self.current, volumes=(*self.current.volumes, vol))

    def _removeVolume(self, step: Any) -> None:
        if all(v.name != step.name for v in self.current.volumes):
            raise ModelError(f"no volume {step.name}")
        for c in self.current.containers:
            if step.name in c.volumes:
                raise ModelError(f"volume {step.name} is used by {c.name}")
        self.current = replace(self.current, volumes=tuple(
            v for v in self.current.volumes if v.name != step.name))

    def _ensureSupervisorNetwork(self, step: Any) -> None:
        for c in self.current.containers:
            if c.running and "supervisor0" in c.networks:
                raise ModelError(f"supervisor0 is used by {c.name}")
        self.current = replace(self.current, supervisor0_ok=True)

    def _takeLock(self, step: Any) -> None:
        self.locked.add(step.app_id)

    def _releaseLock(self, step: Any) -> None:
        self.locked.discard(step.app_id)
        self.leftovers.discard(step.app_id)

    def _requireReboot(self, step: Any) -> None:
        self.reboot_required = True

    def _noop(self, step: Any) -> None:
        return None
