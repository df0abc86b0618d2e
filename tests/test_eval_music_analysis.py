"""Music analysis on synthetic melodies of distinct timbres: fitted on one set, judged on another."""

from __future__ import annotations

import numpy as np

from anygpt.eval.music_analysis import MusicAnalyzer, estimate_tempo

SR = 16000
SCALE = [261.6, 293.7, 329.6, 349.2, 392.0, 440.0, 493.9, 523.3]


def _note(f0: float, dur: float, timbre: str, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(dur * SR)) / SR
    if timbre == "flute":  # near-sine, slow attack, sustained
        y = np.sin(2 * np.pi * f0 * t) + 0.05 * np.sin(4 * np.pi * f0 * t)
        env = np.minimum(1.0, t / 0.05)
    elif timbre == "clarinet":  # odd harmonics, sustained
        y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 3, 5, 7, 9))
        env = np.minimum(1.0, t / 0.01)
    else:  # "piano": rich harmonics, fast exponential decay
        y = sum(np.sin(2 * np.pi * k * f0 * t) * 0.7**k for k in range(1, 9))
        env = np.exp(-t * 6.0)
    env = env * np.minimum(1.0, (dur - t) / 0.01)  # no click at the note end
    return (y * env).astype(np.float32)


def _melody(timbre: str, bpm: float, seed: int, seconds: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    beat = 60.0 / bpm
    out = []
    while sum(map(len, out)) < seconds * SR:
        out.append(_note(SCALE[rng.integers(len(SCALE))] * rng.choice([0.5, 1.0]), beat, timbre, rng))
    y = np.concatenate(out)[: int(seconds * SR)]
    return (0.3 * rng.uniform(0.5, 1.0) * y / np.abs(y).max()).astype(np.float32)


def _set(seeds):
    waves, labels = [], []
    for timbre in ("flute", "clarinet", "piano"):
        for tempo, bpm in (("slow", 70.0), ("fast", 150.0)):
            for s in seeds:
                waves.append(_melody(timbre, bpm * (1 + 0.04 * ((s % 3) - 1)), seed=s * 31 + len(waves)))
                labels.append({"instrument": timbre, "tempo": tempo})
    return waves, labels


def test_tempo_estimate_on_a_click_track():
    for bpm in (70.0, 120.0, 150.0):
        assert abs(estimate_tempo(_melody("piano", bpm, seed=1, seconds=4.0), SR) - bpm) < 0.06 * bpm


def test_instrument_and_tempo_recovered_on_held_out_melodies():
    train_w, train_l = _set(range(4))
    test_w, test_l = _set(range(10, 13))
    an = MusicAnalyzer().fit(train_w, SR, train_l)
    assert an.instruments == ["clarinet", "flute", "piano"]
    got = [an.analyse(w, SR) for w in test_w]
    inst = np.mean([g["instrument"] == l["instrument"] for g, l in zip(got, test_l)])
    tempo = np.mean([an.value_matches(g["tempo"], l["tempo"]) for g, l in zip(got, test_l)])
    assert inst >= 0.9, inst
    assert tempo >= 0.8, tempo  # chance is 0.5
    # other sample rates are resampled to the analysis rate: a 32 kHz copy is still recognised
    w32 = np.repeat(test_w[0], 2)
    assert an.analyse(w32, 32000)["instrument"] == test_l[0]["instrument"]


def test_numeric_tempo_labels_compare_within_tolerance():
    w, _ = _set(range(1))
    an = MusicAnalyzer().fit(w, SR, [{"instrument": "x", "tempo": 100} for _ in w])
    assert an.tempo_numeric
    assert MusicAnalyzer.value_matches(105.0, 100) and not MusicAnalyzer.value_matches(120.0, 100)
