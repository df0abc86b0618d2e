"""The training loader: a weighted mixture of datasets, sharded by data-parallel rank, packed or
padded, resumable mid-epoch, prefetched on a background thread.

Every epoch has a deterministic *plan* computed from the ``length`` column only: draw
``samples_per_epoch`` samples (dataset chosen by weight, each dataset walked through its own
permutation seeded by ``seed`` + epoch), group them into rows (``plan_rows``), deal the rows to
ranks round-robin (every rank gets the same count, so no rank waits in a collective), cut into
batches. The resume position is therefore just ``(epoch, batch)``: ``state_dict()`` records the
next batch the *consumer* will receive, so prefetched-but-unused batches are not lost.

Datasets are Hugging Face datasets (``save_to_disk``) with columns ``input_ids``, ``labels`` and
optionally ``modality``, ``direction``, ``source``, ``length``.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from anygpt.data.packing import Sample, collate_rows, plan_rows

_DONE = object()


def load_dataset_dir(path: str | os.PathLike):
    """Open a dataset written by ``Dataset.save_to_disk``; a clear error when it is not one."""
    from datasets import load_from_disk

    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: dataset directory not found")
    if _has_no_data_files(Path(path)):  # datasets fails on these with "list index out of range"
        raise ValueError(f"{path}: the dataset has no samples (no data files); rebuild it (anygpt build-data)")
    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # datasets raises several types for a non-dataset folder
        raise ValueError(f"{path}: not a dataset written by save_to_disk ({e})") from None
    missing = {"input_ids", "labels"} - set(ds.column_names)
    if missing:
        raise ValueError(f"{path}: dataset lacks columns {sorted(missing)}")
    return ds


def _has_no_data_files(path: Path) -> bool:
    """A ``save_to_disk`` folder of zero rows lists no data files in its ``state.json``."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # not a single dataset folder: load_from_disk gives its own reason
    return isinstance(state, dict) and state.get("_data_files") == []


def sample_lengths(ds) -> np.ndarray:
    """Every sample's token count: the ``length`` column the build wrote, else the lengths of
    ``input_ids``. Read as one Arrow column (a dataset's row selection is honoured), never row by
    row through Python objects, which made opening the loader slow in proportion to the data. The
    one source of lengths for :func:`check_sample_lengths` and :class:`MixtureLoader`'s plan."""
    import pyarrow.compute as pc

    table = ds.with_format("arrow")
    col = table["length"] if "length" in ds.column_names else pc.list_value_length(table["input_ids"])
    return col.to_numpy().astype(np.int64)


def check_sample_lengths(path: str | os.PathLike, ds, seq_len: int, show: int = 3) -> None:
    """Refuse a set holding a sample longer than the training rows (``seq_len``): the packer would
    cut it silently. The error names the set and the samples (id, source); the fix is a build-time
    policy (recipe ``max_length`` with ``overlong: drop | error | truncate``, or ``--max-length``)."""
    lengths = sample_lengths(ds)
    over = np.flatnonzero(lengths > seq_len)
    if not len(over):
        return
    names = []
    for i in over[:show].tolist():
        row = ds[int(i)]
        names.append(f"{row.get('id') or f'row {i}'} from {row.get('source') or '?'} ({int(lengths[i])} tokens)")
    more = f" and {len(over) - show} more" if len(over) > show else ""
    raise ValueError(f"{path}: {len(over)} sample(s) longer than data.seq_len {seq_len}: {'; '.join(names)}{more}; "
                     "rebuild with a max_length (recipe max_length + overlong: drop | error | truncate, "
                     "or build-data --max-length) or raise data.seq_len")


def _joined_views(datasets: Sequence) -> tuple[list, list[tuple[int, int]]]:
    """The sets' training columns joined, once, into as few Arrow-formatted datasets as their
    schemas allow (memory-mapped sets concatenate without copying), and where each set lives:
    ``(view, row offset)``. A batch then costs one gather per view, however many sets it draws
    from; selecting columns per set and batch deep-copied each set's metadata, a cost that grew
    with the number of sets (bench/README.md, loader scaling)."""
    from datasets import concatenate_datasets

    groups: dict[str, list[int]] = {}
    picked = []
    for k, d in enumerate(datasets):
        cols = [c for c in ("input_ids", "labels", "modality", "direction") if c in d.column_names]
        picked.append(d.select_columns(cols))
        groups.setdefault(repr(picked[-1].features), []).append(k)
    views, where = [], [(0, 0)] * len(datasets)
    for members in groups.values():
        offset = 0
        for k in members:
            where[k] = (len(views), offset)
            offset += len(picked[k])
        parts = [picked[k] for k in members]
        views.append((concatenate_datasets(parts) if len(parts) > 1 else parts[0]).with_format("arrow"))
    return views, where


class MixtureLoader:
    """Batches from a weighted mixture of datasets for one data-parallel rank.

    ``pack=True`` gives rows of exactly ``row_len`` tokens holding several whole samples;
    ``pack=False`` gives one sample per row, padded to the longest in the batch (at most
    ``row_len``). ``samples_per_epoch`` defaults to the total size of all datasets."""

    def __init__(
        self,
        datasets: Sequence,
        weights: Sequence[float] | None = None,
        batch_size: int = 1,
        row_len: int = 512,
        pack: bool = True,
        pad_id: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        samples_per_epoch: int | None = None,
        prefetch: int = 4,
    ) -> None:
        if not datasets:
            raise ValueError("no datasets given")
        weights = list(weights) if weights is not None else [1.0] * len(datasets)
        if len(weights) != len(datasets) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"need one non-negative weight per dataset, got {weights} for {len(datasets)} datasets")
        self.datasets = list(datasets)
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.batch_size, self.row_len, self.pack, self.pad_id = batch_size, row_len, pack, pad_id
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.samples_per_epoch = samples_per_epoch or sum(len(d) for d in self.datasets)
        self.prefetch = prefetch
        self.lengths = [sample_lengths(d) for d in self.datasets]
        self._views, self._where = _joined_views(self.datasets)
        self.modality_names = self._names("modality")
        self.direction_names = self._names("direction")
        self.epoch, self.batch = 0, 0
        self._plan_cache: tuple[int, list[list[list[tuple[int, int]]]]] | None = None
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ plan
    def _names(self, column: str) -> list[str]:
        names: set[str] = set()
        for d in self.datasets:
            names.update(d.unique(column) if column in d.column_names else [""])
        return sorted(names)

    def _draws(self, epoch: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, epoch])
        n = self.samples_per_epoch
        # the dataset of each draw is random even without shuffle (then each dataset is walked in order)
        which = rng.choice(len(self.datasets), size=n, p=self.weights) if len(self.datasets) > 1 else np.zeros(n, int)
        order: list[tuple[int, int]] = []
        pos = [0] * len(self.datasets)
        perms: list[np.ndarray] = [np.empty(0, np.int64) for _ in self.datasets]
        for k in which:
            if pos[k] >= len(perms[k]):  # (re)shuffle when a dataset runs out within the epoch
                size = len(self.datasets[k])
                perms[k] = np.concatenate([perms[k][pos[k]:], rng.permutation(size) if self.shuffle else np.arange(size)])
                pos[k] = 0
            order.append((int(k), int(perms[k][pos[k]])))
            pos[k] += 1
        return order

    def epoch_plan(self, epoch: int) -> list[list[list[tuple[int, int]]]]:
        """This rank's batches for ``epoch``: batch -> row -> [(dataset index, sample index)]."""
        if self._plan_cache and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        order = self._draws(epoch)
        rows = plan_rows([self.lengths[k][i] for k, i in order], self.row_len, self.pack)
        per_rank = len(rows) // self.world_size
        mine = rows[self.rank : per_rank * self.world_size : self.world_size]
        n_batches = len(mine) // self.batch_size
        if n_batches == 0:
            raise ValueError(f"an epoch has {len(rows)} rows: too few for {self.world_size} ranks x batch {self.batch_size}")
        plan = [[[order[j] for j in mine[b * self.batch_size + r]] for r in range(self.batch_size)] for b in range(n_batches)]
        self._plan_cache = (epoch, plan)
        return plan

    def __len__(self) -> int:
        """Batches per epoch for this rank (epoch 0's plan)."""
        return len(self.epoch_plan(0))

    # ------------------------------------------------------------------ materialise
    def _fetch(self, batch_plan: list[list[tuple[int, int]]]) -> dict[str, torch.Tensor]:
        wanted: dict[int, list[int]] = {}
        for row in batch_plan:
            for k, i in row:
                wanted.setdefault(k, []).append(i)
        by_view: dict[int, list[tuple[int, int]]] = {}
        for k, idx in wanted.items():
            v, offset = self._where[k]
            by_view.setdefault(v, []).extend((k, i) for i in sorted(set(idx)))
        got: dict[tuple[int, int], dict] = {}
        for v, keys in by_view.items():  # one Arrow gather per group of like sets (usually one per batch)
            table = self._views[v][[self._where[k][1] + i for k, i in keys]]
            cols = {c: table.column(c).to_pylist() for c in table.column_names}
            for j, key in enumerate(keys):
                got[key] = {c: col[j] for c, col in cols.items()}
        mod_ix = {n: i for i, n in enumerate(self.modality_names)}
        dir_ix = {n: i for i, n in enumerate(self.direction_names)}
        samples = [[Sample(got[(k, i)]["input_ids"], got[(k, i)]["labels"], k,
                           mod_ix[got[(k, i)].get("modality", "")], dir_ix[got[(k, i)].get("direction", "")])
                    for k, i in row] for row in batch_plan]
        if self.pack:
            return collate_rows(samples, self.row_len, self.pad_id)
        longest = max(len(r[0].input_ids) for r in samples)
        return collate_rows(samples, min(longest, self.row_len), self.pad_id)

    def batches_from(self, epoch: int, batch: int) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """``(epoch, batch index, batch)`` forever, starting at the given position."""
        while True:
            plan = self.epoch_plan(epoch)
            for b in range(batch, len(plan)):
                yield epoch, b, self._fetch(plan[b])
            epoch, batch = epoch + 1, 0

    # ------------------------------------------------------------------ iteration with prefetch
    def _producer(self, epoch: int, batch: int, q: queue.Queue, stop: threading.Event) -> None:
        try:
            for item in self.batches_from(epoch, batch):
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # surface loader errors in the consumer
            q.put(e)

    def _start(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=max(1, self.prefetch))
        self._thread = threading.Thread(target=self._producer, args=(self.epoch, self.batch, self._queue, self._stop), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the prefetch thread (it restarts on the next ``next()``)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = self._queue = None

    def __iter__(self) -> "MixtureLoader":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.prefetch <= 0:
            epoch, b, batch = next(self.batches_from(self.epoch, self.batch))
        else:
            if self._thread is None:
                self._start()
            item = self._queue.get()
            if isinstance(item, BaseException):
                self.close()
                raise item
            epoch, b, batch = item
        self.epoch, self.batch = epoch, b + 1
        if self.batch >= len(self.epoch_plan(epoch)):
            self.epoch, self.batch = epoch + 1, 0
        return batch

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Position of the next batch this consumer will get, plus what must match on resume."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed, "world_size": self.world_size,
                "weights": self.weights.tolist(), "sizes": [len(d) for d in self.datasets]}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a saved position; refuses a state from a different mixture or world size."""
        for key, mine in (("seed", self.seed), ("world_size", self.world_size), ("sizes", [len(d) for d in self.datasets])):
            if key in state and state[key] != mine:
                raise ValueError(f"loader state has {key}={state[key]}, this loader has {mine}: data or launch changed")
        self.close()
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
