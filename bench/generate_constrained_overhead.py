"""Tokens/s of constrained generation (our ModalityLogitsProcessor) vs plain `generate`, same model and prompts.

A random Llama (hidden 128, 4 layers) with a `default` layout at the reference's codebook sizes
(8192 image, 1024 speech, 8192 music codes: about 17.7k ids), batch 4, greedy, 96 new tokens per
row forced (min_new_tokens) in both runs; the constrained run is forced to speak (a speech span).
Best of 3. Last line: the JSON result (ratio = constrained / plain tokens/s; 1.0 = no overhead).

    python bench/generate_constrained_overhead.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

NEW_TOKENS = 96
BATCH = 4


def build():
    from transformers import LlamaConfig, LlamaForCausalLM

    from anygpt.data.templates import get_template
    from anygpt.model.bundle import Bundle
    from anygpt.vocab import VocabLayout
    from bench._support import tiny_base_tokenizer

    d = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    words = "the a red blue circle square music speech image hello world draw play read".split()
    tok = tiny_base_tokenizer(d, words, words_per_line=8, vocab_size=200, byte_fallback=False, hard_vocab_limit=False)
    layout_base = len(tok)
    layout = VocabLayout.from_profile("default", len(tok))
    layout.grow_tokenizer(tok)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=layout_base, hidden_size=128, intermediate_size=256,
                                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                                         max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    layout.grow_model(model)
    model.eval()
    return Bundle(model, tok, layout, get_template("chat"))


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    from transformers import GenerationConfig

    from anygpt.inference.generation import build_prompt_ids, generate_batch
    from anygpt.inference.settings import GenerationSettings

    torch.set_num_threads(2)
    bundle = build()
    texts = ["read this out loud please", "hello world", "say: draw a red circle on blue", "play music"]
    prompts = [build_prompt_ids(bundle, t, output_modality="speech") for t in texts[:BATCH]]
    T = max(map(len, prompts))
    ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts])
    mask = (torch.arange(T)[None, :] >= torch.tensor([T - len(p) for p in prompts])[:, None]).long()
    plain_cfg = GenerationConfig(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0,
                                 eos_token_id=bundle.layout.end_id("speech"))

    def plain():
        with torch.inference_mode():
            out = bundle.model.generate(input_ids=ids, attention_mask=mask, generation_config=plain_cfg)
        assert out.shape[1] - T == NEW_TOKENS

    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, do_sample=False)
    import anygpt.inference.generation as gen

    orig = gen._generation_config

    def forced_length(*a, **k):  # same length as the plain run: the span may not close early
        cfg = orig(*a, **k)
        cfg.min_new_tokens = NEW_TOKENS
        return cfg

    gen._generation_config = forced_length

    def constrained():
        replies = generate_batch(bundle, prompts, "speech", settings)
        assert all(len(r) >= NEW_TOKENS for r in replies), [len(r) for r in replies]

    plain()
    constrained()  # warm-up
    t_plain = t_cons = float("inf")
    for _ in range(3):  # interleaved, best of 3: the machine is shared, timings are noisy
        t_plain, t_cons = min(t_plain, timed(plain)), min(t_cons, timed(constrained))
    n = NEW_TOKENS * BATCH
    ours, base = n / t_cons, n / t_plain
    print(f"vocab {bundle.model.config.vocab_size}, batch {BATCH}, {NEW_TOKENS} new tokens: "
          f"constrained {t_cons:.3f} s, plain {t_plain:.3f} s")
    print(json.dumps({"bench": "generate_constrained_overhead", "ours": round(ours, 1), "baseline": round(base, 1),
                      "ratio": round(ours / base, 3), "unit": "tokens/s", "better": "higher"}))


if __name__ == "__main__":
    main()
