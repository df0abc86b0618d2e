"""Small shared plumbing: atomic writes, safe file names, rank info, seeding, JSONL reading and writing, console output
and capturing log records."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder + fsync + rename, so a
    reader sees either the old file or the whole new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed onto ``path``.

    For writers that need a file name (pyarrow, soundfile, PIL)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(stem: str, max_len: int = 64) -> str:
    """A file-name-safe stem: never a path, never empty, never hidden."""
    s = _SAFE.sub("_", str(stem)).strip("._") or "item"
    if len(s) > max_len:
        s = s[: max_len - 9] + "_" + hashlib.sha1(str(stem).encode()).hexdigest()[:8]
    return s


def dist_info() -> tuple[int, int]:
    """(rank, world_size) from the launcher's environment (torchrun / deepspeed), else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def read_jsonl(path: str | os.PathLike, lenient: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` per non-empty line. A line that is not UTF-8, not JSON or
    not a JSON object raises ValueError naming ``file:line``; with ``lenient`` that ValueError is
    yielded in place of the object instead, so a batch job can record the line and go on."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")  # a BOM on the first line is tolerated
                if not line.strip():
                    continue
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    obj = ValueError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            except UnicodeDecodeError as e:
                obj = ValueError(f"{path}:{n}: not UTF-8 text (byte {e.start})")
            except json.JSONDecodeError as e:
                obj = ValueError(f"{path}:{n}: not valid JSON ({e.msg})")
            except RecursionError:  # "[[[[…" nested past Python's recursion limit
                obj = ValueError(f"{path}:{n}: JSON nested too deeply")
            if isinstance(obj, ValueError) and not lenient:
                raise obj
            yield n, obj


def jsonl_line(record: Any) -> str:
    """One JSONL line: ``record`` as compact JSON (non-ASCII kept as is; objects JSON cannot encode,
    such as paths, as their ``str``) and a newline."""
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Write ``records`` as a JSONL file atomically (see :func:`atomic_write_bytes`): a reader sees
    the old file or the complete new one."""
    atomic_write_text(path, "".join(jsonl_line(r) for r in records))


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append ``record`` as one line and fsync, so a log survives a kill: a line is either whole on
    disk or absent. One ``O_APPEND`` write per line keeps concurrent appenders from interleaving."""
    data = jsonl_line(record).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """Parse a YAML file; a missing file raises FileNotFoundError ``"<path>: no such <what>"`` and
    bad YAML a ValueError naming the file."""
    import yaml

    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such {what}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML ({e})") from None


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


# Files in which transformers looks for ``auto_map`` (a class name in the folder's own .py files).
REMOTE_CODE_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                     "feature_extractor_config.json", "image_processor_config.json")


def refuse_remote_code(folder: str | os.PathLike) -> None:
    """Raise ``ValueError`` when a model / tokenizer folder declares ``auto_map``: transformers
    would offer to import the folder's own Python files, and answering yes runs them. We always
    pass ``trust_remote_code=False`` too; this check makes the refusal one clear line instead
    of a prompt on stdin. A folder that does not exist (a hub id) is left to transformers."""
    p = Path(folder)
    if not p.is_dir():
        return
    for name in REMOTE_CODE_FILES:
        f = p / name
        if not f.is_file():
            continue
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # unreadable files fail in transformers with their own message
        if isinstance(d, dict) and d.get("auto_map"):
            classes = sorted({str(v) for v in _flat_values(d["auto_map"])})
            raise ValueError(f"{f}: declares auto_map (custom code {', '.join(classes[:4])}); anygpt never runs a "
                             "bundle's own code: remove auto_map and use a built-in transformers architecture")


def _flat_values(v: Any) -> Iterator[Any]:
    if isinstance(v, dict):
        for x in v.values():
            yield from _flat_values(x)
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from _flat_values(x)
    elif v is not None:
        yield v


# ---------------------------------------------------------------- console output
# Library code says things through ``logging.getLogger(__name__)``; the ``anygpt`` command calls
# :func:`console_logging` once, so what a user reads stays plain lines (no logger prefixes).
class ConsoleHandler(logging.Handler):
    """Log records as the lines a user reads: info on stdout, warnings on stderr as ``warning: …``,
    errors on stderr as they are. Lines go through ``tqdm.write`` (above a progress bar, not through
    it), and the streams are looked up at each line, so a redirected ``sys.stdout`` receives them.
    In a multi-process run only rank 0 shows info lines; every rank shows warnings and errors."""

    def emit(self, record: logging.LogRecord) -> None:
        if _captured(record):  # the capturing caller reports it in its own words
            return
        try:
            msg = self.format(record)
            if record.levelno < logging.WARNING:
                if dist_info()[0] != 0:
                    return
                stream = sys.stdout
            else:
                stream = sys.stderr
                if record.levelno < logging.ERROR and not msg.startswith("warning:"):
                    msg = f"warning: {msg}"
            from tqdm import tqdm

            tqdm.write(msg, file=stream)
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never take the caller down
            self.handleError(record)


def console_logging(level: int = logging.INFO, propagate: bool = False) -> logging.Logger:
    """Show the ``anygpt`` loggers' records at ``level`` and above as plain lines
    (:class:`ConsoleHandler`). ``propagate=False``: a root handler that a dependency installed
    does not print each line a second time. A second call only sets the level (the first call's
    handler and ``propagate`` stay)."""
    logger = logging.getLogger("anygpt")
    logger.setLevel(level)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        logger.propagate = propagate
        logger.addHandler(ConsoleHandler())
    return logger


_CAPTURES = threading.local()  # this thread's active capture_log_records collectors


class _RecordCollector(logging.Handler):
    """Collects this thread's records under logger ``name`` at ``level`` and above."""

    def __init__(self, level: int, name: str):
        super().__init__(level)
        self.logger_name, self.thread = name, threading.get_ident()
        self.records: list[logging.LogRecord] = []

    def wants(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= self.level and record.thread == self.thread
                and (record.name == self.logger_name or record.name.startswith(self.logger_name + ".")))

    def emit(self, record: logging.LogRecord) -> None:
        if self.wants(record):
            self.records.append(record)


def _captured(record: logging.LogRecord) -> bool:
    return any(c.wants(record) for c in getattr(_CAPTURES, "stack", ()))


@contextlib.contextmanager
def capture_log_records(level: int = logging.WARNING, logger: str = "anygpt") -> Iterator[list[logging.LogRecord]]:
    """Collect the records that ``logger`` and its children emit at ``level`` and above in this
    thread while the block runs (a batch job records a decode's repairs per item)::

        with capture_log_records() as records:
            tok.decode(codes)
        notes = [r.getMessage() for r in records]

    The console handler does not print a captured record (the caller reports it, e.g. with the
    item's id, so a user reads it once); other handlers, pytest's included, still receive it.
    Records of other threads pass untouched, so concurrent jobs do not collect each other's."""
    collector = _RecordCollector(level, logger)
    stack = _CAPTURES.__dict__.setdefault("stack", [])
    stack.append(collector)
    logging.getLogger(logger).addHandler(collector)
    try:
        yield collector.records
    finally:
        logging.getLogger(logger).removeHandler(collector)
        stack.remove(collector)
