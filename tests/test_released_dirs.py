"""A released AnyGPT directory used directly by `anygpt vocab` and `anygpt build-data`, the reference's
instruction pools, and the reference chat's composition and presets.

The released directory is the tiny one of ``test_compat_checkpoint`` (one ``pytorch_model.bin``,
slow-tokenizer files, ``added_tokens.json``, no ``anygpt_*`` files); the instruction pools are read
from files in the reference's module format (``tests/data/reference_instructions``).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from anygpt.data.instructions import load_instruction_pools, save_instruction_pools
from anygpt.data.templates import SPEECH_INSTRUCTION, MediaCodes, get_template
from anygpt.inference.settings import default_preset, resolve_settings

sys.path.insert(0, str(Path(__file__).parent))
from test_compat_checkpoint import write_reference_checkpoint  # noqa: E402

DATA = Path(__file__).parent / "data"
POOLS = DATA / "reference_instructions"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("rel")
    words = "a the red green blue hello world how are you picture read this text music speech image one two".split()
    rng = random.Random(0)
    (d / "corpus.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(10)) for _ in range(2000)))
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=300,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1, byte_fallback=True,
                                   minloglevel=2)
    out = d / "AnyGPT-chat"
    write_reference_checkpoint(out, d / "sp.model", "anygpt-chat")
    return out


def test_reference_instruction_modules_load_from_folder_file_and_json_export(tmp_path):
    pools = load_instruction_pools(POOLS)
    assert pools[("image", "x2t")][0] == "Tell me in one line what this photograph contains."
    assert len(pools[("image", "x2t")]) == 3 and len(pools[("image", "t2x")]) == 2
    assert ("audio", "t2x") in pools  # the reference's extra modality is kept, unused
    assert load_instruction_pools(POOLS / "text2other_instructions.py") == {k: v for k, v in pools.items() if k[1] == "t2x"}
    # a checkout of the reference repository: the modules sit in anygpt/src/m_utils/
    checkout = tmp_path / "AnyGPT" / "anygpt" / "src" / "m_utils"
    checkout.mkdir(parents=True)
    for f in POOLS.glob("*.py"):
        (checkout / f.name).write_text(f.read_text())
    assert load_instruction_pools(tmp_path / "AnyGPT") == pools
    # the converter: module files → JSON export → the same pools
    assert load_instruction_pools(save_instruction_pools(pools, tmp_path / "pools.json")) == pools


def test_bad_instruction_files_fail_with_one_line_naming_the_file(tmp_path):
    evil = tmp_path / "other2text_instructions.py"
    evil.write_text("import os\nother2text_instructions = {'image': [os.getcwd()]}\n")
    with pytest.raises(ValueError, match=r"other2text_instructions.py: other2text_instructions is not a plain literal"):
        load_instruction_pools(evil)  # parsed, never run
    bad = tmp_path / "pools.json"
    bad.write_text(json.dumps({"x2t": {"image": []}}))
    with pytest.raises(ValueError, match=r"pools.json: x2t instructions for 'image' must be a non-empty list"):
        load_instruction_pools(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no other2text_instructions.py or text2other_instructions.py"):
        load_instruction_pools(tmp_path / "empty")


@pytest.mark.slow  # two subprocesses each load a 17,720-entry tokenizer (about 2 minutes on a busy 2-core machine)
def test_vocab_and_build_data_take_a_released_directory_with_the_reference_pools(released, tmp_path, cli):
    proc = cli("vocab", "--base", released, "--out", tmp_path / "grown")
    assert "profile anygpt-chat" in proc.stdout and "(17720 tokens" in proc.stdout
    assert (tmp_path / "grown" / "anygpt_layout.json").exists() and (tmp_path / "grown" / "tokenizer.model").exists()
    assert json.loads((tmp_path / "grown" / "tokenizer_config.json").read_text())["legacy"] is False  # carried over

    out = tmp_path / "pt"
    proc = cli("build-data", "--stage", "pretrain", "--tokenizer", released, "--out", out, "--instructions", POOLS,
               "--anygpt-jsonl", DATA / "anygpt_pretrain_image.jsonl", "--both-directions")
    assert "template anygpt-pretrain" in proc.stdout
    from datasets import load_from_disk

    from anygpt.vocab import load_base_tokenizer

    ds = load_from_disk(str(out))
    tok = load_base_tokenizer(released)
    pools = load_instruction_pools(POOLS)
    texts = [tok.decode(r["input_ids"]) for r in ds]
    assert len(texts) == 6
    for text, direction in zip(texts, ds["direction"]):
        assert any(p in text for p in pools[("image", direction)]), text  # drawn from the given pools
    info = json.loads((out / "anygpt_data.json").read_text())
    assert info["instructions"]["path"] == str(POOLS) and info["instructions"]["pools"]["image/x2t"] == 3


def test_reference_chat_composes_media_and_text_as_the_reference():
    t = get_template("anygpt-chat")
    img, sp, mu = MediaCodes("image", [1]), MediaCodes("speech", [2]), MediaCodes("music", [3])
    # images, music, speech, each followed by a space, then the text; the voice-command suffix with speech
    assert t.compose_user([sp, img, mu], "Do this.") == [img, " ", mu, " ", sp, " ", "Do this.", " " + SPEECH_INSTRUCTION]
    assert t.compose_user([sp], "") == [sp, " ", " " + SPEECH_INSTRUCTION]  # "{sp}  Please…": its double space
    assert t.compose_user([img], "") == [img]  # stripped
    assert t.compose_user([], "hello ") == ["hello"]
    assert get_template("chat").compose_user([img], "hi") == [img, "hi"]  # ours: unchanged


def test_reference_preset_distinguishes_the_base_model_and_is_the_default_for_reference_templates():
    chat = resolve_settings("reference", "text")
    base = resolve_settings("reference", "text", base_model=True)
    assert (chat.num_beams, chat.do_sample, chat.max_new_tokens, chat.min_new_tokens) == (5, True, 500, 10)
    assert (base.num_beams, base.do_sample, base.max_new_tokens, base.top_k) == (1, True, 100, 50)
    assert resolve_settings("reference", "music", base_model=True) == resolve_settings("reference", "music")
    assert resolve_settings("reference", "speech").repetition_penalty == 1.05
    assert default_preset(get_template("anygpt-chat")) == default_preset(get_template("anygpt-pretrain")) == "reference"
    assert default_preset(get_template("chat")) == "demo"
    assert not get_template("anygpt-chat").force_start and get_template("chat").force_start


def test_voice_prompt_is_used_whole_unless_the_card_sets_a_trim(tmp_path):
    import numpy as np
    import soundfile as sf

    from anygpt.modality.base import TokenizerCard
    from anygpt.modality.soundstorm import VoiceDecoder, read_voice_prompt

    sf.write(tmp_path / "v.wav", np.zeros(16000 * 7, dtype=np.float32), 16000)
    wav, sr = read_voice_prompt(tmp_path / "v.wav")
    assert len(wav) == 7 * sr
    assert len(read_voice_prompt(tmp_path / "v.wav", 2.5)[0]) == int(2.5 * sr)
    card = TokenizerCard("speechtokenizer", "speech", tmp_path, {"voice_prompt_seconds": "three"})
    with pytest.raises(ValueError, match="voice_prompt_seconds must be a positive number"):
        VoiceDecoder.from_card(TokenizerCard("speechtokenizer", "speech", tmp_path,
                                             {**card.settings, "soundstorm": "missing.pt"}))
