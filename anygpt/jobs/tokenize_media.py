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
- Media are decoded and resampled by ``workers`` forked reader processes
  (:mod:`anygpt.jobs.media_reader`) while the main process encodes; a bad file read in a worker
  is still one error record naming it. Items are encoded a window at a time, sorted by length
  within the window (less padding, which also changes the last codes less); batches depend only
  on the items and the batch settings, so the rows are the same with any number of workers.
- When every shard exists, the rank that notices (the last to finish) merges the per-shard errors
  into ``errors.jsonl`` (``{"id","path","reason"}``) and writes ``manifest.json`` (counts,
  fingerprint, card); past ``max_error_rate`` the job fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from anygpt.data.shards import read_meta, write_shard
from anygpt.jobs.job_files import (ERRORS_FILE, SUMMARY_FILE, _check_job_file, _exclusive_per_rank, errors_name,
                                   remove_stale_temps, shard_name, verify_shard_ids)
from anygpt.jobs.manifest import ManifestItem, read_manifest
from anygpt.jobs.media_reader import Loaded, default_workers, error_reason, read_chunks
from anygpt.jobs.windowing import Windowing, job_windowing
from anygpt.modality.base import ModalityTokenizer, TokenizerCard, load_card, load_tokenizer
from anygpt.utils import atomic_write_text, dist_info, write_jsonl


@dataclass
class JobResult:
    """What one process's run of :func:`tokenize_manifest` did (and, if it merged, the job's totals)."""

    shards_done: int  # shards this process tokenized now
    shards_skipped: int  # shards that were already finished
    shards_total: int
    items: int = 0
    errors: int = 0
    merged: bool = False  # this process wrote errors.jsonl + manifest.json
    error_rate: float | None = None
    failed: str | None = None  # set when the error rate is past the limit
    summary: dict = field(default_factory=dict)
    read_now: int = 0  # manifest items this process read and encoded now (rows or errors)
    audio_seconds: float = 0.0  # seconds of audio this process encoded now
    seconds: float = 0.0  # wall time of this process's shards (reading + encoding + writing)
    workers: int = 0  # media-reading processes used

    def throughput(self) -> str:
        """``N items in T s: X items/s[, Y audio-s/s]`` for this process's work, or '' if none."""
        if not self.read_now or self.seconds <= 0:
            return ""
        audio = f", {self.audio_seconds / self.seconds:.1f} audio-s/s" if self.audio_seconds else ""
        return (f"{self.read_now} items in {self.seconds:.1f} s: {self.read_now / self.seconds:.2f} items/s{audio} "
                f"({self.workers} reader process{'es' if self.workers != 1 else ''})")


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


@dataclass
class ShardOutput:
    """What one shard gave: rows (manifest order), error records, seconds of audio encoded."""

    rows: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    audio_seconds: float = 0.0


def default_window(batch_size: int) -> int:
    """Items sorted by length together (8 batches, at least 64): wider means less padding, but
    all of a window's media are held in memory at once."""
    return max(8 * batch_size, 64)


def encode_window(tok: ModalityTokenizer, items: Sequence[ManifestItem], loaded: Sequence[Loaded], modality: str,
                  batch_size: int, max_batch_elements: int | None, out: ShardOutput) -> None:
    """Encode one window of read items (``loaded[i]`` is ``items[i]`` read) into ``out``: its load
    errors (manifest order), then its rows (manifest order; a long recording's windows in time
    order) and encode errors. The window's media are sorted by size into batches, so a batch
    holds similar lengths and little padding."""
    pending: list[tuple[ManifestItem, dict, Any]] = []
    for it, got in zip(items, loaded):
        if isinstance(got, dict):
            out.errors.append(got)
        else:
            pending.extend((it, fields, m) for fields, m in got)
    results = encode_items(tok, [m for _, _, m in pending], batch_size, max_batch_elements)
    for (it, fields, media), res in zip(pending, results):
        if isinstance(res, BaseException):
            out.errors.append({"id": fields["id"], "path": it.path,
                               "reason": f"encode failed: {error_reason(res, it.resolved)}"})
        elif len(res) == 0:
            out.errors.append({"id": fields["id"], "path": it.path, "reason": "encode produced no codes"})
        else:
            out.rows.append({**fields, "modality": modality, "codes": np.asarray(res, dtype=np.int64).tolist(),
                             "text": it.text, "source": it.path})
            if tok.modality != "image" and tok.sample_rate:
                out.audio_seconds += int(np.asarray(media).size) / tok.sample_rate


def _plan(shards: Sequence[tuple[int, Sequence[ManifestItem]]], window: int, chunk: int
          ) -> list[tuple[int, int, Sequence[ManifestItem]]]:
    """``(shard, window index, chunk of items)`` in order: each shard cut into windows of
    ``window`` items, each window into read chunks of ``chunk`` items."""
    plan = []
    for k, items in shards:
        for w, start in enumerate(range(0, len(items), window)):
            win = items[start:start + window]
            plan.extend((k, w, win[c:c + chunk]) for c in range(0, len(win), chunk))
    return plan


def tokenize_shards(tok: ModalityTokenizer, shards: Sequence[tuple[int, Sequence[ManifestItem]]], modality: str,
                    batch_size: int, max_batch_elements: int | None, window: int | None = None,
                    windowing: Windowing | None = None, workers: int = 0) -> Iterator[tuple[int, ShardOutput]]:
    """``(shard, output)`` for each ``(shard, items)`` in turn, as soon as that shard is done.

    Media are read by ``workers`` processes (0: in this process) a few items at a time, ahead of
    the codec and across shard boundaries, and encoded a ``window`` of items at a time (default
    :func:`default_window`), size-sorted within the window, so memory stays bounded however
    large the shard is. Batches depend only on the items and these settings, never on the
    number of workers: the rows are the same either way."""
    window = window or default_window(batch_size)
    chunk = max(1, min(batch_size, window))
    plan = _plan(shards, window, chunk)
    per_window = -(-window // chunk)
    prefetch = -(-per_window // max(1, workers)) + 1  # keep a whole window read ahead of the codec
    out, items, loaded = ShardOutput(), [], []
    for j, got in enumerate(read_chunks(tok, [c for _, _, c in plan], windowing, workers, prefetch)):
        k, w, its = plan[j]
        items.extend(its)
        loaded.extend(got)
        nxt = plan[j + 1][:2] if j + 1 < len(plan) else None
        if nxt != (k, w):  # this window is complete
            encode_window(tok, items, loaded, modality, batch_size, max_batch_elements, out)
            items, loaded = [], []
        if nxt is None or nxt[0] != k:  # this shard is complete
            yield k, out
            out = ShardOutput()


def tokenize_shard(tok: ModalityTokenizer, items: list[ManifestItem], modality: str, batch_size: int,
                   max_batch_elements: int | None, window: int | None = None,
                   windowing: Windowing | None = None, workers: int = 0) -> ShardOutput:
    """One shard's rows (in manifest order; a long recording's windows in time order), errors
    (``{"id","path","reason"}``) and audio seconds; see :func:`tokenize_shards`."""
    done = list(tokenize_shards(tok, [(0, items)], modality, batch_size, max_batch_elements, window, windowing, workers))
    return done[0][1] if done else ShardOutput()


@_exclusive_per_rank
def tokenize_manifest(card: str | os.PathLike | TokenizerCard, out_dir: str | os.PathLike, *,
                      manifest: str | os.PathLike | None = None, hf_dataset: str | os.PathLike | None = None,
                      modality: str | None = None, batch_size: int = 16, shard_size: int = 1000,
                      max_batch_seconds: float | None = 120.0, max_error_rate: float = 0.1,
                      device: str | None = None, rank: int | None = None, world_size: int | None = None,
                      max_shards: int | None = None, progress: bool = True,
                      tokenizer: ModalityTokenizer | None = None, window_seconds: float | None | str = "auto",
                      hop_seconds: float | None = None, workers: int | None = None) -> JobResult:
    """Tokenize this rank's shards of a manifest into ``out_dir`` (see the module docstring).

    ``max_shards`` stops after that many new shards (a partial run; rerun to continue).
    ``max_batch_seconds`` bounds a batch's padded audio length (items × longest item).
    ``window_seconds``: audio longer than this is cut into windows every ``hop_seconds``
    (``"auto"``: the tokenizer's default window; None: never cut, long files are refused).
    ``workers``: processes reading media ahead of the codec (None: :func:`default_workers`;
    0: read in this process); the rows do not depend on it."""
    from tqdm import tqdm

    card_obj = card if isinstance(card, TokenizerCard) else load_card(card)
    tok = tokenizer or load_tokenizer(card_obj, device)
    modality = modality or tok.modality
    if modality != tok.modality:
        raise ValueError(f"--modality {modality} but tokenizer {card_obj.backend} is for {tok.modality}")
    if shard_size < 1 or batch_size < 1:
        raise ValueError("--shard-size and --batch-size must be at least 1")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {workers}")
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
    result = JobResult(len(todo), len(mine) - len(todo), n_shards, workers=workers)
    shards = [(k, items[k * shard_size:(k + 1) * shard_size]) for k in todo]
    bar = tqdm(total=sum(len(c) for _, c in shards), unit="item", desc=f"tokenize {modality} rank {rank}/{world_size}",
               disable=not progress, file=sys.stderr, mininterval=0.5)
    t0 = time.perf_counter()
    for k, done in tokenize_shards(tok, shards, modality, batch_size, max_elems, windowing=windowing, workers=workers):
        write_jsonl(out / errors_name(k), done.errors)
        write_shard(out / shard_name(k), done.rows, meta)  # last: its existence marks the shard finished
        n = len(items[k * shard_size:(k + 1) * shard_size])
        result.read_now += n
        result.audio_seconds += done.audio_seconds
        bar.update(n)
    result.seconds = time.perf_counter() - t0
    bar.close()
    if all((out / shard_name(k)).exists() for k in range(n_shards)):
        verify_shard_ids(out, items, shard_size, n_shards)
        merge_job(out, n_shards, card_obj, meta, manifest_hash, max_error_rate, result)
    return result


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
