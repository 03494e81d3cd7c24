"""The failure budget: a target that fails to apply N times in a row is given up on.

`sync.CloudSync` watches the reconciler's LoopState and feeds it here: each new failed round
of the current target is counted in SQLite (`store.record_failure(target_hash, error)`), so
the count survives restarts; a settled loop or a new target clears it. When the count reaches
the limit the target is *exhausted*: its releases are reported `aborted` with the reason, and
the reconciler is asked to hold (keep what runs) until the target changes or an update is
forced (`POST /v1/update` with `force`), which resets the count.

The limit comes from the device config variable `SUPERVISOR_UPDATE_FAILURE_LIMIT` (with the
usual `BALENA_`/`RESIN_` prefixes; default 5; 0 disables the budget).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.model.config_vars import DeviceConfig, lookup

if TYPE_CHECKING:
    from supervisor.store import Failure

_LOGGER = logging.getLogger(__name__)

DEFAULT_LIMIT = 5
LIMIT_VAR = "SUPERVISOR_UPDATE_FAILURE_LIMIT"


class FailureStore(Protocol):
    async def record_failure(self, target_hash: str, error: str) -> int: ...

    async def failure(self, target_hash: str) -> Failure | None: ...

    async def clear_failures(self, target_hash: str | None = None) -> None: ...


def target_hash(body: Mapping[str, Any]) -> str:
    """A stable name for a target body (its canonical JSON)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def config_var(config: Mapping[str, str], name: str) -> str | None:
    """A device config variable; BALENA_ wins over RESIN_, which wins over no prefix."""
    return lookup(config, name)


def limit_from(config: Mapping[str, str]) -> int:
    value = DeviceConfig.of(config).number(LIMIT_VAR)
    return DEFAULT_LIMIT if value < 0 else value


class FailureBudget:
    def __init__(self, store: FailureStore, *, limit: Callable[[], int] = lambda: DEFAULT_LIMIT,
                 log: Callable[[str], None] = _LOGGER.warning) -> None:
        self._store = store
        self._limit = limit
        self._log = log
        self.target: str | None = None
        self.count = 0
        self.reason: str | None = None

    @property
    def exhausted(self) -> bool:
        limit = self._limit()
        return bool(limit) and self.target is not None and self.count >= limit

    async def set_target(self, target: str | None) -> None:
        """The target now being applied; its persisted count comes back with it."""
        if target == self.target:
            return
        if self.target is not None:
            await self._store.clear_failures(self.target)
        self.target = target
        found = await self._store.failure(target) if target is not None else None
        self.count = found.count if found else 0
        self.reason = found.last_error if found else None

    async def failed(self, error: str) -> bool:
        """Count one failed round. True when this one exhausts the budget."""
        if self.target is None:
            return False
        was = self.exhausted
        self.count = await self._store.record_failure(self.target, error)
        self.reason = error
        if self.exhausted and not was:
            self._log(f"Update failed {self.count} times in a row, giving up until the target "
                      f"changes or an update is forced: {error}")
            return True
        return False

    async def reset(self) -> None:
        """A settled loop or a forced update: start counting again from zero."""
        if self.target is not None and (self.count or self.reason):
            await self._store.clear_failures(self.target)
        self.count = 0
        self.reason = None
