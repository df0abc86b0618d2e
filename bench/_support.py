"""Shared set-up for the benchmarks (not a benchmark: `bench/run_all` skips names starting with "_")."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence


def tiny_base_tokenizer(d: Path, words: Sequence[str], lines: int = 2000, words_per_line: int = 10,
                        vocab_size: int = 320, byte_fallback: bool = True, hard_vocab_limit: bool = True) -> Any:
    """A small BPE sentencepiece model trained on random lines of ``words`` (seeded, so every run
    gets the same tokenizer), saved as ``d/sp.model`` and loaded as the base tokenizer the stack grows."""
    import sentencepiece as spm

    from anygpt.vocab import load_base_tokenizer

    rng = random.Random(0)
    (d / "corpus.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(words_per_line)) for _ in range(lines)))
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=vocab_size,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1, byte_fallback=byte_fallback,
                                   hard_vocab_limit=hard_vocab_limit, minloglevel=2)
    return load_base_tokenizer(d / "sp.model")


def grown_tokenizer_dir(d: Path, tok: Any, profile: str = "anygpt", sizes: dict[str, int] | None = None) -> tuple[Path, Any]:
    """Grow ``tok`` with ``profile`` and save tokenizer + layout as ``d/tok``; ``(dir, layout)``."""
    from anygpt.vocab import VocabLayout

    layout = VocabLayout.from_profile(profile, len(tok), sizes)
    layout.grow_tokenizer(tok)
    tok.save_pretrained(str(d / "tok"))
    layout.save(d / "tok")
    return d / "tok", layout
