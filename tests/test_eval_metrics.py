"""Metric correctness on hand-computed examples: WER, BLEU-4, CIDEr-D, attributes, code similarity."""

from __future__ import annotations

import math

import pytest

from anygpt.eval import metrics as M


def test_normalize_text_lowercases_strips_punctuation_and_spells_numbers():
    assert M.normalize_text("Hello, World!  It's a FAST-paced tune.") == "hello world it's a fast paced tune"
    assert M.normalize_text("I have 3 cats and 21 dogs", numbers_as_words=True) == "i have three cats and twenty one dogs"
    assert M.number_to_words(142) == "one hundred forty two"
    assert M.normalize_text("'quoted'") == "quoted"


def test_wer_hand_checked_and_matches_own_edit_distance():
    # ref 4 words; hyp: 1 substitution (sat->sit), 1 deletion (the) => 2/4
    assert M.utterance_wer("the cat sat down", "The cat, sit down") == pytest.approx(0.25)
    assert M.utterance_wer("the cat sat down", "cat sit down") == pytest.approx(0.5)
    refs = ["the cat sat down", "hello world"]
    hyps = ["cat sit down", "hello there world"]  # 2 edits + 1 insertion over 6 reference words
    assert M.word_error_rate(refs, hyps) == pytest.approx(3 / 6)
    assert M.edit_distance("kitten", "sitting") == 3
    assert M.word_error_rate(["one two"], ["1 2"], numbers_as_words=True) == 0.0
    with pytest.raises(ValueError):
        M.word_error_rate(["a"], ["a", "b"])


def test_bleu4_hand_computed():
    # p1 = 5/6 (second "the" clipped), p2 = 3/5, p3 = 2/4, p4 = 1/3, equal lengths => BP = 1
    got = M.bleu4(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert got == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert M.bleu4(["a red circle on white"], ["a red circle on white"]) == pytest.approx(1.0)
    # brevity penalty: hyp 4 words, ref 5 words, all n-grams match => exp(1 - 5/4)
    assert M.bleu4(["a red circle on white"], ["a red circle on"]) == pytest.approx(math.exp(1 - 5 / 4))
    # multiple references: the closest length is used and clipping takes the max count
    assert M.bleu4([["x y", "a red circle on white"]], ["a red circle on white"]) == pytest.approx(1.0)
    assert M.bleu4(["red"], ["blue"]) == 0.0


def test_cider_d_hand_computed():
    # Two items, N = 2, every reference n-gram has df = 1 => weight log 2 for all n-grams.
    # Item A: hyp == ref "red circle": n=1 cos 1, n=2 cos 1, n=3,4 empty => mean 2/4 => ×10 = 5.
    # Item B: hyp "blue circle" vs ref "blue square": n=1 shares "blue" => (l²)/(√2 l · √2 l) = 1/2,
    #   n=2..4 nothing => mean 0.5/4 => ×10 = 1.25. Corpus = (5 + 1.25) / 2.
    corpus, per = M.cider_d(["red circle", "blue square"], ["red circle", "blue circle"])
    assert per == pytest.approx([5.0, 1.25])
    assert corpus == pytest.approx(3.125)


def test_cider_d_idf_length_penalty_and_clipping():
    # "circle" is in both items' references => df = 2 => weight log2 - log2 = 0: it earns nothing.
    _, per = M.cider_d(["red circle", "blue circle"], ["green circle", "blue circle"])
    assert per[0] == pytest.approx(0.0)
    # Item 2: unigrams {blue: l, circle: 0}; bigram {blue circle: l} => cos 1 for n = 1 and n = 2
    assert per[1] == pytest.approx(5.0)
    # Length penalty: hyp "red circle red" (3 words) vs ref "red circle" (2): delta 1.
    # n=1: hyp {red: 2l, circle: l}, ref {red: l, circle: l}: clipped dot = l·l + l·l = 2l²,
    #   |h| = √5 l, |r| = √2 l => 2/√10. n=2: hyp {red circle: l, circle red: l}, ref {red circle: l}
    #   => l² / (√2 l · l) = 1/√2. Mean over 4 n, × exp(-1/72), × 10.
    _, per = M.cider_d(["red circle", "blue square"], ["red circle red", "blue square"])
    want = 10 * (2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    assert per[0] == pytest.approx(want)


def test_attribute_extraction_and_both_right_accuracy():
    vocab = {"colour": M.vocabulary_from_values(["red", "grey"], M.ALIASES["colour"]), "shape": M.vocabulary_from_values(["circle", "square"], M.ALIASES["shape"])}
    assert M.extract_attributes("A small GRAY circle on white.", vocab) == {"colour": "grey", "shape": "circle"}
    assert M.extract_attributes("a red square", vocab) == {"colour": "red", "shape": "square"}
    assert M.extract_attributes("nothing here", vocab) == {"colour": None, "shape": None}
    # earliest mention wins; "reddish" is not "red" (whole words only)
    assert M.extract_attribute("reddish grey then red", vocab["colour"]) == "grey"
    assert M.extract_attribute("a fast paced tune", {"fast": ["fast-paced"], "slow": ["slow"]}) == "fast"
    truth = [{"colour": "red", "shape": "circle"}, {"colour": "grey", "shape": "square"}, {"colour": "red", "shape": "square"}]
    pred = [{"colour": "red", "shape": "circle"}, {"colour": "grey", "shape": "circle"}, {"colour": None, "shape": "square"}]
    acc = M.attribute_accuracy(pred, truth, ["colour", "shape"])
    assert acc == pytest.approx({"colour_accuracy": 2 / 3, "shape_accuracy": 2 / 3, "attribute_accuracy": 1 / 3})


def test_code_similarity():
    assert M.edit_similarity([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert M.edit_similarity([1, 2, 3, 4], [1, 9, 3]) == pytest.approx(1 - 2 / 4)
    assert M.unigram_overlap([1, 1, 2], [1, 2, 2]) == pytest.approx(2 * 2 / 6)
    sim = M.code_similarity([[1, 2], [5]], [[1, 2], [6]])
    assert sim == pytest.approx({"code_edit_similarity": 0.5, "code_unigram_overlap": 0.5})


def test_accuracy_interval_is_wilsons():
    from anygpt.eval.metrics import accuracy_interval, with_intervals

    lo, hi = accuracy_interval(0.94, 100)  # Wilson, z = 1.96: 0.875–0.972 (hand-computed)
    assert lo == pytest.approx(0.8752, abs=1e-3) and hi == pytest.approx(0.9722, abs=1e-3)
    assert accuracy_interval(1.0, 40)[1] == 1.0 and accuracy_interval(1.0, 40)[0] < 0.95  # never a zero-width interval
    lo4, hi4 = accuracy_interval(0.94, 400)
    assert lo < lo4 < 0.94 < hi4 < hi  # more items, narrower
    m = with_intervals({"n": 100, "attribute_accuracy": 0.94, "bleu4": 0.3})
    assert m["attribute_accuracy_ci95_low"] == pytest.approx(lo) and "bleu4_ci95_low" not in m
    # a read-back match accuracy is over its own pairs (read_back_n), not over the task's n
    rb = with_intervals({"n": 100, "read_back_match_accuracy": 0.9, "read_back_n": 10})
    assert (rb["read_back_match_accuracy_ci95_low"], rb["read_back_match_accuracy_ci95_high"]) == accuracy_interval(0.9, 10)
    assert rb["read_back_match_accuracy_ci95_low"] < accuracy_interval(0.9, 100)[0]


def test_wer_interval_resamples_utterances():
    from anygpt.eval.metrics import wer_interval, word_error_rate

    refs = [f"the cat sat on mat {i}" for i in range(50)]
    hyps = [r if i % 10 else "the dog sat" for i, r in enumerate(refs)]  # errors in one utterance of ten
    wer = word_error_rate(refs, hyps, numbers_as_words=True)
    lo, hi = wer_interval(refs, hyps, numbers_as_words=True)
    assert lo < wer < hi and lo > 0.0
    assert (lo, hi) == wer_interval(refs, hyps, numbers_as_words=True)  # seeded
    assert wer_interval(refs, refs) == (0.0, 0.0)
    lo2, hi2 = wer_interval(refs * 4, hyps * 4, numbers_as_words=True)
    assert hi2 - lo2 < hi - lo
