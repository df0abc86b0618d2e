"""The batch tokenize job: a manifest of media → Parquet code shards, sharded by rank, resumable.

Design (what makes a rerun after a kill finish the rest with no duplicates and no gaps):

- The manifest (JSONL ``{"id", "path", "text"?}`` or a saved HF dataset with ``path``/``text``
  columns) is cut into fixed chunks of ``shard_size`` rows: shard ``k`` = rows ``[k*S, (k+1)*S)``.
- Rank ``r`` of ``W`` (``RANK``/``WORLD_SIZE`` from torchrun / deepspeed; no process group needed)
  does the shards with ``k % W == r``.
- A shard is finished when ``shard-KKKKK.parquet`` exists: its errors file
  ``shard-KKKKK.errors.jsonl`` is written first, then the Parquet file, both atomically. A rerun
  skips finished shards.
- ``job.json`` pins the manifest hash, shard size and tokenizer fingerprint: a rerun with another
  manifest or tokenizer into the same directory is refused instead of mixing codes. It is created
  with ``O_EXCL`` semantics (a hard link of a complete temp file), so of two jobs started at once
  on one folder exactly one writes it and the other compares against it.
- Each rank holds an ``fcntl`` lock on ``.lock-rank-R`` (with its pid inside) for the whole run: a
  second job for the same rank and folder is refused naming the holder; the kernel drops the lock
  when the holder dies, so a killed run never blocks a rerun. A killed run's temp files are
  deleted only when the pid in their name is not a live process, so a live writer's temp file is
  never touched (a job with another world size writing the same shard included).
- Before merging, every shard's ids (rows plus errors) are checked to be exactly its manifest
  rows; a shard that is not (written by another job) is deleted and the job fails: rerun.
- A recording longer than the window (``window_seconds``, default the tokenizer's
  :attr:`~anygpt.modality.base.ModalityTokenizer.default_window_seconds`) is cut into windows
  every ``hop_seconds``: one row per window, id ``<id>@<offset>`` (offset in seconds), with
  ``offset`` and ``duration`` columns; a recording that fits is one row with its own id. Windows
  come from the file's header and the settings only, so a rerun cuts the same windows.
- When every shard exists, the rank that notices (the last to finish) merges the per-shard errors
  into ``errors.jsonl`` (``{"id","path","reason"}``) and writes ``manifest.json`` (counts,
  fingerprint, card); past ``max_error_rate`` the job fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from anygpt.data.shards import read_meta, write_shard
from anygpt.modality.base import MediaError, ModalityTokenizer, TokenizerCard, load_card, load_tokenizer
from anygpt.utils import atomic_write_text, dist_info, read_jsonl

JOB_FILE = "job.json"
ERRORS_FILE = "errors.jsonl"
SUMMARY_FILE = "manifest.json"


@dataclass
class ManifestItem:
    id: str
    path: str  # as written in the manifest (recorded as the shard's ``source``)
    resolved: Path  # path resolved against the manifest's folder
    text: str | None = None


@dataclass
class JobResult:
    shards_done: int  # shards this process tokenized now
    shards_skipped: int  # shards that were already finished
    shards_total: int
    items: int = 0
    errors: int = 0
    merged: bool = False  # this process wrote errors.jsonl + manifest.json
    error_rate: float | None = None
    failed: str | None = None  # set when the error rate is past the limit
    summary: dict = field(default_factory=dict)


def read_manifest(manifest: str | os.PathLike | None = None, hf_dataset: str | os.PathLike | None = None) -> tuple[list[ManifestItem], str]:
    """Manifest rows and a hash of their content. Duplicate or missing ids fail with the line."""
    items: list[ManifestItem] = []
    h = hashlib.sha256()
    if hf_dataset is not None:
        import datasets

        ds = datasets.load_from_disk(str(hf_dataset))
        if "path" not in ds.column_names:
            raise ValueError(f"{hf_dataset}: dataset has no 'path' column (columns: {ds.column_names})")
        base = Path(hf_dataset)
        rows: Iterator[tuple[str, dict]] = ((f"{hf_dataset}[{i}]", {"id": str(i), **r}) for i, r in enumerate(ds))
    else:
        if manifest is None:
            raise ValueError("give a manifest (--manifest FILE) or a dataset (--hf-dataset DIR)")
        base = Path(manifest).parent
        if not Path(manifest).exists():
            raise FileNotFoundError(f"{manifest}: manifest not found")
        rows = ((f"{manifest}:{n}", r) for n, r in read_jsonl(manifest))
    seen: dict[str, str] = {}
    for where, r in rows:
        if not r.get("path") or r.get("id") is None:
            raise ValueError(f"{where}: each row needs 'id' and 'path'")
        iid = str(r["id"])
        if iid in seen:
            raise ValueError(f"{where}: duplicate id {iid!r} (first at {seen[iid]})")
        seen[iid] = where
        p = Path(os.path.expanduser(str(r["path"])))
        text = r.get("text")
        items.append(ManifestItem(iid, str(r["path"]), p if p.is_absolute() else base / p, None if text is None else str(text)))
        h.update(json.dumps([iid, str(r["path"]), text], ensure_ascii=False).encode())
    if not items:
        raise ValueError(f"{hf_dataset or manifest}: manifest has no rows")
    return items, h.hexdigest()[:16]


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.parquet"


def errors_name(k: int) -> str:
    return f"shard-{k:05d}.errors.jsonl"


def remove_stale_temps(out: Path, k: int) -> list[Path]:
    """Delete the temp files a killed run left for shard ``k`` (``.shard-KKKKK.*.tmp``); returns them.

    Called only for shards this rank is about to write; a temp file whose name carries the pid of
    another live process (``atomic_path`` names) is left alone: that process is writing it."""
    stale = [p for p in out.glob(f".shard-{k:05d}.*") if p.name.endswith(".tmp") and not _written_by_live_process(p)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _written_by_live_process(p: Path) -> bool:
    parts = p.name.split(".")
    pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def item_size(item: Any) -> int:
    """Size used to group a batch: samples for audio, pixels for images."""
    if hasattr(item, "size") and isinstance(getattr(item, "size"), tuple):  # PIL image
        w, h = item.size
        return w * h
    return int(np.asarray(item).size)


def size_batches(sizes: Sequence[int], batch_size: int, max_batch_elements: int | None) -> list[list[int]]:
    """Indices grouped by similar size (sorted), at most ``batch_size`` items and, when given,
    at most ``max_batch_elements`` padded elements (items × largest item) per batch."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur:
            padded = (len(cur) + 1) * max(sizes[j] for j in cur + [i])
            if len(cur) >= batch_size or (max_batch_elements is not None and padded > max_batch_elements):
                batches.append(cur)
                cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _reason(e: BaseException, path: Path) -> str:
    msg = str(e)
    prefix = f"{path}: "
    if msg.startswith(prefix):
        return msg[len(prefix):]
    return msg if isinstance(e, MediaError) else f"{type(e).__name__}: {msg}"


def encode_items(tok: ModalityTokenizer, media: list[Any], batch_size: int, max_batch_elements: int | None
                 ) -> list[np.ndarray | BaseException]:
    """Encode loaded media in size-grouped batches; a failing batch is retried one item at a
    time so one bad item costs only itself. Returns codes or the exception, per item."""
    out: list[np.ndarray | BaseException | None] = [None] * len(media)
    for batch in size_batches([item_size(m) for m in media], batch_size, max_batch_elements):
        try:
            codes = tok.encode([media[i] for i in batch])
            for i, c in zip(batch, codes):
                out[i] = c
        except Exception:
            for i in batch:
                try:
                    out[i] = tok.encode([media[i]])[0]
                except Exception as e:  # noqa: BLE001 - recorded per item
                    out[i] = e
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Windowing:
    """How long recordings are cut: ``window_seconds`` per row (None: never cut; the card's
    ``max_seconds`` then refuses long files), a new window every ``hop_seconds`` (default: the
    window, no overlap); a last window shorter than ``min_tail_seconds`` is dropped unless it is
    the only one."""

    window_seconds: float | None
    hop_seconds: float | None = None
    min_tail_seconds: float = 1.0
    max_windows: int = 1000  # one recording may give at most this many rows (a 20 s window: 5.5 h)

    def __post_init__(self) -> None:
        if self.window_seconds is not None and self.window_seconds <= 0:
            raise ValueError(f"--window-seconds must be > 0, got {self.window_seconds}")
        if self.hop_seconds is not None and (self.hop_seconds <= 0 or self.window_seconds is None):
            raise ValueError(f"--hop-seconds must be > 0 and needs a window, got {self.hop_seconds}")

    @property
    def hop(self) -> float | None:
        return self.hop_seconds or self.window_seconds

    def spans(self, duration: float) -> list[tuple[float, float | None]]:
        """``(offset, length)`` windows of a recording of ``duration`` seconds; ``[(0, None)]``
        (the whole file) when it fits in one window."""
        w = self.window_seconds
        if w is None or duration <= w + 1e-6:
            return [(0.0, None)]
        n = math.ceil((duration - w) / self.hop - 1e-9) + 1  # windows until one reaches the end
        if n > self.max_windows:
            raise MediaError(f"{duration:.0f} s would make about {n} windows of {w:g} s, more than max_windows "
                             f"{self.max_windows}; cut the recording first or use longer windows")
        out, k = [], 0
        while True:
            start = round(k * self.hop, 6)
            if start >= duration - 1e-6:
                break
            length = min(w, duration - start)
            if length < self.min_tail_seconds and out:
                break
            out.append((start, length))
            if start + w >= duration - 1e-6:
                break
            k += 1
        return out

    def to_dict(self) -> dict:
        return {"window_seconds": self.window_seconds, "hop_seconds": self.hop, "min_tail_seconds": self.min_tail_seconds}


def window_id(item_id: str, offset: float) -> str:
    """The row id of a window: ``<id>@<offset>`` with the offset in seconds (``clip@30``, ``clip@2.5``)."""
    return f"{item_id}@{offset:g}"


def load_windows(tok: ModalityTokenizer, it: ManifestItem, windowing: Windowing | None) -> list[tuple[dict, Any]]:
    """One manifest item's media: ``[(row fields, media)]``, one entry per window for a long
    recording (see :class:`Windowing`), the whole item otherwise. Raises on an unreadable file;
    a window that fails to read is raised too (the item's file is bad, not one window)."""
    from anygpt.modality.media import audio_duration

    if tok.modality == "image" or windowing is None or windowing.window_seconds is None:
        return [({"id": it.id, "offset": None, "duration": None}, tok.load_media(it.resolved))]
    duration = audio_duration(it.resolved)
    spans = windowing.spans(duration)
    if spans == [(0.0, None)]:
        return [({"id": it.id, "offset": 0.0, "duration": round(duration, 6)}, tok.load_media(it.resolved))]
    return [({"id": window_id(it.id, start), "offset": start, "duration": round(length, 6)},
             tok.load_window(it.resolved, start, length)) for start, length in spans]


def tokenize_shard(tok: ModalityTokenizer, items: list[ManifestItem], modality: str, batch_size: int,
                   max_batch_elements: int | None, window: int | None = None,
                   windowing: Windowing | None = None) -> tuple[list[dict], list[dict]]:
    """One shard's rows (in manifest order; a long recording's windows in time order) and errors
    (``{"id","path","reason"}``).

    Media are read ``window`` items at a time (default 8 batches) and size-sorted within the
    window, so memory stays bounded however large the shard is."""
    rows, errors = [], []
    window = window or max(8 * batch_size, 64)
    for start in range(0, len(items), window):
        loaded: list[tuple[ManifestItem, dict, Any]] = []
        for it in items[start:start + window]:
            try:
                loaded.extend((it, fields, m) for fields, m in load_windows(tok, it, windowing))
            except MediaError as e:
                errors.append({"id": it.id, "path": it.path, "reason": _reason(e, it.resolved)})
            except Exception as e:  # noqa: BLE001 - an unexpected reader failure is still one bad item
                errors.append({"id": it.id, "path": it.path, "reason": f"{type(e).__name__}: {e}"})
        results = encode_items(tok, [m for _, _, m in loaded], batch_size, max_batch_elements)
        for (it, fields, _), res in zip(loaded, results):
            if isinstance(res, BaseException):
                errors.append({"id": fields["id"], "path": it.path, "reason": f"encode failed: {_reason(res, it.resolved)}"})
            elif len(res) == 0:
                errors.append({"id": fields["id"], "path": it.path, "reason": "encode produced no codes"})
            else:
                rows.append({**fields, "modality": modality, "codes": np.asarray(res, dtype=np.int64).tolist(),
                             "text": it.text, "source": it.path})
    return rows, errors


def _check_job_file(out: Path, job: dict) -> None:
    """Refuse to resume into a directory made from another manifest / shard size / tokenizer."""
    path = out / JOB_FILE
    if not _create_exclusive(path, json.dumps(job, indent=1, sort_keys=True)):
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = [k for k in ("manifest_hash", "shard_size", "fingerprint", "modality", "windows") if old.get(k) != job.get(k)]
        if diff:
            raise ValueError(f"{out}: holds a job with different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old.get(k)}' for k in diff)}); use a new --out directory")


def _create_exclusive(path: Path, text: str) -> bool:
    """Write ``path`` only if it does not exist, atomically and complete (a fsynced temp file
    hard-linked into place: the link fails when another process made the file first).
    Returns False when the file already existed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


class JobBusy(ValueError):
    """Another live process holds this tokenize job (same folder and rank, or the same shard)."""


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[bool]:
    """Hold an ``fcntl`` lock on ``path`` (its content: the holder's pid) for the ``with`` block.
    Yields True when taken, False when a live process holds it (``what`` names it in messages).
    The kernel releases the lock when its holder dies, so a stale lock file never blocks."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield True
    finally:
        os.close(fd)  # closing drops the lock


def lock_holder(path: Path) -> str:
    """The pid written in a lock file, for messages ("?" when unreadable)."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def verify_shard_ids(out: Path, items: list[ManifestItem], shard_size: int, n_shards: int) -> None:
    """Check that each shard's rows (Parquet rows plus its errors file) are exactly its manifest
    rows: every item present once (as one row, or as its windows ``<id>@<offset>``, each once),
    nothing foreign. A shard that is not (another job wrote it) is deleted, with its errors file,
    and a ``ValueError`` names it: a rerun redoes it."""
    import pyarrow.parquet as pq

    bad = []
    for k in range(n_shards):
        want = {it.id for it in items[k * shard_size:(k + 1) * shard_size]}
        table = pq.read_table(out / shard_name(k))
        row_ids = [str(i) for i in table.column("id").to_pylist()]
        offsets = table.column("offset").to_pylist() if "offset" in table.column_names else [None] * len(row_ids)
        got = [_item_of(rid, off, want) for rid, off in zip(row_ids, offsets)]
        ep = out / errors_name(k)
        if ep.exists():
            got += [str(json.loads(line)["id"]) for line in ep.read_text(encoding="utf-8").splitlines() if line.strip()]
            row_ids += got[len(row_ids):]
        if set(got) != want or len(set(row_ids)) != len(row_ids):
            missing, extra = sorted(want - set(got)), sorted(set(got) - want)
            bad.append(f"{shard_name(k)} (missing {missing[:3]}, foreign {extra[:3]}, {len(row_ids)} rows for "
                       f"{len(want)} items)")
            (out / shard_name(k)).unlink(missing_ok=True)
            ep.unlink(missing_ok=True)
    if bad:
        raise ValueError(f"{out}: shards that do not hold their manifest rows were removed: {'; '.join(bad[:5])}; "
                         "rerun the same command to redo them")


def _item_of(row_id: str, offset: float | None, items: set[str]) -> str:
    """The manifest id a shard row belongs to: its own id, or a window's id less ``@<offset>``."""
    if row_id in items or offset is None:
        return row_id
    suffix = f"@{offset:g}"
    return row_id[: -len(suffix)] if row_id.endswith(suffix) else row_id


def _exclusive_per_rank(job: Any) -> Any:
    """Run ``job(card, out_dir, **kw)`` holding ``OUT/.lock-rank-R`` (see the module docstring);
    a second live job for that folder and rank raises :class:`JobBusy` naming the holder's pid."""
    import functools

    @functools.wraps(job)
    def run(card: Any, out_dir: str | os.PathLike, **kw: Any) -> JobResult:
        rank = kw.get("rank")
        rank = dist_info()[0] if rank is None else rank
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        lock = out / f".lock-rank-{rank}"
        with exclusive_lock(lock, "tokenize job") as held:
            if not held:
                raise JobBusy(f"{out}: another tokenize job (pid {lock_holder(lock)}) is running rank {rank} in this "
                              "folder; wait for it to finish or use another --out")
            return job(card, out_dir, **kw)

    return run


@_exclusive_per_rank
def tokenize_manifest(card: str | os.PathLike | TokenizerCard, out_dir: str | os.PathLike, *,
                      manifest: str | os.PathLike | None = None, hf_dataset: str | os.PathLike | None = None,
                      modality: str | None = None, batch_size: int = 16, shard_size: int = 1000,
                      max_batch_seconds: float | None = 120.0, max_error_rate: float = 0.1,
                      device: str | None = None, rank: int | None = None, world_size: int | None = None,
                      max_shards: int | None = None, progress: bool = True,
                      tokenizer: ModalityTokenizer | None = None, window_seconds: float | None | str = "auto",
                      hop_seconds: float | None = None) -> JobResult:
    """Tokenize this rank's shards of a manifest into ``out_dir`` (see the module docstring).

    ``max_shards`` stops after that many new shards (a partial run; rerun to continue).
    ``max_batch_seconds`` bounds a batch's padded audio length (items × longest item).
    ``window_seconds``: audio longer than this is cut into windows every ``hop_seconds``
    (``"auto"``: the tokenizer's default window; None: never cut, long files are refused)."""
    from tqdm import tqdm

    card_obj = card if isinstance(card, TokenizerCard) else load_card(card)
    tok = tokenizer or load_tokenizer(card_obj, device)
    modality = modality or tok.modality
    if modality != tok.modality:
        raise ValueError(f"--modality {modality} but tokenizer {card_obj.backend} is for {tok.modality}")
    if shard_size < 1 or batch_size < 1:
        raise ValueError("--shard-size and --batch-size must be at least 1")
    if rank is None or world_size is None:
        r, w = dist_info()
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    windowing = job_windowing(tok, window_seconds, hop_seconds)
    items, manifest_hash = read_manifest(manifest, hf_dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp = tok.fingerprint
    _check_job_file(out, {"manifest_hash": manifest_hash, "shard_size": shard_size, "fingerprint": fp,
                          "modality": modality, "items": len(items),
                          **({"windows": windowing.to_dict()} if windowing else {})})
    meta = {"fingerprint": fp, "backend": card_obj.backend, "modality": modality, "codebook_size": tok.codebook_size}
    n_shards = (len(items) + shard_size - 1) // shard_size
    mine = [k for k in range(n_shards) if k % world_size == rank]
    todo = [k for k in mine if not (out / shard_name(k)).exists()]
    for k in mine:
        if k not in todo:
            got = read_meta(out / shard_name(k)).get("fingerprint")
            if got != fp:
                raise ValueError(f"{out / shard_name(k)}: made by tokenizer {got}, this job uses {fp}; use a new --out")
    if max_shards is not None:
        todo = todo[:max_shards]
    for k in todo:  # temp files of a killed earlier run (shard k is only ever written by this rank)
        remove_stale_temps(out, k)
    max_elems = None
    if tok.modality != "image" and max_batch_seconds and tok.sample_rate:
        max_elems = int(max_batch_seconds * tok.sample_rate)
    result = JobResult(len(todo), len(mine) - len(todo), n_shards)
    n_todo = sum(len(items[k * shard_size:(k + 1) * shard_size]) for k in todo)
    bar = tqdm(total=n_todo, unit="item", desc=f"tokenize {modality} rank {rank}/{world_size}",
               disable=not progress, file=sys.stderr, mininterval=0.5)
    for k in todo:
        chunk = items[k * shard_size:(k + 1) * shard_size]
        rows, errors = tokenize_shard(tok, chunk, modality, batch_size, max_elems, windowing=windowing)
        atomic_write_text(out / errors_name(k), "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors))
        write_shard(out / shard_name(k), rows, meta)  # last: its existence marks the shard finished
        bar.update(len(chunk))
    bar.close()
    if all((out / shard_name(k)).exists() for k in range(n_shards)):
        verify_shard_ids(out, items, shard_size, n_shards)
        merge_job(out, n_shards, card_obj, meta, manifest_hash, max_error_rate, result)
    return result


def job_windowing(tok: ModalityTokenizer, window_seconds: float | None | str = "auto",
                  hop_seconds: float | None = None) -> Windowing | None:
    """The job's :class:`Windowing` (None for images); a window longer than the card's
    ``max_seconds`` is refused here, before any file is read."""
    if tok.modality == "image":
        return None
    w = tok.default_window_seconds if window_seconds == "auto" else window_seconds
    if w is not None and tok.max_seconds is not None and float(w) > tok.max_seconds:
        raise ValueError(f"--window-seconds {w} is longer than the tokenizer's max_seconds {tok.max_seconds}")
    return Windowing(None if w is None else float(w), hop_seconds)


def merge_job(out: Path, n_shards: int, card: TokenizerCard, meta: dict, manifest_hash: str,
              max_error_rate: float, result: JobResult) -> None:
    """Merge per-shard errors into ``errors.jsonl`` and write ``manifest.json`` (idempotent)."""
    import pyarrow.parquet as pq

    errors: list[str] = []
    ok = 0
    shards = []
    for k in range(n_shards):
        ok += pq.read_metadata(out / shard_name(k)).num_rows
        shards.append(shard_name(k))
        ep = out / errors_name(k)
        if ep.exists():
            errors.extend(line for line in ep.read_text(encoding="utf-8").splitlines() if line.strip())
    total = ok + len(errors)
    rate = len(errors) / total if total else 0.0
    atomic_write_text(out / ERRORS_FILE, "".join(line + "\n" for line in errors))
    summary = {
        **meta, "items": total, "tokenized": ok, "errors": len(errors), "error_rate": round(rate, 6),
        "max_error_rate": max_error_rate, "shards": shards, "manifest_hash": manifest_hash,
        "card": {k: str(v) for k, v in card.to_dict().items()}, "card_root": str(card.root),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=1, ensure_ascii=False))
    result.merged, result.items, result.errors, result.error_rate, result.summary = True, total, len(errors), rate, summary
    if rate > max_error_rate:
        result.failed = (f"{len(errors)} of {total} items failed ({rate:.1%}), more than --max-error-rate "
                         f"{max_error_rate:.1%}; reasons in {out / ERRORS_FILE}")
