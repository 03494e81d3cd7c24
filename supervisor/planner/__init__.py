"""The planner: a pure function from (current, target, context) to the next steps.

`plan()` does no I/O, reads no clock and has no randomness. The reconciler calls it after every
observation and applies the whole batch; steps of one batch are independent, and ordering
across batches comes from the conditions here (a container starts only once its networks,
volumes, images and dependencies are ready). Rules follow upstream's `inferNextSteps` and
`App.nextStepsForAppUpdate` (spec engine.md §6-§14, locks.md §6).

Split by concern: `core` (gating and the app loop), `apps` (per-app sequencing and locks),
`services` (per-service rules and update strategies), `specs` (memoised container specs),
`resources` (networks and volumes), `images` (housekeeping), `intents` (the steps that carry
out the API's intents).
"""

from supervisor.planner.context import PlanContext
from supervisor.planner.core import plan
from supervisor.planner.intents import intents_only
from supervisor.planner.specs import clear_spec_cache

__all__ = ["PlanContext", "clear_spec_cache", "intents_only", "plan"]
