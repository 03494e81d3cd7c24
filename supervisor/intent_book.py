"""The reconciler's book of pending intents: what API actions asked for and wait on.

Data flow: an action (actions/) validates its request and calls `Reconciler.submit(intent)`,
which records it here and wakes the loop; the action awaits the returned future. Each round
the reconciler puts `view()` (immutable) into `PlanContext.intents`, the planner emits the
intent's steps (planner/intents.py), and the one executor runs them. Then:

- a step carried out for an intent reports here (`step_done` / `step_failed`): a failure
  (a user lock refusing the `takeLock`: `UpdatesLocked`) fails the intent's future at once,
  so the API answers 423 with upstream's text while the loop itself carries on unharmed;
- after every observation `settle()` moves each intent on from what Docker shows (its
  containers gone, its app running again) and resolves the futures of those carried out.

An intent that took the app's lock resolves only once the loop released it (one more round
at most), so that the API answers after the lock files are gone, as upstream does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from supervisor.errors import EngineConflict, StepFailed, SupervisorError
from supervisor.model.current import Current
from supervisor.model.intents import (
    Intent,
    IntentView,
    Pending,
    RemoveVolumes,
    RestartApp,
    RestartService,
    Stage,
    StartService,
    StopAll,
    StopService,
    not_recreated,
)
from supervisor.model.steps import RecreateVolume, RemoveVolume, Start, Step, Stop, TakeLock

_LOGGER = logging.getLogger(__name__)


@dataclass
class _Entry:
    id: int
    intent: Intent
    future: asyncio.Future[Any]
    stage: Stage = Stage.ACT
    firmware_done: bool = False
    took_lock: bool = False
    acted: bool = False  # its stop or start step ran
    release_seen: bool = False  # carried out; the lock's release gets one more round
    removed: dict[str, bool] = field(default_factory=dict)  # RemoveVolumes: name -> removed

    def pending(self) -> Pending:
        return Pending(self.id, self.intent, self.stage, self.firmware_done,
                       frozenset(self.removed))


class IntentBook:
    def __init__(self, wake: Callable[[], None] = lambda: None) -> None:
        self._wake = wake
        self._entries: dict[int, _Entry] = {}
        self._next = 1

    # -- the action's side ------------------------------------------------------------------

    def submit(self, intent: Intent) -> asyncio.Future[Any]:
        """Record an intent; the future resolves when it is carried out, or fails with the
        error of the step that failed. Cancelling the future withdraws the intent."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = _Entry(self._next, intent, future)
        self._next += 1
        self._entries[entry.id] = entry
        future.add_done_callback(lambda _: self._withdrawn(entry.id))
        self._wake()
        return future

    def _withdrawn(self, intent_id: int) -> None:
        if self._entries.pop(intent_id, None) is not None:
            self._wake()  # a cancelled intent may have held its app: plan again without it

    # -- the loop's side -------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return bool(self._entries)

    def view(self) -> IntentView:
        return IntentView(tuple(e.pending() for e in self._entries.values()))

    def step_done(self, step: Step) -> None:
        entry = self._entries.get(getattr(step, "intent", None) or 0)
        if entry is None:
            return
        if isinstance(step, TakeLock):
            entry.took_lock = True
        elif isinstance(step, Stop | Start):
            entry.acted = True
        elif isinstance(step, RecreateVolume):
            entry.firmware_done = True
        elif isinstance(step, RemoveVolume) and isinstance(entry.intent, RemoveVolumes):
            entry.removed[step.name] = True
            _LOGGER.info("removed orphaned volume %s", step.name)

    def step_failed(self, step: Step, err: BaseException) -> None:
        entry = self._entries.get(getattr(step, "intent", None) or 0)
        if entry is None:
            return
        cause = err.cause if isinstance(err, StepFailed) else err
        if isinstance(step, RemoveVolume) and isinstance(cause, EngineConflict):
            if isinstance(entry.intent, RemoveVolumes):
                # mounted by a container we do not supervise (we only observe our own)
                _LOGGER.info("volume %s is in use; kept", step.name)
                entry.removed[step.name] = False
                return
            err = SupervisorError(f"Could not remove volume(s) {step.name} of app "
                                  f"{step.app_id}: still in use")
        _LOGGER.info("intent %s failed: %s", type(entry.intent).__name__, err)
        self._resolve(entry, error=err)

    def settle(self, current: Current, target: Any, locked: frozenset[int], *,
               idle: bool = False) -> list[Intent]:
        """Move every intent on from what Docker shows; resolve those carried out. `idle`:
        the plan is empty, so a lock still held will not be released for them. Returns the
        intents carried out (the reconciler holds the loop after a `StopAll`)."""
        done = []
        for entry in list(self._entries.values()):
            if entry.future.done():
                continue
            if self._carried_out(entry, current, target):
                app_id = getattr(entry.intent, "app_id", None)
                if (entry.took_lock and app_id in locked and not entry.release_seen
                        and not idle):
                    entry.release_seen = True  # the loop's releaseLock comes this round
                    entry.stage = Stage.WAIT  # and no more steps of its own
                    continue
                done.append(entry.intent)
                result = ([n for n in entry.intent.names if entry.removed.get(n)]
                          if isinstance(entry.intent, RemoveVolumes) else None)
                self._resolve(entry, result=result)
        return done

    def _carried_out(self, entry: _Entry, current: Current, target: Any) -> bool:
        intent = entry.intent
        ids = {c.id: c for c in current.containers}
        if isinstance(intent, RestartApp):
            if entry.stage == Stage.ACT and not intent.container_ids & ids.keys():
                entry.stage = Stage.PURGE if intent.purge else Stage.WAIT
            if entry.stage == Stage.PURGE:
                names = {v.name for v in current.volumes}
                if not intent.purge_volumes & names and (
                        intent.firmware_volume is None or entry.firmware_done):
                    entry.stage = Stage.WAIT
            return entry.stage == Stage.WAIT and not not_recreated(
                current, target, intent.app_id, intent.container_ids)
        if isinstance(intent, RestartService):
            if entry.stage == Stage.ACT and intent.container_id not in ids:
                entry.stage = Stage.WAIT
            return entry.stage == Stage.WAIT and not not_recreated(
                current, target, intent.app_id, {intent.container_id},
                only={intent.service_name})
        if isinstance(intent, StopService):
            return entry.acted or intent.container_id not in ids  # stopped under the lock
        if isinstance(intent, StartService):
            c = ids.get(intent.container_id)
            return c is None or c.running or entry.acted
        if isinstance(intent, StopAll):
            return not any(c.running for c in current.containers)
        present = {v.name for v in current.volumes}
        return all(n in entry.removed or n not in present for n in intent.names)

    def _resolve(self, entry: _Entry, *, result: Any = None,
                 error: BaseException | None = None) -> None:
        self._entries.pop(entry.id, None)
        if entry.future.done():
            return
        if error is not None:
            entry.future.set_exception(error)
        else:
            entry.future.set_result(result)
