"""Download progress from Docker pull events, as upstream's docker-progress computes it.

Pure: feed it the decoded JSON events of a pull, read `percent`. Per-layer trackers for the
download and extraction stages; overall = floor((download% + extract%) / 2); never decreases
(engine.md §14.7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_SMALL_DOWNLOAD = 100 * 1024
_SMALL_EXTRACT = 1024 * 1024


@dataclass
class _Layer:
    download: float = 0.0  # fraction 0..1
    extract: float = 0.0
    small: bool = False


@dataclass
class PullProgress:
    layers: dict[str, _Layer] = field(default_factory=dict)
    percent: int = 0
    done: bool = False

    def feed(self, event: dict[str, Any]) -> int:
        """Account one pull event; return the (monotonic) overall percentage."""
        status = str(event.get("status", ""))
        layer_id = event.get("id")
        if event.get("id") == "Total":  # balenaEngine's aggregate
            detail = event.get("progressDetail") or {}
            if detail.get("total"):
                self._bump(math.floor(detail.get("current", 0) * 100 / detail["total"]))
            return self.percent
        if status.startswith("Status: Image is up to date") or status.startswith(
            "Status: Downloaded newer image"
        ):
            self.done = True
            self._bump(100)
            return self.percent
        if not layer_id or not isinstance(layer_id, str):
            return self.percent
        layer = self.layers.setdefault(layer_id, _Layer())
        detail = event.get("progressDetail") or {}
        current = float(detail.get("current") or 0)
        total = float(detail.get("total") or 0)
        if status == "Pulling fs layer" or status == "Waiting":
            pass
        elif status == "Downloading" and total > 0:
            if not layer.download and total < _SMALL_DOWNLOAD:
                layer.small = True
            layer.download = min(1.0, current / total)
        elif status in ("Download complete", "Verifying Checksum"):
            layer.download = 1.0
        elif status == "Extracting" and total > 0:
            layer.download = 1.0
            if not layer.extract and total < _SMALL_EXTRACT and layer.small:
                layer.small = True
            layer.extract = min(1.0, current / total)
        elif status in ("Pull complete", "Already exists"):
            layer.download = layer.extract = 1.0
        self._recompute()
        return self.percent

    def _recompute(self) -> None:
        counted = [lay for lay in self.layers.values() if not lay.small] or list(
            self.layers.values()
        )
        if not counted:
            return
        download = round(100 * sum(lay.download for lay in counted) / len(counted))
        extract = round(100 * sum(lay.extract for lay in counted) / len(counted))
        self._bump(math.floor((download + extract) / 2))

    def _bump(self, value: int) -> None:
        self.percent = max(self.percent, min(100, value))
