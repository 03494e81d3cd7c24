"""Each service's lifecycle as a `transitions` state machine.

One shared synchronous `Machine` holds every service instance (one per app, service and
release). The executor fires triggers around the slow Docker work; callbacks are cheap (they
only tell the runtime to publish a new snapshot). An illegal trigger raises `MachineError`:
that is a bug in the planner or the executor, never something to swallow.

Docker stays the source of truth: after each observation `Lifecycles.sync()` re-seats a
machine whose settled phase disagrees with what Docker shows (a crash, a restart policy, a
manual `docker stop`), but never one with work in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from transitions import EventData, Machine, MachineError

from supervisor.model.current import ContainerInfo, Phase

P = Phase
Key = tuple[int, str, str]  # (app_id, service_name, commit)

__all__ = [
    "IN_FLIGHT",
    "TRANSITIONS",
    "Key",
    "Lifecycles",
    "MachineError",
    "ServiceLifecycle",
    "phase_from_container",
]

_ANY_SETTLED = [P.DOWNLOADED, P.INSTALLED, P.RUNNING, P.EXITED, P.DEAD, P.PAUSED,
                P.RESTARTING, P.REMOVING, P.AWAITING_HANDOVER, P.HANDING_OVER]

# trigger, sources, destination. Read this table to learn what a service may do next.
TRANSITIONS: list[list[Any]] = [
    ["download", [P.DOWNLOADING, P.DOWNLOADED, P.DEAD], P.DOWNLOADING],
    ["downloaded", P.DOWNLOADING, P.DOWNLOADED],
    ["install", [P.DOWNLOADED, P.DEAD, P.EXITED], P.INSTALLING],
    ["installed", P.INSTALLING, P.INSTALLED],
    ["start", [P.INSTALLED, P.EXITED], P.STARTING],
    ["started", P.STARTING, P.RUNNING],
    ["await_handover", P.STARTING, P.AWAITING_HANDOVER],
    ["handover_complete", P.AWAITING_HANDOVER, P.RUNNING],
    ["hand_over", P.RUNNING, P.HANDING_OVER],
    ["stop", [P.RUNNING, P.STARTING, P.INSTALLED, P.EXITED, P.PAUSED, P.RESTARTING,
              P.HANDING_OVER, P.AWAITING_HANDOVER, P.DEAD, P.INSTALLING], P.STOPPING],
    ["stopped", P.STOPPING, P.EXITED],
    ["failed", [P.INSTALLING, P.STARTING, P.STOPPING], P.DEAD],
    ["died", "*", P.DEAD],
]

# phases with work in flight: observations never override them
IN_FLIGHT: frozenset[Phase] = frozenset({P.DOWNLOADING, P.INSTALLING, P.STARTING, P.STOPPING})


def phase_from_container(container: ContainerInfo) -> Phase:
    """The settled phase Docker shows for a container."""
    if container.running:
        return P.RUNNING
    return {
        "created": P.INSTALLED,
        "dead": P.DEAD,
        "paused": P.PAUSED,
        "restarting": P.RESTARTING,
        "removing": P.REMOVING,
    }.get(container.state, P.EXITED)


class ServiceLifecycle:
    """Lifecycle record of one service of one release. Docker work happens in executor.py."""

    state: Phase

    def __init__(self, key: Key, on_change: Callable[[Key, Phase], None]) -> None:
        self.key = key
        self._on_change = on_change
        self.reason = ""

    # Stubs replaced by the machine (model_override=True): the legal triggers are visible to
    # readers and to mypy.
    def download(self) -> bool: raise NotImplementedError
    def downloaded(self) -> bool: raise NotImplementedError
    def install(self) -> bool: raise NotImplementedError
    def installed(self) -> bool: raise NotImplementedError
    def start(self) -> bool: raise NotImplementedError
    def started(self) -> bool: raise NotImplementedError
    def await_handover(self) -> bool: raise NotImplementedError
    def handover_complete(self) -> bool: raise NotImplementedError
    def hand_over(self) -> bool: raise NotImplementedError
    def stop(self) -> bool: raise NotImplementedError
    def stopped(self) -> bool: raise NotImplementedError
    def failed(self, reason: str = "") -> bool: raise NotImplementedError
    def died(self, reason: str = "") -> bool: raise NotImplementedError

    def _publish(self, event: EventData) -> None:  # after_state_change: sync and cheap
        self.reason = str(event.kwargs.get("reason", ""))
        self._on_change(self.key, self.state)


def _machine() -> Machine:
    return Machine(
        model=None,
        states=Phase,
        transitions=TRANSITIONS,
        initial=None,
        auto_transitions=False,
        model_override=True,
        send_event=True,
        after_state_change="_publish",
    )


class Lifecycles:
    """The registry of service lifecycles, on one shared machine."""

    def __init__(self, on_change: Callable[[Key, Phase], None]) -> None:
        self._machine = _machine()
        self._models: dict[Key, ServiceLifecycle] = {}
        self._on_change = on_change

    def get(self, key: Key) -> ServiceLifecycle | None:
        return self._models.get(key)

    def ensure(self, key: Key, initial: Phase) -> ServiceLifecycle:
        model = self._models.get(key)
        if model is None:
            model = ServiceLifecycle(key, self._on_change)
            self._machine.add_model(model, initial=initial)
            self._models[key] = model
        return model

    def claim(self, key: Key, trigger: str, initial: Phase) -> ServiceLifecycle:
        """The record on which a step's FIRST trigger is legal.

        Records are keyed by (app, service, commit), and a local push keeps the commit: the
        record may belong to the container being replaced (Running) when the new one starts
        downloading or installing. The first trigger of a step claims the key, starting the
        record over from `initial` if it must; every later trigger stays strict.
        """
        model = self.ensure(key, initial)
        if trigger not in self._machine.get_triggers(model.state.name):
            model = self.reseat(key, initial)
        return model

    def reseat(self, key: Key, phase: Phase) -> ServiceLifecycle:
        """Start a record over from an observed phase (Docker changed it behind our back)."""
        self.drop(key)
        model = self.ensure(key, phase)
        self._on_change(key, phase)
        return model

    def drop(self, key: Key) -> None:
        model = self._models.pop(key, None)
        if model is not None:
            self._machine.remove_model(model)

    def sync(self, observed: dict[Key, Phase]) -> None:
        """Align settled records with Docker; forget settled records with no container.

        Records with work in flight (a download, a create, a start, a stop) are left alone:
        the executor settles them when the work ends.
        """
        for key, phase in observed.items():
            model = self._models.get(key)
            if model is None:
                self.ensure(key, phase)
            elif model.state not in IN_FLIGHT and model.state != phase and not (
                model.state in (P.HANDING_OVER, P.AWAITING_HANDOVER) and phase == P.RUNNING
            ):
                self.reseat(key, phase)
        for key in list(self._models):
            model = self._models[key]
            if key not in observed and model.state not in IN_FLIGHT:
                self.drop(key)

    def items(self) -> Iterator[tuple[Key, Phase]]:
        for key, model in self._models.items():
            yield key, model.state

    def __len__(self) -> int:
        return len(self._models)
