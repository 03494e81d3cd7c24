"""From a target service to the exact Docker objects to create (engine.md §3, §4, §11-§13).

The planner and the executor call `container_spec`, `network_spec` and `volume_spec` to get
Docker Engine API bodies plus a `config_hash`; comparing hashes tells the planner whether a
container must be recreated (model/confighash.py: engine.md §4.6's comparison rules).
Container names are built and parsed back here too. Pure: no Docker, no files, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from supervisor.errors import ConfigError, InternalError, NotFound
from supervisor.model.compose import (
    Healthcheck,
    NetworkConfig,
    PortBinding,
    ServiceConfig,
    ServiceNetwork,
    VolumeConfig,
    VolumeMount,
    normalize_labels,
)
from supervisor.model.confighash import (
    container_config_hash,
    legacy_container_config_hash,
    stable_hash,
)

if TYPE_CHECKING:
    from supervisor.model.target import TargetApp, TargetService

HASH_LABEL = "io.balena.supervisor-py.config-hash"
SUPERVISOR_NETWORK = "supervisor0"
SUPERVISOR_GATEWAY = "10.114.104.1"
SUPERVISOR_SUBNET = "10.114.104.0/25"
LOCK_MOUNTS = ("/tmp/resin", "/tmp/balena")
CONTAINER_DOCKER_SOCKET = "/host/run/balena-engine.sock"

__all__ = [
    "HASH_LABEL", "ContainerName", "ContainerSpec", "DeviceContext", "NetworkSpec",
    "VolumeSpec", "app_networks", "container_spec", "is_handover_name", "network_config_hash",
    "network_spec", "parse_container_name", "service_labels", "truthy", "volume_config_hash",
    "volume_spec", "wants_supervisor_api",
]


# ============================================================================ device context

@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What a container spec needs to know about the device (from settings and the store)."""

    device_uuid: str
    device_type: str = ""
    device_arch: str = ""
    os_version: str = ""
    device_name: str = ""
    hostname: str = ""
    listen_port: int = 48484
    api_endpoint: str | None = None
    device_api_key: str | None = None
    locks_dir: str = "/tmp/balena-supervisor"
    docker_socket: str = "/var/run/docker.sock"
    # Scoped API key per (app_id, service_name); must hold one for every target service with
    # the supervisor-api label (see `wants_supervisor_api`).
    supervisor_api_keys: dict[tuple[int, str], str] = field(default_factory=dict)
    supervisor_api_host: str = SUPERVISOR_GATEWAY
    board_rev: str | None = None
    # Host paths whose feature binds are only added when present (kernel-modules, firmware).
    host_paths: frozenset[str] = frozenset({"/lib/modules", "/lib/firmware"})


# ============================================================================ container spec

@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything the executor needs to create one container.

    `body` is the Docker Engine API create body (for `APIClient.create_container_from_config`);
    `extra_networks` are (docker network name, EndpointConfig) to connect after creation.
    `network_service` is set when the body still says `service:<x>` as network mode and the
    executor must resolve it (pass `container_ids` to `container_spec` to resolve here).
    """

    name: str
    body: dict[str, Any]
    extra_networks: tuple[tuple[str, dict[str, Any]], ...]
    config_hash: str
    app_id: int
    app_uuid: str
    service_name: str
    depends_on: tuple[str, ...]
    network_service: str | None = None
    # the hash earlier releases put on containers (order-sensitive), computed when first
    # asked: still accepted, so upgrading the supervisor recreates nothing
    legacy_config_hash: Callable[[], str] = field(default=lambda: "", compare=False, repr=False)

    def config_matches(self, config_hash: str | None) -> bool:
        """True when a container labelled `config_hash` runs this spec's config (§4.6)."""
        return config_hash is not None and (
            config_hash == self.config_hash or config_hash == self.legacy_config_hash())


_TRUTHY = {"1", "true", "on"}
F_SUPERVISOR_API = "io.balena.features.supervisor-api"
F_BALENA_API = "io.balena.features.balena-api"
F_BALENA_SOCKET = "io.balena.features.balena-socket"
F_BOARD_REV = "io.balena.features.host-os.board-rev"
F_GPU = "io.balena.features.gpu"
F_EXTRA_FIRMWARE = "io.balena.features.extra-firmware"
_FEATURE_BINDS = {
    "io.balena.features.dbus": ("/run/dbus:/host/run/dbus",),
    "io.balena.features.journal-logs": ("/var/log/journal:/var/log/journal:ro",
                                        "/run/log/journal:/run/log/journal:ro",
                                        "/etc/machine-id:/etc/machine-id:ro"),
    "io.balena.features.kernel-modules": ("/lib/modules:/lib/modules",),
    "io.balena.features.firmware": ("/lib/firmware:/lib/firmware",),
    "io.balena.features.sysfs": ("/sys:/sys",),
    "io.balena.features.procfs": ("/proc:/proc",),
}
_CONDITIONAL_BINDS = {"io.balena.features.kernel-modules": "/lib/modules",
                      "io.balena.features.firmware": "/lib/firmware"}
_DEVICE_NAME_VARS = ("BALENA_DEVICE_NAME_AT_INIT", "RESIN_DEVICE_NAME_AT_INIT")


def truthy(value: object) -> bool:
    return value is True or value == 1 or str(value).strip().lower() in _TRUTHY


def service_labels(svc: TargetService) -> dict[str, str]:
    """User labels: the composition's, overridden by the target's top-level ones, normalised."""
    return normalize_labels({**svc.config.labels, **svc.labels})


def wants_supervisor_api(svc: TargetService) -> bool:
    """True when the service needs a scoped API key (runtime: generate it before planning)."""
    return truthy(service_labels(svc).get(F_SUPERVISOR_API))


def container_spec(app: TargetApp, svc: TargetService, dev: DeviceContext, *, image_ref: str,
                   container_ids: Mapping[str, str] | None = None) -> ContainerSpec:
    """Build the create body of `svc` (engine.md §4.2-§4.5) and its config hash.

    `image_ref` goes into `Image` (the local image id when known, else the name).
    `container_ids` (service name -> container id) resolves `network_mode: service:<x>`.
    """
    release = app.release
    if release is None:
        raise InternalError(f"app {app.uuid} has no release: cannot create {svc.name}")
    cfg = svc.config
    labels = service_labels(svc)
    features = {k for k, v in labels.items() if k.startswith("io.balena.features.") and truthy(v)}
    net = _networking(app, svc, features)
    depends_on = cfg.depends_on + ((net.service,) if net.service else ())

    body: dict[str, Any] = {
        "Env": _env_list(_environment(app, svc, dev, features, net.api_host)),
        "Labels": {**labels, **_supervisor_labels(app, svc)},
        "Tty": cfg.tty,
        "HostConfig": _host_config(app, svc, dev, features, net.mode),
        "NetworkingConfig": {"EndpointsConfig": net.main},
        "StopTimeout": cfg.stop_grace_period,
    }
    body.update(_optional_config(cfg, dev, net.mode))
    exposed, bindings = _ports(cfg.ports)
    if exposed:
        body["ExposedPorts"] = exposed
        body["HostConfig"]["PortBindings"] = bindings
    anonymous: dict[str, Any] = {
        m.target: {} for m in cfg.volumes if m.kind == "anonymous" and not m.long}
    if anonymous:
        body["Volumes"] = anonymous

    config_hash = container_config_hash(body, net.extra)
    legacy_hash = legacy_container_config_hash(body, net.extra)
    body["Labels"][HASH_LABEL] = config_hash
    body["Image"] = image_ref
    if dev.device_name and "\n" in dev.device_name:
        raise ConfigError("device name contains a newline: cannot create containers")
    env = [e for e in body["Env"] if e.split("=", 1)[0] not in _DEVICE_NAME_VARS]
    body["Env"] = sorted(env + [f"{k}={dev.device_name}" for k in _DEVICE_NAME_VARS])
    if net.service is not None and container_ids is not None:
        if net.service not in container_ids:
            raise NotFound(f"No container for network_mode: 'service: {net.service}'")
        body["HostConfig"]["NetworkMode"] = f"container:{container_ids[net.service]}"
    return ContainerSpec(
        name=f"{svc.name}_{svc.image_id}_{release.release_id}_{release.commit}",
        body=body, extra_networks=net.extra, config_hash=config_hash, app_id=app.app_id,
        app_uuid=app.uuid, service_name=svc.name, depends_on=depends_on,
        network_service=net.service if container_ids is None else None,
        legacy_config_hash=legacy_hash,
    )


def _supervisor_labels(app: TargetApp, svc: TargetService) -> dict[str, str]:
    return {
        "io.balena.supervised": "true",
        "io.balena.app-id": str(app.app_id),
        "io.balena.app-uuid": app.uuid,
        "io.balena.service-id": str(svc.service_id),
        "io.balena.service-name": svc.name,
    }


# ---------------------------------------------------------------------------- networking

class _Networking(NamedTuple):
    mode: str  # HostConfig.NetworkMode (unresolved `service:<x>` kept as is)
    service: str | None  # <x> of `service:<x>`
    main: dict[str, Any]  # EndpointsConfig for the main network
    extra: tuple[tuple[str, dict[str, Any]], ...]
    api_host: str  # how the service reaches the supervisor API


def _networking(app: TargetApp, svc: TargetService, features: set[str]) -> _Networking:
    """Networks are `<appUuid>_<name>`, each with the service name as an alias (§4.1, §4.4)."""
    cfg = svc.config
    networks: dict[str, ServiceNetwork] = {}
    for n in cfg.networks:
        aliases = n.aliases if svc.name in n.aliases else (*n.aliases, svc.name)
        networks[f"{app.uuid}_{n.name}"] = n._replace(name=f"{app.uuid}_{n.name}",
                                                      aliases=aliases)
    mode = cfg.network_mode
    if mode is None:
        mode = next(iter(networks)) if networks else "default"
    service_match = re.match(r"service:\s*(.+)", mode)
    service = service_match.group(1) if service_match else None
    if mode not in ("host", "bridge", "none") and service is None and mode not in networks:
        mode = f"{app.uuid}_{mode}"
        networks.setdefault(mode, ServiceNetwork(mode, aliases=(svc.name,)))
    api_host = "127.0.0.1"
    if F_SUPERVISOR_API in features and mode != "host":
        networks[SUPERVISOR_NETWORK] = ServiceNetwork(SUPERVISOR_NETWORK)
        api_host = SUPERVISOR_GATEWAY
    else:
        networks.pop(SUPERVISOR_NETWORK, None)
    main = {mode: _endpoint(networks[mode])} if mode in networks else {}
    extra = tuple((name, _endpoint(n)) for name, n in networks.items() if name != mode)
    return _Networking(mode, service, main, extra, api_host)


def _endpoint(net: ServiceNetwork) -> dict[str, Any]:
    ipam: dict[str, Any] = {}
    if net.ipv4_address:
        ipam["IPv4Address"] = net.ipv4_address
    if net.ipv6_address:
        ipam["IPv6Address"] = net.ipv6_address
    if net.link_local_ips:
        ipam["LinkLocalIPs"] = list(net.link_local_ips)
    endpoint: dict[str, Any] = {"Aliases": list(net.aliases)}
    if ipam:
        endpoint["IPAMConfig"] = ipam
    return endpoint


# ---------------------------------------------------------------------------- environment

def _environment(app: TargetApp, svc: TargetService, dev: DeviceContext, features: set[str],
                 api_host: str) -> dict[str, str]:
    """Defaults < user env (composition, then target) < feature-label variables (§4.2)."""
    defaults: dict[str, str] = {}
    for ns in ("BALENA", "RESIN"):
        defaults.update({
            f"{ns}_APP_ID": str(app.app_id), f"{ns}_APP_UUID": app.uuid,
            f"{ns}_APP_NAME": app.name, f"{ns}_SERVICE_NAME": svc.name,
            f"{ns}_DEVICE_UUID": dev.device_uuid, f"{ns}_DEVICE_TYPE": dev.device_type,
            f"{ns}_DEVICE_ARCH": dev.device_arch, f"{ns}_HOST_OS_VERSION": dev.os_version,
            f"{ns}_APP_LOCK_PATH": "/tmp/balena/updates.lock", ns: "1",
        })
    defaults["RESIN_SERVICE_KILL_ME_PATH"] = "/tmp/balena/handover-complete"
    defaults["BALENA_SERVICE_HANDOVER_COMPLETE_PATH"] = "/tmp/balena/handover-complete"
    defaults["USER"] = "root"
    env = {**defaults, **svc.config.environment, **svc.environment}
    for name in _DEVICE_NAME_VARS:
        env.pop(name, None)  # set at creation only, never part of the compared config
    overrides: dict[str, str] = {}
    if F_SUPERVISOR_API in features:
        key = dev.supervisor_api_keys.get((app.app_id, svc.name))
        if key is None:
            raise ConfigError(f"no scoped API key for service {svc.name} of app {app.app_id}")
        overrides.update(SUPERVISOR_API_KEY=key, SUPERVISOR_PORT=str(dev.listen_port),
                         SUPERVISOR_HOST=api_host,
                         SUPERVISOR_ADDRESS=f"http://{api_host}:{dev.listen_port}")
    if F_BALENA_API in features:
        overrides.update(API_KEY=dev.device_api_key or "", API_URL=dev.api_endpoint or "")
    if F_BOARD_REV in features and dev.board_rev is not None:
        overrides.update(HOST_OS_BOARD_REV=dev.board_rev, HOST_OS_BUILD=dev.board_rev)
    for key, value in overrides.items():
        env[f"BALENA_{key}"] = env[f"RESIN_{key}"] = value
    if F_BALENA_SOCKET in features:
        env.setdefault("DOCKER_HOST", f"unix://{CONTAINER_DOCKER_SOCKET}")
    return env


def _env_list(env: Mapping[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(env.items())]


# ---------------------------------------------------------------------------- host config

def _host_config(app: TargetApp, svc: TargetService, dev: DeviceContext, features: set[str],
                 network_mode: str) -> dict[str, Any]:
    cfg = svc.config
    binds, mounts = _binds_and_mounts(app, svc, dev, features)
    host: dict[str, Any] = {
        "Binds": binds,
        "Mounts": mounts,
        "NetworkMode": network_mode,
        "RestartPolicy": {"Name": cfg.restart, "MaximumRetryCount": 0},
        "Devices": [{"PathOnHost": d.path_on_host, "PathInContainer": d.path_in_container,
                     "CgroupPermissions": d.cgroup_permissions} for d in cfg.devices],
        "CapAdd": list(cfg.cap_add),
        "CapDrop": list(cfg.cap_drop),
        "Dns": list(cfg.dns),
        "DnsOptions": list(cfg.dns_opt),
        "DnsSearch": list(cfg.dns_search),
        "ExtraHosts": list(cfg.extra_hosts),
        "GroupAdd": list(cfg.group_add),
        "SecurityOpt": list(cfg.security_opt),
        "Sysctls": dict(cfg.sysctls),
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in cfg.ulimits],
        "Memory": cfg.mem_limit,
        "MemoryReservation": cfg.mem_reservation,
        "ShmSize": cfg.shm_size,
        "OomKillDisable": cfg.oom_kill_disable,
        "Privileged": cfg.privileged,
        "ReadonlyRootfs": cfg.read_only,
        "IpcMode": cfg.ipc,
        "Tmpfs": dict(_split_tmpfs(t) for t in cfg.tmpfs),
    }
    optional = {
        "CpuShares": cfg.cpu_shares, "CpuQuota": cfg.cpu_quota, "OomScoreAdj": cfg.oom_score_adj,
        "PidsLimit": cfg.pids_limit, "CpusetCpus": cfg.cpuset, "CgroupParent": cfg.cgroup_parent,
        "PidMode": cfg.pid, "UsernsMode": cfg.userns_mode, "Init": cfg.init,
        "NanoCpus": None if cfg.cpus is None else round(cfg.cpus * 1e9),
    }
    host.update({k: v for k, v in optional.items() if v is not None})
    if F_GPU in features:
        host["DeviceRequests"] = [{"Driver": "", "Count": 1, "Capabilities": [["gpu"]]}]
    return host


def _split_tmpfs(entry: str) -> tuple[str, str]:
    path, _, options = entry.partition(":")
    return path, options


def _binds_and_mounts(app: TargetApp, svc: TargetService, dev: DeviceContext,
                      features: set[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Lock dirs, named volumes `<appId>_<name>`, feature binds (§4.3)."""
    lock_dir = f"{dev.locks_dir.rstrip('/')}/services/{app.app_id}/{svc.name}"
    binds = [f"{lock_dir}:{target}" for target in LOCK_MOUNTS]
    mounts: list[dict[str, Any]] = []
    for m in svc.config.volumes:
        source = f"{app.app_id}_{m.source.strip()}" if m.source else None
        if m.long:
            mounts.append(_mount(m, source))
        elif m.kind == "volume":
            binds.append(f"{source}:{m.target}" + (f":{m.mode}" if m.mode else ""))
    for label, feature_binds in _FEATURE_BINDS.items():
        required = _CONDITIONAL_BINDS.get(label)
        if label in features and (required is None or required in dev.host_paths):
            binds.extend(feature_binds)
    if F_EXTRA_FIRMWARE in features:
        binds.append("extra-firmware:/extra-firmware")
    if F_BALENA_SOCKET in features:
        targets = [CONTAINER_DOCKER_SOCKET, dev.docker_socket]
        if dev.docker_socket != "/var/run/balena.sock":
            targets.append("/var/run/balena.sock")
        mounts.extend({"Type": "bind", "Source": dev.docker_socket, "Target": t}
                      for t in targets)
    return binds, mounts


def _mount(m: VolumeMount, source: str | None) -> dict[str, Any]:
    mount: dict[str, Any] = {"Type": "tmpfs" if m.kind == "tmpfs" else "volume",
                             "Target": m.target}
    if source:
        mount["Source"] = source
    if m.read_only:
        mount["ReadOnly"] = True
    if m.nocopy is not None:
        mount["VolumeOptions"] = {"NoCopy": m.nocopy}
    if m.tmpfs_size is not None:
        mount["TmpfsOptions"] = {"SizeBytes": m.tmpfs_size}
    return mount


def _ports(ports: tuple[PortBinding, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in ports:
        key = f"{p.internal}/{p.protocol}"
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": p.host_ip, "HostPort": str(p.host_port)})
    return exposed, bindings


def _optional_config(cfg: ServiceConfig, dev: DeviceContext, network_mode: str) -> dict[str, Any]:
    hostname = cfg.hostname
    if network_mode == "host" and not hostname:
        hostname = dev.hostname or None
    optional: dict[str, Any] = {
        "Cmd": None if cfg.command is None else list(cfg.command),
        "Entrypoint": None if cfg.entrypoint is None else list(cfg.entrypoint),
        "StopSignal": cfg.stop_signal, "Hostname": hostname, "Domainname": cfg.domainname,
        "User": cfg.user, "WorkingDir": cfg.working_dir, "MacAddress": cfg.mac_address,
        "Healthcheck": _healthcheck(cfg.healthcheck),
    }
    return {k: v for k, v in optional.items() if v is not None}


def _healthcheck(hc: Healthcheck | None) -> dict[str, Any] | None:
    if hc is None:
        return None
    fields = {"Test": None if hc.test is None else list(hc.test), "Interval": hc.interval,
              "Timeout": hc.timeout, "StartPeriod": hc.start_period, "Retries": hc.retries}
    return {k: v for k, v in fields.items() if v is not None}


# ============================================================================ container names

class ContainerName(NamedTuple):
    service_name: str
    image_id: int
    release_id: int
    commit: str | None


_NAME_RE = re.compile(r"(.*)_(\d+)_(\d+)(?:_(.*?))?")
HANDOVER_PREFIX = "old_"


def parse_container_name(name: str) -> ContainerName | None:
    """`[/][old_]<service>_<imageId>_<releaseId>[_<commit>]` (engine.md §2.1), else None.

    The `old_` hand-over prefix is stripped from the service name; use `is_handover_name`
    to know whether it was there (the io.balena.service-name label is the authority).
    """
    bare = name.removeprefix("/")
    match = _NAME_RE.fullmatch(bare)
    if match is None:
        return None
    service = match.group(1).removeprefix(HANDOVER_PREFIX)
    return ContainerName(service, int(match.group(2)), int(match.group(3)), match.group(4))


def is_handover_name(name: str) -> bool:
    return name.removeprefix("/").startswith(HANDOVER_PREFIX)


# ============================================================================ networks, volumes

@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """`kwargs` for docker-py `APIClient.create_network(name, **kwargs)`; `body` is the raw
    Engine API body (it also carries ConfigOnly, which docker-py cannot pass)."""

    name: str
    kwargs: dict[str, Any]
    body: dict[str, Any]
    labels: dict[str, str]
    config_hash: str
    config_only: bool


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    name: str
    driver: str
    driver_opts: dict[str, str]
    labels: dict[str, str]
    config_hash: str


def network_config_hash(cfg: NetworkConfig) -> str:
    return stable_hash(cfg.to_compose())


def volume_config_hash(cfg: VolumeConfig) -> str:
    """Labels the supervisor adds itself are never part of a volume's config (§7.5)."""
    return stable_hash(cfg.to_compose())


def network_spec(app: TargetApp, name: str, cfg: NetworkConfig) -> NetworkSpec:
    config_hash = network_config_hash(cfg)
    labels = {"io.balena.supervised": "true", "io.balena.app-id": str(app.app_id),
              **cfg.labels}
    if cfg.ipam_config:
        labels["io.balena.private.ipam.config"] = "true"
    labels[HASH_LABEL] = config_hash
    pools = [{k: v for k, v in {"Subnet": p.subnet, "Gateway": p.gateway, "IPRange": p.ip_range,
                                "AuxiliaryAddresses": dict(p.aux_addresses) or None}.items()
              if v is not None} for p in cfg.ipam_config]
    ipam = {"Driver": cfg.ipam_driver, "Config": pools, "Options": dict(cfg.ipam_options)}
    docker_name = f"{app.uuid}_{name}"
    kwargs = {"driver": cfg.driver, "options": dict(cfg.driver_opts), "ipam": ipam,
              "internal": cfg.internal, "labels": labels, "enable_ipv6": cfg.enable_ipv6}
    body = {"Name": docker_name, "Driver": cfg.driver, "Options": dict(cfg.driver_opts),
            "IPAM": ipam, "Internal": cfg.internal, "EnableIPv6": cfg.enable_ipv6,
            "Labels": labels, "ConfigOnly": cfg.config_only}
    return NetworkSpec(docker_name, kwargs, body, labels, config_hash, cfg.config_only)


def volume_spec(app: TargetApp, name: str, cfg: VolumeConfig) -> VolumeSpec:
    config_hash = volume_config_hash(cfg)
    labels = {**cfg.labels, "io.balena.supervised": "true", "io.balena.app-uuid": app.uuid,
              HASH_LABEL: config_hash}
    return VolumeSpec(f"{app.app_id}_{name}", cfg.driver, dict(cfg.driver_opts), labels,
                      config_hash)


def app_networks(app: TargetApp) -> dict[str, NetworkConfig]:
    """The release networks plus the implicit `default` one (engine.md §3): config-only when
    every service uses host networking (or there is no service), so no bridge is created."""
    networks = dict(app.release.networks) if app.release is not None else {}
    if "default" not in networks:
        services = app.release.services.values() if app.release is not None else ()
        all_host = all(s.config.network_mode == "host" for s in services)
        networks["default"] = NetworkConfig(driver="bridge", config_only=all_host)
    return networks
