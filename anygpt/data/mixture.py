"""Mixing datasets by weight: the order in which a build draws samples from its sources.

Each dataset's share of samples (``mix_by: samples``) or of tokens (``mix_by: tokens``) follows
its weight: at every step the dataset furthest below its share is drawn next (exact up to one
sample); each dataset is walked in a reshuffled order per epoch. Everything streams: samples are
rendered in batches (optionally in forked processes) and yielded as they are made.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from anygpt.data.alignment import BuiltSample, SampleBatch


@dataclass
class MixSource:
    """A dataset in a mixture of ``size`` items.

    Either ``make(index, rng) -> BuiltSample`` renders one item, or ``plan(index, rng)`` draws one
    item's randomness (cheap; the same draws ``make`` would take) and ``render(plans)`` renders
    many at once into a :class:`SampleBatch`, which lets :func:`mix_batches` batch rendering and
    spread it over processes."""

    name: str
    weight: float
    size: int
    make: Callable[[int, random.Random], BuiltSample] | None = None
    plan: Callable[[int, random.Random], Any] | None = None
    render: Callable[[Sequence[Any]], SampleBatch] | None = None

    def __post_init__(self) -> None:
        if self.make is None:
            if self.plan is None or self.render is None:
                raise ValueError(f"dataset {self.name!r}: a mix source needs make, or plan and render")
            plan, render = self.plan, self.render
            self.make = lambda i, rng: render([plan(i, rng)]).samples()[0]


def mix(sources: Sequence[MixSource], by: str = "samples", num_samples: int | None = None,
        num_tokens: int | None = None, seed: int = 0, skip: int = 0, batch_size: int = 512,
        num_proc: int = 1) -> Iterator[BuiltSample]:
    """Interleave ``sources`` so each one's share of samples or tokens follows its weight, one
    sample at a time (:func:`mix_batches` is the same stream in batches).

    Stops after ``num_samples`` samples or once ``num_tokens`` tokens were produced (default: as
    many samples as all sources hold together). Greedy deficit scheduling keeps every prefix of
    the stream within one sample of the target shares, so the stream is already interleaved and is
    yielded as it is made (memory stays flat); each source is walked in a reshuffled order per epoch
    and directions are drawn per sample. ``skip`` leaves out the first samples of the stream."""
    for item in mix_batches(sources, by, num_samples, num_tokens, seed, skip, batch_size, num_proc):
        yield from item.samples() if isinstance(item, SampleBatch) else (item,)


def mix_batches(sources: Sequence[MixSource], by: str = "samples", num_samples: int | None = None,
                num_tokens: int | None = None, seed: int = 0, skip: int = 0, batch_size: int = 512,
                num_proc: int = 1) -> Iterator[SampleBatch | BuiltSample]:
    """The stream of :func:`mix`. Mixing by samples with sources that ``plan``/``render``, it
    comes as :class:`SampleBatch` es of ``batch_size`` with their stream ``positions``, rendered
    in ``num_proc`` processes when more than one (the stream is the same either way; skipped
    samples are planned but never rendered); otherwise (by tokens: a sample's length decides the
    next draw) as single :class:`BuiltSample` s."""
    if by not in ("samples", "tokens"):
        raise ValueError(f"mix_by must be samples or tokens, not {by!r}")
    sources = [s for s in sources if s.weight > 0]
    for s in sources:
        if s.size <= 0:
            raise ValueError(f"dataset {s.name!r} has no items")
    if not sources:
        raise ValueError("no dataset with a positive weight")
    total_w = sum(s.weight for s in sources)
    shares = [s.weight / total_w for s in sources]
    if num_samples is None and num_tokens is None:
        num_samples = sum(s.size for s in sources)
    rng = random.Random(seed)
    orders: list[list[int]] = [[] for _ in sources]
    produced = [0.0] * len(sources)
    total = [0.0]  # sum(produced), kept as it grows (the same integers, summed once)
    ks = range(len(sources))

    def next_source() -> tuple[int, int]:
        t = total[0]
        i = max(ks, key=lambda k: (shares[k] * t - produced[k], shares[k]))
        if not orders[i]:
            orders[i] = list(range(sources[i].size))
            rng.shuffle(orders[i])
        return i, orders[i].pop()

    if num_tokens is None and by == "samples" and all(s.plan and s.render for s in sources):
        def plans() -> Iterator[tuple[int, Any]]:
            for _ in range(num_samples):
                i, item = next_source()
                produced[i] += 1
                total[0] += 1
                yield i, sources[i].plan(item, rng)

        stream = plans()
        for _ in itertools.islice(stream, skip):
            pass
        yield from _render_batches(sources, stream, skip, batch_size, num_proc)
        return
    n_out, tokens_out = 0, 0
    while (num_samples is None or n_out < num_samples) and (num_tokens is None or tokens_out < num_tokens):
        i, item = next_source()
        sample = sources[i].make(item, rng)
        step = len(sample) if by == "tokens" else 1
        produced[i] += step
        total[0] += step
        n_out += 1
        tokens_out += len(sample)
        if n_out > skip:
            yield sample


_FORKED_SOURCES: Sequence[MixSource] = ()  # what forked rendering workers render from (set before the fork)


def _render_batch(job: tuple[int, Sequence[tuple[int, Any]]]) -> SampleBatch:
    """Render one batch of ``(source, plan)`` starting at stream position ``start``, in stream
    order (each source's plans rendered together)."""
    start, batch = job
    by_source: dict[int, list[int]] = {}
    for pos, (k, _) in enumerate(batch):
        by_source.setdefault(k, []).append(pos)
    parts, rows = [], []
    for k, positions in by_source.items():
        parts.append(_FORKED_SOURCES[k].render([batch[p][1] for p in positions]))
        rows += positions
    out = SampleBatch.concat(parts) if len(parts) > 1 else parts[0]
    if len(parts) > 1:
        out = out.take(np.argsort(np.asarray(rows), kind="stable"))
    out.positions = np.arange(start, start + len(batch), dtype=np.int64)
    out.end = start + len(batch)
    return out


def _render_batches(sources: Sequence[MixSource], stream: Iterator[tuple[int, Any]], start: int, batch_size: int,
                    num_proc: int) -> Iterator[SampleBatch]:
    global _FORKED_SOURCES
    _FORKED_SOURCES = sources

    def jobs() -> Iterator[tuple[int, list]]:
        pos = start
        for b in iter(lambda: list(itertools.islice(stream, batch_size)), []):
            yield pos, b
            pos += len(b)

    # one way to use more cores: processes (--num-proc); a tokenizer's own threads on top of them,
    # or beside a busy machine's other work, cost more in contention than they gain
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if num_proc <= 1:
        yield from map(_render_batch, jobs())
        return
    import multiprocessing as mp

    # fork: workers inherit the sources (closures over tokenizer and memory-mapped shards) without pickling them
    with mp.get_context("fork").Pool(num_proc) as pool:
        yield from pool.imap(_render_batch, jobs(), chunksize=1)
