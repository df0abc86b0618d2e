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

from anygpt.data.alignment import BuiltSample


@dataclass
class MixSource:
    """A dataset in a mixture of ``size`` items.

    Either ``make(index, rng) -> BuiltSample`` renders one item, or ``plan(index, rng)`` draws one
    item's randomness (cheap; the same draws ``make`` would take) and ``render(plans)`` renders
    many at once, which lets :func:`mix` batch rendering and spread it over processes."""

    name: str
    weight: float
    size: int
    make: Callable[[int, random.Random], BuiltSample] | None = None
    plan: Callable[[int, random.Random], Any] | None = None
    render: Callable[[Sequence[Any]], list[BuiltSample]] | None = None

    def __post_init__(self) -> None:
        if self.make is None:
            if self.plan is None or self.render is None:
                raise ValueError(f"dataset {self.name!r}: a mix source needs make, or plan and render")
            plan, render = self.plan, self.render
            self.make = lambda i, rng: render([plan(i, rng)])[0]


def mix(sources: Sequence[MixSource], by: str = "samples", num_samples: int | None = None,
        num_tokens: int | None = None, seed: int = 0, skip: int = 0, batch_size: int = 512,
        num_proc: int = 1) -> Iterator[BuiltSample]:
    """Interleave ``sources`` so each one's share of samples or tokens follows its weight.

    Stops after ``num_samples`` samples or once ``num_tokens`` tokens were produced (default: as
    many samples as all sources hold together). Greedy deficit scheduling keeps every prefix of
    the stream within one sample of the target shares, so the stream is already interleaved and is
    yielded as it is made (memory stays flat); each source is walked in a reshuffled order per epoch
    and directions are drawn per sample.

    ``skip`` leaves out the first samples of the stream (a resumed build). Mixing by samples with
    sources that ``plan``/``render`` renders ``batch_size`` samples at a time, in ``num_proc``
    processes when more than one (the stream is the same either way); skipped samples are then
    planned but never rendered."""
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

    def next_source() -> tuple[int, int]:
        total = sum(produced)
        i = max(range(len(sources)), key=lambda k: (shares[k] * total - produced[k], shares[k]))
        if not orders[i]:
            orders[i] = list(range(sources[i].size))
            rng.shuffle(orders[i])
        return i, orders[i].pop()

    if num_tokens is None and by == "samples" and all(s.plan and s.render for s in sources):
        def plans() -> Iterator[tuple[int, Any]]:
            for _ in range(num_samples):
                i, item = next_source()
                produced[i] += 1
                yield i, sources[i].plan(item, rng)

        stream = plans()
        for _ in itertools.islice(stream, skip):
            pass
        yield from _render_batches(sources, stream, batch_size, num_proc)
        return
    n_out, tokens_out = 0, 0
    while (num_samples is None or n_out < num_samples) and (num_tokens is None or tokens_out < num_tokens):
        i, item = next_source()
        sample = sources[i].make(item, rng)
        produced[i] += len(sample) if by == "tokens" else 1
        n_out += 1
        tokens_out += len(sample)
        if n_out > skip:
            yield sample


_FORKED_SOURCES: Sequence[MixSource] = ()  # what forked rendering workers render from (set before the fork)


def _render_batch(batch: Sequence[tuple[int, Any]]) -> list[BuiltSample]:
    """Render one batch of ``(source, plan)`` in stream order, grouping plans by source."""
    by_source: dict[int, list[int]] = {}
    for pos, (k, _) in enumerate(batch):
        by_source.setdefault(k, []).append(pos)
    out: list[BuiltSample | None] = [None] * len(batch)
    for k, positions in by_source.items():
        for pos, sample in zip(positions, _FORKED_SOURCES[k].render([batch[p][1] for p in positions])):
            out[pos] = sample
    return out  # type: ignore[return-value]


def _render_batches(sources: Sequence[MixSource], stream: Iterator[tuple[int, Any]], batch_size: int,
                    num_proc: int) -> Iterator[BuiltSample]:
    global _FORKED_SOURCES
    _FORKED_SOURCES = sources
    batches = iter(lambda: list(itertools.islice(stream, batch_size)), [])
    if num_proc <= 1:
        for b in batches:
            yield from _render_batch(b)
        return
    import multiprocessing as mp

    # fork: workers inherit the sources (closures over tokenizer and memory-mapped shards) without
    # pickling them; each worker's tokenizer runs single-threaded so processes do not oversubscribe
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with mp.get_context("fork").Pool(num_proc) as pool:
        for rendered in pool.imap(_render_batch, batches, chunksize=1):
            yield from rendered
