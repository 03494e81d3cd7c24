"""The level-triggered loop: dirty | timer -> observe -> plan -> apply -> publish, until settled.

Events (a new target, a Docker event, an API action) only mark the loop dirty. Every round
observes Docker afresh, so a stale plan is never run. One batch is applied at a time; a
failure backs off exponentially (capped, reset on success). A new target cancels a batch that
is only downloading (the pull is abandoned) and otherwise takes effect at the next round.

The loop owns the `IntentBook` (intent_book.py): API actions `submit()` intents and await
their futures. Each round settles the book after observing, plans with its view, and runs the
steps carried out for an intent apart from its own, so that an intent's failure (a user lock)
goes to the action that asked, not to the loop's backoff. A held loop (failure budget, a
reboot) still carries out intents, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from supervisor.errors import InternalError, StepFailed, SupervisorError, UpdatesLocked
from supervisor.executor import Executor
from supervisor.intent_book import IntentBook
from supervisor.model.current import Current
from supervisor.model.intents import Intent, StopAll
from supervisor.model.steps import Fetch, Noop, Step
from supervisor.model.target import TargetState
from supervisor.planner import PlanContext, intents_only, plan

_LOGGER = logging.getLogger(__name__)

BACKOFF_BASE = 0.5  # engine.md §15.2: wait min(2^failures x 500 ms, poll interval)
DEFAULT_POLL_INTERVAL_S = 900.0
RESYNC_INTERVAL = 30.0  # observe even without events, to catch what events missed


@dataclass
class LoopState:
    """What the loop exposes to the snapshot."""

    applying: bool = False
    failures: int = 0
    last_error: str | None = None
    last_error_locked: UpdatesLocked | None = None
    locked_since: float | None = None  # wall clock, when a user lock first held us back
    plan: tuple[Step, ...] = ()
    heartbeat: float = 0.0
    apply_started: float = 0.0
    last_success: float = 0.0
    observe_failing_since: float | None = None  # monotonic; the engine did not answer
    locked_at: float | None = None  # monotonic; the last round a user lock held back
    held: str | None = None  # why applying is paused (failure budget), until a new target


class Reconciler:
    def __init__(
        self,
        *,
        observe: Callable[[], Awaitable[Current]],
        target: Callable[[], TargetState | None],
        context: Callable[[Current], Awaitable[PlanContext]],
        executor: Executor,
        publish: Callable[[], None],
        on_settled: Callable[[], Awaitable[None]] | None = None,
        log: Callable[[str], None] = lambda message: None,
        poll_interval_s: Callable[[], float] = lambda: DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        self._log = log
        self._observe = observe
        self._target = target
        self._context = context
        self._executor = executor
        self._publish = publish
        self._on_settled = on_settled
        self._poll_interval_s = poll_interval_s
        self._dirty = asyncio.Event()
        self._target_changed = False
        self._batch: asyncio.Task[None] | None = None
        self._force = False
        self._abandoned = False  # the batch in flight was cancelled on purpose
        self.state = LoopState()
        self.current: Current | None = None
        self.intents = IntentBook(wake=self.mark_dirty)

    # -- triggers (cheap, from anywhere on the loop) ------------------------------------------

    def mark_dirty(self, *, force: bool = False) -> None:
        self._force = self._force or force
        if force:
            self.state.held = None
        self._dirty.set()

    def submit(self, intent: Intent) -> asyncio.Future[Any]:
        """Record an API intent and wake the loop; the future resolves once it is carried out
        (or fails with the error of its step). A batch that only downloads is abandoned, as
        for a new target: an action does not wait for a pull."""
        future = self.intents.submit(intent)
        self._abandon_downloads()
        return future

    def hold(self, reason: str) -> None:
        """Stop applying (the device keeps running what it has) until a new target arrives or
        an update is forced. Used by the cloud's failure budget."""
        self.state.held = reason
        self._publish()

    def resume(self) -> None:
        """End a hold without forcing anything (the device came back from a reboot)."""
        self.state.held = None
        self.mark_dirty()

    @property
    def batch_in_flight(self) -> bool:
        """A batch that changes containers is running (a download-only batch does not count)."""
        batch = self._batch
        return batch is not None and not batch.done() and not self._only_downloads

    def target_changed(self, *, force: bool = False) -> None:
        """A new target: reset the failure count and abandon a batch that only downloads."""
        self.state.failures = 0
        self.state.held = None
        self._target_changed = True
        self._abandon_downloads()
        self.mark_dirty(force=force)

    def _abandon_downloads(self) -> None:
        batch = self._batch
        if batch is not None and not batch.done() and self._only_downloads:
            self._abandoned = True
            batch.cancel()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._dirty.set()
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancellation that
            # arrives as the event is set (an intent resolving), and the task never stops
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESYNC_INTERVAL):
                    await self._dirty.wait()
            self._dirty.clear()
            if self.state.held is None or self.intents.pending:
                await self.apply_until_settled()

    async def apply_until_settled(self) -> None:
        self.state.applying = True
        self.state.apply_started = time.monotonic()
        self._publish()
        try:
            while self.state.held is None or self.intents.pending:
                self._target_changed = False
                self._abandoned = False
                steps = await self._round()
                if steps is None:
                    break
                # () is a failed round that already backed off: go again at once
                if steps and all(isinstance(s, Noop) for s in steps):
                    await self._sleep(1.0)  # waiting on something outside the loop
        finally:
            self.state.applying = False
            self._publish()

    async def _round(self) -> tuple[Step, ...] | None:
        """One observe-plan-apply round; None when settled."""
        self.state.heartbeat = time.monotonic()
        try:
            current = await self._observe()
        except SupervisorError as err:
            if self.state.observe_failing_since is None:
                self.state.observe_failing_since = time.monotonic()
            await self._failed(err)
            return ()
        self.state.observe_failing_since = None
        self.current = current
        try:
            ctx = await self._context(current)
            target = self._target()
            self._settle_intents(current, target, ctx)
            ctx = replace(ctx, intents=self.intents.view(), force=ctx.force or self._force)
            held = self.state.held is not None
            steps = intents_only(current, target, ctx) if held else plan(current, target, ctx)
        except SupervisorError as err:
            await self._failed(err)
            return ()
        except Exception as err:  # a planner bug must not kill the loop: log, back off, retry
            _LOGGER.exception("planning failed")
            await self._failed(InternalError(f"planning failed: {err!r}"))
            return ()
        self.state.plan = steps
        self._publish()
        if not steps:
            self.intents.settle(current, target, ctx.locked_apps, idle=True)
            self._settled()
            if self._on_settled is not None:
                await self._on_settled()
            return None
        if all(isinstance(s, Noop) for s in steps):
            return steps
        _LOGGER.info("applying %s", ", ".join(s.kind for s in steps))
        self._only_downloads = all(isinstance(s, Fetch | Noop) for s in steps)
        self._batch = asyncio.create_task(self._apply(steps), name="apply-batch")
        try:
            await self._batch
        except asyncio.CancelledError:
            if self._batch.cancelled() and self._abandoned:
                _LOGGER.info("download batch abandoned for a new target or an API action")
                return ()
            raise
        except SupervisorError as err:
            await self._failed(err)
            return ()
        finally:
            self._batch = None
        self.state.failures = 0
        self.state.last_error = None
        self.state.last_error_locked = None
        self.state.locked_since = None
        return steps

    _only_downloads: bool = False

    def _settle_intents(self, current: Current, target: TargetState | None,
                        ctx: PlanContext) -> None:
        for intent in self.intents.settle(current, target, ctx.locked_apps):
            if isinstance(intent, StopAll):
                self.hold(intent.reason)  # nothing more is applied until the device is back

    async def _apply(self, steps: tuple[Step, ...]) -> None:
        """The loop's own steps as one batch; each step of an intent beside it, its outcome
        reported to the book (its failure is the action's, not the loop's)."""
        own = tuple(s for s in steps if getattr(s, "intent", None) is None)
        theirs = [s for s in steps if getattr(s, "intent", None) is not None]
        results = await asyncio.gather(
            *(self._carry_out(s) for s in theirs),
            *((self._executor.apply(own),) if own else ()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _carry_out(self, step: Step) -> None:
        try:
            await self._executor.apply((step,))
        except SupervisorError as err:
            self.intents.step_failed(step, err)
            return
        self.intents.step_done(step)

    def _settled(self) -> None:
        self._force = False
        self.state.failures = 0
        self.state.last_error = None
        self.state.last_error_locked = None
        self.state.locked_since = None
        self.state.last_success = time.monotonic()

    async def _failed(self, err: SupervisorError) -> None:
        self.state.failures += 1
        delay = min(BACKOFF_BASE * 2 ** self.state.failures, self._poll_interval_s())
        cause = err.cause if isinstance(err, StepFailed) else err
        self.state.last_error = str(err)
        if isinstance(cause, UpdatesLocked):
            self.state.last_error_locked = cause
            self.state.locked_at = time.monotonic()
            if self.state.locked_since is None:
                self.state.locked_since = time.time()
            self._log(f"Updates are locked, retrying in {_pretty(delay)}. Reason: {cause}")
        else:
            _LOGGER.warning("apply failed (%d in a row), retrying in %.1f s: %s",
                            self.state.failures, delay, err)
        self._publish()
        lock_path = cause.path if isinstance(cause, UpdatesLocked) else None
        await self._sleep(delay, until_gone=lock_path)

    async def _sleep(self, seconds: float, *, until_gone: str | None = None) -> None:
        """Sleep, but wake early for a new target, a forced update, or (when an update lock
        blocked us) as soon as that lock file is gone: a released lock resumes in < 1 s."""
        waits = [asyncio.ensure_future(self._wait_for_target())]
        if until_gone is not None:
            waits.append(asyncio.ensure_future(_gone(until_gone)))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _wait_for_target(self) -> None:
        while not (self._target_changed or self._force):
            await self._dirty.wait()
            self._dirty.clear()
            if not (self._target_changed or self._force):
                # a docker event or an API nudge: keep sleeping the backoff out
                continue


async def _gone(path: str) -> None:
    # polling, not inotify: the lock dir is a bind mount written from inside containers
    while await asyncio.to_thread(os.path.lexists, path):  # noqa: ASYNC110
        await asyncio.sleep(0.5)


def _pretty(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 60 else f"{seconds / 60:.0f}m"
