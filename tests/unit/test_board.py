"""Board profiles: every shipped TOML loads, aliases resolve, unknown slugs fall back."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import pytest

from supervisor.board import profiles
from supervisor.board.profiles import BoardProfile, configs_dir, load_board, parse_profile
from supervisor.errors import ConfigError

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "board-configs"
REQUIRED = ("raspberrypi3", "raspberrypi4-64", "raspberrypi5", "intel-nuc", "genericx86-64-ext",
            "qemux86-64", "jetson-orin-nano", "generic")


def test_configs_dir_defaults_to_repo_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPERVISOR_BOARD_CONFIGS", raising=False)
    assert configs_dir() == REPO_CONFIGS
    assert (configs_dir() / "generic.toml").is_file()


def test_configs_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SUPERVISOR_BOARD_CONFIGS", str(tmp_path))
    assert configs_dir() == tmp_path


@pytest.mark.parametrize("slug", REQUIRED)
def test_required_profiles_exist(slug: str) -> None:
    assert (REPO_CONFIGS / f"{slug}.toml").is_file()


@pytest.mark.parametrize("path", sorted(REPO_CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_profile_loads_under_its_file_name(path: Path) -> None:
    profile = load_board(path.stem, REPO_CONFIGS)
    assert isinstance(profile, BoardProfile)
    assert profile.slug == path.stem
    assert profile.name and profile.arch and profile.arch != "auto"
    if profile.led.driver != "none":
        assert all(c.startswith("/sys/class/leds/") for c in profile.led.candidates)
    assert set(profile.boot.backends) <= set(profiles.BOOT_BACKENDS)


@pytest.mark.parametrize("slug", ["raspberrypi4-64", "raspberrypi5"])
def test_raspberry_pi_4_and_5_blink_act_and_use_config_txt(slug: str) -> None:
    profile = load_board(slug, REPO_CONFIGS)
    assert profile.arch == "aarch64"
    assert profile.led.driver == "sysfs-brightness"
    assert profile.led.file == "/sys/class/leds/ACT/brightness"
    assert profile.led.active_low is False
    assert profile.boot.backends == ("config-txt",)


@pytest.mark.parametrize("slug", ["raspberrypi0-2w-64", "raspberrypi3", "raspberrypi3-64"])
def test_every_raspberry_pi_uses_config_txt(slug: str) -> None:
    assert load_board(slug, REPO_CONFIGS).boot.backends == ("config-txt",)


def test_raspberrypi3_is_32_bit_with_led0_fallback() -> None:
    profile = load_board("raspberrypi3", REPO_CONFIGS)
    assert profile.arch == "armv7hf"
    assert profile.led.candidates == ("/sys/class/leds/ACT/brightness",
                                      "/sys/class/leds/led0/brightness")


@pytest.mark.parametrize("slug", ["intel-nuc", "genericx86-64-ext"])
def test_x86_boards_have_no_led_and_no_boot_backend(slug: str) -> None:
    profile = load_board(slug, REPO_CONFIGS)
    assert profile.arch == "amd64"
    assert profile.led.driver == "none"
    assert profile.boot.backends == ()


def test_qemu_blinks_the_keyboards_scroll_lock_led() -> None:
    # the device image's VM (docs/device-image.md): input-leds' LED of the PS/2 keyboard
    profile = load_board("qemux86-64", REPO_CONFIGS)
    assert profile.arch == "amd64"
    assert profile.led.driver == "sysfs-brightness"
    assert profile.led.candidates[0] == "/sys/class/leds/input0::scrolllock/brightness"
    assert all(c.endswith("::scrolllock/brightness") for c in profile.led.candidates)
    assert profile.boot.backends == ()


def test_alias_resolves_to_its_profile() -> None:
    profile = load_board("jetson-orin-nano-devkit-nvme", REPO_CONFIGS)
    assert profile.slug == "jetson-orin-nano"
    assert profile.boot.backends == ("extra-uenv", "power-fan")


def test_jetson_tx2_and_up_board_profiles_name_their_backends() -> None:
    assert load_board("jetson-tx2", REPO_CONFIGS).boot.backends == (
        "extlinux", "extra-uenv", "odmdata")
    assert load_board("up-board", REPO_CONFIGS).boot.backends == ("configfs",)


def test_unknown_slug_falls_back_to_generic_with_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        profile = load_board("toaster-9000", REPO_CONFIGS)
    assert profile.slug == "generic"
    assert "toaster-9000" in caplog.text


def test_generic_arch_comes_from_the_host() -> None:
    profile = load_board("generic", REPO_CONFIGS)
    assert profile.arch == profiles.host_arch()
    if platform.machine() == "x86_64":
        assert profile.arch == "amd64"


@pytest.mark.parametrize("slug", ["../generic", "/etc/passwd", "", "Raspberry Pi"])
def test_slugs_that_are_not_names_never_reach_the_filesystem(slug: str) -> None:
    assert load_board(slug, REPO_CONFIGS).slug == "generic"


def test_missing_configs_dir_uses_builtin_generic(tmp_path: Path) -> None:
    profile = load_board("raspberrypi5", tmp_path / "nope")
    assert profile.slug == "generic"
    assert profile.led.driver == "none"


def test_custom_profile_with_trigger_led(tmp_path: Path) -> None:
    (tmp_path / "myboard.toml").write_text(
        'slug = "myboard"\nname = "My board"\narch = "aarch64"\n'
        '[led]\ndriver = "sysfs-trigger"\nfile = "/sys/class/leds/user/trigger"\n'
        'on_trigger = "timer"\noff_trigger = "none"\nactive_low = true\n'
        '[boot]\nbackends = ["extlinux"]\n')
    profile = load_board("myboard", tmp_path)
    assert profile.led.driver == "sysfs-trigger"
    assert (profile.led.on_trigger, profile.led.off_trigger) == ("timer", "none")
    assert profile.led.active_low is True
    assert profile.boot.backends == ("extlinux",)


@pytest.mark.parametrize(("doc", "complaint"), [
    ({"name": "x", "arch": "amd64"}, "slug, name and arch"),
    ({"slug": "x", "name": "x", "arch": "amd64", "led": {"driver": "gpio"}}, "led.driver"),
    ({"slug": "x", "name": "x", "arch": "amd64", "led": {"driver": "sysfs-brightness"}},
     "led.file"),
    ({"slug": "x", "name": "x", "arch": "amd64", "boot": {"backends": ["uboot"]}},
     "boot.backends"),
    ({"slug": "x", "name": "x", "arch": "amd64", "boot": {"backends": "config-txt"}},
     "boot.backends"),
    ({"slug": "x", "name": "x", "arch": "amd64", "boot": {"backend": "config-txt"}},
     "backends = "),
    ({"slug": "x", "name": "x", "arch": "amd64", "led": {"active_low": "yes"}}, "active_low"),
    ({"slug": "x", "name": "x", "arch": "amd64", "aliases": "y"}, "aliases"),
])
def test_invalid_profiles_are_rejected(doc: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_profile(doc, "test.toml")


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("slug = ")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_board("bad", tmp_path)


def test_profile_is_frozen() -> None:
    profile = load_board("raspberrypi5", REPO_CONFIGS)
    with pytest.raises(AttributeError):
        profile.slug = "other"  # type: ignore[misc]
