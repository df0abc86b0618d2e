"""Test-only modality backends and a tiny model bundle for the inference tests.

``test-image`` maps 4 codes to a 2×2 grid of palette colours; ``test-audio`` maps codes to sine
tones (``n_q`` layers frame-major: layer 0 = pitch, others = loudness). They are real encoders and
decoders (a file round-trips to recognisable codes), just tiny, and read and write files through
the package's media I/O (the protocol's default ``load_media``/``save_media``). ``make_bundle``
builds a random 2-layer Llama grown with a ``default``-profile layout, saved as an exported bundle
directory. To use the real ``demo`` tokenizers instead, pass their card dirs (the conftest
fixtures) as ``cards=`` to :func:`make_bundle` (sizes are read from the tokenizers).

Run as a script, it registers the backends and then runs ``anygpt`` (for child processes)::

    python tests/infer_support.py serve --model DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from anygpt.modality.base import CodeLayout, ModalityTokenizer, TokenizerCard, _REGISTRY, register_backend

LEVELS = np.array([0, 85, 170, 255])


def _register(name):
    def deco(cls):
        return _REGISTRY[name] if name in _REGISTRY else register_backend(name)(cls)
    return deco


@_register("test-image")
class GridImageTokenizer(ModalityTokenizer):
    """A 2×2 grid of 16 palette colours (red level × green level; blue fixed)."""

    modality = "image"
    codebook_size = 16
    tokens_per_item = 4
    image_size = 16
    code_layout = CodeLayout(1, 16, 4)

    def encode(self, batch):
        out = []
        for im in batch:
            a = np.asarray(im, dtype=np.float64).reshape(2, 8, 2, 8, 3).mean(axis=(1, 3))  # (2, 2, 3)
            r = np.abs(a[..., 0:1] - LEVELS).argmin(-1)
            g = np.abs(a[..., 1:2] - LEVELS).argmin(-1)
            out.append((r * 4 + g).reshape(-1).astype(np.int64))
        return out

    def decode(self, codes):
        from PIL import Image

        c = np.zeros(4, dtype=np.int64)
        got = np.asarray(list(codes)[:4], dtype=np.int64) % 16
        c[: len(got)] = got
        grid = np.zeros((2, 2, 3), dtype=np.uint8)
        grid[..., 0] = LEVELS[c // 4].reshape(2, 2)
        grid[..., 1] = LEVELS[c % 4].reshape(2, 2)
        grid[..., 2] = 128
        return Image.fromarray(grid).resize((64, 64), Image.NEAREST)


@_register("test-audio")
class ToneAudioTokenizer(ModalityTokenizer):
    """Sine tones, 25 frames/s at 8 kHz; ``n_q`` and ``layer_size`` come from the card."""

    modality = ""
    any_modality = True
    sample_rate = 8000
    hop = 320

    def __init__(self, card: TokenizerCard | None = None, device=None):
        super().__init__(card, device)
        s = card.settings if card else {}
        self.modality = card.modality if card else "speech"
        self.n_q = int(s.get("n_q", 1))
        self.layer_size = int(s.get("layer_size", 8))
        self.codebook_size = self.n_q * self.layer_size
        self.max_seconds = float(s.get("max_seconds", 10))
        self.frames_per_second = self.sample_rate / self.hop

    @property
    def code_layout(self):
        return CodeLayout(self.n_q, self.layer_size)

    def _pitch(self, code):
        return 200.0 + 100.0 * code

    def encode(self, batch):
        out = []
        for wav in batch:
            T = max(1, len(wav) // self.hop)
            codes = np.zeros((self.n_q, T), dtype=np.int64)
            for t in range(T):
                fr = wav[t * self.hop:(t + 1) * self.hop]
                spec = np.abs(np.fft.rfft(fr, n=self.hop))
                freq = spec.argmax() * self.sample_rate / self.hop
                codes[0, t] = int(np.clip(round((freq - 200) / 100), 0, self.layer_size - 1))
                amp = float(np.abs(fr).max()) if len(fr) else 0.0
                for q in range(1, self.n_q):
                    codes[q, t] = int(np.clip(round(amp * 2 * self.layer_size) - 1, 0, self.layer_size - 1))
            from anygpt.modality.flatten import flatten_frame_major

            out.append(flatten_frame_major(codes, self.layer_size))
        return out

    def decode(self, codes):
        from anygpt.modality.flatten import unflatten_frame_major

        u = unflatten_frame_major(codes, self.n_q, self.layer_size)
        t = np.arange(self.hop) / self.sample_rate
        frames = []
        for f in range(u.codes.shape[1]):
            amp = 0.5 if self.n_q == 1 else (u.codes[1, f] + 1) / (2 * self.layer_size)
            frames.append(amp * np.sin(2 * np.pi * self._pitch(u.codes[0, f]) * t))
        return (np.concatenate(frames) if frames else np.zeros(self.hop)).astype(np.float32)


def write_cards(root: Path) -> dict[str, Path]:
    """Card directories for image (test-image), speech (test-audio, 1 layer) and music (2 layers)."""
    cards = {
        "image": TokenizerCard("test-image", "image", root / "image"),
        "speech": TokenizerCard("test-audio", "speech", root / "speech", {"n_q": 1, "layer_size": 8, "max_seconds": 5}),
        "music": TokenizerCard("test-audio", "music", root / "music", {"n_q": 2, "layer_size": 8, "max_seconds": 5}),
    }
    out = {}
    for m, card in cards.items():
        card.root.mkdir(parents=True, exist_ok=True)
        card.save(card.root)
        out[m] = card.root
    return out


def make_bundle(out: Path, base_tokenizer_dir: Path, cards: dict[str, Path] | None = None,
                generation: dict | None = None, seed: int = 0, profile: str = "default",
                template: str = "chat", sizes: dict[str, int] | None = None) -> Path:
    """Save a tiny random Llama (hidden 64, 2 layers) grown with a layout (``default`` profile and
    our ``chat`` template unless told otherwise, e.g. ``anygpt`` + ``anygpt-pretrain``) as a bundle."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from anygpt.data.templates import get_template
    from anygpt.model.bundle import save_bundle_extras
    from anygpt.modality.base import load_tokenizer
    from anygpt.vocab import VocabLayout, load_base_tokenizer

    cards = cards or write_cards(out.parent / (out.name + "_cards"))
    sizes = sizes or {m: load_tokenizer(c).code_layout.n_codes for m, c in cards.items()}
    tok = load_base_tokenizer(base_tokenizer_dir)
    layout = VocabLayout.from_profile(profile, len(tok), sizes)
    layout.grow_tokenizer(tok)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=layout.base_vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    layout.grow_model(model)
    model.save_pretrained(out, safe_serialization=True)
    save_bundle_extras(out, tok, layout, get_template(template), cards, generation)
    return out


def write_example_media(root: Path) -> dict[str, Path]:
    """A small png (2×2 colour grid, 32×32) and a short wav (0.4 s tone at 8 kHz)."""
    import soundfile as sf
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    grid = np.array([[[255, 0, 128], [0, 255, 128]], [[255, 255, 128], [0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(grid).resize((32, 32), Image.NEAREST).save(root / "grid.png")
    t = np.arange(3200) / 8000
    sf.write(str(root / "tone.wav"), (0.4 * np.sin(2 * np.pi * 500 * t)).astype(np.float32), 8000)
    return {"image": root / "grid.png", "audio": root / "tone.wav"}


if __name__ == "__main__":
    from anygpt.cli import main

    sys.exit(main(sys.argv[1:]))
