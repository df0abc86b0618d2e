"""README's path through the stack on a user's own data, through the public `anygpt` commands only
(issue 15). Nothing here comes from our corpus code: the data is generated in the test — pictures
of odd sizes (37×53 gradient, 200×120 RGBA, 512×31 greyscale, rendered text), speech-like clips at
22.05 kHz, a 45 s music clip, a sentencepiece model that never saw capitals, digits, emoji or CJK,
and a three-round conversation written as separate inner lists.

The default run keeps a representative part (odd pictures through fit-tokenizer and tokenize, the
user's sentencepiece model through vocab); the slow part runs every data step (fit-tokenizer,
tokenize, vocab, build-data pretrain + sft), then trains, SFTs, chats, evaluates and detokenizes
on what they made (about 10 minutes on 2 busy cores). Every command's
output is kept and grepped for "Traceback" (none), and each user-caused problem must read as one
line naming the file or key and the fix.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LOGS: list[tuple[str, str]] = []  # (command, stdout+stderr) of every command run here
SR_SPEECH = 22050
LOWER = "a the red green blue circle square hello world please describe this picture sound tone".split()


def anygpt(cli, *args, check=True, **kw):
    proc = cli(*args, check=check, **kw)
    LOGS.append((" ".join(map(str, args)), proc.stdout + proc.stderr))
    assert "Traceback" not in proc.stdout + proc.stderr, (args, proc.stderr[-3000:])
    return proc


def _vowel(rng, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(100, 250)
    y = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) * np.abs(np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    return (0.2 * y / np.abs(y).max()).astype(np.float32)


def _write_user_data(root: Path) -> dict:
    """The user's folder: media, manifests, a sentencepiece model, a conversation file."""
    import sentencepiece as spm
    import soundfile as sf
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    (root / "pics").mkdir(parents=True)
    pics = []
    g = np.linspace(0, 255, 37 * 53).reshape(37, 53)
    Image.fromarray(np.stack([g, g[::-1], 255 - g], -1).astype(np.uint8)).save(root / "pics" / "sunset.png")
    pics.append(("sunset.png", "A Sunset over the sea, 1998"))
    rgba = np.zeros((120, 200, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, np.linspace(0, 255, 200).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(root / "pics" / "glass.png")
    pics.append(("glass.png", "ZEBRA glass 🙂 with a fading edge"))
    Image.fromarray((np.arange(512 * 31) % 256).reshape(31, 512).astype(np.uint8), "L").save(root / "pics" / "strip.png")
    pics.append(("strip.png", "a grey strip, 中文 label"))
    im = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(im).text((4, 20), "Hello 42", fill="black")
    im.save(root / "pics" / "words.png")
    pics.append(("words.png", "Rendered text: Hello 42"))
    for i in range(4):  # more pictures of the same kinds, so the codebook has something to fit
        a = rng.integers(0, 255, (int(rng.integers(20, 90)), int(rng.integers(20, 90)), 3), dtype=np.uint8)
        Image.fromarray(a).save(root / "pics" / f"noise{i}.png")
        pics.append((f"noise{i}.png", f"Noise number {i}"))
    rows = [{"id": Path(n).stem, "path": f"pics/{n}", "text": t} for n, t in pics]
    (root / "images.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (root / "image").mkdir()
    (root / "image" / "test.jsonl").write_text("".join(json.dumps({**r, "path": f"../{r['path']}"}, ensure_ascii=False) + "\n" for r in rows[:3]))

    (root / "voice").mkdir()
    texts = ["Good morning Zoe", "call me at 9", "See you soon", "the red circle", "Hello world", "Describe this"]
    rows = []
    for i, t in enumerate(texts):
        sf.write(root / "voice" / f"v{i}.wav", _vowel(rng, 0.6 + 0.2 * i, SR_SPEECH), SR_SPEECH)
        rows.append({"id": f"v{i}", "path": f"voice/v{i}.wav", "text": t})
    (root / "speech.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "speech").mkdir()
    (root / "speech" / "test.jsonl").write_text("".join(json.dumps({**r, "path": f"../{r['path']}"}) + "\n" for r in rows[:3]))

    (root / "tunes").mkdir()
    rows = []
    for i, secs in enumerate([2.0, 3.0, 45.0]):  # the last is longer than the demo card's 30 s
        t = np.arange(int(secs * 22050)) / 22050
        chord = sum(np.sin(2 * np.pi * f * t) for f in (220 * (i + 1), 277 * (i + 1), 330 * (i + 1)))
        sf.write(root / "tunes" / f"t{i}.wav", (0.2 * chord / 3).astype(np.float32), 22050)
        rows.append({"id": f"t{i}", "path": f"tunes/t{i}.wav", "text": f"a Chord number {i}"})
    (root / "music.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    r = random.Random(0)
    (root / "sp.txt").write_text("\n".join(" ".join(r.choice(LOWER) for _ in range(8)) for _ in range(2000)))
    spm.SentencePieceTrainer.train(input=str(root / "sp.txt"), model_prefix=str(root / "sp"), vocab_size=37,
                                   model_type="unigram", byte_fallback=False, minloglevel=2)
    rounds = [("What is in this picture? <image:pics/sunset.png>", "A sunset over the sea."),
              ("Say it out loud.", "<speech:voice/v0.wav>"),
              ("Thanks!", "You are welcome.")]
    conv = {"id": "three-rounds", "conversation": [[{"role": "user", "message": u}, {"role": "assistant", "message": a}]
                                                   for u, a in rounds]}
    (root / "convs.jsonl").write_text(json.dumps(conv) + "\n")
    return {"rounds": rounds}


@pytest.fixture(scope="module")
def prepared(cli, tmp_path_factory) -> dict:
    """Data steps of README's path on the user's folder; returns paths and each step's output."""
    root = tmp_path_factory.mktemp("user")
    meta = _write_user_data(root)
    out: dict = {"root": root, **meta}
    # 1. tokenizers (README: fit-tokenizer, tokenize)
    out["fit_image"] = anygpt(cli, "fit-tokenizer", "--modality", "image", "--manifest", root / "images.jsonl",
                              "--out", root / "tok" / "image", "--codebook-size", "1024")
    anygpt(cli, "fit-tokenizer", "--modality", "speech", "--manifest", root / "speech.jsonl", "--out", root / "tok" / "speech",
           "--codebook-size", "32")
    out["fit_music"] = anygpt(cli, "fit-tokenizer", "--modality", "music", "--manifest", root / "music.jsonl",
                              "--out", root / "tok" / "music", "--codebook-size", "16")
    for m, manifest in (("image", "images.jsonl"), ("speech", "speech.jsonl")):
        out[f"tokenize_{m}"] = anygpt(cli, "tokenize", "--modality", m, "--tokenizer", root / "tok" / m, "--manifest", root / manifest,
                                      "--out", root / "codes" / m, "--no-progress")
    # 2. vocabulary from the user's own sentencepiece model, sizes from the cards
    out["vocab"] = anygpt(cli, "vocab", "--base", root / "sp.model", "--profile", "default", "--sizes", "music=0",
                          "--cards", f"{root / 'tok' / 'image'},{root / 'tok' / 'speech'}", "--out", root / "grown")
    # 3. data: a recipe asking for more samples than the 14 pairs hold; the three-round conversation
    recipe = {"seed": 0, "num_samples": 120, "datasets": [
        {"name": "pics", "shards": "codes/image", "modality": "image", "weight": 1, "t2x_prob": 0.5, "card": "tok/image"},
        {"name": "voice", "shards": "codes/speech", "modality": "speech", "weight": 1, "t2x_prob": 0.5, "card": "tok/speech"}]}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out["pretrain_data"] = anygpt(cli, "build-data", "--stage", "pretrain", "--recipe", root / "recipe.yaml", "--tokenizer",
                                  root / "grown", "--out", root / "data" / "pt")
    out["sft_data"] = anygpt(cli, "build-data", "--stage", "sft", "--conversations", root / "convs.jsonl", "--tokenizer",
                             root / "grown", "--cards", f"image={root / 'tok' / 'image'},speech={root / 'tok' / 'speech'}",
                             "--out", root / "data" / "sft")
    return out


def test_quick_odd_pictures_and_own_sentencepiece(cli, tmp_path):
    """The default-run part: odd-sized / RGBA / greyscale pictures through fit-tokenizer and
    tokenize, and the user's sentencepiece model through vocab, with the cards' sizes."""
    from transformers import AutoTokenizer

    root = tmp_path
    _write_user_data(root)
    fit = anygpt(cli, "fit-tokenizer", "--modality", "image", "--manifest", root / "images.jsonl", "--out", root / "tok",
                 "--codebook-size", "1024")
    assert "warning: 1024 codes asked for but the training data has only" in fit.stderr and ".py:" not in fit.stderr
    tok_run = anygpt(cli, "tokenize", "--modality", "image", "--tokenizer", root / "tok", "--manifest", root / "images.jsonl",
                     "--out", root / "codes", "--no-progress")
    assert "8 items tokenized, 0 skipped" in tok_run.stdout
    anygpt(cli, "vocab", "--base", root / "sp.model", "--profile", "default", "--sizes", "speech=0,music=0",
           "--cards", str(root / "tok"), "--out", root / "grown")
    tok = AutoTokenizer.from_pretrained(str(root / "grown"))
    ids = tok.encode("Visualize ZEBRA 42 🙂 中文", add_special_tokens=False)
    assert tok.unk_token_id in ids and tok.decode(ids).count("<unk>") >= 4  # visible, not silently dropped
    assert not any("Traceback" in log for _, log in LOGS)


@pytest.mark.slow
def test_data_steps_on_the_users_own_data(prepared):
    import datasets
    from transformers import AutoTokenizer

    root = prepared["root"]
    # more codes asked for than the pictures have patches: one warning line, no Python source line
    err = prepared["fit_image"].stderr
    assert "warning: 1024 codes asked for but the training data has only" in err and ".py:" not in err
    # the 45 s clip is over the card's 30 s: one line naming the file, the others fitted
    err = prepared["fit_music"].stderr
    assert "t2.wav" in err and "30" in err and ".py:" not in err
    # odd sizes, RGBA, greyscale, 22.05 kHz speech: everything tokenized
    for m, n in (("image", 8), ("speech", 6)):
        assert f"{n} items tokenized, 0 skipped" in prepared[f"tokenize_{m}"].stdout, prepared[f"tokenize_{m}"].stdout
    # the grown tokenizer keeps the user's sentencepiece behaviour: unseen text is visible, not dropped
    tok = AutoTokenizer.from_pretrained(str(root / "grown"))
    assert tok.unk_token_id in tok.encode("ZEBRA", add_special_tokens=False)
    layout = json.loads((root / "grown" / "anygpt_layout.json").read_text())
    assert "1024" in json.dumps(layout) and "32" in json.dumps(layout)  # sizes from the cards
    # build-data says what the counts hide: repetition and the text the tokenizer cannot represent
    said = prepared["pretrain_data"].stdout
    assert "note: source pics: 8 items made 60 samples" in said and "voice: 6 items made 60 samples" in said
    assert "warning: source pics:" in said and "cannot represent" in said and "byte fallback" in said
    # the three-round conversation is one sample with loss on every assistant turn
    sft = datasets.load_from_disk(str(root / "data" / "sft"))
    assert len(sft) == 1 and sft[0]["modality"] == "image+speech"
    end = tok.convert_tokens_to_ids("<|end|>")
    assert sum(1 for i, l in zip(sft[0]["input_ids"], sft[0]["labels"]) if l == i == end) == 3
    info = json.loads((root / "data" / "sft" / "anygpt_data.json").read_text())
    assert set(info["cards"]) == {"image", "speech"}  # training will export them
    assert not any("Traceback" in log for _, log in LOGS)


@pytest.mark.slow
def test_user_errors_are_one_line_naming_the_fix(prepared, cli):
    root = prepared["root"]
    proc = anygpt(cli, "vocab", "--base", root / "sp.model", "--profile", "default", "--sizes", "image=64",
                  "--cards", str(root / "tok" / "image"), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "drop image from --sizes or use image=1024" in proc.stderr
    proc = anygpt(cli, "train", "--config", REPO / "train" / "tiny.yaml", "init_from=x", f"data.train=[{root / 'data' / 'sft'}]",
                  check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "model.from_config=null" in proc.stderr
    proc = anygpt(cli, "eval", "--model", root, "--data", root, "--out", root / "e", "--clip-model", root / "no-clip", check=False)
    assert proc.returncode == 2 and "--clip-model must be a local model directory" in proc.stderr


@pytest.mark.slow
def test_train_sft_chat_eval_detokenize_on_what_the_data_steps_made(prepared, cli):
    root = prepared["root"]
    tiny = ["model.from_config.hidden_size=64", "model.from_config.intermediate_size=128",
            "model.from_config.num_hidden_layers=1", "model.from_config.num_attention_heads=2",
            "model.from_config.num_key_value_heads=2", "deepspeed.micro_batch_size=2", "log.every=1", "checkpoint.every=2"]
    pt = anygpt(cli, "train", "--config", REPO / "train" / "tiny.yaml", f"model.tokenizer={root / 'grown'}",
                f"data.train=[{root / 'data' / 'pt'}]", f"out_dir={root / 'runs' / 'pt'}", "steps=4", *tiny, timeout=900)
    export = root / "runs" / "pt" / "export"
    assert "saved checkpoint" in pt.stdout and f"anygpt chat --model {export}" in pt.stdout
    assert "train pretrain" in pt.stderr and "4/4" in pt.stderr  # the progress bar
    assert (export / "tokenizers" / "image" / "card.yaml").exists() and (export / "tokenizers" / "speech" / "card.yaml").exists()
    sft = anygpt(cli, "train", "--config", "sft_tiny", f"init_from={export}", f"data.train=[{root / 'data' / 'sft'}]",
                 f"out_dir={root / 'runs' / 'sft'}", "steps=2", "deepspeed.micro_batch_size=1", "log.every=1", timeout=900)
    sft_export = root / "runs" / "sft" / "export"
    assert (sft_export / "tokenizers" / "image" / "card.yaml").exists(), sft.stdout[-2000:]
    script = root / "script.jsonl"
    script.write_text("".join(json.dumps(t) + "\n" for t in [
        {"text": "What is this?", "attachments": [{"modality": "image", "path": "pics/glass.png"}], "output": "text"},
        {"text": "Draw it.", "output": "image"},
        {"text": "Say hello.", "output": "speech"},
        {"text": "Play a tune.", "output": "music"}]))
    chat = anygpt(cli, "chat", "--model", sft_export, "--script", script, "--out", root / "chat",
                  "--transcript", root / "chat" / "t.jsonl", "--set", "max_new_tokens=3", check=False)
    turns = [json.loads(line) for line in (root / "chat" / "t.jsonl").read_text().splitlines()]
    assert len(turns) == 4  # the script ran to the end
    assert turns[1]["media"] and turns[2]["media"]  # image and a very short speech span decoded
    assert "cannot output 'music'" in turns[3]["error"] and chat.returncode == 1  # one line, the script went on
    ev = anygpt(cli, "eval", "--model", sft_export, "--data", root, "--out", root / "eval", "--tasks",
                "image_to_text,text_to_image,asr,tts", "--limit", "2", "--preset", "greedy", timeout=900)
    t2i = json.loads((root / "eval" / "text_to_image.json").read_text())["metrics"]
    assert "attribute_accuracy" in t2i["not_scored"] and "read_back_match_accuracy" in t2i, ev.stdout[-2000:]
    anygpt(cli, "detokenize", "--tokenizer", root / "tok" / "image", "--shards", root / "codes" / "image", "--out", root / "detok")
    assert len(list((root / "detok").glob("*.png"))) == 8
    assert not any("Traceback" in log for _, log in LOGS)
