"""The web demo: upload limits and bad files give clear messages; outputs stay in a per-session folder;
and, in a real headless Chromium, an image upload plus a forced-image message shows a generated image."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, base_tokenizer_dir, demo_cards, infer_support) -> Path:
    return infer_support.make_bundle(tmp_path_factory.mktemp("web") / "model", base_tokenizer_dir, demo_cards)


@pytest.fixture(scope="module")
def media(tmp_path_factory, infer_support):
    return infer_support.write_example_media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def web(model_dir, tmp_path):
    from anygpt.inference.web import ServeLimits, WebChat
    from anygpt.model.bundle import load_bundle

    return WebChat(load_bundle(model_dir), "demo", tmp_path / "serve", ServeLimits(max_upload_mb=0.05, max_audio_seconds=1.0), seed=0)


def test_limits_and_bad_files_give_clear_messages(web, media, tmp_path):
    import soundfile as sf

    long_wav = tmp_path / "long.wav"
    sf.write(str(long_wav), np.zeros(8000 * 2, dtype=np.float32), 8000)  # 2 s, 31 KB: under the size limit
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + os.urandom(80_000))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF nonsense")
    cases = [
        (dict(image=None, audio=str(long_wav)), "2.0 s long; the limit is 1 s"),
        (dict(image=str(big), audio=None), "the limit is 0.05 MB"),
        (dict(image=None, audio=str(junk)), "could not be read"),
        (dict(image=None, audio=None), "type a message"),
    ]
    for kw, expect in cases:
        history, _, kept_img, kept_aud, img, aud, status, _ = web.respond("" if "message" in expect else "hi", kw["image"], kw["audio"],
                                                       "speech", "auto", [], None)
        assert expect in status and status.startswith("**Error:**") and img is None and aud is None and history == []
        assert (kept_img, kept_aud) == (kw["image"], kw["audio"])  # the visitor can fix and resend


def test_outputs_stay_in_the_session_folder(web, media, tmp_path):
    evil_dir = tmp_path / "a" / ".." / "a" / "x y;z"
    evil_dir.mkdir(parents=True)
    evil = evil_dir / "..%2f..%2fetc%2fpasswd.png"
    shutil.copy(media["image"], evil)
    history, msg, in_img, _, img, aud, status, sid = web.respond("../../etc/x", str(evil), None, "speech", "image", [], None)
    assert img and msg == "" and in_img is None and "Error" not in status
    session_dir = Path(web.sessions[sid].out_dir).resolve()
    assert session_dir.parent == (tmp_path / "serve" / "sessions").resolve()
    assert Path(img).resolve().parent == session_dir and Path(img).name == "turn001_image_0.png"
    history, _, _, _, _, aud, _, sid2 = web.respond("sing", None, str(media["audio"]), "music", "music", history, sid)
    assert sid2 == sid and Path(aud).name == "turn002_music_0.wav" and Path(aud).resolve().parent == session_dir
    *_, other = web.respond("hi", None, None, "speech", "image", [], None)
    assert Path(web.sessions[other].out_dir) != Path(web.sessions[sid].out_dir)  # one folder per visitor


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)")
    return sync_playwright


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"anygpt serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"anygpt serve did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.mark.browser
def test_browser_image_upload_gets_a_generated_image(model_dir, media, tmp_path, child_env, repo_root):
    sync_playwright = _playwright()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "serve.log"
    out_root = tmp_path / "serve_out"
    with open(log, "w") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "anygpt.cli", "serve", "--model", str(model_dir), "--port", str(port),
                                 "--out", str(out_root), "--seed", "0", "--max-upload-mb", "1"],
                                cwd=repo_root, env=child_env(), stdout=logf, stderr=subprocess.STDOUT)
    try:
        _wait_http(url, proc, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1100, "height": 1300})
            page.goto(url)
            page.wait_for_selector("#send", timeout=60_000)
            page.set_input_files("#in-image input[type=file]", str(media["image"]))
            page.wait_for_selector("#in-image img", timeout=30_000)
            page.locator("#reply-as").get_by_label("image").check()
            page.fill("#msg textarea", "Draw this again ../../etc/x")
            page.click("#send")
            page.wait_for_selector("#out-image img", timeout=120_000)
            page.wait_for_function("document.querySelector('#status').innerText.includes('Reply 1')", timeout=30_000)
            status = page.inner_text("#status")
            assert page.locator("#in-image img").count() == 0, "the attachment should be cleared after sending"
            chat_imgs = page.locator("#chat img").count()
            chat_text = page.inner_text("#chat")
            src = page.get_attribute("#out-image img", "src")
            shot = tmp_path / "web_chat.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        if os.environ.get("ANYGPT_KEEP_ARTIFACTS"):
            keep = repo_root / "tests" / "artifacts"
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, keep / shot.name)
        assert "Reply 1: image turn001_image_0.png" in status
        assert chat_imgs >= 2  # the uploaded image in the user turn and the generated one in the reply
        assert "Draw this again" in chat_text
        assert src and "turn001_image_0.png" in src
        # the reply's file is in its session's folder under --out (Gradio serves a copy from its cache,
        # which `anygpt serve` keeps under --out/uploads)
        [made] = list((out_root / "sessions").rglob("turn001_image_0.png"))
        assert made.parent.parent == out_root / "sessions"
        assert list((out_root / "uploads").rglob("turn001_image_0.png")), "Gradio's served copy belongs under --out"
        assert shot.stat().st_size > 10_000
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_serve_binds_localhost_by_default(model_dir, tmp_path, monkeypatch, capsys):
    """`anygpt serve` with no --host launches Gradio on 127.0.0.1 only, never shared."""
    import gradio

    from anygpt.cli import main

    launched = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kw: launched.update(kw))  # stop before binding
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # serve sets it; restored after the test
    assert main(["serve", "--model", str(model_dir), "--out", str(tmp_path / "serve")]) == 0
    assert launched["server_name"] == "127.0.0.1" and launched["share"] is False
    assert launched["allowed_paths"] == [str(tmp_path / "serve")]
    assert "http://127.0.0.1:7860" in capsys.readouterr().out
