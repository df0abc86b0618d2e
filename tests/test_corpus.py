"""The embedded corpus: determinism, splits, analyse_image accuracy, real speech, distinct timbres,
conversations that reference existing media."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from anygpt.data.conversations import check_conversation, referenced_media
from anygpt.data.corpus import analyse_image, build_corpus, read_corpus_manifest, vocabulary
from anygpt.data.melody import INSTRUMENTS, draw_melody_item
from anygpt.data.shapes import draw_shape_item

COUNTS = {"image": 12, "speech": 6, "music": 4}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("corpus")
    return d, build_corpus(d, COUNTS, n_eval=3, seed=7, n_conversations=40, music_seconds=1.5)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(corpus, tmp_path):
    root, _ = corpus
    again = tmp_path / "again"  # drawn in two processes: the same bytes as drawn in one
    build_corpus(again, COUNTS, n_eval=3, seed=7, n_conversations=40, music_seconds=1.5, workers=2)
    assert _digest(again) == _digest(root)
    other = tmp_path / "other"
    build_corpus(other, {"image": 3, "speech": 1, "music": 1}, n_eval=0, seed=8, music_seconds=1.5)
    first = Path("image/train/image-train-000000.png")
    assert (other / first).read_bytes() != (root / first).read_bytes()
    # a rerun over a finished folder rewrites nothing that exists (resumable)
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "speech").rglob("*.wav")}
    build_corpus(root, COUNTS, n_eval=3, seed=7, n_conversations=40, music_seconds=1.5)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())


def test_manifests_splits_and_media(corpus):
    root, paths = corpus
    for modality, n in COUNTS.items():
        train, ev = read_corpus_manifest(paths[modality]["train"]), read_corpus_manifest(paths[modality]["eval"])
        assert len(train) == n and len(ev) == 3
        assert not {r["id"] for r in train} & {r["id"] for r in ev}
        for r in train + ev:
            assert set(r) == {"id", "path", "text", "attributes"} and Path(r["path"]).is_file() and r["text"]
    words = set(vocabulary())
    for r in read_corpus_manifest(paths["speech"]["train"]):
        wav, sr = sf.read(r["path"])
        assert sr == 16000 and 0.4 < len(wav) / sr < 4.0 and np.abs(wav).max() > 0.1
        assert 3 <= len(r["text"].split()) <= 6 and set(r["text"].split()) <= words
    assert len({r["attributes"]["voice"] for r in read_corpus_manifest(paths["speech"]["train"])}) >= 2
    for r in read_corpus_manifest(paths["music"]["train"]):
        wav, sr = sf.read(r["path"])
        a = r["attributes"]
        assert sr == a["sample_rate"] == 16000 and len(wav) == int(1.5 * sr)
        assert a["instrument"] in r["text"] and a["tempo"] in r["text"] and a["key"] in r["text"] and a["mood"] in r["text"]
    for r in read_corpus_manifest(paths["image"]["train"]):
        got = analyse_image(Image.open(r["path"]))  # read back from PNG
        assert (got["colour"], got["shape"]) == (r["attributes"]["colour"], r["attributes"]["shape"])
        assert r["attributes"]["colour"] in r["text"] and r["attributes"]["shape"] in r["text"]


def test_shapes_sit_near_the_centre_inside_the_picture():
    from anygpt.data.shapes import JITTER, shape_box

    rng = random.Random(0)
    for frac in [0.2, 0.4, 0.6, 0.8, 1.0] * 40:
        x0, y0, side = shape_box(rng, 64, frac)
        assert side == max(12, round(64 * frac)) and 0 <= x0 <= 64 - side and 0 <= y0 <= 64 - side
        assert abs(x0 - (64 - side) // 2) <= 64 * JITTER and abs(y0 - (64 - side) // 2) <= 64 * JITTER
    offsets = {shape_box(rng, 64, 0.5)[:2] for _ in range(200)}
    assert len(offsets) > 20  # positions still vary


def test_analyse_image_recovers_colour_and_shape():
    n, ok = 400, 0
    for i in range(n):
        item = draw_shape_item(random.Random(f"analyse:{i}"), size=64)
        got = analyse_image(item.image)
        ok += (got["colour"], got["shape"]) == (item.attributes["colour"], item.attributes["shape"])
    assert ok / n >= 0.98
    # generated images are noisy and blurred: the analysis must still read them
    from PIL import ImageFilter

    noise = np.random.default_rng(0)
    ok = 0
    for i in range(200):
        item = draw_shape_item(random.Random(f"noisy:{i}"), size=64)
        pixels = np.asarray(item.image.filter(ImageFilter.GaussianBlur(1)), np.float32) + noise.normal(0, 20, (64, 64, 3))
        got = analyse_image(np.clip(pixels, 0, 255))
        ok += (got["colour"], got["shape"]) == (item.attributes["colour"], item.attributes["shape"])
    assert ok / 200 >= 0.9
    blank = analyse_image(Image.new("RGB", (64, 64), (255, 255, 255)))
    assert blank["colour"] is None and blank["shape"] is None


def _log_mel_stats(x: np.ndarray, sr: int = 16000, n_fft: int = 1024, hop: int = 512, n_mels: int = 40) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.linspace(0, sr / 2, power.shape[1])
    pts = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + sr / 2 / 700), n_mels + 2) / 2595) - 1)
    lo, mid, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    bank = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    lm = np.log(power @ bank.T + 1e-8)
    return np.concatenate([lm.mean(0), lm.std(0)])


def test_instruments_are_distinct_in_a_mel_spectrogram():
    """A nearest-centroid classifier on log-mel statistics tells the timbres apart on new clips."""
    def draw(tag, n):
        items = [draw_melody_item(random.Random(f"{tag}{i}"), seconds=1.5) for i in range(n)]
        return np.array([_log_mel_stats(it.audio) for it in items]), [it.attributes["instrument"] for it in items]

    x, y = draw("train", 75)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    centroids = {k: ((x[[j for j, t in enumerate(y) if t == k]] - mu) / sd).mean(0) for k in INSTRUMENTS}
    xt, yt = draw("test", 40)
    pred = [min(centroids, key=lambda k: np.linalg.norm((f - mu) / sd - centroids[k])) for f in xt]
    assert np.mean([p == t for p, t in zip(pred, yt)]) >= 0.8


def test_conversations_mix_all_media_and_reference_their_split(corpus):
    root, paths = corpus
    kinds = set()
    for split in ("train", "eval"):
        for line in paths["conversations"][split].read_text().splitlines():
            obj = json.loads(line)
            convs = check_conversation(obj)
            for ref in referenced_media(convs):
                kinds.add(ref.modality)
                assert (root / ref.path).is_file() and f"/{split}/" in ref.path
            for turn in convs[0]:
                if turn["role"] == "user" and "<" not in turn["message"] and "?" in turn["message"]:
                    kinds.add("qa")
            assert 2 <= len(convs[0]) <= 6
    assert kinds == {"image", "speech", "music", "qa"}
