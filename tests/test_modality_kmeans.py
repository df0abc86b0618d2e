"""K-means tokenizers (reconstruction bounds that can fail), media I/O checks and flattening."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from modality_fixtures import shape_image, vowel, write_images, write_manifest  # noqa: E402

from anygpt.modality import media  # noqa: E402
from anygpt.modality.base import MediaError, load_tokenizer  # noqa: E402
from anygpt.modality.kmeans_tokenizer import KMeansImageTokenizer, KMeansMusicTokenizer, KMeansSpeechTokenizer  # noqa: E402
from anygpt.modality.flatten import flatten_frame_major, unflatten_frame_major  # noqa: E402


def psnr(a, b) -> float:
    mse = ((np.asarray(a, float) - np.asarray(b, float)) ** 2).mean()
    return 10 * np.log10(255.0**2 / mse)


def test_demo_image_reconstruction_bound_and_card(tmp_path):
    rng = np.random.default_rng(0)
    tok = KMeansImageTokenizer.fit([shape_image(rng) for _ in range(60)], tmp_path / "tok", codebook_size=128, iters=10)
    assert (tok.tokens_per_item, tok.codebook_size, tok.image_size) == (64, 128, 64)
    held_out = [shape_image(rng) for _ in range(10)]
    codes = tok.encode(held_out)
    scores = [psnr(tok.decode(c), im) for c, im in zip(codes, held_out)]
    # bound: held-out shape images reconstruct at >= 20 dB PSNR; a flat grey image scores about 8
    assert np.mean(scores) >= 20.0, scores
    assert np.mean([psnr(np.full((64, 64, 3), 128), im) for im in held_out]) < 15
    loaded = load_tokenizer(tmp_path / "tok")  # the directory is a card
    assert loaded.fingerprint == tok.fingerprint
    assert all(np.array_equal(a, b) for a, b in zip(loaded.encode(held_out), codes))
    other = KMeansImageTokenizer.fit([shape_image(rng) for _ in range(20)], codebook_size=128, iters=2, seed=1)
    assert other.fingerprint != tok.fingerprint


def test_demo_image_fit_from_manifest_is_deterministic(tmp_path, logged_warning):
    paths = write_images(tmp_path / "img", 8)
    (tmp_path / "img" / "bad.png").write_text("not a png")
    rows = [{"id": str(i), "path": f"img/{p.name}"} for i, p in enumerate(paths)] + [{"id": "bad", "path": "img/bad.png"}]
    man = write_manifest(tmp_path / "m.jsonl", rows)
    with logged_warning("fit: skipped .*bad.png: not a readable image"):
        a = KMeansImageTokenizer.fit(man, codebook_size=16, iters=3, image_size=32, patch_size=8)
    b = KMeansImageTokenizer.fit([str(p) for p in paths], codebook_size=16, iters=3, image_size=32, patch_size=8)
    assert a.tokens_per_item == 16 and a.fingerprint == b.fingerprint


def mel_distance(tok, a: np.ndarray, b: np.ndarray) -> float:
    """Mean |log-mel difference| (nats) with both floored 30 dB below the louder peak."""
    fa, fb = tok.frames([a])[0], tok.frames([b])[0]
    n = min(len(fa), len(fb))
    floor = max(fa.max(), fb.max()) - np.log(1e3)
    return float((fa[:n].clamp(min=floor) - fb[:n].clamp(min=floor)).abs().mean())


@pytest.mark.parametrize("cls,sr", [(KMeansSpeechTokenizer, 16000), (KMeansMusicTokenizer, 22050)])
def test_demo_audio_reconstruction_bound(tmp_path, cls, sr, logged_warning):
    rng = np.random.default_rng(1)
    tok = cls.fit([vowel(rng, 2.0, sr) for _ in range(20)], tmp_path / "tok", codebook_size=64, iters=10)
    assert tok.frames_per_second == 25 and tok.sample_rate == sr
    clips = [vowel(rng, 2.0, sr) for _ in range(4)]
    codes = tok.encode(clips)
    assert [c.shape for c in codes] == [(50,)] * 4 and max(c.max() for c in codes) < 64
    wavs = [tok.decode(c) for c in codes]
    assert all(w.shape == (50 * tok.hop,) and np.isfinite(w).all() for w in wavs)
    d_rec = np.mean([mel_distance(tok, c, w) for c, w in zip(clips, wavs)])
    d_other = np.mean([mel_distance(tok, c, clips[(i + 1) % 4]) for i, c in enumerate(clips)])
    # bound: the Griffin-Lim reconstruction is within 0.6 nat (30 dB floor) of the original's
    # log-mel, and much closer to it than other clips of the same kind are (about 0.8)
    assert d_rec < 0.6 and d_rec < 0.6 * d_other, (d_rec, d_other)
    assert np.array_equal(load_tokenizer(tmp_path / "tok").encode(clips[:1])[0], codes[0])
    with logged_warning(r"dropped 1 code\(s\) outside \[0, 64\)"):  # base.repair_codes: a stream drops it
        assert tok.decode([1, 2, 999]).shape == (2 * tok.hop,)
    for n in (1, 2, 3):  # the shortest spans a model emits (a 1-code reply crashed Griffin-Lim's padding)
        w = tok.decode(codes[0][:n])
        assert w.shape == (n * tok.hop,) and np.isfinite(w).all()


def test_flatten_roundtrip_and_repair():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2048, (4, 7))
    flat = flatten_frame_major(codes, 2048)
    assert flat[:4].tolist() == [codes[0, 0], codes[1, 0] + 2048, codes[2, 0] + 4096, codes[3, 0] + 6144]
    back = unflatten_frame_major(flat, 4, 2048)
    assert back.ok and np.array_equal(back.codes, codes)
    swapped = flat.copy()
    swapped[[5, 6]] = swapped[[6, 5]]  # frame 1: layers 1 and 2 out of their slots; then 2 tokens of an incomplete frame
    res = unflatten_frame_major(np.concatenate([swapped, flat[:2]]), 4, 2048)
    assert res.codes.shape == (4, 6) and res.repaired == 4 + 2 and np.array_equal(res.codes[:, 1:], codes[:, 2:])


def test_media_images(tmp_path):
    from PIL import Image

    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))
    rgba.save(tmp_path / "t.png")
    img = media.load_image(tmp_path / "t.png", 16)
    assert img.mode == "RGB" and img.size == (16, 16) and img.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    half = Image.new("RGB", (40, 20), (0, 0, 0))
    half.paste((255, 255, 255), (20, 0, 40, 20))
    half.save(tmp_path / "h.png")
    crop = media.load_image(tmp_path / "h.png", 10, policy="center-crop")
    assert crop.size == (10, 10) and crop.getpixel((0, 5))[0] < 50 and crop.getpixel((9, 5))[0] > 200
    with pytest.raises(MediaError, match="more than the limit"):
        media.load_image(tmp_path / "h.png", 10, max_pixels=100)
    with pytest.raises(ValueError, match="unknown resize policy"):
        media.load_image(tmp_path / "h.png", 10, policy="stretch")
    (tmp_path / "x.png").write_bytes((tmp_path / "h.png").read_bytes()[:60])
    with pytest.raises(MediaError, match=r"x.png: not a readable image"):
        media.load_image(tmp_path / "x.png")
    out = media.save_image(crop, tmp_path / "out" / "c.png")
    assert Image.open(out).size == (10, 10)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_media_audio_formats_downmix_resample(tmp_path, fmt):
    rng = np.random.default_rng(0)
    stereo = np.stack([vowel(rng, 0.5, 44100), np.zeros(22050, np.float32)], 1)
    sf.write(tmp_path / f"a.{fmt}", stereo, 44100)
    wav = media.load_audio(tmp_path / f"a.{fmt}", 16000)
    assert wav.dtype == np.float32 and abs(wav.size - 8000) < 1200  # mp3 adds encoder delay
    ref = media.resample(stereo.mean(1), 44100, 16000)
    if fmt in ("wav", "flac"):
        assert np.allclose(wav, ref, atol=1e-3)  # downmix = channel mean, torchaudio resample
    with pytest.raises(MediaError, match="longer than the limit 0.1 s"):
        media.load_audio(tmp_path / f"a.{fmt}", 16000, max_seconds=0.1)


def test_media_audio_save_is_atomic_pcm(tmp_path):
    p = media.save_audio(torch.tensor([0.0, 0.5, 2.0, float("nan")]), 16000, tmp_path / "o.wav")
    data, sr = sf.read(p)
    assert sr == 16000 and np.allclose(data, [0, 0.5, 1.0, 0], atol=1e-4)
    assert not list(tmp_path.glob(".*.tmp"))
