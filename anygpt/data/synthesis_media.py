"""Media generators of instruction synthesis: a description becomes a media file.

Offline defaults: the corpus's shape renderer (``image: corpus``) and melody renderer
(``music: corpus``) and espeak-ng (``speech: espeak``); ``diffusers`` (text-to-image) and
``musicgen`` (text-to-music) run local weights. :data:`MEDIA_BACKENDS` names them for the
recipe's ``image`` / ``music`` / ``speech`` ``backend``.
"""

from __future__ import annotations

import abc
import random
import re
from pathlib import Path
from typing import Callable, Sequence


class MediaGenerator(abc.ABC):
    """Renders a description into a media file."""

    modality: str = ""
    extension: str = ""

    @abc.abstractmethod
    def render(self, description: str, path: Path, rng: random.Random) -> None:
        """Write the media for ``description`` to ``path`` (atomically)."""


def _word(text: str, options: Sequence[str]) -> str | None:
    low = text.lower()
    for o in sorted(options, key=len, reverse=True):
        if re.search(rf"\b{re.escape(o.lower())}(e?s)?\b", low):
            return o
    return None


class CorpusImageGenerator(MediaGenerator):
    """The corpus's shape renderer: colour, shape, size and background words in the description are
    honoured; missing ones are drawn at random."""

    modality, extension = "image", "png"

    def __init__(self, size: int = 64):
        self.size = size

    def render(self, description, path, rng):
        from anygpt.modality.media import save_image
        from anygpt.data.shapes import BACKGROUNDS, COLOURS, SHAPES, SIZE_RANGE, backgrounds_for, render_shape, shape_box

        shape = _word(description, SHAPES) or rng.choice(SHAPES)
        colour = _word(description, list(COLOURS)) or rng.choice(list(COLOURS))
        lo, hi = SIZE_RANGE
        mid = (lo + hi) / 2
        frac = rng.uniform(lo, mid) if "small" in description.lower() else rng.uniform(mid, hi)
        low = description.lower().replace("gray", "grey")
        named = [b for b in sorted(BACKGROUNDS, key=len, reverse=True) if re.search(rf"\b{b} background", low)]
        bg = named[0] if named else rng.choice(backgrounds_for(colour))
        box = shape_box(rng, self.size, frac)
        save_image(render_shape(shape, colour, self.size, box, bg), path)


class CorpusMusicGenerator(MediaGenerator):
    """The corpus's melody synthesiser: instrument, tempo and key words are honoured."""

    modality, extension = "music", "wav"

    def __init__(self, sample_rate: int = 16000, seconds: float = 3.0):
        self.sample_rate, self.seconds = sample_rate, seconds

    def render(self, description, path, rng):
        from anygpt.modality.media import save_audio
        from anygpt.data.melody import INSTRUMENTS, KEYS, TEMPOS, render_melody

        instrument = _word(description, INSTRUMENTS) or rng.choice(INSTRUMENTS)
        tempo = _word(description, list(TEMPOS)) or rng.choice(list(TEMPOS))
        m = re.search(r"\b([A-G]) (major|minor)\b", description)
        key = f"{m.group(1)} {m.group(2)}" if m and f"{m.group(1)} {m.group(2)}" in KEYS else rng.choice(list(KEYS))
        audio = render_melody(instrument, rng.randint(*TEMPOS[tempo]), key, self.seconds, self.sample_rate, rng)
        save_audio(audio, self.sample_rate, path)


class ESpeakGenerator(MediaGenerator):
    """Text-to-speech with eSpeak NG (voice and rate drawn per utterance)."""

    modality, extension = "speech", "wav"

    def __init__(self, voices: Sequence[str] | None = None, sample_rate: int = 16000):
        from anygpt.data.espeak import VOICES

        self.voices, self.sample_rate = list(voices or VOICES), sample_rate

    def render(self, description, path, rng):
        from anygpt.modality.media import save_audio
        from anygpt.data.espeak import speak

        save_audio(speak(description, rng.choice(self.voices), rng.randint(140, 180), self.sample_rate),
                   self.sample_rate, path)


class DiffusersImageGenerator(MediaGenerator):
    """Text-to-image with a local diffusers pipeline directory (e.g. Stable Diffusion)."""

    modality, extension = "image", "png"

    def __init__(self, model: str, steps: int = 25, guidance: float = 7.5, device: str | None = None):
        from diffusers import AutoPipelineForText2Image

        self.pipe = AutoPipelineForText2Image.from_pretrained(model)
        if device:
            self.pipe.to(device)
        self.steps, self.guidance = steps, guidance

    def render(self, description, path, rng):
        import torch

        from anygpt.modality.media import save_image

        g = torch.Generator().manual_seed(rng.getrandbits(31))
        image = self.pipe(description, num_inference_steps=self.steps, guidance_scale=self.guidance, generator=g).images[0]
        save_image(image, path)


class MusicGenGenerator(MediaGenerator):
    """Text-to-music with a local MusicGen checkpoint (transformers)."""

    modality, extension = "music", "wav"

    def __init__(self, model: str, seconds: float = 5.0, device: str | None = None):
        from transformers import AutoProcessor, MusicgenForConditionalGeneration

        from anygpt.utils import refuse_remote_code

        refuse_remote_code(model)
        self.processor = AutoProcessor.from_pretrained(model, trust_remote_code=False)
        self.model = MusicgenForConditionalGeneration.from_pretrained(model, trust_remote_code=False)
        if device:
            self.model.to(device)
        self.seconds = seconds

    def render(self, description, path, rng):
        import torch

        from anygpt.modality.media import save_audio

        torch.manual_seed(rng.getrandbits(31))
        inputs = self.processor(text=[description], return_tensors="pt").to(self.model.device)
        frame_rate = self.model.config.audio_encoder.frame_rate
        audio = self.model.generate(**inputs, do_sample=True, max_new_tokens=int(self.seconds * frame_rate))
        sr = self.model.config.audio_encoder.sampling_rate
        save_audio(audio[0, 0].float().cpu().numpy(), sr, path)


MEDIA_BACKENDS: dict[str, dict[str, Callable[..., MediaGenerator]]] = {
    "image": {"corpus": CorpusImageGenerator, "diffusers": DiffusersImageGenerator},
    "music": {"corpus": CorpusMusicGenerator, "musicgen": MusicGenGenerator},
    "speech": {"espeak": ESpeakGenerator},
}
