"""``speechtokenizer`` backend: SpeechTokenizer (16 kHz, hop 320 → 50 frames/s, 8 RVQ × 1024).

As the reference: the LLM sees RVQ layer 0 only (50 tokens/s, 1024 codes). Decode renders layer 0
alone, or all layers when given an ``(n_q, T)`` array (e.g. layer 0 + acoustic layers predicted by
SoundStorm). Checkpoint layout as published (``fnlp/SpeechTokenizer``)::

    speechtokenizer_hubert_avg/config.json
    speechtokenizer_hubert_avg/SpeechTokenizer.pt      # a plain state dict

Card::

    backend: speechtokenizer
    modality: speech
    path: /models/speechtokenizer_hubert_avg   # or hub_id: fnlp/SpeechTokenizer + subfolder
    config: config.json
    checkpoint: SpeechTokenizer.pt
"""

from __future__ import annotations

import json
import logging
import sys
import types
from typing import Any, Sequence

import numpy as np
import torch

from anygpt.modality.audio_codec import n_frames, pad_waveforms
from anygpt.modality.base import CodeLayout, ModalityTokenizer, TokenizerCard, register_backend, repair_codes
from anygpt.modality.checkpoints import checkpoint_dir, required_file

log = logging.getLogger(__name__)


def speechtokenizer_class():
    """``speechtokenizer.model.SpeechTokenizer`` without importing the package's trainer, which
    needs beartype + tensorboard (undeclared dependencies we do not want at inference)."""
    if "speechtokenizer" not in sys.modules:
        stub = types.ModuleType("speechtokenizer.trainer")
        stub.SpeechTokenizerTrainer = None  # the package __init__ imports this name
        sys.modules.setdefault("speechtokenizer.trainer", stub)
    from speechtokenizer.model import SpeechTokenizer

    return SpeechTokenizer


@register_backend("speechtokenizer")
class SpeechTokenizerBackend(ModalityTokenizer):
    """SpeechTokenizer RVQ-1 codes at 50 Hz."""

    modality = "speech"

    def __init__(self, model: torch.nn.Module, config: dict, card: TokenizerCard | None = None,
                 device: str | None = None, max_seconds: float | None = 60.0):
        super().__init__(card, device)
        self.model = model.eval().to(self.device)
        self.config = config
        self.sample_rate = int(config["sample_rate"])
        self.hop = int(np.prod(config["strides"]))
        self.frames_per_second = self.sample_rate / self.hop
        self.codebook_size = int(config["codebook_size"])
        self.n_q = int(config["n_q"])  # the codec's RVQ depth (8); the LLM sequence holds layer 0 only
        self.max_seconds = max_seconds

    @property
    def code_layout(self) -> CodeLayout:
        """RVQ layer 0 only, one code per 20 ms frame (as the reference): one stream of
        ``codebook_size`` (1024) codes, any length. Layers 1..n_q-1 never enter the sequence."""
        return CodeLayout(1, self.codebook_size)

    @classmethod
    def from_card(cls, card: TokenizerCard, device: str | None = None) -> "SpeechTokenizerBackend":
        folder = checkpoint_dir(card, ["config.json", "*.pt"])
        config_path = required_file(folder, card.settings.get("config", "config.json"), card)
        ckpt = required_file(folder, card.settings.get("checkpoint", "SpeechTokenizer.pt"), card)
        config = json.loads(config_path.read_text(encoding="utf-8"))
        model = speechtokenizer_class()(config)
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        obj = cls(model, config, card, device, card.settings.get("max_seconds", 60.0))
        from anygpt.modality.soundstorm import VoiceDecoder

        obj.voice = VoiceDecoder.from_card(card, obj.device)  # None unless the card names a SoundStorm checkpoint
        return obj

    def state_for_fingerprint(self) -> dict:
        return {**super().state_for_fingerprint(), "layers": [0], "config": self.config}

    @torch.inference_mode()
    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        if not len(batch):
            return []
        x, lengths = pad_waveforms(batch, self.device, self.hop)
        with self.autocast():
            codes = self.model.encode(x, n_q=1)[0].cpu().numpy()  # (B, T) layer 0
        return [codes[i, : n_frames(n, self.hop)].astype(np.int64) for i, n in enumerate(lengths)]

    voice = None  # a SoundStorm VoiceDecoder filling layers 1-7 (reference-style voice-prompted decoding)
    takes_voice_prompt = True  # used when the card names a SoundStorm; without one decode warns it is ignored

    @torch.inference_mode()
    def decode(self, codes, voice_prompt: str | None = None) -> np.ndarray:
        """1-D layer-0 codes, or ``(n_q, T)`` codes of layers 0..n_q-1 → 16 kHz waveform.

        With a SoundStorm in the card, layer-0 codes get acoustic layers 1-7 predicted first, in the
        voice of ``voice_prompt`` (an audio file, trimmed to a few seconds) or a random one."""
        arr = np.asarray(codes, dtype=np.int64)
        if arr.ndim == 1 and self.voice is not None:
            arr = self.voice.all_layers(self.model, repair_codes(arr, self.code_layout, "speechtokenizer decode"), voice_prompt)
        elif voice_prompt is not None:
            log.warning("speechtokenizer decode: the card names no soundstorm; voice prompt ignored")
        if arr.ndim == 2:
            if arr.shape[0] > self.n_q:
                log.warning(f"speechtokenizer decode: {arr.shape[0]} layers given, model has {self.n_q}; extra dropped")
                arr = arr[: self.n_q]
            frames = CodeLayout(1, self.codebook_size, arr.shape[1])  # every RVQ layer keeps its frames
            arr = np.stack([repair_codes(row, frames, f"speechtokenizer decode, layer {q}") for q, row in enumerate(arr)])
        else:
            arr = repair_codes(arr, self.code_layout, "speechtokenizer decode")[None]
        if arr.shape[1] == 0:
            log.warning("speechtokenizer decode: no valid codes; returning one frame of silence")
            return np.zeros(self.hop, dtype=np.float32)
        t = torch.from_numpy(arr)[:, None, :].to(self.device)  # (n_q, 1, T)
        with self.autocast():
            return self.model.decode(t, st=0)[0, 0].float().cpu().numpy()
