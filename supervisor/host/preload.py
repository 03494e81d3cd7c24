"""The apps.json file on the data partition: read it once, then retire it (state.md §9).

`model/preload.py` turns its content into a target; this module is the file side. Both
functions block on disk I/O: async callers wrap them in `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from supervisor.configjson import write_atomic
from supervisor.errors import ConfigError
from supervisor.model.preload import PreloadError

_LOGGER = logging.getLogger(__name__)

APPS_JSON = "apps.json"
MAX_BYTES = 4 * 1024 * 1024  # a preload names images; it does not hold them


def apps_json_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / APPS_JSON


def retired_path(path: Path) -> Path:
    return path.with_name(path.name + ".preloaded")


def read_apps_json(path: Path) -> object | None:
    """The parsed JSON, or None when there is no file (a missing file, or a directory: the
    engine creates one for a bind mount whose source is missing). PreloadError otherwise."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as err:
        raise PreloadError(f"cannot read {path}: {err.strerror or err}") from err
    if len(raw) > MAX_BYTES:
        raise PreloadError(f"{path} is larger than {MAX_BYTES} bytes")
    try:
        parsed: object = json.loads(raw)
    except ValueError as err:
        raise PreloadError(f"{path} is not valid JSON: {err}") from None
    return parsed


def retire_apps_json(path: Path) -> bool:
    """Rename the file to `apps.json.preloaded` and write `{}` in its place, so a lost
    database never loads the preload again. Skipped (False) when a `.preloaded` file already
    exists; failures are logged and skipped too, as upstream does."""
    retired = retired_path(path)
    if retired.exists():
        return False
    try:
        os.rename(path, retired)
        write_atomic(path, {})
    except (OSError, ConfigError) as err:
        _LOGGER.debug("Continuing without migrating apps.json because of %s", err)
        return False
    return True
