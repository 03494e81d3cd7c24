"""`POST /v2/journal-logs`: journalctl's stdout, streamed as it comes (api.md §4.17).

Data flow: API route -> `RuntimeActions.journal_logs` -> `open_journal()` starts journalctl
(one argv entry per option, never a shell) -> the route streams `JournalStream` to the client.
When the client goes away the read is cancelled or the stream closed: journalctl is killed
(SIGKILL, as upstream) and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from asyncio.subprocess import Process
from dataclasses import dataclass

from supervisor.errors import NotFound

JOURNALCTL = "journalctl"
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class JournalParams:
    """`POST /v2/journal-logs` options, already validated (api.md §4.17)."""

    all: bool = False  # -a
    follow: bool = False  # --follow
    count: int | None = None  # -n <count>
    unit: str | None = None  # -u <unit>
    container_id: str | None = None  # -t <id> (syslog identifier)
    format: str = "short"  # -o <format>
    since: str | None = None  # -S <since>
    until: str | None = None  # -U <until>

    def argv(self) -> list[str]:
        """journalctl arguments, one argv entry per value (never a shell)."""
        args: list[str] = []
        if self.all:
            args.append("-a")
        if self.follow:
            args.append("--follow")
        if self.count is not None:
            args += ["-n", str(self.count)]
        if self.unit is not None:
            args += ["-u", self.unit]
        if self.container_id is not None:
            args += ["-t", self.container_id]
        args += ["-o", self.format]
        if self.since is not None:
            args += ["-S", self.since]
        if self.until is not None:
            args += ["-U", self.until]
        return args


class JournalStream:
    """Async iterator over journalctl's stdout chunks; ends when journalctl exits."""

    def __init__(self, proc: Process) -> None:
        self._proc = proc

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def __aiter__(self) -> JournalStream:
        return self

    async def __anext__(self) -> bytes:
        assert self._proc.stdout is not None
        try:
            chunk = await self._proc.stdout.read(CHUNK)
        except BaseException:  # cancelled: the client disconnected
            await self.aclose()
            raise
        if not chunk:
            await self._proc.wait()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Kill journalctl (if still running) and reap it."""
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        await self._proc.wait()

    def __del__(self) -> None:
        # Never iterated (the client left before the body started): do not leak the process.
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, RuntimeError):
                self._proc.kill()


async def open_journal(params: JournalParams, *, executable: str = JOURNALCTL) -> JournalStream:
    """Start journalctl; `NotFound` when it is not installed or cannot run."""
    path = shutil.which(executable)
    if path is None:
        raise NotFound("journalctl is not available on this device")
    try:
        proc = await asyncio.create_subprocess_exec(
            path, *params.argv(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as err:
        raise NotFound(f"journalctl cannot run: {err}") from err
    return JournalStream(proc)
