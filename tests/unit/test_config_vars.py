"""Device config variables (config.md §1, §5, §5.1, §5.2; state.md §2.3; api.md checkInt).

Every expected value here is written from the spec's text, never computed by the module.
"""

from __future__ import annotations

import pytest

from supervisor.model import config_vars as cv
from supervisor.model.config_vars import (
    DeviceConfig,
    check_falsey,
    check_int,
    check_truthy,
    diff_variables,
    format_config,
    is_boot_config_var,
    js_inspect,
    lookup,
    parse_permissive_bool,
    parse_permissive_int,
    target_config,
    vpn_change,
)

# config.md §5, row by row: (variable, config key, type, default, reboot)
SPEC_TABLE = [
    ("SUPERVISOR_POLL_INTERVAL", "appUpdatePollInterval", "int", "900000", False),
    ("SUPERVISOR_INSTANT_UPDATE_TRIGGER", "instantUpdates", "bool", "true", False),
    ("SUPERVISOR_LOCAL_MODE", "localMode", "bool", "false", False),
    ("SUPERVISOR_CONNECTIVITY_CHECK", "connectivityCheckEnabled", "bool", "true", False),
    ("SUPERVISOR_LOG_CONTROL", "loggingEnabled", "bool", "true", False),
    ("SUPERVISOR_API_REQUEST_TIMEOUT", "apiRequestTimeout", "int", "59000", False),
    ("SUPERVISOR_DELTA", "delta", "bool", "false", False),
    ("SUPERVISOR_DELTA_REQUEST_TIMEOUT", "deltaRequestTimeout", "int", "59000", False),
    ("SUPERVISOR_DELTA_APPLY_TIMEOUT", "deltaApplyTimeout", "int", "0", False),
    ("SUPERVISOR_DELTA_RETRY_COUNT", "deltaRetryCount", "int", "30", False),
    ("SUPERVISOR_DELTA_RETRY_INTERVAL", "deltaRetryInterval", "int", "10000", False),
    ("SUPERVISOR_DELTA_VERSION", "deltaVersion", "int", "2", False),
    ("SUPERVISOR_OVERRIDE_LOCK", "lockOverride", "bool", "false", False),
    ("SUPERVISOR_PERSISTENT_LOGGING", "persistentLogging", "bool", "false", True),
    ("SUPERVISOR_HARDWARE_METRICS", "hardwareMetrics", "bool", "true", False),
    ("HOST_FIREWALL_MODE", "firewallMode", "string", "off", False),
    ("HOST_DISCOVERABILITY", "hostDiscoverability", "bool", "true", False),
]


def test_the_table_is_the_spec_table() -> None:
    rows = {(v.name, v.key, v.type, v.default, v.reboot) for v in cv.CONFIG_VARS}
    assert rows == set(SPEC_TABLE)
    vpn = cv.BY_NAME["SUPERVISOR_VPN_CONTROL"]
    assert (vpn.type, vpn.default, vpn.reboot, vpn.kind) == ("bool", "true", False, "vpn")
    assert all(v.applied_by for v in cv.VARIABLES)


# -- value rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "truthy", "falsey"), [
    ("1", True, False), ("true", True, False), ("on", True, False),
    ("TRUE", True, False), ("On", True, False), (True, True, False), (1, True, False),
    ("0", False, True), ("false", False, True), ("off", False, True), ("OFF", False, True),
    (False, False, True), (0, False, True),
    ("yes", False, False), ("no", False, False), (" true", False, False),
    ("true ", False, False), ("", False, False), ("2", False, False), (2, False, False),
    (None, False, False),
])
def test_truthy_and_falsey(value: object, truthy: bool, falsey: bool) -> None:
    assert check_truthy(value) is truthy
    assert check_falsey(value) is falsey


@pytest.mark.parametrize(("value", "decoded"), [
    ("1", True), ("On", True), (True, True), ("off", False), (0, False),
    (None, False),  # null/undefined decode to false
    ("yes", None), (" 1", None), ("", None), ("2", None), ({}, None),
])
def test_permissive_boolean(value: object, decoded: bool | None) -> None:
    assert parse_permissive_bool(value) is decoded


@pytest.mark.parametrize(("value", "decoded"), [
    ("12", 12), ("12abc", 12), ("  7", 7), ("\t\n-3x", -3), ("+5", 5), ("0x10", 0),
    ("1e5", 1), (42, 42), ("abc", None), ("", None), ("-", None), ("٣", None), (True, None),
    (None, None),
])
def test_permissive_number_reads_like_parseint(value: object, decoded: int | None) -> None:
    assert parse_permissive_int(value) == decoded


@pytest.mark.parametrize(("value", "decoded"), [
    ("12", 12), (12, 12), ("12.00", 12), ("12.", 12), ("-4", -4), ("0", 0),
    ("12abc", None), ("1.5", None), (" 12", None), ("12\n", None), ("", None), ("abc", None),
    ("0x10", None), (None, None), (True, None),
])
def test_check_int(value: object, decoded: int | None) -> None:
    assert check_int(value) == decoded


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "boot"), [
    ("HOST_CONFIG_gpu_mem", True), ("HOST_CONFIG_hdmi_mode:1", True),
    ("HOST_CONFIG_power_mode", True), ("HOST_EXTLINUX_isolcpus", True),
    ("HOST_EXTLINUX_fdt", True), ("HOST_CONFIGFS_ssdt", True), ("HOST_CONFIGFS_other", False),
    ("HOST_ODMDATA_configuration", True), ("HOST_SPLASH_image", True),
    ("HOST_SPLASH_IMAGE", True), ("HOST_SPLASH_logo", False), ("HOST_OTHER_x", False),
    ("SUPERVISOR_POLL_INTERVAL", False), ("gpu_mem", False),
])
def test_boot_config_names(name: str, boot: bool) -> None:
    assert is_boot_config_var(name) is boot


def test_prefixes_are_stripped_and_balena_wins() -> None:
    raw = {
        "SUPERVISOR_POLL_INTERVAL": "3",
        "RESIN_SUPERVISOR_POLL_INTERVAL": "2",
        "BALENA_SUPERVISOR_POLL_INTERVAL": "1",
        "RESIN_SUPERVISOR_LOG_CONTROL": "false",
        "SUPERVISOR_LOG_CONTROL": "true",
        "HOST_DISCOVERABILITY": "0",
    }
    assert format_config(raw) == {
        "SUPERVISOR_POLL_INTERVAL": "1",
        "SUPERVISOR_LOG_CONTROL": "false",
        "HOST_DISCOVERABILITY": "0",
    }


def test_the_state_md_example_target_config() -> None:
    raw = {
        "RESIN_SUPERVISOR_POLL_INTERVAL": "900000",
        "BALENA_HOST_CONFIG_gpu_mem": "16",
        "RESIN_HOST_CONFIG_hdmi_group:1": "2",
    }
    formatted = format_config(raw)
    assert formatted == {
        "SUPERVISOR_POLL_INTERVAL": "900000",
        "HOST_CONFIG_gpu_mem": "16",
        "HOST_CONFIG_hdmi_group:1": "2",
    }
    # BALENA_ names first, then RESIN_, then unprefixed (the order boot files are written in)
    assert list(formatted) == ["HOST_CONFIG_gpu_mem", "SUPERVISOR_POLL_INTERVAL",
                               "HOST_CONFIG_hdmi_group:1"]


def test_only_known_keys_are_kept() -> None:
    raw = {
        "BALENA_SOMETHING_ELSE": "1",
        "MY_APP_VAR": "x",
        "RESIN_HOST_CONFIGFS_other": "y",
        "RESIN_SUPERVISOR_VPN_CONTROL": "false",
        "BALENA_HOST_EXTLINUX_isolcpus": "2,3",
        "HOST_ODMDATA_configuration": "2",
        "RESIN_HOST_SPLASH_Image": "abc",
        "BALENA_RESIN_SUPERVISOR_DELTA": "1",  # only one prefix is stripped
    }
    assert format_config(raw) == {
        "SUPERVISOR_VPN_CONTROL": "false",
        "HOST_EXTLINUX_isolcpus": "2,3",
        "HOST_ODMDATA_configuration": "2",
        "HOST_SPLASH_Image": "abc",
    }


def test_legacy_override_lock_is_copied() -> None:
    assert format_config({"RESIN_OVERRIDE_LOCK": "1"}) == {
        "OVERRIDE_LOCK": "1", "SUPERVISOR_OVERRIDE_LOCK": "1"}
    # as upstream's setTarget: the legacy name is copied over the new one
    assert format_config({"OVERRIDE_LOCK": "0", "SUPERVISOR_OVERRIDE_LOCK": "1"})[
        "SUPERVISOR_OVERRIDE_LOCK"] == "0"
    assert lookup({"BALENA_OVERRIDE_LOCK": "true"}, "SUPERVISOR_OVERRIDE_LOCK") == "true"
    assert lookup({}, "SUPERVISOR_OVERRIDE_LOCK") is None


def test_target_fills_every_default() -> None:
    conf = target_config({"BALENA_HOST_CONFIG_gpu_mem": "16"})
    expected = {name: default for name, _k, _t, default, _r in SPEC_TABLE}
    expected["SUPERVISOR_VPN_CONTROL"] = "true"
    expected["HOST_CONFIG_gpu_mem"] = "16"
    assert conf == expected


def test_target_vpn_and_local_mode_rules() -> None:
    assert target_config({"SUPERVISOR_VPN_CONTROL": "false"})["SUPERVISOR_VPN_CONTROL"] == \
        "false"
    # forced on the initial apply after boot
    assert target_config({"SUPERVISOR_VPN_CONTROL": "false"}, initial=True)[
        "SUPERVISOR_VPN_CONTROL"] == "true"
    assert target_config({})["SUPERVISOR_LOCAL_MODE"] == "false"
    assert target_config({}, unmanaged=True)["SUPERVISOR_LOCAL_MODE"] == "true"
    assert target_config({"RESIN_SUPERVISOR_LOCAL_MODE": "0"}, unmanaged=True)[
        "SUPERVISOR_LOCAL_MODE"] == "0"


# -- typed reads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "name", "expected"), [
    ({}, "SUPERVISOR_POLL_INTERVAL", 900000),
    ({"RESIN_SUPERVISOR_POLL_INTERVAL": "60000"}, "SUPERVISOR_POLL_INTERVAL", 60000),
    ({"SUPERVISOR_POLL_INTERVAL": "abc"}, "SUPERVISOR_POLL_INTERVAL", 900000),
    ({"SUPERVISOR_POLL_INTERVAL": "120000ms"}, "SUPERVISOR_POLL_INTERVAL", 120000),
    ({"SUPERVISOR_DELTA_VERSION": "3"}, "SUPERVISOR_DELTA_VERSION", 3),
    ({"BALENA_SUPERVISOR_UPDATE_FAILURE_LIMIT": "2",
      "RESIN_SUPERVISOR_UPDATE_FAILURE_LIMIT": "3"}, "SUPERVISOR_UPDATE_FAILURE_LIMIT", 2),
    ({}, "SUPERVISOR_UPDATE_FAILURE_LIMIT", 5),
])
def test_numbers(raw: dict[str, str], name: str, expected: int) -> None:
    assert DeviceConfig.of(raw).number(name) == expected


@pytest.mark.parametrize(("raw", "name", "expected"), [
    ({}, "SUPERVISOR_OVERRIDE_LOCK", False),
    ({"RESIN_SUPERVISOR_OVERRIDE_LOCK": "1"}, "SUPERVISOR_OVERRIDE_LOCK", True),
    ({"BALENA_SUPERVISOR_OVERRIDE_LOCK": "on"}, "SUPERVISOR_OVERRIDE_LOCK", True),
    ({"RESIN_OVERRIDE_LOCK": "true"}, "SUPERVISOR_OVERRIDE_LOCK", True),
    # "yes" is not a boolean upstream: invalid, so the default (false)
    ({"SUPERVISOR_OVERRIDE_LOCK": "yes"}, "SUPERVISOR_OVERRIDE_LOCK", False),
    ({"SUPERVISOR_OVERRIDE_LOCK": " 1"}, "SUPERVISOR_OVERRIDE_LOCK", False),
    ({}, "SUPERVISOR_INSTANT_UPDATE_TRIGGER", True),
    ({"BALENA_SUPERVISOR_INSTANT_UPDATE_TRIGGER": "false"},
     "SUPERVISOR_INSTANT_UPDATE_TRIGGER", False),
    ({"SUPERVISOR_INSTANT_UPDATE_TRIGGER": "maybe"}, "SUPERVISOR_INSTANT_UPDATE_TRIGGER", True),
    ({"SUPERVISOR_LOCAL_MODE": "1"}, "SUPERVISOR_LOCAL_MODE", True),
    ({"SUPERVISOR_HARDWARE_METRICS": "FALSE"}, "SUPERVISOR_HARDWARE_METRICS", False),
    ({"RESIN_SUPERVISOR_VPN_CONTROL": "0"}, "SUPERVISOR_VPN_CONTROL", False),
])
def test_flags(raw: dict[str, str], name: str, expected: bool) -> None:
    assert DeviceConfig.of(raw).flag(name) is expected


def test_typed_reads_check_the_type_and_unmanaged_local_mode() -> None:
    assert DeviceConfig.of({}, unmanaged=True).local_mode
    assert not DeviceConfig.of(None).local_mode
    assert DeviceConfig.of({"HOST_FIREWALL_MODE": "auto"}).text("HOST_FIREWALL_MODE") == "auto"
    assert DeviceConfig.of({}).text("HOST_FIREWALL_MODE") == "off"
    with pytest.raises(TypeError):
        DeviceConfig.of({}).flag("SUPERVISOR_POLL_INTERVAL")


# -- getRequiredSteps step 1 ---------------------------------------------------------------------


def _current(**overrides: str) -> dict[str, str]:
    values = {name: default for name, _k, _t, default, _r in SPEC_TABLE}
    values.update(overrides)
    return values


def test_no_change_when_values_agree_by_type() -> None:
    current = _current(SUPERVISOR_LOCAL_MODE="false", SUPERVISOR_POLL_INTERVAL="900000")
    target = _current(SUPERVISOR_LOCAL_MODE="0", SUPERVISOR_POLL_INTERVAL="900000.00",
                      SUPERVISOR_LOG_CONTROL="TRUE")
    diff = diff_variables(current, target)
    assert diff.changes == {} and diff.warnings == () and not diff.reboot


def test_changes_are_valid_target_values_in_table_order() -> None:
    target = _current(HOST_DISCOVERABILITY="0", SUPERVISOR_POLL_INTERVAL="60000",
                      HOST_FIREWALL_MODE="on")
    diff = diff_variables(_current(), target)
    assert list(diff.changes.items()) == [
        ("SUPERVISOR_POLL_INTERVAL", "60000"), ("HOST_FIREWALL_MODE", "on"),
        ("HOST_DISCOVERABILITY", "0")]
    assert diff.by_key() == {"appUpdatePollInterval": "60000", "firewallMode": "on",
                             "hostDiscoverability": "0"}
    assert not diff.reboot and diff.warnings == ()


def test_persistent_logging_needs_a_reboot() -> None:
    diff = diff_variables(_current(), _current(SUPERVISOR_PERSISTENT_LOGGING="true",
                                               SUPERVISOR_DELTA="1"))
    assert diff.changes == {"SUPERVISOR_DELTA": "1", "SUPERVISOR_PERSISTENT_LOGGING": "true"}
    assert diff.reboot and diff.reboot_changes == {"SUPERVISOR_PERSISTENT_LOGGING": "true"}


def test_an_invalid_value_falls_back_to_the_default_with_upstreams_warning() -> None:
    diff = diff_variables(_current(SUPERVISOR_POLL_INTERVAL="60000"),
                          _current(SUPERVISOR_POLL_INTERVAL="abc"))
    assert diff.changes == {"SUPERVISOR_POLL_INTERVAL": "900000"}
    assert diff.warnings == (
        "Warning: Ignoring invalid device configuration value for appUpdatePollInterval, "
        "value: 'abc'. Falling back to default (900000)",)


def test_an_invalid_value_when_the_default_already_applies_does_nothing() -> None:
    diff = diff_variables(_current(), _current(SUPERVISOR_POLL_INTERVAL="abc"))
    assert diff.changes == {} and diff.warnings == ()


def test_an_invalid_boolean() -> None:
    # "yes" is not truthy: against a current "false" it compares equal and nothing happens
    assert diff_variables(_current(SUPERVISOR_LOG_CONTROL="false"),
                          _current(SUPERVISOR_LOG_CONTROL="yes")).changes == {}
    diff = diff_variables(_current(SUPERVISOR_LOCAL_MODE="true"),
                          _current(SUPERVISOR_LOCAL_MODE="yes"))
    assert diff.changes == {"SUPERVISOR_LOCAL_MODE": "false"}
    assert diff.warnings == (
        "Warning: Ignoring invalid device configuration value for localMode, value: 'yes'. "
        "Falling back to default (false)",)


def test_the_warning_quotes_like_node_inspect() -> None:
    assert js_inspect("abc") == "'abc'"
    assert js_inspect("it's") == '"it\'s"'
    assert js_inspect("a\nb") == "'a\\nb'"
    assert js_inspect(None) == "undefined"


def test_vpn_step() -> None:
    assert vpn_change({"SUPERVISOR_VPN_CONTROL": "true"}, {"SUPERVISOR_VPN_CONTROL": "0"}) == "0"
    assert vpn_change({"SUPERVISOR_VPN_CONTROL": "true"}, {"SUPERVISOR_VPN_CONTROL": "1"}) is None
    assert vpn_change({"SUPERVISOR_VPN_CONTROL": "false"}, {}) is None


def test_current_values_render_as_strings() -> None:
    assert [cv.current_value(v) for v in (True, False, 900000, "auto", None)] == \
        ["true", "false", "900000", "auto", ""]
