"""Recover musical attributes (instrument, tempo) from a waveform, to score text→music.

Simple and honest by design:

- **Instrument**: a nearest-centroid classifier over z-scored timbre features — level-normalised
  mean/std log-mel spectrum, a pitch-normalised harmonic profile (harmonics 1..8 relative to the
  strongest, found from an autocorrelation f0), spectral centroid relative to f0, spectral
  flatness and envelope shape (sustain and crest of the frame energy). It is fitted on the
  corpus's *training* clips (seconds of numpy) and must be judged on *held-out* clips: the harness
  reports the analyser's own accuracy on the real held-out clips (its ceiling) beside the accuracy
  on generated music.
- **Tempo**: the periodicity of the onset envelope (half-wave-rectified log-mel flux): the
  autocorrelation peak between 40 and 240 events per minute (the shortest-lag peak within 70 % of
  the highest, against half/third-tempo errors), in BPM. Categorical tempo labels
  (``slow``/``fast``…) are classified by nearest centroid over the onset envelope's
  autocorrelation sampled on a log-BPM grid (fitted on the training clips): in short clips with
  mixed note lengths the single peak is often off by an octave (half/double tempo), while the
  whole profile separates the classes far better (on the embedded corpus, 3-s melodies: 83 % vs
  60 % on held-out clips, 100 training clips). Numeric labels are compared within ±10 %.

Everything runs at :data:`ANALYSIS_RATE` (input is resampled), so training clips and decoded
waveforms at other rates are comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from anygpt.modality.media import mel_filterbank, resample

ANALYSIS_RATE = 16000
N_FFT = 1024
HOP = 256
N_MELS = 40
N_HARMONICS = 8


def _mono_at_analysis_rate(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at :data:`ANALYSIS_RATE` (channels averaged; the package's one resampler)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim > 1:
        wave = wave.mean(axis=0) if wave.shape[0] < wave.shape[-1] else wave.mean(axis=-1)
    return resample(wave, int(sample_rate), ANALYSIS_RATE, "music analysis input")


def _frames_power(wave: np.ndarray) -> np.ndarray:
    """Power spectrogram [frames, N_FFT//2+1] (Hann window); short input is zero-padded."""
    if len(wave) < N_FFT:
        wave = np.pad(wave, (0, N_FFT - len(wave)))
    n = 1 + (len(wave) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    frames = wave[idx] * np.hanning(N_FFT)[None, :].astype(np.float32)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2


_FB = mel_filterbank(N_MELS, N_FFT, ANALYSIS_RATE, fmin=40.0)


def _f0(frame_power: np.ndarray, sample_rate: int = ANALYSIS_RATE, fmin: float = 60.0, fmax: float = 1200.0) -> float:
    """Fundamental frequency of one frame from the autocorrelation (inverse FFT of the power)."""
    ac = np.fft.irfft(frame_power)
    lo, hi = int(sample_rate / fmax), int(sample_rate / fmin)
    lag = lo + int(np.argmax(ac[lo:hi]))
    return sample_rate / lag if ac[lag] > 0 else 0.0


def timbre_features(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """A fixed-length timbre vector (see the module docstring); independent of level and pitch
    as far as such simple features can be."""
    x = _mono_at_analysis_rate(wave, sample_rate)
    power = _frames_power(x)
    energy = power.sum(axis=1)
    active = energy > max(energy.max() * 1e-3, 1e-12)
    if not active.any():
        active = np.ones_like(energy, dtype=bool)
    logmel = np.log(power[active] @ _FB.T + 1e-10)
    logmel -= logmel.mean(axis=1, keepdims=True)  # level invariance
    freqs = np.linspace(0, ANALYSIS_RATE / 2, power.shape[1])
    harm, rel_centroid, flat = [], [], []
    for p in power[active][:: max(1, int(active.sum()) // 40)]:  # ≤ 40 frames: cheap enough
        f0 = _f0(p)
        if f0 <= 0:
            continue
        mags = []
        for k in range(1, N_HARMONICS + 1):
            b = int(round(k * f0 / freqs[1]))
            mags.append(p[max(b - 1, 0) : b + 2].max() if b < len(p) else 0.0)
        mags = np.log(np.asarray(mags) + 1e-10)
        harm.append(mags - mags.max())
        rel_centroid.append(float((freqs * p).sum() / (p.sum() + 1e-12)) / f0)
        flat.append(float(np.exp(np.log(p + 1e-12).mean()) / (p.mean() + 1e-12)))
    harm_v = np.mean(harm, axis=0) if harm else np.full(N_HARMONICS, -20.0)
    env = np.sqrt(energy / (energy.max() + 1e-12))
    envelope = [float(np.median(env[active])), float(env.mean() / (env.max() + 1e-12)), float(env[active].std())]
    return np.concatenate([
        logmel.mean(axis=0), logmel.std(axis=0), np.maximum(harm_v, -20.0),
        [math.log(np.median(rel_centroid) + 1e-3) if rel_centroid else 0.0, float(np.median(flat)) if flat else 1.0],
        envelope,
    ]).astype(np.float64)


def onset_envelope(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Half-wave-rectified log-mel spectral flux per frame (frame rate ANALYSIS_RATE / HOP)."""
    x = _mono_at_analysis_rate(wave, sample_rate)
    logmel = np.log(_frames_power(x) @ _FB.T + 1e-8)
    flux = np.maximum(np.diff(logmel, axis=0), 0).sum(axis=1)
    return np.concatenate([[0.0], flux])


def estimate_tempo(wave: np.ndarray, sample_rate: int, min_bpm: float = 40.0, max_bpm: float = 240.0) -> float:
    """Events per minute: the autocorrelation peak of the onset envelope between ``min_bpm`` and
    ``max_bpm`` (0.0 for silence or too-short clips)."""
    env = onset_envelope(wave, sample_rate)
    env = env - env.mean()
    fps = ANALYSIS_RATE / HOP
    lo, hi = int(fps * 60 / max_bpm), int(math.ceil(fps * 60 / min_bpm))
    if len(env) <= lo + 2 or not np.any(env):
        return 0.0
    ac = np.correlate(env, env, mode="full")[len(env) - 1 :]
    ac = ac / (np.arange(len(env), 0, -1))  # unbiased: longer lags have fewer terms
    hi = min(hi, len(ac) - 2)
    # Repeated notes make multiples of the event period (half/third tempo) peak as high as the
    # period itself: take the shortest-lag local peak within 70 % of the highest.
    peaks = [k for k in range(max(lo, 1), hi + 1) if ac[k] >= ac[k - 1] and ac[k] >= ac[k + 1] and ac[k] > 0]
    if not peaks:
        return 0.0
    top = max(ac[k] for k in peaks)
    lag = min(k for k in peaks if ac[k] >= 0.7 * top)
    # parabolic interpolation of the peak for sub-frame precision
    if 0 < lag < len(ac) - 1:
        a, b, c = ac[lag - 1], ac[lag], ac[lag + 1]
        den = a - 2 * b + c
        lag = lag + (0.5 * (a - c) / den if den != 0 else 0.0)
    return float(60.0 * fps / lag)


def tempo_profile(wave: np.ndarray, sample_rate: int, n: int = 40, min_bpm: float = 40.0, max_bpm: float = 320.0) -> np.ndarray:
    """The onset envelope's normalised autocorrelation at ``n`` tempi spaced evenly in log BPM."""
    env = onset_envelope(wave, sample_rate)
    env = env - env.mean()
    ac = np.correlate(env, env, mode="full")[len(env) - 1 :] / np.arange(len(env), 0, -1)
    ac = ac / (ac[0] + 1e-12)
    lags = (ANALYSIS_RATE / HOP) * 60.0 / np.geomspace(min_bpm, max_bpm, n)
    return np.interp(lags, np.arange(len(ac)), ac, right=0.0)


def _nearest_centroid_fit(feats: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(classes, centroids in z-space, mean, std) of a nearest-centroid classifier."""
    classes = sorted(set(labels))
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    z = (feats - mean) / std
    cents = np.stack([z[[i for i, x in enumerate(labels) if x == c]].mean(axis=0) for c in classes])
    return classes, cents, mean, std


def _nearest_centroid(x: np.ndarray, classes: list[str], cents: np.ndarray, mean: np.ndarray, std: np.ndarray) -> str:
    z = (x - mean) / std
    return classes[int(np.argmin(((cents - z) ** 2).sum(axis=1)))]


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
        return not isinstance(v, bool)
    except (TypeError, ValueError):
        return False


@dataclass
class MusicAnalyzer:
    """Nearest-centroid instrument and tempo classifiers + a BPM estimate, fitted on training clips.

    Example::

        an = MusicAnalyzer().fit(train_waves, 16000, [{"instrument": "piano", "tempo": "fast"}, ...])
        an.analyse(wave, 32000)   # {"instrument": "piano", "tempo": "fast", "bpm": 141.3}
    """

    instrument_model: tuple | None = None  # (classes, centroids, mean, std) over timbre features
    tempo_model: tuple | None = None  # the same over tempo profiles (categorical tempo labels)
    tempo_numeric: bool = False

    @property
    def instruments(self) -> list[str]:
        return list(self.instrument_model[0]) if self.instrument_model else []

    def fit(self, waves: Sequence[np.ndarray], sample_rate: int | Sequence[int], labels: Sequence[Mapping[str, object]]) -> "MusicAnalyzer":
        """Fit on training clips; ``labels[i]`` holds ``instrument`` and optionally ``tempo``
        (a label such as ``slow``, or a BPM number)."""
        if len(waves) != len(labels) or not waves:
            raise ValueError(f"fit needs one label per clip and at least one clip (got {len(waves)} clips, {len(labels)} labels)")
        rates = [sample_rate] * len(waves) if isinstance(sample_rate, int) else list(sample_rate)
        feats = np.stack([timbre_features(w, r) for w, r in zip(waves, rates)])
        self.instrument_model = _nearest_centroid_fit(feats, [str(l["instrument"]) for l in labels])
        tempos = [(w, r, l["tempo"]) for w, r, l in zip(waves, rates, labels) if l.get("tempo") is not None]
        self.tempo_numeric = bool(tempos) and all(_is_number(t) for _, _, t in tempos)
        if tempos and not self.tempo_numeric:
            prof = np.stack([tempo_profile(w, r) for w, r, _ in tempos])
            self.tempo_model = _nearest_centroid_fit(prof, [str(t) for _, _, t in tempos])
        return self

    def classify_instrument(self, wave: np.ndarray, sample_rate: int) -> str:
        if self.instrument_model is None:
            raise RuntimeError("MusicAnalyzer.fit must be called before analyse")
        return _nearest_centroid(timbre_features(wave, sample_rate), *self.instrument_model)

    def analyse(self, wave: np.ndarray, sample_rate: int) -> dict[str, object]:
        """``{"instrument": label, "tempo": label (or BPM for numeric labels, None if unknown), "bpm": float}``."""
        bpm = estimate_tempo(wave, sample_rate)
        if self.tempo_model is not None:
            tempo: object = _nearest_centroid(tempo_profile(wave, sample_rate), *self.tempo_model)
        else:
            tempo = bpm if bpm > 0 else None
        return {"instrument": self.classify_instrument(wave, sample_rate), "tempo": tempo, "bpm": bpm}

    @staticmethod
    def value_matches(predicted: object, truth: object, tolerance: float = 0.10) -> bool:
        """Numeric values (tempo in BPM) match within ``tolerance`` (relative); labels by equality."""
        if predicted is None or truth is None:
            return False
        if _is_number(truth) and _is_number(predicted):
            return abs(float(predicted) - float(truth)) <= tolerance * float(truth)
        return str(predicted).lower() == str(truth).lower()
