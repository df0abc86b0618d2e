"""Per-output-modality generation settings and the named presets.

``reference`` is the released AnyGPT configs (the reference's ``config/*.json``: sampling, top-k
50/200, repetition penalty 1.05 for speech and 1.15 for music, at least 10 new tokens; text is beam 5
+ sampling up to 500 tokens for the chat model and 1 beam up to 100 for the base model, which
:func:`resolve_settings` picks with ``base_model``); ``demo`` suits the tiny embedded
models (shorter outputs, a little cooler, images the best of 8 by read-back). A bundle's
``anygpt_generation.json`` overrides the preset per modality: ``{"image": {"temperature": 0.8}, ...}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

OUTPUTS = ("text", "image", "speech", "music")


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings for one output modality (``text`` also covers free-form replies)."""

    max_new_tokens: int = 256
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    num_beams: int = 1
    # classifier-free guidance for media replies: > 1 pushes the reply away from what the model would
    # produce for an empty request (the modality's prior) towards what this request asks; 1 = off
    guidance_scale: float = 1.0
    # media replies from a text request: sample this many candidates and keep the one the model itself
    # reads back as the request (highest likelihood of the request text as the candidate's caption or
    # transcript, the media→text direction it was trained on); 1 = off. Needs sampling.
    best_of: int = 1
    # the reference's configs ask for at least 10 new tokens (min_new_tokens); 0 = no minimum
    min_new_tokens: int = 0

    def updated(self, overrides: dict[str, Any] | None) -> "GenerationSettings":
        """A copy with ``overrides`` applied; unknown keys raise naming the known ones."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise ValueError(f"unknown generation setting(s) {bad}; known: {', '.join(sorted(known))}")
        types = {f.name: f.type for f in fields(self)}
        cast = {"int": int, "float": float, "bool": bool}
        return replace(self, **{k: cast[types[k]](v) for k, v in overrides.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, dict[str, GenerationSettings]] = {
    # anygpt-facts.md "Generation settings (released configs)"; chat text: beam 5 + sampling.
    "reference": {
        "text": GenerationSettings(max_new_tokens=500, top_k=50, num_beams=5, min_new_tokens=10),
        "image": GenerationSettings(max_new_tokens=200, top_k=50, min_new_tokens=10),
        "speech": GenerationSettings(max_new_tokens=1500, top_k=50, repetition_penalty=1.05, min_new_tokens=10),
        "music": GenerationSettings(max_new_tokens=2000, top_k=200, repetition_penalty=1.15, min_new_tokens=10),
    },
    "demo": {
        "text": GenerationSettings(max_new_tokens=64, temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.1),
        "image": GenerationSettings(max_new_tokens=300, temperature=0.9, top_k=50, best_of=8),
        "speech": GenerationSettings(max_new_tokens=400, temperature=0.9, top_k=50, repetition_penalty=1.05),
        "music": GenerationSettings(max_new_tokens=600, temperature=1.0, top_k=100, repetition_penalty=1.1),
    },
    # deterministic: tests and evaluation
    "greedy": {m: GenerationSettings(max_new_tokens=n, do_sample=False) for m, n in
               (("text", 64), ("image", 300), ("speech", 400), ("music", 600))},
}


# The base model's text config (the reference's config/text_generate_config.json): one beam, 100 tokens.
REFERENCE_BASE_TEXT = GenerationSettings(max_new_tokens=100, top_k=50, min_new_tokens=10)


def resolve_settings(
    preset: str,
    output: str | None,
    bundle_generation: dict[str, dict] | None = None,
    overrides: dict[str, Any] | None = None,
    base_model: bool = False,
) -> GenerationSettings:
    """Settings for ``output`` (None = free reply, uses ``text``): preset, then the bundle's
    ``generation`` entry for that modality, then ``overrides``. ``base_model``: the model is a
    single-turn base model (AnyGPT-base's pretraining prompt), whose ``reference`` text settings
    differ from the chat model's."""
    if preset not in PRESETS:
        raise ValueError(f"unknown generation preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    key = output or "text"
    if key not in OUTPUTS:
        raise ValueError(f"unknown output modality {key!r}; expected one of {', '.join(OUTPUTS)}")
    s = REFERENCE_BASE_TEXT if (preset == "reference" and base_model and key == "text") else PRESETS[preset][key]
    s = s.updated((bundle_generation or {}).get(key))
    return s.updated(overrides)


def default_preset(template: Any) -> str:
    """``reference`` for a model that uses a reference template (a released AnyGPT checkpoint or
    one converted or fine-tuned from it), ``demo`` otherwise."""
    return "reference" if template.reference_strings else "demo"
