"""The web demo: a Gradio Blocks page over :class:`~anygpt.inference.chat.ChatSession`.

A person types a message, may attach an image and/or an audio clip (speech or music), picks the
reply's modality (or leaves it to the model), and gets text plus generated images and audio. Each
browser session has its own ChatSession and its own output folder (a random temp folder under
``out_root``); names of uploaded files never reach output paths. Upload size and audio duration
are bounded; a bad or oversized file gets a one-line message on the page, not a stack trace.

Run with ``anygpt serve --model DIR`` (binds 127.0.0.1 unless ``--host`` says otherwise).
"""

from __future__ import annotations

import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anygpt.inference.chat import Attachment, ChatSession
from anygpt.modality.base import MediaError

OUTPUT_CHOICES = ["auto", "text", "image", "speech", "music"]


@dataclass
class ServeLimits:
    """Bounds on what a visitor can upload."""

    max_upload_mb: float = 10.0
    max_audio_seconds: float = 30.0
    max_sessions: int = 64  # conversations kept in memory; the least recently used is dropped


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

    def __init__(self, bundle: Any, preset: str | None, out_root: str | Path, limits: ServeLimits, seed: int | None = None):
        self.bundle, self.preset, self.limits, self.seed = bundle, preset, limits, seed
        self.out_root = Path(out_root)
        self.out_root.mkdir(parents=True, exist_ok=True)
        self.sessions: OrderedDict[str, ChatSession] = OrderedDict()
        self.lock = threading.Lock()  # one model, one generation at a time

    def session(self, sid: str | None) -> tuple[str, ChatSession]:
        if not sid or sid not in self.sessions:
            sid = uuid.uuid4().hex
            out = tempfile.mkdtemp(prefix="session-", dir=self.out_root)
            self.sessions[sid] = ChatSession(self.bundle, preset=self.preset, out_dir=out, seed=self.seed)
            while len(self.sessions) > self.limits.max_sessions:
                self.sessions.popitem(last=False)
        self.sessions.move_to_end(sid)
        return sid, self.sessions[sid]

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
            with self.lock:
                reply = session.send(message, atts, None if output == "auto" else output)
        except (UploadRejected, MediaError, ValueError, FileNotFoundError) as e:
            return history, message, image, audio, None, None, f"**Error:** {e}", sid
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
