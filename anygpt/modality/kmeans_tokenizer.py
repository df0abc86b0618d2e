"""K-means tokenizers: codebooks fitted in seconds, for the embedded default (``anygpt demo``).

They register as the ``demo-image`` / ``demo-speech`` / ``demo-music`` backends (the names cards
on disk carry, with ``grade: demo``): demo-grade, labelled as such. They make a tiny any-to-any
model trainable on a CPU in minutes, and their decode is recognisable, not good.

- ``demo-image``: a fixed-size RGB image (default 64×64) cut into ``patch_size`` patches (default
  8×8 → 64 codes per image); each patch is replaced by its nearest codebook patch. Decode pastes
  codebook patches back.
- ``demo-speech`` / ``demo-music``: log-mel frames at a coarse rate (default 25 frames/s; each frame
  is the mean power of ``pool`` fine STFT frames); each frame → nearest codebook frame. Decode =
  codebook frames → repeated to the fine rate → ``InverseMelScale`` → ``GriffinLim`` → waveform.

A fitted tokenizer is a directory: ``card.yaml`` + ``codebook.safetensors``. The fingerprint covers
the codebook and every setting that changes codes. ``fit`` takes in-memory items (PIL images /
float32 waveforms at the tokenizer's rate), media paths, or a JSONL manifest path::

    tok = KMeansImageTokenizer.fit(images, "out/image_tok", codebook_size=512)
    codes = tok.encode([img])[0]          # 64 ints in [0, 512)
    img2 = tok.decode(codes)              # PIL image
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from anygpt.modality.base import CodeLayout, ModalityTokenizer, TokenizerCard, load_card, register_backend, repair_codes
from anygpt.modality.kmeans import kmeans, nearest

log = logging.getLogger(__name__)

WEIGHTS_FILE = "codebook.safetensors"


def iter_fit_items(items: Any, load) -> Iterable[Any]:
    """Items for ``fit``: a JSONL manifest path (``{"path": ...}`` per line), or an iterable of
    in-memory media and/or media paths. ``load(path)`` reads one path; unreadable files are
    skipped with a warning."""
    from anygpt.modality.media import MediaError
    from anygpt.utils import read_jsonl

    def safe_load(path):
        try:
            return load(path)
        except MediaError as e:  # a bad file is skipped with a warning, as in the tokenize job
            log.warning(f"fit: skipped {e}")
            return None

    if isinstance(items, (str, os.PathLike)):
        p = Path(items)
        paths = (Path(row["path"]) for _, row in read_jsonl(p))
        loaded = (safe_load(mp if mp.is_absolute() else p.parent / mp) for mp in paths)
    else:
        loaded = (safe_load(it) if isinstance(it, (str, os.PathLike)) else it for it in items)
    yield from (x for x in loaded if x is not None)


class KMeansTokenizer(ModalityTokenizer):
    """Shared plumbing: a codebook tensor plus settings, saved as a card directory."""

    settings_keys: tuple[str, ...] = ()

    def __init__(self, codebook: np.ndarray, settings: dict[str, Any], card: TokenizerCard | None = None,
                 device: str | None = None):
        super().__init__(card, device or "cpu")
        self.settings = dict(settings)
        self.codebook = torch.as_tensor(np.asarray(codebook, dtype=np.float32))
        self.codebook_size = int(self.codebook.shape[0])
        for k in self.settings_keys:
            setattr(self, k, self.settings[k])
        # the code whose entry is closest to the codebook mean: a neutral filler for repairs
        self.filler = int(nearest(self.codebook.mean(0, keepdim=True), self.codebook)[0])

    @classmethod
    def from_card(cls, card: TokenizerCard, device: str | None = None) -> "KMeansTokenizer":
        from safetensors.torch import load_file

        path = card.path("weights") or card.root / WEIGHTS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path}: k-means tokenizer codebook not found (card {card.root})")
        codebook = load_file(str(path))["codebook"].numpy()
        settings = {k: card.settings[k] for k in cls.settings_keys if k in card.settings}
        missing = [k for k in cls.settings_keys if k not in settings]
        if missing:
            raise ValueError(f"{card.root}: card lacks settings {missing}")
        if int(card.settings.get("codebook_size", codebook.shape[0])) != codebook.shape[0]:
            raise ValueError(f"{card.root}: card says codebook_size {card.settings['codebook_size']}, "
                             f"{path.name} holds {codebook.shape[0]}")
        return cls(codebook, settings, card, device)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "KMeansTokenizer":
        """Load a fitted tokenizer directory (``card.yaml`` + codebook)."""
        return cls.from_card(load_card(directory))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``codebook.safetensors`` + ``card.yaml`` into ``directory``; returns the card path."""
        from safetensors.torch import save_file

        from anygpt.utils import atomic_path

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file({"codebook": self.codebook.contiguous()}, str(tmp))
        card = TokenizerCard(self.name, self.modality, directory,
                             {"weights": WEIGHTS_FILE, "codebook_size": self.codebook_size, **self.settings,
                              "fingerprint": self.fingerprint, "grade": "demo"})
        self.card = card
        return card.save(directory)

    def state_for_fingerprint(self) -> dict:
        return {**super().state_for_fingerprint(), **self.settings}

    def weight_tensors(self) -> dict[str, Any]:
        return {"codebook": self.codebook}


@register_backend("demo-image")
class KMeansImageTokenizer(KMeansTokenizer):
    """Patch k-means image tokenizer: ``(image_size / patch_size)²`` codes per image."""

    modality = "image"
    settings_keys = ("image_size", "patch_size", "resize_policy")

    def __init__(self, codebook, settings, card=None, device=None):
        super().__init__(codebook, settings, card, device)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        self.grid = self.image_size // self.patch_size
        self.tokens_per_item = self.grid * self.grid

    @property
    def code_layout(self) -> CodeLayout:
        """One stream of ``codebook_size`` codes, ``grid²`` per image."""
        return CodeLayout(1, self.codebook_size, self.tokens_per_item)

    def _patches(self, images: Sequence[Any]) -> torch.Tensor:
        """Images → (B * grid², patch_size² * 3) floats in [0, 1]."""
        from anygpt.modality.media import resize_image, to_rgb

        arr = np.stack([np.asarray(resize_image(to_rgb(im), self.image_size, self.resize_policy), dtype=np.float32)
                        for im in images]) / 255.0
        b, g, p = arr.shape[0], self.grid, self.patch_size
        arr = arr.reshape(b, g, p, g, p, 3).transpose(0, 1, 3, 2, 4, 5)
        return torch.from_numpy(np.ascontiguousarray(arr.reshape(b * g * g, p * p * 3)))

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        if not batch:
            return []
        codes = nearest(self._patches(batch), self.codebook).numpy().astype(np.int64)
        return list(codes.reshape(len(batch), self.tokens_per_item))

    def decode(self, codes):
        from PIL import Image

        c = repair_codes(codes, self.code_layout, "demo-image decode", self.filler)
        g, p = self.grid, self.patch_size
        patches = self.codebook[torch.from_numpy(c)].numpy().reshape(g, g, p, p, 3).transpose(0, 2, 1, 3, 4)
        arr = np.clip(patches.reshape(self.image_size, self.image_size, 3) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "RGB")

    @classmethod
    def fit(cls, items: Any, out_dir: str | os.PathLike | None = None, *, codebook_size: int = 512,
            image_size: int = 64, patch_size: int = 8, resize_policy: str = "resize", iters: int = 20,
            seed: int = 0) -> "KMeansImageTokenizer":
        """Fit the patch codebook on images (PIL images, paths, or a JSONL manifest path)."""
        from anygpt.modality.media import load_image

        settings = {"image_size": int(image_size), "patch_size": int(patch_size), "resize_policy": resize_policy}
        proto = cls(np.zeros((1, patch_size * patch_size * 3), np.float32), settings)
        images = list(iter_fit_items(items, lambda p: load_image(p, image_size, resize_policy)))
        if not images:
            raise ValueError("demo-image fit: no images")
        tok = cls(kmeans(proto._patches(images), int(codebook_size), iters, seed), settings)
        if out_dir is not None:
            tok.save(out_dir)
        return tok


class KMeansAudioTokenizer(KMeansTokenizer):
    """Log-mel frame k-means at ``frames_per_second``; decode with Griffin-Lim."""

    settings_keys = ("sample_rate", "frames_per_second", "n_mels", "n_fft", "pool", "griffin_lim_iters", "max_seconds")
    defaults: dict[str, Any] = {}

    def __init__(self, codebook, settings, card=None, device=None):
        super().__init__(codebook, settings, card, device)
        hop = self.sample_rate / self.frames_per_second
        if hop != int(hop) or int(hop) % self.pool:
            raise ValueError(f"sample_rate / frames_per_second = {hop} must be an integer divisible by pool {self.pool}")
        self.hop = int(hop)
        self.fine_hop = self.hop // self.pool
        self._mel = None
        self._inverse = None

    @property
    def code_layout(self) -> CodeLayout:
        """One stream of ``codebook_size`` codes at ``frames_per_second``, any length."""
        return CodeLayout(1, self.codebook_size)

    def _log_mel(self, wav: np.ndarray) -> torch.Tensor:
        """One waveform → (T, n_mels) log mel power frames at ``frames_per_second``."""
        import torchaudio

        if self._mel is None:
            self._mel = torchaudio.transforms.MelSpectrogram(
                self.sample_rate, n_fft=self.n_fft, hop_length=self.fine_hop, n_mels=self.n_mels, power=2.0)
        w = torch.as_tensor(np.asarray(wav, dtype=np.float32).reshape(-1))
        n_frames = max(1, round(w.numel() / self.hop))
        if w.numel() < self.n_fft:  # reflect padding needs at least n_fft / 2 samples
            w = torch.nn.functional.pad(w, (0, self.n_fft - w.numel()))
        fine = self._mel(w).T  # (T_fine, n_mels)
        need = n_frames * self.pool
        if fine.shape[0] < need:
            fine = torch.cat([fine, fine[-1:].expand(need - fine.shape[0], -1)])
        power = fine[:need].reshape(n_frames, self.pool, self.n_mels).mean(1)
        return torch.log(power + 1e-6)

    def frames(self, batch: Sequence[Any]) -> list[torch.Tensor]:
        """Log-mel frames of each waveform (what the codebook quantises)."""
        from anygpt.modality.media import check_waveform

        return [self._log_mel(check_waveform(np.asarray(w, dtype=np.float32).reshape(-1), f"{self.name} item")) for w in batch]

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        if not len(batch):
            return []
        frames = self.frames(batch)
        codes = nearest(torch.cat(frames), self.codebook).numpy().astype(np.int64)
        out, i = [], 0
        for f in frames:
            out.append(codes[i : i + f.shape[0]])
            i += f.shape[0]
        return out

    def mel_to_wave(self, log_mel: torch.Tensor) -> np.ndarray:
        """(T, n_mels) log mel frames → waveform of T * hop samples via Griffin-Lim."""
        import torchaudio

        if self._inverse is None:
            self._inverse = (
                torchaudio.transforms.InverseMelScale(self.n_fft // 2 + 1, self.n_mels, self.sample_rate),
                torchaudio.transforms.GriffinLim(self.n_fft, n_iter=self.griffin_lim_iters, hop_length=self.fine_hop,
                                                 power=2.0, rand_init=False),
            )
        inv_mel, gl = self._inverse
        n = log_mel.shape[0] * self.hop
        # Griffin-Lim's centred STFT reflect-pads n_fft / 2 samples on each side, so a span shorter
        # than that (a 1-code speech reply: 4 fine frames, 480 samples < 512) cannot be inverted:
        # hold the last frame until it is long enough, then cut the wave back to the span's length.
        short = -(-(self.n_fft // 2 + 1) // self.hop) + 1 - log_mel.shape[0]
        if short > 0:
            log_mel = torch.cat([log_mel, log_mel[-1:].expand(short, -1)])
        power = (torch.exp(log_mel) - 1e-6).clamp_min(0).repeat_interleave(self.pool, 0).T  # (n_mels, T_fine)
        with torch.no_grad():
            wav = gl(inv_mel(power))
        wav = torch.nn.functional.pad(wav, (0, max(0, n - wav.numel())))[:n]
        return wav.numpy().astype(np.float32)

    def decode(self, codes):
        c = repair_codes(codes, self.code_layout, f"{self.name} decode", self.filler)
        if c.size == 0:
            log.warning(f"{self.name} decode: no codes; returning one frame of silence")
            return np.zeros(self.hop, dtype=np.float32)
        return self.mel_to_wave(self.codebook[torch.from_numpy(c)])

    @classmethod
    def fit(cls, items: Any, out_dir: str | os.PathLike | None = None, *, codebook_size: int | None = None,
            iters: int = 20, seed: int = 0, max_frames: int = 200_000, **settings: Any) -> "KMeansAudioTokenizer":
        """Fit the frame codebook on waveforms (float32 arrays at ``sample_rate``, paths, or a
        JSONL manifest path). ``settings`` override the class defaults (``sample_rate``,
        ``frames_per_second``, ``n_mels``, ``n_fft``, ``pool``, ``griffin_lim_iters``, ``max_seconds``)."""
        from anygpt.modality.media import load_audio

        unknown = set(settings) - set(cls.settings_keys)
        if unknown:
            raise ValueError(f"{cls.name} fit: unknown settings {sorted(unknown)}; known: {', '.join(cls.settings_keys)}")
        s = {**cls.defaults, **settings}
        k = int(codebook_size or s.pop("codebook_size", 0) or cls.default_codebook_size)
        s.pop("codebook_size", None)
        proto = cls(np.zeros((1, s["n_mels"]), np.float32), s)
        wavs = iter_fit_items(items, lambda p: load_audio(p, s["sample_rate"], s["max_seconds"]))
        frames = torch.cat(proto.frames(list(wavs)) or [torch.zeros(0, s["n_mels"])])
        if frames.shape[0] == 0:
            raise ValueError(f"{cls.name} fit: no audio")
        if frames.shape[0] > max_frames:  # subsample deterministically to bound the fit time
            frames = frames[torch.randperm(frames.shape[0], generator=torch.Generator().manual_seed(seed))[:max_frames]]
        tok = cls(kmeans(frames, k, iters, seed), s)
        if out_dir is not None:
            tok.save(out_dir)
        return tok


@register_backend("demo-speech")
class KMeansSpeechTokenizer(KMeansAudioTokenizer):
    """16 kHz speech, 25 log-mel frames/s (hop 640 = 4 × 160), 1024 codes."""

    modality = "speech"
    default_codebook_size = 1024
    defaults = {"sample_rate": 16000, "frames_per_second": 25, "n_mels": 64, "n_fft": 1024, "pool": 4,
                "griffin_lim_iters": 32, "max_seconds": 30.0}


@register_backend("demo-music")
class KMeansMusicTokenizer(KMeansAudioTokenizer):
    """22.05 kHz music, 25 log-mel frames/s (hop 882 = 3 × 294), 512 codes."""

    modality = "music"
    default_codebook_size = 512
    defaults = {"sample_rate": 22050, "frames_per_second": 25, "n_mels": 80, "n_fft": 2048, "pool": 3,
                "griffin_lim_iters": 32, "max_seconds": 30.0}


KMEANS_TOKENIZERS = {"image": KMeansImageTokenizer, "speech": KMeansSpeechTokenizer, "music": KMeansMusicTokenizer}


def kmeans_tokenizer_class(modality: str) -> type[KMeansTokenizer]:
    """The k-means tokenizer class for a modality (``image``, ``speech``, ``music``)."""
    if modality not in KMEANS_TOKENIZERS:
        raise ValueError(f"no k-means tokenizer for modality {modality!r}; known: {', '.join(KMEANS_TOKENIZERS)}")
    return KMEANS_TOKENIZERS[modality]
