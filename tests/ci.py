"""Whether the suite runs in CI, where a missing prerequisite is a failure, never a skip."""

from __future__ import annotations

import os


def ci_strict() -> bool:
    """True when CI is set (anything but empty, false, 0, no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "false", "0", "no")
