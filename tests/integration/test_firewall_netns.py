"""The firewall for real: rules loaded into network namespaces the test creates.

Each test makes a "device" and a "peer" namespace joined by a veth pair (netnskit), loads
the rules into the device namespace with the real runner (`ip netns exec` as its command
prefix), reads them back with `iptables-save`, and connects from the peer to a small TCP
server in the device namespace standing in for the API. The host's own tables are never
touched: every iptables program runs inside `ip netns exec`.

The expected chains are written out by hand below, in iptables-save's own spelling, from
config.md §11: they are not built with the code under test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Literal

import pytest

from supervisor.host.firewall import Commands, Firewall, FirewallConfig, FirewallResult
from tests.integration import netnskit
from tests.integration.netnskit import DEVICE_V4, DEVICE_V6, NetnsPair

API = 48484
OTHER = 8080  # any other host service: open or closed depending on the mode

REJECT4 = "REJECT --reject-with icmp-port-unreachable"
REJECT6 = "REJECT --reject-with icmp6-port-unreachable"


def expected_chain(family: int, *, local: bool, returns: bool, port: int = API,
                   override: int | None = None) -> list[str]:
    """BALENA-FIREWALL as iptables-save prints it (config.md §11)."""
    reject = REJECT4 if family == 4 else REJECT6
    icmp = "icmp" if family == 4 else "ipv6-icmp"
    fw = "-A BALENA-FIREWALL"
    if override is not None:
        api = [f"{fw} -i supervisor0 -p tcp -m tcp --dport {override} -j ACCEPT",
               f"{fw} -p tcp -m tcp --dport {override} -j {reject}"]
    elif local:
        api = [f"{fw} -p tcp -m tcp --dport {port} -j ACCEPT",
               f"{fw} -p tcp -m tcp --dport {port} -j {reject}"]
    else:
        api = [f"{fw} -i resin-vpn -p tcp -m tcp --dport {port} -j ACCEPT",
               f"{fw} -i tun0 -p tcp -m tcp --dport {port} -j ACCEPT",
               f"{fw} -i docker0 -p tcp -m tcp --dport {port} -j ACCEPT",
               f"{fw} -i lo -p tcp -m tcp --dport {port} -j ACCEPT",
               f"{fw} -i supervisor0 -p tcp -m tcp --dport {port} -j ACCEPT",
               f"{fw} -p tcp -m tcp --dport {port} -j {reject}"]
    return [
        f"{fw} -m state --state RELATED,ESTABLISHED -j ACCEPT",
        f"{fw} -m addrtype --src-type LOCAL -j ACCEPT",
        *api,
        f"{fw} -p tcp -m tcp --dport 22222 -j ACCEPT",
        f"{fw} -p tcp -m tcp --dport 2375 -j ACCEPT",
        f"{fw} -m addrtype --dst-type MULTICAST -j ACCEPT",
        f"{fw} -p {icmp} -j ACCEPT",
        f"{fw} -i balena0 -p udp -m udp --dport 53 -j ACCEPT",
        f"{fw} -i br+ -p udp -m udp --dport 53 -j ACCEPT",
        *([f"{fw} -j RETURN"] if returns else []),
        f"{fw} -j {reject}",
    ]


def chain(save: str, name: str) -> list[str]:
    return [line for line in save.splitlines() if line.startswith(f"-A {name} ")]


@pytest.fixture(autouse=True)
def _root_and_tools() -> None:
    netnskit.require_netns()


@pytest.fixture
def ns() -> Iterator[NetnsPair]:
    with NetnsPair() as pair:
        yield pair


def apply(pair: NetnsPair, cfg: FirewallConfig, backend: str | None = None) -> FirewallResult:
    commands = (Commands(prefix=pair.prefix()) if backend is None
                else Commands.backend(backend, pair.prefix()))  # type: ignore[arg-type]
    result = asyncio.run(Firewall(True, commands).apply(cfg))
    assert result.applied, result.error
    return result


def save(pair: NetnsPair, family: int, backend: str | None = None) -> str:
    program = ("iptables" if family == 4 else "ip6tables") + \
        (f"-{backend}-save" if backend else "-save")
    return pair.exec(pair.device, program, "-t", "filter")


# (mode, local mode, host-network services, RETURN expected)
MATRIX = [
    ("on", False, False, False),
    ("on", True, False, False),
    ("off", False, False, True),
    ("off", True, True, True),
    ("auto", False, False, True),
    ("auto", False, True, False),
    ("auto", True, False, True),
    ("auto", True, True, False),
]


@pytest.mark.parametrize(("mode", "local", "host_net", "returns"), MATRIX)
def test_chain_for_each_mode(ns: NetnsPair, mode: str, local: bool, host_net: bool,
                             returns: bool) -> None:
    result = apply(ns, FirewallConfig(mode=mode, local_mode=local, host_network_services=host_net))
    assert result.mode == mode
    for family in (4, 6):
        text = save(ns, family)
        assert chain(text, "BALENA-FIREWALL") == expected_chain(family, local=local,
                                                                 returns=returns)
        assert chain(text, "INPUT") == ["-A INPUT -j BALENA-FIREWALL"]
    assert chain(save(ns, 4), "DOCKER-USER") == ["-A DOCKER-USER -j BALENA-SUPERVISOR"]
    assert chain(save(ns, 4), "BALENA-SUPERVISOR") == []


def test_invalid_mode_is_off_with_the_warning(ns: NetnsPair,
                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="supervisor.host.firewall"):
        result = apply(ns, FirewallConfig(mode="sometimes", local_mode=False,
                                          host_network_services=True))
    assert result.mode == "off"
    assert "Invalid firewall mode: sometimes. Reverting to state: off" in caplog.text
    assert chain(save(ns, 4), "BALENA-FIREWALL") == expected_chain(4, local=False, returns=True)


def test_listen_port_override(ns: NetnsPair) -> None:
    apply(ns, FirewallConfig(mode="on", local_mode=False, listen_port=48484,
                             listen_port_override=48485))
    v4, v6 = save(ns, 4), save(ns, 6)
    assert chain(v4, "BALENA-FIREWALL") == expected_chain(4, local=False, returns=False,
                                                          override=48485)
    assert chain(v6, "BALENA-FIREWALL") == expected_chain(6, local=False, returns=False,
                                                          override=48485)
    assert chain(v4, "BALENA-SUPERVISOR") == [
        "-A BALENA-SUPERVISOR -i resin-vpn -p tcp -m tcp --dport 48484 -j ACCEPT",
        f"-A BALENA-SUPERVISOR -p tcp -m tcp --dport 48484 -j {REJECT4}"]
    assert chain(v6, "BALENA-SUPERVISOR") == []  # IPv4 only, as upstream
    # local mode: the override still guards its own port, DOCKER-USER lets everything in
    apply(ns, FirewallConfig(mode="on", local_mode=True, listen_port_override=48485))
    assert chain(save(ns, 4), "BALENA-SUPERVISOR") == []


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_jump_keeps_its_position_and_user_rules_stay(backend: Literal["nft", "legacy"]) -> None:
    with NetnsPair() as pair:
        ipt, ip6t = f"iptables-{backend}", f"ip6tables-{backend}"
        # The engine's DOCKER-USER with a user rule in it, and a user chain.
        for argv in (["-N", "DOCKER-USER"], ["-A", "DOCKER-USER", "-s", "10.9.9.9", "-j", "DROP"],
                     ["-A", "DOCKER-USER", "-j", "RETURN"], ["-N", "USERCH"],
                     ["-A", "USERCH", "-p", "tcp", "--dport", "7", "-j", "ACCEPT"]):
            pair.exec(pair.device, ipt, *argv)
        apply(pair, FirewallConfig(mode="on", local_mode=False), backend)
        for tool in (ipt, ip6t):  # user rules around our jump, in both families
            pair.exec(pair.device, tool, "-I", "INPUT", "1", "-p", "tcp", "--dport", "9",
                      "-j", "ACCEPT")
            pair.exec(pair.device, tool, "-A", "INPUT", "-p", "udp", "--dport", "10",
                      "-j", "ACCEPT")
        apply(pair, FirewallConfig(mode="off", local_mode=False), backend)
        apply(pair, FirewallConfig(mode="off", local_mode=False), backend)  # idempotent
        for family in (4, 6):
            text = save(pair, family, backend)
            assert chain(text, "INPUT") == [
                "-A INPUT -p tcp -m tcp --dport 9 -j ACCEPT",
                "-A INPUT -j BALENA-FIREWALL",
                "-A INPUT -p udp -m udp --dport 10 -j ACCEPT"]
            assert chain(text, "BALENA-FIREWALL") == expected_chain(family, local=False,
                                                                    returns=True)
        v4 = save(pair, 4, backend)
        assert chain(v4, "USERCH") == ["-A USERCH -p tcp -m tcp --dport 7 -j ACCEPT"]
        # our jump first (a RETURN must not shadow it), the engine's/user's rules kept
        assert chain(v4, "DOCKER-USER") == ["-A DOCKER-USER -j BALENA-SUPERVISOR",
                                            "-A DOCKER-USER -s 10.9.9.9/32 -j DROP",
                                            "-A DOCKER-USER -j RETURN"]


def test_a_failed_load_is_reported_not_raised(ns: NetnsPair,
                                              caplog: pytest.LogCaptureFixture) -> None:
    # A ruleset the kernel refuses (a port number out of range) after a good IPv4 load.
    broken = Commands(restore_v6=("sh", "-c", "sed s/22222/99999/ | ip6tables-restore \"$@\"",
                                  "restore"), prefix=ns.prefix())
    with caplog.at_level(logging.ERROR, logger="supervisor.host.firewall"):
        result = asyncio.run(Firewall(True, broken).apply(
            FirewallConfig(mode="on", local_mode=False)))
    assert not result.applied
    assert result.error and "failed (exit 2)" in result.error and "99999" in result.error
    assert "Firewall mode not applied due to error" in caplog.text


def test_a_missing_namespace_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    nowhere = Commands(prefix=("ip", "netns", "exec", "bpy-no-such-namespace"))
    with caplog.at_level(logging.ERROR, logger="supervisor.host.firewall"):
        result = asyncio.run(Firewall(True, nowhere).apply(
            FirewallConfig(mode="on", local_mode=False)))
    assert not result.applied and result.rulesets is None
    assert "Firewall mode not applied due to error" in caplog.text


# ------------------------------------------------------------------------- reachability


def reach(pair: NetnsPair, port: int) -> tuple[str, str]:
    return pair.connect(DEVICE_V4, port), pair.connect(DEVICE_V6, port)


def test_api_refused_from_other_interfaces_when_managed() -> None:
    with NetnsPair(device_if="eth1") as pair:
        pair.serve(API, OTHER)
        assert reach(pair, API) == ("ok", "ok")  # no rules yet: the server answers
        apply(pair, FirewallConfig(mode="off", local_mode=False))
        assert reach(pair, API) == ("refused", "refused")
        assert reach(pair, OTHER) == ("ok", "ok")  # mode off: the rest stays open


def test_api_allowed_from_the_vpn_interface_and_the_rest_closed_when_on() -> None:
    with NetnsPair(device_if="tun0") as pair:
        pair.serve(API, OTHER)
        apply(pair, FirewallConfig(mode="on", local_mode=False))
        assert reach(pair, API) == ("ok", "ok")
        assert reach(pair, OTHER) == ("refused", "refused")


def test_local_mode_opens_the_api_on_every_interface() -> None:
    with NetnsPair(device_if="eth1") as pair:
        pair.serve(API, OTHER)
        apply(pair, FirewallConfig(mode="on", local_mode=True))
        assert reach(pair, API) == ("ok", "ok")
        assert reach(pair, OTHER) == ("refused", "refused")


def test_auto_closes_the_host_only_with_host_network_services() -> None:
    with NetnsPair(device_if="eth1") as pair:
        pair.serve(API, OTHER)
        apply(pair, FirewallConfig(mode="auto", local_mode=False, host_network_services=True))
        assert reach(pair, OTHER) == ("refused", "refused")
        apply(pair, FirewallConfig(mode="auto", local_mode=False, host_network_services=False))
        assert reach(pair, OTHER) == ("ok", "ok")
        assert reach(pair, API) == ("refused", "refused")
