"""The base text tokenizer the layout grows: loading one (a Hugging Face directory, a bare
sentencepiece ``.model`` or a hub id) and measuring what text it cannot represent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable


def load_base_tokenizer(path: str | os.PathLike):
    """A Hugging Face tokenizer from a directory, a sentencepiece ``.model`` file, or a hub id.

    A bare sentencepiece model is read by :func:`sentencepiece_tokenizer` (its own settings). Hub ids are tried only when
    the name is not a local path (and fail at once under ``HF_HUB_OFFLINE=1``)."""
    from transformers import AutoTokenizer

    p = Path(path)
    if p.is_file() and p.suffix == ".model":
        return sentencepiece_tokenizer(p)
    if p.is_dir():
        from anygpt.utils import refuse_remote_code

        refuse_remote_code(p)
        if (p / "tokenizer_config.json").exists() or (p / "tokenizer.json").exists():
            return AutoTokenizer.from_pretrained(str(p), trust_remote_code=False)
        if (p / "tokenizer.model").exists():
            return sentencepiece_tokenizer(p / "tokenizer.model")
        raise FileNotFoundError(f"{p}: no tokenizer files (tokenizer.json, tokenizer_config.json or tokenizer.model)")
    if p.exists() or str(path).startswith((".", "/")):
        raise FileNotFoundError(f"{p}: not a tokenizer directory or sentencepiece .model file")
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)  # a hub id


def sentencepiece_tokenizer(model_file: str | os.PathLike):
    """A fast Hugging Face tokenizer that encodes like ``SentencePieceProcessor.encode`` on
    ``model_file``: the model's own type (unigram or BPE), normaliser, unknown piece and byte
    fallback. (``LlamaTokenizer.from_pretrained`` on a bare ``.model`` rebuilds it as a BPE with
    byte fallback assumed and no unknown token, so a model trained without byte fallback would
    silently drop every character it had not seen: "ZEBRA" → "RA".) Text the model cannot
    represent becomes its unknown piece, visible in the ids and counted by ``build-data``.
    No beginning-of-sequence token is added by ``encode``: the chat templates add it."""
    from sentencepiece import sentencepiece_model_pb2
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    path = Path(model_file)
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # a truncated or foreign file: one line naming it
        raise ValueError(f"{path}: not a sentencepiece model ({e})") from None
    spec = proto.trainer_spec
    if spec.model_type == 1:  # unigram: pieces with scores
        vocab: Any = [(piece.piece, piece.score) for piece in proto.pieces]
    elif spec.model_type == 2:  # BPE: merges ranked by piece score
        vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    else:
        raise ValueError(f"{path}: sentencepiece model type {spec.model_type} (word/char) is not supported; train it as unigram or bpe")
    # legacy=True: the dummy prefix goes on every text chunk, as ``SentencePieceProcessor.encode`` puts it on every
    # text. legacy=False prepends it only where the chunk starts at offset 0 of the original string, so text with
    # leading spaces (stripped before the prefix) lost its "▁" and its ids differed from sentencepiece's.
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    def piece(i: int) -> str | None:
        return proto.pieces[i].piece if 0 <= i < len(proto.pieces) else None

    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=piece(spec.unk_id), bos_token=piece(spec.bos_id),
                                  eos_token=piece(spec.eos_id), pad_token=piece(spec.pad_id), clean_up_tokenization_spaces=False)
    return tok


def text_coverage(tokenizer, texts: Iterable[str]) -> dict[str, int]:
    """How much of ``texts`` the tokenizer cannot represent: ``{"texts", "chars", "unknown_tokens",
    "texts_with_unknown", "lost_chars"}``. ``unknown_tokens`` counts unknown-piece ids;
    ``lost_chars`` the characters missing from the decoded text (after whitespace is collapsed),
    which is what a tokenizer that silently drops text loses."""
    unk = tokenizer.unk_token_id
    out = {"texts": 0, "chars": 0, "unknown_tokens": 0, "texts_with_unknown": 0, "lost_chars": 0}
    texts = list(texts)
    # batched calls (1,000 texts each way): a build checks thousands of texts before its first sample
    for t, ids, back in _encoded_and_decoded(tokenizer, texts, 1000):
        n_unk = sum(1 for i in ids if i == unk) if unk is not None else 0
        a, b = "".join(t.split()), "".join(back.split())
        out["texts"] += 1
        out["chars"] += len(a)
        out["unknown_tokens"] += n_unk
        out["texts_with_unknown"] += int(n_unk > 0 or a != b)
        out["lost_chars"] += 0 if a == b else max(len(a) - _common_chars(a, b), 0)
    return out


def _encoded_and_decoded(tokenizer, texts: list[str], chunk: int):
    """``(text, ids, decoded ids)`` for each text, tokenized and decoded ``chunk`` texts per call."""
    for i in range(0, len(texts), chunk):
        part = texts[i:i + chunk]
        ids = tokenizer(part, add_special_tokens=False)["input_ids"]
        yield from zip(part, ids, tokenizer.batch_decode(ids, skip_special_tokens=True))


def _common_chars(a: str, b: str) -> int:
    """Characters of ``a`` found, in order, in ``b`` (a cheap lower bound of the kept text)."""
    import difflib

    return sum(m.size for m in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
