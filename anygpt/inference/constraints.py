"""Modality-aware constraints on generated ids: which token may come next, per row.

Outside a span the model may emit text, a start marker ``<soX>`` or the template's end of turn;
never a bare code, an end marker, another role marker, or a padded id (``>= len(tokenizer)``).
Inside ``<soX>…`` only modality X's codes and ``<eoX>`` may follow, and:

- the span's shape is what the modality tokenizer declares (:class:`~anygpt.modality.base.CodeLayout`):
- a fixed-length modality (``fixed_length``, e.g. 32 image codes) gets exactly that many codes,
  then ``<eoX>`` is forced;
- a multi-codebook modality flattened frame-major (``L = layers_in_sequence`` layers of
  ``K = layer_size`` codes, see :mod:`anygpt.modality.flatten`; EnCodec music) gets, at position
  ``p`` of the span, a code of layer ``p % L`` (ids ``[q*K, (q+1)*K)``), and may close only after a
  whole frame; a one-stream modality (SpeechTokenizer's layer 0) takes any of its codes anywhere;
- with a length budget (``max_length``), a span opens only if it can close in time and a
  free-length span closes at the last whole frame that fits: a reply cut short by
  ``max_new_tokens`` never ends inside a span.

The state of a row is read from its ids (the last start/end marker and the codes since), so the
processor needs no bookkeeping: it works with batches, left padding and beam search (whose beams
are reordered between steps) alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor

from anygpt.modality.base import CodeLayout, ModalityTokenizer
from anygpt.vocab import VocabLayout


@dataclass(frozen=True)
class SpanRule:
    """How one modality's spans are shaped: the tokenizer's declared :class:`CodeLayout`.

    ``code_layout.n_codes`` codes the tokenizer can decode (may be fewer than the vocabulary layout
    reserves); ``layers_in_sequence`` layers of ``layer_size`` codes interleaved frame-major (1: one
    stream); ``fixed_length``: exact span length, or None for free length (audio)."""

    modality: str
    code_layout: CodeLayout

    @property
    def n_codes(self) -> int:
        return self.code_layout.n_codes

    @property
    def layers(self) -> int:
        return self.code_layout.layers_in_sequence

    @property
    def layer_width(self) -> int:
        return self.code_layout.layer_size

    @property
    def tokens_per_item(self) -> int | None:
        return self.code_layout.fixed_length

    @classmethod
    def from_tokenizer(cls, modality: str, layout_size: int, tokenizer: ModalityTokenizer | None) -> "SpanRule":
        """The rule a modality tokenizer declares (``tokenizer.code_layout``); without a tokenizer,
        one free-length stream of the vocabulary layout's ``layout_size`` codes."""
        if tokenizer is None:
            return cls(modality, CodeLayout(1, layout_size))
        code_layout = tokenizer.code_layout
        if code_layout.n_codes > layout_size:
            raise ValueError(
                f"{modality} tokenizer ({tokenizer.name}) lays out {code_layout.layers_in_sequence} × "
                f"{code_layout.layer_size} = {code_layout.n_codes} codes but the model's layout reserves only {layout_size}")
        return cls(modality, code_layout)


def rules_from_bundle(bundle: Any) -> dict[str, SpanRule]:
    """One :class:`SpanRule` per modality of the bundle's layout."""
    return {
        m.name: SpanRule.from_tokenizer(m.name, m.size, bundle.tokenizers.get(m.name))
        for m in bundle.layout.modalities
    }


class ModalityLogitsProcessor(LogitsProcessor):
    """Masks disallowed ids to ``-inf`` (see the module docstring for the rules).

    ``allow_media=False`` bans start markers (a text-only reply); ``text_ids`` is the tokenizer's
    length (ids at or above it are embedding padding); ``stop_ids`` are allowed outside spans.
    Other layout markers (role markers, ``[Human]``…) are banned outside spans."""

    def __init__(
        self,
        layout: VocabLayout,
        rules: dict[str, SpanRule],
        vocab_width: int,
        text_ids: int,
        stop_ids: list[int],
        allow_media: bool = True,
    ):
        self.layout = layout
        self.rules = rules
        self.modalities = list(layout.modality_names)
        self.vocab_width = vocab_width
        # kind_of_id: 0 = not a span marker, m+1 = start of modality m, -(m+1) = end of modality m
        kind = torch.zeros(max(vocab_width, layout.vocab_size), dtype=torch.long)
        for i, m in enumerate(self.modalities):
            kind[layout.start_id(m)] = i + 1
            kind[layout.end_id(m)] = -(i + 1)
        self.kind_of_id = kind
        masks, self.mask_base = self._build_masks(text_ids, stop_ids, allow_media)
        self.masks = torch.stack(masks)  # (n_masks, vocab_width) bool: True = allowed
        self._device_cache: dict[Any, torch.Tensor] = {}
        self._kind_cache: dict[Any, torch.Tensor] = {}
        # total length (prompt + new tokens) generation stops at; None = no budget rules. With it,
        # a span opens only if it can close in time, and a free-length span closes at the last frame
        # that fits, so a reply cut by max_new_tokens never ends inside a span.
        self.max_length: int | None = None

    def _build_masks(self, text_ids: int, stop_ids: list[int], allow_media: bool):
        V, L = self.vocab_width, self.layout
        outside = torch.zeros(V, dtype=torch.bool)
        outside[: min(text_ids, V)] = True
        for m in self.modalities:
            r = L.code_range(m)
            outside[r.start : r.stop + 2] = False  # codes and both markers
        for t in L.marker_ids():
            if t < V:
                outside[t] = False
        for t in L.extra:  # <-Res->, <-Ins->: text-level markers of the voice-chat format
            outside[L.token_id(t)] = True
        for t in stop_ids:
            if 0 <= t < V:
                outside[t] = True
        # outside spans: one mask per subset of modalities that may open now (bit i = modality i);
        # a span may open only when the length budget leaves room to close it
        masks = []
        for subset in range(2 ** len(self.modalities)):
            mk = outside.clone()
            for i, m in enumerate(self.modalities):
                if allow_media and subset >> i & 1 and self.rules[m].n_codes > 0:
                    mk[L.start_id(m)] = True
            masks.append(mk)
        # per modality: [layer 0 codes + end, layer 1 codes, …, layer L-1 codes, codes-only, end only]
        base: dict[str, int] = {}
        for m in self.modalities:
            rule, first = self.rules[m], L.code_range(m).start
            base[m] = len(masks)
            for q in range(rule.layers):
                mk = torch.zeros(V, dtype=torch.bool)
                lo = first + q * rule.layer_width if rule.layers > 1 else first
                hi = lo + rule.layer_width if rule.layers > 1 else first + rule.n_codes
                mk[lo:hi] = True
                if q == 0:
                    mk[L.end_id(m)] = True  # removed again below when the span is empty/too short
                masks.append(mk)
            codes_only = masks[base[m]].clone()
            codes_only[L.end_id(m)] = False
            masks.append(codes_only)  # layer-0 codes without the end (empty span / fixed length)
            end_only = torch.zeros(V, dtype=torch.bool)
            end_only[L.end_id(m)] = True
            masks.append(end_only)
        return masks, base

    def row_mask_index(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Per row, the index into ``self.masks`` that applies to the next token."""
        kind_of_id = self._kind_cache.get(input_ids.device)
        if kind_of_id is None:
            kind_of_id = self._kind_cache[input_ids.device] = self.kind_of_id.to(input_ids.device)
        kinds = kind_of_id[input_ids.clamp(0, kind_of_id.numel() - 1)]  # (B, T)
        is_marker = kinds != 0
        T = input_ids.shape[1]
        last = T - 1 - torch.flip(is_marker, dims=[1]).int().argmax(dim=1)  # (B,)
        last_kind = kinds.gather(1, last[:, None]).squeeze(1)
        last_kind = torch.where(is_marker.any(dim=1), last_kind, torch.zeros_like(last_kind))
        count = (T - 1 - last).tolist()
        left = None if self.max_length is None else self.max_length - T  # tokens still to come, this one included
        all_open = 2 ** len(self.modalities) - 1
        out = []
        for k, n in zip(last_kind.tolist(), count):
            if k <= 0:
                out.append(all_open if left is None else self._openable(left))
                continue
            m = self.modalities[k - 1]
            rule, b = self.rules[m], self.mask_base[m]
            codes_only0, end_only = b + rule.layers, b + rule.layers + 1
            if rule.tokens_per_item:
                out.append(end_only if n >= rule.tokens_per_item else (codes_only0 if n % rule.layers == 0 else b + n % rule.layers))
            elif n == 0:
                out.append(codes_only0)
            elif n % rule.layers == 0 and left is not None and left < rule.layers + 1:
                out.append(end_only)  # no room for another whole frame and the end marker
            else:
                out.append(b + n % rule.layers)
        return torch.tensor(out, dtype=torch.long, device=input_ids.device)

    def min_span_tokens(self, modality: str) -> int:
        """Fewest tokens a span of ``modality`` takes: start, one item or frame, end."""
        r = self.rules[modality]
        return 2 + (r.tokens_per_item or r.layers)

    def _openable(self, left: int) -> int:
        return sum(1 << i for i, m in enumerate(self.modalities) if left >= self.min_span_tokens(m))

    def allowed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, vocab_width) bool: which ids may come next in each row."""
        return self.masks.to(input_ids.device)[self.row_mask_index(input_ids)]

    def _bias(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The masks as additive 0 / -inf rows, cached per device and dtype."""
        key = (device, dtype)
        if key not in self._device_cache:
            bias = torch.zeros(self.masks.shape, dtype=dtype)
            bias.masked_fill_(~self.masks, float("-inf"))
            self._device_cache[key] = bias.to(device)
        return self._device_cache[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bias = self._bias(scores.device, scores.dtype)[self.row_mask_index(input_ids)]
        w = scores.shape[-1]
        if w != self.vocab_width:  # a model whose head is wider/narrower than the layout's padding
            bias = bias[:, :w] if w < self.vocab_width else torch.nn.functional.pad(bias, (0, w - self.vocab_width), value=float("-inf"))
        return scores + bias
