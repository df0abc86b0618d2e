"""`anygpt eval` through the user's path: the chat session `anygpt chat` runs, beside the harness.

A tiny random Llama with the demo k-means image and speech cards (the conftest fixtures) on a few
held-out shape pictures and recordings. The scores are meaningless (random weights); what is
checked is that the chat path IS the chat: an item replayed through `anygpt chat --script` with
the recorded question and seed gives the recorded reply, that changing chat's preset or template
changes what the chat path records, and that the multi-turn metrics count what they say."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread(torch_one_thread):
    """Every test of this module runs its tiny models on one thread (see conftest)."""


@pytest.fixture(scope="module")
def model_dir(infer_support, base_tokenizer_dir, image_tok_dir, speech_tok_dir, tmp_path_factory) -> Path:
    """A random 2-layer Llama on our chat template with the demo image and speech cards; its
    exported settings keep speech short and images the best of 2 (chat and eval both read them)."""
    out = tmp_path_factory.mktemp("chat_eval") / "model"
    return infer_support.make_bundle(out, base_tokenizer_dir, cards={"image": image_tok_dir, "speech": speech_tok_dir},
                                     generation={"speech": {"max_new_tokens": 12}, "image": {"best_of": 2}})


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    """Held-out manifests as the demo corpus writes them: shape pictures drawn by the corpus's own
    drawer (colour and shape attributes) and two short recordings with transcripts."""
    import soundfile as sf

    from anygpt.data.shapes import draw_shape_item

    sys.path.insert(0, str(Path(__file__).parent))
    from modality_fixtures import vowel, write_manifest

    root = tmp_path_factory.mktemp("heldout")
    (root / "image").mkdir()
    (root / "speech").mkdir()
    rows = []
    for i in range(4):
        item = draw_shape_item(random.Random(i))
        item.image.save(root / "image" / f"p{i}.png")
        rows.append({"id": f"p{i}", "path": f"p{i}.png", "text": item.caption,
                     "attributes": {k: item.attributes[k] for k in ("colour", "shape")}})
    write_manifest(root / "image" / "eval.jsonl", rows)
    rows = []
    for i, text in enumerate(["hello world", "one two three"]):
        sf.write(root / "speech" / f"s{i}.wav", vowel(np.random.default_rng(i), seconds=0.6), 16000)
        rows.append({"id": f"s{i}", "path": f"s{i}.wav", "text": text})
    write_manifest(root / "speech" / "eval.jsonl", rows)
    return root


@pytest.fixture(scope="module")
def both_run(model_dir, heldout, tmp_path_factory) -> Path:
    """`anygpt eval` with its defaults for the path (both) on four tasks and the multi-turn one."""
    from anygpt.cli import main

    out = tmp_path_factory.mktemp("eval_both")
    assert main(["eval", "--model", str(model_dir), "--data", str(heldout), "--out", str(out / "eval"),
                 "--tasks", "image_to_text,text_to_image,asr,multi_turn", "--limit", "2", "--sessions", "1", "--preset", "bundle",
                 "--report", str(out / "report")]) == 0
    return out


def _load(eval_dir: Path, key: str) -> dict:
    return json.loads((eval_dir / f"{key}.json").read_text())


def test_both_paths_are_reported_side_by_side(both_run):
    results = json.loads((both_run / "eval" / "results.json").read_text())
    assert set(results) == {"image_to_text", "image_to_text.chat", "text_to_image", "text_to_image.chat", "asr", "asr.chat",
                            "multi_turn"}
    assert {r["path"] for k, r in results.items() if k.endswith(".chat") or k == "multi_turn"} == {"chat"}
    chat = _load(both_run / "eval", "image_to_text.chat")
    assert chat["decoding"]["preset"] == "demo" and chat["decoding"]["template"].startswith("chat")
    m = chat["metrics"]
    assert m["n"] == 2 and 0.0 <= m["attribute_accuracy_ci95_low"] <= m["attribute_accuracy"] <= m["attribute_accuracy_ci95_high"]
    assert m["asked_modality_rate_n"] == 2 and "asked_modality_rate_ci95_low" in m
    # each chat item says what the user asked and what came back
    for ex in chat["examples"]:
        assert ex["question"] and ex["reply_modality"] in ("text", "image", "speech", "none") and ex["asked"] == "text"
        assert "<soim>" in ex["prompt"] or "image" in ex["prompt"]
    flat = json.loads((both_run / "report" / "metrics.json").read_text())
    assert {"image_to_text.attribute_accuracy", "image_to_text.chat.attribute_accuracy", "asr.chat.wer",
            "multi_turn.asked_modality_rate", "multi_turn.later_caption_attribute_accuracy"} <= set(flat)
    md = (both_run / "report" / "report.md").read_text()
    assert "| harness (95 % interval) | chat (95 % interval) |" in md


def test_a_chat_path_item_replays_in_anygpt_chat(both_run, model_dir, heldout, tmp_path):
    """The recorded question, attachment and seed, run through `anygpt chat --script`, give the
    recorded reply: the chat path is the session the chat command runs, not a look-alike."""
    from anygpt.cli import main

    for key, attach in (("image_to_text.chat", "image"), ("asr.chat", "speech"), ("text_to_image.chat", None)):
        ex = _load(both_run / "eval", key)["examples"][0]
        line = {"text": ex["question"]}
        if attach:
            line["attachments"] = [{"modality": attach, "path": ex["input"]}]
        script = tmp_path / f"{key}.jsonl"
        script.write_text(json.dumps(line) + "\n")
        transcript = tmp_path / f"{key}.out.jsonl"
        assert main(["chat", "--model", str(model_dir), "--script", str(script), "--transcript", str(transcript),
                     "--seed", str(ex["seed"]), "--out", str(tmp_path / "media")]) == 0
        [turn] = [json.loads(x) for x in transcript.read_text().splitlines()]
        assert turn["text"] == ex["reply"], key
        got = turn["media"][0]["modality"] if turn["media"] else ("text" if turn["text"] else "none")
        assert got == ex["reply_modality"], key


def test_the_chat_path_follows_chats_preset_and_template(model_dir, heldout, tmp_path, monkeypatch):
    """Change chat's default preset or its template and the chat path's record changes with it,
    while the harness's does not."""
    from anygpt.data.templates import get_template
    from anygpt.eval.harness import EvalConfig, run_eval
    from anygpt.inference import settings

    def run(name: str) -> dict:
        cfg = EvalConfig(data=heldout, out=tmp_path / name, tasks=["image_to_text"], limit=1, path="both")
        return run_eval(cfg, model_dir=model_dir)

    base = run("base")
    short = settings.replace(settings.PRESETS["demo"]["text"], max_new_tokens=1, do_sample=False)
    monkeypatch.setitem(settings.PRESETS["demo"], "text", short)
    cut = run("short")
    assert cut["image_to_text.chat"]["decoding"]["max_new_tokens"] == 1
    assert all(len(e["reply"].split()) <= 1 for e in cut["image_to_text.chat"]["examples"])
    assert [e["output"] for e in cut["image_to_text"]["examples"]] == [e["output"] for e in base["image_to_text"]["examples"]]
    monkeypatch.undo()
    chat = type(get_template("chat"))
    monkeypatch.setattr(chat, "compose_user", lambda self, media, text: [text, *media])
    swapped = run("text_first")
    for a, b in zip(base["image_to_text.chat"]["examples"], swapped["image_to_text.chat"]["examples"]):
        assert a["prompt"] != b["prompt"] and b["prompt"].index(b["question"]) < b["prompt"].index("<soim>")


def test_multi_turn_counts_replies_in_the_asked_modality(model_dir, heldout, tmp_path, monkeypatch):
    """A model that answers every turn with speech (issue 16's later "What is in this picture?"
    turns, made certain): the multi-turn metrics say so, turn kind by turn kind."""
    from anygpt.eval.chat_path import SCRIPT
    from anygpt.eval.harness import EvalConfig, run_eval
    from anygpt.model.bundle import load_bundle

    bundle = load_bundle(model_dir)
    speech_start = bundle.layout.start_id("speech")

    def always_speech(module, args, output):
        output.logits[..., speech_start] += 1e4
        return output

    bundle.model.register_forward_hook(always_speech)
    cfg = EvalConfig(data=heldout, out=tmp_path / "mt", tasks=["multi_turn"], path="chat", sessions=2)
    m = run_eval(cfg, bundle=bundle)["multi_turn"]["metrics"]
    assert m["n"] == 2 and m["asked_modality_rate_n"] == 2 * len(SCRIPT)
    assert m["asked_modality_rate"] == pytest.approx(1 / len(SCRIPT))  # only "Say it." asked for speech
    assert m["say_it_asked_modality_rate"] == 1.0 and m["caption_again_asked_modality_rate"] == 0.0
    assert m["later_caption_speech_rate"] == 1.0 and m["later_caption_speech_rate_n"] == 4
    assert m["first_caption_attribute_accuracy"] == 0.0 and m["later_caption_attribute_accuracy"] == 0.0
    assert m["later_caption_speech_rate_ci95_low"] > 0.3


def test_a_free_reply_that_opens_a_picture_gets_the_picture_settings(model_dir, tmp_path):
    """"Draw …" without /output: the model's first token opens an image span, so the reply is
    generated as an image with the image settings, even where the text budget (here 5 tokens)
    could not hold one (the constraints would never have let the span open)."""
    from anygpt.inference.chat import ChatSession
    from anygpt.model.bundle import load_bundle

    bundle = load_bundle(model_dir)
    soim = bundle.layout.start_id("image")
    hook = bundle.model.register_forward_hook(lambda m, a, out: out.logits.__setitem__((..., soim), out.logits[..., soim] + 1e4) or out)
    session = ChatSession(bundle, out_dir=tmp_path, seed=0, overrides={"max_new_tokens": 5})
    reply = session.send("Draw a red circle.")
    hook.remove()
    assert reply.output == "image" and [m["modality"] for m in reply.media] == ["image"]
    assert (tmp_path / Path(reply.media[0]["path"]).name).read_bytes()[:4] == b"\x89PNG"


def test_multi_turn_on_the_harness_path_is_refused_in_one_line(model_dir, heldout, tmp_path):
    from anygpt.eval.harness import EvalConfig, run_eval

    with pytest.raises(ValueError, match="multi_turn runs on the chat path only"):
        run_eval(EvalConfig(data=heldout, out=tmp_path, tasks=["multi_turn"], path="harness"), model_dir=model_dir)
    with pytest.raises(ValueError, match="unknown evaluation path 'user'"):
        run_eval(EvalConfig(data=heldout, out=tmp_path, tasks=["asr"], path="user"), model_dir=model_dir)
