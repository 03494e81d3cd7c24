"""Host configuration: hostname and the redsocks proxy (config.md §7, api.md §3.11-3.12).

`GET /v1/device/host-config` returns `read_host_config()`; `PATCH` runs `validate_patch()` on
the body, then (under the update locks of all apps) `apply_patch()`, which writes
`<boot>/system-proxy/redsocks.conf` and `no_proxy` and hands the hostname to config.json
through a callback. It returns the host units to restart, which the caller passes to
`host.actions.restart_host_services()`. File access is blocking: call from a thread.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.durable import replace_file
from supervisor.errors import BadRequest
from supervisor.model.config_vars import check_truthy

_LOGGER = logging.getLogger(__name__)

PROXY_DIR = "system-proxy"
REDSOCKS_CONF = "redsocks.conf"
NO_PROXY = "no_proxy"
PROXY_TYPES = ("socks4", "socks5", "http-connect", "http-relay")
PROXY_FIELDS = ("type", "ip", "port", "login", "password")
AUTH_FIELDS = ("login", "password")
DEFAULT_DNS = "8.8.8.8:53"
PROXY_SERVICES = ("balena-proxy-config", "redsocks")

_BASE_BLOCK: tuple[tuple[str, object], ...] = (
    ("log_debug", "off"), ("log_info", "on"), ("log", "stderr"), ("daemon", "off"),
    ("redirector", "iptables"),
)
_LOCAL_ONLY = ("local_ip", "local_port")  # ours to set; never taken from input or file
_ADDRESS = re.compile(r"([^\s:]+):([0-9]{1,5})")
_DIGITS = re.compile(r"[0-9]+")
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Characters with a meaning in redsocks.conf (and in our reading of it): never in a value.
_CONF_SPECIAL = frozenset('"\\{};')
MAX_AUTH_LENGTH = 255

# io-ts names, so the 400 text reads like upstream's (api.md §3.12).
_NETWORK_TYPE = ("Partial<{| proxy: ({ [K in string]: any } & Partial<{ dns: "
                 "(AddressString | boolean) }>), hostname: string |}>")
_TYPE_UNION = "Expecting one of:\n" + "\n".join(f'    "{t}"' for t in PROXY_TYPES)
_DNS_UNION = "Expecting one of:\n    AddressString\n    boolean"


class _Undefined:
    """JavaScript's `undefined` in error reports (a key that is absent)."""


_UNDEFINED = _Undefined()


@dataclass(frozen=True)
class HostConfigPatch:
    """A validated PATCH body. None means "leave alone"; `proxy == {}` removes the proxy."""

    hostname: str | None = None
    proxy: Mapping[str, Any] | None = None  # without noProxy
    no_proxy: tuple[str, ...] | None = None
    force: bool = False


# ---------------------------------------------------------------------------- redsocks.conf


def render_redsocks(conf: Mapping[str, Any]) -> str:
    """redsocks.conf text for a proxy config; '' when there is no proxy field (only dns)."""
    fields = [(k, v) for k, v in conf.items() if k in PROXY_FIELDS]
    if not fields:
        return ""
    blocks = [
        _render_block("base", _BASE_BLOCK),
        _render_block("redsocks", [*fields, ("local_ip", "127.0.0.1"), ("local_port", 12345)]),
    ]
    dns = dns_address(conf.get("dns"))
    if dns is not None:
        blocks.append(_render_block("dnsu2t", [("remote_ip", dns[0]), ("remote_port", dns[1]),
                                               ("local_ip", "127.0.0.1"), ("local_port", 53)]))
    return "\n".join(blocks)


def _render_block(label: str, items: Any) -> str:
    lines = []
    for key, value in items:
        text = str(value)
        if key in AUTH_FIELDS:
            # Quote login/password unless the value already carries the quotes.
            text = ('' if text.startswith('"') else '"') + text \
                + ('' if text.endswith('"') else '"')
        lines.append(f"\t{key} = {text};")
    return f"{label} {{\n" + "\n".join(lines) + "\n}\n"


def dns_address(dns: object) -> tuple[str, int] | None:
    """`true` -> 8.8.8.8:53, "ip:port" -> that, anything else (false, absent) -> None."""
    if dns is True:
        dns = DEFAULT_DNS
    if isinstance(dns, str) and (m := _ADDRESS.fullmatch(dns)) and int(m.group(2)) <= 65535 \
            and is_host(m.group(1)):
        return m.group(1), int(m.group(2))
    return None


def is_dns_name(value: str) -> bool:
    """An RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens."""
    name = value[:-1] if value.endswith(".") else value
    return 0 < len(name) <= 253 and all(_DNS_LABEL.fullmatch(label)
                                        for label in name.split("."))


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_host(value: str) -> bool:
    """An IP address or a DNS name: what redsocks and no_proxy can use, and nothing that
    could end a line or a block of a config file."""
    return value.isascii() and (is_ip(value) or is_dns_name(value))


def is_no_proxy_entry(value: str) -> bool:
    """An IP address, a CIDR range, or a domain (a leading dot: its subdomains)."""
    if not value.isascii():
        return False
    if "/" in value:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return False
        return True
    return is_ip(value) or is_dns_name(value.removeprefix("."))


def parse_redsocks(text: str) -> dict[str, Any]:
    """The proxy in a redsocks.conf: {type, ip, port, login?, password?, dns?} or {}."""
    text = text.strip()
    if not text:
        return {}
    raw = _find_block(text, "redsocks")
    if raw is None:
        _LOGGER.warning("Invalid redsocks block in redsocks.conf")
        return {}
    conf, errors = _decode_proxy(_parse_block(raw))
    if conf is None:
        _LOGGER.warning("Invalid redsocks block in redsocks.conf:\n%s", "\n".join(errors))
        return {}
    dnsu2t = _find_block(text, "dnsu2t")
    if dnsu2t is not None:
        block = _parse_block(dnsu2t, skip=())
        dns = f"{block.get('remote_ip', '')}:{block.get('remote_port', '')}"
        if dns_address(dns) is not None:
            conf["dns"] = dns
    return conf


def _find_block(text: str, label: str) -> str | None:
    # Lazy up to the first "}" followed by whitespace/end: braces may occur inside values.
    m = re.search(label + r"\s?\{([\s\S]+?)\}(?=\s|$)", text)
    return m.group(1) if m else None


def _parse_block(raw: str, skip: tuple[str, ...] = _LOCAL_ONLY) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for line in re.split(r";?\n", raw):
        if not line.strip():
            continue
        key, sep, value = (s.strip() for s in line.partition("="))
        value = value.rstrip(";").strip()
        if key in skip:
            continue
        if key and sep and value:
            parsed[key] = value.replace('"', "") if key in AUTH_FIELDS else value
        else:
            shown = f'"{key}"' if key in AUTH_FIELDS else f'"{line.strip()}"'
            _LOGGER.warning('Ignoring malformed redsocks.conf line %s due to missing key, '
                            'value, or "="', shown)
    return parsed


def _numeric_id(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    return None


def _decode_proxy(raw: Mapping[str, Any], at: str = "") -> tuple[dict[str, Any] | None,
                                                                  list[str]]:
    """`ProxyConfig`: type, ip, port required; login, password optional; extras dropped."""
    errors = []
    def got(key: str) -> str:
        return _js(raw.get(key, _UNDEFINED))

    if raw.get("type") not in PROXY_TYPES:
        errors.append(f"{_TYPE_UNION}\nat {at}type but instead got: {got('type')}")
    if not isinstance(raw.get("ip"), str):
        errors.append(f"Expecting string at {at}ip but instead got: {got('ip')}")
    if _numeric_id(raw.get("port")) is None:
        errors.append(f"Expecting NumericIdentifier at {at}port but instead got: "
                      f"{got('port')} (must be be an positive integer)")
    for key in AUTH_FIELDS:
        if key in raw and not isinstance(raw[key], str):
            errors.append(f"Expecting string at {at}{key} but instead got: {_js(raw[key])}")
    if errors:
        return None, errors
    return {k: (_numeric_id(v) if k == "port" else v) for k, v in raw.items()
            if k in PROXY_FIELDS}, []


# ------------------------------------------------------------------------------ read (GET)


def proxy_dir(boot_dir: Path | str) -> Path:
    return Path(boot_dir) / PROXY_DIR


def read_no_proxy(boot_dir: Path | str) -> list[str]:
    try:
        text = (proxy_dir(boot_dir) / NO_PROXY).read_text()
    except FileNotFoundError:
        return []
    return [line for line in text.split("\n") if line != ""]


def read_proxy(boot_dir: Path | str) -> dict[str, Any] | None:
    """The proxy as GET shows it (with noProxy), or None without redsocks.conf."""
    try:
        text = (proxy_dir(boot_dir) / REDSOCKS_CONF).read_text()
    except FileNotFoundError:
        return None
    proxy = parse_redsocks(text)
    no_proxy = read_no_proxy(boot_dir)
    if no_proxy:
        proxy["noProxy"] = no_proxy
    return proxy


def read_hostname(hostname_file: Path | str) -> str:
    """Contents of the host's /etc/hostname (`/mnt/root/etc/hostname` in the container)."""
    return Path(hostname_file).read_text().strip()


def read_host_config(boot_dir: Path | str, hostname: str) -> dict[str, Any]:
    """The body of `GET /v1/device/host-config`."""
    network: dict[str, Any] = {"hostname": hostname}
    proxy = read_proxy(boot_dir)
    if proxy is not None:
        network["proxy"] = proxy
    return {"network": network}


# -------------------------------------------------------------------------- validate (PATCH)


def _js(value: object) -> str:
    """A value the way io-ts-reporters prints it (JSON.stringify, `undefined` for absent)."""
    if isinstance(value, _Undefined):
        return "undefined"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_dns_input(value: object) -> bool:
    return isinstance(value, bool) or dns_address(value) is not None


def _truthy(value: object) -> bool:
    return check_truthy(value)  # upstream's checkTruthy, one implementation


def _lenient_errors(network: object) -> list[str]:
    """`LegacyHostConfiguration`: proxy any record (dns still typed), hostname a string."""
    if not isinstance(network, dict):
        return [f"Expecting {_NETWORK_TYPE} at network but instead got: {_js(network)}"]
    errors = []
    if "proxy" in network:
        proxy = network["proxy"]
        if not isinstance(proxy, dict):
            errors += [f"Expecting {{ [K in string]: any }} at network.proxy.0 but instead got: "
                       f"{_js(proxy)}",
                       f"Expecting Partial<{{ dns: (AddressString | boolean) }}> at "
                       f"network.proxy.1 but instead got: {_js(proxy)}"]
        elif "dns" in proxy and not _is_dns_input(proxy["dns"]):
            errors.append(f"{_DNS_UNION}\nat network.proxy.1.dns but instead got: "
                          f"{_js(proxy['dns'])}")
    if "hostname" in network and not isinstance(network["hostname"], str):
        errors.append(f"Expecting string at network.hostname but instead got: "
                      f"{_js(network['hostname'])}")
    return errors


def _strict_errors(network: dict[str, Any]) -> list[str]:
    """`HostConfiguration`: the proxy must be a complete, well-typed ProxyConfig."""
    errors = _lenient_errors(network)
    proxy = network.get("proxy")
    if isinstance(proxy, dict):
        errors += _decode_proxy(proxy, at="network.proxy.0.0.")[1]
        no_proxy = proxy.get("noProxy", _UNDEFINED)
        if not isinstance(no_proxy, _Undefined) and not (
                isinstance(no_proxy, list) and all(isinstance(a, str) for a in no_proxy)):
            errors.append(f"Expecting Array<string> at network.proxy.1.noProxy but instead "
                          f"got: {_js(no_proxy)}")
    return errors


def _field_errors(network: dict[str, Any]) -> list[str]:
    """What upstream does not check: values that would not stay inside their line."""
    errors = []
    hostname = network.get("hostname")
    if isinstance(hostname, str) and hostname and not (hostname.isascii()
                                                       and is_dns_name(hostname)):
        errors.append(f"Expecting an RFC 1123 host name at network.hostname but instead "
                      f"got: {_js(hostname)}")
    proxy = network.get("proxy")
    if not isinstance(proxy, dict):
        return errors
    at = "network.proxy."
    if "type" in proxy and proxy["type"] not in PROXY_TYPES:
        errors.append(f"{_TYPE_UNION}\nat {at}type but instead got: {_js(proxy['type'])}")
    if "ip" in proxy and not (isinstance(proxy["ip"], str) and is_host(proxy["ip"])):
        errors.append(f"Expecting an IP address or a DNS name at {at}ip but instead got: "
                      f"{_js(proxy['ip'])}")
    if "port" in proxy and not 0 < (_numeric_id(proxy["port"]) or 0) <= 65535:
        errors.append(f"Expecting a port number (1-65535) at {at}port but instead got: "
                      f"{_js(proxy['port'])}")
    for key in AUTH_FIELDS:
        if key in proxy and (problem := _auth_problem(proxy[key])):
            # the value itself is not echoed: it may be a password
            errors.append(f"Expecting a string of at most {MAX_AUTH_LENGTH} printable "
                          f"characters without \" \\ {{ }} ; at {at}{key} but instead got: "
                          f"{problem}")
    no_proxy = proxy.get("noProxy")
    if isinstance(no_proxy, list):
        for i, entry in enumerate(no_proxy):
            if not (isinstance(entry, str) and is_no_proxy_entry(entry)):
                errors.append(f"Expecting an IP address, a CIDR range or a domain at "
                              f"{at}noProxy.{i} but instead got: {_js(entry)}")
    elif no_proxy:
        errors.append(f"Expecting Array<string> at {at}noProxy but instead got: "
                      f"{_js(no_proxy)}")
    return errors


def _auth_problem(value: object) -> str | None:
    """Why a login/password cannot go into redsocks.conf (None: it can)."""
    if not isinstance(value, str):
        return _js_type(value)
    if len(value) > MAX_AUTH_LENGTH:
        return f"{len(value)} characters"
    if not value.isprintable() or any(c in _CONF_SPECIAL for c in value):
        return "a string with a control or special character"
    return None


def _js_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list) else "an object"


def validate_patch(body: object) -> HostConfigPatch:
    """Check a PATCH body; BadRequest carries upstream's 400 text naming the bad field."""
    network = body.get("network", _UNDEFINED) if isinstance(body, dict) else _UNDEFINED
    if isinstance(network, _Undefined) or network in (None, False, 0, ""):  # JS-falsy
        _LOGGER.warning("Key 'network' must exist in PATCH body")
    if isinstance(network, dict) and (strict := _strict_errors(network)):
        # Upstream accepts partly-typed bodies for compatibility, with a warning.
        _LOGGER.warning("Malformed host config detected, things may not behave as "
                        "expected:\n%s", "\n".join(strict))
    errors = _lenient_errors(network)
    if not errors and isinstance(network, dict):
        # Upstream writes these values into root-owned host files as they come: a newline
        # or a brace in one of them adds lines (or whole blocks) to redsocks.conf, no_proxy
        # or the hostname. Every field present must be what its type means.
        errors = _field_errors(network)
    if errors or not isinstance(network, dict):
        raise BadRequest("Could not parse host config input to a valid format:\n"
                         + "\n".join(errors))

    proxy: dict[str, Any] | None = None
    no_proxy: tuple[str, ...] | None = None
    if isinstance(network.get("proxy"), dict):
        # Unsupported keys stay: they make the patch non-empty (so it is a merge, not a
        # removal) and are dropped when the merged proxy is written.
        proxy = {k: v for k, v in network["proxy"].items() if k != "noProxy"}
        raw_no_proxy = network["proxy"].get("noProxy")
        if raw_no_proxy is not None:
            # A non-list noProxy clears the file, as upstream's unlink did.
            no_proxy = tuple(str(a) for a in raw_no_proxy) \
                if isinstance(raw_no_proxy, list) else ()
    force = _truthy(body.get("force")) if isinstance(body, dict) else False
    return HostConfigPatch(hostname=network.get("hostname"), proxy=proxy, no_proxy=no_proxy,
                           force=force)


# ----------------------------------------------------------------------------- apply (PATCH)


def secret_host_files(boot_dir: Path | str) -> list[Path]:
    """Host files holding a secret (the proxy password): 0600."""
    return [proxy_dir(boot_dir) / REDSOCKS_CONF]


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` durably; the file has `mode` before it takes the name (0600 for secrets)."""
    replace_file(path, text.encode(), mode=mode)


def _set_no_proxy(boot_dir: Path | str, entries: tuple[str, ...]) -> bool:
    """Rewrite (or delete, when empty) the no_proxy file; True if the set of entries changed."""
    current = read_no_proxy(boot_dir)
    path = proxy_dir(boot_dir) / NO_PROXY
    if entries:
        write_atomic(path, "\n".join(entries))
    else:
        path.unlink(missing_ok=True)
    return len(current) != len(entries) or not all(a in entries for a in current)


def merge_proxy(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Field-by-field merge; an empty patch means "no proxy"."""
    return {**current, **patch} if patch else {}


def apply_patch(boot_dir: Path | str, patch: HostConfigPatch, current_uuid: str,
                write_hostname: Callable[[str], None]) -> list[str]:
    """Apply a validated patch; returns the host units to restart (maybe none)."""
    if patch.hostname is not None:
        # An empty hostname resets to the default; config.json's change makes the OS apply it.
        write_hostname(patch.hostname or current_uuid[:7])
    if patch.proxy is None:
        return []

    folder = proxy_dir(boot_dir)
    folder.mkdir(parents=True, exist_ok=True)
    current = read_proxy(boot_dir) or {}
    current.pop("noProxy", None)
    target = merge_proxy(current, patch.proxy)

    no_proxy_changed = False
    if patch.no_proxy is not None:
        no_proxy_changed = _set_no_proxy(boot_dir, patch.no_proxy)

    conf_path = folder / REDSOCKS_CONF
    if any(k in PROXY_FIELDS for k in target):
        decoded, errors = _decode_proxy(target)
        if decoded is None:
            _LOGGER.warning("Not changing the proxy, the merged config is invalid:\n%s",
                            "\n".join(errors))
        else:
            if dns_address(target.get("dns")) is not None:
                decoded["dns"] = target["dns"]
            write_atomic(conf_path, render_redsocks(decoded), 0o600)  # holds the password
    elif not no_proxy_changed:
        # No proxy (or only dns, which needs a proxy): remove, unless this patch was only
        # about noProxy, where upstream keeps redsocks.conf as it was.
        conf_path.unlink(missing_ok=True)
    return list(PROXY_SERVICES)
