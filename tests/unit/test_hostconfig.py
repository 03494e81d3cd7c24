"""Host config: redsocks.conf layout and parsing, PATCH validation texts, apply semantics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from supervisor.errors import BadRequest
from supervisor.host import hostconfig
from supervisor.host.hostconfig import (
    PROXY_SERVICES,
    HostConfigPatch,
    apply_patch,
    parse_redsocks,
    read_host_config,
    render_redsocks,
    validate_patch,
)

UUID = "d9f3c0a1b2c3d4e5f60718293a4b5c6d"

BASE = (
    "base {\n\tlog_debug = off;\n\tlog_info = on;\n\tlog = stderr;\n\tdaemon = off;\n"
    "\tredirector = iptables;\n}\n"
)


def redsocks_block(*fields: str) -> str:
    lines = "".join(f"\t{f};\n" for f in fields)
    return f"redsocks {{\n{lines}\tlocal_ip = 127.0.0.1;\n\tlocal_port = 12345;\n}}\n"


def dnsu2t_block(ip: str, port: int) -> str:
    return (f"dnsu2t {{\n\tremote_ip = {ip};\n\tremote_port = {port};\n"
            "\tlocal_ip = 127.0.0.1;\n\tlocal_port = 53;\n}\n")


DEFAULT_FILE = "\n".join([
    BASE,
    redsocks_block("ip = example.org", "port = 1080", "type = socks5", 'login = "foo"',
                   'password = "bar"'),
    dnsu2t_block("1.2.3.4", 54),
])
DEFAULT_PROXY = {"ip": "example.org", "port": 1080, "type": "socks5", "login": "foo",
                 "password": "bar", "dns": "1.2.3.4:54"}


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    proxy = tmp_path / "system-proxy"
    proxy.mkdir()
    (proxy / "redsocks.conf").write_text(DEFAULT_FILE)
    (proxy / "no_proxy").write_text("152.10.30.4\n253.1.1.0/16\n")
    return tmp_path


def conf_text(boot: Path) -> str:
    return (boot / "system-proxy" / "redsocks.conf").read_text()


def patch(boot: Path, body: dict[str, Any], names: list[str] | None = None) -> list[str]:
    sink = names if names is not None else []
    return apply_patch(boot, validate_patch(body), UUID, sink.append)


# ------------------------------------------------------------------------------- render


def test_render_exact_layout_with_quoted_auth() -> None:
    text = render_redsocks({"type": "socks5", "ip": "example.org", "port": 1080,
                            "login": "foo", "password": '"bar"'})
    assert text == BASE + "\n" + redsocks_block(
        "type = socks5", "ip = example.org", "port = 1080", 'login = "foo"', 'password = "bar"')


def test_render_dns_string_adds_dnsu2t_block() -> None:
    text = render_redsocks({"type": "socks5", "ip": "p", "port": 1, "dns": "1.1.1.1:54"})
    assert text.endswith("\n" + dnsu2t_block("1.1.1.1", 54))
    assert text.count("\n\n") == 2  # three blocks, blank line between each


def test_render_dns_true_uses_google_and_false_omits() -> None:
    proxy = {"type": "socks5", "ip": "p", "port": 1}
    assert render_redsocks({**proxy, "dns": True}).endswith(dnsu2t_block("8.8.8.8", 53))
    assert "dnsu2t" not in render_redsocks({**proxy, "dns": False})


@pytest.mark.parametrize("conf", [{}, {"dns": "3.3.3.3:52"}, {"dns": True},
                                  {"local_ip": "1.2.3.4"}])
def test_render_without_proxy_fields_is_empty(conf: dict[str, Any]) -> None:
    assert render_redsocks(conf) == ""


# -------------------------------------------------------------------------------- parse


def test_parse_round_trip() -> None:
    assert parse_redsocks(DEFAULT_FILE) == DEFAULT_PROXY
    assert render_redsocks(parse_redsocks(DEFAULT_FILE)) == DEFAULT_FILE


def test_parse_finds_blocks_anywhere_and_allows_braces_in_values() -> None:
    text = ("dnstc {\n\ttest = test;\n}\nredsocks {\n\tlocal_ip = 127.0.0.1;\n"
            "\ttype = http-connect;\n\tip = {test2}.balenadev.io;\n\tport = 1082;\n"
            '\tlogin = "us}{er";\n\tpassword = "p{}a}}s{{s";\n}\n' + BASE)
    assert parse_redsocks(text) == {"type": "http-connect", "ip": "{test2}.balenadev.io",
                                    "port": 1082, "login": "us}{er", "password": "p{}a}}s{{s"}


def test_parse_strips_quotes_and_ignores_unsupported_fields() -> None:
    text = ('redsocks {\n\ttype = socks5;\n\tip = example.org;\n\tport = 1080;\n'
            '\tlogin = "user;\n\tpassword = pass";\n\tlocal_ip = 127.0.0.2;\n'
            '\tnoProxy = bad.server.com\n}\n')
    assert parse_redsocks(text) == {"type": "socks5", "ip": "example.org", "port": 1080,
                                    "login": "user", "password": "pass"}


def test_parse_keeps_equals_signs_inside_passwords() -> None:
    conf = {"type": "socks5", "ip": "h", "port": 1, "login": "u", "password": "cGFzcw=="}
    assert parse_redsocks(render_redsocks(conf)) == conf


@pytest.mark.parametrize("text", [
    "redsocks {\n\ttype = socks6;\n\tip = 456;\n\tport = bar;\n}\n",
    "redsocks {\n\ttype = socks5;\n}\n" + dnsu2t_block("1.1.1.1", 54),
    "redsocks {\n\tlocal_ip 127.0.0.1;\n\t= socks5;\n\tip = ;\n\t= 1080;\n\tlogin =;\n}\n",
    BASE + "\n" + dnsu2t_block("1.1.1.1", 54),
    "   \n",
])
def test_parse_invalid_redsocks_is_empty(text: str) -> None:
    assert parse_redsocks(text) == {}


def test_parse_partial_dnsu2t_is_ignored() -> None:
    text = BASE + redsocks_block("type = socks5", "ip = h", "port = 1") + \
        "\ndnsu2t {\n\tremote_port = 53;\n}\n"
    assert parse_redsocks(text) == {"type": "socks5", "ip": "h", "port": 1}


# --------------------------------------------------------------------------------- read


def test_read_host_config_shape(boot: Path) -> None:
    body = read_host_config(boot, "deadbeef")
    assert body == {"network": {"hostname": "deadbeef", "proxy": {
        **DEFAULT_PROXY, "noProxy": ["152.10.30.4", "253.1.1.0/16"]}}}
    assert isinstance(body["network"]["proxy"]["port"], int)
    json.dumps(body)


def test_read_host_config_without_proxy_file(tmp_path: Path) -> None:
    (tmp_path / "system-proxy").mkdir()
    (tmp_path / "system-proxy" / "no_proxy").write_text("10.0.0.1\n")
    assert read_host_config(tmp_path, "abc") == {"network": {"hostname": "abc"}}


def test_read_invalid_proxy_is_empty_plus_no_proxy(boot: Path) -> None:
    (boot / "system-proxy" / "redsocks.conf").write_text("redsocks {\n\ttype = x;\n}\n")
    assert read_host_config(boot, "h")["network"]["proxy"] == {
        "noProxy": ["152.10.30.4", "253.1.1.0/16"]}


def test_read_hostname_trims(tmp_path: Path) -> None:
    (tmp_path / "hostname").write_text("balena\n")
    assert hostconfig.read_hostname(tmp_path / "hostname") == "balena"


# ----------------------------------------------------------------------------- validate

PREFIX = "Could not parse host config input to a valid format:\n"
NETWORK_TYPE = ("Partial<{| proxy: ({ [K in string]: any } & Partial<{ dns: "
                "(AddressString | boolean) }>), hostname: string |}>")


@pytest.mark.parametrize(("body", "report"), [
    ({}, f"Expecting {NETWORK_TYPE} at network but instead got: undefined"),
    ({"network": 123}, f"Expecting {NETWORK_TYPE} at network but instead got: 123"),
    ({"network": None}, f"Expecting {NETWORK_TYPE} at network but instead got: null"),
    ({"network": ["a"]}, f'Expecting {NETWORK_TYPE} at network but instead got: ["a"]'),
    ([], f"Expecting {NETWORK_TYPE} at network but instead got: undefined"),
    ({"network": {"hostname": 123}},
     "Expecting string at network.hostname but instead got: 123"),
    ({"network": {"proxy": None}},
     "Expecting { [K in string]: any } at network.proxy.0 but instead got: null\n"
     "Expecting Partial<{ dns: (AddressString | boolean) }> at network.proxy.1 but instead "
     "got: null"),
])
def test_validate_rejects_with_upstream_text(body: Any, report: str) -> None:
    with pytest.raises(BadRequest) as err:
        validate_patch(body)
    assert err.value.message == PREFIX + report
    assert err.value.http_status == 400


@pytest.mark.parametrize("dns", [123, "invalid-because-no-colon", ":", ":53", "1.1.1.1",
                                 "example.com:not-a-port", "", "1.2.3.4:", None])
def test_validate_rejects_bad_dns(dns: object) -> None:
    body = {"network": {"proxy": {"type": "http-connect", "ip": "test.balena.io",
                                  "port": 1081, "dns": dns}}}
    with pytest.raises(BadRequest) as err:
        validate_patch(body)
    shown = json.dumps(dns)
    assert err.value.message == (PREFIX + "Expecting one of:\n    AddressString\n    boolean\n"
                                 f"at network.proxy.1.dns but instead got: {shown}")


@pytest.mark.parametrize("dns", ["balena.io:53", "1.1.1.1:5", "balena.io:65535", True, False])
def test_validate_accepts_good_dns(dns: object) -> None:
    body = {"network": {"proxy": {"type": "http-connect", "ip": "h", "port": 1, "dns": dns}}}
    assert validate_patch(body).proxy == body["network"]["proxy"]


def test_validate_full_body() -> None:
    result = validate_patch({"network": {"hostname": "newname", "proxy": {
        "type": "http-connect", "ip": "p.example", "port": "8123", "login": "u",
        "password": "p", "noProxy": ["10.0.0.0/8"]}}, "force": True})
    assert result == HostConfigPatch(
        hostname="newname",
        proxy={"type": "http-connect", "ip": "p.example", "port": "8123", "login": "u",
               "password": "p"},
        no_proxy=("10.0.0.0/8",), force=True)


def test_validate_lenient_proxy_is_accepted_with_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    # a partial proxy is merged into the current one: accepted, with upstream's warning
    result = validate_patch({"network": {"proxy": {"ip": "p.example", "noProxy": False}}})
    assert result.proxy == {"ip": "p.example"}
    assert result.no_proxy == ()
    assert "Malformed host config detected" in caplog.text
    assert "network.proxy.0.0.type" in caplog.text


@pytest.mark.parametrize(("body", "force"), [
    ({"network": {}, "force": True}, True),
    ({"network": {}, "force": "true"}, True),
    ({"network": {}, "force": "1"}, True),
    ({"network": {}, "force": "yes"}, False),
    ({"network": {"force": True}}, False),  # force inside network is ignored
    ({"network": {}}, False),
])
def test_validate_force_is_read_from_the_top_level(body: dict[str, Any], force: bool) -> None:
    assert validate_patch(body).force is force


def test_validate_empty_network_changes_nothing() -> None:
    assert validate_patch({"network": {}}) == HostConfigPatch()


# -------------------------------------------------------------------------------- apply


def test_apply_hostname(boot: Path) -> None:
    names: list[str] = []
    assert patch(boot, {"network": {"hostname": "test"}}, names) == []
    assert names == ["test"]
    assert conf_text(boot) == DEFAULT_FILE


def test_apply_empty_hostname_uses_uuid_prefix(boot: Path) -> None:
    names: list[str] = []
    patch(boot, {"network": {"hostname": ""}}, names)
    assert names == [UUID[:7]]


def test_apply_empty_proxy_removes_redsocks_conf(boot: Path) -> None:
    assert patch(boot, {"network": {"proxy": {}}}) == list(PROXY_SERVICES)
    assert not (boot / "system-proxy" / "redsocks.conf").exists()
    assert read_host_config(boot, "h") == {"network": {"hostname": "h"}}


def test_apply_replaces_every_field(boot: Path) -> None:
    new = {"ip": "example2.org", "port": 1090, "type": "http-relay", "login": "bar",
           "password": "foo", "dns": "2.2.2.2:52", "noProxy": ["balena.io", "222.22.2.2"]}
    patch(boot, {"network": {"proxy": new}})
    assert conf_text(boot) == "\n".join([
        BASE, redsocks_block("ip = example2.org", "port = 1090", "type = http-relay",
                             'login = "bar"', 'password = "foo"'),
        dnsu2t_block("2.2.2.2", 52)])
    assert (boot / "system-proxy" / "no_proxy").read_text() == "balena.io\n222.22.2.2"
    assert read_host_config(boot, "h")["network"]["proxy"] == new


def test_apply_merges_fields_and_leaves_no_proxy_alone(boot: Path) -> None:
    patch(boot, {"network": {"proxy": {"ip": "example2.org", "port": "1090"}}})
    assert read_host_config(boot, "h")["network"]["proxy"] == {
        **DEFAULT_PROXY, "ip": "example2.org", "port": 1090,
        "noProxy": ["152.10.30.4", "253.1.1.0/16"]}
    assert (boot / "system-proxy" / "no_proxy").read_text() == "152.10.30.4\n253.1.1.0/16\n"


@pytest.mark.parametrize(("dns", "block"), [
    (True, dnsu2t_block("8.8.8.8", 53)), ("4.3.2.1:51", dnsu2t_block("4.3.2.1", 51))])
def test_apply_dns(boot: Path, dns: object, block: str) -> None:
    patch(boot, {"network": {"proxy": {"dns": dns}}})
    assert conf_text(boot).endswith("\n" + block)
    assert "example.org" in conf_text(boot)


def test_apply_dns_false_drops_dnsu2t_then_it_can_come_back(boot: Path) -> None:
    patch(boot, {"network": {"proxy": {"dns": False}}})
    assert "dnsu2t" not in conf_text(boot)
    assert "dns" not in read_host_config(boot, "h")["network"]["proxy"]
    patch(boot, {"network": {"proxy": {"dns": "5.5.5.5:55"}}})
    assert conf_text(boot).endswith(dnsu2t_block("5.5.5.5", 55))


def test_apply_dns_without_a_proxy_writes_nothing(boot: Path) -> None:
    patch(boot, {"network": {"proxy": {}}})
    patch(boot, {"network": {"proxy": {"dns": "1.2.3.4:54"}}})
    assert not (boot / "system-proxy" / "redsocks.conf").exists()


def test_apply_empty_no_proxy_deletes_file_and_keeps_proxy(boot: Path) -> None:
    patch(boot, {"network": {"proxy": {"noProxy": []}}})
    assert not (boot / "system-proxy" / "no_proxy").exists()
    assert conf_text(boot) == DEFAULT_FILE


def test_apply_unchanged_no_proxy_alone_removes_proxy(boot: Path) -> None:
    # upstream quirk kept on purpose: an otherwise empty proxy patch clears the proxy
    patch(boot, {"network": {"proxy": {"noProxy": ["152.10.30.4", "253.1.1.0/16"]}}})
    assert not (boot / "system-proxy" / "redsocks.conf").exists()


def test_apply_invalid_merge_keeps_the_old_proxy(boot: Path) -> None:
    # validate_patch refuses such a patch now; apply_patch still never writes one
    apply_patch(boot, HostConfigPatch(proxy={"type": "socks6", "port": "abc"}), UUID,
                lambda _name: None)
    assert conf_text(boot) == DEFAULT_FILE


def test_apply_ignores_local_fields(boot: Path) -> None:
    patch(boot, {"network": {"proxy": {"local_ip": "127.0.0.2", "local_port": 12346}}})
    assert conf_text(boot) == DEFAULT_FILE


def test_apply_fixes_a_file_with_unsupported_fields(boot: Path) -> None:
    (boot / "system-proxy" / "redsocks.conf").write_text(
        BASE + "\nredsocks {\n\tip = example2.org;\n\tport = 1090;\n\ttype = socks5;\n"
        '\tlogin = "foo";\n\tpassword = "bar";\n\tlocal_ip = 127.0.0.2;\n'
        "\tlocal_port = 12345;\n\tnoProxy = bad.server.com\n}\n")
    patch(boot, {"network": {"proxy": {"ip": "example2.org", "noProxy": ["bad.server.com"]}}})
    assert conf_text(boot) == BASE + "\n" + redsocks_block(
        "ip = example2.org", "port = 1090", "type = socks5", 'login = "foo"', 'password = "bar"')
    assert (boot / "system-proxy" / "no_proxy").read_text() == "bad.server.com"


def test_apply_creates_the_proxy_dir(tmp_path: Path) -> None:
    patch(tmp_path, {"network": {"proxy": {"type": "socks5", "ip": "h", "port": 1}}})
    assert parse_redsocks(conf_text(tmp_path)) == {"type": "socks5", "ip": "h", "port": 1}


def test_apply_leaves_no_temp_files(boot: Path) -> None:
    patch(boot, {"network": {"proxy": {"ip": "x", "noProxy": ["a"]}}})
    assert sorted(p.name for p in (boot / "system-proxy").iterdir()) == ["no_proxy",
                                                                         "redsocks.conf"]


def test_empty_network_patch_touches_nothing(boot: Path) -> None:
    names: list[str] = []
    assert patch(boot, {"network": {}}, names) == []
    assert names == []
    assert conf_text(boot) == DEFAULT_FILE
