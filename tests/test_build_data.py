"""Training-set building: alignment masks in both directions, SFT masks by ids, mixture weights,
the reference's JSONL lines, bad-line handling, fingerprint refusal."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from anygpt.data.alignment import Pair, BuiltSample, draw_direction, render_alignment
from anygpt.data.datainfo import check_datasets, read_data_info
from anygpt.data.mixture import MixSource, mix
from anygpt.data.pairs import pairs_from_shards, parse_reference_line
from anygpt.data.pretrain import build_pretrain_from_recipe, build_pretrain_from_reference
from anygpt.data.recipe import PretrainRecipe
from anygpt.data.shards import FingerprintMismatch, write_shard
from anygpt.data.sft import build_sft
from anygpt.data.templates import get_template
from anygpt.vocab import IGNORE_INDEX
from anygpt.modality.base import CodeLayout, ModalityTokenizer, TokenizerCard, register_backend
from anygpt.vocab import VocabLayout, load_base_tokenizer

FIXTURES = Path(__file__).parent / "data"
SIZES = {"image": 64, "speech": 32, "music": 16}


@register_backend("test-fake-image")
class FakeImageTokenizer(ModalityTokenizer):
    """4 codes per image: the mean brightness of each quadrant, quantised to 16 levels."""

    modality = "image"
    codebook_size = 16
    tokens_per_item = 4
    code_layout = CodeLayout(1, 16, 4)

    def load_media(self, path):
        from PIL import Image

        return np.asarray(Image.open(path).convert("L"), dtype=np.float32)

    def encode(self, batch):
        out = []
        for a in batch:
            h, w = a.shape[0] // 2, a.shape[1] // 2
            quads = [a[:h, :w], a[:h, w:], a[h:, :w], a[h:, w:]]
            out.append(np.array([min(15, int(q.mean() / 16)) for q in quads], dtype=np.int64))
        return out

    def decode(self, codes):
        raise NotImplementedError("not needed in these tests")


def _grow(base_dir, out_dir: Path, profile: str, sizes=SIZES):
    tok = load_base_tokenizer(base_dir)
    layout = VocabLayout.from_profile(profile, len(tok), sizes)
    layout.grow_tokenizer(tok)
    tok.save_pretrained(str(out_dir))
    layout.save(out_dir)
    return tok, layout


@pytest.fixture(scope="module")
def grown_default(base_tokenizer_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("grown_default")
    tok, layout = _grow(base_tokenizer_dir, d, "default")
    return d, tok, layout


@pytest.fixture(scope="module")
def grown_reference(base_tokenizer_dir, tmp_path_factory):
    """The reference's full code ranges (its files carry codes up to 8191)."""
    d = tmp_path_factory.mktemp("grown_anygpt_chat")
    tok, layout = _grow(base_tokenizer_dir, d, "anygpt-chat", None)
    return d, tok, layout


def _trained(input_ids, labels):
    assert len(input_ids) == len(labels)
    for i, l in zip(input_ids, labels):
        assert l == IGNORE_INDEX or l == i  # labels are the ids themselves where trained
    return [i for i, l in zip(input_ids, labels) if l != IGNORE_INDEX]


def _text_ids(tok, s):
    return tok(s, add_special_tokens=False)["input_ids"]


def test_alignment_both_directions_mask_exactly_the_response(grown_default):
    _, tok, layout = grown_default
    t = get_template("chat")
    pair = Pair("a", "image", [3, 1, 4, 1, 5], "a red circle")
    end = layout.token_id("<|end|>")
    x2t = render_alignment(pair, "x2t", t, tok, layout, random.Random(0), "shapes")
    assert _trained(x2t.input_ids, x2t.labels) == _text_ids(tok, "a red circle") + [end]
    span = layout.span_ids("image", pair.codes)
    prompt = x2t.input_ids[: x2t.labels.index(next(l for l in x2t.labels if l != IGNORE_INDEX))]
    assert _find(prompt, span) and prompt[-1] == layout.token_id("<|assistant|>")

    t2x = render_alignment(pair, "t2x", t, tok, layout, random.Random(0), "shapes")
    assert _trained(t2x.input_ids, t2x.labels) == span + [end]
    assert t2x.direction == "t2x" and x2t.direction == "x2t" and t2x.source == "shapes"
    first = next(i for i, l in enumerate(t2x.labels) if l != IGNORE_INDEX)
    assert _find(t2x.input_ids[:first], _text_ids(tok, "This is input: a red circle")[1:])


def test_reference_template_masks_response_eos_and_end_of_sequence(grown_reference):
    _, tok, layout = grown_reference
    t = get_template("anygpt-pretrain")
    pair = Pair("s", "speech", [5, 6, 7], "hello world")
    r = render_alignment(pair, "t2x", t, tok, layout, random.Random(1))
    # the reference writes "[MMGPT]: {X}": the space before the span belongs to the response
    want = _text_ids(tok, " ") + layout.span_ids("speech", [5, 6, 7]) + [layout.token_id("<eos>"), tok.eos_token_id]
    assert _trained(r.input_ids, r.labels) == want
    r = render_alignment(pair, "x2t", t, tok, layout, random.Random(1))
    want_text = _text_ids(tok, " hello world")
    assert _trained(r.input_ids, r.labels) == want_text + [layout.token_id("<eos>"), tok.eos_token_id]


def _find(seq, sub):
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def _fixed_source(name, weight, length, size=50):
    return MixSource(name, weight, size, lambda i, rng: BuiltSample([0] * length, [0] * length, "image", "x2t", name, str(i)))


def test_mixture_weights_by_samples_and_by_tokens():
    srcs = [_fixed_source("a", 0.6, 10), _fixed_source("b", 0.3, 40), _fixed_source("c", 0.1, 5, size=3)]
    out = list(mix(srcs, "samples", num_samples=1000, seed=0))
    n = {k: sum(s.source == k for s in out) for k in "abc"}
    assert len(out) == 1000 and abs(n["a"] - 600) <= 2 and abs(n["b"] - 300) <= 2 and abs(n["c"] - 100) <= 2
    out = list(mix(srcs, "tokens", num_tokens=20000, seed=0))
    tokens = {k: sum(len(s) for s in out if s.source == k) for k in "abc"}
    total = sum(tokens.values())
    assert total >= 20000
    for k, w in zip("abc", (0.6, 0.3, 0.1)):
        assert abs(tokens[k] / total - w) < 0.01, (k, tokens)
    # a small dataset is repeated (reshuffled per epoch), every item used before any repeats
    ids = [s.id for s in out if s.source == "c"][:3]
    assert sorted(ids) == ["0", "1", "2"]


def _shard(path, modality, n, size, fingerprint, rng, text=True):
    rows = [{"id": f"{modality}{i}", "modality": modality, "codes": rng.integers(0, size, rng.integers(3, 9)).tolist(),
             "text": f"caption number {i}" if text else None, "source": f"/data/{modality}{i}"} for i in range(n)]
    write_shard(path, rows, {"fingerprint": fingerprint, "backend": "test", "modality": modality, "codebook_size": size})
    return rows


def test_recipe_cli_builds_mixed_alignment_set(grown_default, tmp_path, cli):
    import datasets

    tok_dir, tok, layout = grown_default
    rng = np.random.default_rng(0)
    img = _shard(tmp_path / "img" / "s0.parquet", "image", 30, 64, "fp-img", rng)
    _shard(tmp_path / "sp" / "s0.parquet", "speech", 20, 32, "fp-sp", rng)
    recipe = {"seed": 3, "num_samples": 200, "datasets": [
        {"name": "shapes", "shards": "img", "modality": "image", "weight": 3, "t2x_prob": 1.0},
        {"name": "voices", "shards": "sp", "modality": "speech", "weight": 1, "t2x_prob": 0.0, "fingerprint": "fp-sp"},
    ]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    proc = cli("build-data", "--stage", "pretrain", "--recipe", tmp_path / "recipe.yaml", "--tokenizer", tok_dir, "--out", out)
    # 200 samples from 50 items: the repetition is said, not silent (issue 15: 67 items → 19,884 samples)
    assert "note: source shapes: 30 items made 150 samples (each item used about 5.0 times)" in proc.stdout
    assert "voices: 20 items made 50 samples" in proc.stdout and "cannot represent" not in proc.stdout
    ds = datasets.load_from_disk(str(out))
    assert set(ds.column_names) >= {"input_ids", "labels", "modality", "direction", "source", "length"}
    assert len(ds) == 200
    assert sum(s == "shapes" for s in ds["source"]) == 150
    assert set(zip(ds["source"], ds["direction"], ds["modality"])) == {("shapes", "t2x", "image"), ("voices", "x2t", "speech")}
    # every t2x target is one of the shard's code spans
    spans = {tuple(layout.span_ids("image", r["codes"])) for r in img}
    end = layout.token_id("<|end|>")
    for row in ds.select(range(20)):
        trained = _trained(row["input_ids"], row["labels"])
        assert row["length"] == len(row["input_ids"]) and trained[-1] == end
        if row["direction"] == "t2x":
            assert tuple(trained[:-1]) in spans
    # what training runs on the set: its layout and fingerprints are checked and merged
    assert check_datasets([str(out)], layout) == {"tokenizer_fingerprints": {"image": "fp-img", "speech": "fp-sp"},
                                                  "template": "chat@1"}
    other = tmp_path / "other"  # a set whose image codes another tokenizer made
    other.mkdir()
    info = read_data_info(out)
    (other / "anygpt_data.json").write_text(json.dumps({**info, "tokenizer_fingerprints": {"image": "another"}}))
    with pytest.raises(ValueError, match="image tokenizer fingerprint another differs from fp-img"):
        check_datasets([str(out), str(other)], layout)
    with pytest.raises(ValueError, match="built for layout"):
        check_datasets([str(out)], VocabLayout.from_profile("default", layout.base_vocab_size, {"image": 65}))
    # shards made by another tokenizer are refused, naming the shard
    recipe["datasets"][1]["fingerprint"] = "other"
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(FingerprintMismatch, match=r"s0\.parquet.*other"):
        build_pretrain_from_recipe(PretrainRecipe.load(tmp_path / "recipe.yaml"), tok, layout, tmp_path / "out2")


def test_bad_recipe_is_one_line_naming_the_file_and_key(grown_default, tmp_path, cli):
    tok_dir = grown_default[0]
    path = _write_recipe(tmp_path, {"datasets": [{"name": "a", "shards": "img", "modality": "image", "wieght": 2}]})
    proc = cli("build-data", "--stage", "pretrain", "--recipe", path, "--tokenizer", tok_dir, "--out", tmp_path / "o",
               check=False)
    assert proc.returncode == 2 and not (tmp_path / "o").exists()
    assert f"{path}: unknown recipe key wieght; valid: card, fingerprint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    for recipe, says in (({"num_samples": "lots", "datasets": [{"name": "a", "shards": "s", "modality": "image"}]},
                          "recipe key num_samples: expected int or null, got 'lots'"),
                         ({"seed": 1}, "missing required recipe key datasets"),
                         ({"datasets": []}, "a recipe needs a non-empty 'datasets' list")):
        with pytest.raises(ValueError, match=f"recipe.yaml: {re.escape(says)}"):
            PretrainRecipe.load(_write_recipe(tmp_path, recipe))
    spec = PretrainRecipe.load(_write_recipe(tmp_path, {"datasets": [
        {"name": "a", "shards": "img", "modality": "image", "weight": 2, "card": "/abs/card"}]})).datasets[0]
    assert (spec.shards, spec.card, spec.weight) == (str(tmp_path / "img"), "/abs/card", 2.0)


def test_reference_pretrain_lines_ingest(grown_reference, tmp_path, cli):
    import datasets

    tok_dir, tok, layout = grown_reference
    files = [FIXTURES / f"anygpt_pretrain_{m}.jsonl" for m in ("image", "speech", "music")]
    lines = [json.loads(l) for f in files for l in f.read_text().splitlines()]
    out = tmp_path / "ref"
    cli("build-data", "--stage", "pretrain", "--anygpt-jsonl", *files, "--tokenizer", tok_dir, "--out", out,
        "--both-directions")
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 2 * len(lines)
    want = {(m, tuple(parse_reference_line(o, layout).codes), o["text"].strip()) for o in lines
            for m in ("image", "speech", "music") if m in o}
    eos = layout.token_id("<eos>")
    seen = set()
    for row in ds:
        pieces = layout.split_ids(row["input_ids"])
        media = [(k, tuple(v)) for k, v in pieces if k != "text"]
        assert len(media) == 1 and media[0][0] == row["modality"]
        trained = _trained(row["input_ids"], row["labels"])
        assert trained[-2:] == [eos, tok.eos_token_id]
        if row["direction"] == "x2t":
            text = tok.decode(trained[:-2]).strip()
            seen.add((row["modality"], media[0][1], text))
        else:
            assert trained[:-2] == _text_ids(tok, " ") + layout.span_ids(row["modality"], media[0][1])
    assert seen == want
    assert sorted(set(ds["source"])) == sorted(f.stem for f in files)


def test_bad_lines_name_file_and_line_or_are_recorded(grown_reference, tmp_path, cli):
    import datasets

    tok_dir, tok, layout = grown_reference
    good = (FIXTURES / "anygpt_pretrain_image.jsonl").read_text().splitlines()[0]
    bad = tmp_path / "mixed.jsonl"
    bad.write_text("\n".join([good, '{"text": "x", "image": "<soim><👀1><eoim"}', "not json", good]) + "\n")
    proc = cli("build-data", "--stage", "pretrain", "--anygpt-jsonl", bad, "--tokenizer", tok_dir,
               "--out", tmp_path / "o1", check=False)
    assert proc.returncode == 2 and f"{bad}:2:" in proc.stderr and not (tmp_path / "o1").exists()
    build_pretrain_from_reference([bad], tok, layout, tmp_path / "o2", skip_bad=True)
    errors = [json.loads(l) for l in (tmp_path / "o2" / "errors.jsonl").read_text().splitlines()]
    assert [e["where"] for e in errors] == [f"{bad}:2", f"{bad}:3"]
    assert len(datasets.load_from_disk(str(tmp_path / "o2"))) == 2


def test_sft_mask_covers_exactly_assistant_turns(grown_default, tmp_path):
    import datasets
    from PIL import Image

    tok_dir, tok, layout = grown_default
    (tmp_path / "media").mkdir()
    Image.new("RGB", (8, 8), (255, 255, 255)).save(tmp_path / "media" / "white.png")
    Image.new("RGB", (8, 8), (0, 0, 0)).save(tmp_path / "media" / "black.png")
    convs = [
        {"id": "c1", "conversation": [[
            {"role": "user", "message": "Describe this picture. <image:media/white.png>"},
            {"role": "assistant", "message": "a white square"},
            {"role": "user", "message": "Draw a black one."},
            {"role": "assistant", "message": "<image:media/black.png>"}]]},
        {"id": "c2", "conversation": [[
            {"role": "user", "message": "Say hello <sosp><\U0001F5E3\ufe0f1><\U0001F5E3\ufe0f2><eosp>"},
            {"role": "assistant", "message": "hello"}]]},
        {"id": "c3", "conversation": [[{"role": "user", "message": "draw <image:media/missing.png>"},
                                        {"role": "assistant", "message": "no"}]]},
    ]
    f = tmp_path / "convs.jsonl"
    f.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in convs))
    fake = FakeImageTokenizer(TokenizerCard("test-fake-image", "image", tmp_path))
    with pytest.raises(ValueError, match=rf"{f}:3: .*missing.png"):
        build_sft([f], tok, layout, tmp_path / "x", tokenizers={"image": fake})
    with open(f, "a") as fh:
        fh.write('{"id": 4, "conversation": [[]]}\n')
    out = build_sft([f], tok, layout, tmp_path / "sft", tokenizers={"image": fake}, skip_bad=True)
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 2 and ds["direction"] == ["chat", "chat"] and ds["modality"] == ["image", "speech"]
    end = layout.token_id("<|end|>")
    want = _text_ids(tok, "a white square") + [end] + layout.span_ids("image", [0, 0, 0, 0]) + [end]
    assert _trained(ds[0]["input_ids"], ds[0]["labels"]) == want
    white = layout.span_ids("image", [15, 15, 15, 15])
    assert _find(ds[0]["input_ids"], white) and not _find(_trained(ds[0]["input_ids"], ds[0]["labels"]), white)
    assert _trained(ds[1]["input_ids"], ds[1]["labels"]) == _text_ids(tok, "hello") + [end]
    assert _find(ds[1]["input_ids"], layout.span_ids("speech", [1, 2]))
    errors = [json.loads(l) for l in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["where"] for e in errors) == [f"{f}:3", f"{f}:4"]  # each bad line once
    assert "missing.png" in errors[[e["where"] for e in errors].index(f"{f}:3")]["error"]


def test_reference_instruction_lines_ingest(grown_reference, tmp_path, cli):
    import datasets

    tok_dir, tok, layout = grown_reference
    out = tmp_path / "sft"
    cli("build-data", "--stage", "sft", "--conversations", FIXTURES / "anygpt_instruct_speech.jsonl",
        "--tokenizer", tok_dir, "--out", out)
    ds = datasets.load_from_disk(str(out))
    row = ds[0]
    trained = _trained(row["input_ids"], row["labels"])
    # the assistant's voice-chat target: <-Ins-> transcript <-Res-> reply <sosp>…<eosp> <eos>
    assert trained[-1] == layout.token_id("<eos>")
    assert _find(trained, layout.span_ids("speech", [2, 2, 2]))
    assert layout.token_id("<-Ins->") in trained and layout.token_id("<-Res->") in trained
    assert not _find(trained, layout.span_ids("speech", [1, 1, 1]))  # the user's speech is context only
    first = next(i for i, l in enumerate(row["labels"]) if l != IGNORE_INDEX)
    colon = _text_ids(tok, ":")
    assert row["input_ids"][first - 1 - len(colon) : first] == [layout.token_id("[MMGPT]"), *colon]


def test_sft_finds_media_codes_in_shards_by_path_and_refuses_foreign_shards(grown_default, tmp_path):
    import datasets
    from PIL import Image

    _, tok, layout = grown_default
    img = tmp_path / "pic.png"
    Image.new("RGB", (8, 8), (255, 255, 255)).save(img)
    write_shard(tmp_path / "shards" / "s.parquet", [{"id": "pic", "modality": "image", "codes": [9, 8, 7],
                                                     "text": "white", "source": str(img)}],
                {"fingerprint": "fp-a", "backend": "x", "modality": "image", "codebook_size": 64})
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"id": 1, "conversation": [[{"role": "user", "message": "draw white"},
                                                         {"role": "assistant", "message": "<image:pic.png>"}]]}) + "\n")
    out = build_sft([f], tok, layout, tmp_path / "o", shards={"image": tmp_path / "shards"})
    row = datasets.load_from_disk(str(out))[0]
    end = layout.token_id("<|end|>")
    assert _trained(row["input_ids"], row["labels"]) == layout.span_ids("image", [9, 8, 7]) + [end]
    assert json.loads((out / "anygpt_data.json").read_text())["tokenizer_fingerprints"] == {"image": "fp-a"}
    fake = FakeImageTokenizer(TokenizerCard("test-fake-image", "image", tmp_path))
    with pytest.raises(FingerprintMismatch):
        build_sft([f], tok, layout, tmp_path / "o2", tokenizers={"image": fake}, shards={"image": tmp_path / "shards"})


def test_voice_chat_target_masks_the_reference_form(grown_default):
    from anygpt.data.sft import voice_chat_messages
    from anygpt.data.templates import MediaCodes

    _, tok, layout = grown_default
    msgs = voice_chat_messages(MediaCodes("speech", [1, 2]), "how are you", "fine thanks", MediaCodes("speech", [3, 4]))
    r = get_template("chat").render(msgs, tok, layout)
    trained = _trained(r.input_ids, r.labels)
    assert trained[-1] == layout.token_id("<|end|>") and trained[-1 - 4 : -1] == layout.span_ids("speech", [3, 4])
    assert trained.count(layout.token_id("<-Ins->")) == 1 and trained.count(layout.token_id("<-Res->")) == 1
    assert _find(r.input_ids, layout.span_ids("speech", [1, 2])) and not _find(trained, layout.span_ids("speech", [1, 2]))


@pytest.mark.slow  # ~12 s of CPU (fits three codebooks, one CLI run); 40 s wall on a busy 2-core box
def test_corpus_conversations_to_sft_set_with_demo_tokenizer_cards(base_tokenizer_dir, tmp_path, cli):
    """End to end: embedded corpus → demo tokenizers fitted on it → `anygpt build-data --stage sft`
    with the cards; media spans in the set are exactly the tokenizers' codes for the files."""
    import datasets

    from anygpt.data.conversations import split_media_refs
    from anygpt.data.corpus import build_corpus
    from anygpt.modality.kmeans_tokenizer import KMeansImageTokenizer, KMeansMusicTokenizer, KMeansSpeechTokenizer

    paths = build_corpus(tmp_path / "corpus", {"image": 8, "speech": 4, "music": 4}, n_eval=0, n_conversations=6,
                         music_seconds=1.0)
    toks = {"image": KMeansImageTokenizer.fit(paths["image"]["train"], tmp_path / "cards" / "image", codebook_size=16, iters=2),
            "speech": KMeansSpeechTokenizer.fit(paths["speech"]["train"], tmp_path / "cards" / "speech", codebook_size=16, iters=2),
            "music": KMeansMusicTokenizer.fit(paths["music"]["train"], tmp_path / "cards" / "music", codebook_size=16, iters=2)}
    grown = tmp_path / "grown"
    _, layout = _grow(base_tokenizer_dir, grown, "default", {m: t.codebook_size for m, t in toks.items()})
    conv_file = paths["conversations"]["train"]
    out = tmp_path / "sft"
    cards = ",".join(f"{m}={tmp_path / 'cards' / m}" for m in toks)
    cli("build-data", "--stage", "sft", "--conversations", conv_file, "--tokenizer", grown, "--cards", cards, "--out", out)
    ds = datasets.load_from_disk(str(out))
    lines = [json.loads(l) for l in conv_file.read_text().splitlines()]
    assert len(ds) == len(lines)
    info = json.loads((out / "anygpt_data.json").read_text())
    assert info["tokenizer_fingerprints"] == {m: t.fingerprint for m, t in toks.items()}
    for row, line in zip(ds, lines):
        refs = [p for t in line["conversation"][0] for p in split_media_refs(t["message"]) if not isinstance(p, str)]
        got = [(k, v) for k, v in layout.split_ids(row["input_ids"]) if k != "text"]
        want = [(r.modality, toks[r.modality].encode([toks[r.modality].load_media(conv_file.parent / r.path)])[0].tolist())
                for r in refs]
        assert got == want


def test_overlong_samples_follow_the_recipe_policy_and_training_names_them(grown_default, tmp_path):
    """A sample past max_length is dropped (recorded), stops the build naming it, or is cut, as
    the recipe says; a set with a sample past the training seq_len is refused naming the sample."""
    import datasets

    from anygpt.data.loader import check_sample_lengths

    _, tok, layout = grown_default
    rng = np.random.default_rng(1)
    rows = _shard(tmp_path / "sp" / "s0.parquet", "speech", 6, 32, "fp-sp", rng)
    long = {"id": "talk@30", "modality": "speech", "codes": rng.integers(0, 32, 200).tolist(), "text": "a long one",
            "source": "talk.wav"}
    write_shard(tmp_path / "sp" / "s1.parquet", [long], {"fingerprint": "fp-sp", "backend": "test", "modality": "speech",
                                                          "codebook_size": 32})
    base = {"seed": 0, "num_samples": 40, "max_length": 80,
            "datasets": [{"name": "voices", "shards": "sp", "modality": "speech", "t2x_prob": 0.0}]}

    def build(policy, name):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**base, "overlong": policy}))
        return build_pretrain_from_recipe(PretrainRecipe.load(tmp_path / f"{name}.yaml"), tok, layout, tmp_path / name)

    dropped = datasets.load_from_disk(str(build("drop", "drop")))
    assert max(dropped["length"]) <= 80 and "talk@30" not in dropped["id"]
    assert "voices:talk@30" in (tmp_path / "drop" / "errors.jsonl").read_text()
    with pytest.raises(ValueError, match=r"voices:talk@30: \d+ tokens > max_length 80 \(recipe overlong: error"):
        build("error", "error")
    cut = build("truncate", "cut")
    assert max(datasets.load_from_disk(str(cut))["length"]) == 80
    assert json.loads((cut / "anygpt_data.json").read_text())["length_policy"]["truncated"] >= 1
    with pytest.raises(ValueError, match="overlong must be one of"):
        build("squash", "bad")

    whole = dict(base, max_length=None)
    (tmp_path / "whole.yaml").write_text(yaml.safe_dump(whole))
    out = build_pretrain_from_recipe(PretrainRecipe.load(tmp_path / "whole.yaml"), tok, layout, tmp_path / "whole")
    ds = datasets.load_from_disk(str(out))
    check_sample_lengths(out, ds, 512)  # fits: no error
    with pytest.raises(ValueError, match=r"whole: \d+ sample\(s\) longer than data.seq_len 80: talk@30 from voices"):
        check_sample_lengths(out, ds, 80)
    assert len(rows) == 6


def test_recipe_build_batched_parallel_sharded_and_resumed_matches_one_by_one(grown_default, tmp_path, monkeypatch):
    """build-data renders in batches, in N processes, writes several Arrow shards as it goes and
    resumes an interrupted build: every way gives the rows the one-sample-at-a-time path gives."""
    import datasets

    import anygpt.data.pretrain as pretrain

    _, tok, layout = grown_default
    rng = np.random.default_rng(1)
    _shard(tmp_path / "img" / "s0.parquet", "image", 40, 64, "fp-img", rng)
    _shard(tmp_path / "sp" / "s0.parquet", "speech", 25, 32, "fp-sp", rng)
    recipe = PretrainRecipe.load(_write_recipe(tmp_path, {"seed": 5, "num_samples": 300, "datasets": [
        {"name": "shapes", "shards": "img", "modality": "image", "weight": 2, "t2x_prob": 0.5},
        {"name": "voices", "shards": "sp", "modality": "speech", "weight": 1, "t2x_prob": 0.3}]}))

    # the reference: each sample rendered alone through render_alignment, in mix order
    t = get_template("chat")
    sources = []
    for spec in recipe.datasets:
        pairs, _ = pairs_from_shards(spec.shards, spec.modality)
        sources.append(MixSource(spec.name, spec.weight, len(pairs), lambda i, r, p=pairs, s=spec: render_alignment(
            p[i], draw_direction(r, s.t2x_prob), t, tok, layout, r, s.name)))
    want = [(s.input_ids, s.labels, s.source, s.direction) for s in mix(sources, num_samples=300, seed=5)]

    def rows(out):
        ds = datasets.load_from_disk(str(out))
        return [(r["input_ids"], r["labels"], r["source"], r["direction"]) for r in ds]

    build_pretrain_from_recipe(recipe, tok, layout, tmp_path / "one")
    assert rows(tmp_path / "one") == want
    build_pretrain_from_recipe(recipe, tok, layout, tmp_path / "par", num_proc=2, chunk_rows=32, shard_rows=64)
    assert len(list((tmp_path / "par").glob("data-*-of-*.arrow"))) == 5 and rows(tmp_path / "par") == want

    real_policy, calls = pretrain.apply_length_policy, []

    def dies_at_200(batch, *args):  # the length policy sees every rendered batch: samples counted there
        calls.append(len(batch))
        if sum(calls) >= 200:
            raise KeyboardInterrupt
        return real_policy(batch, *args)

    monkeypatch.setattr(pretrain, "apply_length_policy", dies_at_200)
    with pytest.raises(KeyboardInterrupt):
        build_pretrain_from_recipe(recipe, tok, layout, tmp_path / "res", chunk_rows=32, shard_rows=64, batch_size=16)
    partial = tmp_path / ".res.partial"
    assert not (tmp_path / "res").exists() and json.loads((partial / "progress.json").read_text())["consumed"] == 192
    calls.clear()
    build_pretrain_from_recipe(recipe, tok, layout, tmp_path / "res", chunk_rows=32, shard_rows=64, batch_size=16)
    assert sum(calls) == 300 - 192 and rows(tmp_path / "res") == want and not partial.exists()
    assert read_data_info(tmp_path / "res")["num_samples"] == 300


def _write_recipe(tmp_path, recipe: dict) -> Path:
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return tmp_path / "recipe.yaml"


def test_three_round_conversation_is_one_sample_split_only_at_round_boundaries(grown_default, tmp_path, cli):
    """Issue 15: rounds written as separate inner lists became independent single-turn samples.
    A line is one dialogue: one sample, loss on every assistant turn; a dialogue longer than
    --max-length is split between rounds, never inside one."""
    import datasets

    tok_dir, tok, layout = grown_default
    rounds = [("what is red", "red is a colour"), ("and blue", "blue is a colour too"), ("thanks", "you are welcome")]
    f = tmp_path / "convs.jsonl"
    per_list = [[{"role": "user", "message": u}, {"role": "assistant", "message": a}] for u, a in rounds]
    f.write_text(json.dumps({"id": "three", "conversation": per_list}) + "\n"
                 + json.dumps({"id": "flat", "conversation": [[t for r in per_list for t in r]]}) + "\n")
    out = tmp_path / "sft"
    cli("build-data", "--stage", "sft", "--conversations", f, "--tokenizer", tok_dir, "--out", out)
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 2 and ds[0]["input_ids"] == ds[1]["input_ids"] and ds[0]["labels"] == ds[1]["labels"]
    end = layout.token_id("<|end|>")
    assert _trained(ds[0]["input_ids"], ds[0]["labels"]) == [i for _, a in rounds for i in _text_ids(tok, a) + [end]]
    for u, _ in rounds:  # every user turn is context in the same sample
        assert _find(ds[0]["input_ids"], _text_ids(tok, u))
    # too long for one sample: split between rounds, each part ending with its assistant turn
    full = len(ds[0]["input_ids"])
    out2 = tmp_path / "sft_split"
    cli("build-data", "--stage", "sft", "--conversations", f, "--tokenizer", tok_dir, "--out", out2, "--max-length", str(full - 1))
    parts = datasets.load_from_disk(str(out2))
    assert len(parts) == 4 and all(len(r["input_ids"]) <= full - 1 for r in parts)
    trained = [_trained(r["input_ids"], r["labels"]) for r in parts.select(range(2))]
    assert sum(trained, []) == _trained(ds[0]["input_ids"], ds[0]["labels"]) and all(t[-1] == end for t in trained)
    proc = cli("build-data", "--stage", "sft", "--conversations", f, "--tokenizer", tok_dir, "--out", tmp_path / "x",
               "--max-length", "5", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "round 1 alone is" in proc.stderr


@pytest.mark.parametrize("template", ["chat", "anygpt-pretrain"])
def test_batched_alignments_equal_one_by_one_even_for_text_with_span_markers(grown_default, grown_reference, template):
    """render_alignments fills one template shape per direction by array arithmetic; a text that
    holds inline token strings (which rendering parses into a media span) and empty or odd
    texts still give exactly render_alignment's ids and labels, in input order, for any loss_on."""
    from anygpt.data.alignment import PairBatch, render_alignments
    from anygpt.data.instructions import draw_instruction
    from anygpt.data.templates import BatchRenderer

    _, tok, layout = grown_default if template == "chat" else grown_reference
    t = get_template(template)
    texts = ["a red circle", "look <soim><👀2><👀3><eoim> here", " two  spaces ", "x", "emoji 🎵 and\nnewline"]
    pairs = [Pair(f"p{i}", "image", [i % 7, 3, 1], texts[i % len(texts)]) for i in range(23)]
    directions = ["t2x" if i % 3 else "x2t" for i in range(23)]
    for loss_on in ("assistant", "all"):
        r = random.Random(4)
        want = [render_alignment(p, d, t, tok, layout, r, "src", loss_on) for p, d in zip(pairs, directions)]
        r = random.Random(4)
        ins = [draw_instruction("image", d, r) for d in directions]
        got = render_alignments(PairBatch.from_pairs(pairs), directions, ins, BatchRenderer(t, tok, layout), "src",
                                loss_on).samples()
        assert [(g.input_ids, g.labels, g.id, g.direction) for g in got] == \
            [(w.input_ids, w.labels, w.id, w.direction) for w in want]
    inline = layout.span_ids("image", [2, 3])  # the inline span of a t2x text became media ids
    assert any(_find(w.input_ids, inline) for w, d in zip(want, directions) if d == "t2x")
    with pytest.raises(ValueError, match="image code 1000000 outside"):
        render_alignments(PairBatch.from_pairs([Pair("bad", "image", [10**6], "t")]), ["x2t"], ["i"],
                          BatchRenderer(t, tok, layout))


def test_resumed_build_with_dropped_samples_records_each_once(grown_default, tmp_path, monkeypatch):
    """Overlong samples dropped on both sides of an interruption: the resumed build has the rows
    and the errors.jsonl of the uninterrupted one (each dropped sample recorded once)."""
    import datasets

    import anygpt.data.pretrain as pretrain

    _, tok, layout = grown_default
    rng = np.random.default_rng(2)
    rows = [{"id": f"s{i}", "modality": "speech", "codes": rng.integers(0, 32, 400 if i % 4 == 0 else 5).tolist(),
             "text": f"utterance {i}", "source": ""} for i in range(30)]
    write_shard(tmp_path / "sp" / "s0.parquet", rows, {"fingerprint": "fp", "backend": "t", "modality": "speech",
                                                        "codebook_size": 32})
    recipe = PretrainRecipe.load(_write_recipe(tmp_path, {"seed": 1, "num_samples": 200, "max_length": 300,
                                                          "datasets": [{"name": "v", "shards": "sp", "modality": "speech"}]}))
    kw = dict(chunk_rows=8, shard_rows=16, batch_size=10)
    whole = build_pretrain_from_recipe(recipe, tok, layout, tmp_path / "whole", **kw)
    real, seen = pretrain.apply_length_policy, []

    def dies(batch, *args):
        seen.append(len(batch))
        if sum(seen) >= 120:
            raise KeyboardInterrupt
        return real(batch, *args)

    monkeypatch.setattr(pretrain, "apply_length_policy", dies)
    with pytest.raises(KeyboardInterrupt):
        build_pretrain_from_recipe(recipe, tok, layout, tmp_path / "res", **kw)
    monkeypatch.setattr(pretrain, "apply_length_policy", real)
    res = build_pretrain_from_recipe(recipe, tok, layout, tmp_path / "res", **kw)
    errs = (whole / "errors.jsonl").read_text().splitlines()
    assert len(errs) > 10 and (res / "errors.jsonl").read_text().splitlines() == errs
    assert len(set(errs)) < len(errs)  # the same pair dropped again in later epochs: one row per drop
    assert read_data_info(res)["errors"] == len(errs) == read_data_info(whole)["errors"]
    a, b = datasets.load_from_disk(str(whole)), datasets.load_from_disk(str(res))
    assert a["input_ids"] == b["input_ids"] and a["id"] == b["id"] and len(a) + len(errs) == 200
