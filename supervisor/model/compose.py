"""The compose subset of a target service, parsed and normalised (engine.md §4.1, §11-§12).

Data flow: `target.parse_target` calls `parse_composition` / `parse_network_config` /
`parse_volume_config` to turn raw compose values into typed configs; `model/spec.py` turns
those into the exact Docker objects to create. Pure: no Docker, no files, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from supervisor.model import compose_values as cv
from supervisor.model.compose_values import (
    DeviceMapping,
    Healthcheck,
    PortBinding,
    ServiceNetwork,
    Ulimit,
    VolumeMount,
)

if TYPE_CHECKING:
    pass


__all__ = [
    "DeviceMapping", "Healthcheck", "IpamPool", "NetworkConfig", "PortBinding", "ServiceConfig",
    "ServiceNetwork", "Ulimit", "VolumeConfig", "VolumeMount", "normalize_labels",
    "parse_composition", "parse_network_config", "parse_volume_config",
]


# ============================================================================ service config

@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The normalised compose subset of engine.md §4.1. Defaults are the compose defaults.

    Names are still app-relative: networks and named volumes get their app prefix only in
    `container_spec`. `environment`/`labels` are the composition's own (the target's top-level
    ones win over them).
    """

    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    network_mode: str | None = None
    networks: tuple[ServiceNetwork, ...] = ()
    ports: tuple[PortBinding, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    tmpfs: tuple[str, ...] = ()
    devices: tuple[DeviceMapping, ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_opt: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    restart: str = "always"
    healthcheck: Healthcheck | None = None
    stop_grace_period: int = 10
    stop_signal: str | None = None
    mem_limit: int = 0
    mem_reservation: int = 0
    shm_size: int = 64 * 1024 * 1024
    cpus: float | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    oom_score_adj: int | None = None
    pids_limit: int | None = None
    cpuset: str | None = None
    cgroup_parent: str | None = None
    domainname: str | None = None
    hostname: str | None = None
    mac_address: str | None = None
    pid: str | None = None
    userns_mode: str | None = None
    user: str | None = None
    working_dir: str | None = None
    ipc: str = "shareable"
    privileged: bool = False
    read_only: bool = False
    oom_kill_disable: bool = False
    tty: bool = True
    init: bool | None = None
    sysctls: dict[str, str] = field(default_factory=dict)
    ulimits: tuple[Ulimit, ...] = ()
    ignored_fields: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def _strings(value: object, path: str) -> tuple[str, ...]:
    return cv.as_str_list(value, path, scalar_ok=True)


def _memory(default: int) -> Callable[[object, str], int]:
    return lambda value, path: cv.parse_memory(value, path, default)


_Parser = Callable[[object, str], object]

# compose key (snake_case) -> parser; the ServiceConfig attribute has the same name.
_FIELDS: dict[str, _Parser] = {
    "command": cv.parse_command,
    "entrypoint": cv.parse_command,
    "environment": cv.env_map,
    "labels": cv.as_str_map,
    "depends_on": cv.parse_depends_on,
    "networks": cv.parse_service_networks,
    "ports": cv.parse_ports,
    "tmpfs": _strings,
    "devices": cv.parse_devices,
    "cap_add": cv.as_str_list,
    "cap_drop": cv.as_str_list,
    "group_add": cv.as_str_list,
    "dns": _strings,
    "dns_search": _strings,
    "dns_opt": cv.as_str_list,
    "extra_hosts": cv.parse_extra_hosts,
    "restart": cv.parse_restart,
    "healthcheck": cv.parse_healthcheck,
    "stop_grace_period": lambda v, p: cv.parse_duration_ns(v, p) // 1_000_000_000,
    "stop_signal": cv.as_str,
    "mem_limit": _memory(0),
    "mem_reservation": _memory(0),
    "shm_size": _memory(64 * 1024 * 1024),
    "cpus": cv.parse_cpus,
    "cpu_shares": cv.check_int,
    "cpu_quota": cv.check_int,
    "oom_score_adj": cv.check_int,
    "pids_limit": cv.as_int,
    "cpuset": cv.as_str,
    "cgroup_parent": cv.as_str,
    "domainname": cv.as_str,
    "hostname": cv.as_str,
    "mac_address": cv.as_str,
    "pid": cv.as_str,
    "userns_mode": cv.as_str,
    "user": cv.as_str,
    "working_dir": cv.parse_working_dir,
    "ipc": cv.as_str,
    "privileged": cv.as_bool,
    "read_only": cv.as_bool,
    "oom_kill_disable": cv.as_bool,
    "tty": cv.as_bool,
    "init": cv.as_bool,
    "sysctls": cv.as_str_map,
    "ulimits": cv.parse_ulimits,
}
# Known keys that produce no container config: lifted to the service (image, running) or
# accepted by upstream's sanitiser without being applied (storage_opt).
_ACCEPTED_UNUSED = frozenset({"image", "running", "storage_opt"})
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case(key: str) -> str:
    return _CAMEL_RE.sub("_", key).lower()


def parse_composition(composition: Mapping[str, object], *, path: str) -> ServiceConfig:
    """Raw compose mapping (snake_case or camelCase keys) -> ServiceConfig.

    Raises TargetInvalid(`<path>.<key>`, reason) for a value of the wrong type. Unknown keys
    are listed in `ignored_fields`; dropped bind mounts and ignored options in `warnings`.
    """
    values: dict[str, object] = {}
    warnings: list[str] = []
    ignored: list[str] = []
    # snake_case wins when both spellings are given: process camelCase keys first.
    for key in sorted(composition, key=lambda k: snake_case(k) == k):
        value = composition[key]
        name, key_path = snake_case(key), f"{path}.{key}"
        if name in _ACCEPTED_UNUSED or value is None:
            continue
        if name == "volumes":
            values["volumes"], dropped = cv.parse_volumes(value, key_path)
            warnings.extend(dropped)
        elif name == "security_opt":
            options = cv.as_str_list(value, key_path)
            # SELinux `label=` options: balenaOS has no SELinux and the engine adds its own.
            values[name] = tuple(o for o in options if not o.startswith("label="))
            if len(values[name]) != len(options):  # type: ignore[arg-type]
                warnings.append("Ignoring unsupported security options: label=...")
        elif name == "network_mode":
            mode = cv.as_str(value, key_path)
            if re.match(r"container:", mode):
                warnings.append("A network_mode referencing a container is not supported.")
            else:
                values[name] = mode
        elif name in _FIELDS:
            values[name] = _FIELDS[name](value, key_path)
        else:
            ignored.append(key)
    if ignored:
        warnings.append(f"Ignoring unsupported or unknown compose fields: {', '.join(ignored)}")
    values = {k: v for k, v in values.items() if v is not None}
    return ServiceConfig(**values, ignored_fields=tuple(ignored),  # type: ignore[arg-type]
                         warnings=tuple(warnings))


# ============================================================================ networks, volumes

@dataclass(frozen=True, slots=True)
class IpamPool:
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """A release network (engine.md §12). Labels are the user's, normalised."""

    driver: str = "bridge"
    driver_opts: dict[str, str] = field(default_factory=dict)
    enable_ipv6: bool = False
    internal: bool = False
    ipam_driver: str = "default"
    ipam_config: tuple[IpamPool, ...] = ()
    ipam_options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    config_only: bool = False

    @property
    def warnings(self) -> tuple[str, ...]:
        if any(not p.subnet or not p.gateway for p in self.ipam_config):
            return ("Network IPAM config entries must have both a subnet and gateway defined.",)
        return ()

    def to_compose(self) -> dict[str, object]:
        pools = []
        for pool in self.ipam_config:
            entry: dict[str, object] = {"subnet": pool.subnet, "gateway": pool.gateway,
                                        "ip_range": pool.ip_range}
            entry = {k: v for k, v in entry.items() if v is not None}
            if pool.aux_addresses:
                entry["aux_addresses"] = dict(pool.aux_addresses)
            pools.append(entry)
        return {
            "driver": self.driver, "driver_opts": dict(self.driver_opts),
            "enable_ipv6": self.enable_ipv6, "internal": self.internal,
            "ipam": {"driver": self.ipam_driver, "config": pools,
                     "options": dict(self.ipam_options)},
            "labels": dict(self.labels), "config_only": self.config_only,
        }


@dataclass(frozen=True, slots=True)
class VolumeConfig:
    """A release volume (engine.md §11). Labels are the user's, normalised."""

    driver: str = "local"
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def to_compose(self) -> dict[str, object]:
        return {"driver": self.driver, "driver_opts": dict(self.driver_opts),
                "labels": dict(self.labels)}


def _pick(raw: Mapping[str, object], *names: str) -> object:
    for name in names:
        if raw.get(name) is not None:
            return raw[name]
    return None


def parse_network_config(raw: object, *, path: str) -> NetworkConfig:
    if not isinstance(raw, dict):
        raise cv.expect(raw, "an object", path)
    ipam = _pick(raw, "ipam") or {}
    if not isinstance(ipam, dict):
        raise cv.expect(ipam, "an object", f"{path}.ipam")
    pools = _pick(ipam, "config") or []
    if not isinstance(pools, list):
        raise cv.expect(pools, "a list", f"{path}.ipam.config")
    driver = _pick(raw, "driver")
    ipam_driver = _pick(ipam, "driver")
    return NetworkConfig(
        driver=cv.as_str(driver, f"{path}.driver") if driver else "bridge",
        driver_opts=cv.as_str_map(_pick(raw, "driver_opts", "driverOpts") or {},
                                  f"{path}.driver_opts"),
        enable_ipv6=cv.as_bool(_pick(raw, "enable_ipv6", "enableIPv6", "enableIpv6") or False,
                               f"{path}.enable_ipv6"),
        internal=cv.as_bool(_pick(raw, "internal") or False, f"{path}.internal"),
        ipam_driver=cv.as_str(ipam_driver, f"{path}.ipam.driver") if ipam_driver else "default",
        ipam_config=tuple(_ipam_pool(p, f"{path}.ipam.config.{i}") for i, p in enumerate(pools)),
        ipam_options=cv.as_str_map(_pick(ipam, "options") or {}, f"{path}.ipam.options"),
        labels=normalize_labels(cv.as_str_map(_pick(raw, "labels") or {}, f"{path}.labels")),
        config_only=cv.as_bool(_pick(raw, "config_only", "configOnly") or False,
                               f"{path}.config_only"),
    )


def _ipam_pool(raw: object, path: str) -> IpamPool:
    if not isinstance(raw, dict):
        raise cv.expect(raw, "an object", path)

    def text(*names: str) -> str | None:
        value = _pick(raw, *names)
        return None if value is None else cv.as_str(value, f"{path}.{names[0]}")

    aux = _pick(raw, "aux_addresses", "auxAddresses", "auxAddress") or {}
    return IpamPool(subnet=text("subnet"), gateway=text("gateway"),
                    ip_range=text("ip_range", "ipRange"),
                    aux_addresses=cv.as_str_map(aux, f"{path}.aux_addresses"))


def parse_volume_config(raw: object, *, path: str) -> VolumeConfig:
    if not isinstance(raw, dict):
        raise cv.expect(raw, "an object", path)
    driver = _pick(raw, "driver")
    return VolumeConfig(
        driver=cv.as_str(driver, f"{path}.driver") if driver else "local",
        driver_opts=cv.as_str_map(_pick(raw, "driver_opts", "driverOpts") or {},
                                  f"{path}.driver_opts"),
        labels=normalize_labels(cv.as_str_map(_pick(raw, "labels") or {}, f"{path}.labels")),
    )


def normalize_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Legacy `io.resin.*` labels become `io.balena.*`; explicit `io.balena.*` ones win."""
    other = {k: v for k, v in labels.items() if not k.startswith(("io.balena.", "io.resin."))}
    legacy = {k.replace("resin", "balena"): v for k, v in labels.items()
              if k.startswith("io.resin.")}
    balena = {k: v for k, v in labels.items() if k.startswith("io.balena.")}
    return {**other, **legacy, **balena}
