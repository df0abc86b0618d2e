"""Released AnyGPT checkpoint layouts (fnlp/AnyGPT-base, fnlp/AnyGPT-chat) load, convert and chat.

The fixture writes a tiny model exactly as the release ships it: one fp32 ``pytorch_model.bin``
(``torch.save`` of the state dict), a slow LLaMA tokenizer (``tokenizer.model`` +
``tokenizer_config.json`` + ``special_tokens_map.json``) with the reference's added tokens in
``added_tokens.json``, ``config.json`` and ``generation_config.json``; no anygpt_* files.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from anygpt.cli.convert import convert
from anygpt.data.reference_text import encoder_for
from anygpt.data.templates import MMGPT_SYSTEM, Message
from anygpt.model.bundle import load_bundle
from anygpt.vocab import VocabLayout

SPECIAL = {"__type": "AddedToken", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
BASE_VOCAB = 300


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory) -> Path:
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("refsp")
    words = "a the red green blue hello world how are you picture read this text music speech image one two".split()
    rng = random.Random(0)
    (d / "corpus.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(10)) for _ in range(2000)))
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=BASE_VOCAB,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1, byte_fallback=True,
                                   minloglevel=2)
    return d / "sp.model"


def write_reference_checkpoint(d: Path, sp_model: Path, profile: str) -> dict:
    """A tiny LLaMA in the released directory layout; returns its state dict."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d.mkdir(parents=True)
    shutil.copy(sp_model, d / "tokenizer.model")
    layout = VocabLayout.from_profile(profile, BASE_VOCAB)
    added = {t: BASE_VOCAB + i for i, t in enumerate(layout.added_tokens())}
    (d / "added_tokens.json").write_text(json.dumps(added, ensure_ascii=False))
    (d / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False, "legacy": False,
        "bos_token": {**SPECIAL, "content": "<s>"}, "eos_token": {**SPECIAL, "content": "</s>"},
        "unk_token": {**SPECIAL, "content": "<unk>"}, "pad_token": None, "model_max_length": 1000000000000000019884624838656,
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
    }))
    cfg = LlamaConfig(vocab_size=layout.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    cfg.save_pretrained(d)
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}))
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def chat_ckpt(tmp_path_factory, sp_model):
    d = tmp_path_factory.mktemp("released") / "AnyGPT-chat"
    return d, write_reference_checkpoint(d, sp_model, "anygpt-chat")


def test_released_chat_checkpoint_loads_with_reference_layout_and_chat_format(chat_ckpt):
    d, sd = chat_ckpt
    b = load_bundle(d)
    assert b.layout.profile == "anygpt-chat" and b.template.name == "anygpt-chat"
    assert all(torch.equal(v, sd[k]) for k, v in b.model.state_dict().items())
    ids = b.tokenizer("<soim><👀12><👀7><eoim>", add_special_tokens=False).input_ids
    assert ids == b.layout.span_ids("image", [12, 7])  # the tokenizer agrees with the layout's arithmetic
    assert b.tokenizer.convert_tokens_to_ids("<-Ins->") == b.layout.token_id("<-Ins->") == BASE_VOCAB + 17419
    prompt = b.template.render([Message("user", "hello")], b.tokenizer, b.layout, loss_on="none", add_generation_prompt=True)
    # the reference's whole-string ids (legacy=False, as this config says): `[MMGPT]` then `:` without `▁`
    ref = encoder_for(b.tokenizer)
    assert ref is not None and not ref.legacy
    assert prompt.input_ids == ref.encode(MMGPT_SYSTEM + "\n[Human]: hello<eoh>\n[MMGPT]:")
    assert prompt.input_ids[-2:] == [b.layout.token_id("[MMGPT]"), *ref._sp.encode(":")]  # continues as MMGPT
    assert prompt.input_ids.count(b.layout.token_id("[Human]")) == 1
    assert b.layout.token_id("<eoh>") in prompt.input_ids


def test_released_base_checkpoint_gets_the_pretraining_prompt(tmp_path, sp_model):
    write_reference_checkpoint(tmp_path / "AnyGPT-base", sp_model, "anygpt")
    b = load_bundle(tmp_path / "AnyGPT-base")
    assert b.layout.profile == "anygpt" and b.layout.vocab_size == BASE_VOCAB + 17418
    assert b.template.name == "anygpt-pretrain"


def test_pickle_payload_in_pytorch_model_bin_is_refused(tmp_path, sp_model):
    d = tmp_path / "evil"
    write_reference_checkpoint(d, sp_model, "anygpt-chat")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    sd = torch.load(d / "pytorch_model.bin", weights_only=True)
    sd["model.norm.weight"] = Payload()
    torch.save(sd, d / "pytorch_model.bin")
    torch.load(d / "pytorch_model.bin", weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(Exception) as err:
        load_bundle(d)
    assert "weights_only" in str(err.value) or "Unpickl" in type(err.value).__name__
    assert not marker.exists()


def test_convert_writes_sharded_bf16_safetensors_bundle(chat_ckpt, tmp_path, cli):
    from safetensors import safe_open

    d, sd = chat_ckpt
    out = tmp_path / "bundle"
    proc = cli("convert", "--model", d, "--out", out, "--max-shard-size", "300KB")
    assert "template anygpt-chat" in proc.stdout
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").exists()
    assert not list(out.glob("*.bin"))
    with safe_open(str(shards[0]), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    b = load_bundle(out)
    assert (out / "anygpt_layout.json").exists() and (out / "anygpt_template.json").exists()
    assert b.layout.profile == "anygpt-chat" and b.template.name == "anygpt-chat"
    assert all(torch.equal(v, sd[k].to(torch.bfloat16).float()) for k, v in b.model.state_dict().items())
    text = "[Human]: hi<eoh> [MMGPT]: <sosp><🗣️3><🗣️1023><eosp><eos>"
    assert b.tokenizer(text).input_ids == load_bundle(d, with_tokenizers=False).tokenizer(text).input_ids
    with pytest.raises(ValueError, match="not empty"):
        convert(d, out)


def test_reference_checkpoint_chats_through_the_script_mode(chat_ckpt, tmp_path, cli):
    pytest.importorskip("anygpt.inference.chat", reason="anygpt chat not in this checkout yet")
    d, _ = chat_ckpt
    script = tmp_path / "turns.jsonl"
    script.write_text(json.dumps({"text": "hello, how are you?"}) + "\n" + json.dumps({"text": "read this text", "output": "text"}) + "\n")
    transcript = tmp_path / "out.jsonl"
    cli("chat", "--model", d, "--script", script, "--transcript", transcript, "--preset", "greedy",
        "--set", "max_new_tokens=6", "--out", tmp_path / "media")
    rows = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["turn"] < rows[1]["turn"]  # one transcript line per turn, history kept
    assert all(isinstance(r["raw"], str) and isinstance(r["text"], str) for r in rows)


def test_reference_cards_in_tokenizers_folder_parse(repo_root):
    """The shipped cards name registered backends and the reference's models/ layout."""
    from anygpt.modality.base import load_card

    seed = load_card(repo_root / "tokenizers" / "seed2.yaml")
    assert (seed.backend, seed.modality) == ("seed2", "image")
    assert seed.path("checkpoint").resolve() == repo_root.resolve() / "models" / "seed-tokenizer-2" / "seed_quantizer.pt"
    assert (seed.settings["guidance_scale"], seed.settings["num_inference_steps"]) == (10, 20)
    speech = load_card(repo_root / "tokenizers" / "speechtokenizer_soundstorm.yaml")
    assert (speech.backend, speech.modality, speech.settings["checkpoint"]) == ("speechtokenizer", "speech", "ckpt.dev")
    assert speech.path("soundstorm").name == "speechtokenizer_soundstorm_mls.pt"
    assert speech.settings["soundstorm_steps"] == 3
