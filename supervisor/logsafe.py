"""Log lines that a request cannot forge: control characters in a message are escaped.

A request path, a header or a body value often ends up in a log message (the request log
writes the decoded path: `/v1/%0A2026-01-01 INFO ...` would start a line of its own). The
one handler the runtime installs (`runtime._setup_logging`) formats every message with
`EscapingFormatter`, so a newline, a carriage return, an ANSI escape or any other control
character becomes visible text (`\\n`, `\\x1b`). Tracebacks, which are ours, keep their lines.
"""

from __future__ import annotations

import logging
import re

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` on one line: every control character as a visible escape."""
    return _CONTROLS.sub(_escape, text) if _CONTROLS.search(text) else text


class EscapingFormatter(logging.Formatter):
    """A Formatter whose `%(message)s` has its control characters escaped; the traceback
    and stack it appends are left as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)
