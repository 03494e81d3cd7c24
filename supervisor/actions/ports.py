"""What the actions need from the rest of the supervisor: one narrow Protocol, implemented by
the composition root (runtime.py), so that nothing here imports it.

Reads only, except `stopped_for_power` (what reboot preparation stopped, for a dry-run boot)
and the loop's triggers. Docker is only *looked at* (`Observer.observe`); every change goes
through an intent (`Reconciler.submit`).
"""

from __future__ import annotations

from typing import Protocol

from supervisor.host.actions import HostActions
from supervisor.locks import UpdateLocks
from supervisor.model.current import ContainerInfo, Current, Snapshot
from supervisor.model.target import TargetState
from supervisor.reconciler import Reconciler
from supervisor.settings import Settings


class Observer(Protocol):
    async def observe(self) -> Current: ...


class Poller(Protocol):
    def poll_now(self, force: bool, cancel: bool) -> None: ...


class Device(Protocol):
    stopped_for_power: list[ContainerInfo]

    @property
    def target(self) -> TargetState | None: ...

    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def engine(self) -> Observer: ...

    @property
    def reconciler(self) -> Reconciler: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def locks(self) -> UpdateLocks: ...

    @property
    def host(self) -> HostActions: ...

    @property
    def cloud(self) -> Poller | None: ...

    def log(self, message: str) -> None: ...
