"""The tokenize job: shards, bad files in errors.jsonl, resume after a kill, two ranks, detokenize."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from modality_fixtures import shape_image, vowel, write_images, write_manifest  # noqa: E402

from anygpt.modality.kmeans_tokenizer import KMeansImageTokenizer  # noqa: E402
from anygpt.jobs.tokenize_media import tokenize_manifest  # noqa: E402


def all_ids(out: Path) -> tuple[list[str], list[str]]:
    """ids in the shards and ids in errors.jsonl."""
    shard_ids = [i for f in sorted(out.glob("shard-*.parquet")) for i in pq.read_table(f)["id"].to_pylist()]
    err_ids = [json.loads(line)["id"] for line in (out / "errors.jsonl").read_text().splitlines()]
    return shard_ids, err_ids


def test_bad_images_land_in_errors(tmp_path, image_tok_dir):
    good = write_images(tmp_path / "img", 5)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good[0].read_bytes()[:100])
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    rows = [{"id": f"g{i}", "path": str(p), "text": f"caption {i}"} for i, p in enumerate(good)]
    rows += [{"id": "trunc", "path": "trunc.png"}, {"id": "fake", "path": "fake.png"}, {"id": "gone", "path": "gone.png"}]
    man = write_manifest(tmp_path / "m.jsonl", rows)
    res = tokenize_manifest(image_tok_dir, tmp_path / "out", manifest=man, shard_size=3, max_error_rate=0.5, progress=False)
    assert res.merged and res.failed is None and res.errors == 3
    errors = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "out/errors.jsonl").read_text().splitlines()}
    assert set(errors) == {"trunc", "fake", "gone"}
    assert errors["gone"]["reason"] == "file not found" and errors["fake"]["path"] == "fake.png"
    assert "image" in errors["trunc"]["reason"]
    table = pq.read_table(sorted((tmp_path / "out").glob("*.parquet"))[0]).to_pylist()
    assert table[0]["id"] == "g0" and table[0]["text"] == "caption 0" and len(table[0]["codes"]) == 64
    summary = json.loads((tmp_path / "out/manifest.json").read_text())
    assert summary["tokenized"] == 5 and summary["errors"] == 3 and summary["fingerprint"] == KMeansImageTokenizer.load(image_tok_dir).fingerprint


def test_bad_audio_land_in_errors_and_rate_fails_job(tmp_path, speech_tok_dir, cli):
    rng = np.random.default_rng(3)
    sf.write(tmp_path / "ok.wav", vowel(rng), 16000)
    sf.write(tmp_path / "ok44.flac", np.stack([vowel(rng, sr=44100)] * 2, 1), 44100)  # stereo, resampled
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    (tmp_path / "text.wav").write_text("hello, not audio")
    nan = vowel(rng)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(tmp_path / "long.wav", np.zeros(16000 * 6, np.float32), 16000)
    names = ["ok.wav", "ok44.flac", "empty.wav", "text.wav", "nan.wav", "long.wav"]
    man = write_manifest(tmp_path / "m.jsonl", [{"id": n, "path": n} for n in names])
    proc = cli("tokenize", "--modality", "speech", "--tokenizer", speech_tok_dir, "--manifest", man,
               "--out", tmp_path / "out", "--shard-size", "4", "--max-error-rate", "0.5", "--no-windows", check=False)
    assert proc.returncode == 1, proc.stderr  # --no-windows: long.wav is refused, not cut (tests/test_long_audio.py)
    assert "more than --max-error-rate" in proc.stderr
    assert "throughput: 6 items in " in proc.stdout and "audio-s/s" in proc.stdout, proc.stdout
    errors = {json.loads(line)["id"]: json.loads(line)["reason"] for line in (tmp_path / "out/errors.jsonl").read_text().splitlines()}
    assert set(errors) == {"empty.wav", "text.wav", "nan.wav", "long.wav"}
    assert "empty" in errors["empty.wav"] and "NaN" in errors["nan.wav"] and "longer than the limit" in errors["long.wav"]
    ids, _ = all_ids(tmp_path / "out")
    assert sorted(ids) == ["ok.wav", "ok44.flac"]


def test_refuses_to_mix_manifests_or_tokenizers(tmp_path, image_tok_dir, speech_tok_dir):
    paths = write_images(tmp_path / "img", 2)
    man = write_manifest(tmp_path / "m.jsonl", [{"id": str(i), "path": str(p)} for i, p in enumerate(paths)])
    tokenize_manifest(image_tok_dir, tmp_path / "out", manifest=man, progress=False)
    other = write_manifest(tmp_path / "m2.jsonl", [{"id": "x", "path": str(paths[0])}])
    with pytest.raises(ValueError, match="manifest_hash"):
        tokenize_manifest(image_tok_dir, tmp_path / "out", manifest=other, progress=False)
    dup = write_manifest(tmp_path / "m3.jsonl", [{"id": "x", "path": str(paths[0])}] * 2)
    with pytest.raises(ValueError, match="duplicate id"):
        tokenize_manifest(image_tok_dir, tmp_path / "out3", manifest=dup, progress=False)
    with pytest.raises(ValueError, match="--modality"):
        tokenize_manifest(speech_tok_dir, tmp_path / "out4", manifest=man, modality="image", progress=False)


def test_resume_after_kill_no_duplicates_no_gaps(tmp_path, image_tok_dir, child_env):
    """Kill the job (SIGKILL) while it works on an item of shard 2, rerun, check every id once.

    The item is a 7000×7000 picture: decoding and resizing it takes far longer than the 0.3 s
    after which the job is killed. (A FIFO used to be the blocker; FIFOs are now refused.) Read
    in-process (``--workers 0``): a reader process would decode it ahead, while shards 0 and 1
    are encoded, and shard 2 could finish before the kill; tests/faults/test_kill_tokenize.py
    kills jobs with their readers at random points."""
    from PIL import Image

    paths = write_images(tmp_path / "img", 11)
    big = tmp_path / "img" / "big.png"
    Image.new("RGB", (7000, 7000), (200, 120, 40)).save(big)
    rows = [{"id": f"i{k}", "path": str(p)} for k, p in enumerate(paths)]
    rows.insert(6, {"id": "big", "path": str(big)})
    man = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "anygpt.cli", "tokenize", "--modality", "image", "--tokenizer", str(image_tok_dir),
            "--manifest", str(man), "--out", str(out), "--shard-size", "3", "--no-progress", "--workers", "0"]
    proc = subprocess.Popen(args, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "shard-00001.parquet").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "shard-00002.parquet").exists() and not (out / "manifest.json").exists()
    done = {f.name: f.stat().st_ino for f in out.glob("shard-*.parquet")}
    proc2 = subprocess.run(args, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc2.returncode == 0, proc2.stderr
    assert "2 already done" in proc2.stdout
    assert all((out / n).stat().st_ino == ino for n, ino in done.items())  # finished shards untouched
    ids, err_ids = all_ids(out)
    assert sorted(ids + err_ids) == sorted(r["id"] for r in rows) and len(ids) == len(set(ids)) and not err_ids
    assert not list(out.glob(".*.tmp"))


def test_two_ranks_split_one_manifest(tmp_path, image_tok_dir, child_env):
    paths = write_images(tmp_path / "img", 9)
    (tmp_path / "img" / "bad.png").write_text("x")
    rows = [{"id": f"i{k}", "path": str(p)} for k, p in enumerate(paths)] + [{"id": "bad", "path": "img/bad.png"}]
    man = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "anygpt.cli", "tokenize", "--modality", "image", "--tokenizer", str(image_tok_dir),
            "--manifest", str(man), "--out", str(out), "--shard-size", "2", "--no-progress", "--max-error-rate", "0.2"]
    procs = [subprocess.Popen(args, env=child_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ids, err_ids = all_ids(out)
    assert sorted(ids + err_ids) == sorted(r["id"] for r in rows) and len(ids) == len(set(ids)) and err_ids == ["bad"]
    for k in range(5):  # shard k was written by rank k % 2: both ranks worked
        assert (out / f"shard-{k:05d}.parquet").exists()
    assert json.loads((out / "manifest.json").read_text())["items"] == 10


def test_detokenize_shards_and_malformed_text(tmp_path, image_tok_dir, speech_tok_dir, cli):
    paths = write_images(tmp_path / "img", 2)
    man = write_manifest(tmp_path / "m.jsonl", [{"id": "../../etc/evil name", "path": str(paths[0])},
                                                 {"id": "b", "path": str(paths[1])}])
    tokenize_manifest(image_tok_dir, tmp_path / "codes", manifest=man, progress=False)
    cli("detokenize", "--tokenizer", image_tok_dir, "--shards", tmp_path / "codes", "--out", tmp_path / "media")
    files = sorted(p.name for p in (tmp_path / "media").glob("*.png"))
    assert files == ["b.png", "etc_evil_name.png"]
    from PIL import Image

    assert Image.open(tmp_path / "media/b.png").size == (64, 64)
    # unclosed image span with a too-short body and an out-of-range code, plus a speech span
    text = "Here: <soim>" + "".join(f"<👀{c}>" for c in [1, 2, 99999, 3]) + " and <sosp><🗣️5><🗣️6><🗣️7><eosp>"
    proc = cli("detokenize", "--tokenizer", f"image={image_tok_dir},speech={speech_tok_dir}", "--text", text,
               "--out", tmp_path / "gen")
    assert "warning:" in proc.stderr and "unclosed" in proc.stderr
    index = [json.loads(line) for line in (tmp_path / "gen/detokenized.jsonl").read_text().splitlines()]
    assert [i["modality"] for i in index] == ["image"]  # the unclosed image span swallows the rest
    assert any("expected 64" in w for w in index[0]["warnings"])
    assert Image.open(index[0]["path"]).size == (64, 64)
    text2 = "<sosp><🗣️5><🗣️6><🗣️7><eosp> then <soim><eoim>"
    proc = cli("detokenize", "--tokenizer", f"image={image_tok_dir},speech={speech_tok_dir}", "--text", text2,
               "--out", tmp_path / "gen2")
    index = [json.loads(line) for line in (tmp_path / "gen2/detokenized.jsonl").read_text().splitlines()]
    assert index[0]["path"].endswith(".wav") and sf.info(index[0]["path"]).frames == 3 * 640
    assert index[1]["path"] is None and "no codes" in index[1]["warnings"][0]


def test_shard_is_read_in_windows_in_manifest_order(tmp_path, image_tok_dir):
    from anygpt.jobs.manifest import ManifestItem
    from anygpt.jobs.tokenize_media import size_batches, tokenize_shard

    paths = write_images(tmp_path / "img", 7)
    items = [ManifestItem(f"i{k}", str(p), p) for k, p in enumerate(paths)]
    items.insert(3, ManifestItem("gone", "gone.png", tmp_path / "gone.png"))
    tok = KMeansImageTokenizer.load(image_tok_dir)
    for workers in (0, 2):  # read in-process or by two reader processes: the same rows
        got = tokenize_shard(tok, items, "image", batch_size=2, max_batch_elements=None, window=3, workers=workers)
        rows, errors = got.rows, got.errors
        assert [r["id"] for r in rows] == [f"i{k}" for k in range(7)] and [e["id"] for e in errors] == ["gone"]
        assert errors[0]["reason"] == "file not found" and got.audio_seconds == 0
    assert rows[4]["codes"] == tok.encode([tok.load_media(paths[4])])[0].tolist()
    # batches group similar sizes and respect both caps
    assert size_batches([5, 1, 4, 2, 3], 2, None) == [[1, 3], [4, 2], [0]]
    assert size_batches([10, 10, 10, 1], 8, 20) == [[3, 0], [1, 2]]


def test_reader_processes_change_nothing_but_speed(tmp_path, speech_tok_dir):
    """Media read by two worker processes (a bad file and a 44.1 kHz stereo one among them, over
    several shards): the same rows, error records and encode batches as reading in-process, and
    the same codes as one item at a time (the demo codec is frame-wise: padding does not matter).
    Batches are sorted by length: each holds neighbouring durations."""
    from anygpt.modality.kmeans_tokenizer import KMeansSpeechTokenizer

    rng = np.random.default_rng(4)
    seconds = [1.0, 0.3, 0.7, 0.5, 0.9, 0.4, 0.6, 0.8]
    rows = []
    for i, sec in enumerate(seconds):
        sf.write(tmp_path / f"s{i}.wav", vowel(rng, sec), 16000)
        rows.append({"id": f"s{i}", "path": f"s{i}.wav"})
    sf.write(tmp_path / "cd.flac", np.stack([vowel(rng, 0.55, 44100)] * 2, 1), 44100)
    (tmp_path / "bad.wav").write_text("not audio")
    rows[3:3] = [{"id": "cd", "path": "cd.flac"}, {"id": "bad", "path": "bad.wav"}]
    man = write_manifest(tmp_path / "m.jsonl", rows)

    class Recording(KMeansSpeechTokenizer):
        def encode(self, batch):
            self.batches.append([len(x) for x in batch])
            return super().encode(batch)

    def job(out: str, batch_size: int, workers: int):
        tok = Recording.load(speech_tok_dir)
        tok.batches = []
        res = tokenize_manifest(speech_tok_dir, tmp_path / out, manifest=man, shard_size=4, batch_size=batch_size,
                                max_error_rate=0.5, progress=False, tokenizer=tok, workers=workers,
                                max_batch_seconds=None)
        shards = sorted((tmp_path / out).glob("shard-*.parquet"))
        got = [r for f in shards for r in pq.read_table(f).to_pylist()]
        errors = (tmp_path / out / "errors.jsonl").read_text()
        return res, got, errors, tok.batches

    res2, rows2, err2, batches2 = job("w2", 3, 2)
    res0, rows0, err0, batches0 = job("w0", 3, 0)
    _, rows1, err1, _ = job("single", 1, 0)
    assert res2.workers == 2 and res2.read_now == len(rows) and res2.errors == 1
    assert rows2 == rows0 and err2 == err0 and batches2 == batches0
    assert [r["id"] for r in rows2] == [r["id"] for r in rows if r["id"] != "bad"]  # manifest order
    assert [(r["id"], r["codes"]) for r in rows1] == [(r["id"], r["codes"]) for r in rows2] and err1 == err2
    assert json.loads(err2)["id"] == "bad" and json.loads(err2)["path"] == "bad.wav"
    assert res2.audio_seconds == pytest.approx(sum(seconds) + 0.55, abs=1e-3)
    assert max(len(b) for b in batches2) == 3
    assert batches2[0] + batches2[1] == sorted(batches2[0] + batches2[1])  # shard 0's four items, by length
