"""Evaluation's side of generation: decoding presets, prompt building, reading generated ids.

Generation itself is inference's: the harness calls a *generator* with the signature of
:func:`anygpt.inference.generation.generate_batch` ``(bundle, prompts, output_modality, settings,
requests=None) -> list[list[int]]`` (``requests``: for text → media, the text each prompt asks for),
returning per prompt the generated ids after the prompt (a leading start marker and a trailing
stop/end marker may or may not be included). :func:`default_generator` returns that function;
tests may pass another one with the same signature.

Decoding presets (``--preset``) are the one table of :mod:`anygpt.inference.settings`
(``default``, ``greedy``, ``sample``, ``demo``, ``reference``, ``paper``), plus ``bundle``: the
settings exported with the model (``anygpt_generation.json``) over ``default``.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from anygpt.data.instructions import draw_instruction
from anygpt.data.templates import MediaCodes, Message
from anygpt.inference.settings import PRESETS, GenerationSettings, resolve_settings

Generator = Callable[..., list[list[int]]]
BUNDLE_PRESET = "bundle"  # the model's exported settings over "default"


def decoding_settings(preset: str, bundle: Any = None) -> dict[str, GenerationSettings]:
    """Settings per output modality for ``preset`` (``bundle``: the model's exported settings
    over ``default``); an unknown name raises listing the known ones."""
    if preset == BUNDLE_PRESET:
        return {m: resolve_settings("default", m, bundle.generation) for m in PRESETS["default"]}
    if preset in PRESETS:
        return dict(PRESETS[preset])
    raise ValueError(f"unknown decoding preset {preset!r}; known: {', '.join(preset_names())}")


def default_generator() -> tuple[Generator, str]:
    """``(generate_batch, its name)``: inference's generator, the one chat uses."""
    # imported here, not at the top: `anygpt --help` builds every command's parser (this module's
    # preset names included) and should not pay for importing torch and transformers
    from anygpt.inference.generation import generate_batch

    return generate_batch, "anygpt.inference.generation.generate_batch"


def preset_names() -> list[str]:
    """The names ``--preset`` accepts: the preset table's and ``bundle``."""
    return [*PRESETS, BUNDLE_PRESET]


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
