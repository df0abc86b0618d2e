"""`anygpt eval --benchmark NAME`: the paper's six rows end to end through the public command, on
tiny copies of each data set in its published layout, a tiny random bundle, and random-weight
judge models saved in their published layouts (tests/benchmark_fixtures.py). The figures are
meaningless; what is checked is that every benchmark reads its layout, decodes with the paper's
settings (or the overrides), scores through every judge model, writes its protocol, and resumes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import benchmark_fixtures as F  # noqa: E402

SHORT = ["--decoding", "speech.max_new_tokens=12", "--decoding", "music.max_new_tokens=16", "--decoding", "text.max_new_tokens=8",
         "--decoding", "image.max_new_tokens=6", "--decoding", "text.num_beams=2", "--no-progress", "--batch-size", "2"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(torch_one_thread):
    """Every test of this module runs its tiny models on one thread (see conftest)."""


@pytest.fixture(scope="module")
def bundle(infer_support, base_tokenizer_dir, demo_cards, tmp_path_factory) -> Path:
    return infer_support.make_bundle(tmp_path_factory.mktemp("bench") / "model", base_tokenizer_dir, demo_cards)


@pytest.fixture(scope="module")
def judges(tmp_path_factory) -> Path:
    return F.save_judges(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    return {"coco": F.write_coco(root / "coco"), "librispeech": F.write_librispeech(root / "ls"),
            "vctk": F.write_vctk(root / "VCTK-Corpus-0.92"), "musiccaps": F.write_musiccaps(root / "musiccaps")}


def _eval(bundle, data, out, *extra) -> tuple[int, dict]:
    from anygpt.cli import main

    rc = main(["eval", "--model", str(bundle), "--data", str(data), "--out", str(out), *SHORT, *extra])
    name = extra[extra.index("--benchmark") + 1]
    p = Path(out) / f"{name}.json"
    return rc, json.loads(p.read_text()) if p.exists() else {}


def _scored(m: dict) -> bool:
    return "value" in m and m["ci95"][0] <= m["value"] <= m["ci95"][1] and m["n"] > 0


def test_coco_caption_cider_and_protocol(bundle, datasets, tmp_path):
    rc, r = _eval(bundle, datasets["coco"], tmp_path, "--benchmark", "coco-caption")
    assert rc == 0
    assert r["n"] == 3 and r["data"]["items_available"] == 3  # only split == "test"
    assert _scored(r["metrics"]["cider"]) and r["metrics"]["cider"]["paper"] == 107.5
    assert r["decoding"]["num_beams"] == 2 and r["decoding"]["paper_settings"]["num_beams"] == 5
    assert r["decoding"]["overridden"] == {"num_beams": 2, "max_new_tokens": 8}
    assert "Karpathy" in r["protocol"] and "PTB" in r["protocol"]
    lines = (tmp_path / "coco-caption.items.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines[1:]]
    assert len(recs) == 3 and all(len(x["references"]) == 3 for x in recs)
    # the figure is coco-caption's CIDEr over PTB-tokenised captions: our CIDEr-D on the same tokens agrees
    from anygpt.eval import metrics as M
    from anygpt.eval.benchmarks.models import ptb_tokenize

    gts = ptb_tokenize({x["id"]: x["references"] for x in recs})
    res = ptb_tokenize({x["id"]: [x["output"]] for x in recs})
    ids = sorted(gts)
    ours, _ = M.cider_d([gts[i] for i in ids], [res[i][0] for i in ids])
    assert r["metrics"]["cider"]["value"] == pytest.approx(100 * ours, abs=1e-9)


def test_coco_t2i_clip_and_missing_model_not_scored(bundle, datasets, judges, tmp_path):
    rc, r = _eval(bundle, datasets["coco"], tmp_path / "a", "--benchmark", "coco-t2i", "--subset", "4", "--models-dir", str(tmp_path / "none"))
    assert rc == 0 and r["n"] == 4
    for k in ("clip_score", "clip_image_similarity"):
        assert "not_scored" in r["metrics"][k] and str(tmp_path / "none" / "clip-vit-large-patch14") in r["metrics"][k]["not_scored"]
    assert r["decoding"]["top_p"] == 0.7 and r["decoding"]["do_sample"] is True
    # the judge model appears: the same --out scores the images made before without generating again
    items = (tmp_path / "a" / "coco-t2i.items.jsonl").read_text()
    rc, r2 = _eval(bundle, datasets["coco"], tmp_path / "a", "--benchmark", "coco-t2i", "--subset", "4", "--models-dir", str(judges))
    assert rc == 0 and (tmp_path / "a" / "coco-t2i.items.jsonl").read_text() == items
    assert _scored(r2["metrics"]["clip_score"]) and _scored(r2["metrics"]["clip_image_similarity"])
    assert -1 <= r2["metrics"]["clip_score"]["value"] <= 1
    # a fixed subset: the same seed draws the same captions, another seed others
    from anygpt.eval.benchmarks import get_benchmark

    b = get_benchmark("coco-t2i")
    ids = lambda s: [it.id for it in b.read(datasets["coco"], 6, s).items]  # noqa: E731
    assert ids(0) == ids(0) and ids(0) != ids(1)


def test_librispeech_wer_after_whisper_normaliser(bundle, datasets, tmp_path):
    rc, r = _eval(bundle, datasets["librispeech"], tmp_path, "--benchmark", "librispeech-asr")
    assert rc == 0 and r["n"] == 3 and _scored(r["metrics"]["wer"])
    assert "EnglishTextNormalizer" in r["protocol"]


def test_vctk_tts_whisper_wer_and_speaker_similarity(bundle, datasets, judges, tmp_path):
    rc, r = _eval(bundle, datasets["vctk"], tmp_path, "--benchmark", "vctk-tts", "--models-dir", str(judges))
    assert rc == 0
    assert r["n"] == 3  # p225: 2 items, p226: 1 (the first utterance of each is the 3 s prompt)
    assert _scored(r["metrics"]["wer"]) and _scored(r["metrics"]["speaker_similarity"])
    assert r["metrics"]["speaker_similarity"]["paper"] == 0.77
    recs = [json.loads(x) for x in (tmp_path / "vctk-tts.items.jsonl").read_text().splitlines()[1:]]
    assert [x["id"] for x in recs] == ["p225_002", "p226_002", "p225_003"]  # round-robin over speakers
    assert all(x["voice_prompt"].endswith("_001_mic1.flac") for x in recs)
    assert any("voice prompt not used" in n for n in r["notes"])  # the test tokenizer has no SoundStorm


@pytest.mark.parametrize("name", ["musiccaps-caption", "musiccaps-t2m"])
def test_musiccaps_clap(bundle, datasets, judges, tmp_path, name):
    rc, r = _eval(bundle, datasets["musiccaps"], tmp_path, "--benchmark", name, "--clap-model", str(judges / "larger_clap_music"),
                  "--report", str(tmp_path / "report"))
    assert rc == 0
    # the report puts our figure and its interval beside the paper's, read from the result
    m = r["metrics"]["clap_score"]
    row = f"| {name} | clap_score | {m['value']:.3f} | {m['ci95'][0]:.3f}–{m['ci95'][1]:.3f} | {m['n']} | {m['paper']:.3f} |"
    assert row in (tmp_path / "report" / "benchmarks.md").read_text()
    # eval rows only; captioning also needs the clip (one eval row has none: a read error, not an item)
    assert r["n"] == (2 if name == "musiccaps-caption" else 3)
    assert _scored(r["metrics"]["clap_score"])
    if name == "musiccaps-t2m":
        assert r["decoding"]["repetition_penalty"] == 1.15 and r["decoding"]["top_p"] == 1.0
    else:
        assert any("-0vPFx-wRRI" in e for e in r["read_errors"])


def test_kill_and_resume_does_not_redo_finished_items(bundle, datasets, tmp_path, monkeypatch):
    """A run killed after its first batch, resumed: finished items are not generated again, a torn
    last line is cut off, and the result covers every item once."""
    from anygpt.eval.benchmarks import runner

    calls: list[list[str]] = []
    real = runner._Generation.run_batch

    def counting(self, items):
        calls.append([it.id for it in items])
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while the second batch was being generated
        return real(self, items)

    monkeypatch.setattr(runner._Generation, "run_batch", counting)
    rc, _ = _eval(bundle, datasets["librispeech"], tmp_path, "--benchmark", "librispeech-asr")
    assert rc == 130
    log = tmp_path / "librispeech-asr.items.jsonl"
    first = log.read_text().splitlines()
    assert len(first) == 1 + 2
    with open(log, "a") as f:
        f.write('{"id": "torn')  # killed mid-write
    calls.clear()
    rc, r = _eval(bundle, datasets["librispeech"], tmp_path, "--benchmark", "librispeech-asr")
    assert rc == 0
    assert calls == [["121-121726-0000"]]  # only the item the killed run had not finished
    lines = log.read_text().splitlines()
    assert lines[:3] == first and len(lines) == 4 and r["n"] == 3
    # other settings on the same --out are refused rather than mixed into one figure
    from anygpt.cli import main

    assert main(["eval", "--model", str(bundle), "--data", str(datasets["librispeech"]), "--out", str(tmp_path),
                 "--benchmark", "librispeech-asr", *SHORT, "--decoding", "text.num_beams=3"]) == 2


def test_bad_layout_is_one_line(bundle, tmp_path, capsys):
    from anygpt.cli import main

    assert main(["eval", "--model", str(bundle), "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--benchmark", "vctk-tts"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "txt" in err[0] and "published layout" in err[0]
    assert main(["eval", "--model", str(bundle), "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--benchmark", "coco-caption",
                 "--decoding", "txt.top_p=1"]) == 2


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(bundle, datasets, tmp_path):
    """A real kill (SIGKILL of the child process once some items are logged), then a rerun of the same
    command: the finished records are kept byte for byte and every item ends up in the log once."""
    import signal
    import subprocess
    import time

    from conftest import subprocess_env

    data = F.write_librispeech(tmp_path / "ls_more", n_per_chapter=6)
    args = [sys.executable, "-m", "anygpt.cli", "eval", "--model", str(bundle), "--data", str(data),
            "--out", str(tmp_path / "o"), "--benchmark", "librispeech-asr", *SHORT, "--batch-size", "1"]
    log = tmp_path / "o" / "librispeech-asr.items.jsonl"
    child = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and child.poll() is None and (not log.exists() or len(log.read_text().splitlines()) < 3):
            time.sleep(0.05)
        assert child.poll() is None, "the run ended before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    before = log.read_bytes()
    done = len(before.splitlines()) - 1
    assert 2 <= done < 12
    subprocess.run(args, env=subprocess_env(), check=True, capture_output=True, timeout=600)
    after = log.read_bytes()
    keep = before[: before.rfind(b"\n") + 1]
    assert after.startswith(keep)
    ids = [json.loads(x)["id"] for x in after.splitlines()[1:]]
    assert len(ids) == len(set(ids)) == 12  # 2 chapters × 6 utterances


@pytest.mark.slow
def test_paper_decoding_defaults(bundle, datasets, judges, tmp_path):
    """No overrides: the paper's settings (text beam 5, speech top-p 0.7 up to 1500 tokens) run as written."""
    from anygpt.cli import main

    for name, data in (("librispeech-asr", datasets["librispeech"]), ("vctk-tts", datasets["vctk"])):
        assert main(["eval", "--model", str(bundle), "--data", str(data), "--out", str(tmp_path), "--benchmark", name,
                     "--limit", "1", "--no-progress", "--models-dir", str(judges)]) == 0
        r = json.loads((tmp_path / f"{name}.json").read_text())
        assert r["decoding"]["overridden"] == {} and r["n"] == 1
        settings = {k: r["decoding"][k] for k in r["decoding"]["paper_settings"]}
        assert settings == r["decoding"]["paper_settings"]
    assert main(["eval", "--model", str(bundle), "--data", str(tmp_path), "--out", str(tmp_path), "--benchmark", "vctk-tts",
                 "--report", str(tmp_path / "rep"), "--limit", "1"]) == 2  # not VCTK: one line, no report
