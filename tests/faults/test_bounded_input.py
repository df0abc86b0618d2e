"""Hostile input that used to cost unbounded time or memory, hang, or pass silently (issue 19):
a sample rate that shares no factor with the target (a resampling bomb), a header claiming
hundreds of MHz, a FIFO named in a manifest, NaN pixels, and a layout whose markers collide
with role markers. Each gets a ``MediaError`` / ``ValueError`` naming the file, or a bounded
treatment (see docs/reliability.md)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from modality_fixtures import write_images, write_manifest  # noqa: E402

from anygpt.modality.media import load_audio, load_image  # noqa: E402
from anygpt.modality.base import MediaError  # noqa: E402

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]


def wav_header_claiming(rate: int, n_samples: int = 50) -> bytes:
    """A 16-bit mono PCM WAV whose header says ``rate`` Hz over ``n_samples`` real samples."""
    data = (np.sin(np.arange(n_samples) / 3.0) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2 % 2**32, 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


def test_coprime_rate_resamples_in_bounded_memory(tmp_path, child_env):
    """A 1 s tone at 22,051 Hz (no common factor with 16 kHz) used to need several GB: resampled in
    a child whose address space is capped at +1.5 GB, it keeps its length and its pitch."""
    sr, f0 = 22051, 440.0
    t = np.arange(sr) / sr
    sf.write(tmp_path / "odd.wav", (0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr)
    code = textwrap.dedent(f"""
        import resource, sys, numpy as np, torch, torchaudio
        from anygpt.modality.media import load_audio
        vm = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + 1_500_000_000, resource.RLIM_INFINITY))
        w = load_audio({str(tmp_path / 'odd.wav')!r}, 16000)
        spec = np.abs(np.fft.rfft(w))
        print(len(w), np.argmax(spec) * 16000 / len(w))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n, peak = proc.stdout.split()
    assert abs(int(n) - 16000) <= 2
    assert abs(float(peak) - f0) <= 1.0


@pytest.mark.parametrize("rate", [250_000_000, 2_147_483_647, 200])
def test_absurd_header_rate_is_a_media_error(tmp_path, rate):
    p = tmp_path / f"r{rate}.wav"
    p.write_bytes(wav_header_claiming(rate))
    with pytest.raises(MediaError, match=r"r\d+\.wav: sample rate .* outside the supported range"):
        load_audio(p, 16000)


def test_fifo_in_manifest_is_refused_not_hung(tmp_path, image_tok_dir, child_env):
    """A manifest row naming a FIFO used to block the loader forever; now it is one error row."""
    imgs = write_images(tmp_path / "img", 3)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    rows = [{"id": f"i{k}", "path": str(p)} for k, p in enumerate(imgs)] + [{"id": "fifo", "path": str(fifo)}]
    man = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "anygpt.cli", "tokenize", "--modality", "image", "--tokenizer",
                           str(image_tok_dir), "--manifest", str(man), "--out", str(out), "--no-progress",
                           "--max-error-rate", "0.5"], cwd=REPO, env=child_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == ["fifo"]
    assert "not a regular file" in errors[0]["reason"]


def test_nan_pixels_are_refused(tmp_path):
    from PIL import Image

    arr = np.full((16, 16), 0.5, dtype=np.float32)
    arr[3, 4] = np.nan
    p = tmp_path / "nan.tif"
    Image.fromarray(arr, "F").save(p)
    with pytest.raises(MediaError, match=r"nan\.tif: image contains NaN or Inf pixels"):
        load_image(p, 32)
    arr[3, 4] = 0.25  # the same file without NaN still loads
    Image.fromarray(arr, "F").save(p)
    assert load_image(p, 32).size == (32, 32)


@pytest.mark.parametrize("field, value, reason", [
    ("start", "<|user|>", "speech start marker <|user|> is also a role marker"),
    ("start", "<soim>", "speech start marker <soim> is also the image start marker"),
])
def test_layout_with_colliding_markers_is_refused(tmp_path, field, value, reason):
    """A layout file whose speech start marker is renamed to a role (or another modality's)
    marker used to load; every span would have opened a user turn."""
    from anygpt.vocab import VocabLayout

    layout = VocabLayout.from_profile("default", 320, {"image": 16, "speech": 8, "music": 0})
    layout.save(tmp_path)
    d = json.loads((tmp_path / "anygpt_layout.json").read_text(encoding="utf-8"))
    next(m for m in d["modalities"] if m["name"] == "speech")[field] = value
    (tmp_path / "anygpt_layout.json").write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"anygpt_layout\.json: invalid vocab layout: .*{reason}".replace("|", r"\|")):
        VocabLayout.load(tmp_path)
