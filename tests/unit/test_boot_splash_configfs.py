"""Splash image and configfs backends on files in a temp dir (config.md §5.3)."""

from __future__ import annotations

import base64
import json
import logging
import zlib
from pathlib import Path

import pytest

from supervisor.board.bootconfig import BootConfig, BootPaths
from supervisor.configjson import ConfigJson


def png(colour: int) -> bytes:
    """A real 1x1 PNG of one grey level (hand-built, not by the code under test)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(bytes([0, colour]))) + chunk(b"IEND", b""))


ORIGINAL, NEW = png(10), png(200)


def make(tmp_path: Path, names: list[str] | None = None,
         device_type: str = "raspberrypi4-64") -> BootConfig:
    paths = BootPaths(tmp_path, ConfigJson(tmp_path / "config.json", {}), tmp_path / "root")
    return BootConfig.for_board(names or [], paths, device_type)


def splash_dir(tmp_path: Path, name: str = "balena-logo.png") -> Path:
    directory = tmp_path / "splash"
    directory.mkdir()
    (directory / name).write_bytes(ORIGINAL)
    return directory


def test_initialise_keeps_a_copy_of_the_original_and_reports_nothing(tmp_path: Path) -> None:
    directory = splash_dir(tmp_path)
    boot = make(tmp_path)
    assert boot.current_env() == {}
    assert (directory / "balena-logo-default.png").read_bytes() == ORIGINAL


@pytest.mark.parametrize("value", [
    "data:image/png;base64," + base64.b64encode(NEW).decode(),
    "data:image/png;charset=x;base64," + base64.b64encode(NEW).decode(),
    base64.b64encode(NEW).decode(),  # raw base64
])
def test_a_png_replaces_the_logo_and_is_reported_back(tmp_path: Path, value: str) -> None:
    directory = splash_dir(tmp_path)
    boot = make(tmp_path)
    target = {"HOST_SPLASH_image": value}
    assert boot.changes(boot.current_env(), target).backends == ("splash-image",)
    boot.apply(target)
    assert (directory / "balena-logo.png").read_bytes() == NEW
    expected = "data:image/png;base64," + base64.b64encode(NEW).decode()
    assert boot.current_env() == {"HOST_SPLASH_image": expected}
    assert boot.changes(boot.current_env(), target).backends == ()


def test_empty_value_restores_the_default_and_non_png_is_not_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = splash_dir(tmp_path)
    boot = make(tmp_path)
    boot.apply({"HOST_SPLASH_image": base64.b64encode(NEW).decode()})
    with caplog.at_level(logging.ERROR):
        boot.apply({"HOST_SPLASH_image": base64.b64encode(b"GIF89a not a png").decode()})
    assert "Expected splash image to be a base64 encoded PNG image" in caplog.text
    assert (directory / "balena-logo.png").read_bytes() == NEW
    assert boot.changes(boot.current_env(), {"HOST_SPLASH_image": " "}).backends == (
        "splash-image",)
    boot.apply({"HOST_SPLASH_image": ""})
    assert (directory / "balena-logo.png").read_bytes() == ORIGINAL
    assert boot.current_env() == {}


def test_resin_logo_is_used_when_it_is_the_file_present(tmp_path: Path) -> None:
    directory = splash_dir(tmp_path, "resin-logo.png")
    boot = make(tmp_path)
    boot.apply({"HOST_SPLASH_IMAGE": base64.b64encode(NEW).decode()})  # name: any case
    assert (directory / "resin-logo.png").read_bytes() == NEW
    assert not (directory / "balena-logo.png").exists()


def test_no_splash_directory_means_no_splash_backend(tmp_path: Path) -> None:
    assert make(tmp_path).backends == ()


# -- configfs --------------------------------------------------------------------------------


def configfs_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "boot" / "acpi-tables").mkdir(parents=True)
    (root / "boot" / "acpi-tables" / "spidev1.1.aml").write_bytes(b"AML-1")
    (root / "sys" / "kernel" / "config" / "acpi" / "table").mkdir(parents=True)
    return root


def test_configfs_stores_ssdt_list_and_loads_tables_at_start(tmp_path: Path) -> None:
    root = configfs_root(tmp_path)
    paths = BootPaths(tmp_path, ConfigJson(tmp_path / "config.json", {}), root)
    boot = BootConfig.for_board(["configfs"], paths, "up-board")
    boot.backends[0].loader.modprobe = None  # type: ignore[attr-defined]  # no kernel here
    assert boot.current_env() == {}
    target = {"HOST_CONFIGFS_ssdt": '"spidev1.1","missing"'}
    assert boot.changes(boot.current_env(), target).backends == ("configfs",)
    boot.apply(target)
    assert json.loads((tmp_path / "configfs.json").read_text()) == {
        "ssdt": ["spidev1.1", "missing"]}
    assert boot.current_env() == {"HOST_CONFIGFS_ssdt": '"spidev1.1","missing"'}

    # A new start loads the configured tables into configfs.
    again = BootConfig.for_board(["configfs"], paths, "up-board")
    again.backends[0].loader.modprobe = None  # type: ignore[attr-defined]
    again.initialise()
    assert (root / "sys/kernel/config/acpi/table/spidev1.1/aml").read_bytes() == b"AML-1"
    assert not (root / "sys/kernel/config/acpi/table/missing").exists()

    boot.apply({})
    assert json.loads((tmp_path / "configfs.json").read_text()) == {}
