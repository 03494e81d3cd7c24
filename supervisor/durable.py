"""The one durable file replace: a power cut leaves the old content or the new, never half.

Used by config.json (configjson.py), the boot-config backends (board/backends/files.py) and the
host files of PATCH /v1/device/host-config (host/hostconfig.py). Each caller turns the OSError
into its own error. Blocking: call from a thread when on the event loop.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_file(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data`: temp file in the same directory, write, fsync, rename, fsync
    the directory. The new file gets `mode`, or else the old file's mode (0600 when there was
    none: mkstemp's), before it takes the name, so a secret is never readable by others."""
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        if mode is not None:
            os.chmod(tmp_name, mode)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp_name, path.stat().st_mode & 0o7777)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable. vfat refuses fsync on a directory: the rename is
    then as durable as the filesystem allows."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
