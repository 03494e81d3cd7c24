"""Parsers for single compose values (engine.md §4.1): ports, volumes, durations, sizes...

`compose.parse_composition` calls one of these per key. Each takes the raw JSON value and the
dotted path of that value, returns a normalised immutable value, and raises
`TargetInvalid(path, reason)` when the value has the wrong JSON type or cannot be understood.
Where upstream silently falls back (bad memory size -> 0, unknown restart policy -> always) we
do the same, so a target that balena accepts is accepted here too.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from supervisor.errors import TargetInvalid

ENV_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_NAME = 255
MAX_INT = 2**63 - 1  # Docker and SQLite both store int64


# ---------------------------------------------------------------------------- value types

class PortBinding(NamedTuple):
    """One published container port (ranges are expanded, so comparison is by set)."""

    internal: int
    protocol: str
    host_ip: str
    host_port: int


class DeviceMapping(NamedTuple):
    path_on_host: str
    path_in_container: str
    cgroup_permissions: str


class ServiceNetwork(NamedTuple):
    """A network a service joins, by its compose name (not yet prefixed with the app uuid)."""

    name: str
    aliases: tuple[str, ...] = ()
    ipv4_address: str | None = None
    ipv6_address: str | None = None
    link_local_ips: tuple[str, ...] = ()


class Ulimit(NamedTuple):
    name: str
    soft: int
    hard: int


@dataclass(frozen=True, slots=True)
class VolumeMount:
    """A compose volume entry the supervisor keeps (bind mounts are dropped before this).

    kind: "volume" (named, `source` is the compose name, not yet namespaced by app id),
    "anonymous" (only `target`), or "tmpfs" (long syntax only). `long` says which Docker field
    it becomes: HostConfig.Mounts (long) or Binds/Volumes (short).
    """

    kind: str
    target: str
    source: str | None = None
    read_only: bool = False
    mode: str | None = None
    long: bool = False
    nocopy: bool | None = None
    tmpfs_size: int | None = None


@dataclass(frozen=True, slots=True)
class Healthcheck:
    """Compose healthcheck; unset fields are left to the image (Docker merges field-wise)."""

    test: tuple[str, ...] | None = None
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    retries: int | None = None


# ---------------------------------------------------------------------------- scalars

def type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def expect(value: object, kind: str, path: str) -> TargetInvalid:
    return TargetInvalid(path, f"expected {kind}, got {type_name(value)}")


def as_str(value: object, path: str) -> str:
    """A string; numbers are accepted (YAML gives `user: 1000` as a number)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise expect(value, "a string", path)


_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no", ""}


def as_bool(value: object, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise expect(value, "a boolean", path)


def as_int(value: object, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise expect(value, "an integer", path)
    try:
        number = float(value) if isinstance(value, str) else value
        if number != int(number):
            raise ValueError
        result = int(number)
    except (ValueError, OverflowError):
        raise TargetInvalid(path, f"expected an integer, got {value!r}") from None
    if abs(result) > MAX_INT:
        raise TargetInvalid(path, f"integer out of range: {value!r}")
    return result


def check_int(value: object, path: str) -> int | None:
    """Upstream `checkInt`: integers kept, 0 and unparsable strings dropped (None)."""
    if isinstance(value, list | dict):
        raise expect(value, "an integer", path)
    try:
        number = as_int(value, path)
    except TargetInvalid:
        return None
    return number or None


def as_float(value: object, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise expect(value, "a number", path)
    try:
        number = float(value)
    except ValueError:
        raise TargetInvalid(path, f"expected a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise TargetInvalid(path, f"expected a finite number, got {value!r}")
    return number


def parse_cpus(value: object, path: str) -> float:
    cpus = as_float(value, path)
    if not 0 <= cpus <= 1_000_000:
        raise TargetInvalid(path, f"cpus out of range: {value!r}")
    return cpus


def as_str_list(value: object, path: str, *, scalar_ok: bool = False) -> tuple[str, ...]:
    """A list of strings (or, where compose allows it, a single string)."""
    if scalar_ok and isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise expect(value, "a list of strings", path)
    return tuple(as_str(item, f"{path}.{i}") for i, item in enumerate(value))


def as_str_map(value: object, path: str) -> dict[str, str]:
    """A `{k: v}` object or a `["k=v"]` list (compose allows both), values as strings."""
    if isinstance(value, list):
        result: dict[str, str] = {}
        for i, item in enumerate(value):
            key, _, val = as_str(item, f"{path}.{i}").partition("=")
            result[key] = val
        return result
    if not isinstance(value, dict):
        raise expect(value, "an object", path)
    return {str(k): _map_value(v, f"{path}.{k}") for k, v in value.items()}


def _map_value(value: object, path: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return as_str(value, path)


def env_map(value: object, path: str) -> dict[str, str]:
    """Environment variables; names must be valid shell variable names."""
    env = as_str_map(value, path)
    for name in env:
        check_env_name(name, path)
    return env


def check_env_name(name: object, path: str) -> None:
    if not isinstance(name, str) or len(name) > MAX_NAME or not ENV_NAME_RE.fullmatch(name):
        raise TargetInvalid(path, f"invalid variable name {name!r}")


# ---------------------------------------------------------------------------- commands

def parse_command(value: object, path: str) -> tuple[str, ...]:
    """`command`/`entrypoint`: a list as is, a string split like a shell (no expansion)."""
    if isinstance(value, list):
        return as_str_list(value, path)
    if not isinstance(value, str):
        raise expect(value, "a string or a list of strings", path)
    lexer = shlex.shlex(value, posix=True, punctuation_chars="();<>|&")
    lexer.whitespace_split = True
    lexer.commenters = ""  # `#` inside a word is literal in a shell; keep it simple: always literal
    try:
        return tuple(lexer)
    except ValueError as err:
        raise TargetInvalid(path, f"cannot split command: {err}") from None


# ---------------------------------------------------------------------------- durations, sizes

_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
    "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w)")


def parse_duration_ns(value: object, path: str) -> int:
    """`1m30s`, `500ms`, `1.5h` -> nanoseconds. A bare number means seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        total = as_float(value, path) * 1_000_000_000
    elif isinstance(value, str):
        text = value.strip()
        total, pos = 0.0, 0
        for match in _DURATION_PART_RE.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise TargetInvalid(path, f"invalid duration {value!r}")
    else:
        raise expect(value, "a duration string", path)
    if not -MAX_INT <= total <= MAX_INT:
        raise TargetInvalid(path, f"duration out of range: {value!r}")
    return int(total)


_MEMORY_RE = re.compile(r"([0-9]+)([bkmg]?)b?", re.IGNORECASE)
_MEMORY_POWER = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3}


def parse_memory(value: object, path: str, default: int = 0) -> int:
    """`<n>[b|k|m|g][b]` (1024-based) -> bytes; anything unparsable gives `default`."""
    if isinstance(value, list | dict | bool):
        raise expect(value, "a size", path)
    if isinstance(value, int):
        return value if value >= 0 else default
    match = _MEMORY_RE.fullmatch(str(value))
    if match is None or len(match.group(1)) > 30:  # beyond any real size (and int() limits)
        return default
    return int(match.group(1)) * 1024 ** _MEMORY_POWER[match.group(2).lower()]


# ---------------------------------------------------------------------------- ports

_PORTS_RE = re.compile(
    r"(?:(?:(?P<host>[a-fA-F\d.:]+):)?(?P<ext>\d*)(?:-(?P<ext_end>\d+))?:)?"
    r"(?P<int>\d+)(?:-(?P<int_end>\d+))?(?:/(?P<proto>udp|tcp))?"
)


def parse_ports(value: object, path: str) -> tuple[PortBinding, ...]:
    """Compose `ports`; a bare container port is published on the same host port."""
    if not isinstance(value, list):
        raise expect(value, "a list of port definitions", path)
    bindings: set[PortBinding] = set()
    for i, item in enumerate(value):
        bindings.update(_parse_port(item, f"{path}.{i}"))
    return tuple(sorted(bindings))


def _parse_port(item: object, path: str) -> list[PortBinding]:
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    if not isinstance(item, str):
        raise expect(item, "a port string", path)
    match = _PORTS_RE.fullmatch(item.strip())
    numbers = () if match is None else match.group("ext", "ext_end", "int", "int_end")
    if match is None or any(len(n or "") > 5 for n in numbers):
        raise TargetInvalid(path, f"could not parse port definition {item!r}")
    internal = int(match["int"])
    internal_end = int(match["int_end"] or internal)
    external = int(match["ext"]) if match["ext"] else internal
    if match["ext_end"]:
        external_end = int(match["ext_end"])
    else:
        # `a:b` maps one port; a bare range `a-b` publishes the same range.
        external_end = external if internal == internal_end else internal_end
    if max(internal, internal_end, external, external_end) > 65535:
        raise TargetInvalid(path, f"port number out of range in {item!r}")
    if internal_end < internal or external_end - external != internal_end - internal:
        raise TargetInvalid(path, f"range for internal and external ports does not match: {item!r}")
    proto, host = match["proto"] or "tcp", match["host"] or ""
    return [PortBinding(internal + k, proto, host, external + k)
            for k in range(internal_end - internal + 1)]


# ---------------------------------------------------------------------------- devices, hosts

def parse_devices(value: object, path: str) -> tuple[DeviceMapping, ...]:
    """`host[:container[:perms]]` -> (host, container defaulting to host, perms default rwm)."""
    result = []
    for i, item in enumerate(as_str_list(value, path)):
        host, *rest = item.split(":")
        container = rest[0] if rest and rest[0] else host
        perms = rest[1] if len(rest) > 1 and rest[1] else "rwm"
        if not host:
            raise TargetInvalid(f"{path}.{i}", f"invalid device {item!r}")
        result.append(DeviceMapping(host, container, perms))
    return tuple(result)


def parse_extra_hosts(value: object, path: str) -> tuple[str, ...]:
    """`host:ip` entries; the `host=ip` form and the `{host: ip}` map are normalised to it."""
    if isinstance(value, dict):
        return tuple(f"{k}:{as_str(v, f'{path}.{k}')}" for k, v in value.items())
    result = []
    for item in as_str_list(value, path):
        name, eq, addr = item.partition("=")
        result.append(f"{name}:{addr}" if eq and ":" not in name else item)
    return tuple(result)


# ---------------------------------------------------------------------------- volumes

def parse_volumes(value: object, path: str) -> tuple[tuple[VolumeMount, ...], tuple[str, ...]]:
    """Compose `volumes` -> (kept mounts, warnings). Bind mounts are never allowed."""
    if not isinstance(value, list):
        raise expect(value, "a list of volume definitions", path)
    mounts: list[VolumeMount] = []
    warnings: list[str] = []
    for i, item in enumerate(value):
        item_path = f"{path}.{i}"
        if isinstance(item, str):
            mount = _short_volume(item, item_path)
        elif isinstance(item, dict):
            mount = _long_volume(item, item_path)
        else:
            raise expect(item, "a volume string or object", item_path)
        if isinstance(mount, str):
            warnings.append(mount)
        else:
            mounts.append(mount)
    return tuple(mounts), tuple(warnings)


def _is_host_path(source: str) -> bool:
    return source.startswith(("/", ".", "~"))


def _short_volume(item: str, path: str) -> VolumeMount | str:
    parts = item.split(":")
    if len(parts) == 1:
        if not item.strip():
            raise TargetInvalid(path, "empty volume definition")
        return VolumeMount(kind="anonymous", target=item.strip())
    if len(parts) > 3 or not parts[0].strip() or not parts[1].strip():
        raise TargetInvalid(path, f"invalid volume definition {item!r}")
    source, target = parts[0].strip(), parts[1].strip()
    if _is_host_path(source):
        return f"Ignoring invalid bind mount {item}"
    mode = parts[2].strip() if len(parts) == 3 else None
    read_only = mode is not None and "ro" in mode.split(",")
    return VolumeMount(kind="volume", target=target, source=source, read_only=read_only,
                       mode=mode or None)


def _long_volume(item: Mapping[str, object], path: str) -> VolumeMount | str:
    kind = item.get("type")
    target = item.get("target")
    if kind == "bind":
        return f"Ignoring invalid bind mount {_compact(item)}"
    if kind not in ("volume", "tmpfs"):
        if isinstance(kind, str):
            return f"Ignoring invalid compose volume definition {_compact(item)}"
        raise TargetInvalid(f"{path}.type", "expected 'volume', 'tmpfs' or 'bind'")
    if not isinstance(target, str) or not target:
        raise TargetInvalid(f"{path}.target", "expected a non-empty string")
    read_only = as_bool(item.get("read_only", item.get("readOnly", False)), f"{path}.read_only")
    if kind == "tmpfs":
        size = _sub_option(item, "tmpfs", "size", path)
        return VolumeMount(kind="tmpfs", target=target, read_only=read_only, long=True,
                           tmpfs_size=None if size is None else parse_memory(size, path))
    source = item.get("source")
    if source is not None and not isinstance(source, str):
        raise expect(source, "a string", f"{path}.source")
    if source and _is_host_path(source):
        return f"Ignoring invalid bind mount {_compact(item)}"
    nocopy = _sub_option(item, "volume", "nocopy", path)
    return VolumeMount(kind="volume" if source else "anonymous", target=target,
                       source=source or None, read_only=read_only, long=True,
                       nocopy=None if nocopy is None else as_bool(nocopy, f"{path}.volume"))


def _sub_option(item: Mapping[str, object], key: str, option: str, path: str) -> object:
    sub = item.get(key)
    if sub is None:
        return None
    if not isinstance(sub, dict):
        raise expect(sub, "an object", f"{path}.{key}")
    return sub.get(option)


def _compact(item: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in item.items())


# ---------------------------------------------------------------------------- networks

def parse_service_networks(value: object, path: str) -> tuple[ServiceNetwork, ...]:
    """`networks` as a list of names or a map name -> {aliases, ipv4_address, ...} | null."""
    if isinstance(value, list):
        return tuple(ServiceNetwork(name) for name in as_str_list(value, path))
    if not isinstance(value, dict):
        raise expect(value, "a list or an object", path)
    result = []
    for name, conf in value.items():
        net_path = f"{path}.{name}"
        if conf is None:
            result.append(ServiceNetwork(str(name)))
            continue
        if not isinstance(conf, dict):
            raise expect(conf, "an object", net_path)
        opts = {_snake(k): v for k, v in conf.items()}
        result.append(ServiceNetwork(
            name=str(name),
            aliases=as_str_list(opts.get("aliases", []), f"{net_path}.aliases"),
            ipv4_address=_opt_str(opts.get("ipv4_address"), f"{net_path}.ipv4_address"),
            ipv6_address=_opt_str(opts.get("ipv6_address"), f"{net_path}.ipv6_address"),
            link_local_ips=as_str_list(opts.get("link_local_ips", []),
                                       f"{net_path}.link_local_ips"),
        ))
    return tuple(result)


def _opt_str(value: object, path: str) -> str | None:
    return None if value is None else as_str(value, path)


_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _snake(key: str) -> str:
    return _CAMEL_RE.sub("_", key).lower()


# ---------------------------------------------------------------------------- misc

_RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")


def parse_restart(value: object, path: str) -> str:
    """Restart policy name; anything unknown falls back to `always` (as upstream)."""
    name = as_str(value, path).strip().lower()
    return name if name in _RESTART_POLICIES else "always"


def parse_ulimits(value: object, path: str) -> tuple[Ulimit, ...]:
    """`{nofile: 1024}` or `{nofile: {soft: 1024, hard: 2048}}`."""
    if not isinstance(value, dict):
        raise expect(value, "an object", path)
    result = []
    for name, limit in value.items():
        lim_path = f"{path}.{name}"
        if isinstance(limit, dict):
            soft = as_int(limit.get("soft"), f"{lim_path}.soft")
            hard = as_int(limit.get("hard"), f"{lim_path}.hard")
        else:
            soft = hard = as_int(limit, lim_path)
        result.append(Ulimit(str(name), soft, hard))
    return tuple(sorted(result))


def parse_healthcheck(value: object, path: str) -> Healthcheck:
    if not isinstance(value, dict):
        raise expect(value, "an object", path)
    opts = {_snake(k): v for k, v in value.items()}
    if as_bool(opts.get("disable", False), f"{path}.disable"):
        return Healthcheck(test=("NONE",))
    test = opts.get("test")
    if isinstance(test, str):
        test_argv: tuple[str, ...] | None = ("CMD-SHELL", test)
    else:
        test_argv = None if test is None else as_str_list(test, f"{path}.test")

    def duration(key: str) -> int | None:
        raw = opts.get(key)
        return None if raw is None else parse_duration_ns(raw, f"{path}.{key}")

    retries = opts.get("retries")
    return Healthcheck(
        test=test_argv,
        interval=duration("interval"),
        timeout=duration("timeout"),
        start_period=duration("start_period"),
        retries=None if retries is None else as_int(retries, f"{path}.retries"),
    )


def parse_depends_on(value: object, path: str) -> tuple[str, ...]:
    """A list of service names, or the long `{service: {condition: ...}}` map (keys kept)."""
    if isinstance(value, dict):
        return tuple(str(k) for k in value)
    return as_str_list(value, path)


def parse_working_dir(value: object, path: str) -> str:
    text = as_str(value, path)
    return text[:-1] if len(text) > 1 and text.endswith("/") else text
