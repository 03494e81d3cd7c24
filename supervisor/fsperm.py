"""File modes for secrets, and the ownership of directories we trust.

Used at start (runtime.py, store.py) and whenever a secret is written: the SQLite database
holds the API keys in clear, redsocks.conf the proxy password, config.json the device's cloud
key. They are created 0600 (SQLite gives its -wal and -shm files the database's mode) and
existing ones are set to 0600 at start; the data directory is 0700 where we own it. A
directory that other users could swap (the lock root in /tmp) must be a real directory owned by
the user we run as. Blocking: call from a thread when on the event loop.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from supervisor.errors import ConfigError

_LOGGER = logging.getLogger(__name__)

SECRET_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def _ours(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid()


def secure_file(path: Path | str, *, create: bool = False) -> None:
    """Make `path` 0600 (creating it empty, 0600 from the start, when `create`). A file we do
    not own, or a filesystem without modes (vfat), is left as it is."""
    path = Path(path)
    if create:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, SECRET_MODE))  # OSError: the caller's
    _chmod_if_ours(path, SECRET_MODE)


def secure_files(paths: Iterable[Path | str]) -> None:
    for path in paths:
        _chmod_if_ours(Path(path), SECRET_MODE)


def private_dir(path: Path | str) -> None:
    """Create `path` 0700 (and its parents as the umask says), or make it 0700 if we own it."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)  # OSError: the caller's
    _chmod_if_ours(path, PRIVATE_DIR_MODE)


def _chmod_if_ours(path: Path, mode: int) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or not _ours(st) or stat.S_IMODE(st.st_mode) == mode:
        return
    try:
        os.chmod(path, mode)
    except OSError as err:  # e.g. vfat: no modes to set
        _LOGGER.debug("cannot chmod %s: %s", path, err.strerror)
        return
    _LOGGER.info("%s was mode %o, now %o", path, stat.S_IMODE(st.st_mode), mode)


def owned_directory(path: Path | str, what: str) -> Path:
    """`path` as a real directory owned by us (root on a device), created when missing.

    Refused (ConfigError) when it is a symlink, not a directory, or owned by someone else:
    in a world-writable parent such as /tmp anyone could have made it first, and lock files
    under it would then be theirs to redirect."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a dangling symlink, or a file: refused below
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot create it: {err.strerror}") from err
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"{what} {path} is a symbolic link: refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {path} is not a directory")
    if not _ours(st):
        raise ConfigError(f"{what} {path} is owned by uid {st.st_uid}, not by uid "
                          f"{os.geteuid()} that the supervisor runs as: refusing to use it")
    return path
