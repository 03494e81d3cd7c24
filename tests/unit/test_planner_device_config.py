"""Device configuration steps of the planner (config.md §5.2): variables first, boot config
only when no variable changes, the breadcrumb before a change that needs a reboot, and all of
it before (and alone, instead of) any app step."""

from __future__ import annotations

from dataclasses import replace

from supervisor.model.config_vars import target_config
from supervisor.model.steps import ChangeConfig, SetBootConfig, SetRebootBreadcrumb, describe
from supervisor.planner import plan
from supervisor.planner.context import DeviceConfigInput
from supervisor.planner.device_config import device_config_steps
from tests.builders import converged, make_app, make_service, make_target

DEFAULTS = target_config({})


def config(current: dict[str, str] | None = None, target: dict[str, str] | None = None,
           **boot: object) -> DeviceConfigInput:
    return DeviceConfigInput(current={**DEFAULTS, **(current or {})},
                             target=target_config(target or {}), **boot)  # type: ignore[arg-type]


def test_nothing_differs_nothing_planned() -> None:
    assert device_config_steps(config()) == ()
    assert device_config_steps(None) == ()
    # bools by truthiness, ints by value
    assert device_config_steps(config({"SUPERVISOR_LOCAL_MODE": "false"},
                                      {"SUPERVISOR_LOCAL_MODE": "0",
                                       "SUPERVISOR_POLL_INTERVAL": "900000.00"})) == ()


def test_changes_are_one_change_config_in_the_tables_order() -> None:
    steps = device_config_steps(config(target={
        "RESIN_SUPERVISOR_POLL_INTERVAL": "60000", "BALENA_SUPERVISOR_LOG_CONTROL": "false"}))
    assert steps == (ChangeConfig((("SUPERVISOR_POLL_INTERVAL", "60000"),
                                   ("SUPERVISOR_LOG_CONTROL", "false"))),)
    assert describe(steps[0]) == {
        "action": "changeConfig",
        "target": {"SUPERVISOR_POLL_INTERVAL": "60000", "SUPERVISOR_LOG_CONTROL": "false"},
        "warnings": (), "reboot": False}


def test_invalid_value_falls_back_to_the_default_with_upstreams_warning() -> None:
    steps = device_config_steps(config({"SUPERVISOR_POLL_INTERVAL": "60000"},
                                       {"SUPERVISOR_POLL_INTERVAL": "soon"}))
    assert steps == (ChangeConfig(
        (("SUPERVISOR_POLL_INTERVAL", "900000"),),
        ("Warning: Ignoring invalid device configuration value for appUpdatePollInterval, "
         "value: 'soon'. Falling back to default (900000)",)),)
    # already at the default: nothing to do, nothing logged
    assert device_config_steps(config(target={"SUPERVISOR_POLL_INTERVAL": "soon"})) == ()


def test_a_change_that_needs_a_reboot_sets_the_breadcrumb_first() -> None:
    steps = device_config_steps(config(target={"SUPERVISOR_PERSISTENT_LOGGING": "1"}))
    assert steps == (SetRebootBreadcrumb(),
                     ChangeConfig((("SUPERVISOR_PERSISTENT_LOGGING", "1"),), reboot=True))


def test_boot_config_waits_for_the_variables_then_comes_with_the_breadcrumb() -> None:
    boot = {"boot_changed": ("config-txt",), "boot_reboot": True,
            "boot_target": (("HOST_CONFIG_gpu_mem", "128"),)}
    first = device_config_steps(config(target={"SUPERVISOR_POLL_INTERVAL": "60000"}, **boot))
    assert [s.kind for s in first] == ["changeConfig"]
    then = device_config_steps(config({"SUPERVISOR_POLL_INTERVAL": "60000"},
                                      {"SUPERVISOR_POLL_INTERVAL": "60000"}, **boot))
    assert then == (SetRebootBreadcrumb(), SetBootConfig((("HOST_CONFIG_gpu_mem", "128"),)))
    no_reboot = device_config_steps(config(**{**boot, "boot_reboot": False}))
    assert no_reboot == (SetBootConfig((("HOST_CONFIG_gpu_mem", "128"),)),)


def test_device_config_steps_run_alone_before_app_steps() -> None:
    target = make_target(apps=[make_app(1, [make_service("web")])])
    world = converged(make_target(apps=[]))
    ctx = replace(world.ctx, device_config=config(target={"SUPERVISOR_POLL_INTERVAL": "1000"}))
    assert [s.kind for s in plan(world.current, target, ctx)] == ["changeConfig"]
    settled = replace(ctx, device_config=config({"SUPERVISOR_POLL_INTERVAL": "1000"},
                                                {"SUPERVISOR_POLL_INTERVAL": "1000"}))
    assert "fetch" in [s.kind for s in plan(world.current, target, settled)]
