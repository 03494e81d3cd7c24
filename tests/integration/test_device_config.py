"""Device configuration end to end: a real supervisor process on a raspberrypi4-64 profile
applies a local target's `config` to `<boot-dir>/config.txt` through the planner's steps,
sets the reboot breadcrumb, reboots once (dry-run) after the apply, and refuses a forbidden
key with upstream's message without touching the file (config.md §5)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx

from supervisor.store import Store
from tests.integration.supervisor_proc import local_target

DEFAULT_TXT = "gpu_mem=16\ndtparam=audio=on\n"


def target(config: dict[str, str]) -> dict[str, Any]:
    return {"local": {"name": "pi", "config": config, "apps": {}}}


def test_config_txt_is_written_then_one_reboot_and_forbidden_keys_change_nothing(
        sup: Any, tmp_path: Path) -> None:
    boot = tmp_path / "sup0" / "boot"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text(DEFAULT_TXT)
    proc = sup(config={"deviceType": "raspberrypi4-64"})
    resp = proc.post_target(target({
        "HOST_CONFIG_dtoverlay": '"vc4-kms-v3d","pitft35-resistive,rotate=90,speed=62000000"',
        "BALENA_HOST_CONFIG_dtparam": '"i2c_arm=on","spi=on"',
        "RESIN_HOST_CONFIG_gpu_mem": "128",
    }))
    assert resp.status_code == 200, resp.text
    # Upstream's order: BALENA_ names, then RESIN_ ones, then unprefixed; overlays last.
    expected = ("dtparam=i2c_arm=on\n"
                "dtparam=spi=on\n"
                "gpu_mem=128\n"
                "dtoverlay=vc4-kms-v3d\n"
                "dtoverlay=pitft35-resistive\n"
                "dtparam=rotate=90\n"
                "dtparam=speed=62000000\n")
    proc.wait_for(lambda: (boot / "config.txt").read_text() == expected, what="config.txt")
    log = proc.wait_for(lambda: "Rebooting" in (text := proc.log(tail=None)) and text,
                        what="the reboot after the apply", timeout=30)
    assert log.index("Applying boot config: ") < log.index("Applied boot config: ") \
        < log.index("Rebooting")
    # Settled after the (dry-run) reboot: the file read back is the target, nothing to do.
    proc.wait_for(lambda: proc.status()["appState"] == "applied"
                  and not (tmp_path / "sup0" / "state" / "reboot-after-apply").exists(),
                  what="settled after the reboot")
    with Store(tmp_path / "sup0" / "data" / "database.sqlite") as store:
        assert [a.action for a in store.host_actions() if a.action == "reboot"] == ["reboot"]
    lines = proc.log(tail=None).splitlines()
    assert sum("Applied boot config: " in line for line in lines) == 1

    # The local target shows the config with every default filled.
    shown = proc.client.get("/v2/local/target-state").json()["state"]["local"]["config"]
    assert shown["HOST_CONFIG_gpu_mem"] == "128"
    assert shown["SUPERVISOR_POLL_INTERVAL"] == "900000"
    assert shown["SUPERVISOR_LOCAL_MODE"] == "true"  # unmanaged device
    assert shown["SUPERVISOR_VPN_CONTROL"] == "true"

    before = (boot / "config.txt").read_bytes()
    proc.post_target(target({"HOST_CONFIG_gpu_mem": "64", "HOST_CONFIG_kernel": "k.img"}))
    proc.wait_for(lambda: "Attempt to change blacklisted config value kernel" in proc.log(),
                  what="the refusal")
    assert (boot / "config.txt").read_bytes() == before


def test_persistent_logging_goes_to_config_json_and_needs_a_reboot(
        sup: Any, tmp_path: Path) -> None:
    proc = sup(config={"deviceType": "raspberrypi4-64"})
    proc.post_target(target({"SUPERVISOR_PERSISTENT_LOGGING": "true",
                             "SUPERVISOR_POLL_INTERVAL": "not a number"}))
    config_json = tmp_path / "sup0" / "boot" / "config.json"
    proc.wait_for(lambda: json.loads(config_json.read_text()).get("persistentLogging") is True,
                  what="persistentLogging in config.json")
    log = proc.wait_for(lambda: "Rebooting" in (text := proc.log(tail=None)) and text,
                        what="the reboot", timeout=30)
    assert ("Applying configuration change "
            '{"SUPERVISOR_LOCAL_MODE":"true","SUPERVISOR_PERSISTENT_LOGGING":"true"}') in log
    # An invalid value whose current value is the default already changes nothing.
    assert "Ignoring invalid device configuration value" not in log


TICKER = ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); "
          "sleep 0.1; done"]


def ticks(text: str) -> list[int]:
    return [int(word) for line in text.splitlines()
            if (word := line.rpartition("tick ")[2]).isdigit()]


def test_log_control_off_publishes_no_line_until_it_is_on_again(
        sup: Any, docker_client: Any, base_image: str) -> None:
    def with_log_control(value: str) -> dict[str, Any]:
        body = local_target({"t": {"image": base_image, "command": list(TICKER)}})
        body["local"]["config"] = {"SUPERVISOR_LOG_CONTROL": value}
        return body

    proc = sup(with_log_control("true"))
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        with httpx.stream("GET", f"http://127.0.0.1:{proc.port}/v2/local/logs",
                          timeout=None) as resp:
            for line in resp.iter_lines():
                message = json.loads(line).get("message", "")
                seen.extend(ticks(message))
                if stop.is_set():
                    return

    threading.Thread(target=read, daemon=True).start()
    try:
        proc.wait_for(lambda: seen, what="ticks in the log stream")
        (container,) = docker_client.containers.list(
            filters={"label": "io.balena.supervised"})

        def docker_tick() -> int:
            return max(ticks(container.logs().decode()), default=-1)

        proc.post_target(with_log_control("false"))
        proc.wait_for(lambda: "Logs disabled by SUPERVISOR_LOG_CONTROL" in proc.log(),
                      what="log control off")
        off = docker_tick()  # every later tick is printed while publishing is off
        proc.wait_for(lambda: docker_tick() >= off + 50, what="ticks printed while off")
        on = docker_tick()
        proc.post_target(with_log_control("true"))
        proc.wait_for(lambda: "Logs enabled by SUPERVISOR_LOG_CONTROL" in proc.log(),
                      what="log control on")
        proc.wait_for(lambda: seen and seen[-1] > on, what="ticks again after it is on")
        # The follower may deliver a line a moment after docker has it: the last ones before
        # the switch back on are not checked.
        assert [t for t in seen if off < t <= on - 40] == []
    finally:
        stop.set()


def test_jetson_orin_extra_uenv_power_fan_and_splash(sup: Any, tmp_path: Path) -> None:
    import base64
    import zlib

    def png(grey: int) -> bytes:  # a real 1x1 PNG, built by hand
        def chunk(kind: bytes, data: bytes) -> bytes:
            return (len(data).to_bytes(4, "big") + kind + data
                    + zlib.crc32(kind + data).to_bytes(4, "big"))
        ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                + chunk(b"IDAT", zlib.compress(bytes([0, grey]))) + chunk(b"IEND", b""))

    boot = tmp_path / "sup0" / "boot"
    (boot / "splash").mkdir(parents=True)
    (boot / "splash" / "balena-logo.png").write_bytes(png(10))
    (boot / "extra_uEnv.txt").write_text("some_other=1\n")
    proc = sup(config={"deviceType": "jetson-orin-nano-devkit-nvme"})
    logo = png(200)
    proc.post_target(target({
        "HOST_EXTLINUX_fdt": "custom.dtb", "HOST_EXTLINUX_isolcpus": "2,3",
        "HOST_CONFIG_power_mode": "low", "HOST_CONFIG_fan_profile": "quiet",
        "HOST_SPLASH_image": "data:image/png;base64," + base64.b64encode(logo).decode()}))
    proc.wait_for(lambda: (boot / "extra_uEnv.txt").read_text() == (
        "some_other=1\ncustom_fdt_file=custom.dtb\nextra_os_cmdline=isolcpus=2,3\n"),
        what="extra_uEnv.txt")
    os_conf = json.loads((boot / "config.json").read_text())["os"]
    assert os_conf == {"power": {"mode": "low"}, "fan": {"profile": "quiet"}}
    assert (boot / "splash" / "balena-logo.png").read_bytes() == logo
    assert (boot / "splash" / "balena-logo-default.png").read_bytes() == png(10)
    proc.wait_for(lambda: proc.status()["appState"] == "applied"
                  and "Rebooting" in proc.log(tail=None)
                  and not (tmp_path / "sup0" / "state" / "reboot-after-apply").exists(),
                  what="one reboot, then settled")
    with Store(tmp_path / "sup0" / "data" / "database.sqlite") as store:
        assert [a.action for a in store.host_actions() if a.action == "reboot"] == ["reboot"]
