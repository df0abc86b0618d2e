"""Writing a training set: samples streamed into Arrow shards that ``datasets.load_from_disk``
opens, built in ``.NAME.partial`` and renamed when complete, resumable after an interruption.

Output: a Hugging Face dataset with columns ``input_ids`` and ``labels`` (list<int32>, -100 = no
loss), ``modality``, ``direction`` (``x2t`` / ``t2x`` / ``chat``), ``source``, ``id``, ``length``,
plus ``anygpt_data.json`` (:mod:`anygpt.data.datainfo`) and, with bad lines skipped,
``errors.jsonl`` (:mod:`anygpt.data.error_log`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

import numpy as np

from anygpt.data.alignment import BuiltSample, SampleBatch
from anygpt.data.datainfo import write_data_info
from anygpt.data.error_log import ERRORS_FILE, ErrorLog
from anygpt.utils import atomic_write_text, jsonl_line
from anygpt.vocab import IGNORE_INDEX

PROGRESS_FILE = "progress.json"


def _features():
    import datasets

    return datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "labels": datasets.Sequence(datasets.Value("int32")),
        "modality": datasets.Value("string"),
        "direction": datasets.Value("string"),
        "source": datasets.Value("string"),
        "id": datasets.Value("string"),  # the sample's id in its source: training errors name it
        "length": datasets.Value("int32"),
    })


Item = Union[SampleBatch, BuiltSample, None]


def write_dataset(samples: Iterable[Item] | Callable[[int], Iterable[Item]], out_dir: str | os.PathLike,
                  info: dict, errors: ErrorLog | None = None, overwrite: bool = False, chunk_rows: int = 4096,
                  shard_rows: int = 65536, job_key: str | None = None) -> Path:
    """Save samples as a Hugging Face dataset (``load_from_disk`` reads it) + ``anygpt_data.json``.

    ``samples`` yields :class:`SampleBatch` es (flat arrays, written as they are) or single
    :class:`BuiltSample` s (``None``: a position whose sample was dropped). Rows go to Arrow
    shards as they come (``chunk_rows`` at a time, a new file every ``shard_rows``) and the error
    log's rows to ``errors.jsonl`` as the writer passes them, so memory does not grow with the
    output. The folder is built beside it (``.NAME.partial``) and renamed when complete, so it
    appears complete or not at all.

    Resumable: with a ``job_key`` (what identifies the build: inputs and settings) and ``samples``
    a callable ``start -> stream from position start`` (batches carry their stream
    ``positions``), every closed shard is recorded in ``.NAME.partial/progress.json``; rerunning
    the same build continues after the last closed shard, a different build starts over."""
    import pyarrow as pa

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
    features = _features()
    tmp = out.with_name(f".{out.name}.partial")
    state = {"job": job_key, "shards": [], "consumed": 0, "counts": {}, "tokens": 0, "errors": 0, "errors_bytes": 0}
    prev = _read_progress(tmp) if job_key is not None and callable(samples) else None
    if prev is not None and prev.get("job") == job_key and isinstance(prev.get("errors"), int):
        state = prev
        for name in os.listdir(tmp):  # a shard left open by the interrupted run
            if name.endswith(".arrow") and name not in state["shards"]:
                os.remove(tmp / name)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    errors_path = tmp / ERRORS_FILE
    with open(errors_path, "ab") as f:  # rows the interrupted run wrote after its last closed shard go
        f.truncate(state["errors_bytes"])
    if errors is not None:
        errors.count += state["errors"]
    start = state["consumed"]
    counts: dict[str, dict[str, int]] = state["counts"]
    schema = _arrow_schema(features)
    writer: pa.ipc.RecordBatchStreamWriter | None = None
    in_shard = 0
    errors_file = open(errors_path, "a", encoding="utf-8")
    from tqdm import tqdm

    bar = tqdm(desc="building samples", unit="sample", disable=None, initial=start)

    def write_errors(before: int | None) -> None:
        if errors is not None:
            errors_file.write("".join(jsonl_line(r) for r in errors.drain(before)))

    def write_rows(b: SampleBatch) -> None:
        nonlocal writer, in_shard
        if writer is None:
            name = f"data-{len(state['shards']):05d}.arrow"
            writer = pa.ipc.new_stream(str(tmp / name), schema)
            state["open"] = name
        writer.write_table(_table(b, schema))
        in_shard += len(b)
        r = b.rendered
        lengths = r.lengths
        loss = np.diff(np.concatenate([[0], np.cumsum(r.labels != IGNORE_INDEX)])[r.offsets])
        src = np.asarray(b.source.to_numpy(zero_copy_only=False), dtype=object)
        for name in dict.fromkeys(src.tolist()):
            sel = src == name
            c = counts.setdefault(name, {"samples": 0, "tokens": 0, "loss_tokens": 0})
            c["samples"] += int(sel.sum())
            c["tokens"] += int(lengths[sel].sum())
            c["loss_tokens"] += int(loss[sel].sum())
        state["tokens"] += int(lengths.sum())

    def close_shard(consumed: int) -> None:
        nonlocal writer, in_shard
        if writer is None:
            return
        writer.close()
        writer, in_shard = None, 0
        state["shards"].append(state.pop("open"))
        state["consumed"] = consumed
        write_errors(consumed)
        errors_file.flush()
        state["errors"] = errors.count - len(errors.pending) if errors is not None else 0
        state["errors_bytes"] = errors_file.tell()
        atomic_write_text(tmp / PROGRESS_FILE, json.dumps(state))

    try:
        pos = start  # the stream position after everything received so far
        for b in as_batches(samples(start) if callable(samples) else samples, start, chunk_rows):
            done = 0
            while done < len(b):  # slices that end at chunk and shard boundaries
                k = min(len(b) - done, chunk_rows, shard_rows - in_shard)
                write_rows(b if k == len(b) else b.take(np.arange(done, done + k)))
                done += k
                bar.update(k)
                if in_shard >= shard_rows:
                    # consumed: up to the last written row (dropped positions after it are rendered again)
                    close_shard(int(b.positions[done - 1]) + 1 if done < len(b) else b.end)
            pos = b.end
            write_errors(pos)
        close_shard(pos)
        write_errors(None)
    finally:
        bar.close()
        errors_file.close()
    if not state["shards"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError("no samples to write (every input was empty or bad)")
    _finish_hf_dataset(tmp, state["shards"], features)
    n_samples = sum(c["samples"] for c in counts.values())
    info = {**info, "num_samples": n_samples, "num_tokens": state["tokens"], "sources": counts,
            "errors": errors.count if errors is not None else 0}
    write_data_info(tmp, info)
    if not errors_path.stat().st_size:
        errors_path.unlink()
    (tmp / PROGRESS_FILE).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def as_batches(stream: Iterable[Item], start: int, chunk_rows: int) -> Iterator[SampleBatch]:
    """The stream as :class:`SampleBatch` es with ``positions`` and ``end`` set (single samples
    are gathered ``chunk_rows`` at a time; a ``None`` is a position without a sample)."""
    pos = start
    singles: list[BuiltSample] = []
    single_pos: list[int] = []

    def gathered() -> SampleBatch:
        b = SampleBatch.from_samples(singles, np.asarray(single_pos, np.int64), end=pos)
        singles.clear()
        single_pos.clear()
        return b

    for item in stream:
        if isinstance(item, SampleBatch):
            if singles:
                yield gathered()
            if item.positions is None:
                item.positions = np.arange(pos, pos + len(item), dtype=np.int64)
            if item.end is None:
                item.end = int(item.positions[-1]) + 1 if len(item) else pos
            pos = item.end
            yield item
            continue
        if item is not None:
            singles.append(item)
            single_pos.append(pos)
        pos += 1
        if len(singles) >= chunk_rows:
            yield gathered()
    if singles or pos > start:
        yield gathered()


def _arrow_schema(features):
    """The Arrow schema (with the Hugging Face features metadata) that ``load_from_disk`` reads."""
    import datasets

    return datasets.Dataset.from_dict({k: [] for k in features}, features=features).data.table.schema


def _table(b: SampleBatch, schema):
    """One Arrow table of the batch's rows: the list columns straight from the flat arrays."""
    import pyarrow as pa

    r = b.rendered
    offsets = pa.array(r.offsets.astype(np.int32))
    cols = [pa.ListArray.from_arrays(offsets, pa.array(r.input_ids, pa.int32())),
            pa.ListArray.from_arrays(offsets, pa.array(r.labels, pa.int32())),
            b.modality, b.direction, b.source, b.id, pa.array(r.lengths.astype(np.int32))]
    return pa.Table.from_arrays([c if c.type == f.type else c.cast(f.type) for c, f in zip(cols, schema)],
                                schema=schema)


def _read_progress(tmp: Path) -> dict | None:
    try:
        return json.loads((tmp / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _finish_hf_dataset(tmp: Path, shards: list[str], features) -> None:
    """Name the shards and write the two files with which ``datasets.load_from_disk`` opens them
    (the layout ``Dataset.save_to_disk`` writes)."""
    import datasets

    files = []
    for i, name in enumerate(shards):
        final = f"data-{i:05d}-of-{len(shards):05d}.arrow"
        os.replace(tmp / name, tmp / final)
        files.append({"filename": final})
    datasets.DatasetInfo(features=features).write_to_directory(str(tmp))
    fingerprint = hashlib.sha256(json.dumps(files).encode() + os.urandom(8)).hexdigest()[:16]
    atomic_write_text(tmp / "state.json", json.dumps({
        "_data_files": files, "_fingerprint": fingerprint, "_format_columns": None, "_format_kwargs": {},
        "_format_type": None, "_output_all_columns": False, "_split": None}, indent=2))
