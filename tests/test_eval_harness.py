"""`anygpt eval` end to end on a tiny random Llama bundle with the demo (k-means) tokenizer cards.

The numbers are meaningless (random weights); what is checked is that every task runs through
prompt building, constrained batched generation, decoding and scoring, and writes well-formed
files with the keys the demo's metrics.json relies on."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from anygpt.data.shapes import COLOURS
from anygpt.eval import metrics as M

_spec = importlib.util.spec_from_file_location("eval_support", Path(__file__).with_name("eval_support.py"))
eval_support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_support)  # a helper shared with test_demo (tests are not a package)

RATE = 8000


def _tone(freq: float, seconds: float, bright: bool) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    y = sum(np.sin(2 * np.pi * k * freq * t) / (k if bright else k**3) for k in range(1, 6))
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def _write_corpus(root: Path) -> None:
    import soundfile as sf

    def manifest(modality, split, rows):
        p = root / modality / f"{split}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))

    rows = []
    for i, (colour, shape) in enumerate([("red", "circle"), ("blue", "square"), ("red", "square")]):
        img = Image.new("RGB", (32, 32), "white")
        d = ImageDraw.Draw(img)
        (d.ellipse if shape == "circle" else d.rectangle)([6, 6, 26, 26], fill=COLOURS[colour])
        img.save(root / f"img{i}.png")
        rows.append({"id": f"img{i}", "path": f"../img{i}.png", "text": f"a {colour} {shape}", "attributes": {"colour": colour, "shape": shape}})
    (root / "image").mkdir(parents=True, exist_ok=True)
    manifest("image", "test", rows)
    rows = []
    for i, text in enumerate(["hello world", "one two three"]):
        sf.write(root / f"sp{i}.wav", _tone(300 + 100 * i, 0.6, True), RATE)
        rows.append({"id": f"sp{i}", "path": str(root / f"sp{i}.wav"), "text": text, "attributes": {}})
    manifest("speech", "test", rows)
    (root / "bad.wav").write_bytes(b"not audio")
    with open(root / "speech" / "test.jsonl", "a") as f:
        f.write(json.dumps({"id": "bad", "path": str(root / "bad.wav"), "text": "broken"}) + "\n{not json\n")
    for split, n in (("train", 4), ("test", 2)):
        rows = []
        for i in range(n):
            inst = ["flute", "organ"][i % 2]
            name = f"mu_{split}{i}.wav"
            sf.write(root / name, _tone(220 * (1 + 0.1 * i), 1.0, inst == "organ"), RATE)
            rows.append({"id": f"mu_{split}{i}", "path": f"../{name}", "text": f"a slow {inst} melody",
                         "attributes": {"instrument": inst, "tempo": "slow", "key": "C major", "mood": "calm"}})
        manifest("music", split, rows)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(torch_one_thread):
    """Every test of this module runs its tiny models on one thread (see conftest)."""


@pytest.fixture(scope="module")
def tiny_bundle_dir(base_tokenizer_dir, demo_cards, tmp_path_factory) -> Path:
    """A random 2-layer Llama with the `default` layout, chat template and the demo tokenizer cards
    (image: 4 codes of 16; speech and music: 32 codes)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from anygpt.data.templates import get_template
    from anygpt.model.bundle import save_bundle_extras
    from anygpt.modality.base import load_tokenizer
    from anygpt.vocab import VocabLayout, load_base_tokenizer

    d = tmp_path_factory.mktemp("bundle")
    tok = load_base_tokenizer(base_tokenizer_dir)
    sizes = {m: load_tokenizer(c).code_layout.n_codes for m, c in demo_cards.items()}
    layout = VocabLayout.from_profile("default", len(tok), sizes)
    layout.grow_tokenizer(tok)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=layout.padded_vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(d), safe_serialization=True)
    save_bundle_extras(d, tok, layout, get_template("chat"), demo_cards, generation={"speech": {"max_new_tokens": 20}})
    return d


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    _write_corpus(root)
    return root


DEMO_KEYS = ["image_to_text.attribute_accuracy", "text_to_image.attribute_accuracy", "asr.wer", "tts.wer",
             "music_to_text.instrument_accuracy"]


def test_eval_cli_end_to_end_writes_every_task(tiny_bundle_dir, corpus_dir, tmp_path):
    from anygpt.cli import main

    out = tmp_path / "eval"
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "split": "train", "loss": 5.0 / s}) + "\n" for s in (1, 2, 3)))
    rc = main(["eval", "--model", str(tiny_bundle_dir), "--data", str(corpus_dir), "--out", str(out), "--seed", "3",
               "--batch-size", "2", "--preset", "bundle", "--path", "harness", "--report", str(tmp_path / "report"), "--train-log", f"sft={log}"])
    assert rc == 0
    assert {"report.md", "report.html", "metrics.json", "loss_curves.png"} <= {p.name for p in (tmp_path / "report").iterdir()}
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"image_to_text", "text_to_image", "asr", "tts", "music_to_text", "text_to_music"}
    for task, r in results.items():
        per = json.loads((out / f"{task}.json").read_text())
        assert per["seed"] == 3 and r["seed"] == 3
        assert per["decoding"]["preset"] == "bundle" and "do_sample" in per["decoding"]
        assert per["metrics"]["n"] == per["n"] == r["n"] > 0, task
        assert per["examples"] and all(math.isfinite(v) for v in per["metrics"].values() if isinstance(v, float))
        for plot in per["plots"]:
            assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    # images are sampled (greedy picks the background patch), the best of 8; text uses beams; speech follows the bundle
    t2i = results["text_to_image"]["decoding"]
    assert t2i["do_sample"] is True and t2i["temperature"] == 0.8 and t2i["best_of"] == 8
    assert results["asr"]["decoding"]["num_beams"] == 3 and results["asr"]["decoding"]["do_sample"] is False
    assert results["tts"]["decoding"]["max_new_tokens"] == 20
    # the broken wav and the malformed manifest line are recorded, not fatal
    asr = json.loads((out / "asr.json").read_text())
    assert asr["n"] == 2 and any("bad.wav" in e for e in asr["errors"]) and any("test.jsonl:4" in e for e in asr["errors"])
    # fixed-length image output: exactly tokens_per_item codes, decoded and saved as PNG samples
    from anygpt.model.bundle import load_bundle

    per_image = load_bundle(tiny_bundle_dir).tokenizers["image"].tokens_per_item
    t2i = json.loads((out / "text_to_image.json").read_text())
    assert per_image == 4 and all(ex["n_codes"] == per_image for ex in t2i["examples"])
    assert (out / t2i["examples"][0]["output_media"]).read_bytes()[:4] == b"\x89PNG"
    t2m = json.loads((out / "text_to_music.json").read_text())
    assert "analyser_instrument_accuracy_on_real_clips" in t2m["metrics"]
    eval_support.assert_scores_match_examples(out, DEMO_KEYS)  # each headline score is its recorded examples

def test_same_seed_gives_same_results(tiny_bundle_dir, corpus_dir, tmp_path):
    from anygpt.eval.harness import EvalConfig, run_eval

    runs = []
    for name in ("a", "b"):
        cfg = EvalConfig(data=corpus_dir, out=tmp_path / name, tasks=["text_to_image", "image_to_text"], seed=7, limit=2,
                         path="harness")
        res = run_eval(cfg, model_dir=tiny_bundle_dir, progress=None)
        runs.append({t: (r["metrics"], [e.get("output", e.get("recovered")) for e in r["examples"]]) for t, r in res.items()})
    assert runs[0] == runs[1]


def test_eval_cli_bad_input_is_one_line_error(cli, tiny_bundle_dir, tmp_path):
    proc = cli("eval", "--model", tiny_bundle_dir, "--data", tmp_path, "--out", tmp_path / "o", "--tasks", "captioning", check=False)
    assert proc.returncode == 2 and "unknown task" in proc.stderr and "image_to_text" in proc.stderr
    proc = cli("eval", "--model", tiny_bundle_dir, "--data", tmp_path, "--out", tmp_path / "o", "--tasks", "asr", check=False)
    assert proc.returncode == 2 and "no speech manifest" in proc.stderr


def test_a_failing_task_is_recorded_and_the_others_still_run(tiny_bundle_dir, corpus_dir, tmp_path):
    from anygpt.eval.harness import EvalConfig, run_eval
    from anygpt.inference.generation import generate_batch

    def flaky(bundle, prompts, output_modality, settings, requests=None):
        if output_modality == "image":
            raise RuntimeError("image head exploded")
        return generate_batch(bundle, prompts, output_modality, settings, requests=requests)

    cfg = EvalConfig(data=corpus_dir, out=tmp_path, tasks=["text_to_image", "image_to_text"], limit=1, path="harness")
    res = run_eval(cfg, model_dir=tiny_bundle_dir, generator=flaky, progress=None)
    assert "image head exploded" in res["text_to_image"]["failed"] and res["text_to_image"]["n"] == 0
    assert "failed" not in res["image_to_text"] and res["image_to_text"]["n"] == 1
    assert "image head exploded" in json.loads((tmp_path / "results.json").read_text())["text_to_image"]["failed"]


def test_evalset_finds_the_corpus_layout_and_resolves_paths(tmp_path):
    from anygpt.eval.evalset import EvalSet, find_manifest

    (tmp_path / "image" / "eval").mkdir(parents=True)
    (tmp_path / "image" / "eval" / "a.png").write_bytes(b"x")
    (tmp_path / "image_train.jsonl").write_text(json.dumps({"id": "t", "path": "image/train/t.png", "text": "x"}) + "\n")
    (tmp_path / "image_eval.jsonl").write_text(
        json.dumps({"id": "a", "path": "image/eval/a.png", "text": "a red circle", "attributes": {"colour": "red"}}) + "\n"
        + json.dumps({"id": "b", "text": "no path"}) + "\n")
    path, split = find_manifest(tmp_path, "image")
    assert (path.name, split) == ("image_eval.jsonl", "eval")  # held-out split, never train
    es = EvalSet.load(tmp_path, "image")
    assert [it.id for it in es] == ["a"] and es.items[0].path == tmp_path / "image" / "eval" / "a.png"
    assert es.items[0].attributes == {"colour": "red"} and len(es.errors) == 1 and "image_eval.jsonl:2" in es.errors[0]
    with pytest.raises(FileNotFoundError, match="no music manifest"):
        find_manifest(tmp_path, "music")


def _tiny_clip(d: Path) -> Path:
    """A random CLIP with a 28-entry character vocabulary, saved in the published layout."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    d.mkdir()
    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=proc, tokenizer=tok).save_pretrained(str(d))
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=32, eos_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|startoftext|>"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(str(d))
    return d


def _tiny_whisper(d: Path) -> Path:
    """A random Whisper (16 mel bins, 1 layer each side, ≤ 12 tokens out) in the published layout."""
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor,
                              WhisperTokenizer)

    d.mkdir()
    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz\u0120")}
    for s in ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>", "<|translate|>",
              "<|nocaptions|>", "<|startofprev|>", "<|startoflm|>"):
        vocab[s] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = WhisperTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=16), tokenizer=tok).save_pretrained(str(d))
    eot = vocab["<|endoftext|>"]
    cfg = WhisperConfig(vocab_size=len(vocab), num_mel_bins=16, d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_target_positions=16, decoder_start_token_id=vocab["<|startoftranscript|>"], eos_token_id=eot,
                        pad_token_id=eot, bos_token_id=eot, begin_suppress_tokens=None, suppress_tokens=None)
    m = WhisperForConditionalGeneration(cfg)
    m.generation_config.max_length = 12
    m.save_pretrained(str(d))
    return d


def test_optional_clip_and_whisper_models_add_their_scores(tiny_bundle_dir, corpus_dir, tmp_path):
    from anygpt.eval.harness import EvalConfig, run_eval

    cfg = EvalConfig(data=corpus_dir, out=tmp_path / "e", tasks=["text_to_image", "tts"], limit=2, path="harness",
                     clip_model=_tiny_clip(tmp_path / "clip"), asr_model=_tiny_whisper(tmp_path / "whisper"))
    res = run_eval(cfg, model_dir=tiny_bundle_dir, progress=None)
    assert "failed" not in res["text_to_image"] and "failed" not in res["tts"], (res["text_to_image"].get("failed"), res["tts"].get("failed"))
    assert 0.0 <= res["text_to_image"]["metrics"]["clip_score"] <= 100.0
    # the external ASR's WER on the real recordings is that model's transcripts scored against their texts
    from anygpt.eval.judges import external_asr
    from anygpt.eval.metrics import word_error_rate
    from anygpt.model.bundle import load_bundle

    tok = load_bundle(tiny_bundle_dir).tokenizers["speech"]
    ex = res["tts"]["examples"]
    heard = external_asr(cfg.asr_model, [tok.load_media(e["reference_media"]) for e in ex], tok.sample_rate)
    tts = res["tts"]["metrics"]
    assert tts["wer_external_asr_reference"] == pytest.approx(word_error_rate([e["input"] for e in ex], heard, numbers_as_words=True))
    assert math.isfinite(tts["wer_external_asr"])


def _tiny_clap(d: Path) -> Path:
    """A random CLAP (HTSAT audio tower, 16 mel bins, 1 s at 16 kHz) in the published layout."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    d.mkdir()
    vocab = {c: i for i, c in enumerate(["<s>", "<pad>", "</s>", "<unk>", *"abcdefghijklmnopqrstuvwxyz",
                                         *("\u0120" + c for c in "abcdefghijklmnopqrstuvwxyz")])}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    fe = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=320, max_length_s=1, fft_window_size=400,
                              truncation="rand_trunc")
    ClapProcessor(feature_extractor=fe, tokenizer=RobertaTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))).save_pretrained(str(d))
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2, projection_dim=16)
    audio = dict(window_size=4, num_mel_bins=16, spec_size=32, patch_size=4, patch_stride=(4, 4), depths=[1, 1],
                 num_attention_heads=[2, 2], hidden_size=32, patch_embeds_hidden_size=16, projection_dim=16, enable_fusion=False)
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def user_corpus_dir(tmp_path_factory) -> Path:
    """A user's own held-out data: photo-like gradients and greyscale pictures, tones, no
    ``attributes`` anywhere, no music training manifest (what issue 15 ran eval on)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("user_corpus")
    rows = []
    for i, mode in enumerate(["RGB", "L", "RGBA"]):
        a = np.linspace(0, 255, 37 * 53, dtype=np.float32).reshape(37, 53)
        img = Image.fromarray(((a + 80 * i) % 256).astype(np.uint8)).convert(mode)
        img.save(root / f"photo{i}.png")
        rows.append({"id": f"photo{i}", "path": f"photo{i}.png", "text": ["a sunset over the sea", "a grey page of text", "a window"][i]})
    (root / "image").mkdir()
    (root / "image" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for modality, texts in (("speech", ["good morning", "see you soon"]), ("music", ["a bright chord", "a low drone"])):
        (root / modality).mkdir()
        lines = []
        for i, t in enumerate(texts):
            sf.write(root / f"{modality}{i}.wav", _tone(200 + 150 * i, 0.8, i == 0), RATE)
            lines.append(json.dumps({"id": f"{modality}{i}", "path": f"../{modality}{i}.wav", "text": t}) + "\n")
        (root / modality / "test.jsonl").write_text("".join(lines))
    return root


def test_user_data_without_attributes_is_not_scored_but_read_back(tiny_bundle_dir, user_corpus_dir, tmp_path):
    """Issue 15: no 'attributes' gave text_to_image.attribute_accuracy = 1.0 from nothing, the demo's
    shape/colour analyser ran on arbitrary pictures and text_to_music failed. Now every metric
    with nothing to compare is listed as not scored, with why; the label-free scores are given."""
    from anygpt.cli import main

    out = tmp_path / "eval"
    rc = main(["eval", "--model", str(tiny_bundle_dir), "--data", str(user_corpus_dir), "--out", str(out), "--preset", "greedy",
               "--path", "harness", "--batch-size", "4", "--clap-model", str(_tiny_clap(tmp_path / "clap"))])
    assert rc == 0
    res = {t: json.loads((out / f"{t}.json").read_text()) for t in ("image_to_text", "text_to_image", "asr", "tts", "music_to_text", "text_to_music")}
    for task, r in res.items():
        assert "failed" not in r, (task, r.get("failed"))
        m = r["metrics"]
        assert not any("accuracy" in k and "read_back" not in k for k in m if k != "not_scored"), (task, m)
        assert all(isinstance(v, str) and v for v in m.get("not_scored", {}).values()), task
    t2i, t2m = res["text_to_image"]["metrics"], res["text_to_music"]["metrics"]
    assert "attribute_accuracy" in t2i["not_scored"] and "'colour'" in t2i["not_scored"]["attribute_accuracy"]
    assert "image analysis" not in " ".join(res["text_to_image"]["notes"])  # the demo analyser did not run
    assert "clip_score" in t2i["not_scored"] and "instrument_accuracy" in t2m["not_scored"]
    for m in (t2i, t2m):  # the model's own read-back, of generated and of real media, with no labels
        assert math.isfinite(m["read_back_logp"]) and math.isfinite(m["read_back_logp_reference"])
        assert 0.0 <= m["read_back_match_accuracy"] <= 1.0 and m["read_back_n"] == m["n"]
    assert 0.0 <= t2m["clap_score"] <= 100.0 and 0.0 <= t2m["clap_score_reference"] <= 100.0
    assert {"bleu4", "cider_d"} <= set(res["image_to_text"]["metrics"]) and "attribute_accuracy" in res["image_to_text"]["metrics"]["not_scored"]
    ex = res["asr"]["examples"]  # user transcripts with no attributes are still scored: WER of the recorded outputs
    assert res["asr"]["metrics"]["wer"] == pytest.approx(M.word_error_rate([e["reference"] for e in ex], [e["output"] for e in ex], numbers_as_words=True))
    assert len(ex) == res["asr"]["n"] and "wer_external_asr" in res["tts"]["metrics"]["not_scored"]


def test_nothing_to_compare_is_never_a_number(tiny_bundle_dir, tmp_path):
    """Empty reference texts and a manifest whose only item fails to load: not scored, with why."""
    from anygpt.eval.harness import EvalConfig, run_eval

    (tmp_path / "speech").mkdir()
    (tmp_path / "speech" / "test.jsonl").write_text(json.dumps({"id": "x", "path": "missing.wav", "text": "hello"}) + "\n")
    (tmp_path / "image").mkdir()
    Image.new("RGB", (20, 20), "white").save(tmp_path / "a.png")
    (tmp_path / "image" / "test.jsonl").write_text(json.dumps({"id": "a", "path": "../a.png", "text": ""}) + "\n")
    res = run_eval(EvalConfig(data=tmp_path, out=tmp_path / "e", tasks=["asr", "tts", "image_to_text"], preset="greedy",
                              path="harness"),
                   model_dir=tiny_bundle_dir, progress=None)
    assert "wer" not in res["asr"]["metrics"] and res["asr"]["metrics"]["not_scored"]["wer"] == "no utterance loaded"
    assert "wer" not in res["tts"]["metrics"] and any("missing.wav" in e for e in res["asr"]["errors"])
    i2t = res["image_to_text"]["metrics"]
    assert "bleu4" not in i2t and "non-empty reference" in i2t["not_scored"]["bleu4"]
