"""The health check behind `GET /v1/healthy` (config.md §9, engine.md §15.4).

The API's `health()` action asks `HealthCheck.check()`; the runtime builds the check from the
reconciler's `LoopState`, a `FetchTimer` it feeds from image pull progress, the poll interval
and, on a managed device, the cloud poller's own check. Healthy when every check passes:

1. the reconciliation loop runs (ours: a crashed loop task never recovers by itself);
2. the engine answered an observation within `ENGINE_GRACE_S` (ours: upstream notices a dead
   engine only through rule 3, after 2 x the poll interval, 30 min by default);
3. device-state (engine.md §15.4): not applying, or an image fetch is in progress, or the
   current apply run has lasted less than 2 x the poll interval, not counting the time spent
   fetching. A user update lock is exempt (README, differences): while it holds the apply
   back the check passes, and the run's clock starts again at the last round it held back;
4. api-binder (managed devices): a target poll succeeded within 2 x the poll interval (the
   poller's own check, `cloud/poller.py`), and the connectivity check, when enabled, did not
   find the API host unreachable (`host/integration.py`); an unmanaged device always passes.

Every reason is logged by the route (`Healthcheck failed: ...`). Time is monotonic and
injected, so the rules are tested with a controlled clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from supervisor.reconciler import LoopState

ENGINE_GRACE_S = 120.0
MAX_FETCH_PERIODS = 256  # bounded memory; older periods only make the check stricter


class FetchTimer:
    """When image fetches were in progress, so the apply clock can leave that time out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None  # some fetch has been in progress since
        self._periods: deque[tuple[float, float]] = deque(maxlen=MAX_FETCH_PERIODS)

    @property
    def active(self) -> bool:
        return self._since is not None

    def set_active(self, active: bool) -> None:
        """Called whenever the set of pulls in flight changes: is any pull in flight now?"""
        now = self._clock()
        if active and self._since is None:
            self._since = now
        elif not active and self._since is not None:
            self._periods.append((self._since, now))
            self._since = None

    def seconds_since(self, start: float, now: float) -> float:
        """Seconds of [start, now] during which a fetch was in progress."""
        spans = list(self._periods)
        if self._since is not None:
            spans.append((self._since, now))
        return sum(max(0.0, min(end, now) - max(begin, start)) for begin, end in spans)


class HealthCheck:
    def __init__(
        self,
        *,
        loop_state: Callable[[], LoopState | None],
        loop_alive: Callable[[], bool],
        fetches: FetchTimer,
        poll_interval_s: Callable[[], float],
        cloud: Callable[[], tuple[bool, str]] | None = None,
        connectivity: Callable[[], tuple[bool, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop_state = loop_state
        self._loop_alive = loop_alive
        self._fetches = fetches
        self._poll_interval_s = poll_interval_s
        self._cloud = cloud
        self._connectivity = connectivity
        self._clock = clock

    def check(self) -> tuple[bool, str]:
        """(healthy, the reason when not)."""
        if not self._loop_alive():
            return False, "the reconciliation loop has stopped"
        state = self._loop_state()
        now = self._clock()
        if state is not None:
            failing = state.observe_failing_since
            if failing is not None and now - failing >= ENGINE_GRACE_S:
                return False, (f"the container engine has not answered for "
                               f"{now - failing:.0f} s")
            stuck = self._applying_for(state, now)
            limit = 2 * self._poll_interval_s()
            if stuck is not None and stuck >= limit:
                return False, (f"the apply has not settled for {stuck:.0f} s "
                               f"(limit {limit:.0f} s, image downloads not counted)")
        if self._cloud is not None:
            ok, reason = self._cloud()
            if not ok:
                return ok, reason
        if self._connectivity is not None:
            return self._connectivity()
        return True, ""

    def _applying_for(self, state: LoopState, now: float) -> float | None:
        """How long the current apply run counts as running, or None when it is exempt.
        A fetch in progress never fails it: its time (all of it so far) is not counted."""
        if not state.applying or state.last_error_locked is not None:
            return None
        start = max(state.apply_started, state.locked_at or 0.0)
        return now - start - self._fetches.seconds_since(start, now)


class _PollSettings(Protocol):
    @property
    def poll_interval_ms(self) -> int: ...


class _Cloud(Protocol):
    def healthy(self) -> tuple[bool, str]: ...


class HealthSource(Protocol):
    """The parts of the running supervisor the check reads (the runtime implements it)."""

    @property
    def settings(self) -> _PollSettings: ...

    @property
    def fetches(self) -> FetchTimer: ...

    @property
    def cloud(self) -> _Cloud | None: ...


def runtime_health(rt: HealthSource) -> HealthCheck:
    """The check on the running supervisor's parts (a cheap object: built per request)."""
    def loop_alive() -> bool:
        task = getattr(rt, "reconciler_task", None)
        return task is None or not task.done()

    cloud = rt.cloud
    return HealthCheck(
        loop_state=lambda: getattr(getattr(rt, "reconciler", None), "state", None),
        loop_alive=loop_alive, fetches=rt.fetches,
        poll_interval_s=lambda: rt.settings.poll_interval_ms / 1000,
        cloud=cloud.healthy if cloud is not None else None,
        connectivity=getattr(getattr(rt, "host_features", None), "health", None),
    )
