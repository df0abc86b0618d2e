"""Batched generation for evaluation: the adapter to inference, decoding presets, prompt building.

The harness calls a *generator* ``(bundle, prompts, output_modality, settings, requests=None) ->
list[list[int]]`` (``requests``: for text → media, the text each prompt asks for) returning, per
prompt, the generated token ids (after the prompt; a leading start marker and a trailing stop/end
marker may or may not be included). :func:`resolve_generator` takes
``anygpt.inference.generation.generate_batch`` when that exists (settings passed as its
``GenerationSettings``) and otherwise :func:`reference_generate_batch`, a small constrained
``model.generate`` kept here so evaluation works on its own.

Decoding presets (``--preset``) give settings per *output* modality; ``bundle`` starts from the
settings exported with the model (``anygpt_generation.json``) over ``default``; the chat presets
of ``anygpt.inference.settings`` (``demo``, ``reference``…) are accepted too. ``default`` samples
images (greedy decoding of the demo model always picks the background patch: issue 7, 0 %
text→image with greedy, 65 % colour+shape sampled) and keeps the best of 8 samples at temperature
0.8 by the model's own read-back of the request (``best_of``, see
:func:`anygpt.inference.generation.read_back_scores`); text replies use 3 beams. ``greedy`` is
greedy everywhere, ``sample`` one plain sample.
"""

from __future__ import annotations

import copy
import random
from typing import Any, Callable, Sequence

from anygpt.data.instructions import draw_instruction
from anygpt.data.templates import MediaCodes, Message
from anygpt.vocab import MODALITIES

Generator = Callable[..., list[list[int]]]

# Keys are the fields of anygpt.inference.settings.GenerationSettings; every preset spells all of
# them out so that the settings written into each result are the ones used.
MAX_NEW_TOKENS = {"text": 64, "image": 300, "speech": 400, "music": 600}
GREEDY = {"do_sample": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0, "num_beams": 1,
          "guidance_scale": 1.0, "best_of": 1}
SAMPLE_T1 = {**GREEDY, "do_sample": True}
BEST_OF_8 = {**SAMPLE_T1, "temperature": 0.8, "best_of": 8}
BEAM_3 = {**GREEDY, "num_beams": 3}
_MODS = ("text", *MODALITIES)
PRESETS: dict[str, dict[str, dict]] = {
    # images: the best of 8 samples at temperature 0.8 by the model's own reading of them (demo models, 160
    # fresh held-out prompts: 0.64–0.66 colour+shape with one sample at temperature 1 → 0.79–0.81)
    # text (captions, transcripts): beam search, 3 beams. Greedy transcripts of the demo models sometimes ran
    # on past the sentence (WER 3 on one utterance); beams ended them: WER 0.13–0.15 → 0.10–0.13 and captions
    # as good or better, on three models and 160 held-out items never used for choosing
    "default": {m: {**{"image": BEST_OF_8, "music": SAMPLE_T1, "text": BEAM_3}.get(m, GREEDY), "max_new_tokens": MAX_NEW_TOKENS[m]}
                for m in _MODS},
    "greedy": {m: {**GREEDY, "max_new_tokens": MAX_NEW_TOKENS[m]} for m in _MODS},
    "sample": {m: {**SAMPLE_T1, "max_new_tokens": MAX_NEW_TOKENS[m]} for m in _MODS},
}
PRESET_NAMES = (*PRESETS, "bundle")


def decoding_settings(preset: str, bundle: Any = None) -> dict[str, dict]:
    """Settings per output modality for ``preset`` (``bundle``: the model's exported settings over
    ``default``)."""
    if preset == "bundle":
        out = copy.deepcopy(PRESETS["default"])
        for m, s in (getattr(bundle, "generation", None) or {}).items():
            out.setdefault(m, {}).update(s)
        return out
    if preset in PRESETS:
        return copy.deepcopy(PRESETS[preset])
    chat = _chat_presets()
    if preset in chat:  # the chat demo's presets (anygpt.inference.settings), e.g. "demo", "reference"
        return {m: s.to_dict() for m, s in chat[preset].items()}
    raise ValueError(f"unknown decoding preset {preset!r}; known: {', '.join(preset_names())}")


def _chat_presets() -> dict:
    try:
        from anygpt.inference.settings import PRESETS as CHAT_PRESETS
    except ImportError:
        return {}
    return CHAT_PRESETS


def preset_names() -> list[str]:
    """Our presets, ``bundle``, and the chat presets when inference is installed."""
    return list(dict.fromkeys([*PRESET_NAMES, *_chat_presets()]))


def resolve_generator() -> tuple[Generator, str]:
    """``(generator, name)``: inference's ``generate_batch`` (the one chat uses) if present,
    else :func:`reference_generate_batch`."""
    try:
        from anygpt.inference.generation import generate_batch
        from anygpt.inference.settings import GenerationSettings
    except ImportError:
        return reference_generate_batch, "anygpt.eval.generation.reference_generate_batch"

    def inference_generate(bundle: Any, prompts: list[list[int]], output_modality: str, settings: dict,
                           requests: list[str] | None = None) -> list[list[int]]:
        return generate_batch(bundle, prompts, output_modality, GenerationSettings().updated(settings), requests=requests)

    return inference_generate, "anygpt.inference.generation.generate_batch"


def build_prompt(bundle: Any, content: Sequence[str | MediaCodes], output_modality: str) -> list[int]:
    """Prompt ids: one user turn with ``content``, then the assistant header and, for media
    output, the modality's start marker (the output modality is forced)."""
    r = bundle.template.render(
        [Message("user", list(content))], bundle.tokenizer, bundle.layout,
        loss_on="none", add_generation_prompt=True, force_modality=output_modality,
    )
    return r.input_ids


def task_content(source: str | MediaCodes, input_modality: str, output_modality: str, rng: random.Random) -> list:
    """The reference's pretraining prompts (what ``build-data`` trains on): ``{instruction} {X}``
    for media → text and ``{instruction} This is input: {text}`` for text → media, with a
    phrasing drawn from the instruction pools."""
    if input_modality == "text":
        return [f"{draw_instruction(output_modality, 't2x', rng)} This is input: {source}"]
    return [f"{draw_instruction(input_modality, 'x2t', rng)} ", source]


def media_codes(bundle: Any, modality: str, ids: Sequence[int]) -> list[int]:
    """Modality-local codes from generated ids: ids outside the modality's code range (markers,
    stray text) are dropped; generation stops at the first end marker."""
    r = bundle.layout.code_range(modality)
    end = bundle.layout.end_id(modality)
    out = []
    for i in ids:
        i = int(i)
        if i == end:
            break
        if i in r:
            out.append(i - r.start)
    return out


def generated_text(bundle: Any, ids: Sequence[int]) -> str:
    """Decoded text of generated ids up to the first stop token; media spans are left out."""
    stops = set(bundle.template.stop_token_ids(bundle.layout, bundle.tokenizer))
    keep = []
    for i in ids:
        i = int(i)
        if i in stops:
            break
        if i < bundle.layout.base_vocab_size:
            keep.append(i)
    return bundle.tokenizer.decode(keep, skip_special_tokens=True).strip()


def reference_generate_batch(bundle: Any, prompts: list[list[int]], output_modality: str, settings: dict,
                             requests: list[str] | None = None) -> list[list[int]]:
    """Constrained batched ``model.generate`` (left padding). Plain sampling or beams: ``best_of``
    and ``guidance_scale`` (and so ``requests``) need inference's ``generate_batch``.

    Text output may use only base-vocabulary ids and the template's stop tokens; media output only
    the modality's codes and its end marker, with exactly ``tokens_per_item`` codes when the
    modality tokenizer declares a fixed length."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    layout, tok, model = bundle.layout, bundle.tokenizer, bundle.model
    vocab = model.get_output_embeddings().weight.shape[0]
    if output_modality == "text":
        stops = list(bundle.template.stop_token_ids(layout, tok))
        allowed = torch.zeros(vocab, dtype=torch.bool)
        allowed[: layout.base_vocab_size] = True
        allowed[stops] = True
        fixed, mt = None, None
    else:
        stops = [layout.end_id(output_modality)]
        r = layout.code_range(output_modality)
        allowed = torch.zeros(vocab, dtype=torch.bool)
        allowed[r.start : r.stop] = True
        allowed[stops] = True
        mt = bundle.tokenizers.get(output_modality)
        fixed = mt.code_layout.fixed_length if mt is not None else None
    if settings.get("max_new_tokens"):
        max_new = int(settings["max_new_tokens"])
    elif fixed:
        max_new = fixed + 1
    elif mt is not None and mt.frames_per_second and mt.max_seconds:
        max_new = int(mt.frames_per_second * mt.max_seconds) + 1
    else:
        max_new = 64 if output_modality == "text" else 256
    width = max(len(p) for p in prompts)

    class _Constrain(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores = scores.masked_fill(~allowed.to(scores.device)[: scores.shape[-1]], float("-inf"))
            if fixed:
                n = input_ids.shape[1] - width
                end = stops[0]
                if n < fixed:
                    scores[:, end] = float("-inf")
                else:
                    keep = scores[:, end].clone()
                    scores[:] = float("-inf")
                    scores[:, end] = keep.clamp(min=0.0)
            return scores

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p)
        mask[b, width - len(p) :] = 1
    kw: dict[str, Any] = {"do_sample": bool(settings.get("do_sample", False))}
    if kw["do_sample"]:
        kw.update(temperature=float(settings.get("temperature", 1.0)), top_k=int(settings.get("top_k", 0) or 0),
                  top_p=float(settings.get("top_p", 1.0)))
    if settings.get("repetition_penalty", 1.0) != 1.0:
        kw["repetition_penalty"] = float(settings["repetition_penalty"])
    if int(settings.get("num_beams", 1)) > 1:
        kw["num_beams"] = int(settings["num_beams"])
    dev = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new,
            logits_processor=LogitsProcessorList([_Constrain()]), eos_token_id=stops, pad_token_id=pad, **kw,
        )
    result = []
    for row in out[:, width:].tolist():
        cut = next((k for k, t in enumerate(row) if t in stops), len(row))
        result.append(row[:cut])
    return result
