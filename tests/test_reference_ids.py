"""The reference templates render the ids transformers 4.34.1's slow LlamaTokenizer gives the reference.

The vocabulary is LLaMA-2's own (built from the npm package vendored in ``tests/data``, see
``tests/llama_vocab.py``); the expected ids in ``tests/data/reference_ids_tf434.json`` were written by
``tests/make_reference_ids.py`` running transformers 4.34.1 itself on strings composed the reference's
way, for ``legacy`` True and False and with whitespace-stripping added tokens. Here our templates
compose the same conversations from messages, through a directory in the released AnyGPT-chat
tokenizer layout, and must give the same ids; labels must cover exactly the assistant replies.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from anygpt.data.reference_text import ReferenceTextEncoder, encoder_for
from anygpt.data.templates import MediaCodes, Message, get_template
from anygpt.vocab import IGNORE_INDEX
from anygpt.vocab import VocabLayout, load_base_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from llama_vocab import write_llama_sentencepiece  # noqa: E402
from make_reference_ids import CHAT_CASES, PAIR_CASES, added_tokens  # noqa: E402

GOLDEN = json.loads((Path(__file__).parent / "data" / "reference_ids_tf434.json").read_text(encoding="utf-8"))
SPECIAL = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}


@pytest.fixture(scope="module")
def llama_model(tmp_path_factory) -> Path:
    model = write_llama_sentencepiece(tmp_path_factory.mktemp("llama2") / "tokenizer.model")
    # the same model the expected ids were made with
    assert hashlib.sha256(model.read_bytes()).hexdigest() == GOLDEN["sp_model_sha256"]
    return model


def write_config(d: Path, legacy: bool, strip: bool) -> None:
    cfg = {"add_bos_token": True, "add_eos_token": False, "legacy": legacy, "tokenizer_class": "LlamaTokenizer",
           "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None}
    if strip:
        cfg["added_tokens_decoder"] = {
            **{str(i): {**SPECIAL, "content": t} for i, t in enumerate(["<unk>", "<s>", "</s>"])},
            **{str(32000 + i): {**SPECIAL, "content": t, "lstrip": True, "rstrip": True, "special": False}
               for i, t in enumerate(added_tokens())}}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False))


@pytest.fixture(scope="module")
def released_tokenizer(llama_model, tmp_path_factory):
    """A tokenizer directory in the released AnyGPT-chat layout on the real LLaMA-2 vocabulary."""
    d = tmp_path_factory.mktemp("AnyGPT-chat")
    shutil.copy(llama_model, d / "tokenizer.model")
    (d / "added_tokens.json").write_text(json.dumps({t: 32000 + i for i, t in enumerate(added_tokens())}, ensure_ascii=False))
    (d / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    write_config(d, legacy=False, strip=False)
    tok = load_base_tokenizer(d)
    layout = VocabLayout.detect(tok)
    assert layout is not None and layout.vocab_size == len(tok) == 49420
    return d, tok, layout


def test_encoder_gives_transformers_4_34_ids_on_the_real_llama_vocabulary(llama_model):
    added = {t: 32000 + i for i, t in enumerate(added_tokens())} | {"<unk>": 0, "<s>": 1, "</s>": 2}
    marks = frozenset(range(32000, 49420))
    assert {(c["legacy"], c["strip"]) for c in GOLDEN["cases"]} == {(True, False), (False, False), (False, True)}
    for c in GOLDEN["cases"]:
        strip = marks if c["strip"] else frozenset()
        enc = ReferenceTextEncoder(llama_model, added, frozenset({0, 1, 2}), c["legacy"], lstrip=strip, rstrip=strip)
        assert enc.encode(c["text"]) == c["ids"], (c["name"], c["legacy"], c["strip"])


def _messages(name: str) -> tuple[str, list[Message], str | None, bool]:
    """Template, messages, forced modality, whether the rendering is a complete training pair."""
    if name in CHAT_CASES:
        turns, force = CHAT_CASES[name]
        msgs = [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
        return "anygpt-chat", msgs, {"<soim>": "image"}.get(force), False
    direction, instruction, inp, out = PAIR_CASES[name]
    user = f"{instruction} {inp}" if direction == "x2t" else f"{instruction} This is input: {inp}"
    msgs = [Message("user", user)] + ([Message("assistant", out)] if out is not None else [])
    return "anygpt-pretrain", msgs, None, out is not None


@pytest.mark.parametrize("legacy,strip", [(False, False), (True, False), (False, True)])
def test_reference_templates_render_the_reference_ids(released_tokenizer, legacy, strip):
    d, tok, layout = released_tokenizer
    write_config(d, legacy, strip)  # the encoder follows the directory's config (re-read when it changes)
    enc = encoder_for(tok)
    assert enc is not None and enc.legacy == legacy and bool(enc.lstrip) == strip
    cases = [c for c in GOLDEN["cases"] if (c["legacy"], c["strip"]) == (legacy, strip)]
    assert len(cases) == len(CHAT_CASES) + len(PAIR_CASES)
    for c in cases:
        template, msgs, force, complete = _messages(c["name"])
        t = get_template(template)
        open_turn = msgs[-1].role == "user"
        r = t.render(msgs, tok, layout, loss_on="all" if complete else "none", add_generation_prompt=open_turn,
                     force_modality=force)
        # the reference appends </s> after tokenizing a pretraining pair
        want = c["ids"] + ([tok.eos_token_id] if complete else [])
        assert r.input_ids == want, c["name"]


def test_reference_labels_cover_exactly_the_assistant_replies(released_tokenizer):
    d, tok, layout = released_tokenizer
    write_config(d, legacy=False, strip=False)
    t = get_template("anygpt-chat")
    turns, _ = CHAT_CASES["chat_literal_underline_and_eos"]  # user, "  spaced reply  ", user "ok"
    msgs = [Message("user" if i % 2 == 0 else "assistant", x) for i, x in enumerate(turns)]
    msgs.append(Message("assistant", ["It is ", MediaCodes("image", [3, 4]), " fine."]))
    r = t.render(msgs, tok, layout, loss_on="assistant")
    mmgpt, eos = layout.token_id("[MMGPT]"), layout.token_id("<eos>")
    spans, i = [], 0
    while i < len(r.input_ids):
        if r.input_ids[i] == mmgpt:
            j = r.input_ids.index(eos, i)
            spans.append((i + 2, j + 1))  # after "[MMGPT]" ":" up to and including <eos>
            i = j
        i += 1
    assert len(spans) == 2
    want = [IGNORE_INDEX] * len(r.input_ids)
    for a, b in spans:
        want[a:b] = r.input_ids[a:b]
    assert r.labels == want
    replies = tok.decode([x for x in r.labels if x != IGNORE_INDEX]).split("<eos>")
    assert [x.strip() for x in replies] == ["spaced reply", "It is <soim><👀3><👀4><eoim> fine.", ""]
