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
    for r in read_corpus_manifest(paths["speech"]["train"]) + read_corpus_manifest(paths["speech"]["eval"]):
        wav, sr = sf.read(r["path"])
        a = r["attributes"]
        assert sr == a["sample_rate"] and 0.4 < len(wav) / sr < 4.5 and np.abs(wav).max() > 0.1
        assert 120 <= a["rate"] <= 210 and 25 <= a["pitch"] <= 75 and a["voice"]
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


def test_shapes_cover_the_frame_sizes_backgrounds_and_shades():
    from anygpt.data.shapes import BACKGROUND_FAMILY, BACKGROUNDS, COLOURS, FRAMES, SIZE_RANGE, backgrounds_for

    items = [draw_shape_item(random.Random(f"spread:{i}"), size=64) for i in range(600)]
    centres, fracs, bgs, frames = [], [], set(), set()
    for it in items:
        a = it.attributes
        (x0, y0, side), (w, h) = a["box"], a["frame"]
        assert it.image.size == (w, h) and 0 <= x0 <= w - side and 0 <= y0 <= h - side  # fully inside
        centres.append(((x0 + side / 2) / w, (y0 + side / 2) / h))
        fracs.append(side / min(w, h))
        bgs.add(a["background"])
        frames.add((w, h))
        assert a["background"] in backgrounds_for(a["colour"]) and BACKGROUND_FAMILY.get(a["background"]) != a["colour"]
        # the shade is the painted colour, near its named colour and nearer to it than to any other
        shade = np.array(a["shade"], float)
        assert tuple(np.asarray(it.image)[y0 + side // 2, x0 + side // 2]) == tuple(a["shade"]) or a["shape"] in ("star", "triangle")
        assert min(COLOURS, key=lambda c: np.linalg.norm(np.array(COLOURS[c]) - shade)) == a["colour"]
    c = np.array(centres)
    assert c.min() < 0.2 and c.max() > 0.8 and c.std(0).min() > 0.15  # anywhere, not near the centre
    assert SIZE_RANGE[0] - 0.03 <= min(fracs) < 0.3 and 0.7 < max(fracs) <= SIZE_RANGE[1] + 0.03
    assert bgs == set(BACKGROUNDS) and {"white", "black"} <= bgs
    assert (64, 64) in frames and len(frames & set(FRAMES)) >= 4
    assert len({tuple(it.attributes["shade"]) for it in items if it.attributes["colour"] == "red"}) > 30


def test_a_wide_picture_is_resized_as_the_tokenizer_resizes_it(tmp_path):
    """A 100×60 PNG gets the same codes from its file (the eval / chat load path), from the PIL
    image, and from its 64×64 resize: one resize path."""
    from anygpt.data.shapes import render_shape
    from anygpt.modality.kmeans_tokenizer import KMeansImageTokenizer
    from anygpt.modality.media import load_image, resize_image, save_image

    pics = [draw_shape_item(random.Random(f"fit:{i}"), size=64).image for i in range(20)]
    tok = KMeansImageTokenizer.fit(pics, tmp_path / "tok", codebook_size=32, iters=3)
    wide = render_shape("circle", "blue", frame=(100, 60), box=(50, 10, 40), background="cream")
    path = save_image(wide, tmp_path / "wide.png")
    from_file = tok.encode_files([path])[0]
    assert np.array_equal(from_file, tok.encode([wide])[0])
    assert np.array_equal(from_file, tok.encode([resize_image(wide, 64)])[0])
    assert np.array_equal(from_file, tok.encode([tok.load_media(path)])[0])
    assert load_image(path, 64).size == (64, 64)


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
        # generated images are 64×64, like a corpus picture after the tokenizer's resize
        square = item.image.resize((64, 64), Image.Resampling.BICUBIC)
        pixels = np.asarray(square.filter(ImageFilter.GaussianBlur(1)), np.float32) + noise.normal(0, 20, (64, 64, 3))
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
            assert 2 <= len(convs[0]) <= 8
    assert kinds == {"image", "speech", "music", "qa"}


def test_speech_comes_at_other_sample_rates_and_the_tokenizer_path_resamples_it(tmp_path):
    from anygpt.data.corpus import make_item
    from anygpt.modality.media import load_audio

    rows = [make_item("speech", "train", i, tmp_path, seed=3) for i in range(12)]
    rates = {r["attributes"]["sample_rate"] for r in rows}
    assert 16000 in rates and len(rates) >= 2
    r = next(r for r in rows if r["attributes"]["sample_rate"] != 16000)
    wav, sr = sf.read(tmp_path / r["path"])
    assert sr == r["attributes"]["sample_rate"]
    at16 = load_audio(tmp_path / r["path"], 16000)
    assert abs(len(at16) - len(wav) * 16000 / sr) <= 2


def test_later_rounds_ask_about_earlier_media_and_switch_the_reply_modality(tmp_path):
    from anygpt.data.conversations import MEDIA_REF

    paths = build_corpus(tmp_path, {"image": 60, "speech": 12, "music": 12}, n_eval=2, seed=5, n_conversations=80,
                         music_seconds=1.0)
    lines = [json.loads(l) for l in paths["conversations"]["train"].read_text().splitlines()]
    replies, follow_tasks = set(), set()
    for obj in lines:
        conv = check_conversation(obj)[0]
        assert len(obj["tasks"]) == len(conv) // 2
        media_seen = 0
        for k, meta in enumerate(obj["tasks"]):
            user, assistant = conv[2 * k]["message"], conv[2 * k + 1]["message"]
            refs = MEDIA_REF.findall(assistant)
            # the reply is in the modality the round's task asks for
            assert meta["reply"] == (refs[0][0] if refs else "text")
            if "refers_to" in meta:
                assert k > 0 and 0 <= meta["refers_to"] < media_seen and not MEDIA_REF.findall(user)
                follow_tasks.add(meta["task"])
                replies.add(meta["reply"])
            # media a later round can ask about: each media round's item, and a follow-up's new
            # picture or melody (not its spoken answer)
            media_seen += bool(MEDIA_REF.findall(user + assistant)) if "refers_to" not in meta else meta["reply"] in ("image", "music")
            for m, p in refs:
                assert (tmp_path / p).is_file()
        assert sum(len(MEDIA_REF.findall(t["message"])) for t in conv) <= 3
    assert replies >= {"text", "speech", "image"}
    assert {"image_colour", "image_shape", "speech_transcribe", "music_instrument"} <= follow_tasks
    spoken = [p for p in (tmp_path / "conversations" / "train").glob("*.wav")]
    assert spoken and all(sf.info(p).samplerate == 16000 for p in spoken)
