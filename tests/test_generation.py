"""Constrained generation: spans never hold a foreign code, fixed lengths and music layer slots hold,
forced modalities are obeyed, batches and beams keep per-row state."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anygpt.inference.constraints import ModalityLogitsProcessor, SpanRule
from anygpt.modality.base import CodeLayout
from anygpt.vocab import VocabLayout


BASE = 40
LAYOUT = VocabLayout.from_profile("default", BASE, {"image": 12, "speech": 6, "music": 16})
RULES = {
    "image": SpanRule("image", CodeLayout(1, 10, 3)),  # the layout reserves 12; the tokenizer decodes 10
    "speech": SpanRule.from_tokenizer("speech", 6, None),  # no tokenizer: one free stream of the layout's codes
    "music": SpanRule("music", CodeLayout(2, 8)),  # two layers frame-major, as EnCodec (real cards: test_every_card)
}
STOP = [LAYOUT.token_id("<|end|>")]
WIDTH = LAYOUT.padded_vocab_size


def well_formed_errors(ids: list[int], layout: VocabLayout, rules: dict[str, SpanRule], stop: list[int],
                       allow_media: bool = True, text_ids: int | None = None, closed: bool = False) -> list[str]:
    """An independent checker of a generated sequence (not the processor's own code)."""
    text_ids = layout.vocab_size if text_ids is None else text_ids
    errs: list[str] = []
    starts = {layout.start_id(m): m for m in layout.modality_names}
    ends = {layout.end_id(m): m for m in layout.modality_names}
    cur, n = None, 0
    for pos, t in enumerate(ids):
        if t >= text_ids:
            errs.append(f"{pos}: padded id {t}")
        elif cur is None:
            if t in starts:
                if not allow_media:
                    errs.append(f"{pos}: start marker in a text-only reply")
                cur, n = starts[t], 0
            elif t in ends:
                errs.append(f"{pos}: end marker outside a span")
            elif layout.modality_of_id(t) is not None:
                errs.append(f"{pos}: bare {layout.modality_of_id(t)} code outside a span")
            elif t in layout.marker_ids() and t not in stop and t not in [layout.token_id(x) for x in layout.extra]:
                errs.append(f"{pos}: role marker {t} generated")
        else:
            r = rules[cur]
            if t == layout.end_id(cur):
                if r.tokens_per_item and n != r.tokens_per_item:
                    errs.append(f"{pos}: {cur} span closed after {n} codes, needs {r.tokens_per_item}")
                if n == 0:
                    errs.append(f"{pos}: empty {cur} span")
                if n % r.layers:
                    errs.append(f"{pos}: {cur} span closed mid-frame ({n} codes, layers {r.layers})")
                cur = None
                continue
            if layout.modality_of_id(t) != cur:
                errs.append(f"{pos}: id {t} inside a {cur} span")
                continue
            code = t - layout.code_range(cur).start
            if code >= r.n_codes:
                errs.append(f"{pos}: {cur} code {code} beyond the tokenizer's {r.n_codes}")
            if r.layers > 1 and code // r.layer_width != n % r.layers:
                errs.append(f"{pos}: {cur} code {code} in layer {code // r.layer_width}, slot wants {n % r.layers}")
            if r.tokens_per_item and n >= r.tokens_per_item:
                errs.append(f"{pos}: {cur} span longer than {r.tokens_per_item}")
            n += 1
    if closed and cur is not None:
        errs.append(f"ends inside a {cur} span after {n} codes")
    return errs


id_groups = st.sampled_from(["text", "image", "speech", "music", "markers", "pad"])


def group_ids(g: str) -> list[int]:
    if g == "text":
        return list(range(BASE))
    if g == "markers":
        return sorted(LAYOUT.marker_ids())
    if g == "pad":
        return list(range(LAYOUT.vocab_size, WIDTH))
    r = LAYOUT.code_range(g)
    return list(range(r.start, r.stop + 2))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    prefixes=st.lists(st.lists(st.integers(0, BASE - 1), min_size=1, max_size=5), min_size=1, max_size=4),
    open_span=st.lists(st.sampled_from([None, "image", "speech", "music"]), min_size=4, max_size=4),
    favour=st.lists(id_groups, min_size=1, max_size=3),
    bias=st.floats(0, 1e4),
    allow_media=st.booleans(),
    budget=st.sampled_from([None, 4, 5, 7, 12]),
)
def test_processor_never_allows_a_foreign_code(seed, prefixes, open_span, favour, bias, allow_media, budget):
    """Random logits, pushed towards random id groups (foreign codes, markers, padding), for a
    batch whose rows start in random states: every sampled step keeps every row well formed; with
    a length budget, every span is also closed when the budget runs out."""
    proc = ModalityLogitsProcessor(LAYOUT, RULES, WIDTH, LAYOUT.vocab_size, STOP, allow_media=allow_media)
    rows = []
    for i, p in enumerate(prefixes):
        m = open_span[i]
        rows.append(p + ([LAYOUT.start_id(m)] if m and allow_media else []))
    T = max(map(len, rows))
    ids = torch.tensor([[0] * (T - len(r)) + r for r in rows])  # left padding with a text id
    steps = budget or 12
    proc.max_length = T + budget if budget else None
    g = torch.Generator().manual_seed(seed)
    push = torch.zeros(WIDTH)
    for grp in favour:
        push[group_ids(grp)] += bias
    for _ in range(steps):
        scores = torch.randn(len(rows), WIDTH, generator=g) * 10 + push
        out = proc(ids, scores)
        assert torch.isfinite(out).any(dim=1).all(), "a row had no allowed id"
        probs = torch.softmax(out, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=g)
        ids = torch.cat([ids, nxt], dim=1)
    for r, row in zip(rows, ids.tolist()):
        gen = row[T - len(r):]
        errs = well_formed_errors(gen, LAYOUT, RULES, STOP, allow_media, closed=budget is not None)
        assert not errs, errs


def test_fixed_length_forces_the_end_and_music_slots():
    proc = ModalityLogitsProcessor(LAYOUT, RULES, WIDTH, LAYOUT.vocab_size, STOP)
    img = LAYOUT.code_range("image").start
    allowed = proc.allowed(torch.tensor([[5, LAYOUT.start_id("image"), img, img + 1, img + 2]]))[0]
    assert allowed.nonzero().flatten().tolist() == [LAYOUT.end_id("image")]
    allowed = proc.allowed(torch.tensor([[5, LAYOUT.start_id("image")]]))[0]
    assert allowed.nonzero().flatten().tolist() == list(range(img, img + 10))  # no end, no reserved codes 10-11
    mu = LAYOUT.code_range("music").start
    one = proc.allowed(torch.tensor([[LAYOUT.start_id("music"), mu + 3]]))[0]
    assert one.nonzero().flatten().tolist() == list(range(mu + 8, mu + 16))  # layer 1, no end mid-frame
    two = proc.allowed(torch.tensor([[LAYOUT.start_id("music"), mu + 3, mu + 9]]))[0]
    assert two.nonzero().flatten().tolist() == list(range(mu, mu + 8)) + [LAYOUT.end_id("music")]


def test_outside_spans_text_only_bans_starts_codes_and_padding():
    proc = ModalityLogitsProcessor(LAYOUT, RULES, WIDTH, LAYOUT.vocab_size, STOP, allow_media=False)
    allowed = set(proc.allowed(torch.tensor([[3, 4]]))[0].nonzero().flatten().tolist())
    assert allowed == set(range(BASE)) | set(STOP) | {LAYOUT.token_id(t) for t in LAYOUT.extra}
    media = ModalityLogitsProcessor(LAYOUT, RULES, WIDTH, LAYOUT.vocab_size, STOP)
    allowed = set(media.allowed(torch.tensor([[3, 4]]))[0].nonzero().flatten().tolist())
    assert {LAYOUT.start_id(m) for m in LAYOUT.modality_names} <= allowed
    assert not allowed & set(range(LAYOUT.vocab_size, WIDTH))


# ---------------------------------------------------------------- with a tiny random Llama
@pytest.fixture(scope="module")
def bundle(tmp_path_factory, base_tokenizer_dir, demo_cards, encodec_music_card, infer_support):
    """Demo image (4 codes) and speech cards; music is a random-weight EnCodec card: 2 layers frame-major."""
    from anygpt.model.bundle import load_bundle

    cards = {**demo_cards, "music": encodec_music_card}
    d = infer_support.make_bundle(tmp_path_factory.mktemp("gen") / "model", base_tokenizer_dir, cards)
    return load_bundle(d)


def _check(bundle, replies, output):
    from anygpt.inference.constraints import rules_from_bundle

    rules = rules_from_bundle(bundle)
    stop = bundle.template.stop_token_ids(bundle.layout, bundle.tokenizer)
    for r in replies:
        errs = well_formed_errors(r, bundle.layout, rules, stop, allow_media=output != "text",
                                  text_ids=len(bundle.tokenizer), closed=True)
        assert not errs, errs


@pytest.mark.parametrize("output", ["image", "speech", "music"])
def test_tiny_model_forced_media_batch(bundle, output):
    from anygpt.inference.generation import build_prompt_ids, generate_batch
    from anygpt.inference.settings import GenerationSettings

    prompts = [build_prompt_ids(bundle, t, output_modality=output) for t in ("a red circle", "hello", "one two three four five")]
    replies = generate_batch(bundle, prompts, output, GenerationSettings(max_new_tokens=24, temperature=1.5, top_k=0), seed=1)
    _check(bundle, replies, output)
    for r in replies:
        pieces = bundle.layout.split_ids(r)
        assert [k for k, _ in pieces] == [output]
        assert r[0] == bundle.layout.start_id(output)
        if output == "image":  # fixed length even though the model never learned it
            assert len(pieces[0][1]) == 4 and r[-1] == bundle.layout.end_id("image")
        if output == "music":  # whole frames, each layer's code in its own slot (layer q: [q·1024, (q+1)·1024))
            codes = np.asarray(pieces[0][1])
            assert len(codes) % 2 == 0 and (codes.reshape(-1, 2) // 1024 == [0, 1]).all(), codes
            assert bundle.tokenizers["music"].decode(codes).size == max(len(codes) // 2, 1) * bundle.tokenizers["music"].hop


def test_tiny_model_text_and_free_replies_and_beams(bundle):
    from anygpt.inference.generation import build_prompt_ids, generate_batch
    from anygpt.inference.settings import GenerationSettings

    p = build_prompt_ids(bundle, "hello", output_modality="text")
    replies = generate_batch(bundle, [p, p[:4]], "text", GenerationSettings(max_new_tokens=16, temperature=2.0, top_k=0), seed=0)
    _check(bundle, replies, "text")
    free = generate_batch(bundle, [build_prompt_ids(bundle, "hi")] * 3, None, GenerationSettings(max_new_tokens=24, temperature=2.0, top_k=0), seed=3)
    _check(bundle, free, None)
    beams = generate_batch(bundle, [build_prompt_ids(bundle, "hi", output_modality="image")], "image",
                           GenerationSettings(max_new_tokens=10, do_sample=False, num_beams=3))
    _check(bundle, beams, "image")
    assert len(bundle.layout.split_ids(beams[0])[0][1]) == 4


def test_prompt_with_attachment_codes_and_bundle_settings(bundle):
    from anygpt.inference.generation import build_prompt_ids
    from anygpt.inference.settings import resolve_settings

    ids = build_prompt_ids(bundle, "what is this", [("image", [1, 2, 3, 4])], output_modality="text")
    assert bundle.layout.span_ids("image", [1, 2, 3, 4]) == ids[ids.index(bundle.layout.start_id("image")):][:6]
    assert ids[-1] == bundle.layout.token_id("<|assistant|>")
    s = resolve_settings("reference", "music", {"music": {"top_k": 7}}, {"max_new_tokens": 9})
    assert (s.top_k, s.max_new_tokens, s.repetition_penalty) == (7, 9, 1.15)
    with pytest.raises(ValueError, match="unknown generation setting"):
        resolve_settings("demo", "image", {"image": {"topk": 3}})
    with pytest.raises(ValueError, match="cannot output"):
        build_prompt_ids(bundle, "x", output_modality="video")


@pytest.mark.parametrize("scale", [1.0, 0.0, 3.0])
def test_classifier_free_guidance_follows_its_formula(bundle, scale):
    """Greedy first image code under guidance = argmax over the allowed codes of
    scale * (log p(·|request) - log p(·|empty request)) + log p(·|empty request)."""
    from anygpt.inference.constraints import rules_from_bundle
    from anygpt.inference.generation import build_prompt_ids, generate_batch
    from anygpt.inference.settings import GenerationSettings

    codes = torch.tensor(list(bundle.layout.code_range("image"))[: rules_from_bundle(bundle)["image"].n_codes])
    head = bundle.model.get_output_embeddings().weight
    saved = head.data.clone()
    try:  # grown rows start as one mean vector (all codes tie): give them their own directions
        head.data[codes] += torch.randn(len(codes), head.shape[1], generator=torch.Generator().manual_seed(0))
        prompts = [build_prompt_ids(bundle, t, output_modality="image") for t in ("a red circle", "one two", "hello")]
        replies = generate_batch(bundle, prompts, "image", GenerationSettings(max_new_tokens=8, do_sample=False, guidance_scale=scale))
        _check(bundle, replies, "image")
        empty = build_prompt_ids(bundle, "", output_modality="image")
        changed = []
        with torch.no_grad():
            uncond = torch.log_softmax(bundle.model(torch.tensor([empty])).logits[0, -1].float(), -1)[codes]
            for p, r in zip(prompts, replies):
                cond = torch.log_softmax(bundle.model(torch.tensor([p])).logits[0, -1].float(), -1)[codes]
                assert r[1] == int(codes[(scale * (cond - uncond) + uncond).argmax()])
                changed.append(r[1] != int(codes[cond.argmax()]))
        assert any(changed) == (scale != 1.0)  # the guidance did change choices (so this test can fail)
        beams = generate_batch(bundle, prompts[:2], "image", GenerationSettings(max_new_tokens=8, do_sample=False, num_beams=3,
                                                                              guidance_scale=scale))
        _check(bundle, beams, "image")  # beams multiply the rows: the unconditional branch must match them
    finally:
        head.data.copy_(saved)


def test_read_back_scores_are_the_models_own_caption_likelihood(bundle):
    """log p(text | media) of each pair = minus the summed loss transformers computes for the
    media→text turn, whatever else is in the padded batch."""
    from anygpt.data.instructions import POOLS
    from anygpt.data.templates import MediaCodes, Message
    from anygpt.inference.generation import read_back_scores

    codes = [[1, 2, 3, 4] * 4, [5, 0] * 8, [7] * 16]
    texts = ["a red circle", "a large blue star on a grey background", "x"]
    scores = read_back_scores(bundle, "image", codes, texts)
    assert scores == pytest.approx(read_back_scores(bundle, "image", codes, texts, batch_size=1), abs=1e-4)
    for c, t, s in zip(codes, texts, scores):
        r = bundle.template.render([Message("user", [POOLS[("image", "x2t")][0] + " ", MediaCodes("image", c)]),
                                    Message("assistant", t)], bundle.tokenizer, bundle.layout, loss_on="assistant")
        n = sum(1 for x in r.labels[1:] if x != -100)
        assert n > len(bundle.tokenizer(t, add_special_tokens=False)["input_ids"])  # the text and its end of turn
        with torch.no_grad():
            loss = bundle.model(torch.tensor([r.input_ids]), labels=torch.tensor([r.labels])).loss
        assert s == pytest.approx(-float(loss) * n, rel=1e-4)


def test_best_of_keeps_the_sample_that_reads_back_best(bundle):
    from anygpt.inference.generation import build_prompt_ids, generate_batch, read_back_scores
    from anygpt.inference.settings import GenerationSettings

    texts = ["a red circle", "a green square"]
    prompts = [build_prompt_ids(bundle, t, output_modality="image") for t in texts]
    plain = GenerationSettings(max_new_tokens=40, temperature=1.5, top_k=0)
    best = generate_batch(bundle, prompts, "image", replace(plain, best_of=4), seed=3, requests=texts)
    _check(bundle, best, "image")
    # the same draw, unranked: prompts repeated best_of times under the same seed
    many = generate_batch(bundle, [p for p in prompts for _ in range(4)], "image", plain, seed=3)
    codes = [c for r in many for kind, c in bundle.layout.split_ids(r) if kind == "image"]
    scores = read_back_scores(bundle, "image", codes, [t for t in texts for _ in range(4)])
    for i in range(2):
        group = many[4 * i: 4 * i + 4]
        assert len({tuple(g) for g in group}) > 1  # the candidates differ, so the choice matters
        assert best[i] == group[max(range(4), key=lambda k: scores[4 * i + k])]
    with pytest.raises(ValueError, match="request text"):
        generate_batch(bundle, prompts, "image", replace(plain, best_of=2))
    with pytest.raises(ValueError, match="needs do_sample"):
        generate_batch(bundle, prompts, "image", replace(plain, best_of=2, do_sample=False), requests=texts)


def test_one_preset_table_serves_chat_eval_and_the_benchmarks():
    """Eval's presets are the chat table's entries (one `greedy`), plus `bundle`: the model's
    exported settings over `default`."""
    from types import SimpleNamespace

    from anygpt.eval.generation import decoding_settings, preset_names
    from anygpt.inference.settings import PRESETS

    assert decoding_settings("greedy") == PRESETS["greedy"] and decoding_settings("paper") == PRESETS["paper"]
    assert preset_names() == [*PRESETS, "bundle"]
    s = decoding_settings("bundle", SimpleNamespace(generation={"speech": {"max_new_tokens": 20}}))
    assert s["speech"].max_new_tokens == 20 and s["speech"].do_sample is False and s["image"] == PRESETS["default"]["image"]
    with pytest.raises(ValueError, match="unknown decoding preset 'fast'; known: reference, demo, default, greedy"):
        decoding_settings("fast")
    with pytest.raises(ValueError, match="unknown generation setting"):
        decoding_settings("bundle", SimpleNamespace(generation={"image": {"temprature": 0.5}}))
