"""Building alignment samples by id arithmetic vs the reference's way (samples/s).

Ours: :func:`anygpt.data.alignment.render_alignments`, what ``build-data`` runs, on the pairs as
build-data reads them (one Arrow table of code-shard rows per modality): the samples of a
direction share one template shape, their texts go through the tokenizer in one call, codes
become ids and the samples are assembled by array arithmetic over the whole batch (the same ids
as rendering each sample alone with :func:`render_alignment`, checked here). Baseline: the
reference's way — write the whole prompt with media as token strings
(``[Human]: {instruction} <soim><👀12>…<eoim><eoh> [MMGPT]: {text}<eos>``) and run the grown
tokenizer (``anygpt`` profile, the reference's 17,418 added tokens) on it. Same samples, same
instructions, same machine. Media lengths as the reference's: 32 image codes, ~5 s of speech at
50 tokens/s, ~2 s of music at 200 tokens/s. Both sides start from their inputs in memory.

Run: PYTHONPATH=. python bench/sequence_build_vs_strings.py
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path

N_SAMPLES = 512  # one batch of build-data's mixture (mix_batches' batch_size); ours has per-batch costs
MODS = ("image", "speech", "music")
WORDS = ("a the red green blue circle square star small large piano violin slow fast calm melody in C major "
         "hello world how are you today please describe this picture read text out loud music").split()


def main() -> None:
    # build-data renders with the tokenizer single-threaded (anygpt.data.mixture: processes are its
    # parallelism); rendering here runs as it does there
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import numpy as np
    import pyarrow as pa

    from anygpt.data.alignment import Pair, PairBatch, alignment_messages, render_alignment, render_alignments
    from anygpt.data.instructions import draw_instruction
    from anygpt.data.templates import BatchRenderer, MediaCodes, get_template
    from anygpt.vocab import VocabLayout
    from bench._support import tiny_base_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok = tiny_base_tokenizer(Path(tmp), WORDS, lines=3000, words_per_line=12)
    layout = VocabLayout.from_profile("anygpt", len(tok))
    layout.grow_tokenizer(tok)
    template = get_template("anygpt-pretrain")
    rng = random.Random(1)
    lengths = {"image": lambda: 32, "speech": lambda: rng.randint(150, 300), "music": lambda: rng.randint(300, 500)}
    pairs = []
    for i in range(N_SAMPLES):
        m = MODS[i % 3]
        size = layout.modality(m).size
        pairs.append(Pair(str(i), m, [rng.randrange(size) for _ in range(lengths[m]())],
                          " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15)))))
    directions = [("x2t", "t2x")[i % 2] for i in range(N_SAMPLES)]

    def one_by_one() -> list[list[int]]:
        r = random.Random(7)
        return [render_alignment(p, d, template, tok, layout, r).input_ids for p, d in zip(pairs, directions)]

    tables = {m: pa.table({"id": [p.id for p in pairs if p.modality == m],
                           "modality": [m] * sum(p.modality == m for p in pairs),
                           "codes": pa.array([p.codes for p in pairs if p.modality == m], pa.list_(pa.int32())),
                           "text": [p.text for p in pairs if p.modality == m]}) for m in MODS}
    rows_of = {m: [i for i, p in enumerate(pairs) if p.modality == m] for m in MODS}

    def ours() -> list[list[int]]:
        r = random.Random(7)  # the draws render_alignment takes, made up front as build-data's plan does
        instructions = [draw_instruction(p.modality, d, r) for p, d in zip(pairs, directions)]
        renderer = BatchRenderer(template, tok, layout)  # a fresh cache each run: no carry-over between repeats
        out = [None] * N_SAMPLES
        for m in MODS:  # build-data renders each dataset's batch from its own shards
            rows = rows_of[m]
            batch = render_alignments(PairBatch.from_arrow(tables[m], m), [directions[i] for i in rows],
                                      [instructions[i] for i in rows], renderer).rendered
            out[rows[0]::len(MODS)] = np.split(batch.input_ids, batch.offsets[1:-1])
        return out

    def reference() -> list[list[int]]:
        r = random.Random(7)
        out = []
        for p, d in zip(pairs, directions):
            user, asst = alignment_messages(p, d, r)
            def text(content):
                items = content if isinstance(content, list) else [content]
                return "".join(layout.codes_to_string(x.modality, x.codes) if isinstance(x, MediaCodes) else x
                               for x in items)
            prompt = f"[Human]: {text(user.content)}<eoh> [MMGPT]: {text(asst.content)}<eos>"
            out.append(tok(prompt)["input_ids"] + [tok.eos_token_id])
        return out

    def best_rate(fn, repeats: int = 3) -> tuple[float, list]:
        best, res = 0.0, None
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = fn()
            best = max(best, N_SAMPLES / (time.perf_counter() - t0))
        return best, res

    fn_ours, ids_ours = best_rate(ours)
    ids_ours = [a.tolist() for a in ids_ours]
    assert ids_ours == one_by_one(), "batched rendering must give the one-by-one ids"
    fn_ref, ids_ref = best_rate(reference)
    same_media = sum(layout.split_ids(a)[1:] == layout.split_ids(b)[1:] or
                     [x for x in layout.split_ids(a) if x[0] != "text"] == [x for x in layout.split_ids(b) if x[0] != "text"]
                     for a, b in zip(ids_ours, ids_ref))
    print(f"tokenizer: {type(tok).__name__}, {len(tok)} entries; {N_SAMPLES} samples; "
          f"identical media spans in {same_media}/{N_SAMPLES}; identical ids in "
          f"{sum(a == b for a, b in zip(ids_ours, ids_ref))}/{N_SAMPLES}")
    print(json.dumps({"bench": "sequence_build_vs_strings", "ours": round(fn_ours, 2), "baseline": round(fn_ref, 2),
                      "ratio": round(fn_ours / fn_ref, 3), "unit": "samples/s", "better": "higher"}))


if __name__ == "__main__":
    main()
