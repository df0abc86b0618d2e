"""A tiny model bundle and small example media for the inference tests.

``make_bundle`` builds a random 2-layer Llama grown with a ``default``-profile layout for the
tokenizer cards it is given (real cards: the conftest's ``demo_cards`` k-means tokenizers, or the
random-weight EnCodec card), saved as an exported bundle directory; code counts are read from the
tokenizers loaded through their cards, as ``anygpt vocab`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_bundle(out: Path, base_tokenizer_dir: Path, cards: dict[str, Path],
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
