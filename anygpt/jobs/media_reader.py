"""Reading the tokenize job's media ahead of the codec: decoding, downmixing and resampling run in
``torch.utils.data.DataLoader`` worker processes while the main process encodes.

The unit of work is a *chunk* of consecutive manifest items (a few per batch; the job gathers
chunks into the window of items it sorts by length, see :mod:`anygpt.jobs.tokenize_media`).
Chunks come back in order,
whatever the number of workers, and each item comes back either as its loaded windows or as its
error record, so a bad file costs one error naming it, read in a worker or not. Workers are
forked (the codec's weights are never copied or pickled) and only read files; the main process
writes every output file.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

from anygpt.jobs.manifest import ManifestItem
from anygpt.jobs.windowing import Windowing, load_windows
from anygpt.modality.base import MediaError, ModalityTokenizer

# one item read: its windows ``[(row fields, media)]``, or its error record ``{"id","path","reason"}``
Loaded = list[tuple[dict, Any]] | dict


def default_workers() -> int:
    """Reader processes per job when ``--workers`` is not given: the CPUs this process may use,
    shared among the ranks on this machine (``LOCAL_WORLD_SIZE``), less one for the codec; at
    most 8 (decoding is rarely the bottleneck past that); 0 (read in-process) on one CPU."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(0, min(8, cpus // local - 1))


def error_reason(e: BaseException, path: os.PathLike | str) -> str:
    """An exception as an error record's reason: a :class:`MediaError` without its repeated
    ``<path>: `` prefix, anything else with its type name."""
    msg = str(e)
    prefix = f"{path}: "
    if msg.startswith(prefix):
        return msg[len(prefix):]
    return msg if isinstance(e, MediaError) else f"{type(e).__name__}: {msg}"


def load_item(tok: ModalityTokenizer, it: ManifestItem, windowing: Windowing | None) -> Loaded:
    """One manifest item's media, or its error record (never raises for a bad file)."""
    try:
        return load_windows(tok, it, windowing)
    except Exception as e:  # noqa: BLE001 - an unexpected reader failure is still one bad item
        return {"id": it.id, "path": it.path, "reason": error_reason(e, it.resolved)}


class _Chunks:
    """A map-style dataset: index ``j`` → chunk ``j``'s items, read."""

    def __init__(self, tok: ModalityTokenizer, chunks: Sequence[Sequence[ManifestItem]],
                 windowing: Windowing | None) -> None:
        self.tok, self.chunks, self.windowing = tok, chunks, windowing

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, j: int) -> list[Loaded]:
        return [load_item(self.tok, it, self.windowing) for it in self.chunks[j]]


def _as_is(chunk: list[Loaded]) -> list[Loaded]:
    return chunk  # DataLoader's default would turn numpy waveforms into tensors


def read_chunks(tok: ModalityTokenizer, chunks: Sequence[Sequence[ManifestItem]], windowing: Windowing | None,
                workers: int = 0, prefetch: int = 2) -> Iterator[list[Loaded]]:
    """Each chunk's items read (in chunk order, items in manifest order). ``workers`` 0 reads in
    this process; otherwise that many forked readers keep up to ``prefetch`` chunks each ready,
    so the next chunks are decoded while this one is encoded."""
    data = _Chunks(tok, chunks, windowing)
    if workers <= 0 or len(chunks) <= 1:
        yield from (data[j] for j in range(len(data)))
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(data, batch_size=None, shuffle=False, num_workers=min(workers, len(chunks)),
                        collate_fn=_as_is, prefetch_factor=max(1, prefetch), multiprocessing_context="fork")
    yield from loader
