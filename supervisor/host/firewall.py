"""Firewall: the BALENA-FIREWALL chain that guards the host and the supervisor API.

config.md §11. Two halves:

* `render()` is pure. From the mode (`HOST_FIREWALL_MODE`), local mode, whether the target has
  host-network services, the API port (and `listenPortOverride`) and what `iptables-save`
  showed of the chains we hook into (`ChainState`), it builds the `iptables-restore` input for
  IPv4 and IPv6.
* `Firewall.apply()` is the one runner. It reads the filter tables (`iptables-save`), renders,
  and loads both families with `iptables-restore --noflush`, every command under a timeout.
  In dry-run it runs nothing and logs the rulesets it would load. A failure is logged
  (`Firewall mode not applied due to error`) and returned, never raised: the caller goes on.

Only our chains are flushed. The INPUT jump is deleted and re-inserted at the position it had
(1 the first time), so user rules in INPUT and in every other chain stay. The wiring that
re-applies on mode, local-mode or target changes lives with the reconciler (docs/host.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from supervisor.errors import SupervisorError
from supervisor.model.target import TargetState

_LOGGER = logging.getLogger(__name__)

Mode = Literal["on", "off", "auto"]
MODES: tuple[Mode, ...] = ("on", "off", "auto")
FirewallChoice = Literal["apply", "dry-run", "auto"]
FIREWALL_CHOICES: tuple[FirewallChoice, ...] = ("apply", "dry-run", "auto")

FIREWALL_CHAIN = "BALENA-FIREWALL"
SUPERVISOR_CHAIN = "BALENA-SUPERVISOR"
DOCKER_USER_CHAIN = "DOCKER-USER"
VPN_INTERFACE = "resin-vpn"
SUPERVISOR_INTERFACE = "supervisor0"
# Where the API may be reached from on a managed device (upstream constants.allowedInterfaces).
ALLOWED_INTERFACES = (VPN_INTERFACE, "tun0", "docker0", "lo", SUPERVISOR_INTERFACE)
DEFAULT_API_PORT = 48484

NOT_APPLIED_MESSAGE = "Firewall mode not applied due to error"
RESTORE_HEADER = "# iptables-restore -- Balena Firewall"
COMMAND_TIMEOUT = 15.0
XTABLES_WAIT = 5  # seconds iptables-restore waits for the xtables lock (legacy backend)


class FirewallError(SupervisorError):
    """A firewall command failed, timed out or could not be run."""


@dataclass(frozen=True)
class FirewallConfig:
    """What the rules depend on. `mode` is the raw HOST_FIREWALL_MODE value (None: unset)."""

    mode: str | None
    local_mode: bool
    host_network_services: bool = False
    listen_port: int = DEFAULT_API_PORT
    listen_port_override: int | None = None


@dataclass(frozen=True)
class ChainState:
    """What the filter tables held before we load ours (read from `iptables-save`)."""

    input_position_v4: int | None = None  # 1-based position of `-A INPUT -j BALENA-FIREWALL`
    input_position_v6: int | None = None
    docker_user_exists: bool = False  # IPv4 DOCKER-USER chain (made by the engine)
    supervisor_hooked: bool = False  # DOCKER-USER already jumps to BALENA-SUPERVISOR


@dataclass(frozen=True)
class Rulesets:
    mode: Mode
    v4: str
    v6: str


@dataclass(frozen=True)
class FirewallResult:
    applied: bool  # True also for a dry run that logged its rulesets
    mode: Mode
    error: str | None = None
    rulesets: Rulesets | None = None


def effective_mode(raw: str | None) -> tuple[Mode, str | None]:
    """(mode, warning). Anything but on/off/auto is `off`, with upstream's warning."""
    if raw in MODES:
        return cast(Mode, raw), None
    if raw is None:  # never set: the variable's default, not an invalid value
        return "off", None
    return "off", f"Invalid firewall mode: {raw}. Reverting to state: off"


def has_host_network_services(target: TargetState) -> bool:
    """`auto` closes the host only when a target service uses the host's network."""
    return any(svc.config.network_mode == "host"
               for app in target.apps.values() if app.release is not None
               for svc in app.release.services.values())


# ============================================================================ pure rendering

def _api_rules(cfg: FirewallConfig) -> list[str]:
    """The supervisor API port rules, active in every mode."""
    fw = FIREWALL_CHAIN
    if cfg.listen_port_override is not None:
        port = cfg.listen_port_override
        return [f"-A {fw} -p tcp --dport {port} -i {SUPERVISOR_INTERFACE} -j ACCEPT",
                f"-A {fw} -p tcp --dport {port} -j REJECT"]
    port = cfg.listen_port
    if cfg.local_mode:
        accepts = [f"-A {fw} -p tcp --dport {port} -j ACCEPT"]
    else:
        accepts = [f"-A {fw} -p tcp --dport {port} -i {iface} -j ACCEPT"
                   for iface in ALLOWED_INTERFACES]
    return [*accepts, f"-A {fw} -p tcp --dport {port} -j REJECT"]


def _firewall_chain(cfg: FirewallConfig, mode: Mode, family: int) -> list[str]:
    fw = FIREWALL_CHAIN
    # ICMPv6 is protocol ipv6-icmp: upstream's `-p icmp` in IPv6 matches nothing, so mode `on`
    # rejected neighbour discovery. A deliberate difference (docs/host.md).
    icmp = "icmp" if family == 4 else "ipv6-icmp"
    lines = [
        f"-F {fw}",
        *_api_rules(cfg),
        f"-A {fw} -p tcp --dport 22222 -j ACCEPT",  # SSH
        f"-A {fw} -p tcp --dport 2375 -j ACCEPT",  # balenaEngine
        f"-A {fw} -m addrtype --dst-type MULTICAST -j ACCEPT",  # mDNS
        f"-A {fw} -p {icmp} -j ACCEPT",
        f"-A {fw} -p udp --dport 53 -i balena0 -j ACCEPT",  # DNS from balena0
        f"-A {fw} -p udp --dport 53 -i br+ -j ACCEPT",  # DNS from custom engine networks
        # Inserted, so they end up first: established traffic, then locally sourced.
        f"-I {fw} -m addrtype --src-type LOCAL -j ACCEPT",
        f"-I {fw} -m state --state ESTABLISHED,RELATED -j ACCEPT",
    ]
    if mode == "off" or (mode == "auto" and not cfg.host_network_services):
        lines.append(f"-A {fw} -j RETURN")
    lines.append(f"-A {fw} -j REJECT")
    return lines


def _input_jump(position: int | None) -> list[str]:
    delete = [f"-D INPUT -j {FIREWALL_CHAIN}"] if position else []
    return [*delete, f"-I INPUT {position or 1} -j {FIREWALL_CHAIN}"]


def _supervisor_chain(cfg: FirewallConfig, family: int) -> list[str]:
    """With `listenPortOverride` the normal port is reached through the engine's forwarding;
    DOCKER-USER then lets it in from the VPN only (IPv4, managed devices)."""
    lines = [f"-F {SUPERVISOR_CHAIN}"]
    if family == 4 and cfg.listen_port_override is not None and not cfg.local_mode:
        port = cfg.listen_port
        lines += [f"-A {SUPERVISOR_CHAIN} -p tcp --dport {port} -i {VPN_INTERFACE} -j ACCEPT",
                  f"-A {SUPERVISOR_CHAIN} -p tcp --dport {port} -j REJECT"]
    return lines


def _ruleset(declared: list[str], rules: list[str]) -> str:
    chains = [f":{chain} - [0:0]" for chain in declared]
    return "\n".join([RESTORE_HEADER, "*filter", *chains, *rules, "COMMIT", ""])


def render(cfg: FirewallConfig, state: ChainState = ChainState()) -> Rulesets:
    """The `iptables-restore --noflush` input for IPv4 and IPv6."""
    mode, _warning = effective_mode(cfg.mode)
    # A declared chain is created, or flushed if it exists: so DOCKER-USER (the engine's, may
    # hold user rules) is declared only when missing, and our jump goes first in it.
    v4_declared = [FIREWALL_CHAIN, SUPERVISOR_CHAIN]
    docker_user: list[str] = []
    if not state.supervisor_hooked:
        if state.docker_user_exists:
            docker_user = [f"-I {DOCKER_USER_CHAIN} 1 -j {SUPERVISOR_CHAIN}"]
        else:
            v4_declared.insert(1, DOCKER_USER_CHAIN)
            docker_user = [f"-A {DOCKER_USER_CHAIN} -j {SUPERVISOR_CHAIN}"]
    v4 = _ruleset(v4_declared, [*_input_jump(state.input_position_v4),
                                *_firewall_chain(cfg, mode, 4),
                                *docker_user,
                                *_supervisor_chain(cfg, 4)])
    v6 = _ruleset([FIREWALL_CHAIN, SUPERVISOR_CHAIN],
                  [*_input_jump(state.input_position_v6),
                   *_firewall_chain(cfg, mode, 6),
                   *_supervisor_chain(cfg, 6)])
    return Rulesets(mode=mode, v4=v4, v6=v6)


def _filter_rules(save_output: str) -> tuple[list[str], set[str]]:
    """(the `-A` lines, the declared chains) of the filter table in `iptables-save` output."""
    rules: list[str] = []
    chains: set[str] = set()
    table = None
    for raw in save_output.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
        elif table != "filter":
            continue
        elif line.startswith(":"):
            chains.add(line[1:].split(" ", 1)[0])
        elif line.startswith("-A "):
            rules.append(line)
    return rules, chains


def _input_position(rules: list[str]) -> int | None:
    position = 0
    for rule in rules:
        if rule.startswith("-A INPUT "):
            position += 1
            if rule == f"-A INPUT -j {FIREWALL_CHAIN}":
                return position
    return None


def parse_chain_state(save_v4: str, save_v6: str) -> ChainState:
    """Read where our hooks are from `iptables-save -t filter` of both families."""
    rules_v4, chains_v4 = _filter_rules(save_v4)
    rules_v6, _ = _filter_rules(save_v6)
    return ChainState(
        input_position_v4=_input_position(rules_v4),
        input_position_v6=_input_position(rules_v6),
        docker_user_exists=DOCKER_USER_CHAIN in chains_v4,
        supervisor_hooked=f"-A {DOCKER_USER_CHAIN} -j {SUPERVISOR_CHAIN}" in rules_v4,
    )


# ============================================================================ the runner

@dataclass(frozen=True)
class Commands:
    """The iptables programs. `prefix` runs them elsewhere (tests: `ip netns exec <ns>`)."""

    restore_v4: tuple[str, ...] = ("iptables-restore",)
    restore_v6: tuple[str, ...] = ("ip6tables-restore",)
    save_v4: tuple[str, ...] = ("iptables-save",)
    save_v6: tuple[str, ...] = ("ip6tables-save",)
    prefix: tuple[str, ...] = ()

    @classmethod
    def backend(cls, name: Literal["nft", "legacy"],
                prefix: Sequence[str] = ()) -> Commands:
        """Debian's explicit `iptables-nft-*` / `iptables-legacy-*` programs."""
        return cls((f"iptables-{name}-restore",), (f"ip6tables-{name}-restore",),
                   (f"iptables-{name}-save",), (f"ip6tables-{name}-save",), tuple(prefix))


def should_apply(choice: FirewallChoice, *, which: Callable[[str], str | None] = shutil.which,
                 euid: int | None = None) -> bool:
    """`--firewall`: apply, dry-run, or auto (apply when iptables-restore exists and root)."""
    if choice == "apply":
        return True
    if choice == "dry-run":
        return False
    uid = os.geteuid() if euid is None else euid
    return uid == 0 and which("iptables-restore") is not None


class Firewall:
    """Loads the rules (`apply=True`) or logs them (dry run); one load at a time."""

    def __init__(self, apply: bool, commands: Commands = Commands(),
                 timeout: float = COMMAND_TIMEOUT) -> None:
        self.dry_run = not apply
        self.commands = commands
        self.timeout = timeout
        self._lock = asyncio.Lock()

    async def apply(self, cfg: FirewallConfig) -> FirewallResult:
        """Apply `cfg`; never raises. The result says whether it worked and why not."""
        async with self._lock:
            return await asyncio.to_thread(self._apply, cfg)

    def _apply(self, cfg: FirewallConfig) -> FirewallResult:
        mode, warning = effective_mode(cfg.mode)
        if warning:
            _LOGGER.warning(warning)
        _LOGGER.info("Applying firewall mode: %s", mode)
        rulesets = None
        try:
            if self.dry_run:
                rulesets = render(cfg)
                _LOGGER.info("Dry run: firewall mode %s not applied; would load (IPv4):\n%s"
                             "(IPv6):\n%s", mode, rulesets.v4, rulesets.v6)
                return FirewallResult(applied=True, mode=mode, rulesets=rulesets)
            state = parse_chain_state(self._run(self.commands.save_v4, "-t", "filter"),
                                      self._run(self.commands.save_v6, "-t", "filter"))
            rulesets = render(cfg, state)
            self._run(self.commands.restore_v4, "--noflush", "--wait", str(XTABLES_WAIT),
                      stdin=rulesets.v4)
            self._run(self.commands.restore_v6, "--noflush", "--wait", str(XTABLES_WAIT),
                      stdin=rulesets.v6)
        except FirewallError as err:
            _LOGGER.error("%s: %s", NOT_APPLIED_MESSAGE, err)
            if rulesets is not None:
                _LOGGER.debug("Ruleset:\n%s\n%s", rulesets.v4, rulesets.v6)
            return FirewallResult(applied=False, mode=mode, error=str(err), rulesets=rulesets)
        _LOGGER.info("Firewall mode applied")
        return FirewallResult(applied=True, mode=mode, rulesets=rulesets)

    def _run(self, program: tuple[str, ...], *args: str, stdin: str | None = None) -> str:
        argv = [*self.commands.prefix, *program, *args]
        what = " ".join(program)
        try:
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired as err:
            raise FirewallError(f"{what} timed out after {self.timeout:g} s") from err
        except OSError as err:
            raise FirewallError(f"cannot run {what}: {err}") from err
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            raise FirewallError(f"{what} failed (exit {done.returncode}): {detail}")
        return done.stdout


def make_firewall(choice: FirewallChoice, commands: Commands = Commands()) -> Firewall:
    """The runner `--firewall` asks for; `auto` is decided here, once."""
    apply = should_apply(choice)
    if choice == "auto" and not apply:
        _LOGGER.info("Firewall: no iptables-restore or not root; rules are logged, not loaded")
    return Firewall(apply, commands)
