"""Per-output-modality generation settings and the named presets.

``reference`` is the released AnyGPT configs (sampling, top-k 50/200, repetition penalty 1.05 for
speech and 1.15 for music, beam 5 + sampling for chat text); ``demo`` suits the tiny embedded
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
        "text": GenerationSettings(max_new_tokens=500, top_k=50, num_beams=5),
        "image": GenerationSettings(max_new_tokens=200, top_k=50),
        "speech": GenerationSettings(max_new_tokens=1500, top_k=50, repetition_penalty=1.05),
        "music": GenerationSettings(max_new_tokens=2000, top_k=200, repetition_penalty=1.15),
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


def resolve_settings(
    preset: str,
    output: str | None,
    bundle_generation: dict[str, dict] | None = None,
    overrides: dict[str, Any] | None = None,
) -> GenerationSettings:
    """Settings for ``output`` (None = free reply, uses ``text``): preset, then the bundle's
    ``generation`` entry for that modality, then ``overrides``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown generation preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    key = output or "text"
    if key not in OUTPUTS:
        raise ValueError(f"unknown output modality {key!r}; expected one of {', '.join(OUTPUTS)}")
    s = PRESETS[preset][key]
    s = s.updated((bundle_generation or {}).get(key))
    return s.updated(overrides)


# ---------------------------------------------------------------- input windows (long audio)
@dataclass(frozen=True)
class InputWindow:
    """Which part of an attached recording the model sees: ``length`` seconds (None: all) from
    ``start`` (seconds, or ``"random"``: a random start, drawn from the session's seed)."""

    start: float | str = 0.0
    length: float | None = None

    def __post_init__(self) -> None:
        if not (self.start == "random" or (isinstance(self.start, (int, float)) and self.start >= 0)):
            raise ValueError(f"window start must be seconds >= 0 or 'random', got {self.start!r}")
        if self.length is not None and self.length <= 0:
            raise ValueError(f"window length must be > 0 seconds, got {self.length}")


# The released inference scripts crop music inputs: anygpt-chat 5 s, the base model 20 s
# (``music_segment_duration``). They pass one path to ``encode_music_by_path``, which then calls
# ``load_audio`` with its default ``start_from_begin=False``: the start is random. Speech is whole.
INPUT_WINDOWS: dict[str, dict[str, dict[str, InputWindow]]] = {
    "reference": {
        "anygpt-chat": {"music": InputWindow("random", 5.0)},
        "anygpt-pretrain": {"music": InputWindow("random", 20.0)},
        "*": {"music": InputWindow("random", 5.0)},  # any other (chat) template: the chat model's crop
    },
}


def input_window(preset: str, template: str, modality: str) -> InputWindow | None:
    """The preset's window for an attachment of ``modality`` under ``template`` (None: none set)."""
    by_template = INPUT_WINDOWS.get(preset, {})
    return by_template.get(template, by_template.get("*", {})).get(modality)


def resolve_window(path: Any, modality: str, duration: float, window: InputWindow | None,
                   fallback_seconds: float | None, max_seconds: float | None, rng: Any) -> tuple[float, float | None, str | None]:
    """``(start, length, note)`` of an attachment of ``duration`` seconds: the given window, or,
    for a recording longer than the tokenizer takes (``max_seconds``), its first
    ``fallback_seconds`` with a note saying so (never a refusal, never a silent crop)."""
    if window is None:
        if max_seconds is None or duration <= max_seconds or not fallback_seconds:
            return 0.0, None, None
        window = InputWindow(0.0, fallback_seconds)
        note = (f"{path}: {duration:.1f} s of {modality} is longer than the tokenizer's {max_seconds:g} s; "
                f"the model sees 0–{fallback_seconds:g} s (give a window: start, length)")
    else:
        note = None
    length = window.length
    if window.start == "random":
        span = duration - (length or duration)
        start = round(rng.uniform(0.0, span), 3) if span > 0 else 0.0
    else:
        start = float(window.start)
    if length is not None and start + length > duration:
        length = None if start < duration else length  # to the end (load_audio refuses a start past it)
    return start, length, note
