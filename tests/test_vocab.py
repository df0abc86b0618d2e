"""VocabLayout: the reference's exact ids and strings, growth, id arithmetic, parsing, serialisation."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from anygpt.modality.flatten import flatten_frame_major, unflatten_frame_major
from anygpt.vocab import IMAGE_PREFIX, MUSIC_PREFIX, SPEECH_PREFIX, TokenStringError, VocabLayout


def test_anygpt_profile_reproduces_reference_ids_on_llama2_base():
    layout = VocabLayout.from_profile("anygpt", 32000)
    toks = layout.added_tokens()
    assert toks[:4] == ["[Human]", "[MMGPT]", "<eoh>", "<eos>"]
    assert toks[4] == "<\U0001F4400>" and toks[4 + 8191] == "<\U0001F4408191>"
    assert toks[4 + 8192 : 4 + 8194] == ["<soim>", "<eoim>"]
    assert toks[4 + 8194] == "<\U0001F5E3\uFE0F0>"
    assert toks[-2:] == ["<somu>", "<eomu>"]
    assert layout.vocab_size == 49418
    assert layout.base_vocab_size + len(toks) - 1 == 49417
    assert layout.code_range("image") == range(32004, 32004 + 8192)
    assert layout.start_id("image") == 40196 and layout.end_id("image") == 40197
    assert layout.code_range("speech").start == 40198 and layout.end_id("speech") == 41223
    assert layout.code_range("music") == range(41224, 41224 + 8192)
    assert layout.end_id("music") == 49417
    chat = VocabLayout.from_profile("anygpt-chat", 32000)
    assert chat.vocab_size == 49420
    assert chat.token_id("<-Res->") == 49418 and chat.token_id("<-Ins->") == 49419
    assert chat.padded_vocab_size == 49472 and chat.padded_vocab_size % 64 == 0


def test_unknown_profile_and_modality_fail_listing_known():
    with pytest.raises(ValueError, match="known: anygpt"):
        VocabLayout.from_profile("nope", 10)
    with pytest.raises(ValueError, match="unknown modality"):
        VocabLayout.from_profile("default", 10, {"video": 3})


def test_grow_sentencepiece_tokenizer_matches_arithmetic(base_tokenizer):
    n = len(base_tokenizer)
    layout = VocabLayout.from_profile("anygpt-chat", n)
    layout.grow_tokenizer(base_tokenizer)
    assert len(base_tokenizer) == layout.vocab_size
    for tok, want in [("[Human]", n), ("<soim>", layout.start_id("image")), ("<eomu>", layout.end_id("music")),
                      ("<-Ins->", layout.token_id("<-Ins->"))]:
        assert base_tokenizer.convert_tokens_to_ids(tok) == want
    codes = [0, 5, 1023]
    s = layout.codes_to_string("speech", codes)
    # the tokenizer turns the interchange string into exactly the arithmetic ids
    assert base_tokenizer(s, add_special_tokens=False)["input_ids"] == layout.span_ids("speech", codes)
    # growing twice is a no-op; growing a different base fails loudly
    layout.grow_tokenizer(base_tokenizer)
    assert len(base_tokenizer) == layout.vocab_size
    with pytest.raises(ValueError, match="expects a base"):
        VocabLayout.from_profile("anygpt", n + 1).grow_tokenizer(base_tokenizer)


def test_grow_bpe_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "a": 1, "b": 2, "ab": 3}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    layout = VocabLayout.from_profile("default", len(tok), {"image": 16, "speech": 8, "music": 0})
    layout.grow_tokenizer(tok)
    assert layout.modality_names == ["image", "speech"]
    ids = tok(layout.codes_to_string("image", [3, 15]), add_special_tokens=False)["input_ids"]
    assert ids == layout.span_ids("image", [3, 15])
    assert tok.convert_tokens_to_ids("<|assistant|>") == layout.token_id("<|assistant|>")


def test_grow_model_mean_init_and_padding(base_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    n = len(base_tokenizer)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False))
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    layout = VocabLayout.from_profile("default", n, {"image": 100, "speech": 50, "music": 20})
    layout.grow_model(model)
    w_in = model.get_input_embeddings().weight
    w_out = model.get_output_embeddings().weight
    assert w_in.shape[0] == layout.padded_vocab_size and layout.padded_vocab_size % 64 == 0
    assert layout.padded_vocab_size >= layout.vocab_size
    assert torch.equal(w_in[:n], old_in) and torch.equal(w_out[:n], old_out)
    assert torch.allclose(w_in[n:], old_in.mean(0).expand(w_in.shape[0] - n, -1), atol=1e-6)
    assert torch.allclose(w_out[layout.code_range("speech").start], old_out.mean(0), atol=1e-6)
    assert model.config.vocab_size == layout.padded_vocab_size
    # the padding ids belong to no modality range and no marker
    for pad_id in range(layout.vocab_size, layout.padded_vocab_size):
        assert layout.modality_of_id(pad_id) is None and pad_id not in layout.marker_ids()


def test_id_arithmetic_round_trip_every_modality():
    layout = VocabLayout.from_profile("anygpt", 32000)
    rng = random.Random(0)
    for m in layout.modalities:
        codes = [rng.randrange(m.size) for _ in range(200)] + [0, m.size - 1]
        ids = layout.codes_to_ids(m.name, codes)
        assert all(layout.modality_of_id(i) == m.name for i in ids)
        assert layout.ids_to_codes(m.name, ids) == codes
        assert layout.parse(layout.codes_to_string(m.name, codes)) == [(m.name, codes)]
        with pytest.raises(ValueError):
            layout.codes_to_ids(m.name, [m.size])
        with pytest.raises(ValueError):
            layout.ids_to_codes(m.name, [layout.start_id(m.name)])


def test_serialisation_round_trip(tmp_path):
    layout = VocabLayout.from_profile("default", 1234, {"image": 512, "speech": 1024, "music": 256}, pad_to_multiple=128)
    layout.save(tmp_path)
    back = VocabLayout.load(tmp_path)
    assert back == layout
    assert back.to_dict() == layout.to_dict()
    (tmp_path / "anygpt_layout.json").write_text("{not json")
    with pytest.raises(ValueError, match="anygpt_layout.json"):
        VocabLayout.load(tmp_path)


def test_detect_reference_layout(base_tokenizer):
    layout = VocabLayout.from_profile("anygpt-chat", len(base_tokenizer))
    layout.grow_tokenizer(base_tokenizer)
    assert VocabLayout.detect(base_tokenizer) == layout


def test_parse_reference_strings_with_spaces_and_text():
    layout = VocabLayout.from_profile("anygpt", 32000)
    s = f"Describe <soim><{IMAGE_PREFIX}8108> <{IMAGE_PREFIX}2315>\n<{IMAGE_PREFIX}0><eoim> please <sosp> <{SPEECH_PREFIX}7> <eosp>"
    assert layout.parse(s) == [("text", "Describe "), ("image", [8108, 2315, 0]), ("text", " please "), ("speech", [7])]


def test_parse_1000_token_music_span_with_layer_offsets():
    layout = VocabLayout.from_profile("anygpt", 32000)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2048, size=(4, 250))
    flat = flatten_frame_major(codes, 2048)
    assert len(flat) == 1000
    assert list(flat[:4]) == [codes[0, 0], codes[1, 0] + 2048, codes[2, 0] + 4096, codes[3, 0] + 6144]
    s = layout.codes_to_string("music", flat)
    ((mod, parsed),) = layout.parse(s)
    assert mod == "music" and parsed == list(flat)
    back = unflatten_frame_major(parsed, 4, 2048)
    assert back.ok and np.array_equal(back.codes, codes)


def test_unflatten_repairs_out_of_slot_codes():
    codes = np.array([[1, 2, 3], [4, 5, 6]])
    flat = list(flatten_frame_major(codes, 10))  # [1,14,2,15,3,16]
    bad = flat[:2] + [17] + flat[2:]  # a layer-1 token where layer 0 belongs
    got = unflatten_frame_major(bad, 2, 10)
    assert got.repaired == 1 and np.array_equal(got.codes, codes)
    got = unflatten_frame_major(flat[:-1], 2, 10)  # incomplete last frame dropped
    assert got.repaired == 1 and np.array_equal(got.codes, codes[:, :2])


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("<soim><\U0001F4401>", "unclosed"),
        (f"<soim><{SPEECH_PREFIX}1><eoim>", "not a image code"),
        (f"<sosp><{SPEECH_PREFIX}1024><eosp>", "out of range"),
        (f"<soim><{IMAGE_PREFIX}1> hello <eoim>", "inside image span"),
        ("text <eoim> more", "without a matching"),
    ],
)
def test_malformed_spans_give_clear_errors(bad, reason):
    layout = VocabLayout.from_profile("anygpt", 32000)
    with pytest.raises(TokenStringError, match=reason):
        layout.parse(bad)


def test_lenient_parse_keeps_best_valid_output():
    layout = VocabLayout.from_profile("anygpt", 32000)
    s = f"<somu><{MUSIC_PREFIX}5><{IMAGE_PREFIX}3><{MUSIC_PREFIX}9000><{MUSIC_PREFIX}6>"
    assert layout.parse(s, strict=False) == [("music", [5, 6])]


def test_split_ids_is_lenient():
    layout = VocabLayout.from_profile("default", 100, {"image": 10, "speech": 10, "music": 0})
    img = layout.span_ids("image", [1, 2])
    ids = [5, 6] + img + [7] + [layout.start_id("speech"), layout.code_range("speech").start + 3, layout.code_range("image").start]
    assert layout.split_ids(ids) == [("text", [5, 6]), ("image", [1, 2]), ("text", [7]), ("speech", [3])]


UNSEEN = ["Visualize ZEBRA", "digits 0123456789 and 3.14", "emoji 🙂🎵 ok", "中文 and 日本語 CJK", "hello world"]
# spaces where sentencepiece strips, collapses or keeps them (the dummy prefix was lost after a stripped space)
SPACED = [" hello", "   hello world", "hello ", "hello   world  ", "a  b   c", "   ", " ", "", "\tworld", "x\ny",
          " Visualize ZEBRA ", "  42 🙂 中文  ", " 3.14\u3000日本語"]


def _user_sp_model(tmp_path, model_type: str, byte_fallback: bool):
    """A user's own sentencepiece model on a lower-case word soup: capitals, digits, emoji and CJK unseen."""
    import random

    import sentencepiece as spm

    words = "a the red green blue circle square hello world please describe this picture".split()
    rng = random.Random(0)
    (tmp_path / "c.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(2000)))
    prefix = tmp_path / f"{model_type}{int(byte_fallback)}"
    spm.SentencePieceTrainer.train(input=str(tmp_path / "c.txt"), model_prefix=str(prefix), vocab_size=290 if byte_fallback else 35,
                                   model_type=model_type, byte_fallback=byte_fallback, minloglevel=2)
    return prefix.with_suffix(".model"), spm.SentencePieceProcessor(model_file=str(prefix.with_suffix(".model")))


@pytest.mark.parametrize("model_type,byte_fallback", [("unigram", False), pytest.param("bpe", False, marks=pytest.mark.slow),
                                                     pytest.param("unigram", True, marks=pytest.mark.slow), ("bpe", True)])
def test_grown_sentencepiece_base_keeps_its_text_behaviour(cli, tmp_path, model_type, byte_fallback):
    """Issue 15: `anygpt vocab --base sp.model` dropped unseen characters ("ZEBRA" -> "RA") because
    the model was rebuilt as a byte-fallback BPE without an unknown token. The grown tokenizer must
    encode text exactly as sentencepiece does: byte fallback round-trips, otherwise unknown pieces."""
    from transformers import AutoTokenizer

    from anygpt.vocab import text_coverage

    model, sp = _user_sp_model(tmp_path, model_type, byte_fallback)
    cli("vocab", "--base", model, "--profile", "default", "--sizes", "image=16,speech=8,music=0", "--out", tmp_path / "grown")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "grown"))
    for text in UNSEEN + SPACED:
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text), repr(text)
    cov = text_coverage(tok, UNSEEN)
    if byte_fallback:
        assert all(tok.decode(tok.encode(t, add_special_tokens=False)) == t for t in UNSEEN)
        for text in SPACED:  # round-trips to what sentencepiece itself gives back (extra spaces removed)
            assert tok.decode(tok.encode(text, add_special_tokens=False)) == sp.decode(sp.encode(text)), repr(text)
        assert cov["unknown_tokens"] == cov["lost_chars"] == 0
    else:
        ids = tok.encode("ZEBRA", add_special_tokens=False)
        assert tok.unk_token_id in ids and len(ids) >= 2  # visible as unknown, never silently gone
        assert cov["unknown_tokens"] > 0 and cov["texts_with_unknown"] == 4 and cov["lost_chars"] > 0


def test_vocab_sizes_are_checked_against_the_cards(cli, sp_model_file, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    img, sp = repo / "tokenizers" / "demo-image.yaml", repo / "tokenizers" / "demo-speech.yaml"
    proc = cli("vocab", "--base", sp_model_file, "--profile", "default", "--sizes", "image=256", "--cards", f"{img},{sp}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--sizes image=256 but {img} has 512 codes" in proc.stderr
    proc = cli("vocab", "--base", sp_model_file, "--profile", "default", "--sizes", "music=0", "--cards", f"{img},{sp}", "--out", tmp_path / "g")
    from anygpt.vocab import VocabLayout

    layout = VocabLayout.load(tmp_path / "g")
    assert {m.name: m.size for m in layout.modalities}.items() >= {"image": 512, "speech": 1024}.items()
    proc = cli("vocab", "--base", sp_model_file, "--profile", "default", "--sizes", "image=7")
    assert "not checked against any tokenizer card" in proc.stdout


def test_grow_model_accepts_a_model_that_already_holds_the_layout(base_tokenizer):
    """A released AnyGPT-chat checkpoint has exactly vocab_size rows (49,420, unpadded); ours are
    padded. Both are fine-tuned as they are; rows short of the layout mean another layout."""
    from transformers import LlamaConfig, LlamaForCausalLM

    n = len(base_tokenizer)
    layout = VocabLayout.from_profile("anygpt-chat", n, {"image": 40, "speech": 20, "music": 10})
    for rows in (layout.vocab_size, layout.padded_vocab_size, layout.padded_vocab_size + 64):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=rows, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False))
        before = model.get_input_embeddings().weight.detach().clone()
        layout.grow_model(model)
        assert torch.equal(model.get_input_embeddings().weight, before) and model.config.vocab_size == rows
    short = LlamaForCausalLM(LlamaConfig(vocab_size=layout.vocab_size - 1, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    with pytest.raises(ValueError, match=f"{layout.vocab_size - 1} embedding rows.*at least its {layout.vocab_size}"):
        layout.grow_model(short)
