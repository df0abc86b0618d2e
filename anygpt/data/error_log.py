"""Bad input lines: stop at the first, naming ``file:line``, or record each in ``errors.jsonl``
(``--skip-bad``) and go on.

Recorded rows wait in memory only until the writer passes them (:meth:`ErrorLog.drain`), which
appends them to the output's ``errors.jsonl`` as the build goes: memory does not grow with the
number of bad lines, and a resumed build keeps the rows of what it had written.
"""

from __future__ import annotations

from typing import Any

ERRORS_FILE = "errors.jsonl"


class ErrorLog:
    """Bad input: raise at once (``skip=False``) or record it and go on."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.pending: list[tuple[int | None, dict]] = []  # (stream position or None, row), not yet written
        self.count = 0  # rows recorded in all (written + pending), resumed ones included

    def bad_line(self, err: ValueError) -> None:
        """A ValueError whose message starts with ``file:line: ``."""
        where, _, reason = str(err).partition(": ")
        self.bad(where, reason)

    def bad(self, where: str, reason: str, position: int | None = None, **extra: Any) -> None:
        """Raise ``where: reason``, or with ``skip`` record it (and ``extra`` fields) and go on.
        ``position``: the build-stream position of the dropped sample (a resumed build that
        renders it again keeps one row for it)."""
        if not self.skip:
            raise ValueError(f"{where}: {reason} (use --skip-bad to record bad lines and go on)")
        self.pending.append((position, {"where": where, "error": reason, **extra}))
        self.count += 1

    def drain(self, before: int | None = None) -> list[dict]:
        """Take out the pending rows (those without a position or, with ``before``, of positions
        before it; the rest stay), in the order they were recorded."""
        if before is None:
            out, self.pending = [r for _, r in self.pending], []
            return out
        out = [r for p, r in self.pending if p is None or p < before]
        self.pending = [(p, r) for p, r in self.pending if p is not None and p >= before]
        return out
