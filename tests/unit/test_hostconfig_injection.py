"""PATCH /v1/device/host-config cannot write anything but well-formed values into the host's
files (issue: a key wrote a `base { ... }` block into redsocks.conf).

Through the real path: the HTTP app over the real runtime actions (`RuntimeApi`), with the
boot partition and config.json as real files in a temp dir. Each injection is a 400 naming the
field, and redsocks.conf, no_proxy and config.json (the hostname) stay byte-for-byte the same.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from supervisor.api.actions import RuntimeApi
from supervisor.api.app import build_app
from supervisor.host.actions import DryRunHostActions
from supervisor.model.current import Current
from supervisor.reconciler import LoopState
from supervisor.runtime import Runtime
from supervisor.settings import load_settings
from supervisor.store import AsyncStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

REDSOCKS = ('base {\n\tlog_debug = off;\n\tlog_info = on;\n\tlog = stderr;\n\tdaemon = off;\n'
            '\tredirector = iptables;\n}\n\nredsocks {\n\ttype = socks5;\n\tip = example.org;\n'
            '\tport = 1080;\n\tlogin = "foo";\n\tpassword = "bar";\n\tlocal_ip = 127.0.0.1;\n'
            '\tlocal_port = 12345;\n}\n')
NO_PROXY = "152.10.30.4\n253.1.1.0/16"
PREFIX = "Could not parse host config input to a valid format:\n"
CRON_BLOCK = '}\nbase { log = "file:/etc/cron.d/x"; user = root; }\nredsocks {'


class _Loop:
    """What the device actions read of the reconciler."""

    def __init__(self) -> None:
        self.state = LoopState()
        self.current: Current | None = Current()
        self.batch_in_flight = False

    def mark_dirty(self, *, force: bool = False) -> None: ...

    def target_changed(self, *, force: bool = False) -> None: ...

    def hold(self, reason: str) -> None: ...


@pytest.fixture
def device(tmp_path: Path) -> Iterator[tuple[TestClient, Path, list[Any]]]:
    boot = tmp_path / "boot"
    (boot / "system-proxy").mkdir(parents=True)
    (boot / "system-proxy" / "redsocks.conf").write_text(REDSOCKS)
    (boot / "system-proxy" / "no_proxy").write_text(NO_PROXY)
    (boot / "config.json").write_text(json.dumps({"uuid": "a" * 32, "hostname": "before"}))
    settings = load_settings({
        "data_dir": str(tmp_path / "data"), "boot_dir": str(boot),
        "state_dir": str(tmp_path / "state"), "locks_dir": str(tmp_path / "locks"),
        "listen": "127.0.0.1:48484", "host_actions": "dry-run"}, {})
    host_calls: list[Any] = []

    async def record(action: str, details: dict[str, Any]) -> None:
        host_calls.append((action, details))

    rt = Runtime(settings)
    loop = asyncio.new_event_loop()
    rt.store = loop.run_until_complete(AsyncStore.open(settings.db_path))
    rt.host = DryRunHostActions(record)
    rt.reconciler = _Loop()  # type: ignore[assignment]
    rt._device = rt.device_view()
    rt.publish()
    try:
        with TestClient(build_app(RuntimeApi(rt))) as client:  # unmanaged: no key needed
            yield client, boot, host_calls
    finally:
        loop.run_until_complete(rt.store.close())
        loop.close()


def snapshot(boot: Path) -> dict[str, bytes]:
    return {str(p.relative_to(boot)): p.read_bytes() for p in sorted(boot.rglob("*"))
            if p.is_file()}


def proxy(**fields: Any) -> dict[str, Any]:
    return {"network": {"proxy": fields}}


INJECTIONS = [
    (proxy(ip=f"1.2.3.4;\n{CRON_BLOCK}"), "network.proxy.ip"),
    (proxy(ip="1.2.3.4\u0000"), "network.proxy.ip"),
    (proxy(ip='proxy"host'), "network.proxy.ip"),
    (proxy(ip="proxy host"), "network.proxy.ip"),
    (proxy(type="socks5;\n\tlocal_ip = 0.0.0.0"), "network.proxy.type"),
    (proxy(type="socks6"), "network.proxy.type"),
    (proxy(port="1080;\n}"), "network.proxy.port"),
    (proxy(port=0), "network.proxy.port"),
    (proxy(port=65536), "network.proxy.port"),
    (proxy(login=f'u";\n{CRON_BLOCK}'), "network.proxy.login"),
    (proxy(login="u\nv"), "network.proxy.login"),
    (proxy(login="u{v}"), "network.proxy.login"),
    (proxy(login=7), "network.proxy.login"),
    (proxy(password='p"; user = root; "'), "network.proxy.password"),
    (proxy(password="p\\"), "network.proxy.password"),
    (proxy(password="p\u0000q"), "network.proxy.password"),
    (proxy(password="p;q"), "network.proxy.password"),
    (proxy(password="p" * 256), "network.proxy.password"),
    (proxy(noProxy=["10.0.0.0/8\n0.0.0.0/0"]), "network.proxy.noProxy.0"),
    (proxy(noProxy=["1.2.3.4", "a\u0000b"]), "network.proxy.noProxy.1"),
    (proxy(noProxy=["{"]), "network.proxy.noProxy.0"),
    (proxy(noProxy=["10.0.0.0/33"]), "network.proxy.noProxy.0"),
    (proxy(noProxy="10.0.0.0/8\n1.2.3.4"), "network.proxy.noProxy"),
    (proxy(dns="1.1.1.1;}:53"), "network.proxy.1.dns"),
    ({"network": {"hostname": "box\nevil"}}, "network.hostname"),
    ({"network": {"hostname": "box\u0000"}}, "network.hostname"),
    ({"network": {"hostname": 'box"'}}, "network.hostname"),
    ({"network": {"hostname": "{box}"}}, "network.hostname"),
    ({"network": {"hostname": "-box"}}, "network.hostname"),
    ({"network": {"hostname": "b" * 64}}, "network.hostname"),
]


@pytest.mark.parametrize(("body", "field"), INJECTIONS)
def test_injection_is_400_naming_the_field_and_writes_nothing(
        device: tuple[TestClient, Path, list[Any]], body: dict[str, Any], field: str) -> None:
    client, boot, host_calls = device
    before = snapshot(boot)
    res = client.patch("/v1/device/host-config", json=body)
    assert res.status_code == 400
    assert res.headers["content-type"].startswith("text/html")
    assert res.text.startswith(PREFIX)
    assert f"at {field} " in res.text
    assert snapshot(boot) == before
    assert host_calls == []


@pytest.mark.parametrize("secret", ['p"; user = root; "', "p\nq"])
def test_a_refused_password_is_not_echoed(device: tuple[TestClient, Path, list[Any]],
                                          secret: str) -> None:
    client, _boot, _calls = device
    res = client.patch("/v1/device/host-config", json=proxy(password=secret))
    assert res.status_code == 400
    assert secret not in res.text and json.dumps(secret) not in res.text


def test_well_formed_values_are_written(device: tuple[TestClient, Path, list[Any]]) -> None:
    # the control for the tests above: the same fields, well formed, do change the files
    client, boot, host_calls = device
    res = client.patch("/v1/device/host-config", json={"network": {
        "hostname": "box-2.local",
        "proxy": {"type": "http-connect", "ip": "2001:db8::1", "port": "3128",
                  "login": "user name", "password": "pa$$ w0rd:=!", "dns": "dns.example:53",
                  "noProxy": ["10.0.0.0/8", "192.168.1.7", ".corp.example", "fd00::/8"]}}})
    assert (res.status_code, res.text) == (200, "OK")
    conf = (boot / "system-proxy" / "redsocks.conf").read_text()
    assert '\tlogin = "user name";\n\tpassword = "pa$$ w0rd:=!";\n' in conf
    assert "\tip = 2001:db8::1;\n\tport = 3128;\n" in conf
    assert "\tremote_ip = dns.example;\n\tremote_port = 53;\n" in conf
    assert (boot / "system-proxy" / "no_proxy").read_text() == \
        "10.0.0.0/8\n192.168.1.7\n.corp.example\nfd00::/8"
    assert json.loads((boot / "config.json").read_text())["hostname"] == "box-2.local"
    assert host_calls
