"""The ModalityTokenizer contract, the backend registry and tokenizer cards.

A backend turns media into modality-local integer codes (what the LLM sees, after any
multi-codebook flattening) and back. Backends register by name::

    @register_backend("demo-image")
    class KMeansImageTokenizer(ModalityTokenizer): ...

A *card* names a tokenizer: a YAML file, or a directory holding ``card.yaml``, with at least
``backend`` and ``modality``; paths inside it are relative to the card's folder::

    backend: speechtokenizer
    modality: speech
    checkpoint: ckpt.dev          # relative to the card
    config: config.json
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from anygpt.modality import media
from anygpt.modality.media import MediaError  # noqa: F401  (re-exported: part of the protocol)

log = logging.getLogger(__name__)

CARD_FILE = "card.yaml"
# codes one audio window may take by default: LLaMA-2's 4,096 positions less room for the text
WINDOW_TOKENS = 4000


@dataclass(frozen=True)
class CodeLayout:
    """How one item's codes sit in the LLM sequence (declared by every backend).

    ``layers_in_sequence``: codec layers interleaved frame-major in the sequence (EnCodec music: 4,
    one code of each layer per frame, layer ``q`` offset by ``q * layer_size``; SpeechTokenizer: 1,
    the LLM sees RVQ layer 0 only, whatever the codec's RVQ depth); ``layer_size``: codes per
    layer; ``fixed_length``: codes per item when every item has the same count (images), else None.
    """

    layers_in_sequence: int
    layer_size: int
    fixed_length: int | None = None

    def __post_init__(self) -> None:
        if self.layers_in_sequence < 1 or self.layer_size < 1:
            raise ValueError(f"code layout needs >= 1 layer of >= 1 code, got {self}")
        if self.fixed_length is not None and self.fixed_length % self.layers_in_sequence:
            raise ValueError(f"code layout: fixed length {self.fixed_length} is not whole frames of "
                             f"{self.layers_in_sequence} layers")

    @property
    def n_codes(self) -> int:
        """Distinct codes the LLM sees: ``layers_in_sequence * layer_size``."""
        return self.layers_in_sequence * self.layer_size

    @property
    def frame(self) -> int:
        """Codes per frame: a span may end only after a whole frame."""
        return self.layers_in_sequence


def repair_codes(codes: Sequence[int] | np.ndarray, layout: CodeLayout, what: str, filler: int = 0) -> np.ndarray:
    """The one repair policy for a single stream of codes (``layout.layers_in_sequence == 1``),
    which every backend's ``decode`` applies, so chat, serve, eval and detokenize all see the same
    repaired media. Codes outside ``[0, layer_size)`` are replaced by ``filler`` when the item has
    a fixed length (a code's position means something: an image patch) and dropped when it is
    free-length (a stream keeps its order, as :func:`~anygpt.modality.flatten.unflatten_frame_major`
    drops misplaced frame-major tokens); a fixed-length item is then padded with ``filler`` or
    truncated. Each repair warns once, naming ``what``; nothing raises."""
    if layout.layers_in_sequence != 1:
        raise ValueError(f"{what}: {layout.layers_in_sequence} interleaved layers; repair them with unflatten_frame_major")
    arr = np.asarray(list(codes) if not isinstance(codes, np.ndarray) else codes, dtype=np.int64).reshape(-1)
    size, length = layout.layer_size, layout.fixed_length
    bad = (arr < 0) | (arr >= size)
    if bad.any():
        if length is None:
            log.warning(f"{what}: dropped {int(bad.sum())} code(s) outside [0, {size})")
            arr = arr[~bad]
        else:
            log.warning(f"{what}: {int(bad.sum())} code(s) outside [0, {size}) replaced with {filler}")
            arr = np.where(bad, filler, arr)
    if length is not None and arr.size != length:
        log.warning(f"{what}: got {arr.size} codes, expected {length}; "
                    f"{'padded with ' + str(filler) if arr.size < length else 'truncated'}")
        arr = np.concatenate([arr, np.full(max(0, length - arr.size), filler, dtype=np.int64)])[:length]
    return arr


@dataclass
class TokenizerCard:
    backend: str
    modality: str
    root: Path  # folder that relative paths in ``settings`` resolve against
    settings: dict[str, Any] = field(default_factory=dict)

    def path(self, key: str) -> Path | None:
        """A path-valued setting resolved against the card's folder (None when unset)."""
        v = self.settings.get(key)
        if v is None:
            return None
        p = Path(os.path.expanduser(str(v)))
        return p if p.is_absolute() else self.root / p

    def to_dict(self) -> dict:
        return {"backend": self.backend, "modality": self.modality, **self.settings}

    def save(self, directory: str | os.PathLike) -> Path:
        import yaml

        from anygpt.utils import atomic_write_text

        path = Path(directory) / CARD_FILE
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))
        return path


def load_card(path: str | os.PathLike) -> TokenizerCard:
    """Read a card from a YAML file or a directory holding ``card.yaml``."""
    from anygpt.utils import read_yaml

    p = Path(path)
    f = p / CARD_FILE if p.is_dir() else p
    d = read_yaml(f, "tokenizer card")
    if not isinstance(d, dict) or "backend" not in d or "modality" not in d:
        raise ValueError(f"{f}: a tokenizer card needs at least 'backend' and 'modality'")
    d = dict(d)
    return TokenizerCard(d.pop("backend"), d.pop("modality"), f.parent, d)


class ModalityTokenizer(abc.ABC):
    """Media ↔ modality-local codes. Subclasses set the class attributes and implement
    ``encode``/``decode``; ``load_media``/``save_media`` default to the modality's I/O."""

    name: str = ""  # backend name in the registry
    modality: str = ""  # image | speech | music
    codebook_size: int = 0  # number of distinct codes the LLM sees (after flattening)
    frames_per_second: float | None = None  # audio: LLM tokens per second of media
    tokens_per_item: int | None = None  # fixed-length modalities (e.g. 32 image codes)
    sample_rate: int | None = None
    image_size: int | None = None
    max_seconds: float | None = None  # audio longer than this is rejected
    resize_policy: str = "resize"  # images: "resize" (no crop, as the reference) or "center-crop"
    any_modality: bool = False  # True: a card may use this backend for another modality (general audio)
    takes_voice_prompt: bool = False  # True: ``decode(codes, voice_prompt=PATH)`` decodes in that voice

    def __init__(self, card: TokenizerCard | None = None, device: str | None = None):
        self.card = card
        self.device = device or ("cuda" if _cuda() else "cpu")
        # card ``dtype: bfloat16 | float16``: autocast the codec on CUDA (ignored on CPU)
        self.autocast_dtype = card.settings.get("dtype") if card is not None else None

    def autocast(self):
        """Context manager: the card's reduced precision on CUDA, else a no-op."""
        import contextlib

        import torch

        if self.autocast_dtype and str(self.device).startswith("cuda"):
            return torch.autocast("cuda", dtype=getattr(torch, str(self.autocast_dtype)))
        return contextlib.nullcontext()

    @classmethod
    def from_card(cls, card: TokenizerCard, device: str | None = None) -> "ModalityTokenizer":
        return cls(card, device)

    @property
    @abc.abstractmethod
    def code_layout(self) -> CodeLayout:
        """How one item's codes are laid out in the LLM sequence (layers, layer size, fixed length).
        Constraints, length budgets and decode repair read this; ``n_q`` on a codec backend is only
        the codec's RVQ depth."""

    @abc.abstractmethod
    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        """Media items (as returned by :meth:`load_media`) → one 1-D int64 code array each."""

    @abc.abstractmethod
    def decode(self, codes: Sequence[int] | np.ndarray) -> Any:
        """Codes of one item → media (a PIL image, or a float32 mono waveform at ``sample_rate``).
        Malformed input (wrong length, codes out of slot) is repaired with a warning, never raised.
        Backends with :attr:`takes_voice_prompt` also take ``voice_prompt`` (an audio file path)."""

    def encode_files(self, paths: Sequence[str | os.PathLike]) -> list[np.ndarray]:
        """Read media files (with this tokenizer's I/O settings) and encode them as one batch."""
        return self.encode([self.load_media(p) for p in paths])

    def load_media(self, path: str | os.PathLike) -> Any:
        if self.modality == "image":
            return media.load_image(path, self.image_size, self.resize_policy)
        return media.load_audio(path, self.sample_rate, self.max_seconds)

    def load_window(self, path: str | os.PathLike, start: float = 0.0, length: float | None = None) -> Any:
        """Audio: only ``length`` seconds from ``start`` (a long recording's window), with this
        tokenizer's rate and ``max_seconds`` limit applied to the window. Images have no windows."""
        if self.modality == "image":
            raise ValueError(f"{path}: a window (start, length) applies to audio, not images")
        return media.load_audio(path, self.sample_rate, self.max_seconds, start=start, length=length)

    @property
    def default_window_seconds(self) -> float | None:
        """Seconds of audio per window when a long recording is cut (tokenize, chat): the card's
        ``window_seconds``, else the longest that fits ``max_seconds`` and :data:`WINDOW_TOKENS`
        codes (LLaMA-2 has 4,096 positions; EnCodec 32 kHz at 200 codes/s gives 20 s, the
        reference base model's crop). None for images."""
        if self.modality == "image":
            return None
        if self.card is not None and self.card.settings.get("window_seconds") is not None:
            return float(self.card.settings["window_seconds"])
        fit = float(int(WINDOW_TOKENS / self.frames_per_second)) if self.frames_per_second else None
        limits = [x for x in (self.max_seconds, fit) if x]
        return min(limits) if limits else None

    def save_media(self, item: Any, path: str | os.PathLike) -> Path:
        if self.modality == "image":
            return media.save_image(item, path)
        return media.save_audio(item, self.sample_rate, path)

    def state_for_fingerprint(self) -> dict:
        """Settings that change codes; weights are hashed separately by :attr:`fingerprint`."""
        return {"backend": self.name, "modality": self.modality, "codebook_size": self.codebook_size,
                "sample_rate": self.sample_rate, "image_size": self.image_size}

    def weight_tensors(self) -> dict[str, Any]:
        """Named tensors whose values define the codes (module state dict by default)."""
        mod = getattr(self, "model", None)
        return dict(mod.state_dict()) if mod is not None and hasattr(mod, "state_dict") else {}

    @property
    def fingerprint(self) -> str:
        """sha256 over settings and weights: code shards record it; training refuses a mismatch."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha256(json.dumps(self.state_for_fingerprint(), sort_keys=True, default=str).encode())
            for k, t in sorted(self.weight_tensors().items()):
                h.update(k.encode())
                arr = t.detach().cpu().contiguous().float().numpy() if hasattr(t, "detach") else np.asarray(t)
                h.update(np.ascontiguousarray(arr).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


_REGISTRY: dict[str, type[ModalityTokenizer]] = {}


def register_backend(name: str) -> Callable[[type[ModalityTokenizer]], type[ModalityTokenizer]]:
    def deco(cls: type[ModalityTokenizer]) -> type[ModalityTokenizer]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"backend {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def backend_names() -> list[str]:
    _import_backends()
    return sorted(_REGISTRY)


def get_backend(name: str) -> type[ModalityTokenizer]:
    _import_backends()
    if name not in _REGISTRY:
        raise ValueError(f"unknown tokenizer backend {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def load_tokenizer(card: str | os.PathLike | TokenizerCard, device: str | None = None) -> ModalityTokenizer:
    """Build the backend a card names (a card path, a directory with ``card.yaml``, or a card)."""
    if not isinstance(card, TokenizerCard):
        card = load_card(card)
    cls = get_backend(card.backend)
    if cls.modality and card.modality != cls.modality and not cls.any_modality:
        raise ValueError(f"card {card.root}: backend {card.backend} is for {cls.modality}, card says {card.modality}")
    return cls.from_card(card, device)


def _import_backends() -> None:
    """Import the backend modules so they register (each guards its optional dependencies)."""
    import importlib

    for mod in ("kmeans_tokenizer", "speech", "music", "image", "seed2"):
        try:
            importlib.import_module(f"anygpt.modality.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"anygpt.modality.{mod}":
                raise
