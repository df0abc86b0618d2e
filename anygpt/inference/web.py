"""The web demo: a Gradio Blocks page over :class:`~anygpt.inference.chat.ChatSession`.

A person types a message, may attach an image and/or an audio clip (speech or music), picks the
reply's modality (or leaves it to the model), and gets text plus generated images and audio. Each
browser session has its own ChatSession and its own output folder ``out_root/sessions/<id>``,
made only when a reply writes a file; names of uploaded files never reach output paths. Upload
size and audio duration are bounded; a bad or oversized file gets a one-line message on the page,
not a stack trace.

Shared-server bounds (:class:`ServeLimits`): at most ``max_concurrent`` generations run at once
(one per conversation), each generate call stops after ``max_request_seconds``, and a janitor
(:meth:`WebChat.sweep`) keeps ``out_root`` (uploads in ``out_root/uploads``, Gradio's cache, and
the session folders) under ``max_store_mb`` and removes uploads and idle conversations older than
``max_age_seconds``; an evicted conversation's folder goes with it.

Run with ``anygpt serve --model DIR`` (binds 127.0.0.1 unless ``--host`` says otherwise).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anygpt.inference.chat import Attachment, ChatSession
from anygpt.modality.base import MediaError
from anygpt.vocab import MODALITIES

log = logging.getLogger(__name__)

OUTPUT_CHOICES = ["auto", "text", *MODALITIES]


@dataclass
class ServeLimits:
    """Bounds on what a visitor can upload."""

    max_upload_mb: float = 10.0
    max_audio_seconds: float = 30.0
    max_sessions: int = 64  # conversations kept in memory; the least recently used is dropped
    max_concurrent: int = 2  # generations at once: a short turn need not wait for a long one
    max_request_seconds: float = 60.0  # each generate call of a turn stops after this long
    max_store_mb: float = 512.0  # uploads + session folders on disk, oldest removed first
    max_age_seconds: float = 3600.0  # uploads and idle conversations older than this are removed


class UploadRejected(ValueError):
    """An upload that breaks a limit or cannot be read; the message is shown on the page."""


def check_upload(path: str | None, kind: str, limits: ServeLimits) -> None:
    """Raise :class:`UploadRejected` for a file that is too large, or audio that is too long or unreadable."""
    if not path:
        return
    p = Path(path)
    size_mb = p.stat().st_size / 2**20
    if size_mb > limits.max_upload_mb:
        raise UploadRejected(f"the {kind} file is {size_mb:.1f} MB; the limit is {limits.max_upload_mb:g} MB")
    if kind == "audio":
        import soundfile as sf

        try:
            info = sf.info(str(p))
        except Exception:  # soundfile raises several error types for unreadable files
            raise UploadRejected("the audio file could not be read (expected WAV, FLAC or OGG)") from None
        if info.duration > limits.max_audio_seconds:
            raise UploadRejected(
                f"the audio clip is {info.duration:.1f} s long; the limit is {limits.max_audio_seconds:g} s")


class WebChat:
    """Server-side state: one ChatSession per browser session, generation one request at a time."""

    def __init__(self, bundle: Any, preset: str | None, out_root: str | Path, limits: ServeLimits, seed: int | None = None,
                 upload_dir: str | Path | None = None):
        self.bundle, self.preset, self.limits, self.seed = bundle, preset, limits, seed
        self.out_root = Path(out_root)
        self.out_root.mkdir(parents=True, exist_ok=True)
        self.session_root = self.out_root / "sessions"
        self.upload_dir = Path(upload_dir) if upload_dir is not None else None  # Gradio's cache (GRADIO_TEMP_DIR)
        self.sessions: OrderedDict[str, ChatSession] = OrderedDict()
        self.last_used: dict[str, float] = {}
        self.turn_locks: dict[str, threading.Lock] = {}  # a conversation's turns run one after another
        self.table_lock = threading.Lock()  # guards the three tables above
        self.slots = threading.BoundedSemaphore(max(1, limits.max_concurrent))
        self.overrides = {"max_seconds": limits.max_request_seconds} if limits.max_request_seconds > 0 else {}

    def session(self, sid: str | None) -> tuple[str, ChatSession]:
        with self.table_lock:
            if not sid or sid not in self.sessions:
                sid = uuid.uuid4().hex
                # the folder is made by the first reply that writes a file: a failed request leaves none
                self.sessions[sid] = ChatSession(self.bundle, preset=self.preset, out_dir=self.session_root / sid,
                                                 seed=self.seed, overrides=self.overrides)
                self.turn_locks[sid] = threading.Lock()
                while len(self.sessions) > self.limits.max_sessions:
                    self._evict(next(iter(self.sessions)))
            self.sessions.move_to_end(sid)
            self.last_used[sid] = time.time()
            return sid, self.sessions[sid]

    def _evict(self, sid: str) -> None:
        """Forget a conversation and delete its folder (caller holds ``table_lock``)."""
        session = self.sessions.pop(sid, None)
        self.last_used.pop(sid, None)
        self.turn_locks.pop(sid, None)
        if session is not None:
            shutil.rmtree(session.out_dir, ignore_errors=True)

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """Bound the server's files: evict conversations idle past ``max_age_seconds`` and delete
        uploads older than that, then the oldest uploads and conversations until everything under
        ``out_root`` and the upload folder fits ``max_store_mb``. Returns what was removed."""
        now = time.time() if now is None else now
        age, cap = self.limits.max_age_seconds, self.limits.max_store_mb * 2**20
        removed = {"sessions": 0, "uploads": 0}
        with self.table_lock:
            for sid in [s for s, t in self.last_used.items() if now - t > age and not self.turn_locks[s].locked()]:
                self._evict(sid)
                removed["sessions"] += 1
        uploads = _files(self.upload_dir) if self.upload_dir is not None else []
        for f, mtime, _ in uploads:
            if now - mtime > age:
                _remove_upload(f, self.upload_dir)
                removed["uploads"] += 1
        uploads = _files(self.upload_dir) if self.upload_dir is not None else []
        total = sum(size for *_, size in uploads) + sum(size for *_, size in _files(self.session_root))
        for f, _, size in sorted(uploads, key=lambda x: x[1]):
            if total <= cap:
                break
            _remove_upload(f, self.upload_dir)
            total -= size
            removed["uploads"] += 1
        with self.table_lock:
            for sid in list(self.sessions):
                if total <= cap:
                    break
                if self.turn_locks[sid].locked():
                    continue
                total -= sum(size for *_, size in _files(self.sessions[sid].out_dir))
                self._evict(sid)
                removed["sessions"] += 1
        return removed

    def start_janitor(self, every: float = 30.0) -> threading.Thread:
        """Run :meth:`sweep` every ``every`` seconds in a daemon thread."""
        def loop() -> None:
            while True:
                time.sleep(every)
                try:
                    self.sweep()
                except OSError as e:  # a file vanished under us: next round
                    log.error(f"anygpt serve: cleanup: {e}")

        t = threading.Thread(target=loop, name="anygpt-serve-janitor", daemon=True)
        t.start()
        return t

    def respond(self, message: str, image: str | None, audio: str | None, audio_kind: str, output: str,
                history: list | None, sid: str | None):
        """One turn. Returns (history, message box, image box, audio box, image out, audio out, status, sid):
        the input boxes are cleared after a successful turn (attachments go with one message only)
        and kept as they were after an error."""
        history = list(history or [])
        sid, session = self.session(sid)
        message = (message or "").strip()
        try:
            if not message and not image and not audio:
                raise UploadRejected("type a message or attach a file")
            check_upload(image, "image", self.limits)
            check_upload(audio, "audio", self.limits)
            atts = []
            if image:
                atts.append(Attachment("image", image))
            if audio:
                atts.append(Attachment("music" if audio_kind == "music" else "speech", audio))
            try:
                with self.turn_locks.get(sid) or threading.Lock(), self.slots:
                    reply = session.send(message, atts, None if output == "auto" else output)
            finally:
                release_memory()
        except (UploadRejected, MediaError, ValueError, FileNotFoundError) as e:
            traceback.clear_frames(e.__traceback__)  # drop the failed turn's tensors now
            return history, message, image, audio, None, None, f"**Error:** {e}", sid
        except Exception as e:  # noqa: BLE001 - a bug must not take the server down; the visitor gets one line
            log.error(f"anygpt serve: turn failed: {type(e).__name__}: {e}")
            traceback.clear_frames(e.__traceback__)
            return history, message, image, audio, None, None, f"**Error:** internal error ({type(e).__name__})", sid
        user_content = [message] if message else []
        user_content += [{"path": a.path} for a in atts]
        for c in user_content:
            history.append({"role": "user", "content": c})
        if reply.text:
            history.append({"role": "assistant", "content": reply.text})
        out_image = out_audio = None
        for m in reply.media:
            history.append({"role": "assistant", "content": {"path": m["path"]}})
            if m["modality"] == "image":
                out_image = m["path"]
            else:
                out_audio = m["path"]
        if not reply.text and not reply.media:
            history.append({"role": "assistant", "content": "(empty reply)"})
        status = f"Reply {session.turn}: " + (", ".join(f"{m['modality']} {Path(m['path']).name}" for m in reply.media) or "text")
        return history, "", None, None, out_image, out_audio, status, sid

    def reset(self, sid: str | None):
        if sid in self.sessions:
            self.sessions[sid].reset()
        return [], None, None, "Conversation reset.", sid


def release_memory() -> None:
    """Hand freed heap memory back to the system after a turn (glibc's ``malloc_trim``): each
    worker thread gets its own malloc arena, and without this the arenas keep a turn's freed
    tensors as RSS. A no-op where glibc is not the C library."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


def _files(root: Path | None) -> list[tuple[Path, float, int]]:
    """``(path, mtime, size)`` of every file under ``root`` (missing root: none)."""
    out = []
    if root is None or not root.is_dir():
        return out
    for f in root.rglob("*"):
        try:
            st = f.stat()
        except OSError:
            continue
        if f.is_file():
            out.append((f, st.st_mtime, st.st_size))
    return out


def _remove_upload(f: Path, root: Path | None) -> None:
    """Delete an uploaded file and the folder Gradio made for it when that is now empty."""
    f.unlink(missing_ok=True)
    parent = f.parent
    if root is not None and parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def build_app(web: WebChat):
    """The Gradio Blocks page (element ids are stable: the browser test relies on them)."""
    import gradio as gr

    mods = set(web.bundle.layout.modality_names)
    choices = [c for c in OUTPUT_CHOICES if c in ("auto", "text") or c in mods]
    with gr.Blocks(title="anygpt chat") as app:
        gr.Markdown("## anygpt chat\nAttach an image or audio clip, choose how the model should reply, and send.")
        sid = gr.State(None)
        chat = gr.Chatbot(label="Conversation", elem_id="chat", height=360)
        with gr.Row():
            in_image = gr.Image(label="Attach an image", type="filepath", sources=["upload"], height=240, elem_id="in-image")
            with gr.Column():
                in_audio = gr.Audio(label="Attach audio", type="filepath", sources=["upload"], elem_id="in-audio")
                audio_kind = gr.Radio(["speech", "music"], value="speech", label="The audio is", elem_id="audio-kind")
        output = gr.Radio(choices, value="auto", label="Reply as", elem_id="reply-as")
        with gr.Row():
            msg = gr.Textbox(label="Message", placeholder="Type a message", elem_id="msg", scale=4)
            send = gr.Button("Send", variant="primary", elem_id="send", scale=1)
            reset = gr.Button("Reset", elem_id="reset", scale=1)
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            out_image = gr.Image(label="Generated image", type="filepath", interactive=False, height=240, elem_id="out-image")
            out_audio = gr.Audio(label="Generated audio", type="filepath", interactive=False, elem_id="out-audio")
        inputs = [msg, in_image, in_audio, audio_kind, output, chat, sid]
        outputs = [chat, msg, in_image, in_audio, out_image, out_audio, status, sid]
        send.click(web.respond, inputs, outputs)
        msg.submit(web.respond, inputs, outputs)
        reset.click(web.reset, [sid], [chat, out_image, out_audio, status, sid])
    return app
