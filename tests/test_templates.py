"""Templates: masks are decided from token ids; each template's mask boundary is exact."""

import random

import pytest

from anygpt.data.instructions import POOLS, draw_instruction
from anygpt.data.templates import MediaCodes, Message, get_template, voice_response
from anygpt.vocab import IGNORE_INDEX
from anygpt.vocab import VocabLayout, load_base_tokenizer


@pytest.fixture
def grown(base_tokenizer_dir):
    def make(profile):
        tok = load_base_tokenizer(base_tokenizer_dir)
        layout = VocabLayout.from_profile(profile, len(tok), {"image": 64, "speech": 32, "music": 16})
        layout.grow_tokenizer(tok)
        return tok, layout

    return make


def _trained(r):
    return [i for i, l in zip(r.input_ids, r.labels) if l != IGNORE_INDEX]


def test_chat_template_masks_exactly_assistant_turns(grown):
    tok, layout = grown("default")
    t = get_template("chat")
    img = MediaCodes("image", [1, 2, 3])
    msgs = [
        Message("system", "be brief"),
        Message("user", ["describe", img]),
        Message("assistant", "a red circle"),
        Message("user", "now say it"),
        Message("assistant", ["here", MediaCodes("speech", [4, 5])]),
    ]
    r = t.render(msgs, tok, layout)
    assert len(r.input_ids) == len(r.labels)
    end = layout.token_id("<|end|>")
    text = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    want = text("a red circle") + [end] + text("here") + layout.span_ids("speech", [4, 5]) + [end]
    assert _trained(r) == want
    # boundary: the token right before each trained run is the assistant role marker
    asst = layout.token_id("<|assistant|>")
    starts = [i for i in range(1, len(r.labels)) if r.labels[i] != IGNORE_INDEX and r.labels[i - 1] == IGNORE_INDEX]
    assert [r.input_ids[i - 1] for i in starts] == [asst, asst]
    assert r.input_ids[0] == tok.bos_token_id
    # markers are single ids, never split
    assert r.input_ids.count(asst) == 2 and r.input_ids.count(end) == 5


def test_chat_generation_prompt_and_forced_modality(grown):
    tok, layout = grown("default")
    t = get_template("chat")
    r = t.render([Message("user", "draw a star")], tok, layout, loss_on="none", add_generation_prompt=True, force_modality="image")
    assert r.input_ids[-2:] == [layout.token_id("<|assistant|>"), layout.start_id("image")]
    assert set(r.labels) == {IGNORE_INDEX}
    assert t.stop_token_ids(layout, tok) == [layout.token_id("<|end|>")]


def test_inference_prompt_is_prefix_of_training_sample(grown):
    """Train/inference consistency: the prompt the model sees at inference is exactly the prefix of the training sample."""
    for profile, name in [("default", "chat"), ("anygpt", "anygpt-pretrain"), ("anygpt-chat", "anygpt-chat")]:
        tok, layout = grown(profile)
        t = get_template(name)
        user = Message("user", ["Transcribe this speech.", MediaCodes("speech", [3, 4])])
        full = t.render([user, Message("assistant", "hello world")], tok, layout)
        prompt = t.render([user], tok, layout, loss_on="none", add_generation_prompt=True)
        assert full.input_ids[: len(prompt.input_ids)] == prompt.input_ids, name
        first_trained = next(i for i, l in enumerate(full.labels) if l != IGNORE_INDEX)
        assert first_trained == len(prompt.input_ids), name


def test_anygpt_pretrain_both_directions(grown):
    tok, layout = grown("anygpt")
    t = get_template("anygpt-pretrain")
    codes = MediaCodes("image", [7, 8])
    # X -> text
    x2t = t.render([Message("user", ["Describe the scene in this picture.", codes]), Message("assistant", "a cat")], tok, layout)
    text = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    assert _trained(x2t) == text(" a cat") + [layout.token_id("<eos>"), tok.eos_token_id]
    assert x2t.input_ids[1] == layout.token_id("[Human]") and layout.span_ids("image", [7, 8])[0] in x2t.input_ids
    # text -> X: the media span is the trained part
    t2x = t.render([Message("user", "Draw this. This is input: a cat"), Message("assistant", codes)], tok, layout)
    tr = _trained(t2x)
    assert tr[-4:] == layout.span_ids("image", [7, 8])[-2:] + [layout.token_id("<eos>"), tok.eos_token_id]
    assert layout.span_ids("image", [7, 8]) == [i for i in tr if i >= layout.base_vocab_size][:4]
    # the reference computed loss on every token in pretraining: available, not default
    allr = t.render([Message("user", "hi"), Message("assistant", "yo")], tok, layout, loss_on="all")
    assert allr.labels == allr.input_ids


def test_anygpt_pretrain_rejects_multi_turn(grown):
    tok, layout = grown("anygpt")
    with pytest.raises(ValueError, match="one user/assistant pair"):
        msgs = [Message("user", "a"), Message("assistant", "b"), Message("user", "c")]
        get_template("anygpt-pretrain").render(msgs, tok, layout)


def test_anygpt_chat_format_matches_reference_string(grown):
    tok, layout = grown("anygpt-chat")
    t = get_template("anygpt-chat")
    msgs = [Message("user", "Hello!"), Message("assistant", "Hi!"), Message("user", "How are you?")]
    r = t.render(msgs, tok, layout, loss_on="none", add_generation_prompt=True)
    decoded = tok.decode(r.input_ids, skip_special_tokens=False)
    sys_line = t.system
    expected = f"{sys_line}\n[Human]: Hello!<eoh>\n[MMGPT]: Hi!<eos>\n[Human]: How are you?<eoh>\n[MMGPT]:"
    norm = lambda s: "".join(s.replace(tok.bos_token or "", "").split())
    assert norm(decoded) == norm(expected)
    # masks: only "Hi!" + <eos> trained in the full conversation
    full = t.render(msgs[:2], tok, layout)
    assert _trained(full) == tok(" Hi!", add_special_tokens=False)["input_ids"] + [layout.token_id("<eos>")]


def test_inline_reference_token_strings_are_parsed_in_messages(grown):
    tok, layout = grown("default")
    t = get_template("chat")
    msg = "look " + layout.codes_to_string("image", [9, 10])
    r = t.render([Message("user", msg), Message("assistant", "ok")], tok, layout)
    assert layout.span_ids("image", [9, 10]) == r.input_ids[r.input_ids.index(layout.start_id("image")):][:4]


def test_roles_must_alternate(grown):
    tok, layout = grown("default")
    with pytest.raises(ValueError, match="expected 'user'"):
        get_template("chat").render([Message("assistant", "x")], tok, layout)
    with pytest.raises(ValueError, match="unknown role"):
        Message("bot", "x")
    with pytest.raises(ValueError, match="unknown template"):
        get_template("vicuna")


def test_voice_response_markers_are_single_ids(grown):
    tok, layout = grown("default")
    content = voice_response("what time is it", "it is noon", MediaCodes("speech", [1, 2]))
    r = get_template("chat").render([Message("user", "hi"), Message("assistant", content)], tok, layout)
    tr = _trained(r)
    assert layout.token_id("<-Ins->") in tr and layout.token_id("<-Res->") in tr
    assert tr[-5:] == layout.span_ids("speech", [1, 2]) + [layout.token_id("<|end|>")]


def test_instruction_pools_have_dozens_per_task_and_direction():
    assert len(POOLS) == 6
    for key, pool in POOLS.items():
        assert len(pool) >= 24 and len(set(pool)) == len(pool), key
    rng = random.Random(1)
    drawn = {draw_instruction("image", "x2t", rng) for _ in range(200)}
    assert len(drawn) > 10


def test_batch_renderer_cache_overflow_keeps_ids(grown):
    """The text cache is bounded: when a batch overflows it, the batch still renders the ids a
    fresh renderer gives (cached pieces dropped mid-batch must not go missing)."""
    from anygpt.data.templates import BatchRenderer

    tok, layout = grown("default")
    t = get_template("chat")
    convs = [[Message("user", f"question {i}"), Message("assistant", f"answer {i % 3}")] for i in range(12)]
    want = BatchRenderer(t, tok, layout).render(convs)
    small = BatchRenderer(t, tok, layout, cache_size=5)
    assert small.render(convs[:2]) == want[:2] and small.render(convs) == want and len(small.cache) <= 5
