"""A corpus of hostile media files, generated here: each gets a clear error naming the file, or a
bounded, documented treatment; the tokenize job records every rejected one in errors.jsonl with
its reason and tokenizes the rest.

Treatments (see docs/reliability.md): an image's content decides its format, not its extension
(a JPEG named .png loads); audio with many channels is averaged to mono (8 channels included);
a WAV header that claims more data than the file holds is read as the data that is there."""

from __future__ import annotations

import functools
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from modality_fixtures import shape_image, vowel  # noqa: E402

from anygpt.modality.media import load_audio, load_image  # noqa: E402
from anygpt.modality.base import MediaError  # noqa: E402
from anygpt.jobs.tokenize_media import tokenize_manifest  # noqa: E402

pytestmark = pytest.mark.faults

SR = 16000


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width × height`` RGB pixels, with a tiny compressed body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def jpeg_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def jpeg_bomb(img) -> bytes:
    """A real JPEG whose SOF0 header is patched to claim 65000 × 65000 pixels."""
    data = bytearray(jpeg_bytes(img))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def wav_header(channels: int, rate: int, data_bytes: int) -> bytes:
    block = channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16) + b"data" + struct.pack("<I", data_bytes))


def encoded(wav: np.ndarray, fmt: str, subtype: str | None = None, rate: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def hour_of_silence_flac() -> bytes:
    """One hour of 8 kHz silence: ~90 KB of FLAC whose header says 3600 s."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", 8000, 1, format="FLAC") as f:
        block = np.zeros(800_000, np.float32)
        for _ in range(36):
            f.write(block)
    return buf.getvalue()


def image_corpus(d: Path) -> dict[str, tuple[str, str | None]]:
    """name → (file, expected reason substring or None when it must load)."""
    rng = np.random.default_rng(0)
    img = shape_image(rng)
    png = io.BytesIO()
    img.save(png, format="PNG")
    png = png.getvalue()
    jpg = jpeg_bytes(img)
    files = {
        "trunc_png": ("trunc.png", png[: len(png) // 2], "not a readable image"),
        "trunc_png_header": ("trunc_header.png", png[:20], "not a readable image"),
        "trunc_jpg": ("trunc.jpg", jpg[: len(jpg) // 3], "not a readable image"),
        "empty_png": ("empty.png", b"", "not a readable image"),
        "empty_jpg": ("empty.jpg", b"", "not a readable image"),
        "bomb_png": ("bomb.png", png_bomb(100_000, 100_000), "pixels"),  # Pillow's own bomb guard or ours
        "bomb_jpg": ("bomb.jpg", jpeg_bomb(img), "pixels"),
        "wav_as_png": ("sound.png", encoded(vowel(rng, 0.2), "WAV"), "not a readable image"),
        "text_as_jpg": ("notes.jpg", b"hello, I am text\n" * 20, "not a readable image"),
        "jpg_as_png": ("photo_really_jpeg.png", jpg, None),  # content decides: loads
        "zero_width": ("zero.png", png_bomb(0, 10), "not a readable image"),
    }
    out = {}
    for name, (fname, data, reason) in files.items():
        (d / fname).write_bytes(data)
        out[name] = (fname, reason)
    return out


def audio_corpus(d: Path) -> dict[str, tuple[str, str | None]]:
    rng = np.random.default_rng(1)
    v = vowel(rng, 1.0)
    wav, flac = encoded(v, "WAV"), encoded(v, "FLAC")
    nan = v.copy()
    nan[10] = np.nan
    inf = v.copy()
    inf[20] = np.inf
    files = {
        "trunc_wav_header": ("trunc_header.wav", wav[:30], "not a readable audio file"),
        "trunc_flac": ("trunc.flac", flac[: len(flac) // 2], "not a readable audio file"),
        "trunc_flac_header": ("trunc_header.flac", flac[:40], "not a readable audio file"),
        "empty_wav": ("empty.wav", b"", "not a readable audio file"),
        "empty_flac": ("empty.flac", b"", "not a readable audio file"),
        "no_frames": ("no_frames.wav", encoded(np.zeros(0, np.float32), "WAV"), "audio is empty"),
        "zero_channels": ("zero_channels.wav", wav_header(0, SR, 100) + b"\0" * 100, "not a readable audio file"),
        "eight_channels": ("eight.wav", encoded(np.stack([v] * 8, 1), "WAV"), None),  # averaged to mono
        "nan": ("nan.wav", encoded(nan, "WAV", "FLOAT"), "NaN or Inf"),
        "inf": ("inf.wav", encoded(inf, "WAV", "DOUBLE"), "NaN or Inf"),
        "png_as_wav": ("picture.wav", png_bomb(10, 10), "not a readable audio file"),
        "header_claims_hour": ("liar.wav", wav_header(1, SR, 3600 * SR * 2) + b"\0" * 2000, None),  # 1000 samples read
        "too_long": ("six_seconds.wav", encoded(np.zeros(6 * SR, np.float32), "WAV"), "longer than the limit"),
    }
    out = {}
    for name, (fname, data, reason) in files.items():
        (d / fname).write_bytes(data)
        out[name] = (fname, reason)
    (d / "hour.flac").write_bytes(hour_of_silence_flac())
    out["hour_long_flac"] = ("hour.flac", "3600.00 s, longer than the limit")
    return out


def test_hostile_images_fail_clearly(tmp_path):
    for name, (fname, reason) in image_corpus(tmp_path).items():
        path = tmp_path / fname
        if reason is None:
            assert load_image(path, 32).size == (32, 32), name
            continue
        with pytest.raises(MediaError) as e:
            load_image(path, 32)
        assert str(e.value).startswith(f"{path}: ") and reason in str(e.value), (name, str(e.value))


def test_hostile_audio_fails_clearly_or_is_bounded(tmp_path, monkeypatch):
    corpus = audio_corpus(tmp_path)
    for name, (fname, reason) in corpus.items():
        path = tmp_path / fname
        if reason is None:
            wav = load_audio(path, SR, max_seconds=5.0)
            assert wav.ndim == 1 and wav.dtype == np.float32 and np.isfinite(wav).all(), name
            continue
        with pytest.raises(MediaError) as e:
            load_audio(path, SR, max_seconds=5.0)
        assert str(e.value).startswith(f"{path}: ") and reason in str(e.value), (name, str(e.value))
    # the 8-channel file is the average of its channels; the lying header gives only what is there
    v = sf.read(tmp_path / "eight.wav", dtype="float32")[0]
    np.testing.assert_allclose(load_audio(tmp_path / "eight.wav", SR), v.mean(axis=1), atol=1e-6)
    assert load_audio(tmp_path / "liar.wav", SR).size == 1000
    # the hour-long file is refused from its header: nothing is decoded
    monkeypatch.setattr(sf, "read", lambda *a, **k: pytest.fail("decoded an hour of audio to refuse it"))
    with pytest.raises(MediaError, match="longer than the limit"):
        load_audio(tmp_path / "hour.flac", SR, max_seconds=30.0)


def run_job(tmp_path: Path, tok_dir: Path, corpus: dict, good: list[str], sub: str,
            window_seconds: float | None | str = "auto") -> tuple[dict, list[str]]:
    rows = [{"id": name, "path": fname} for name, (fname, _) in corpus.items()] + [{"id": g, "path": g} for g in good]
    man = tmp_path / f"{sub}.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = tokenize_manifest(tok_dir, tmp_path / f"out_{sub}", manifest=man, shard_size=4, max_error_rate=1.0, progress=False,
                            window_seconds=window_seconds)
    assert res.merged and res.items == len(rows)
    errors = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / f"out_{sub}/errors.jsonl").read_text().splitlines()}
    import pyarrow.parquet as pq

    ids = [i for f in sorted((tmp_path / f"out_{sub}").glob("shard-*.parquet")) for i in pq.read_table(f)["id"].to_pylist()]
    assert sorted(ids + list(errors)) == sorted(r["id"] for r in rows)  # nothing lost
    return errors, ids


def test_tokenize_job_records_each_hostile_image(tmp_path, image_tok_dir):
    corpus = image_corpus(tmp_path)
    shape_image(np.random.default_rng(5)).save(tmp_path / "good.png")
    errors, ids = run_job(tmp_path, image_tok_dir, corpus, ["good.png"], "img")
    expected_bad = {n for n, (_, reason) in corpus.items() if reason}
    assert set(errors) == expected_bad and set(ids) == {"good.png", "jpg_as_png"}
    for name in expected_bad:
        assert errors[name]["path"] == corpus[name][0] and corpus[name][1] in errors[name]["reason"], errors[name]


def test_tokenize_job_records_each_hostile_audio(tmp_path, speech_tok_dir):
    corpus = audio_corpus(tmp_path)
    sf.write(tmp_path / "good.wav", vowel(np.random.default_rng(6)), SR)
    # without windows (--no-windows): the over-long files are refused; with them they would be cut
    # into rows (tests/test_long_audio.py), the hour-long one at most max_windows of them
    errors, ids = run_job(tmp_path, speech_tok_dir, corpus, ["good.wav"], "audio", window_seconds=None)
    expected_bad = {n for n, (_, reason) in corpus.items() if reason}
    assert set(errors) == expected_bad
    assert set(ids) == {"good.wav"} | {n for n, (_, reason) in corpus.items() if not reason}
    for name in expected_bad:
        want = corpus[name][1].replace("3600.00 s, ", "")  # the card's limit is 5 s
        assert errors[name]["path"] == corpus[name][0] and want in errors[name]["reason"], errors[name]
