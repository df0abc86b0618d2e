"""Coverage-guided fuzzing (atheris / libFuzzer) of the readers of outside input. Not run in CI.

Each input's first byte picks a target: the image loader (.png / .jpg name), the audio loader
(.wav / .flac name), the token-string parser (strict and lenient) or the JSONL manifest reader.
A target may only fail with its documented error (MediaError, TokenStringError, ValueError);
anything else is a crash that libFuzzer reports with the input that caused it.

    pip install atheris
    PYTHONPATH=. python tests/faults/atheris_media.py -atheris_runs=20000 -max_len=4096 [CORPUS_DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from anygpt.modality.media import load_audio, load_image
    from anygpt.modality.base import MediaError
    from anygpt.utils import read_jsonl
    from anygpt.vocab import TokenStringError, VocabLayout

LAYOUT = VocabLayout.from_profile("anygpt", 32000, {"image": 64, "speech": 32, "music": 16})
WORK = Path(tempfile.mkdtemp(prefix="anygpt-atheris-"))
SUFFIXES = [".png", ".jpg", ".wav", ".flac"]


def one_input(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 6, data[1:]
    if target < 4:
        path = WORK / f"input{SUFFIXES[target]}"
        path.write_bytes(body)
        try:
            if target < 2:
                load_image(path, 16, max_pixels=1 << 22)
            else:
                load_audio(path, 8000, max_seconds=5.0)
        except MediaError:
            pass
    elif target == 4:
        text = body.decode("utf-8", "replace")
        try:
            LAYOUT.parse(text, strict=True)
        except TokenStringError:
            pass
        LAYOUT.parse(text, strict=False)
    else:
        path = WORK / "m.jsonl"
        path.write_bytes(body)
        try:
            for _ in read_jsonl(path):
                pass
        except ValueError as e:
            assert str(path) in str(e), e


def seeds(folder: Path) -> None:
    """Write one valid file per target into ``folder`` (a starting corpus)."""
    import io

    import numpy as np
    import soundfile as sf
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    for i, fmt in enumerate(("PNG", "JPEG")):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        (folder / f"seed{i}").write_bytes(bytes([i]) + buf.getvalue())
    for i, fmt in ((2, "WAV"), (3, "FLAC")):
        buf = io.BytesIO()
        sf.write(buf, np.zeros(400, np.float32), 8000, format=fmt)
        (folder / f"seed{i}").write_bytes(bytes([i]) + buf.getvalue())
    (folder / "seed4").write_bytes(b"\x04a<soim><\xf0\x9f\x91\x8012><eoim>b")
    (folder / "seed5").write_bytes(b'\x05{"id": "a", "path": "x.png"}\n')


if __name__ == "__main__":
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus:
        seeds(Path(corpus[0]))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
