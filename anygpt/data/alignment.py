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
from typing import Sequence

from anygpt.data.instructions import Pools, draw_instruction
from anygpt.data.templates import BatchRenderer, MediaCodes, Message, Template
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


def render_alignments(pairs: Sequence[Pair], directions: Sequence[str], instructions: Sequence[str],
                      renderer: BatchRenderer, source: str = "", loss_on: str = "assistant") -> list[BuiltSample]:
    """Many alignment samples at once, each with its drawn direction and instruction: the same ids
    as :func:`render_alignment` with those draws, one tokenizer call for the batch."""
    convs = [_alignment_messages(p, d, ins) for p, d, ins in zip(pairs, directions, instructions)]
    return [BuiltSample(r.input_ids, r.labels, p.modality, d, source, p.id)
            for p, d, r in zip(pairs, directions, renderer.render(convs, loss_on))]


def draw_direction(rng: random.Random, t2x_prob: float) -> str:
    """``t2x`` with probability ``t2x_prob``, else ``x2t`` (one draw from ``rng``)."""
    return "t2x" if rng.random() < t2x_prob else "x2t"
