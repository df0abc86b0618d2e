"""The real LLaMA-2 vocabulary as a sentencepiece ``tokenizer.model``, built from an npm package.

``tests/data/llama-tokenizer-js-1.2.2.tgz`` is the npm tarball of ``llama-tokenizer-js`` (MIT,
belladore.ai; ``npm pack llama-tokenizer-js``). Its ``llama-tokenizer.js`` embeds LLaMA's 32,000
pieces in id order (``llama_vocab_base64``: the pieces joined by ``\\n``) and the BPE merges of
LLaMA's Hugging Face ``tokenizer.json`` in priority order (``llama_merges_binary``: pairs of
uint16 piece ids). The package does not ship sentencepiece scores; the converter that made the
``tokenizer.json`` merges sorted them by the score of the merged piece, so giving each piece the
negated rank of the first merge that produces it orders sentencepiece's BPE merges exactly as
the original scores do. Piece types follow LLaMA's model: ``<unk>`` unknown, ``<s>`` and ``</s>``
control, ``<0x00>``…``<0xFF>`` byte pieces, the rest normal; the normaliser is LLaMA's
(``identity``, dummy prefix on, whitespace kept and escaped as ``▁``), byte fallback on.

Run as a script to write the model: ``python tests/llama_vocab.py OUT/tokenizer.model``.
"""

from __future__ import annotations

import base64
import re
import struct
import sys
import tarfile
from pathlib import Path

TARBALL = Path(__file__).parent / "data" / "llama-tokenizer-js-1.2.2.tgz"


def _js_string(source: str, name: str) -> str:
    m = re.search(rf'const {name} = "([^"]+)"', source)
    if m is None:
        raise ValueError(f"{TARBALL}: no {name} in llama-tokenizer.js")
    return m.group(1)


def llama_pieces_and_merges(tarball: Path = TARBALL) -> tuple[list[str], list[tuple[int, int]]]:
    """LLaMA-2's pieces (id order) and BPE merges (priority order, as pairs of piece ids)."""
    with tarfile.open(tarball) as tf:
        source = tf.extractfile("package/llama-tokenizer.js").read().decode("utf-8")
    pieces = base64.b64decode(_js_string(source, "llama_vocab_base64")).decode("utf-8").split("\n")
    raw = base64.b64decode(_js_string(source, "llama_merges_binary"))
    ints = struct.unpack(f"<{len(raw) // 2}H", raw)
    return pieces, list(zip(ints[0::2], ints[1::2]))


def write_llama_sentencepiece(out: Path, tarball: Path = TARBALL) -> Path:
    """Write LLaMA-2's vocabulary as a sentencepiece BPE ``ModelProto`` at ``out``."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    pieces, merges = llama_pieces_and_merges(tarball)
    if len(pieces) != 32000:
        raise ValueError(f"{tarball}: {len(pieces)} pieces, LLaMA-2 has 32000")
    index = {p: i for i, p in enumerate(pieces)}
    first_rank: dict[int, int] = {}
    for rank, (a, b) in enumerate(merges):
        merged = index.get(pieces[a] + pieces[b])
        if merged is not None:
            first_rank.setdefault(merged, rank)
    m = pb.ModelProto()
    for i, piece in enumerate(pieces):
        sp = m.pieces.add()
        sp.piece = piece
        if i == 0:
            sp.type, sp.score = pb.ModelProto.SentencePiece.UNKNOWN, 0.0
        elif i in (1, 2):
            sp.type, sp.score = pb.ModelProto.SentencePiece.CONTROL, 0.0
        elif re.fullmatch(r"<0x[0-9A-F]{2}>", piece):
            sp.type, sp.score = pb.ModelProto.SentencePiece.BYTE, 0.0
        else:
            sp.type = pb.ModelProto.SentencePiece.NORMAL
            # pieces no merge produces are single characters (or unreachable): lowest priority
            sp.score = -float(first_rank.get(i, len(merges) + i))
    t = m.trainer_spec
    t.model_type = pb.TrainerSpec.BPE
    t.vocab_size = len(pieces)
    t.byte_fallback = True
    t.split_digits = True
    t.allow_whitespace_only_pieces = True
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = 0, 1, 2, -1
    n = m.normalizer_spec
    n.name = "identity"
    n.add_dummy_prefix = True
    n.remove_extra_whitespaces = False
    n.escape_whitespaces = True
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(m.SerializeToString())
    return out


if __name__ == "__main__":
    print(write_llama_sentencepiece(Path(sys.argv[1])))
