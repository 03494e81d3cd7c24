"""The device image in QEMU: what only a real device shows (issue 18's "done when").

The tests run in this order on one VM, each leaving it converged:
boot (BIOS) with the preloaded app -> /v1/device -> identify LED -> a pushed env change -> a
reboot through logind -> a requires-reboot service -> a power cut in the middle of an update
-> a crashed supervisor restarted by systemd -> a hung one restarted by the watchdog -> power
off and a cold boot through UEFI firmware.
Every wait is for a condition, with limits sized for TCG on a loaded 2-core machine.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.image.conftest import REPO, Device, wait_for

pytestmark = pytest.mark.timeout(2400)

DATA_DIR = "/mnt/data/resin-data/balena-supervisor"
LED = "/sys/class/leds/input0::scrolllock/brightness"  # board-configs/qemux86-64.toml
DEMO_IMAGE = "127.0.0.1:5000/balena-py/demo:latest"  # preloaded, never pulled: no network

# The preloaded app of image/preload/apps.json, as balena-cli pushes it (v2 local format).
PRELOADED: dict[str, Any] = {"local": {"config": {}, "apps": {"1": {
    "name": "demo", "commit": "5e1ec7ed0000000000000000000000a1", "releaseId": 1,
    "services": {
        "1": {"serviceName": "web", "imageId": 1, "image": DEMO_IMAGE,
              "environment": {"PORT": "8080"},
              "labels": {"io.balena.features.supervisor-api": "1"},
              "running": True, "ports": ["8080:8080"]},
        "2": {"serviceName": "worker", "imageId": 2, "image": DEMO_IMAGE,
              "environment": {}, "labels": {}, "running": True,
              "command": ["sh", "-c", "while true; do echo tick; sleep 5; done"],
              "depends_on": ["web"], "network_mode": "host"},
    },
    "volumes": {}, "networks": {},
}}}}


def target(**extra_services: dict[str, Any]) -> dict[str, Any]:
    """The preloaded app with the web service's FOO=bar and `extra_services` added."""
    body = copy.deepcopy(PRELOADED)
    services = body["local"]["apps"]["1"]["services"]
    services["1"]["environment"]["FOO"] = "bar"
    for number, (name, service) in enumerate(extra_services.items(), start=3):
        services[str(number)] = {"serviceName": name, "imageId": number, "image": DEMO_IMAGE,
                                 "environment": {}, "labels": {}, "running": True, **service}
    return body


def push(device: Device, body: dict[str, Any]) -> None:
    response = device.api.post("/v2/local/target-state", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success", "message": "OK"}


def test_boots_and_runs_the_preloaded_app_with_no_network(device: Device) -> None:
    services = device.wait_converged({"web", "worker"})
    status = device.status()
    # present from the image: nothing was (or could be) downloaded
    assert {i["status"] for i in status["images"]} == {"Downloaded"}
    assert all(i["name"] == DEMO_IMAGE for i in status["images"])
    assert services["web"]["status"] == "Running"
    # the preload is used once, as upstream does (state.md §9)
    assert json.loads(device.sh("cat /mnt/data/apps.json")) == {}
    assert json.loads(device.sh("cat /mnt/data/apps.json.preloaded"))["apps"]["1"]["name"] == "demo"
    # the supervisor runs as the systemd unit, with the image's layout
    assert device.sh("systemctl is-active balena-supervisor docker").split() == ["active"] * 2
    mounts = device.sh("for m in /mnt/boot /mnt/state /mnt/data; do"
                       " findmnt -n -o TARGET,FSTYPE,LABEL -M $m; done")
    assert mounts.split() == ["/mnt/boot", "vfat", "resin-boot", "/mnt/state", "ext4",
                              "resin-state", "/mnt/data", "ext4", "resin-data"]
    assert device.sh("docker info -f '{{.DockerRootDir}}'").strip() == "/mnt/data/docker"
    # the disk is 1 GiB larger than the image (vm.py): resin-data grew into it at first boot
    data_mib = int(device.sh("df -BM --output=size /mnt/data | tail -n 1").strip().rstrip("M"))
    assert data_mib > 2048 + 512
    # this boot went through the BIOS and GRUB's boot.img/core.img (UEFI: the last test)
    assert device.shell.run("test -d /sys/firmware/efi", timeout=60)[0] != 0
    # restrict=on: not even the build host's registry (10.0.2.2 is the host in QEMU's
    # user-mode network) can be reached
    code, _ = device.shell.run("timeout 20 bash -c 'echo > /dev/tcp/10.0.2.2/5000'", timeout=60)
    assert code != 0


def test_device_reports_the_images_os_and_the_supervisor_version(device: Device) -> None:
    response = device.api.get("/v1/device")
    assert response.status_code == 200
    body = response.json()
    # the PRETTY_NAME that image/build.sh wrote into this image's os-release
    os_release = (REPO / "build" / "image" / "qemux86-64.os-release").read_text()
    pretty = next(line.split("=", 1)[1].strip('"') for line in os_release.splitlines()
                  if line.startswith("PRETTY_NAME="))
    assert pretty.startswith("balena-py OS ")
    assert body["os_version"] == pretty
    assert body["supervisor_version"] == "19.0.5"
    assert body["api_port"] == 48484
    assert body["ip_address"].split()[0] == "10.0.2.15"


def test_blink_flashes_the_boards_led_inside_the_vm(device: Device) -> None:
    assert device.sh(f"cat {LED}").strip() == "0"
    response = device.api.post("/v1/blink")
    assert (response.status_code, response.text) == (200, "OK")
    sample = f"for i in $(seq 20); do cat {LED}; sleep 0.1; done"
    # 200 ms on, 200 ms off for 15 s: 2 s of samples see both
    seen = wait_for("the LED on during identify",
                    lambda: (s := set(device.sh(sample).split())) >= {"0", "1"} and s, 60)
    assert seen == {"0", "1"}
    # and it is left off: 2 s of samples that all read 0 (the pattern ended)
    wait_for("the LED left off", lambda: set(device.sh(sample).split()) == {"0"}, 120)


def test_pushed_env_change_recreates_the_service(device: Device) -> None:
    before = device.wait_converged({"web", "worker"})
    push(device, target())
    after = device.wait_converged(
        {"web", "worker"},
        check=lambda s: s["web"]["containerId"] != before["web"]["containerId"])
    assert device.container_env(after["web"]["containerId"])["FOO"] == "bar"
    # only the changed service is recreated
    assert after["worker"]["containerId"] == before["worker"]["containerId"]
    assert device.supervised_containers() == ["web", "worker"]


def test_reboot_through_logind_keeps_target_keys_and_journal(device: Device) -> None:
    services = device.wait_converged({"web", "worker"})
    target_before = device.api.get("/v2/local/target-state").json()
    key_before = device.container_env(services["web"]["containerId"])["BALENA_SUPERVISOR_API_KEY"]
    cli = f"/opt/balena-supervisor/bin/balena-supervisor api-key --data-dir {DATA_DIR}"
    global_key_before = device.sh(cli).strip()
    old_boot = device.boot_id()

    response = device.api.post("/v1/reboot")
    assert response.status_code == 202
    assert response.json() == {"Data": "OK", "Error": None}

    device.wait_rebooted(old_boot)
    services = device.wait_converged({"web", "worker"})
    # logind did it: the previous boot ended with its reboot
    assert "System is rebooting" in device.sh("journalctl -b -1 -u systemd-logind -o cat")
    assert device.api.get("/v2/local/target-state").json() == target_before
    assert device.container_env(services["web"]["containerId"])["FOO"] == "bar"
    assert (device.container_env(services["web"]["containerId"])["BALENA_SUPERVISOR_API_KEY"]
            == key_before)
    assert device.sh(cli).strip() == global_key_before
    # the journal kept the boot before (POST /v2/journal-logs reads it through journalctl)
    response = device.api.post("/v2/journal-logs", json={
        "all": True, "format": "json", "unit": "balena-supervisor.service"})
    assert response.status_code == 200
    boots = {json.loads(line)["_BOOT_ID"] for line in response.text.splitlines() if line}
    assert old_boot in boots


def test_requires_reboot_service_reboots_once_then_starts(device: Device) -> None:
    device.wait_converged({"web", "worker"})
    old_boot = device.boot_id()
    push(device, target(once={
        "labels": {"io.balena.update.requires-reboot": "1"},
        "command": ["sh", "-c", "while true; do sleep 5; done"]}))

    device.wait_rebooted(old_boot)
    device.wait_converged({"web", "worker", "once"})
    # exactly one reboot: the boot before this one is the one the target was pushed in
    boots = device.boot_ids()
    assert boots[-2:] == [old_boot, device.boot_id()]


def test_power_cut_in_the_middle_of_an_update_converges_after_boot(device: Device) -> None:
    # a service that ignores SIGTERM: replacing it takes its 60 s stop grace period
    slow = {"command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
            "stop_grace_period": "60s", "environment": {"GENERATION": "1"}}
    push(device, target(slow=slow))
    device.wait_converged({"web", "worker", "slow"})
    old_boot = device.boot_id()

    push(device, target(slow={**slow, "environment": {"GENERATION": "2"}}))
    wait_for("the old slow container stopping",
             lambda: device.services()["slow"]["status"] == "Stopping", 300, interval=1.0)
    qmp = device.vm.qmp()
    try:
        qmp.execute("system_reset")  # the power cut
    finally:
        qmp.close()

    device.wait_rebooted(old_boot)
    services = device.wait_converged(
        {"web", "worker", "slow"},
        check=lambda s: device.container_env(s["slow"]["containerId"])["GENERATION"] == "2")
    assert device.supervised_containers() == ["slow", "web", "worker"]
    assert services["slow"]["status"] == "Running"


def _supervisor_pid(device: Device) -> int:
    """The supervisor's python process: healthdog's child, in the unit's cgroup."""
    main = device.sh("systemctl show -p MainPID --value balena-supervisor").strip()
    return int(device.sh(f"pgrep -P {main} -f 'balena-supervisor run'").split()[0])


def _restarts(device: Device) -> int:
    return int(device.sh("systemctl show -p NRestarts --value balena-supervisor").strip())


def test_systemd_restarts_a_crashed_supervisor(device: Device) -> None:
    before = device.wait_converged({"web", "worker", "slow"})
    restarts, pid = _restarts(device), _supervisor_pid(device)
    device.sh(f"kill -KILL {pid}")
    # healthdog exits with the child's status, Restart=always starts the unit again
    wait_for("the unit restarted", lambda: _restarts(device) > restarts, 300)
    wait_for("/ping from the new supervisor", lambda: bool(device.vm.ping()), 300)
    after = device.wait_converged({"web", "worker", "slow"})
    assert _supervisor_pid(device) != pid
    # the apps were not touched by the supervisor's crash
    assert {n: s["containerId"] for n, s in after.items()} == {
        n: s["containerId"] for n, s in before.items()}


def test_watchdog_restarts_a_hung_supervisor(device: Device) -> None:
    device.wait_converged({"web", "worker", "slow"})
    # The unit's WatchdogSec (180 s) shortened by a runtime drop-in, so the test waits 20 s
    # for the timeout instead of 3 minutes; healthdog and the unit are the image's own.
    dropin = "/run/systemd/system/balena-supervisor.service.d"
    device.sh(f"mkdir -p {dropin} && printf '[Service]\\nWatchdogSec=20\\n' > {dropin}/test.conf"
              " && systemctl daemon-reload && systemctl restart balena-supervisor")
    try:
        wait_for("/ping after the restart", lambda: bool(device.vm.ping()), 300)
        restarts, pid = _restarts(device), _supervisor_pid(device)
        device.sh(f"kill -STOP {pid}")  # hung: /v1/healthy no longer answers
        wait_for("the watchdog restarting the unit", lambda: _restarts(device) > restarts, 300)
        assert "Watchdog timeout" in device.sh(
            "journalctl -b -u balena-supervisor -o cat --no-pager | tail -n 50")
        wait_for("/ping from the new supervisor", lambda: bool(device.vm.ping()), 300)
        assert _supervisor_pid(device) != pid
    finally:
        device.sh(f"rm -rf {dropin} && systemctl daemon-reload")
    device.wait_converged({"web", "worker", "slow"})


def test_powers_off_and_cold_boots_through_uefi(device: Device) -> None:
    device.wait_converged({"web", "worker", "slow"})
    device.vm.power_off()  # the power button: ACPI, logind, a clean shutdown
    device.shell.close()
    device.vm.start(firmware="uefi")  # the same disk, Debian's OVMF: EFI/BOOT/BOOTX64.EFI
    device.wait_converged({"web", "worker", "slow"})
    assert device.sh("test -d /sys/firmware/efi && echo uefi").strip() == "uefi"
    assert device.supervised_containers() == ["slow", "web", "worker"]
