"""Compose values, image names and the target service -> Docker create body conversion."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.errors import ConfigError, NotFound, TargetInvalid
from supervisor.model.compose import (
    _FIELDS,
    NetworkConfig,
    VolumeConfig,
    parse_composition,
    parse_network_config,
)
from supervisor.model.compose_values import PortBinding, parse_duration_ns, parse_memory
from supervisor.model.images import image_registry, normalise_image_name, same_image
from supervisor.model.spec import (
    HASH_LABEL,
    DeviceContext,
    app_networks,
    container_spec,
    is_handover_name,
    network_spec,
    parse_container_name,
    volume_spec,
    wants_supervisor_api,
)
from supervisor.model.target import TargetApp, TargetRelease, TargetService

APP_UUID = "a" * 32
DEV = DeviceContext(
    device_uuid="d" * 32, device_type="raspberrypi4-64", device_arch="aarch64",
    os_version="balenaOS 6.5.1+rev1", device_name="my-device", hostname="devhost",
    listen_port=48484, api_endpoint="https://api.example", device_api_key="devkey",
    locks_dir="/tmp/balena-supervisor", supervisor_api_keys={(7, "main"): "scoped-key"},
)


def make_service(composition: dict[str, Any] | None = None, *, name: str = "main",
                 env: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                 image_id: int = 10) -> TargetService:
    comp = composition or {}
    return TargetService(name=name, service_id=3, image_id=image_id, image="busybox:latest",
                         environment=env or {}, labels=labels or {},
                         config=parse_composition(comp, path="c"), composition=comp)


def make_app(*services: TargetService, commit: str = "c0ffee", release_id: int = 1,
             networks: dict[str, NetworkConfig] | None = None) -> TargetApp:
    release = TargetRelease(commit=commit, release_id=release_id,
                            services={s.name: s for s in services}, networks=networks or {})
    return TargetApp(app_id=7, uuid=APP_UUID, name="myapp", release=release)


def spec_of(composition: dict[str, Any] | None = None, dev: DeviceContext = DEV,
            **kw: Any) -> Any:
    svc = make_service(composition, **kw)
    return container_spec(make_app(svc), svc, dev, image_ref="sha256:abc")


def env_of(spec: Any) -> dict[str, str]:
    return dict(e.split("=", 1) for e in spec.body["Env"])


# ---------------------------------------------------------------------------- images

@pytest.mark.parametrize(("name", "expected"), [
    ("busybox", "busybox:latest"),
    ("library/busybox:1.36", "library/busybox:1.36"),
    ("127.0.0.1:5000/balena-py/demo", "127.0.0.1:5000/balena-py/demo:latest"),
    ("localhost:5000/x:tag@sha256:abcd", "localhost:5000/x@sha256:abcd"),
    ("reg.balena-cloud.com/v2/9e2d@sha256:1df4", "reg.balena-cloud.com/v2/9e2d@sha256:1df4"),
])
def test_normalise_image_name(name: str, expected: str) -> None:
    assert normalise_image_name(name) == expected


def test_image_registry_and_same_image() -> None:
    assert image_registry("127.0.0.1:5000/a/b:1") == "127.0.0.1:5000"
    assert image_registry("localhost/x") == "localhost"
    assert image_registry("balena/app:1") is None
    assert image_registry("busybox") is None
    assert same_image("busybox", "busybox:latest")
    assert same_image("reg.io/a@sha256:1", "other.io/b:2@sha256:1")
    assert not same_image("busybox:1", "busybox:2")


@given(st.text(max_size=40))
def test_normalise_is_total_and_idempotent(name: str) -> None:
    once = normalise_image_name(name)
    assert normalise_image_name(once) == once


# ---------------------------------------------------------------------------- values

@pytest.mark.parametrize(("raw", "seconds"), [("10s", 10), ("1m30s", 90), ("1.5h", 5400),
                                              ("500ms", 0), (20, 20)])
def test_durations(raw: object, seconds: int) -> None:
    assert parse_duration_ns(raw, "p") // 1_000_000_000 == seconds


@pytest.mark.parametrize("raw", ["", "10", "ten seconds", "1x", [10]])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(TargetInvalid):
        parse_duration_ns(raw, "p")


@pytest.mark.parametrize(("raw", "size"), [
    ("512m", 512 * 1024**2), ("1g", 1024**3), ("1GB", 1024**3), ("100", 100), ("2kb", 2048),
    (4096, 4096), ("lots", 0), ("1.5g", 0),
])
def test_memory_sizes(raw: object, size: int) -> None:
    assert parse_memory(raw, "p") == size


def test_ports() -> None:
    cfg = parse_composition({"ports": ["8080", "127.0.0.1:80:8000/udp", "9000-9001:7000-7001",
                                       5353]}, path="c")
    assert set(cfg.ports) == {
        PortBinding(8080, "tcp", "", 8080),  # a bare port is published on the same host port
        PortBinding(8000, "udp", "127.0.0.1", 80),
        PortBinding(7000, "tcp", "", 9000), PortBinding(7001, "tcp", "", 9001),
        PortBinding(5353, "tcp", "", 5353),
    }
    body = spec_of({"ports": ["8080", "127.0.0.1:80:8000/udp"]}).body
    assert body["ExposedPorts"] == {"8080/tcp": {}, "8000/udp": {}}
    assert body["HostConfig"]["PortBindings"]["8000/udp"] == [
        {"HostIp": "127.0.0.1", "HostPort": "80"}]


@pytest.mark.parametrize("port", ["8000-8001:9000", "70000", "a:b", "2-1"])
def test_bad_ports(port: str) -> None:
    with pytest.raises(TargetInvalid) as err:
        parse_composition({"ports": [port]}, path="svc")
    assert err.value.path == "svc.ports.0"


def test_devices_defaults() -> None:
    body = spec_of({"devices": ["/dev/ttyUSB0", "/dev/a:/dev/b", "/dev/c:/dev/d:r"]}).body
    assert body["HostConfig"]["Devices"] == [
        {"PathOnHost": "/dev/ttyUSB0", "PathInContainer": "/dev/ttyUSB0",
         "CgroupPermissions": "rwm"},
        {"PathOnHost": "/dev/a", "PathInContainer": "/dev/b", "CgroupPermissions": "rwm"},
        {"PathOnHost": "/dev/c", "PathInContainer": "/dev/d", "CgroupPermissions": "r"},
    ]


def test_camel_case_keys_unknown_keys_and_wrong_types() -> None:
    cfg = parse_composition({"capAdd": ["NET_ADMIN"], "stopGracePeriod": "1m",
                             "memLimit": "1k", "expose": ["80"], "restart": "ON-FAILURE"},
                            path="c")
    assert cfg.cap_add == ("NET_ADMIN",) and cfg.stop_grace_period == 60
    assert cfg.mem_limit == 1024 and cfg.restart == "on-failure"
    assert cfg.ignored_fields == ("expose",)
    assert any("expose" in w for w in cfg.warnings)
    assert parse_composition({"restart": "sometimes"}, path="c").restart == "always"
    with pytest.raises(TargetInvalid) as err:
        parse_composition({"capAdd": "NET_ADMIN"}, path="x.composition")
    assert err.value.path == "x.composition.capAdd"


def test_defaults() -> None:
    cfg = parse_composition({}, path="c")
    assert (cfg.restart, cfg.tty, cfg.stop_grace_period, cfg.shm_size, cfg.ipc) == (
        "always", True, 10, 64 * 1024**2, "shareable")
    body = spec_of().body
    assert body["Tty"] is True and body["StopTimeout"] == 10
    assert body["HostConfig"]["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert "Cmd" not in body and "Entrypoint" not in body  # the image's own stay in effect


def test_command_string_is_split_like_a_shell() -> None:
    cfg = parse_composition({"command": "sh -c 'echo $HOME && ls'", "entrypoint": ["/init"]},
                            path="c")
    assert cfg.command == ("sh", "-c", "echo $HOME && ls")
    assert spec_of({"entrypoint": "/bin/sh -x"}).body["Entrypoint"] == ["/bin/sh", "-x"]


# ---------------------------------------------------------------------------- volumes

def test_volumes_are_namespaced_and_binds_dropped() -> None:
    spec = spec_of({"volumes": [
        "data:/data", "cache:/cache:ro", "/anon",
        {"type": "volume", "source": "logs", "target": "/logs", "read_only": True},
        {"type": "tmpfs", "target": "/scratch", "tmpfs": {"size": "1m"}},
        "/etc:/host-etc", {"type": "bind", "source": "/", "target": "/host"},
    ]})
    host = spec.body["HostConfig"]
    lock = "/tmp/balena-supervisor/services/7/main"
    assert host["Binds"] == [f"{lock}:/tmp/resin", f"{lock}:/tmp/balena", "7_data:/data",
                             "7_cache:/cache:ro"]
    assert host["Mounts"] == [
        {"Type": "volume", "Source": "7_logs", "Target": "/logs", "ReadOnly": True},
        {"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1024**2}},
    ]
    assert spec.body["Volumes"] == {"/anon": {}}
    cfg = make_service({"volumes": ["/etc:/x", {"type": "bind", "source": "/", "target": "/y"}]})
    assert len(cfg.config.warnings) == 2 and cfg.config.volumes == ()


def test_feature_label_binds() -> None:
    labels = {"io.balena.features.dbus": "1", "io.balena.features.journal-logs": "true",
              "io.balena.features.kernel-modules": "on", "io.balena.features.firmware": "1",
              "io.balena.features.balena-socket": "1", "io.balena.features.gpu": "1",
              "io.balena.features.sysfs": "0"}
    dev = replace(DEV, host_paths=frozenset({"/lib/modules"}), docker_socket="/run/docker.sock")
    spec = spec_of(labels=labels, dev=dev)
    binds = spec.body["HostConfig"]["Binds"]
    assert "/run/dbus:/host/run/dbus" in binds
    assert "/etc/machine-id:/etc/machine-id:ro" in binds
    assert "/lib/modules:/lib/modules" in binds
    assert "/lib/firmware:/lib/firmware" not in binds  # not present on this host
    assert "/sys:/sys" not in binds  # label value is falsy
    targets = {m["Target"] for m in spec.body["HostConfig"]["Mounts"]}
    assert targets == {"/host/run/balena-engine.sock", "/run/docker.sock", "/var/run/balena.sock"}
    assert env_of(spec)["DOCKER_HOST"] == "unix:///host/run/balena-engine.sock"
    assert spec.body["HostConfig"]["DeviceRequests"][0]["Capabilities"] == [["gpu"]]


# ---------------------------------------------------------------------------- env and labels

def test_environment_precedence() -> None:
    spec = spec_of({"environment": {"A": "compose", "B": "compose"}},
                   env={"B": "target", "BALENA_APP_NAME": "mine", "USER": "me",
                        "BALENA_DEVICE_NAME_AT_INIT": "ignored"})
    env = env_of(spec)
    assert env["A"] == "compose" and env["B"] == "target"
    assert env["BALENA_APP_NAME"] == "mine" and env["RESIN_APP_NAME"] == "myapp"
    assert env["USER"] == "me"
    assert env["BALENA_DEVICE_NAME_AT_INIT"] == env["RESIN_DEVICE_NAME_AT_INIT"] == "my-device"
    assert env["BALENA_APP_ID"] == "7" and env["RESIN_APP_UUID"] == APP_UUID
    assert env["BALENA_SERVICE_NAME"] == "main" and env["BALENA_DEVICE_UUID"] == "d" * 32
    assert env["BALENA_DEVICE_TYPE"] == "raspberrypi4-64" and env["RESIN_DEVICE_ARCH"] == "aarch64"
    assert env["BALENA_HOST_OS_VERSION"] == "balenaOS 6.5.1+rev1"
    assert env["BALENA_APP_LOCK_PATH"] == "/tmp/balena/updates.lock"
    assert env["BALENA"] == env["RESIN"] == "1"
    assert env["BALENA_SERVICE_HANDOVER_COMPLETE_PATH"] == "/tmp/balena/handover-complete"
    assert env["RESIN_SERVICE_KILL_ME_PATH"] == "/tmp/balena/handover-complete"
    assert "USER=root" in spec_of().body["Env"]


def test_feature_label_env_overrides_user_values() -> None:
    spec = spec_of(labels={"io.resin.features.supervisor-api": "1",
                           "io.balena.features.balena-api": "1"},
                   env={"BALENA_SUPERVISOR_API_KEY": "user", "BALENA_API_URL": "user"})
    env = env_of(spec)
    assert env["BALENA_SUPERVISOR_API_KEY"] == env["RESIN_SUPERVISOR_API_KEY"] == "scoped-key"
    assert env["BALENA_SUPERVISOR_ADDRESS"] == "http://10.114.104.1:48484"
    assert env["BALENA_API_KEY"] == "devkey" and env["BALENA_API_URL"] == "https://api.example"
    assert "supervisor0" in dict(spec.extra_networks)


def test_supervisor_api_with_host_networking_uses_localhost() -> None:
    spec = spec_of({"network_mode": "host"}, labels={"io.balena.features.supervisor-api": "1"})
    assert env_of(spec)["BALENA_SUPERVISOR_HOST"] == "127.0.0.1"
    assert spec.extra_networks == () and spec.body["HostConfig"]["NetworkMode"] == "host"
    assert spec.body["Hostname"] == "devhost"  # host networking defaults to the device hostname


def test_supervisor_api_needs_a_scoped_key() -> None:
    svc = make_service(name="other", labels={"io.balena.features.supervisor-api": "true"})
    assert wants_supervisor_api(svc)
    with pytest.raises(ConfigError):
        container_spec(make_app(svc), svc, DEV, image_ref="x")


def test_device_name_with_newline_aborts_creation() -> None:
    with pytest.raises(ConfigError):
        spec_of(dev=replace(DEV, device_name="a\nb"))


def test_labels() -> None:
    spec = spec_of({"labels": {"from": "compose", "x": "compose"}},
                   labels={"x": "target", "io.balena.app-id": "999",
                           "io.resin.update.strategy": "hand-over"})
    labels = spec.body["Labels"]
    assert labels["from"] == "compose" and labels["x"] == "target"
    assert labels["io.balena.update.strategy"] == "hand-over"
    assert labels["io.balena.supervised"] == "true"
    assert labels["io.balena.app-id"] == "7"  # supervisor labels always win
    assert labels["io.balena.app-uuid"] == APP_UUID
    assert labels["io.balena.service-id"] == "3" and labels["io.balena.service-name"] == "main"
    assert labels[HASH_LABEL] == spec.config_hash


# ---------------------------------------------------------------------------- networks

def test_default_network_is_main_with_service_alias() -> None:
    spec = spec_of()
    main = f"{APP_UUID}_default"
    assert spec.body["HostConfig"]["NetworkMode"] == main
    assert spec.body["NetworkingConfig"] == {"EndpointsConfig": {main: {"Aliases": ["main"]}}}


def test_networks_first_is_main_others_connected_after() -> None:
    spec = spec_of({"networks": {"back": {"aliases": ["db"], "ipv4_address": "172.20.0.5"},
                                 "front": None}})
    back, front = f"{APP_UUID}_back", f"{APP_UUID}_front"
    assert spec.body["HostConfig"]["NetworkMode"] == back
    assert spec.body["NetworkingConfig"]["EndpointsConfig"][back] == {
        "Aliases": ["db", "main"], "IPAMConfig": {"IPv4Address": "172.20.0.5"}}
    assert spec.extra_networks == ((front, {"Aliases": ["main"]}),)


def test_service_network_mode() -> None:
    svc = make_service({"network_mode": "service:web", "depends_on": ["db"]})
    app = make_app(svc)
    spec = container_spec(app, svc, DEV, image_ref="x")
    assert spec.depends_on == ("db", "web") and spec.network_service == "web"
    assert spec.body["HostConfig"]["NetworkMode"] == "service:web"
    resolved = container_spec(app, svc, DEV, image_ref="x", container_ids={"web": "abc123"})
    assert resolved.body["HostConfig"]["NetworkMode"] == "container:abc123"
    assert resolved.config_hash == spec.config_hash and resolved.network_service is None
    with pytest.raises(NotFound):
        container_spec(app, svc, DEV, image_ref="x", container_ids={})


def test_container_network_mode_is_ignored() -> None:
    cfg = parse_composition({"network_mode": "container:abc"}, path="c")
    assert cfg.network_mode is None and cfg.warnings


def test_app_networks_default_is_config_only_when_all_host() -> None:
    host_only = make_app(make_service({"network_mode": "host"}))
    assert app_networks(host_only)["default"].config_only
    mixed = make_app(make_service({"network_mode": "host"}), make_service(name="b"))
    assert not app_networks(mixed)["default"].config_only
    custom = make_app(make_service(), networks={"default": NetworkConfig(driver="macvlan")})
    assert app_networks(custom)["default"].driver == "macvlan"
    assert app_networks(TargetApp(app_id=1, uuid="u", name="n"))["default"].config_only


def test_network_and_volume_specs() -> None:
    app = make_app(make_service())
    cfg = parse_network_config({"driver_opts": {"mtu": 1400}, "labels": {"io.resin.x": "1"},
                                "ipam": {"config": [{"subnet": "10.1.0.0/16",
                                                     "gateway": "10.1.0.1"}]}}, path="n")
    net = network_spec(app, "back", cfg)
    assert net.name == f"{APP_UUID}_back"
    assert net.labels["io.balena.supervised"] == "true"
    assert net.labels["io.balena.app-id"] == "7" and net.labels["io.balena.x"] == "1"
    assert net.labels["io.balena.private.ipam.config"] == "true"
    assert net.kwargs["options"] == {"mtu": "1400"}
    assert net.kwargs["ipam"]["Config"] == [{"Subnet": "10.1.0.0/16", "Gateway": "10.1.0.1"}]
    assert network_spec(app, "back", replace(cfg, internal=True)).config_hash != net.config_hash
    vol = volume_spec(app, "data", VolumeConfig(driver_opts={"type": "tmpfs"}))
    assert (vol.name, vol.driver, vol.driver_opts) == ("7_data", "local", {"type": "tmpfs"})
    assert vol.labels["io.balena.supervised"] == "true"
    assert vol.labels["io.balena.app-uuid"] == APP_UUID
    assert volume_spec(app, "data", VolumeConfig()).config_hash != vol.config_hash


# ---------------------------------------------------------------------------- names and hashes

def test_container_name_and_parse() -> None:
    spec = spec_of()
    assert spec.name == "main_10_1_c0ffee"
    assert parse_container_name("/main_10_1_c0ffee") == ("main", 10, 1, "c0ffee")
    assert parse_container_name("my_svc_11_2") == ("my_svc", 11, 2, None)  # legacy
    assert parse_container_name("old_one_11_1_deadbeef") == ("one", 11, 1, "deadbeef")
    assert is_handover_name("/old_one_11_1_deadbeef") and not is_handover_name("one_1_1_x")
    assert parse_container_name("not-ours") is None


def test_release_only_change_keeps_the_hash() -> None:
    svc = make_service({"command": ["run"]}, env={"A": "1"})
    first = container_spec(make_app(svc), svc, DEV, image_ref="sha256:one")
    svc2 = replace(svc, image_id=99)
    second = container_spec(make_app(svc2, commit="newer", release_id=2), svc2,
                            replace(DEV, device_name="renamed"), image_ref="sha256:two")
    assert second.name == "main_99_2_newer" and second.name != first.name
    assert second.config_hash == first.config_hash


@pytest.mark.parametrize("change", [
    {"env": {"A": "2"}}, {"composition": {"command": ["run", "--fast"]}},
    {"labels": {"x": "y"}}, {"composition": {"command": ["run"], "privileged": True}},
])
def test_config_change_alters_the_hash(change: dict[str, Any]) -> None:
    base = spec_of({"command": ["run"]}, env={"A": "1"})
    kwargs: dict[str, Any] = {"env": {"A": "1"}}
    kwargs.update(change)
    composition = kwargs.pop("composition", {"command": ["run"]})
    assert spec_of(composition, **kwargs).config_hash != base.config_hash


def test_hash_is_deterministic() -> None:
    assert spec_of({"ports": ["1:1", "2:2"]}).config_hash == \
        spec_of({"ports": ["2:2", "1:1"]}).config_hash


def test_healthcheck_and_limits_in_body() -> None:
    body = spec_of({"healthcheck": {"test": "true", "interval": "30s", "retries": 3},
                    "mem_limit": "64m", "cpus": 1.5, "working_dir": "/srv/", "init": True,
                    "tmpfs": "/run:size=1m", "ulimits": {"nofile": 1024},
                    "extra_hosts": ["db=10.0.0.1"], "security_opt": ["label=x", "seccomp=y"],
                    "sysctls": {"net.core.somaxconn": 1024}}).body
    assert body["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 30 * 10**9,
                                   "Retries": 3}
    host = body["HostConfig"]
    assert host["Memory"] == 64 * 1024**2 and host["NanoCpus"] == 1_500_000_000
    assert host["Init"] is True and host["Tmpfs"] == {"/run": "size=1m"}
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 1024}]
    assert host["ExtraHosts"] == ["db:10.0.0.1"] and host["SecurityOpt"] == ["seccomp=y"]
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert body["WorkingDir"] == "/srv"
    assert spec_of({"healthcheck": {"disable": True}}).body["Healthcheck"] == {"Test": ["NONE"]}


# ---------------------------------------------------------------------------- fuzzing

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=10,
)
_keys = st.sampled_from([*_FIELDS, "volumes", "security_opt", "network_mode", "capAdd",
                         "stopGracePeriod", "build"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=4))
def test_any_composition_gives_target_invalid_or_a_usable_spec(comp: dict[str, Any]) -> None:
    try:
        svc = make_service(comp)
    except TargetInvalid as err:
        assert err.path.startswith("c.")
        return
    spec = container_spec(make_app(svc), svc, DEV, image_ref="img")
    json.dumps(spec.body, allow_nan=False)
    assert len(spec.config_hash) == 64
