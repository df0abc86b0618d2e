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
from typing import Callable, Iterable

from anygpt.data.alignment import BuiltSample
from anygpt.data.datainfo import write_data_info
from anygpt.data.error_log import ErrorLog
from anygpt.utils import atomic_write_text

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


def write_dataset(samples: Iterable[BuiltSample | None] | Callable[[int], Iterable[BuiltSample | None]], out_dir: str | os.PathLike,
                  info: dict, errors: ErrorLog | None = None, overwrite: bool = False, chunk_rows: int = 4096,
                  shard_rows: int = 65536, job_key: str | None = None) -> Path:
    """Save samples as a Hugging Face dataset (``load_from_disk`` reads it) + ``anygpt_data.json``.

    Rows go to Arrow shards as they come (``chunk_rows`` at a time, a new file every
    ``shard_rows``), so memory does not grow with the output. The folder is built beside it
    (``.NAME.partial``) and renamed when complete, so it appears complete or not at all.

    Resumable: with a ``job_key`` (what identifies the build: inputs and settings) and ``samples``
    a callable ``start -> stream from position start`` (``None`` items are positions whose
    sample was dropped), every closed shard is recorded in
    ``.NAME.partial/progress.json``; rerunning the same build continues after the last closed
    shard, a different build starts over."""
    import pyarrow as pa

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
    features = _features()
    names = list(features)
    tmp = out.with_name(f".{out.name}.partial")
    state = {"job": job_key, "shards": [], "consumed": 0, "counts": {}, "tokens": 0, "errors": []}
    prev = _read_progress(tmp) if job_key is not None and callable(samples) else None
    if prev is not None and prev.get("job") == job_key:
        state = prev
        for name in os.listdir(tmp):  # a shard left open by the interrupted run
            if name.endswith(".arrow") and name not in state["shards"]:
                os.remove(tmp / name)
        if errors is not None:
            errors.rows[:0] = state["errors"]
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    start = state["consumed"]
    counted = _Counted(samples(start) if callable(samples) else samples)
    counts: dict[str, dict[str, int]] = state["counts"]
    cols: dict[str, list] = {k: [] for k in names}
    writer: pa.ipc.RecordBatchStreamWriter | None = None
    in_shard = 0
    from tqdm import tqdm

    def flush_chunk() -> None:
        nonlocal writer, in_shard
        import datasets

        table = datasets.Dataset.from_dict(cols, features=features).data.table  # arrow schema + HF metadata
        if writer is None:
            name = f"data-{len(state['shards']):05d}.arrow"
            writer = pa.ipc.new_stream(str(tmp / name), table.schema)
            state["open"] = name
        writer.write_table(table)
        in_shard += table.num_rows
        for k in names:
            cols[k] = []

    def close_shard() -> None:
        nonlocal writer, in_shard
        if writer is None:
            return
        writer.close()
        writer, in_shard = None, 0
        state["shards"].append(state.pop("open"))
        state["consumed"] = start + counted.n
        state["errors"] = list(errors.rows) if errors else []
        atomic_write_text(tmp / PROGRESS_FILE, json.dumps(state))

    for s in tqdm(counted, desc="building samples", unit="sample", disable=None, initial=start):
        if s is None:  # dropped by the stream (recorded in errors), still a position to resume after
            continue
        n, labels = len(s), s.labels
        for k, v in zip(names, (s.input_ids, labels, s.modality, s.direction, s.source, s.id, n)):
            cols[k].append(v)
        c = counts.setdefault(s.source, {"samples": 0, "tokens": 0, "loss_tokens": 0})
        c["samples"] += 1
        c["tokens"] += n
        c["loss_tokens"] += n - labels.count(-100) if isinstance(labels, list) else sum(1 for x in labels if x != -100)
        state["tokens"] += n
        if len(cols["length"]) >= chunk_rows:
            flush_chunk()
            if in_shard >= shard_rows:
                close_shard()
    if cols["length"]:
        flush_chunk()
    close_shard()
    if not state["shards"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError("no samples to write (every input was empty or bad)")
    _finish_hf_dataset(tmp, state["shards"], features)
    n_samples = sum(c["samples"] for c in counts.values())
    info = {**info, "num_samples": n_samples, "num_tokens": state["tokens"], "sources": counts,
            "errors": len(errors.rows) if errors else 0}
    write_data_info(tmp, info)
    if errors:
        errors.write(tmp)
    (tmp / PROGRESS_FILE).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


class _Counted:
    """An iterator that counts what it handed out (the stream position a resumed build starts at)."""

    def __init__(self, it: Iterable):
        self.it, self.n = iter(it), 0

    def __iter__(self):
        return self

    def __next__(self):
        x = next(self.it)
        self.n += 1
        return x


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
