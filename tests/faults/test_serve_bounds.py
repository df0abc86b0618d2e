"""A shared `anygpt serve` (issue 19 items 1, 2, 7; issue 15 item 9): hostile uploads and huge
messages cost one line and no memory that stays; uploads and conversation folders stay under the
server's own --out, bounded by size and age, with no folder for a failed request and none left
after eviction."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bounded_input import wav_header_claiming  # noqa: E402

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, base_tokenizer_dir, image_tok_dir, speech_tok_dir, infer_support) -> Path:
    return infer_support.make_bundle(tmp_path_factory.mktemp("serve") / "model", base_tokenizer_dir,
                                     cards={"image": image_tok_dir, "speech": speech_tok_dir})


@pytest.fixture
def web(model_dir, tmp_path):
    from anygpt.inference.web import ServeLimits, WebChat
    from anygpt.model.bundle import load_bundle

    limits = ServeLimits(max_upload_mb=1.0, max_store_mb=0.05, max_age_seconds=600, max_sessions=3)
    (tmp_path / "out" / "uploads").mkdir(parents=True)
    return WebChat(load_bundle(model_dir), "greedy", tmp_path / "out", limits, seed=0, upload_dir=tmp_path / "out" / "uploads")


def test_sample_rate_bombs_give_one_line_and_memory_comes_back(web, tmp_path):
    """Three uploads whose header claims 250 MHz / 2^31 Hz used to keep ~1 GB each in the server."""
    before = rss_mb()
    for k, rate in enumerate((250_000_000, 2_147_483_647, 250_000_000)):
        bomb = tmp_path / f"bomb{k}.wav"
        bomb.write_bytes(wav_header_claiming(rate))
        *_, status, _ = web.respond("what is this?", None, str(bomb), "speech", "text", [], None)
        assert status.startswith("**Error:**") and "outside the supported range" in status
    assert rss_mb() - before < 200
    assert not (web.out_root / "sessions").exists()  # failed requests made no folder


def test_huge_messages_are_refused_by_the_models_context(web):
    *_, status, _ = web.respond("a" * 10_000_000, None, None, "speech", "text", [], None)
    assert status.startswith("**Error:** the message is 10000000 characters; this model reads 1024 tokens")
    words = " ".join(f"w{i % 97}" for i in range(1500))  # under the character cap, over the context in tokens
    *_, status, _ = web.respond(words, None, None, "speech", "text", [], None)
    assert status.startswith("**Error:** the message is") and "this model reads 1024 tokens and keeps 64 for the reply" in status
    history, *_, status, sid = web.respond("hi", None, None, "speech", "text", [], None)
    assert not status.startswith("**Error:**")  # the server still answers


def test_session_folders_are_made_on_demand_bounded_and_removed_on_eviction(web):
    sids = []
    for _ in range(4):  # max_sessions 3: the first is evicted
        *_, status, sid = web.respond("draw", None, None, "speech", "image", [], None)
        assert not status.startswith("**Error:**"), status
        sids.append(sid)
    folders = sorted(p.name for p in (web.out_root / "sessions").iterdir())
    assert sids[0] not in web.sessions and sids[0] not in folders
    assert folders == sorted(sids[1:])
    removed = web.sweep(now=time.time() + 601)  # everyone idle past max_age_seconds
    assert removed["sessions"] == 3 and not list((web.out_root / "sessions").iterdir()) and not web.sessions


def test_uploads_are_bounded_by_age_and_size(web):
    up = web.upload_dir
    files = []
    for k in range(10):  # Gradio's cache layout: one folder per upload
        d = up / f"hash{k}"
        d.mkdir()
        f = d / "clip.wav"
        f.write_bytes(os.urandom(9_000))  # 10 × 9 KB against a 0.05 MB (52 KB) store
        os.utime(f, (time.time() - 1000 + k * 60, time.time() - 1000 + k * 60))  # k=0,1 older than 600 s
        files.append(f)
    removed = web.sweep()
    left = [f for f in files if f.exists()]
    assert removed["uploads"] == 10 - len(left) and not files[0].exists() and not files[1].exists()
    assert sum(f.stat().st_size for f in left) <= 0.05 * 2**20
    assert left == files[-len(left):]  # the newest are kept
    assert not (up / "hash0").exists()  # emptied upload folders go too


@pytest.mark.slow
def test_serve_keeps_uploads_under_out(model_dir, tmp_path, child_env):
    """Through the real server: an upload (no chat call needed) lands in OUT/uploads, not /tmp/gradio."""
    import requests

    from conftest import free_port  # noqa: PLC0415

    port, out = free_port(), tmp_path / "out"
    log = tmp_path / "serve.log"
    with open(log, "w") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "anygpt.cli", "serve", "--model", str(model_dir), "--port", str(port),
                                 "--out", str(out)], cwd=REPO, env=child_env(), stdout=logf, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        r = requests.post(f"http://127.0.0.1:{port}/gradio_api/upload", files=[("files", ("x.wav", b"RIFF" + os.urandom(9000)))],
                          timeout=60)
        assert r.status_code == 200, r.text
        [path] = r.json()
        assert Path(path).resolve().is_relative_to((out / "uploads").resolve()) and Path(path).exists()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
