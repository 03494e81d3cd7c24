"""Device configuration variables: the one table, and how a target's `config` is read.

The cloud's "configuration variables" (config.md §5) arrive in the target's `config` object,
each named with a `BALENA_` or `RESIN_` prefix or none. Every part of the supervisor that
honours one asks this module, so that they all agree:

- `VARIABLES` is the table: type, default, whether a change needs a reboot, who applies it.
- `format_config` is upstream's formatConfigKeys + the legacy copy of setTarget (state.md §2.3):
  prefixes stripped (BALENA_ wins over RESIN_, which wins over none), only known keys kept
  (the table's names, legacy `OVERRIDE_LOCK`, boot-config names), `OVERRIDE_LOCK` copied to
  `SUPERVISOR_OVERRIDE_LOCK`.
- `target_config` fills the defaults (upstream getTarget, §5.1): the device config target as
  `GET /v2/local/target-state` shows it.
- `DeviceConfig` reads typed values from a target; an invalid value counts as the default.
- `diff_variables` is step 1 of upstream's getRequiredSteps (§5.2): which variables change, to
  what, whether a reboot is needed, and the warning each invalid value earns.

The value rules are upstream's exactly: `check_truthy`/`check_falsey` (no trimming),
`check_int` (`^-?[0-9]+\\.?0*$`), and the io-ts PermissiveBoolean/PermissiveNumber used for
validity (`parse_permissive_bool`, `parse_permissive_int`, the latter JavaScript's parseInt).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

VarType = Literal["bool", "int", "string"]
# "config": a config key of upstream (getRequiredSteps step 1); "vpn": the special VPN step;
# "extension": this supervisor's own variable (not in upstream's table, never reported).
VarKind = Literal["config", "vpn", "extension"]


@dataclass(frozen=True, slots=True)
class ConfigVar:
    name: str  # without prefix, e.g. SUPERVISOR_POLL_INTERVAL
    key: str  # upstream's config key (config.md §1), "" where there is none
    type: VarType
    default: str  # a string, as upstream keeps every device config value
    applied_by: str  # the part of this supervisor that acts on it
    reboot: bool = False
    kind: VarKind = "config"


# Upstream's order (device-config.ts configKeys): changes are listed in this order.
VARIABLES: tuple[ConfigVar, ...] = (
    ConfigVar("SUPERVISOR_POLL_INTERVAL", "appUpdatePollInterval", "int", "900000",
              "cloud poller"),
    ConfigVar("SUPERVISOR_INSTANT_UPDATE_TRIGGER", "instantUpdates", "bool", "true",
              "cloud poller, POST /v1/update"),
    ConfigVar("SUPERVISOR_LOCAL_MODE", "localMode", "bool", "false", "runtime (target source)"),
    ConfigVar("SUPERVISOR_CONNECTIVITY_CHECK", "connectivityCheckEnabled", "bool", "true",
              "host connectivity check"),
    ConfigVar("SUPERVISOR_LOG_CONTROL", "loggingEnabled", "bool", "true", "log backends"),
    ConfigVar("SUPERVISOR_API_REQUEST_TIMEOUT", "apiRequestTimeout", "int", "59000",
              "cloud HTTP client"),
    ConfigVar("SUPERVISOR_DELTA", "delta", "bool", "false", "image fetch (deltas)"),
    ConfigVar("SUPERVISOR_DELTA_REQUEST_TIMEOUT", "deltaRequestTimeout", "int", "59000",
              "image fetch (deltas)"),
    ConfigVar("SUPERVISOR_DELTA_APPLY_TIMEOUT", "deltaApplyTimeout", "int", "0",
              "image fetch (deltas)"),
    ConfigVar("SUPERVISOR_DELTA_RETRY_COUNT", "deltaRetryCount", "int", "30",
              "image fetch (deltas)"),
    ConfigVar("SUPERVISOR_DELTA_RETRY_INTERVAL", "deltaRetryInterval", "int", "10000",
              "image fetch (deltas)"),
    ConfigVar("SUPERVISOR_DELTA_VERSION", "deltaVersion", "int", "2", "image fetch (deltas)"),
    ConfigVar("SUPERVISOR_OVERRIDE_LOCK", "lockOverride", "bool", "false",
              "update locks (planner, API actions)"),
    ConfigVar("SUPERVISOR_PERSISTENT_LOGGING", "persistentLogging", "bool", "false",
              "config.json (the OS, after a reboot)", reboot=True),
    ConfigVar("HOST_FIREWALL_MODE", "firewallMode", "string", "off", "host firewall"),
    ConfigVar("HOST_DISCOVERABILITY", "hostDiscoverability", "bool", "true",
              "host avahi units"),
    ConfigVar("SUPERVISOR_HARDWARE_METRICS", "hardwareMetrics", "bool", "true",
              "state reporter"),
    ConfigVar("SUPERVISOR_VPN_CONTROL", "", "bool", "true", "host openvpn unit", kind="vpn"),
    ConfigVar("SUPERVISOR_UPDATE_FAILURE_LIMIT", "", "int", "5", "failure budget",
              kind="extension"),
)
BY_NAME: Mapping[str, ConfigVar] = {var.name: var for var in VARIABLES}
CONFIG_VARS: tuple[ConfigVar, ...] = tuple(v for v in VARIABLES if v.kind == "config")

VPN_CONTROL = "SUPERVISOR_VPN_CONTROL"
LOCAL_MODE = "SUPERVISOR_LOCAL_MODE"
OVERRIDE_LOCK = "SUPERVISOR_OVERRIDE_LOCK"
LEGACY_OVERRIDE_LOCK = "OVERRIDE_LOCK"
KNOWN_NAMES = frozenset(BY_NAME) | {LEGACY_OVERRIDE_LOCK}

# Boot-config variable names (config.md §5.3); the backends in board/backends/ own the details
# and a test checks that each of them accepts only names this function accepts.
BOOT_VAR_PREFIXES = ("HOST_CONFIG_", "HOST_EXTLINUX_", "HOST_ODMDATA_")
CONFIGFS_SSDT = "HOST_CONFIGFS_ssdt"
SPLASH_PREFIX = "HOST_SPLASH_"


def is_boot_config_var(name: str) -> bool:
    """A name some boot-config backend accepts (after the prefix is stripped)."""
    if name.startswith(BOOT_VAR_PREFIXES) or name == CONFIGFS_SSDT:
        return True
    return name.startswith(SPLASH_PREFIX) and name[len(SPLASH_PREFIX):].lower() == "image"


# -- value rules (lib/validation.ts, config/types.ts) -------------------------------------------

_TRUTHY = frozenset({"1", "true", "on"})
_FALSEY = frozenset({"0", "false", "off"})
_NUMERALS = re.compile(r"-?[0-9]+\.?0*")
# What JavaScript's parseInt skips before the number (StrWhiteSpaceChar).
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_LEADING_INT = re.compile(r"[+-]?[0-9]+")


def check_truthy(value: object) -> bool:
    """`true`, 1, and the strings 1/true/on in any case; nothing is trimmed."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    return isinstance(value, str) and value.lower() in _TRUTHY


def check_falsey(value: object) -> bool:
    """`false`, 0, and the strings 0/false/off in any case."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value == 0
    return isinstance(value, str) and value.lower() in _FALSEY


def check_int(value: object) -> int | None:
    """Upstream checkInt: a whole number written as `^-?[0-9]+\\.?0*$` ("12", "12.00")."""
    if isinstance(value, bool):
        return None
    text = _js_string(value)
    if text is None or _NUMERALS.fullmatch(text) is None:
        return None
    number = float(text)  # JavaScript's Number(): beyond 2**53 it rounds the same way
    return int(number) if math.isfinite(number) else None


def parse_permissive_bool(value: object) -> bool | None:
    """io-ts PermissiveBoolean: booleanish values decode, null/undefined is false, else None."""
    if value is None:
        return False
    if isinstance(value, bool | int | float | str):
        if check_truthy(value):
            return True
        if check_falsey(value):
            return False
    return None


def parse_permissive_int(value: object) -> int | None:
    """io-ts PermissiveNumber: a number, or a string read by parseInt(v, 10) ("12abc" -> 12)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        match = _LEADING_INT.match(value.lstrip(_JS_SPACE))
        return int(match.group(0)) if match else None
    return None


def is_valid(var: ConfigVar, value: object) -> bool:
    """upstream config.valueIsValid: the value decodes with the variable's type."""
    if var.type == "bool":
        return parse_permissive_bool(value) is not None
    if var.type == "int":
        return value is not None and parse_permissive_int(value) is not None
    return value is None or isinstance(value, str)  # firewallMode: string or unset


def same_value(var: ConfigVar, a: object, b: object) -> bool:
    """upstream configTest: bool by truthiness, int by checkInt, string exactly."""
    if var.type == "bool":
        return check_truthy(a) == check_truthy(b)
    if var.type == "int":
        return check_int(a) == check_int(b)
    return a == b


def typed_value(var: ConfigVar, value: object) -> bool | int | str:
    """The value as the supervisor uses it; an invalid value (or none) gives the default."""
    if not is_valid(var, value) or value is None:
        value = var.default
    if var.type == "bool":
        return parse_permissive_bool(value) is True
    if var.type == "int":
        parsed = parse_permissive_int(value)
        return parsed if parsed is not None else int(var.default)
    return str(value)


def js_inspect(value: object) -> str:
    """util.inspect() of a string as node prints it in upstream's warning: 'abc'."""
    if value is None:
        return "undefined"
    if not isinstance(value, str):
        return _js_string(value) or str(value)
    quote = "'"
    if "'" in value:
        quote = '"' if '"' not in value else ("`" if "`" not in value and "${" not in value
                                              else "'")
    out = []
    for char in value:
        code = ord(char)
        if char == quote or char == "\\":
            out.append("\\" + char)
        elif char in _INSPECT_ESCAPES:
            out.append(_INSPECT_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02X}")
        else:
            out.append(char)
    return quote + "".join(out) + quote


_INSPECT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _js_string(value: object) -> str | None:
    """String(value) for the values a device config can hold."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


# -- the target ----------------------------------------------------------------------------------


def format_config(raw: Mapping[str, str]) -> dict[str, str]:
    """The device config as upstream stores it: prefixes stripped, only known keys kept.

    `BALENA_X` wins over `RESIN_X`, which wins over `X`. The result keeps upstream's order
    (BALENA_ names first, then RESIN_, then unprefixed ones), which is the order boot-config
    files are written in. Legacy `OVERRIDE_LOCK` is copied onto `SUPERVISOR_OVERRIDE_LOCK`.
    """
    merged: dict[str, str] = {}
    for prefix in ("BALENA_", "RESIN_"):
        for key, value in raw.items():
            if key.startswith(prefix):
                merged.setdefault(key[len(prefix):], value)
    for key, value in raw.items():
        if not key.startswith(("BALENA_", "RESIN_")):
            merged.setdefault(key, value)
    kept = {k: v for k, v in merged.items() if k in KNOWN_NAMES or is_boot_config_var(k)}
    if LEGACY_OVERRIDE_LOCK in kept:
        kept[OVERRIDE_LOCK] = kept[LEGACY_OVERRIDE_LOCK]
    return kept


def target_config(raw: Mapping[str, str], *, unmanaged: bool = False,
                  initial: bool = False) -> dict[str, str]:
    """The device config target with defaults filled (upstream getTarget).

    `SUPERVISOR_VPN_CONTROL` is `true` when unset and on the initial apply after boot; an
    unmanaged device defaults `SUPERVISOR_LOCAL_MODE` to `true`. This supervisor's own
    extension variables get no default here (they are not part of upstream's target).
    """
    conf = format_config(raw)
    if initial or conf.get(VPN_CONTROL) is None:
        conf[VPN_CONTROL] = "true"
    if unmanaged and conf.get(LOCAL_MODE) is None:
        conf[LOCAL_MODE] = "true"
    for var in CONFIG_VARS:
        conf.setdefault(var.name, var.default)
    return conf


def lookup(raw: Mapping[str, str], name: str) -> str | None:
    """The value the target sets for `name` (any prefix spelling), None when it sets none."""
    return format_config(raw).get(name)


@dataclass(frozen=True)
class DeviceConfig:
    """Typed reads of a device config target. Build it with `DeviceConfig.of(target.config)`."""

    values: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, raw: Mapping[str, str] | None, *, unmanaged: bool = False) -> DeviceConfig:
        return cls(target_config(raw or {}, unmanaged=unmanaged))

    def flag(self, name: str) -> bool:
        return bool(self._typed(name, "bool"))

    def number(self, name: str) -> int:
        value = self._typed(name, "int")
        return value if isinstance(value, int) else int(value)

    def text(self, name: str) -> str:
        return str(self._typed(name, "string"))

    def _typed(self, name: str, expected: VarType) -> bool | int | str:
        var = BY_NAME[name]
        if var.type != expected:
            raise TypeError(f"{name} is a {var.type} variable")
        return typed_value(var, self.values.get(name))

    @property
    def lock_override(self) -> bool:
        return self.flag(OVERRIDE_LOCK)

    @property
    def local_mode(self) -> bool:
        return self.flag(LOCAL_MODE)

    @property
    def instant_updates(self) -> bool:
        return self.flag("SUPERVISOR_INSTANT_UPDATE_TRIGGER")

    @property
    def hardware_metrics(self) -> bool:
        return self.flag("SUPERVISOR_HARDWARE_METRICS")


# -- target against current (getRequiredSteps step 1) --------------------------------------------


@dataclass(frozen=True)
class VariableDiff:
    """What a changeConfig step would do. `changes` maps variable names to the new value (in
    table order); `reboot_changes` is the part that needs a reboot (the breadcrumb's content);
    `warnings` are upstream's messages for invalid target values."""

    changes: dict[str, str] = field(default_factory=dict)
    reboot_changes: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def reboot(self) -> bool:
        return bool(self.reboot_changes)

    def by_key(self) -> dict[str, str]:
        """The changes under upstream's config keys (what config.set receives)."""
        return {BY_NAME[name].key: value for name, value in self.changes.items()}


def invalid_warning(var: ConfigVar, value: object) -> str:
    return (f"Warning: Ignoring invalid device configuration value for {var.key}, value: "
            f"{js_inspect(value)}. Falling back to default ({var.default})")


def diff_variables(current: Mapping[str, str], target: Mapping[str, str]) -> VariableDiff:
    """Compare the current and target config (both without prefixes) variable by variable.

    A different, valid target value is a change. An invalid one falls back to the default:
    a change (with its warning) only when the current value is not the default already.
    """
    changes: dict[str, str] = {}
    rebooting: dict[str, str] = {}
    warnings: list[str] = []
    for var in CONFIG_VARS:
        now, wanted = current.get(var.name), target.get(var.name)
        if same_value(var, now, wanted):
            continue
        value: str | None = None
        if is_valid(var, wanted):
            value = wanted  # an unset (None) bool is valid and changes nothing, as upstream
        elif not same_value(var, now, var.default):
            warnings.append(invalid_warning(var, wanted))
            value = var.default
        if value is not None:
            changes[var.name] = value
            if var.reboot:
                rebooting[var.name] = value
    return VariableDiff(changes, rebooting, tuple(warnings))


def vpn_change(current: Mapping[str, str], target: Mapping[str, str]) -> str | None:
    """Step 2 of getRequiredSteps: the target VPN_CONTROL value when it differs (truthiness).
    The caller skips it on unmanaged devices and rate-limits it."""
    wanted = target.get(VPN_CONTROL)
    if not wanted or check_truthy(current.get(VPN_CONTROL)) == check_truthy(wanted):
        return None
    return wanted


def current_value(value: object) -> str:
    """How upstream's getCurrent renders a stored config value: toString(), or '' if unset."""
    text = _js_string(value)
    return "" if value is None or text is None else text
