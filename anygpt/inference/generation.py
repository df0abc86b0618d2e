"""Constrained multimodal generation on top of transformers ``generate`` (KV cache, beams, streaming).

Two entry points:

- :func:`build_prompt_ids`: ids of a prompt for one user turn (text plus attachments as codes),
  rendered with the bundle's own template, optionally forcing the reply's modality.
- :func:`generate_batch`: left-pads a batch of prompts and generates under the
  :class:`~anygpt.inference.constraints.ModalityLogitsProcessor`; each row keeps its own span
  state. Returns each row's reply ids, ready for ``layout.split_ids``. With ``best_of`` > 1 a
  media reply is the best of that many samples by :func:`read_back_scores`.

Example::

    bundle = load_bundle("out/model")
    ids = build_prompt_ids(bundle, "Draw a red circle.", output_modality="image")
    [reply] = generate_batch(bundle, [ids], "image", resolve_settings("demo", "image"))
    pieces = bundle.layout.split_ids(reply)      # [("image", [codes…])]
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.generation.logits_process import UnbatchedClassifierFreeGuidanceLogitsProcessor
from transformers.generation.streamers import BaseStreamer

from anygpt.data.instructions import POOLS
from anygpt.data.packing import Sample, pad_batch
from anygpt.data.templates import MediaCodes, Message
from anygpt.inference.constraints import ModalityLogitsProcessor, rules_from_bundle
from anygpt.inference.settings import GenerationSettings
from anygpt.model.loss import token_losses
from anygpt.vocab import MODALITIES as MEDIA


def build_prompt_ids(
    bundle: Any,
    text: str = "",
    attachments: Sequence[tuple[str, Sequence[int]] | MediaCodes] = (),
    history: Sequence[Message] = (),
    output_modality: str | None = None,
    system: str | None = None,
    force_start: bool | None = None,
) -> list[int]:
    """Prompt ids for one user turn after ``history``: attachments (modality, codes) first, then
    ``text``; ends with the assistant header and, for a media ``output_modality`` when
    ``force_start`` (default: the template's), its start marker."""
    content: list[str | MediaCodes] = []
    for a in attachments:
        content.append(a if isinstance(a, MediaCodes) else MediaCodes(a[0], a[1]))
    if text:
        content.append(text)
    msgs = ([Message("system", system)] if system else []) + list(history) + [Message("user", content or "")]
    return render_prompt(bundle, msgs, output_modality, force_start)


def render_prompt(bundle: Any, messages: Sequence[Message], output_modality: str | None,
                  force_start: bool | None = None) -> list[int]:
    """The bundle's template rendered for inference (no labels), with the generation prompt.

    ``force_start``: end the prompt with a media output's start marker (``<soim>``…); None uses
    the template's default (ours forces it; the reference templates do not, as the reference
    never did, and leave the modality to the model)."""
    check_output_modality(bundle, output_modality)
    if force_start is None:
        force_start = bundle.template.force_start
    force = output_modality if output_modality in MEDIA and force_start else None
    r = bundle.template.render(messages, bundle.tokenizer, bundle.layout, loss_on="none",
                               add_generation_prompt=True, force_modality=force)
    return r.input_ids


def check_output_modality(bundle: Any, output_modality: str | None) -> None:
    if output_modality in (None, "text"):
        return
    if output_modality not in bundle.layout.modality_names:
        raise ValueError(f"this model cannot output {output_modality!r}; it has: text, {', '.join(bundle.layout.modality_names)}")


def make_processor(bundle: Any, output_modality: str | None) -> ModalityLogitsProcessor:
    """The constraint processor for one call (``output_modality="text"`` bans start markers)."""
    width = bundle.model.get_output_embeddings().weight.shape[0]
    stop = bundle.template.stop_token_ids(bundle.layout, bundle.tokenizer)
    return ModalityLogitsProcessor(bundle.layout, rules_from_bundle(bundle), width, len(bundle.tokenizer), stop,
                                   allow_media=output_modality != "text")


def _generation_config(bundle: Any, settings: GenerationSettings, output_modality: str | None, pad_id: int) -> GenerationConfig:
    stop = list(bundle.template.stop_token_ids(bundle.layout, bundle.tokenizer))
    max_new = settings.max_new_tokens
    if output_modality in MEDIA:
        stop.append(bundle.layout.end_id(output_modality))  # a forced span ends the reply
        rule = rules_from_bundle(bundle)[output_modality]
        max_new = max(max_new, (rule.tokens_per_item or rule.layers) + 1)  # room for a whole item or frame
    kw: dict[str, Any] = dict(max_new_tokens=max_new, do_sample=settings.do_sample, num_beams=settings.num_beams,
                              repetition_penalty=settings.repetition_penalty, eos_token_id=stop, pad_token_id=pad_id,
                              bos_token_id=bundle.tokenizer.bos_token_id,
                              max_time=settings.max_seconds if settings.max_seconds > 0 else None)
    if settings.min_new_tokens and output_modality not in MEDIA:
        # a media reply's length is its span's (the constraint closes it; a minimum that bans the end
        # marker would leave no allowed token)
        kw["min_new_tokens"] = min(settings.min_new_tokens, max_new)
    if settings.do_sample:
        kw.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    else:
        kw.update(temperature=None, top_p=None, top_k=None)
    return GenerationConfig(**kw)


def pad_id_of(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


@torch.inference_mode()
def generate_batch(
    bundle: Any,
    prompts: Sequence[Sequence[int]],
    output_modality: str | None,
    settings: GenerationSettings,
    streamer: BaseStreamer | None = None,
    seed: int | None = None,
    requests: Sequence[str] | None = None,
) -> list[list[int]]:
    """Generate a reply for each prompt (one batch, left-padded; each row its own span state).

    A reply is the generated ids, preceded by the start marker when the prompt ended with one
    (so ``layout.split_ids(reply)`` sees the whole span) and without the trailing end of turn
    or padding. ``output_modality``: None (free: text and any media), ``"text"`` (no media) or a
    media modality (its start marker must end the prompt: see :func:`build_prompt_ids`).
    ``requests``: the text each prompt asks for, needed by ``settings.best_of`` > 1 (media output),
    which samples that many replies per prompt and keeps the one whose read-back scores highest."""
    if not prompts:
        return []
    check_output_modality(bundle, output_modality)
    if seed is not None:
        torch.manual_seed(seed)
    if output_modality in MEDIA and settings.best_of > 1:
        return _best_of(bundle, prompts, output_modality, settings, requests)
    model, layout = bundle.model, bundle.layout
    pad = pad_id_of(bundle.tokenizer)
    device = next(model.parameters()).device
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")
        ids[i, T - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, T - len(p):] = 1
    config = _generation_config(bundle, settings, output_modality, pad)
    processor = make_processor(bundle, output_modality)
    processor.max_length = T + config.max_new_tokens
    processors = [processor]
    if output_modality in MEDIA and settings.guidance_scale != 1.0:
        # the unconditional branch: the same turn with an empty request, forced into the same modality;
        # one row per generated row (beam search runs num_beams rows per prompt)
        rows = len(prompts) * settings.num_beams
        empty = torch.tensor([build_prompt_ids(bundle, "", output_modality=output_modality)] * rows)
        processors.insert(0, UnbatchedClassifierFreeGuidanceLogitsProcessor(
            settings.guidance_scale, model, empty.to(device), torch.ones_like(empty).to(device)))
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                         logits_processor=LogitsProcessorList(processors), streamer=streamer)
    stop_turn = set(bundle.template.stop_token_ids(bundle.layout, bundle.tokenizer))
    starts = {layout.start_id(m) for m in layout.modality_names}
    replies = []
    for i, p in enumerate(prompts):
        new = out[i, T:].tolist()
        reply: list[int] = []
        for t in new:
            if t in stop_turn:
                break
            reply.append(t)
            if output_modality in MEDIA and t == layout.end_id(output_modality):
                break
        if p[-1] in starts:
            reply = [int(p[-1])] + reply
        replies.append(reply)
    return replies


def _best_of(bundle: Any, prompts: Sequence[Sequence[int]], modality: str, settings: GenerationSettings,
             requests: Sequence[str] | None) -> list[list[int]]:
    n = settings.best_of
    if not settings.do_sample:
        raise ValueError("best_of > 1 needs do_sample: greedy candidates would all be the same")
    if requests is None or len(requests) != len(prompts):
        raise ValueError(f"best_of > 1 needs the request text of each of the {len(prompts)} prompts (requests=…)")
    many = generate_batch(bundle, [p for p in prompts for _ in range(n)], modality, replace(settings, best_of=1))
    codes = [[c for kind, part in bundle.layout.split_ids(r) if kind == modality for c in part] for r in many]
    scores = read_back_scores(bundle, modality, codes, [t for t in requests for _ in range(n)])
    return [many[max(range(i * n, (i + 1) * n), key=scores.__getitem__)] for i in range(len(prompts))]


@torch.inference_mode()
def read_back_scores(bundle: Any, modality: str, codes: Sequence[Sequence[int]], texts: Sequence[str],
                     batch_size: int = 32) -> list[float]:
    """log p(text | media) per pair: how likely the model is to caption (or transcribe) each media
    item as its text, in the media→text alignment turn it was trained on (the first phrasing of the
    modality's instruction pool). Used to rank sampled candidates for one request: the text is
    the same across them, so the sum over its tokens (and the end of turn) compares them fairly."""
    instruction = POOLS[(modality, "x2t")][0]
    rows = [bundle.template.render([Message("user", [instruction + " ", MediaCodes(modality, list(c))]),
                                    Message("assistant", t)], bundle.tokenizer, bundle.layout, loss_on="assistant")
            for c, t in zip(codes, texts)]
    samples = [Sample(r.input_ids, r.labels) for r in rows]
    device = next(bundle.model.parameters()).device
    scores: list[float] = []
    for k in range(0, len(samples), batch_size):
        batch = pad_batch(samples[k:k + batch_size], pad_id_of(bundle.tokenizer))
        logits = bundle.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        loss, _ = token_losses(logits, batch["labels"].to(device))
        scores += (-loss.sum(-1)).tolist()
    return scores


class TextCallbackStreamer(BaseStreamer):
    """Streams the text part of a single-row generation to ``on_text(delta)``.

    The first ``put`` (the prompt) is skipped; code ids and markers are not text, so inside a
    span nothing is emitted and ``on_media(modality)`` is called once when a span opens."""

    def __init__(self, bundle: Any, on_text: Callable[[str], None], on_media: Callable[[str], None] | None = None):
        self.tok, self.layout = bundle.tokenizer, bundle.layout
        self.on_text, self.on_media = on_text, on_media
        self.text_limit = bundle.layout.base_vocab_size
        self.starts = {bundle.layout.start_id(m): m for m in bundle.layout.modality_names}
        self.ids: list[int] = []
        self.printed = 0
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for t in value.reshape(-1).tolist():
            if t in self.starts and self.on_media:
                self.on_media(self.starts[t])
            if t < self.text_limit:
                self.ids.append(t)
        # Emit only up to the last space: byte-fallback pieces decode differently once the bytes
        # that follow them arrive, but a space closes every byte group before it.
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        stable = text.rfind(" ")
        if stable > self.printed:
            self.on_text(text[self.printed:stable])
            self.printed = stable

    def end(self) -> None:
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        if len(text) > self.printed:
            self.on_text(text[self.printed:])
        self.printed = len(text)
