"""Music / general-audio backends: EnCodec through transformers (``encodec-hf``, the reference's
``facebook/encodec_32khz``) and the ``encodec`` package's original 24 kHz / 48 kHz models.

Both flatten their ``(n_q, T)`` RVQ codes frame-major with per-layer offsets, exactly as the
reference (``c0, c1+K, c2+2K, …`` per frame), so the LLM sees ``n_q × K`` codes
(4 × 2048 = 8192 for encodec_32khz) at ``n_q × frame_rate`` tokens/s. Decoding checks that each
token sits in its layer's slot and repairs what does not, warning with the repaired count.

Checkpoint layouts::

    encodec-hf: the facebook/encodec_32khz folder: config.json, model.safetensors, preprocessor_config.json
    encodec:    the package's own files: encodec_24khz-d7cc33bc.th or encodec_48khz-7e698e3e.th (state dicts)
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from anygpt.modality.audio_codec import n_frames, pad_waveforms
from anygpt.modality.base import CodeLayout, ModalityTokenizer, TokenizerCard, register_backend
from anygpt.modality.checkpoints import checkpoint_dir, required_file
from anygpt.utils import refuse_remote_code
from anygpt.modality.flatten import flatten_frame_major, unflatten_frame_major

log = logging.getLogger(__name__)


class FlatRVQTokenizer(ModalityTokenizer):
    """A codec with ``n_q`` RVQ layers of ``layer_size`` codes, flattened frame-major."""

    modality = "music"
    any_modality = True  # also usable for general audio (e.g. speech) when a card says so
    n_q: int
    layer_size: int
    frame_rate: float

    def _set_rates(self) -> None:
        if self.card is not None:  # a card may use a music codec for general audio / speech
            self.modality = self.card.modality
        self.codebook_size = self.n_q * self.layer_size
        self.frames_per_second = self.frame_rate * self.n_q

    @property
    def code_layout(self) -> CodeLayout:
        """All ``n_q`` RVQ layers interleaved frame-major (``c0, c1+K, c2+2K, …`` per frame), any
        number of frames: a span may end only after a whole frame."""
        return CodeLayout(self.n_q, self.layer_size)

    def flatten(self, codes: np.ndarray) -> np.ndarray:
        return flatten_frame_major(codes, self.layer_size)

    def unflatten(self, tokens) -> np.ndarray:
        """Flat tokens → ``(n_q, T)``; tokens out of their slot are repaired with a warning."""
        lay = self.code_layout
        res = unflatten_frame_major(tokens, lay.layers_in_sequence, lay.layer_size)
        if res.repaired:
            log.warning(f"{self.name} decode: repaired {res.repaired} token(s) out of their layer slot "
                        f"or in an incomplete frame; {res.codes.shape[1]} frame(s) kept")
        return res.codes

    def state_for_fingerprint(self) -> dict:
        return {**super().state_for_fingerprint(), "n_q": self.n_q, "layer_size": self.layer_size,
                "flattening": "frame-major"}


@register_backend("encodec-hf")
class EncodecHFTokenizer(FlatRVQTokenizer):
    """transformers ``EncodecModel`` (default layout: facebook/encodec_32khz, 4 × 2048, 50 Hz)."""

    def __init__(self, model, card: TokenizerCard | None = None, device: str | None = None,
                 bandwidth: float | None = None, max_seconds: float | None = 30.0):
        super().__init__(card, device)
        self.model = model.eval().to(self.device)
        cfg = model.config
        self.bandwidth = float(bandwidth if bandwidth is not None else cfg.target_bandwidths[0])
        if self.bandwidth not in [float(b) for b in cfg.target_bandwidths]:
            raise ValueError(f"bandwidth {self.bandwidth} not in the model's {cfg.target_bandwidths}")
        self.sample_rate = int(cfg.sampling_rate)
        self.hop = int(np.prod(cfg.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.hop
        self.n_q = int(model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth))
        self.layer_size = int(cfg.codebook_size)
        self.max_seconds = max_seconds
        self._set_rates()

    @classmethod
    def from_card(cls, card: TokenizerCard, device: str | None = None) -> "EncodecHFTokenizer":
        from transformers import EncodecModel

        folder = checkpoint_dir(card, ["config.json", "*.safetensors", "preprocessor_config.json"])
        required_file(folder, "config.json", card)
        refuse_remote_code(folder)
        model = EncodecModel.from_pretrained(str(folder), trust_remote_code=False)
        return cls(model, card, device, card.settings.get("bandwidth"), card.settings.get("max_seconds", 30.0))

    def state_for_fingerprint(self) -> dict:
        return {**super().state_for_fingerprint(), "bandwidth": self.bandwidth}

    @torch.inference_mode()
    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        if not len(batch):
            return []
        x, lengths = pad_waveforms(batch, self.device, self.hop)
        mask = torch.zeros_like(x, dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, :, :n] = 1
        with self.autocast():
            out = self.model.encode(x, padding_mask=mask, bandwidth=self.bandwidth)
        codes = out.audio_codes[0].cpu().numpy()  # (B, n_q, T) - one chunk when chunk_length is None
        return [self.flatten(codes[i, :, : n_frames(n, self.hop)]) for i, n in enumerate(lengths)]

    @torch.inference_mode()
    def decode(self, codes) -> np.ndarray:
        layers = self.unflatten(codes)
        if layers.shape[1] == 0:
            log.warning(f"{self.name} decode: no complete frame; returning one frame of silence")
            return np.zeros(self.hop, dtype=np.float32)
        t = torch.from_numpy(layers)[None, None].to(self.device)  # (chunks=1, B=1, n_q, T)
        with self.autocast():
            audio = self.model.decode(t, [None]).audio_values
        return audio[0, 0, : layers.shape[1] * self.hop].float().cpu().numpy()


ENCODEC_CHECKPOINTS = {"24khz": "encodec_24khz-d7cc33bc.th", "48khz": "encodec_48khz-7e698e3e.th"}


@register_backend("encodec")
class EncodecTokenizer(FlatRVQTokenizer):
    """The ``encodec`` package's 24 kHz (mono, 75 Hz) / 48 kHz (stereo, 150 Hz, 1 s segments) models;
    RVQ layers of 1024 codes, as many layers as the bandwidth needs (24 kHz at 6 kbps: 8)."""

    def __init__(self, model, variant: str, card: TokenizerCard | None = None, device: str | None = None,
                 bandwidth: float = 6.0, max_seconds: float | None = 30.0):
        super().__init__(card, device)
        if bandwidth not in model.target_bandwidths:
            raise ValueError(f"bandwidth {bandwidth} not in the model's {model.target_bandwidths}")
        model.set_target_bandwidth(bandwidth)
        self.model = model.eval().to(self.device)
        self.variant = variant
        self.bandwidth = float(bandwidth)
        self.sample_rate = int(model.sample_rate)
        self.channels = int(model.channels)
        self.hop = int(np.prod(model.encoder.ratios))
        self.frame_rate = self.sample_rate / self.hop
        self.n_q = int(model.quantizer.get_num_quantizers_for_bandwidth(model.frame_rate, bandwidth))
        self.layer_size = int(model.quantizer.bins)
        self.max_seconds = max_seconds
        self._set_rates()

    @staticmethod
    def build(variant: str):
        """The architecture of a variant with random weights (``encodec``'s own constructors)."""
        from encodec import EncodecModel

        if variant not in ENCODEC_CHECKPOINTS:
            raise ValueError(f"unknown encodec variant {variant!r}; known: {', '.join(ENCODEC_CHECKPOINTS)}")
        return getattr(EncodecModel, f"encodec_model_{variant}")(pretrained=False)

    @classmethod
    def from_card(cls, card: TokenizerCard, device: str | None = None) -> "EncodecTokenizer":
        variant = str(card.settings.get("variant", "24khz"))
        model = cls.build(variant)
        folder = checkpoint_dir(card, [ENCODEC_CHECKPOINTS.get(variant, "*.th")])
        ckpt = required_file(folder, card.settings.get("checkpoint", ENCODEC_CHECKPOINTS[variant]), card)
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        return cls(model, variant, card, device, float(card.settings.get("bandwidth", 6.0)),
                   card.settings.get("max_seconds", 30.0))

    def state_for_fingerprint(self) -> dict:
        return {**super().state_for_fingerprint(), "variant": self.variant, "bandwidth": self.bandwidth}

    @torch.inference_mode()
    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        if not len(batch):
            return []
        x, lengths = pad_waveforms(batch, self.device, self.hop)
        if self.channels == 2:
            x = x.expand(-1, 2, -1).contiguous()
        with self.autocast():
            frames = self.model.encode(x)  # list of (codes (B, n_q, T_seg), scale), one per segment
        seg, stride = self.model.segment_length, self.model.segment_stride
        out = []
        for i, n in enumerate(lengths):
            if seg is None:
                parts = [torch.cat([f[0] for f in frames], dim=-1)[i, :, : n_frames(n, self.hop)]]
            else:  # keep each overlapping segment's frames that cover this item's own samples
                parts = [f[0][i, :, : n_frames(min(seg, n - k * stride), self.hop)]
                         for k, f in enumerate(frames) if k * stride < n]
            out.append(self.flatten(torch.cat(parts, dim=-1).cpu().numpy()))
        return out

    @torch.inference_mode()
    def decode(self, codes) -> np.ndarray:
        """Flat tokens → waveform. 48 kHz: codes are split back into 1 s segments; the per-segment
        loudness scales are not part of the LLM's tokens, so segments decode at unit scale."""
        layers = self.unflatten(codes)
        if layers.shape[1] == 0:
            log.warning(f"{self.name} decode: no complete frame; returning one frame of silence")
            return np.zeros(self.hop, dtype=np.float32)
        t = torch.from_numpy(layers)[None].to(self.device)  # (1, n_q, T)
        seg = self.model.segment_length
        if seg is None:
            frames = [(t, None)]
        else:
            per = int(np.ceil(seg / self.hop))
            frames = [(t[..., i : i + per], torch.ones(1, 1, device=self.device)) for i in range(0, t.shape[-1], per)]
        with self.autocast():
            audio = self.model.decode(frames)  # (1, channels, samples), segments overlap-added
        if seg is None:
            audio = audio[..., : layers.shape[1] * self.hop]
        return audio[0].mean(0).float().cpu().numpy()
