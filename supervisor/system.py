"""Host probes for the state report and `/v1/device`: the ONLY module that imports psutil.

The cloud reporter calls `probe()` (hardware metrics, state.md §6.2) and `ip_addresses()` /
`mac_addresses()` (state.md §6.5) every few seconds; the reconciler asks `boot_time()` to
judge the reboot breadcrumb. Every call here is blocking but short and never sleeps
(`cpu_percent(interval=None)` measures since the previous call): run them in a thread.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024
_EXCLUDED_IFACE = re.compile(
    r"^(?:(?:balena|docker|rce|tun)[0-9]+|resin-vpn|lo|resin-dns|supervisor0|balena-redsocks"
    r"|resin-redsocks|br-[0-9a-f]{12})$")
_SERIAL_FILES = ("/proc/device-tree/serial-number", "/proc/device-tree/product-sn",
                 "/sys/devices/soc0/serial_number")
_DMI_SERIAL = "/sys/class/dmi/id/board_serial"  # what `dmidecode -t baseboard` reads
# Preferred sensor groups for "the CPU temperature", most specific first.
_CPU_SENSORS = ("cpu_thermal", "cpu-thermal", "soc_thermal", "coretemp", "k10temp", "zenpower",
                "cpu0_thermal", "acpitz")
_UNDERVOLTAGE = re.compile(r"under.*voltage", re.IGNORECASE)


@dataclass(frozen=True)
class SystemInfo:
    cpu_usage: int  # %, mean of the per-core loads
    memory_usage: int  # MB: used - cached - buffers (cached includes reclaimable slab)
    memory_total: int  # MB
    storage_usage: int | None  # MB used on the data partition's block device
    storage_total: int | None  # MB of the data partition
    storage_block_device: str | None
    cpu_temp: int | None  # °C, None without a sensor
    cpu_id: str | None
    uptime: float  # seconds
    boot_time: float  # epoch seconds

    def metrics(self) -> dict[str, Any]:
        """The state-report metric fields (state.md §6.2)."""
        data = asdict(self)
        del data["uptime"], data["boot_time"]
        return data


def probe(data_dir: Path | str = "/data") -> SystemInfo:
    booted = boot_time()
    storage_used, storage_total, device = storage_info(data_dir)
    return SystemInfo(
        cpu_usage=cpu_usage(),
        memory_usage=memory_usage(),
        memory_total=psutil.virtual_memory().total // MB,
        storage_usage=storage_used,
        storage_total=storage_total,
        storage_block_device=device,
        cpu_temp=cpu_temp(),
        cpu_id=cpu_id(),
        uptime=max(0.0, time.time() - booted),
        boot_time=booted,
    )


def boot_time() -> float:
    return float(psutil.boot_time())


def cpu_usage() -> int:
    # interval=None: load since the previous call (the first call ever reports 0).
    loads = psutil.cpu_percent(interval=None, percpu=True)
    return round(sum(loads) / len(loads)) if loads else 0


def memory_usage() -> int:
    mem = psutil.virtual_memory()
    # psutil's `used` is total - available; upstream's is total - free - buffers - cached.
    used = mem.total - mem.free - getattr(mem, "buffers", 0) - getattr(mem, "cached", 0)
    return max(0, used) // MB


def _mount_of(path: Path) -> Any:
    """The mounted partition holding `path` (longest mountpoint prefix)."""
    target = str(path.resolve())
    best = None
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") or "/"
        inside = target == mount or target.startswith(mount if mount == "/" else mount + "/")
        if inside and (best is None or len(mount) > len(best.mountpoint.rstrip("/") or "/")):
            best = part
    return best


def _disk_of(device: str) -> str | None:
    """`/dev/mmcblk0p6` -> `mmcblk0` (the whole disk), via sysfs; None if unknown."""
    name = os.path.basename(os.path.realpath(device))
    sys_path = Path("/sys/class/block") / name
    if (sys_path / "partition").exists():
        return Path(os.path.realpath(sys_path)).parent.name
    return name if sys_path.exists() else None


def storage_info(data_dir: Path | str) -> tuple[int | None, int | None, str | None]:
    """(used MB on the data partition and its sibling partitions, data partition MB, device)."""
    part = _mount_of(Path(data_dir))
    if part is None:
        return None, None, None
    try:
        total = psutil.disk_usage(part.mountpoint).total
    except OSError:
        return None, None, part.device or None
    disk = _disk_of(part.device) if part.device.startswith("/dev/") else None
    used = 0
    seen: set[str] = set()
    for other in psutil.disk_partitions(all=False):
        same = other.device == part.device or (
            disk is not None and other.device.startswith("/dev/")
            and _disk_of(other.device) == disk)
        if not same or other.device in seen:
            continue
        seen.add(other.device)  # a partition may be mounted twice (bind mounts)
        try:
            used += psutil.disk_usage(other.mountpoint).used
        except OSError:
            continue
    if part.device not in seen:  # e.g. overlay/tmpfs data dirs, absent from all=False
        used += psutil.disk_usage(part.mountpoint).used
    return used // MB, total // MB, part.device or None


def cpu_temp() -> int | None:
    sensors_temperatures = getattr(psutil, "sensors_temperatures", None)
    if sensors_temperatures is None:
        return None
    try:
        groups = sensors_temperatures()
    except OSError:
        return None
    for name in (*_CPU_SENSORS, *groups):
        readings = groups.get(name)
        if readings:
            return round(readings[0].current)
    return None


def cpu_id(files: Sequence[str] = (*_SERIAL_FILES, _DMI_SERIAL)) -> str | None:
    """Device-tree serial number on ARM boards, else the DMI baseboard serial; lowercase.
    The first non-empty file of `files` wins."""
    for path in files:
        try:
            value = Path(path).read_bytes().replace(b"\0", b"").decode(errors="replace").strip()
        except OSError:
            continue
        if value:
            return value.lower()
    return None


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default)."""
    return int(psutil.Process(pid).memory_info().rss)


def undervoltage_detected() -> bool:
    """`dmesg` mentions under-voltage (reported as `is_undervolted`)."""
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(_UNDERVOLTAGE.search(out))


def reported_interface(name: str) -> bool:
    """False for bridges, tunnels and other interfaces the cloud must not see."""
    return not _EXCLUDED_IFACE.match(name)


def ip_addresses() -> list[str]:
    """Non-loopback IPv4 and global-scope IPv6 addresses of the reported interfaces."""
    found: list[str] = []
    for iface, addrs in sorted(psutil.net_if_addrs().items()):
        if not reported_interface(iface):
            continue
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(addr.address.split("%", 1)[0])
            except ValueError:
                continue
            # Link-local IPv6 is the only kind with a non-zero scope id: upstream skips it.
            if ip.is_loopback or (ip.version == 6 and ip.is_link_local):
                continue
            if str(ip) not in found:
                found.append(str(ip))
    return found


def mac_addresses(sys_class_net: Path | str = "/sys/class/net") -> list[str]:
    """Uppercase MACs of physical (type 1), non-enslaved, reported interfaces."""
    root = Path(sys_class_net)
    found: list[str] = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return found
    for name in names:
        iface = root / name
        try:
            if not reported_interface(name) or not iface.is_dir() \
                    or (iface / "type").read_text().strip() != "1" \
                    or (iface / "master").exists():
                continue
            mac = (iface / "address").read_text().split("\n")[0].strip().upper()
        except OSError:
            continue
        if mac and mac not in found:
            found.append(mac)
    return found
