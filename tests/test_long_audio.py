"""Long audio: a 3-minute music file and a 2-minute eSpeak speech file go through ``anygpt tokenize``
(cut into windows, one row each) and ``anygpt chat --script`` (a window) without being refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anygpt.modality.base import MediaError
from anygpt.jobs.windowing import Windowing, window_id


def test_windowing_spans_cover_the_recording():
    w = Windowing(20.0, 15.0)
    assert w.spans(10.0) == [(0.0, None)]  # fits: the whole file, one row
    spans = w.spans(120.0)
    assert [s for s, _ in spans] == [0, 15, 30, 45, 60, 75, 90, 105] and spans[-1][1] == 15.0
    assert Windowing(30.0).spans(180.0) == [(float(s), 30.0) for s in range(0, 180, 30)]
    assert Windowing(30.0).spans(60.4) == [(0.0, 30.0), (30.0, 30.0)]  # a 0.4 s tail is dropped
    assert window_id("clip", 30.0) == "clip@30" and window_id("clip", 2.5) == "clip@2.5"
    with pytest.raises(ValueError, match="hop-seconds"):
        Windowing(None, 5.0)
    with pytest.raises(MediaError, match="3600 s would make about 720 windows of 5 s, more than max_windows 100"):
        Windowing(5.0, max_windows=100).spans(3600.0)  # an hour of audio is not silently a thousand rows


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory):
    """Demo speech + music cards (random codebooks, 16 codes) and the two long recordings."""
    import soundfile as sf

    from anygpt.data.espeak import speak
    from anygpt.modality.kmeans_tokenizer import KMeansMusicTokenizer, KMeansSpeechTokenizer

    root = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    cards = {}
    for cls, m in ((KMeansSpeechTokenizer, "speech"), (KMeansMusicTokenizer, "music")):
        tok = cls(rng.random((16, cls.defaults["n_mels"])).astype(np.float32), dict(cls.defaults))
        tok.save(root / f"{m}_tok")
        cards[m] = root / f"{m}_tok"
    sr = 22050  # three minutes of chords, a new chord every half second
    t = np.arange(int(0.5 * sr)) / sr
    chords = [sum(np.sin(2 * np.pi * 220 * 2 ** (k / 12) * t) for k in (r, r + 4, r + 7)) / 3 for r in rng.integers(0, 12, 360)]
    sf.write(root / "music.wav", (0.3 * np.concatenate(chords)).astype(np.float32), sr)
    text = "The quick brown fox jumps over the lazy dog while the band plays on. "
    speech, pieces = np.zeros(0, dtype=np.float32), []
    while len(speech) < 120 * 16000:
        pieces.append(speak(text * 4, sample_rate=16000))
        speech = np.concatenate(pieces)
    sf.write(root / "speech.wav", speech[: 120 * 16000], 16000)
    (root / "broken.wav").write_bytes(b"RIFF not really audio")
    return root, cards


class _Proc:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli_here(capsys):
    """``anygpt ARGS`` in this process (saves a child's imports); the result looks like ``cli``'s."""
    from anygpt.cli import main

    def run(*args, check: bool = True) -> _Proc:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        proc = _Proc(code, out.out, out.err)
        assert not check or code == 0, proc.stderr
        return proc

    return run


def _rows(out):
    import pyarrow.parquet as pq

    return [r for f in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_tokenize_cuts_long_recordings_into_windows(long_audio, cli_here):
    cli = cli_here
    root, cards = long_audio
    man = root / "music.jsonl"
    man.write_text(json.dumps({"id": "song", "path": "music.wav", "text": "chords"}) + "\n"
                   + json.dumps({"id": "bad", "path": "broken.wav"}) + "\n")
    out = root / "music_codes"
    args = ("tokenize", "--modality", "music", "--tokenizer", cards["music"], "--manifest", man, "--out", out,
            "--max-error-rate", "0.5", "--no-progress")
    proc = cli(*args)
    rows = _rows(out)
    # default window: the card's max_seconds (30 s; 750 codes at 25/s fit the 4000-code budget)
    assert [r["id"] for r in rows] == [f"song@{s}" for s in range(0, 180, 30)]
    assert [(r["offset"], r["duration"]) for r in rows] == [(float(s), 30.0) for s in range(0, 180, 30)]
    assert all(r["text"] == "chords" and r["source"] == "music.wav" and len(r["codes"]) == 750 for r in rows)
    assert len({tuple(r["codes"]) for r in rows}) == 6  # different chords in each window
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == ["bad"] and "not a readable audio file" in errors[0]["reason"]
    assert "6 items tokenized, 1 skipped" in proc.stdout
    again = cli(*args)  # resumable: the finished shard is kept, not redone
    assert "0 shard(s), 1 already done" in again.stdout and _rows(out) == rows
    refused = cli("tokenize", "--modality", "music", "--tokenizer", cards["music"], "--manifest", man,
                  "--out", root / "music_nowin", "--no-windows", "--max-error-rate", "1", "--no-progress")
    reasons = [json.loads(x)["reason"] for x in (root / "music_nowin" / "errors.jsonl").read_text().splitlines()]
    assert refused.returncode == 0 and any("180.00 s, longer than the limit 30.0 s" in r for r in reasons)
    mixed = cli(*args[:-5], "--out", out, "--window-seconds", "20", "--no-progress", check=False)
    assert mixed.returncode != 0 and "windows" in mixed.stderr  # other windows into the same folder: refused


def test_tokenize_speech_with_overlapping_windows(long_audio, cli_here):
    cli = cli_here
    root, cards = long_audio
    man = root / "speech.jsonl"
    man.write_text(json.dumps({"id": "talk", "path": "speech.wav"}) + "\n")
    out = root / "speech_codes"
    cli("tokenize", "--modality", "speech", "--tokenizer", cards["speech"], "--manifest", man, "--out", out,
        "--window-seconds", "20", "--hop-seconds", "15", "--no-progress")
    rows = _rows(out)
    assert [r["offset"] for r in rows] == [0, 15, 30, 45, 60, 75, 90, 105]
    assert [r["duration"] for r in rows] == [20.0] * 7 + [15.0]
    assert [len(r["codes"]) for r in rows] == [500] * 7 + [375]
    # windows overlap by 5 s: the same audio gives the same codes in both rows
    assert rows[0]["codes"][380:495] == rows[1]["codes"][5:120]


def test_chat_script_takes_a_window_of_long_audio(long_audio, base_tokenizer_dir, infer_support, tmp_path, cli_here,
                                                  capsys):
    cli = cli_here
    from anygpt.inference.chat import Attachment, ChatSession
    from anygpt.model.bundle import load_bundle

    root, cards = long_audio
    model = infer_support.make_bundle(tmp_path / "model", base_tokenizer_dir, cards=cards)
    script = tmp_path / "turns.jsonl"
    script.write_text(
        json.dumps({"text": "what is this?", "attachments": [{"modality": "music", "path": str(root / "music.wav"),
                                                             "start": 60, "length": 5}]}) + "\n"
        + json.dumps({"text": "and this?", "attachments": [{"modality": "speech", "path": str(root / "speech.wav")}]}) + "\n")
    out = tmp_path / "transcript.jsonl"
    proc = cli("chat", "--model", model, "--script", script, "--transcript", out, "--out", tmp_path / "media",
               "--set", "max_new_tokens=4", "--seed", "0")
    turns = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(turns) == 2 and not any(t.get("error") for t in turns), turns
    assert "speech.wav: 120.0 s of speech is longer than the tokenizer's 30 s; the model sees 0–30 s" in proc.stderr

    bundle = load_bundle(model)
    tok = bundle.tokenizers["music"]
    session = ChatSession(bundle, preset="demo", seed=0)
    got = session.encode_attachment(Attachment("music", str(root / "music.wav"), 60, 5)).codes
    assert list(got) == [int(c) for c in tok.encode([tok.load_window(root / "music.wav", 60, 5)])[0]] and len(got) == 125
    ref = ChatSession(bundle, preset="reference", seed=0)  # the released chat model's 5 s music crop
    assert len(ref.encode_attachment(Attachment("music", str(root / "music.wav"))).codes) == 125
    capsys.readouterr()
    whole = session.encode_attachment(Attachment("speech", str(root / "speech.wav"))).codes
    said = capsys.readouterr().err
    assert len(whole) == 750 and "warning: " in said and "the model sees 0–30 s" in said
    assert ".py:" not in said and "log.warning" not in said  # one plain line, not our file, line and source
