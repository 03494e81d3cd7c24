"""psutil probes against the real machine (sanity ranges, /proc cross-checks); breadcrumbs."""

from __future__ import annotations

import ipaddress
import os
import re
import time
from pathlib import Path

import pytest

from supervisor import system
from supervisor.host.breadcrumb import RebootBreadcrumb, host_os_update_in_progress

MAC = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")


def _meminfo_mb() -> tuple[int, int]:
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) * 1024
    used = (fields["MemTotal"] - fields["MemFree"] - fields["Buffers"] - fields["Cached"]
            - fields.get("SReclaimable", 0))
    return used // system.MB, fields["MemTotal"] // system.MB


def test_probe_sane_values(tmp_path: Path) -> None:
    system.cpu_usage()  # prime: psutil measures since the previous call
    sum(i * i for i in range(200_000))
    info = system.probe(tmp_path)
    assert 0 <= info.cpu_usage <= 100
    assert 0 < info.memory_usage < info.memory_total
    used_mb, total_mb = _meminfo_mb()
    assert info.memory_total == total_mb
    assert abs(info.memory_usage - used_mb) < 64  # moving target, same formula
    assert info.storage_total is not None and info.storage_total > 0
    assert info.storage_usage is not None and info.storage_usage > 0
    assert info.storage_block_device
    assert info.cpu_temp is None or -40 <= info.cpu_temp <= 150
    assert info.cpu_id is None or info.cpu_id == info.cpu_id.lower()
    now = time.time()
    assert info.boot_time < now
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert info.uptime == pytest.approx(uptime, abs=5)


def test_storage_matches_statvfs_of_the_data_partition(tmp_path: Path) -> None:
    used, total, device = system.storage_info(tmp_path)
    st = os.statvfs(tmp_path)
    assert total == st.f_blocks * st.f_frsize // system.MB
    assert used is not None and used >= (st.f_blocks - st.f_bfree) * st.f_frsize // system.MB - 64
    assert device is not None


def test_metrics_has_exactly_the_report_fields(tmp_path: Path) -> None:
    metrics = system.probe(tmp_path).metrics()
    assert set(metrics) == {"cpu_usage", "memory_usage", "memory_total", "storage_usage",
                            "storage_total", "storage_block_device", "cpu_temp", "cpu_id"}


def test_probe_never_sleeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a sampling interval (psutil.cpu_percent(interval=...)) sleeps; the probe must not
    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"the probe slept {seconds} s")

    monkeypatch.setattr(time, "sleep", no_sleep)
    system.probe(tmp_path)


def test_rss_of_this_process() -> None:
    rss = system.rss_bytes()
    assert 5 * 1024 * 1024 < rss < 4 * 1024 ** 3
    assert system.rss_bytes(os.getpid()) > 0


def test_boot_time_agrees_with_proc_stat() -> None:
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime "))
    assert system.boot_time() == pytest.approx(btime, abs=2)


@pytest.mark.parametrize(("name", "reported"), [
    ("eth0", True), ("wlan0", True), ("wlo1", True), ("enp3s0", True),
    ("lo", False), ("docker0", False), ("balena0", False), ("rce0", False), ("tun0", False),
    ("resin-vpn", False), ("resin-dns", False), ("supervisor0", False),
    ("balena-redsocks", False), ("resin-redsocks", False), ("br-0123456789ab", False),
    ("br-lan", True), ("docker", True),
])
def test_reported_interface(name: str, reported: bool) -> None:
    assert system.reported_interface(name) is reported


def test_ip_addresses_are_reportable() -> None:
    addresses = system.ip_addresses()
    assert len(addresses) == len(set(addresses))
    for text in addresses:
        ip = ipaddress.ip_address(text)
        assert not ip.is_loopback
        assert not (ip.version == 6 and ip.is_link_local)
    # this machine has a non-loopback IPv4 address on some reported interface
    assert any(ipaddress.ip_address(a).version == 4 for a in addresses)


def _iface(root: Path, name: str, mac: str, kind: str = "1", master: bool = False) -> None:
    d = root / name
    d.mkdir()
    (d / "address").write_text(mac + "\n")
    (d / "type").write_text(kind + "\n")
    if master:
        (d / "master").write_text("")


def test_mac_addresses_filters_like_upstream(tmp_path: Path) -> None:
    _iface(tmp_path, "eth0", "b8:27:eb:3f:7e:07")
    _iface(tmp_path, "wlan0", "0a:c7:dc:e0:f0:52")
    _iface(tmp_path, "eth1", "b8:27:eb:3f:7e:07")  # duplicate MAC reported once
    _iface(tmp_path, "lo", "00:00:00:00:00:00", kind="772")
    _iface(tmp_path, "docker0", "02:42:ac:11:00:01")
    _iface(tmp_path, "veth1", "02:42:ac:11:00:02", master=True)
    _iface(tmp_path, "can0", "00:00:00:00:00:01", kind="280")
    (tmp_path / "bonding_masters").write_text("")
    assert system.mac_addresses(tmp_path) == ["B8:27:EB:3F:7E:07", "0A:C7:DC:E0:F0:52"]


def test_mac_addresses_of_this_machine() -> None:
    macs = system.mac_addresses()
    assert all(MAC.match(m) for m in macs)
    eth0 = Path("/sys/class/net/eth0/address")
    if eth0.exists() and not Path("/sys/class/net/eth0/master").exists():
        assert eth0.read_text().strip().upper() in macs


def test_mac_addresses_missing_sysfs(tmp_path: Path) -> None:
    assert system.mac_addresses(tmp_path / "none") == []


def test_cpu_id_from_the_first_serial_file(tmp_path: Path) -> None:
    """state.md §6.2: device-tree serial, else product-sn, soc0, DMI; NULs cut, lowercase."""
    files = [tmp_path / n for n in ("serial-number", "product-sn", "soc0", "board_serial")]
    paths = [str(f) for f in files]
    assert system.cpu_id(paths) is None  # none exists
    files[3].write_text("DMI-SERIAL-9\n")
    assert system.cpu_id(paths) == "dmi-serial-9"
    files[0].write_bytes(b"")  # empty: skipped
    files[1].write_bytes(b"10000000ABCDEF\0")  # device-tree strings end in NUL
    assert system.cpu_id(paths) == "10000000abcdef"
    files[0].write_bytes(b"00000000c0ffee12\0")
    assert system.cpu_id(paths) == "00000000c0ffee12"


@pytest.mark.parametrize(("kernel_log", "expected"), [
    ("[ 5.1] hwmon hwmon1: Undervoltage detected!\n", True),
    ("[ 3.0] Under-voltage detected! (0x00050005)\n", True),
    ("[ 1.0] usb 1-1: new high-speed USB device\n", False),
])
def test_undervoltage_reads_dmesg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  kernel_log: str, expected: bool) -> None:
    (tmp_path / "log").write_text(kernel_log)
    fake = tmp_path / "dmesg"
    fake.write_text(f"#!/bin/sh\nexec cat {tmp_path / 'log'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert system.undervoltage_detected() is expected


def test_undervoltage_without_dmesg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert system.undervoltage_detected() is False


# ------------------------------------------------------ reboot breadcrumb vs. boot time


def test_breadcrumb_set_after_boot_requires_reboot(tmp_path: Path) -> None:
    crumb = RebootBreadcrumb(tmp_path / "state")  # the state dir may not exist yet
    assert not crumb.is_required(system.boot_time())
    crumb.set()
    assert crumb.path == tmp_path / "state" / "reboot-after-apply"
    assert crumb.is_required(system.boot_time())


def test_breadcrumb_from_before_the_boot_is_stale(tmp_path: Path) -> None:
    crumb = RebootBreadcrumb(tmp_path)
    crumb.set()
    before_boot = system.boot_time() - 60
    os.utime(crumb.path, (before_boot, before_boot))
    assert not crumb.is_required(system.boot_time())
    crumb.set()  # setting again refreshes the mtime, like touch
    assert crumb.is_required(system.boot_time())
    assert not crumb.is_required(time.time() + 60)  # as seen after a later reboot


def test_a_dry_run_reboot_satisfies_the_breadcrumb_and_a_new_one_counts(tmp_path: Path) -> None:
    crumb = RebootBreadcrumb(tmp_path)
    crumb.set()
    boot = time.time()  # the reboot comes right after: same coarse-clock tick, same second
    crumb.rebooted(boot)
    assert not crumb.is_required(boot)
    assert not crumb.path.exists() and list(tmp_path.iterdir()) == []  # no probe left
    # a requirement made at once after the boot is newer than it, whatever the tick: the
    # reboot returns only once the file clock has passed the boot time (here a boot time a
    # little ahead stands in for a coarse file clock lagging behind time.time())
    crumb.set()
    assert crumb.is_required(boot)
    ahead = time.time() + 0.05
    crumb.rebooted(ahead)
    crumb.set()
    assert crumb.is_required(ahead)


def test_breadcrumb_clear(tmp_path: Path) -> None:
    crumb = RebootBreadcrumb(tmp_path)
    crumb.set()
    crumb.clear()
    assert not crumb.path.exists()
    assert not crumb.is_required(0)
    crumb.clear()  # idempotent


@pytest.mark.parametrize("name", ["rollback-health-breadcrumb", "rollback-altboot-breadcrumb"])
def test_host_os_update_breadcrumbs(tmp_path: Path, name: str) -> None:
    assert not host_os_update_in_progress(tmp_path)
    (tmp_path / name).write_text("")
    assert host_os_update_in_progress(tmp_path)
