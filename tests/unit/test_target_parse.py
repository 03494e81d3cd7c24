"""Target parsing: fixtures/targets/*.json parse and round-trip, invalid ones fail precisely,
and no input at all makes the parsers raise anything but TargetInvalid."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.errors import TargetInvalid
from supervisor.model.target import (
    TargetState,
    parse_local_target,
    parse_target,
    to_v3,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "targets"
VALID = sorted(FIXTURES.glob("*.json"))
INVALID = sorted((FIXTURES / "invalid").glob("*.json"))
LOCAL_UUID = "0123456789abcdef0123456789abcdef"


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def parse_fixture(raw: dict[str, Any]) -> TargetState:
    """Local-format fixtures are POST bodies; v3 fixtures are keyed by their device uuid."""
    if "local" in raw:
        return parse_local_target(raw, device_uuid=LOCAL_UUID, device_name="kept-name")
    return parse_target(raw, device_uuid=next(iter(raw)))


# ---------------------------------------------------------------------------- valid fixtures

def test_there_are_valid_and_enough_invalid_fixtures() -> None:
    assert {p.name for p in VALID} >= {"demo.json", "multi-app.json", "volumes-networks.json"}
    assert len(INVALID) >= 25


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_fixture_parses_and_round_trips(path: Path) -> None:
    target = parse_fixture(load(path))
    assert target.apps
    again = parse_target(to_v3(target), device_uuid=target.device_uuid)
    assert again == target
    # to_v3 output is plain JSON
    assert json.loads(json.dumps(to_v3(target))) == to_v3(target)


def test_demo_fixture_is_the_local_format_balena_cli_posts() -> None:
    target = parse_local_target(load(FIXTURES / "demo.json"), device_uuid=LOCAL_UUID,
                                device_name="my-device")
    assert target.name == "my-device"  # no local.name: the device keeps its name
    assert target.config == {"SUPERVISOR_LOCAL_MODE": "1"}
    app = target.apps["1"]
    assert (app.app_id, app.uuid, app.name, app.app_class) == (1, "1", "demo", "fleet")
    assert app.release is not None
    assert (app.release.commit, app.release.release_id) == ("demo0001", 1)
    web, worker = app.release.services["web"], app.release.services["worker"]
    assert (web.service_id, web.image_id) == (1, 1)
    assert web.image == "127.0.0.1:5000/balena-py/demo:latest"
    assert web.environment == {"PORT": "8080"}
    assert web.labels == {"io.balena.features.supervisor-api": "1"}
    assert [(p.internal, p.host_port) for p in web.config.ports] == [(8080, 8080)]
    assert worker.config.command == ("sh", "-c", "while true; do echo tick; sleep 5; done")
    assert worker.config.depends_on == ("web",)
    assert worker.config.network_mode == "host"
    assert worker.composition["network_mode"] == "host"


def test_multi_app_fixture() -> None:
    raw = load(FIXTURES / "multi-app.json")
    uuid = next(iter(raw))
    target = parse_target(raw, device_uuid=uuid)
    assert target.config["RESIN_HOST_CONFIG_hdmi_group:1"] == "2"
    fleet, block, empty = target.apps.values()
    assert fleet.release is not None and fleet.release.release_id == 557617  # first release
    main = fleet.release.services["main"]
    assert main.image == "registry2.balena-cloud.com/v2/9e2d5a1c@sha256:1df4c0ffee"
    assert main.contract is not None and main.contract["type"] == "sw.container"
    assert main.config.restart == "unless-stopped" and main.config.privileged
    sidecar = fleet.release.services["sidecar"]
    assert (sidecar.service_id, sidecar.image_id, sidecar.running) == (29397, 959263, False)
    assert sidecar.image == "alpine:latest"
    assert sidecar.config.command == ("sleep", "infinity")
    assert (block.app_id, block.app_class, block.parent_app) == (77, "block", fleet.uuid)
    assert empty.release is None


def test_volumes_networks_fixture() -> None:
    raw = load(FIXTURES / "volumes-networks.json")
    target = parse_target(raw, device_uuid=next(iter(raw)))
    (app,) = target.apps.values()
    assert app.release is not None
    rel = app.release
    assert rel.volumes["data"].driver_opts == {"type": "none"}
    assert rel.volumes["cache"].labels == {"io.balena.private.keep": "1"}
    backend = rel.networks["backend"]
    assert backend.internal and backend.ipam_config[0].subnet == "172.20.0.0/16"
    db = rel.services["db"].config
    assert len(db.warnings) == 3  # two bind mounts dropped + unsupported fields
    assert set(db.ignored_fields) == {"expose", "build"}
    assert rel.services["db"].ignored_fields == db.ignored_fields
    assert db.stop_grace_period == 90
    assert db.working_dir == "/srv"


# ---------------------------------------------------------------------------- invalid fixtures

@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_fixture_is_refused_at_the_right_path(path: Path) -> None:
    case = load(path)
    parser = parse_target if case["format"] == "v3" else parse_local_target
    with pytest.raises(TargetInvalid) as err:
        parser(case["target"], device_uuid=case["device_uuid"])
    assert err.value.path == case["expect_path"]
    assert case["expect_reason"] in err.value.reason
    assert err.value.http_status == 400


# ---------------------------------------------------------------------------- behaviours

def _local(apps: dict[str, Any], **local: Any) -> dict[str, Any]:
    return {"local": {"apps": apps, **local}}


def test_local_explicit_empty_apps_means_remove_all() -> None:
    target = parse_local_target(_local({}, config={"A": "1"}), device_uuid="u")
    assert target.apps == {} and target.config == {"A": "1"}


def test_local_app_without_commit_has_no_release() -> None:
    target = parse_local_target(_local({"5": {"name": "a", "services": {}}}), device_uuid="u")
    assert target.apps["5"].release is None


def test_local_accepts_v3_bodies_and_ignores_force() -> None:
    raw = load(FIXTURES / "multi-app.json")
    uuid = next(iter(raw))
    body = {**raw, "force": True}
    assert parse_local_target(body, device_uuid=uuid) == parse_target(raw, device_uuid=uuid)


def test_local_v3_body_for_another_device_names_the_uuid() -> None:
    raw = load(FIXTURES / "multi-app.json")
    with pytest.raises(TargetInvalid, match="Expected target state for local device"):
        parse_local_target(raw, device_uuid="not-this-one")


def test_local_releases_round_trip_through_v3() -> None:
    target = parse_local_target(load(FIXTURES / "demo.json"), device_uuid=LOCAL_UUID)
    v3 = to_v3(target)
    app = v3[LOCAL_UUID]["apps"]["1"]
    assert app["releases"]["demo0001"]["services"]["web"]["composition"] == {
        "ports": ["8080:8080"]}
    assert parse_target(v3, device_uuid=LOCAL_UUID) == target


def test_numeric_identifiers_accept_integer_strings() -> None:
    raw = copy.deepcopy(load(FIXTURES / "multi-app.json"))
    uuid = next(iter(raw))
    app = next(iter(raw[uuid]["apps"].values()))
    app["id"] = " 1234 "
    target = parse_target(raw, device_uuid=uuid)
    assert next(iter(target.apps.values())).app_id == 1234


def test_input_is_not_aliased() -> None:
    raw = copy.deepcopy(load(FIXTURES / "demo.json"))
    target = parse_local_target(raw, device_uuid="u")
    raw["local"]["apps"]["1"]["services"]["2"]["command"].append("oops")
    release = target.apps["1"].release
    assert release is not None
    assert release.services["worker"].composition["command"][-1] != "oops"


# ---------------------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def _check_only_target_invalid(raw: object, uuid: str) -> None:
    for parse in (parse_target, parse_local_target):
        try:
            target = parse(raw, device_uuid=uuid)
        except TargetInvalid as err:
            assert isinstance(err.path, str) and err.reason
        else:
            assert parse_target(to_v3(target), device_uuid=uuid) == target


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(["u", ""]))
def test_arbitrary_json_only_raises_target_invalid(raw: object, uuid: str) -> None:
    _check_only_target_invalid(raw, uuid)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*prefix, i)))
    return out


FUZZ_BASES = [load(p) for p in VALID]


@st.composite
def mutated_targets(draw: st.DrawFn) -> tuple[Any, str]:
    """A valid fixture with one subtree replaced by random JSON (or a key removed)."""
    base = copy.deepcopy(draw(st.sampled_from(FUZZ_BASES)))
    uuid = LOCAL_UUID if "local" in base else next(iter(base))
    path = draw(st.sampled_from(_paths(base)[1:]))
    parent = base
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return base, uuid


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_targets())
def test_mutated_fixtures_only_raise_target_invalid(case: tuple[Any, str]) -> None:
    raw, uuid = case
    _check_only_target_invalid(raw, uuid)


def _host_target(is_host: bool) -> dict[str, Any]:
    def svc(sid: int, labels: dict[str, str]) -> dict[str, Any]:
        return {"id": sid, "image_id": sid, "image": "reg/hostos@sha256:" + "a" * 64,
                "environment": {}, "labels": labels}

    return {LOCAL_UUID: {"name": "d", "config": {}, "apps": {"h" * 32: {
        "id": 9, "name": "raspberrypi4-64", "class": "app", "is_host": is_host,
        "releases": {"r" * 32: {"id": 3, "services": {
            "hostos": svc(1, {"io.balena.image.store": "root"}),
            "kernel-modules": svc(2, {"io.balena.image.class": "overlay"}),
            "helper": svc(3, {"io.balena.image.store": "data"}),
            "plain": svc(4, {}),
        }}}}}}}


def test_host_app_services_of_the_os_itself_are_skipped() -> None:
    target = parse_target(_host_target(True), device_uuid=LOCAL_UUID)
    release = target.apps["h" * 32].release
    assert release is not None and sorted(release.services) == ["helper", "plain"]
    # the same labels on an ordinary app mean nothing (upstream filters host apps only)
    ordinary = parse_target(_host_target(False), device_uuid=LOCAL_UUID).apps["h" * 32]
    assert ordinary.release is not None and len(ordinary.release.services) == 4
