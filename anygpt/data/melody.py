"""Short synthesised melodies with known instrument, tempo, key and mood, and their descriptions.

Five timbres that differ clearly in a mel spectrogram: ``piano`` (decaying harmonics), ``flute``
(sine with vibrato and a soft attack), ``violin`` (band-limited sawtooth with vibrato), ``guitar``
(Karplus-Strong plucked string), ``clarinet`` (odd harmonics, square-like). Tempo classes map to
BPM ranges; the mood follows from mode and tempo, so it is learnable from the audio.

Example::

    item = draw_melody_item(random.Random(0), sample_rate=16000, seconds=3.0)
    item.audio, item.description, item.attributes   # float32 mono, str, dict
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

INSTRUMENTS: tuple[str, ...] = ("piano", "flute", "violin", "guitar", "clarinet")
# BPM ranges of the tempo classes, wide and touching so tempi between the old classes' centres occur
TEMPOS: dict[str, tuple[int, int]] = {"slow": (50, 85), "medium": (90, 125), "fast": (130, 180)}
KEYS: dict[str, tuple[int, str]] = {  # name -> (tonic MIDI note, mode)
    "C major": (60, "major"), "G major": (67, "major"), "F major": (65, "major"),
    "A minor": (57, "minor"), "E minor": (64, "minor"), "D minor": (62, "minor"),
}
MOODS: dict[tuple[str, str], str] = {
    ("major", "slow"): "calm", ("major", "medium"): "cheerful", ("major", "fast"): "happy",
    ("minor", "slow"): "sad", ("minor", "medium"): "gentle", ("minor", "fast"): "tense",
}
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_DESCRIPTIONS = (
    "a {tempo} {mood} melody played on the {instrument} in {key}",
    "a {mood} {instrument} tune in {key} at a {tempo} tempo",
    "{instrument} music, {tempo} and {mood}, in {key}",
    "a {tempo} piece for solo {instrument} in {key} with a {mood} feel",
)


@dataclass
class MelodyItem:
    """One corpus clip with its description and ground-truth attributes."""

    audio: np.ndarray
    sample_rate: int
    description: str
    attributes: dict[str, object]


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _envelope(n: int, sr: int, attack: float, decay: float | None) -> np.ndarray:
    t = np.arange(n) / sr
    env = np.minimum(1.0, t / max(attack, 1e-4))
    if decay is not None:
        env *= np.exp(-t / decay)
    release = min(n, int(0.02 * sr))  # avoid clicks at note ends
    env[n - release :] *= np.linspace(1.0, 0.0, release)
    return env


def _karplus_strong(freq: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Plucked string: y[t] = 0.996 * (y[t-P] + y[t-P-1]) / 2 after a burst of noise, computed a
    period at a time (each block reads only samples written before it)."""
    period = max(2, int(round(sr / freq)))
    out = np.zeros(n + period + 1, dtype=np.float64)  # out[0] is a zero before the burst
    out[1 : period + 1] = rng.uniform(-1, 1, period)
    pos = period + 1
    while pos < len(out):
        m = min(period, len(out) - pos)
        out[pos : pos + m] = 0.996 * 0.5 * (out[pos - period : pos - period + m] + out[pos - period - 1 : pos - period - 1 + m])
        pos += m
    return out[period + 1 :] * _envelope(n, sr, 0.002, None)


def render_note(instrument: str, freq: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note of ``n`` samples (peak about 1)."""
    t = np.arange(n) / sr
    if instrument == "guitar":
        return _karplus_strong(freq, n, sr, rng)
    if instrument == "piano":
        wave = sum(np.sin(2 * np.pi * freq * h * t) * (0.6 ** (h - 1)) * np.exp(-t * (1.5 + h)) for h in range(1, 7))
        return wave * _envelope(n, sr, 0.003, None)
    vibrato = 1 + 0.006 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(freq * vibrato) / sr
    if instrument == "flute":
        wave = np.sin(phase) + 0.08 * np.sin(2 * phase)
        return wave * _envelope(n, sr, 0.06, None)
    if instrument == "violin":
        wave = sum(np.sin(h * phase) / h for h in range(1, 16) if h * freq < sr / 2)
        return 0.6 * wave * _envelope(n, sr, 0.04, None)
    if instrument == "clarinet":
        wave = sum(np.sin(h * phase) / h for h in range(1, 16, 2) if h * freq < sr / 2)
        return 0.8 * wave * _envelope(n, sr, 0.02, None)
    raise ValueError(f"unknown instrument {instrument!r}; known: {', '.join(INSTRUMENTS)}")


def render_melody(instrument: str, bpm: float, key: str, seconds: float, sample_rate: int,
                  rng: random.Random) -> np.ndarray:
    """A random-walk melody on the key's scale, quarter and eighth notes, normalised to 0.8 peak."""
    tonic, mode = KEYS[key]
    scale = _SCALES[mode]
    noise = np.random.default_rng(rng.getrandbits(32))
    total = int(seconds * sample_rate)
    out = np.zeros(total, dtype=np.float64)
    beat = 60.0 / bpm
    pos, degree = 0, 0
    while pos < total:
        dur = beat * rng.choice((1.0, 1.0, 0.5, 2.0))
        n = min(total - pos, int(dur * sample_rate))
        degree = max(-3, min(9, degree + rng.choice((-2, -1, -1, 0, 1, 1, 2))))
        octave, step = divmod(degree, 7)
        note = tonic + 12 * octave + scale[step]
        out[pos : pos + n] += render_note(instrument, _midi_hz(note), n, sample_rate, noise)
        pos += n
    peak = float(np.abs(out).max()) or 1.0
    return (0.8 * out / peak).astype(np.float32)


def draw_melody_item(rng: random.Random, sample_rate: int = 16000, seconds: float = 3.0) -> MelodyItem:
    """Random instrument / tempo / key, the clip, and a description drawn from a few phrasings."""
    instrument = rng.choice(INSTRUMENTS)
    tempo = rng.choice(list(TEMPOS))
    bpm = rng.randint(*TEMPOS[tempo])
    key = rng.choice(list(KEYS))
    mood = MOODS[(KEYS[key][1], tempo)]
    audio = render_melody(instrument, bpm, key, seconds, sample_rate, rng)
    text = rng.choice(_DESCRIPTIONS).format(tempo=tempo, mood=mood, instrument=instrument, key=key)
    attrs = {"instrument": instrument, "tempo": tempo, "bpm": bpm, "key": key, "mood": mood}
    return MelodyItem(audio, sample_rate, text, attrs)
