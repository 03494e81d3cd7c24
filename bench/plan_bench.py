"""plan() speed: 10, 100 and 1,000 services, in one app and spread over 10 apps.

Two device states per size: converged (the fixpoint, what every idle round plans) and all
new (nothing on the device yet, the first plan of an install). `median_ms` is a planning
round with the target unchanged since the previous round, as the reconciler runs it;
`cold_ms` is the first round after a new target arrived (every container spec built
afresh, see supervisor/planner/specs.py). Medians of repeated runs, in milliseconds.

    .venv/bin/python -m bench.plan_bench
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from supervisor.model.current import Current  # noqa: E402
from supervisor.model.target import TargetState  # noqa: E402
from supervisor.planner import PlanContext, clear_spec_cache, plan  # noqa: E402
from tests.builders import (  # noqa: E402
    AppDef,
    converged,
    make_app,
    make_ctx,
    make_service,
    make_target,
)

SIZES = (10, 100, 1000)
TARGET_MS = 20.0  # 1,000 services, converged, warm


def fleet(services: int, apps: int) -> TargetState:
    """`services` services over `apps` apps, each with env, a port, a volume and a network."""
    per_app = services // apps
    defs: list[AppDef] = []
    for a in range(1, apps + 1):
        defs.append(make_app(a, [
            make_service(f"s{i}", image=f"registry.local/app{a}/s{i}:v1", image_id=a * 10000 + i,
                         environment={"MODE": "production", "INDEX": str(i)},
                         ports=[f"{10000 + a * 1000 + i}:80"], volumes=["data:/data"],
                         networks=["back"], restart="unless-stopped")
            for i in range(per_app)
        ], volumes={"data": {}}, networks={"back": {}}))
    return make_target(apps=defs)


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def _case(name: str, current: Current, target: TargetState, ctx: PlanContext,
          services: int) -> dict[str, Any]:
    repeats = 30 if services <= 100 else 15
    clear_spec_cache()
    steps = plan(current, target, ctx)  # warms the spec cache, as the previous round did

    def cold() -> None:
        clear_spec_cache()
        plan(current, target, ctx)

    row = {
        "case": name,
        "services": services,
        "steps": len(steps),
        "median_ms": _median_ms(lambda: plan(current, target, ctx), repeats),
        "cold_ms": _median_ms(cold, max(3, repeats // 3)),
    }
    clear_spec_cache()
    return row


def run() -> dict[str, Any]:
    rows = []
    for apps in (1, 10):
        for n in SIZES:
            target = fleet(n, apps)
            layout = "1 app" if apps == 1 else f"{apps} apps"
            world = converged(target)
            rows.append(_case(f"{layout}, converged", world.current, target, world.ctx, n))
            rows.append(_case(f"{layout}, all new", Current(), target, make_ctx(target), n))
    worst = max(r["median_ms"] for r in rows if r["services"] == 1000)
    return {"rows": rows, "target_ms": TARGET_MS, "worst_1000_ms": worst,
            "meets_target": worst <= TARGET_MS}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
