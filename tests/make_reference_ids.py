"""Write ``tests/data/reference_ids_tf434.json``: the ids transformers 4.34's slow LlamaTokenizer gives.

Run with transformers 4.34.1 (the version the reference pins in its requirements.txt), in a separate environment:

    python -m venv /tmp/tf434 && /tmp/tf434/bin/pip install transformers==4.34.1 sentencepiece protobuf
    /tmp/tf434/bin/python tests/make_reference_ids.py

It builds the real LLaMA-2 vocabulary (``tests/llama_vocab.py``), writes a directory in the released
AnyGPT-chat tokenizer layout (``tokenizer.model``, ``tokenizer_config.json`` with ``legacy`` set,
``special_tokens_map.json``, ``added_tokens.json`` with the reference's 17,420 tokens), loads it with
``LlamaTokenizer.from_pretrained`` under ``legacy=True`` and ``legacy=False`` (and once with an
``added_tokens_decoder`` whose tokens strip the whitespace around them, as 4.34.0 saved them), and tokenizes prompt
strings composed the way the reference composes them (its ``Conversation.get_prompt`` for MMGPT and
its ``Prompter`` pretraining templates), exactly as ``tokenizer(prompt).input_ids`` in its code.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent

SYSTEM = ("You are an AI assistant named MMGPT who can understand and generate multimodal content, "
          "including text, speech, images and audio.")
IMG = "<soim><👀12><👀8191><eoim>"
SP = "<sosp><🗣️3><🗣️1023><🗣️0><eosp>"
MU = "<somu><🎶5><🎶2048><eomu>"


def added_tokens() -> list[str]:
    out = ["[Human]", "[MMGPT]", "<eoh>", "<eos>"]
    for prefix, n, s, e in (("👀", 8192, "<soim>", "<eoim>"), ("🗣️", 1024, "<sosp>", "<eosp>"),
                            ("🎶", 8192, "<somu>", "<eomu>")):
        out += [f"<{prefix}{i}>" for i in range(n)] + [s, e]
    return out + ["<-Res->", "<-Ins->"]


def chat(turns: list[str], force: str = "") -> str:
    """The reference's MMGPT ``Conversation.get_prompt`` (ADD_COLON_TWO, sep <eoh>, sep2 <eos>)."""
    ret = SYSTEM + "\n"
    roles = ["[Human]", "[MMGPT]"]
    for i, msg in enumerate(turns):
        if i % 2 == 0:
            ret += roles[0] + ": " + msg + "<eoh>" + "\n"
        else:
            ret += roles[1] + ": " + msg + "<eos>"
            if i != len(turns) - 1:
                ret += "\n"
    if len(turns) % 2 == 1:
        ret += roles[1] + ":"
        if force:
            ret += " " + force
    return ret


def x2t(instruction: str, media: str, text: str | None) -> str:
    """``Prompter.generate_x2t_template`` (text None: ``generate_prompt_input``, the inference prompt)."""
    if text is None:
        return f"[Human]: {instruction} {media}<eoh> [MMGPT]:"
    return f"[Human]: {instruction} {media}<eoh> [MMGPT]: {text}<eos>"


def t2x(instruction: str, text: str, media: str | None) -> str:
    if media is None:
        return f"[Human]: {instruction} This is input: {text}<eoh> [MMGPT]:"
    return f"[Human]: {instruction} This is input: {text}<eoh> [MMGPT]: {media}<eos>"


# chat cases: (turns, forced start marker); the turns alternate user / assistant, user first
CHAT_CASES: dict[str, tuple[list[str], str]] = {
    "chat_first_turn": (["hello, how are you?"], ""),
    "chat_image_two_turns": ([f"{IMG} What is in this picture?", "A cat on a mat.", "Now draw a dog."], ""),
    "chat_force_image": (["Draw a red circle."], "<soim>"),
    "chat_speech_instruction": ([f"{SP} Please recognize the voice command and give reply and voice"], ""),
    "chat_voice_reply": ([f"{SP} Please recognize the voice command and give reply and voice",
                          f"<-Ins-> What's the weather like?\n <-Res-> It is sunny today. {SP}"], ""),
    "chat_music_and_image": ([f"{IMG} {MU} Give me a similar style of music."], ""),
    "chat_unicode": (["Café au lait, 中文, 😀 and 42 apples;  two  spaces\tand a tab"], ""),
    "chat_literal_underline_and_eos": (["a \u2581 b </s> c\n\n  d", "  spaced reply  ", "ok"], ""),
}
# pretraining cases: (direction, instruction, user input, output or None for the inference prompt)
PAIR_CASES: dict[str, tuple[str, str, str, str | None]] = {
    "pretrain_x2t": ("x2t", "Describe the scene in this picture.", IMG, "A red circle on a white background."),
    "pretrain_t2x_speech": ("t2x", "Would you kindly read this text out loud so that I can hear it?", "Hello world.", SP),
    "pretrain_t2x_music": ("t2x", "Compose a piece of music from this text.", "An upbeat indie rock song.", MU),
    "base_prompt_x2t": ("x2t", "Transcribe this speech.", SP, None),
    "base_prompt_t2x": ("t2x", "Generate an image of this description.", "a red circle", None),
}
CASES: dict[str, str] = {
    **{name: chat(turns, force) for name, (turns, force) in CHAT_CASES.items()},
    **{name: (x2t if d == "x2t" else t2x)(ins, inp, out) for name, (d, ins, inp, out) in PAIR_CASES.items()},
}


def main(out: Path = HERE / "data" / "reference_ids_tf434.json") -> None:
    import transformers
    from transformers import LlamaTokenizer

    result = {"transformers": transformers.__version__, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        model = d / "tokenizer.model"
        # a child process: sentencepiece's and transformers' copies of the model proto clash in one process
        subprocess.run([sys.executable, str(HERE / "llama_vocab.py"), str(model)], check=True)
        result["sp_model_sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
        added = {t: 32000 + i for i, t in enumerate(added_tokens())}
        (d / "added_tokens.json").write_text(json.dumps(added, ensure_ascii=False))
        (d / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
        specials = {0: "<unk>", 1: "<s>", 2: "</s>"}
        # (legacy, strip): strip=True writes an added_tokens_decoder whose markers and codes eat the
        # whitespace on both sides, as 4.34.0's add_tokens() made them (4.34.1 no longer does)
        for legacy, strip in ((True, False), (False, False), (False, True)):
            cfg = {"add_bos_token": True, "add_eos_token": False, "legacy": legacy, "tokenizer_class": "LlamaTokenizer",
                   "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None}
            if strip:
                cfg["added_tokens_decoder"] = {
                    **{str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                                "special": True} for i, t in specials.items()},
                    **{str(i): {"content": t, "lstrip": True, "normalized": True, "rstrip": True, "single_word": False,
                                "special": False} for t, i in added.items()}}
            (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False))
            tok = LlamaTokenizer.from_pretrained(str(d))
            assert len(tok) == 49420 and tok.convert_tokens_to_ids("<-Ins->") == 49419
            for name, text in CASES.items():
                result["cases"].append({"name": name, "legacy": legacy, "strip": strip, "text": text,
                                        "ids": tok(text).input_ids, "tokens": tok.tokenize(text)})
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    print(f"wrote {out} ({len(result['cases'])} cases)")


if __name__ == "__main__":
    main()
