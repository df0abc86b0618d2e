"""Bad input lines: stop at the first, naming ``file:line``, or record each in ``errors.jsonl``
(``--skip-bad``) and go on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anygpt.utils import write_jsonl

ERRORS_FILE = "errors.jsonl"


class ErrorLog:
    """Bad input: raise at once (``skip=False``) or record to ``errors.jsonl`` and go on."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.rows: list[dict] = []

    def bad_line(self, err: ValueError) -> None:
        """A ValueError whose message starts with ``file:line: ``."""
        where, _, reason = str(err).partition(": ")
        self.bad(where, reason)

    def bad(self, where: str, reason: str, **extra: Any) -> None:
        """Raise ``where: reason``, or with ``skip`` record it (and ``extra`` fields) and go on."""
        if not self.skip:
            raise ValueError(f"{where}: {reason} (use --skip-bad to record bad lines and go on)")
        self.rows.append({"where": where, "error": reason, **extra})

    def write(self, out_dir: Path) -> None:
        """Write the recorded rows to ``out_dir/errors.jsonl`` (nothing when there are none)."""
        if self.rows:
            write_jsonl(out_dir / ERRORS_FILE, self.rows)
