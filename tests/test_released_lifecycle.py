"""A released AnyGPT-chat checkpoint through every public command a fine-tuning user runs.

released directory (one ``pytorch_model.bin``, slow-tokenizer files on the real LLaMA-2 vocabulary,
``added_tokens.json``, 49,420 rows) → ``anygpt chat --script`` → ``anygpt convert`` (with modality
cards) → ``anygpt build-data --stage sft`` from the released directory → ``anygpt train stage=sft
init_from=…`` on 2 CPU ranks under ZeRO-2 and ZeRO-3 → its export → ``anygpt chat`` again, three
turns whose replies are an image, speech and music decoded to files.

The media tokenizers are the ``demo`` k-means tokenizers (fitted here in seconds; random-weight
SEED-2 / SpeechTokenizer / EnCodec cards would cost minutes per call on this CPU). Only
subprocesses of the public commands are used.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from llama_vocab import write_llama_sentencepiece  # noqa: E402
from make_reference_ids import added_tokens  # noqa: E402
from modality_fixtures import shape_image, vowel  # noqa: E402

pytestmark = pytest.mark.slow


def write_released_chat(d: Path, sp_model: Path) -> None:
    """The fnlp/AnyGPT-chat file layout with a tiny LLaMA: torch.save'd fp32 state dict, slow tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d.mkdir(parents=True)
    shutil.copy(sp_model, d / "tokenizer.model")
    (d / "added_tokens.json").write_text(json.dumps({t: 32000 + i for i, t in enumerate(added_tokens())}, ensure_ascii=False))
    (d / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "legacy": False, "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None, "model_max_length": 4096}))
    cfg = LlamaConfig(vocab_size=49420, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    cfg.save_pretrained(d)
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}))


def fit_cards(root: Path) -> dict[str, Path]:
    from anygpt.modality.kmeans_tokenizer import KMeansImageTokenizer, KMeansMusicTokenizer, KMeansSpeechTokenizer

    rng = np.random.default_rng(0)
    KMeansImageTokenizer.fit([shape_image(rng) for _ in range(12)], root / "image", codebook_size=32, iters=4)
    KMeansSpeechTokenizer.fit([vowel(rng) for _ in range(6)], root / "speech", codebook_size=32, iters=4, max_seconds=5.0)
    KMeansMusicTokenizer.fit([vowel(rng, sr=22050) for _ in range(6)], root / "music", codebook_size=32, iters=4,
                           max_seconds=5.0)
    return {m: root / m for m in ("image", "speech", "music")}


def sft_conversations(path: Path, cards: dict[str, Path]) -> Path:
    """Conversations in the reference's instruction JSONL, media as its token strings (codes from the cards)."""
    from anygpt.modality.base import load_tokenizer
    from anygpt.vocab import VocabLayout

    layout = VocabLayout.from_profile("anygpt-chat", 32000)
    rng = np.random.default_rng(1)
    spans = {}
    for m, item in (("image", shape_image(rng)), ("speech", vowel(rng)), ("music", vowel(rng, seconds=1.0, sr=22050))):
        codes = load_tokenizer(cards[m]).encode([item])[0]
        spans[m] = layout.codes_to_string(m, [int(c) for c in codes])
    convs = [
        [{"role": "user", "message": "Draw a red circle."}, {"role": "assistant", "message": f"Here it is. {spans['image']}"}],
        [{"role": "user", "message": f"{spans['speech']} Please recognize the voice command and give reply and voice"},
         {"role": "assistant", "message": f"<-Ins-> say hello\n <-Res-> Hello. {spans['speech']}"}],
        [{"role": "user", "message": "Play a calm tune."}, {"role": "assistant", "message": spans["music"]},
         {"role": "user", "message": "Describe it."}, {"role": "assistant", "message": "A calm tune."}],
    ]
    path.write_text("".join(json.dumps({"id": i, "conversation": [c]}, ensure_ascii=False) + "\n" for i, c in enumerate(convs * 8)))
    return path


def test_released_chat_checkpoint_fine_tunes_and_chats_in_every_modality(tmp_path, cli):
    from anygpt.train.launch import launch

    released = tmp_path / "models" / "anygpt" / "chat"
    write_released_chat(released, write_llama_sentencepiece(tmp_path / "llama2" / "tokenizer.model"))
    cards = fit_cards(tmp_path / "cards")

    # 1. the released directory chats as it is (text only: it ships no modality tokenizers)
    script = tmp_path / "hello.jsonl"
    script.write_text(json.dumps({"text": "hello, how are you?"}) + "\n" + json.dumps({"text": "and now?"}) + "\n")
    proc = cli("chat", "--model", released, "--script", script, "--transcript", tmp_path / "t1.jsonl",
               "--set", "max_new_tokens=4", "--out", tmp_path / "media1")
    assert "template anygpt-chat@1, preset reference" in proc.stderr  # the released model gets the reference preset
    assert len((tmp_path / "t1.jsonl").read_text().splitlines()) == 2

    # 2. convert, attaching the cards
    conv = tmp_path / "converted"
    cli("convert", "--model", released, "--out", conv, *[a for m, c in cards.items() for a in ("--card", f"{m}={c}")])
    assert (conv / "tokenizer.model").exists() and json.loads((conv / "tokenizer_config.json").read_text())["legacy"] is False

    # 3. SFT data straight from the released directory (its layout detected)
    data = tmp_path / "sft"
    proc = cli("build-data", "--stage", "sft", "--conversations", sft_conversations(tmp_path / "convs.jsonl", cards),
               "--tokenizer", released, "--out", data)
    assert "24 samples" in proc.stdout and "template anygpt-chat" in proc.stdout

    # 4. stage sft from the converted bundle, 2 ranks, ZeRO-2 then ZeRO-3; each run exports a bundle
    exports = {}
    for stage in (2, 3):
        out = tmp_path / f"run_z{stage}"
        recipe = tmp_path / f"sft_z{stage}.yaml"
        recipe.write_text(yaml.safe_dump({
            "out_dir": str(out), "stage": "sft", "init_from": str(conv), "steps": 2, "seed": 0,
            "data": {"train": [str(data)], "seq_len": 256},
            "optim": {"lr": 1e-3, "warmup_steps": 1},
            "deepspeed": {"zero_stage": stage, "precision": "fp32", "micro_batch_size": 2, "grad_accum": 1},
            "checkpoint": {"every": 0}, "log": {"every": 1, "tensorboard": False},
            "export": {"cards": {m: str(c) for m, c in cards.items()}},
        }))
        run = launch(recipe, nproc=2, timeout=900)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert sum(r["split"] == "train" for r in recs) == 2
        exports[stage] = out / "export"
        assert (exports[stage] / "tokenizer.model").exists()  # the reference's ids survive the export

    # 5. the fine-tuned model chats again, multi-turn, with image, speech and music replies decoded to files
    turns = tmp_path / "turns.jsonl"
    turns.write_text("".join(json.dumps(t) + "\n" for t in (
        {"text": "Draw a red circle.", "output": "image"},
        {"text": "Say hello.", "output": "speech"},
        {"text": "Play a calm tune.", "output": "music"},
    )))
    for stage, export in exports.items():
        transcript = tmp_path / f"t_z{stage}.jsonl"
        cli("chat", "--model", export, "--script", turns, "--transcript", transcript, "--preset", "greedy",
            "--force-start", "--set", "max_new_tokens=40", "--out", tmp_path / f"media_z{stage}")
        rows = [json.loads(x) for x in transcript.read_text().splitlines()]
        assert [r["turn"] for r in rows] == [1, 2, 3] and not any("error" in r for r in rows)
        got = [[m["modality"] for m in r["media"]] for r in rows]
        assert got == [["image"], ["speech"], ["music"]], rows
        for r in rows:
            path = Path(r["media"][0]["path"])
            assert path.is_file() and path.stat().st_size > 100
