"""Alignment samples: a (media codes, text) pair rendered to ids in one direction.

``x2t`` is instruction + media → text, ``t2x`` is instruction + "This is input: text" → media;
the direction is drawn per sample with the dataset's ``t2x_prob`` and the instruction from
:mod:`anygpt.data.instructions`. Codes become ids through :class:`VocabLayout` and messages
through the template's renderer, so no prompt string of media token strings is ever built
(``bench/sequence_build_vs_strings.py`` measures the difference).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from anygpt.data.instructions import Pools, draw_instruction
from anygpt.data.templates import BatchRenderer, CodesBatch, MediaCodes, Message, RenderedBatch, Template, slot
from anygpt.vocab import VocabLayout

DIRECTIONS = ("x2t", "t2x")


@dataclass
class Pair:
    """One alignment pair: modality-local codes and their text."""

    id: str
    modality: str
    codes: Sequence[int]
    text: str
    source: str = ""


@dataclass
class BuiltSample:
    """One training sequence and where it came from."""

    input_ids: list[int]
    labels: list[int]
    modality: str
    direction: str
    source: str
    id: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)


def alignment_messages(pair: Pair, direction: str, rng: random.Random, pools: Pools | None = None) -> list[Message]:
    """The user/assistant pair for one direction, with an instruction drawn from ``pools``
    (default: ours; :func:`~anygpt.data.instructions.load_instruction_pools` reads the reference's)."""
    return _alignment_messages(pair, direction, draw_instruction(pair.modality, direction, rng, pools))


def _alignment_messages(pair: Pair, direction: str, instruction: str) -> list[Message]:
    media = MediaCodes(pair.modality, pair.codes)
    if direction == "x2t":
        return [Message("user", [instruction + " ", media]), Message("assistant", pair.text)]
    if direction == "t2x":
        return [Message("user", f"{instruction} This is input: {pair.text}"), Message("assistant", [media])]
    raise ValueError(f"direction must be x2t or t2x, not {direction!r}")


def render_alignment(pair: Pair, direction: str, template: Template, tokenizer, layout: VocabLayout,
                     rng: random.Random, source: str = "", loss_on: str = "assistant",
                     pools: Pools | None = None) -> BuiltSample:
    """One alignment sample rendered to ids (labels: the response span and its end marker)."""
    r = template.render(alignment_messages(pair, direction, rng, pools), tokenizer, layout, loss_on=loss_on)
    return BuiltSample(r.input_ids, r.labels, pair.modality, direction, source, pair.id)


@dataclass
class PairBatch:
    """Many pairs of one modality, their codes flat as the shard's Arrow column holds them."""

    ids: Any  # pyarrow string array
    codes: CodesBatch
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    @staticmethod
    def from_arrow(table, modality: str, where: str = "") -> "PairBatch":
        """The rows of a code-shard table (columns ``id``, ``modality``, ``codes``, ``text``), all of
        ``modality`` (else ValueError naming ``where`` and the first other row)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        mods = table.column("modality")
        if len(mods) and not pc.all(pc.equal(mods, modality)).as_py():
            bad = pc.index(pc.equal(mods, modality), False).as_py()
            raise ValueError(f"{where}: row {table.column('id')[bad].as_py()} is {mods[bad].as_py()}, "
                             f"the recipe says {modality}")
        codes = table.column("codes").combine_chunks()
        if isinstance(codes, pa.ChunkedArray):  # an empty table
            codes = pa.array([], codes.type)
        offsets = np.asarray(codes.offsets, np.int64)
        values = np.asarray(codes.flatten().to_numpy(zero_copy_only=False))
        return PairBatch(table.column("id").combine_chunks(), CodesBatch(modality, values, offsets - offsets[0]),
                         table.column("text").to_pylist())

    @staticmethod
    def from_pairs(pairs: Sequence[Pair]) -> "PairBatch":
        """Pairs of one modality (for callers that hold :class:`Pair` objects)."""
        import pyarrow as pa

        mods = {p.modality for p in pairs}
        if len(mods) != 1:
            raise ValueError(f"a pair batch holds one modality, got {sorted(mods)}")
        return PairBatch(pa.array([p.id for p in pairs], pa.string()),
                         CodesBatch.from_lists(mods.pop(), [p.codes for p in pairs]), [p.text for p in pairs])


@dataclass
class SampleBatch:
    """Many built samples as flat arrays plus their per-sample columns (pyarrow string arrays);
    what a build writes. ``positions``: each sample's place in the build's stream and ``end`` the
    position after the batch (set by the mixture; dropped samples leave gaps; a resumed build
    continues after the last sample written)."""

    rendered: RenderedBatch
    modality: Any
    direction: Any
    source: Any
    id: Any
    positions: np.ndarray | None = None
    end: int | None = None

    def __len__(self) -> int:
        return len(self.rendered)

    def take(self, rows: np.ndarray, max_length: int | None = None) -> "SampleBatch":
        """Samples ``rows`` in that order (cut to ``max_length`` tokens if given)."""
        import pyarrow as pa

        rows = np.asarray(rows, np.int64)
        sel = pa.array(rows)
        return SampleBatch(self.rendered.take(rows, max_length), self.modality.take(sel), self.direction.take(sel),
                           self.source.take(sel), self.id.take(sel),
                           None if self.positions is None else self.positions[rows])

    @staticmethod
    def concat(batches: Sequence["SampleBatch"]) -> "SampleBatch":
        import pyarrow as pa

        pos = [b.positions for b in batches]
        return SampleBatch(RenderedBatch.concat([b.rendered for b in batches]),
                           *(pa.concat_arrays([getattr(b, k) for b in batches])
                             for k in ("modality", "direction", "source", "id")),
                           None if any(p is None for p in pos) else np.concatenate(pos))

    @staticmethod
    def from_samples(samples: Sequence[BuiltSample], positions: np.ndarray | None = None,
                     end: int | None = None) -> "SampleBatch":
        """Single samples as one batch."""
        import pyarrow as pa

        col = lambda k: pa.array([getattr(s, k) for s in samples], pa.string())  # noqa: E731
        return SampleBatch(RenderedBatch.from_rows(samples), col("modality"), col("direction"), col("source"),
                           col("id"), positions, end)

    def samples(self) -> list[BuiltSample]:
        """Each sample as a :class:`BuiltSample` of Python lists."""
        cols = [getattr(self, k).to_pylist() for k in ("modality", "direction", "source", "id")]
        return [BuiltSample(r.input_ids, r.labels, m, d, s, i) for r, m, d, s, i in zip(self.rendered.rows(), *cols)]


def render_alignments(pairs: PairBatch, directions: Sequence[str], instructions: Sequence[str],
                      renderer: BatchRenderer, source: str = "", loss_on: str = "assistant") -> SampleBatch:
    """Many alignment samples at once, each with its drawn direction and instruction: the same ids
    as :func:`render_alignment` with those draws. The samples of a direction share one shape
    (:meth:`BatchRenderer.render_shape`): one tokenizer call for their texts, codes to ids and
    the whole batch assembled by array arithmetic."""
    import pyarrow as pa

    if len(pairs) != len(directions) or len(pairs) != len(instructions):
        raise ValueError("render_alignments: pairs, directions and instructions differ in length")
    modality = pairs.codes.modality
    dirs = np.asarray(directions, dtype=object)
    parts, order = [], []
    for d in DIRECTIONS:
        rows = np.flatnonzero(dirs == d)
        if not len(rows):
            continue
        shape = _alignment_messages(Pair("", modality, (), slot("text")), d, slot("instruction"))
        texts = {"text": [pairs.texts[i] for i in rows], "instruction": [instructions[i] for i in rows]}
        parts.append(renderer.render_shape(shape, texts, pairs.codes.take(rows), loss_on))
        order.append(rows)
    unknown = set(directions) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"direction must be x2t or t2x, not {sorted(unknown)[0]!r}")
    n = len(pairs)
    rendered = RenderedBatch.concat(parts)
    if len(parts) > 1:
        rendered = rendered.take(np.argsort(np.concatenate(order), kind="stable"))
    return SampleBatch(rendered, pa.repeat(modality, n), pa.array(list(directions), pa.string()),
                       pa.repeat(source, n), pairs.ids)


def draw_direction(rng: random.Random, t2x_prob: float) -> str:
    """``t2x`` with probability ``t2x_prob``, else ``x2t`` (one draw from ``rng``)."""
    return "t2x" if rng.random() < t2x_prob else "x2t"
