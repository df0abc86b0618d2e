"""Evaluation metrics: text normalisation, WER, BLEU-4, CIDEr-D, attribute accuracy, code similarity.

All functions are pure (lists in, numbers out) so that they can be checked by hand on tiny
examples (tests/test_eval_metrics.py does). Conventions:

- WER is corpus-level: total word edits / total reference words (jiwer's), over normalised text
  (lowercase, punctuation stripped, optional numbers → words). Intervals: Wilson for accuracies,
  a percentile bootstrap over items for ratios (scipy.stats).
- BLEU-4 is corpus-level (Papineni et al. 2002): clipped n-gram precisions summed over the corpus,
  geometric mean of n = 1..4, brevity penalty from the closest reference length. No smoothing.
- CIDEr-D (Vedantam et al. 2015, the coco-caption ``CiderD`` scorer): tf-idf n-gram vectors with
  document frequencies over the *references* of the whole evaluation set, n = 1..4, clipped
  hypothesis weights, cosine similarity per n averaged over n and references, a Gaussian length
  penalty ``exp(-(len_hyp - len_ref)^2 / (2 σ^2))`` with σ = 6, times 10.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Callable, Hashable, Iterable, Mapping, Sequence

import jiwer
import numpy as np
from rapidfuzz.distance import Levenshtein
from scipy.stats import binomtest, bootstrap

# ---------------------------------------------------------------------------- normalisation

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """English words for 0 <= n < 1,000,000 (``142`` → ``one hundred forty two``); larger numbers
    are spelled digit by digit."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    if n < 1_000_000:
        rest = n % 1000
        return number_to_words(n // 1000) + " thousand" + ("" if rest == 0 else " " + number_to_words(rest))
    return " ".join(_ONES[int(d)] for d in str(n))


def normalize_text(text: str, numbers_as_words: bool = False) -> str:
    """Lowercase (after NFKC), punctuation → space, collapse whitespace.

    Apostrophes inside words are kept (``don't``); hyphens split words (``fast-paced`` → ``fast
    paced``). With ``numbers_as_words`` digit runs become English words, so ``3`` matches ``three``."""
    text = unicodedata.normalize("NFKC", text).lower()
    if numbers_as_words:
        text = re.sub(r"\d+", lambda m: f" {number_to_words(int(m.group(0)))} ", text)
    text = re.sub(r"(?<![a-z0-9])'|'(?![a-z0-9])", " ", text)  # quotes, not apostrophes
    text = "".join(ch if (ch.isalnum() or ch == "'" or ch.isspace()) else " " for ch in text)
    return " ".join(text.split())


def words(text: str, numbers_as_words: bool = False) -> list[str]:
    return normalize_text(text, numbers_as_words).split()


# ---------------------------------------------------------------------------- edit distance / WER

def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance (substitution, insertion, deletion all cost 1) between two sequences
    of words, codes or characters (rapidfuzz, jiwer's own backend)."""
    return int(Levenshtein.distance(list(a), list(b)))


def _edits(reference: str, hypothesis: str) -> int:
    """Word edits between two normalised texts: jiwer's, or every hypothesis word when the
    reference is empty (jiwer refuses an empty reference)."""
    if not reference:
        return len(hypothesis.split())
    out = jiwer.process_words(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions


def utterance_wer(reference: str, hypothesis: str, numbers_as_words: bool = False) -> float:
    """Word error rate of one utterance after normalisation (1.0 per word when the reference is
    empty and the hypothesis is not; 0.0 when both are empty)."""
    ref, hyp = normalize_text(reference, numbers_as_words), normalize_text(hypothesis, numbers_as_words)
    return _edits(ref, hyp) / max(1, len(ref.split()))


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str], numbers_as_words: bool = False) -> float:
    """Corpus WER: total word edits / total reference words, over normalised text (jiwer's WER;
    an empty reference adds its hypothesis words as insertions)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize_text(r, numbers_as_words) for r in references]
    hyps = [normalize_text(h, numbers_as_words) for h in hypotheses]
    total = sum(len(r.split()) for r in refs)
    return sum(_edits(r, h) for r, h in zip(refs, hyps)) / max(1, total)


def ratio_interval(num: Sequence[float], den: Sequence[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of ``Σnum / Σden``, resampling whole items (pairs)."""
    a, b = np.asarray(num, np.float64), np.asarray(den, np.float64)
    if len(a) < 2:  # one item: every resample is that item
        v = float(a.sum() / b.sum()) if len(a) and b.sum() else 0.0
        return (v, v)
    r = bootstrap((a, b), lambda x, y, axis: x.sum(axis) / np.maximum(y.sum(axis), 1e-12), paired=True,
                  vectorized=True, n_resamples=resamples, method="percentile", rng=np.random.default_rng(seed))
    return (float(r.confidence_interval.low), float(r.confidence_interval.high))


def mean_interval(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean, resampling items."""
    return ratio_interval(values, np.ones(len(values)), resamples, seed)


def wer_interval(references: Sequence[str], hypotheses: Sequence[str], numbers_as_words: bool = False,
                 resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the corpus WER, resampling whole utterances (a model's errors
    cluster in a few utterances, so words are not independent draws)."""
    refs = [normalize_text(r, numbers_as_words) for r in references]
    hyps = [normalize_text(h, numbers_as_words) for h in hypotheses]
    n_words = [len(r.split()) for r in refs]
    if sum(n_words) == 0:
        return (0.0, 0.0)
    return ratio_interval([_edits(r, h) for r, h in zip(refs, hyps)], n_words, resamples, seed)


def resampled_interval(statistic: Callable[[Sequence[int]], float], n_items: int, resamples: int = 500,
                       seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of a corpus statistic (BLEU-4…) that is not a mean over
    items: ``statistic(indices)`` is recomputed on ``resamples`` draws of the items with replacement."""
    if n_items < 2:
        v = float(statistic(list(range(n_items)))) if n_items else 0.0
        return (v, v)
    rng = np.random.default_rng(seed)
    vals = [float(statistic(rng.integers(0, n_items, n_items).tolist())) for _ in range(resamples)]
    return (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5)))


def accuracy_interval(accuracy: float, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of an accuracy measured on ``n`` items."""
    if n <= 0:
        return (0.0, 1.0)
    ci = binomtest(round(accuracy * n), n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def with_intervals(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` plus ``<key>_ci95_low`` / ``_high`` for every ``*accuracy`` and ``*_rate`` key
    (Wilson), over the key's own count ``<key>_n`` where the task gives one (a
    ``*_match_accuracy`` over ``*_n``), else over ``n``. Intervals already given are kept."""
    out = dict(metrics)
    for k, v in metrics.items():
        if not (k.endswith(("accuracy", "_rate")) and isinstance(v, (int, float)) and not isinstance(v, bool)):
            continue
        if f"{k}_ci95_low" in metrics:
            continue
        if f"{k}_n" in metrics:
            n = metrics[f"{k}_n"]
        elif "_match_accuracy" in k:
            n = metrics.get(k.replace("_match_accuracy", "_n"), metrics.get("n", 0))
        else:
            n = metrics.get("n", 0)
        out[f"{k}_ci95_low"], out[f"{k}_ci95_high"] = accuracy_interval(float(v), int(n))
    return out


# ---------------------------------------------------------------------------- BLEU / CIDEr

def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _as_refs(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    return [[r] if isinstance(r, str) else list(r) for r in references]


def bleu4(references: Sequence[str | Sequence[str]], hypotheses: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU-4 over normalised words; each reference item is a string or a list of strings."""
    refs_all = _as_refs(references)
    if len(refs_all) != len(hypotheses):
        raise ValueError(f"{len(refs_all)} reference sets but {len(hypotheses)} hypotheses")
    match = [0] * max_n
    total = [0] * max_n
    hyp_len = ref_len = 0
    for refs, hyp in zip(refs_all, hypotheses):
        h = words(hyp)
        rs = [words(r) for r in refs]
        hyp_len += len(h)
        # closest reference length (ties: the shorter), as in the original script
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1] if rs else 0
        for n in range(1, max_n + 1):
            hc = ngrams(h, n)
            best: Counter = Counter()
            for r in rs:
                best |= ngrams(r, n)
            match[n - 1] += sum(min(c, best[g]) for g, c in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    if hyp_len == 0 or min(match) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(match, total)) / max_n
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(log_p)


def cider_d(
    references: Sequence[str | Sequence[str]],
    hypotheses: Sequence[str],
    max_n: int = 4,
    sigma: float = 6.0,
) -> tuple[float, list[float]]:
    """CIDEr-D: (corpus mean, per-item scores).

    Document frequency of an n-gram = number of items whose reference set contains it;
    weight = tf · (log N − log max(1, df)), N = number of items. Per n, the similarity to one
    reference is ``Σ min(h_g, r_g)·r_g / (‖h‖‖r‖)``, times the length penalty; the item's score is
    the mean over n and over references, × 10."""
    refs_all = [[words(r) for r in rs] for rs in _as_refs(references)]
    hyps = [words(h) for h in hypotheses]
    if len(refs_all) != len(hyps):
        raise ValueError(f"{len(refs_all)} reference sets but {len(hyps)} hypotheses")
    if not hyps:
        return 0.0, []
    df: Counter = Counter()
    for rs in refs_all:
        seen = set()
        for r in rs:
            for n in range(1, max_n + 1):
                seen.update(ngrams(r, n))
        df.update(seen)
    log_n = math.log(float(len(refs_all)))

    def vectors(toks: list[str]) -> list[dict]:
        out = []
        for n in range(1, max_n + 1):
            out.append({g: c * (log_n - math.log(max(1.0, df[g]))) for g, c in ngrams(toks, n).items()})
        return out

    def norm(v: dict) -> float:
        return math.sqrt(sum(x * x for x in v.values()))

    scores = []
    for rs, h in zip(refs_all, hyps):
        hv = vectors(h)
        total = 0.0
        for r in rs:
            rv = vectors(r)
            penalty = math.exp(-((len(h) - len(r)) ** 2) / (2 * sigma**2))
            for hn, rn in zip(hv, rv):
                dot = sum(min(x, rn.get(g, 0.0)) * rn.get(g, 0.0) for g, x in hn.items())
                nh, nr = norm(hn), norm(rn)
                total += (dot / (nh * nr) if nh and nr else 0.0) * penalty
        scores.append(10.0 * total / max_n / max(1, len(rs)))
    return sum(scores) / len(scores), scores


# ---------------------------------------------------------------------------- attributes

# Other surface forms of attribute values (canonical value → aliases; a value always matches itself).
# The harness takes the values from the evaluation manifests' ``attributes`` and adds these.
ALIASES: dict[str, dict[str, list[str]]] = {
    "colour": {"purple": ["violet"], "grey": ["gray"]},
    "shape": {"circle": ["disc", "disk"], "ellipse": ["oval"]},
    "instrument": {"bell": ["bells"], "synth": ["synthesizer"]},
    "tempo": {"slow": ["slowly"], "moderate": ["medium", "moderately"], "fast": ["quick", "quickly"]},
}


def vocabulary_from_values(values: Iterable[str], aliases: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """A vocabulary for the given canonical values, each with its known aliases (and itself)."""
    out: dict[str, list[str]] = {}
    for v in sorted({str(v) for v in values}):
        forms = [v, *(aliases or {}).get(v, [])]
        out[v] = list(dict.fromkeys(forms))
    return out


def extract_attribute(text: str, vocabulary: Mapping[str, Sequence[str]]) -> str | None:
    """The canonical value whose surface form appears first in ``text`` (whole words, after
    normalisation; multi-word forms allowed), or None when none appears."""
    toks = words(text)
    best: tuple[int, int, str] | None = None  # (position, -length, value): earliest, then longest
    for value, forms in vocabulary.items():
        for form in forms:
            f = words(form)
            if not f:
                continue
            for i in range(len(toks) - len(f) + 1):
                if toks[i : i + len(f)] == f:
                    cand = (i, -len(f), value)
                    if best is None or cand < best:
                        best = cand
                    break
    return best[2] if best else None


def extract_attributes(text: str, vocabularies: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, str | None]:
    """``{attribute: value or None}`` for every attribute vocabulary."""
    return {k: extract_attribute(text, v) for k, v in vocabularies.items()}


def attribute_accuracy(
    predicted: Sequence[Mapping[str, str | None]],
    truth: Sequence[Mapping[str, object]],
    keys: Sequence[str],
) -> dict[str, float]:
    """Per-attribute accuracy (``<key>_accuracy``) and ``attribute_accuracy``: every key right.

    Values compare as lowercase strings; a missing prediction (None) is wrong."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions but {len(truth)} truths")
    n = len(truth)
    out: dict[str, float] = {}
    if n == 0:
        return {**{f"{k}_accuracy": 0.0 for k in keys}, "attribute_accuracy": 0.0}

    def same(p, t) -> bool:
        return p is not None and str(p).lower() == str(t).lower()

    for k in keys:
        out[f"{k}_accuracy"] = sum(same(p.get(k), t.get(k)) for p, t in zip(predicted, truth)) / n
    out["attribute_accuracy"] = sum(all(same(p.get(k), t.get(k)) for k in keys) for p, t in zip(predicted, truth)) / n
    return out


# ---------------------------------------------------------------------------- code similarity

def edit_similarity(a: Sequence[int], b: Sequence[int]) -> float:
    """1 − Levenshtein(a, b) / max(len a, len b); 1.0 for two empty sequences."""
    m = max(len(a), len(b))
    return 1.0 if m == 0 else 1.0 - edit_distance(list(a), list(b)) / m


def unigram_overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """Bag-of-codes F1: 2·|a ∩ b| / (|a| + |b|) with multiset intersection; 1.0 for two empties."""
    if not a and not b:
        return 1.0
    inter = sum((Counter(a) & Counter(b)).values())
    return 2.0 * inter / (len(a) + len(b))


def code_similarity(generated: Sequence[Sequence[int]], references: Sequence[Sequence[int]]) -> dict[str, float]:
    """Mean :func:`edit_similarity` and :func:`unigram_overlap` over pairs."""
    pairs = list(zip(generated, references))
    if not pairs:
        return {"code_edit_similarity": 0.0, "code_unigram_overlap": 0.0}
    return {
        "code_edit_similarity": sum(edit_similarity(g, r) for g, r in pairs) / len(pairs),
        "code_unigram_overlap": sum(unigram_overlap(g, r) for g, r in pairs) / len(pairs),
    }
