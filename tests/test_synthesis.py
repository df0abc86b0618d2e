"""Instruction synthesis: the offline pipeline yields tokenized conversations with all three media,
honours the descriptions, resumes after a kill, and survives a malformed text-model answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anygpt.data.conversations import check_conversation, referenced_media, split_media_refs
from anygpt.data.shapes import analyse_image
from anygpt.data.synthesis import SynthesisConfig, run_synthesis
from anygpt.data.synthesis_text import DESCRIPTION, PromptedTextGenerator
from anygpt.vocab import IGNORE_INDEX
from anygpt.modality.base import CodeLayout, ModalityTokenizer, TokenizerCard
from anygpt.vocab import VocabLayout, load_base_tokenizer

SMALL = dict(meta_topics=["art", "music"], topics_per_meta=2, scenarios_per_topic=1, dialogues_per_scenario=3,
             seed=1, image={"backend": "corpus", "size": 48}, music={"backend": "corpus", "seconds": 1.0},
             flush_every=2)


class FakeMediaTokenizer(ModalityTokenizer):
    """8 codes per item from coarse statistics of the file (any modality)."""

    codebook_size = 16
    code_layout = CodeLayout(1, 16, 8)

    def __init__(self, modality: str):
        super().__init__(TokenizerCard("test-fake", modality, Path(".")), "cpu")
        self.modality = modality

    def load_media(self, path):
        if self.modality == "image":
            from PIL import Image

            return np.asarray(Image.open(path).convert("L"), dtype=np.float32).ravel() / 255.0
        import soundfile as sf

        return np.abs(sf.read(path, dtype="float32")[0])

    def encode(self, batch):
        return [np.array([min(15, int(c.mean() * 16)) for c in np.array_split(x, 8)], dtype=np.int64) for x in batch]

    def decode(self, codes):
        raise NotImplementedError


@pytest.fixture(scope="module")
def grown_dir(base_tokenizer_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("grown")
    tok = load_base_tokenizer(base_tokenizer_dir)
    layout = VocabLayout.from_profile("default", len(tok), {"image": 16, "speech": 16, "music": 16})
    layout.grow_tokenizer(tok)
    tok.save_pretrained(str(d))
    layout.save(d)
    return d


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory, grown_dir):
    out = tmp_path_factory.mktemp("synth")
    cfg = SynthesisConfig(**SMALL, tokenize={"tokenizer": str(grown_dir)})
    fakes = {m: FakeMediaTokenizer(m) for m in ("image", "speech", "music")}
    run_synthesis(cfg, out, tokenizers=fakes, log=lambda s: None)
    return out, cfg, fakes


def test_offline_pipeline_tokenizes_conversations_with_all_three_media(synthesized):
    import datasets

    out, _, _ = synthesized
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(manifest[s]["done"] for s in ("topics", "scenarios", "dialogues", "media", "conversations", "tokenize"))
    lines = [json.loads(l) for l in (out / "conversations.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * 2 * 3 == manifest["conversations"]["count"]
    kinds = set()
    for obj in lines:
        convs = check_conversation(obj)
        for ref in referenced_media(convs):
            kinds.add(ref.modality)
            assert (out / ref.path).is_file()
        assert not any(DESCRIPTION.search(t["message"]) for t in convs[0])  # descriptions became files
    assert kinds == {"image", "speech", "music"}
    ds = datasets.load_from_disk(str(out / "sft"))
    assert len(ds) == len(lines)
    assert set("+".join(ds["modality"]).split("+")) >= {"image", "speech", "music"}
    for row in ds:
        assert any(l != IGNORE_INDEX for l in row["labels"]) and row["labels"][0] == IGNORE_INDEX


def test_rendered_images_follow_their_descriptions(synthesized):
    out, _, _ = synthesized
    checked = 0
    for line in (out / "conversations.jsonl").read_text().splitlines():
        for turn in json.loads(line)["conversation"][0]:
            if turn["role"] == "assistant" and turn["message"].startswith("Sure, here is"):
                said, ref = split_media_refs(turn["message"])[:2]
                got = analyse_image(Image.open(out / ref.path))
                assert f"{got['colour']} {got['shape']}" in said
                checked += 1
    assert checked >= 1


def _digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".wav", ".jsonl") and "sft" not in p.parts}


def test_killed_run_resumes_to_the_same_result(synthesized, tmp_path):
    ref_out, _, _ = synthesized
    cfg = SynthesisConfig(**SMALL)
    out = tmp_path / "resume"
    run_synthesis(cfg, out, until="media", log=lambda s: None)
    # simulate a kill in the middle of the media step: some files and the step record are gone
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["media"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    media = sorted((out / "media").rglob("*.*"))
    for p in media[::3]:
        p.unlink()
    kept = {p: p.stat().st_mtime_ns for p in media if p.exists()}
    run_synthesis(cfg, out, log=lambda s: None)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # finished items are not redone
    assert _digest(out) == _digest(ref_out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    logs = []
    run_synthesis(cfg, out, log=logs.append)
    assert all("skipped" in l for l in logs) and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


class CannedChat(PromptedTextGenerator):
    """A chat model stand-in: answers by prompt kind; every third dialogue answer is malformed."""

    def __init__(self):
        self.n = 0

    def chat(self, prompt, seed):
        if prompt.startswith("List"):
            return 'Sure! ["red stars in art", "quiet piano evenings"]'
        if prompt.startswith("Write a two-sentence"):
            return "A painter wants ideas. They ask the assistant."
        self.n += 1
        if self.n % 3 == 0:
            return "I cannot answer in JSON today."
        return json.dumps([{"role": "user", "message": "Draw [[image: a small blue star]]"},
                           {"role": "assistant", "message": "Here: [[image: a small blue star]]"},
                           {"role": "user", "message": "[[speech: i see two red circles]]"},
                           {"role": "assistant", "message": "Two red circles, nice."}])


def test_prompted_text_generator_parses_model_answers_and_records_bad_ones(tmp_path):
    cfg = SynthesisConfig(**{**SMALL, "meta_topics": ["art"]})
    run_synthesis(cfg, tmp_path, text=CannedChat(), log=lambda s: None)
    topics = [json.loads(l)["topic"] for l in (tmp_path / "topics.jsonl").read_text().splitlines()]
    assert topics == ["red stars in art", "quiet piano evenings"]
    errors = (tmp_path / "dialogues_errors.jsonl").read_text().splitlines()
    convs = (tmp_path / "conversations.jsonl").read_text().splitlines()
    assert len(errors) == 2 and len(convs) == 4
    assert all("<image:media/image/" in c and "<speech:media/speech/" in c for c in convs)
