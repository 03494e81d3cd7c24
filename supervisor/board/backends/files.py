"""The one place where boot-config backends touch files (config.md §5.3).

`write_atomic` replaces a file so that a power cut leaves the old or the new content, never
half of one: a temp file in the same directory, write, fsync, rename over the target, fsync
the directory. The boot partition is FAT on a device; the sequence is the same there.
`write_in_place` is for the one thing that cannot be renamed, a block device (ODMDATA).

Blocking: callers on the event loop wrap these in `asyncio.to_thread`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from supervisor.durable import replace_file
from supervisor.errors import SupervisorError


class BootConfigError(SupervisorError):
    """A boot-config file cannot be read, parsed or written; the apply fails and is retried."""


def read_bytes(path: Path) -> bytes | None:
    """The file's content, None if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise BootConfigError(f"Cannot read {path}: {err.strerror or err}") from err


def read_text(path: Path) -> str | None:
    data = read_bytes(path)
    return None if data is None else data.decode("utf-8", errors="replace")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` durably (supervisor/durable.py), keeping the old file's mode."""
    try:
        replace_file(path, data)
    except OSError as err:
        raise BootConfigError(f"Cannot write {path}: {err.strerror or err}") from err


def write_in_place(path: Path, patches: Iterable[tuple[int, bytes]]) -> None:
    """Write each `(offset, data)` into an existing file or device, then fsync it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError as err:
        raise BootConfigError(f"File not found at: {path}") from err
    except PermissionError as err:
        raise BootConfigError(f"Permission denied when opening '{path}'") from err
    except OSError as err:
        raise BootConfigError(f"Cannot open {path}: {err.strerror or err}") from err
    try:
        for offset, data in patches:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    except OSError as err:
        raise BootConfigError(f"Issue writing to '{path}': {err.strerror or err}") from err
    finally:
        os.close(fd)
