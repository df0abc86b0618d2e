"""Our caption metrics against the standard implementations on the same inputs: CIDEr-D against
pycocoevalcap's ``Cider`` (coco-caption's scorer), BLEU-4 against sacrebleu and pycocoevalcap's
``Bleu``; and the Whisper English normaliser the ASR/TTS benchmarks apply before WER."""

from __future__ import annotations

import random

import pytest

from anygpt.eval import metrics as M

WORDS = "a man woman dog cat sits on the red blue table with two of in street car riding horse".split()


def _corpus(seed: int, n: int = 40) -> tuple[list[list[str]], list[str]]:
    """Lowercase, punctuation-free captions (what the PTB tokenizer hands the scorers), 1-5
    references each, hypotheses that share n-grams with them."""
    rng = random.Random(seed)
    refs = [[" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 13))) for _ in range(rng.randint(1, 5))] for _ in range(n)]
    hyps = []
    for r in refs:
        w = rng.choice(r).split()
        for _ in range(rng.randint(0, 3)):
            w[rng.randrange(len(w))] = rng.choice(WORDS)
        hyps.append(" ".join(w[: rng.randint(max(1, len(w) - 3), len(w))]))
    return refs, hyps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cider_d_equals_pycocoevalcap(seed):
    from pycocoevalcap.cider.cider import Cider

    refs, hyps = _corpus(seed)
    score, per = Cider().compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)})
    ours, ours_per = M.cider_d(refs, hyps)
    assert ours == pytest.approx(float(score), abs=1e-12)
    assert ours_per == pytest.approx([float(x) for x in per], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_bleu4_equals_sacrebleu_and_pycocoevalcap(seed):
    import sacrebleu
    from pycocoevalcap.bleu.bleu import Bleu

    refs, hyps = _corpus(seed)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(max(map(len, refs)))]
    sb = sacrebleu.corpus_bleu(hyps, streams, tokenize="none", smooth_method="none", force=True).score / 100
    (_, _, _, pc), _ = Bleu(4).compute_score({i: r for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}, verbose=0)
    ours = M.bleu4(refs, hyps)
    assert 0.05 < ours < 0.95  # a corpus where the brevity penalty and every n matter
    assert ours == pytest.approx(sb, abs=1e-12)
    assert ours == pytest.approx(pc, abs=1e-8)  # pycocoevalcap adds 1e-9 / 1e-15 smoothing


def test_cider_worked_example_by_hand():
    """Two images: the hypothesis of image 0 equals its only reference, image 1's shares nothing."""
    refs, hyps = [["a b c d"], ["e f g h"]], ["a b c d", "x y z w"]
    score, per = M.cider_d(refs, hyps)
    # every n-gram of image 0 has df 1 of N 2: tf-idf vectors equal, cosine 1 per n, no length penalty
    assert per == pytest.approx([10.0, 0.0]) and score == pytest.approx(5.0)


def test_whisper_english_normaliser():
    from anygpt.eval.benchmarks.models import whisper_english_normalize
    from anygpt.eval.benchmarks.speech import corpus_wer

    assert whisper_english_normalize("The colour is twenty-five percent, Mr. Smith!") == "the color is 25% mister smith"
    m = corpus_wer(["THE COLOUR IS TWENTY FIVE PERCENT", "HELLO WORLD"], ["The color is 25%.", "hello word"])
    # both sides normalise to "the color is 25%" (4 words, no error) and "hello world" / "hello word"
    assert m["value"] == pytest.approx(100 * 1 / 6)
    assert m["ci95"][0] <= m["value"] <= m["ci95"][1]
