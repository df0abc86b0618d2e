"""SoundStorm for SpeechTokenizer: fills RVQ layers 1–7 from layer-0 codes and a voice prompt.

The reference (AnyGPT's ``voice_clone.py``) decodes speech by running SoundStorm, a MaskGIT-style
conformer trained on MLS (``speechtokenizer_soundstorm_mls.pt``): the LLM's layer-0 (semantic) codes
condition the model, a voice prompt's 8-layer codes are prepended, and 7 acoustic layers are
predicted; SpeechTokenizer then renders 16 kHz audio. The published checkpoint belongs to
``soundstorm_speechtokenizer`` (a fork of lucidrains' ``soundstorm-pytorch``). The PyPI package
``soundstorm-pytorch`` does not load it: its current modules use different parameter names
(hyper-connections, ``to_value_residual_mix``, ``ds_conv``) and pull in audiolm/spear-tts. So the
modules here are our own, written with the checkpoint's parameter names (``net.conformer.layers.*``,
``net.code_embeds``, ``net.heads``, ``net.to_logits``, ``semantic_token_emb``) and loaded strictly.

Example::

    storm = load_soundstorm("speechtokenizer_soundstorm_mls.pt")
    prompt = prompt_codes_from_audio(st_model, wav, 16000, max_seconds=3.0)      # [8, Tp]
    codes8 = semantic_to_acoustic(storm, st_model, layer0_codes, prompt, steps=3)  # [8, T]
    wav = st_model.decode(torch.from_numpy(codes8)[:, None, :])

Why one long module: it is an architecture port bound to one checkpoint's parameter names (the
conformer, the MaskGIT sampler that drives it, and the voice-prompt glue that feeds it). Split,
a reader checking names against the checkpoint would have to follow them across files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anygpt.config import build, to_dict


@dataclass
class SoundStormConfig:
    """Sizes of the model; the defaults are those the reference instantiates for the MLS checkpoint."""

    dim: int = 1024
    depth: int = 12
    heads: int = 8
    dim_head: int = 128
    ff_mult: int = 4
    conv_expansion_factor: int = 2
    conv_kernel_size: int = 31
    codebook_size: int = 1024
    num_quantizers: int = 7  # acoustic layers predicted (SpeechTokenizer layers 1..7)
    num_semantic_token_ids: int = 1024

    @classmethod
    def from_dict(cls, d: dict | None) -> "SoundStormConfig":
        """From a speech card's ``soundstorm_config``; unknown keys and bad values raise naming them."""
        return build(cls, d, what="SoundStorm config")

    def to_dict(self) -> dict:
        """Plain values, as a card's ``soundstorm_config``."""
        return to_dict(self)


# ----------------------------------------------------------------------------- conformer pieces
class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.sigmoid()


class Transpose12(nn.Module):
    """``b n c <-> b c n`` (the reference's einops ``Rearrange`` layers; no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class GLU(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, gate = x.chunk(2, dim=self.dim)
        return out * gate.sigmoid()


class DepthWiseConv1d(nn.Module):
    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.padding = (kernel_size // 2, kernel_size // 2 - (kernel_size + 1) % 2)
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ChanLayerNorm(nn.Module):
    """LayerNorm over channels of ``[b, c, n]`` with a gain only."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = 1e-6 if x.dtype == torch.float32 else 1e-4
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        return (x - x.mean(dim=1, keepdim=True)) * var.clamp(min=eps).rsqrt() * self.gamma


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.fn(self.norm(x), **kwargs)


class Scale(nn.Module):
    def __init__(self, scale: float, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.scale = scale

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.fn(x, **kwargs) * self.scale


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), Swish(), nn.Dropout(0.0), nn.Linear(dim * mult, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim)), persistent=False)

    def forward(self, seq_len: int) -> torch.Tensor:
        t = torch.arange(seq_len, device=self.inv_freq.device).type_as(self.inv_freq)
        freqs = torch.outer(t, self.inv_freq)
        return torch.cat((freqs, freqs), dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, rotary: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (self.to_q(x), *self.to_kv(x).chunk(2, dim=-1))
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        if rotary is not None:
            q = q * rotary.cos() + _rotate_half(q) * rotary.sin()
            k = k * rotary.cos() + _rotate_half(k) * rotary.sin()
        attn_mask = mask[:, None, None, :] if mask is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class ConformerConvModule(nn.Module):
    def __init__(self, dim: int, expansion_factor: int, kernel_size: int):
        super().__init__()
        inner = dim * expansion_factor
        self.net = nn.Sequential(
            nn.LayerNorm(dim), Transpose12(), nn.Conv1d(dim, inner * 2, 1), GLU(dim=1),
            DepthWiseConv1d(inner, kernel_size), Swish(), ChanLayerNorm(inner), nn.Conv1d(inner, dim, 1),
            Transpose12(), nn.Dropout(0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConformerBlock(nn.Module):
    def __init__(self, cfg: SoundStormConfig):
        super().__init__()
        d = cfg.dim
        self.ff1 = Scale(0.5, PreNorm(d, FeedForward(d, cfg.ff_mult)))
        self.attn = PreNorm(d, Attention(d, cfg.heads, cfg.dim_head))
        self.conv = ConformerConvModule(d, cfg.conv_expansion_factor, cfg.conv_kernel_size)
        self.ff2 = Scale(0.5, PreNorm(d, FeedForward(d, cfg.ff_mult)))
        self.post_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rotary: torch.Tensor | None) -> torch.Tensor:
        x = self.ff1(x) + x
        x = self.attn(x, mask=mask, rotary=rotary) + x
        x = self.conv(x) + x
        x = self.ff2(x) + x
        return self.post_norm(x)


class Conformer(nn.Module):
    def __init__(self, cfg: SoundStormConfig):
        super().__init__()
        self.dim = cfg.dim
        self.rotary_emb = RotaryEmbedding(cfg.dim_head)
        self.layers = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.depth))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        rotary = self.rotary_emb(x.shape[-2])
        for block in self.layers:
            x = block(x, mask, rotary)
        return x


class SplitQuantizerHeads(nn.Module):
    """``b n (q d) -> b (n q) d``."""

    def __init__(self, q: int):
        super().__init__()
        self.q = q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n * self.q, -1)


class PerQuantizerLogits(nn.Module):
    """One ``dim × codebook`` projection per quantizer: ``b (n q) d -> b (n q) l``
    (parameters ``weight [q, d, l]`` and ``bias [1, 1, q, l]``, shaped as the reference's EinMix)."""

    def __init__(self, q: int, dim: int, codebook_size: int):
        super().__init__()
        self.q = q
        self.weight = nn.Parameter(torch.randn(q, dim, codebook_size) * dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(1, 1, q, codebook_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = x.reshape(b, -1, self.q, x.shape[-1])
        out = torch.einsum("bngd,gdl->bngl", x, self.weight) + self.bias
        return out.reshape(b, -1, out.shape[-1])


class ConformerWrapper(nn.Module):
    """Sums the per-quantizer code embeddings of each frame, runs the conformer, predicts every
    quantizer's code for every frame."""

    def __init__(self, cfg: SoundStormConfig):
        super().__init__()
        q, d = cfg.num_quantizers, cfg.dim
        self.conformer = Conformer(cfg)
        self.dim = d
        self.codebook_size = cfg.codebook_size
        self.num_quantizers = q
        codes_with_mask = cfg.codebook_size + 1
        self.embedding_proj = nn.Identity()
        self.code_embeds = nn.Embedding(codes_with_mask * q, d)
        self.register_buffer("quantizer_offsets", torch.arange(q) * codes_with_mask, persistent=False)
        self.heads = nn.Sequential(nn.Linear(d, d * q), SplitQuantizerHeads(q))
        self.to_logits = nn.Sequential(nn.LayerNorm(d), nn.Identity(), PerQuantizerLogits(q, d, cfg.codebook_size))

    def forward(self, codes: torch.Tensor, mask: torch.Tensor | None, cond: torch.Tensor | None) -> torch.Tensor:
        """``codes [b, n·q]`` (mask id = codebook_size) → logits ``[b, n·q, codebook_size]``."""
        b = codes.shape[0]
        x = codes.reshape(b, -1, self.num_quantizers) + self.quantizer_offsets
        x = self.embedding_proj(self.code_embeds(x).sum(dim=2))
        if cond is not None:
            x = x + cond
        return self.to_logits(self.heads(self.conformer(x, mask=mask)))


class SoundStorm(nn.Module):
    """The MaskGIT generator: ``net`` plus the semantic (layer-0) token embedding."""

    def __init__(self, cfg: SoundStormConfig | None = None):
        super().__init__()
        cfg = cfg or SoundStormConfig()
        self.cfg = cfg
        self.net = ConformerWrapper(cfg)
        self.semantic_token_emb = nn.Embedding(cfg.num_semantic_token_ids, cfg.dim)
        self.num_quantizers = cfg.num_quantizers
        self.mask_id = cfg.codebook_size

    @torch.no_grad()
    def generate(self, semantic: torch.Tensor, prompt: torch.Tensor | None = None, steps: int = 3,
                 greedy: bool = True, topk_keep: float = 0.3, generator: torch.Generator | None = None) -> torch.Tensor:
        """``semantic [b, T]`` (+ ``prompt [b, Tp, 1+q]``) → all layers ``[b, T, 1+q]``.

        As the reference: the first acoustic layer is unmasked over ``steps`` MaskGIT rounds on a
        cosine schedule (sampled from the top ``topk_keep`` of logits while tokens remain masked),
        each higher layer in one greedy pass. With the noise fixed, the output equals the
        reference implementation's for the same weights."""
        self.eval()
        dev = self.semantic_token_emb.weight.device
        semantic = semantic.to(dev).long()
        b, t = semantic.shape
        q = self.num_quantizers
        codes = torch.full((b, t, q), self.mask_id, dtype=torch.long, device=dev)
        masked = torch.ones((b, t, q), dtype=torch.bool, device=dev)
        cond_ids = semantic
        if prompt is not None:
            prompt = prompt.to(dev).long()
            cond_ids = torch.cat([prompt[:, :, 0], semantic], dim=1)
            codes = torch.cat([prompt[:, :, 1:], codes], dim=1)
            masked = torch.cat([torch.zeros_like(prompt[:, :, 1:], dtype=torch.bool), masked], dim=1)
        editable = masked.clone()
        n = cond_ids.shape[1]
        seq_mask = torch.ones((b, n), dtype=torch.bool, device=dev)
        cond = self.semantic_token_emb(cond_ids)
        probs = torch.cos(torch.linspace(0.0, 1.0, steps + 1, device=dev) * math.pi / 2)
        remask_counts = (probs * n).long().tolist()

        def predict() -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.net(codes.reshape(b, -1), mask=seq_mask, cond=cond)
            return logits, logits.argmax(-1)

        # level 0 of the acoustic layers: iterative unmasking
        for i, count in enumerate(remask_counts):
            logits, ids = predict()
            if not greedy or count > 0:
                logits = _keep_top(logits, topk_keep)  # confidences below come from the kept logits too
                ids = _gumbel_argmax(logits, temperature=i / max(steps, 1), generator=generator)
            codes = torch.where(masked, ids.reshape(b, n, q), codes)
            if count == 0:
                break
            conf = logits.softmax(-1).gather(-1, ids[..., None])[..., 0]  # [b, n·q]
            order = (1 - conf).argsort(dim=-1, descending=True)[:, :count]
            remask = torch.zeros_like(conf, dtype=torch.bool).scatter_(1, order, True).reshape(b, n, q)
            remask[:, :, 1:] = True
            masked = remask & editable
            codes = codes.masked_fill(masked, self.mask_id)
        # higher levels: one greedy pass each
        for level in range(1, q):
            _, ids = predict()
            # as the reference, this also rewrites the prompt frames' levels >= ``level``
            codes[:, :, level:] = ids.reshape(b, n, q)[:, :, level:]
        return torch.cat([semantic[:, :, None], codes[:, -t:]], dim=-1)


def _keep_top(logits: torch.Tensor, keep: float) -> torch.Tensor:
    """Logits outside the top ``keep`` fraction set to -inf."""
    k = max(1, math.ceil(keep * logits.shape[-1]))
    val, ind = logits.topk(k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter_(-1, ind, val)


def _gumbel_argmax(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Gumbel-max sampling at ``temperature`` (0 = argmax)."""
    noise = torch.rand(logits.shape, generator=generator).to(logits.device).clamp_(1e-10, 1.0)
    gumbel = -torch.log(-torch.log(noise) + 1e-10)
    return (logits / max(temperature, 1e-10) + gumbel).argmax(-1)


# ----------------------------------------------------------------------------- files
def load_soundstorm(path: str | os.PathLike, cfg: SoundStormConfig | dict | None = None, device: str = "cpu") -> SoundStorm:
    """Load ``speechtokenizer_soundstorm_mls.pt`` (a flat state dict, ``weights_only=True``), strictly:
    a missing or misshapen weight is an error naming the file."""
    from anygpt.weights import load_torch_file

    cfg = cfg if isinstance(cfg, SoundStormConfig) else SoundStormConfig.from_dict(cfg)
    sd = load_torch_file(path)  # first: a refused or unreadable file fails before building the model
    model = SoundStorm(cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()
        raise ValueError(f"{path}: not a SoundStorm checkpoint for this config ({' '.join(first[:2])[:300]})") from None
    return model.to(device).eval()


def save_soundstorm(model: SoundStorm, path: str | os.PathLike) -> Path:
    """Write ``model`` the way the reference's trainer saved it (``torch.save(state_dict)``)."""
    from anygpt.utils import atomic_path

    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return Path(path)


# ----------------------------------------------------------------------------- speech glue
def prompt_codes_from_audio(speech_tokenizer_model, wav: np.ndarray, sample_rate: int,
                            max_seconds: float | None = None) -> np.ndarray:
    """A voice prompt's waveform → its ``[n_q, Tp]`` SpeechTokenizer codes (mono, resampled to the
    model's rate; trimmed to ``max_seconds`` when given, else whole, as the reference uses it)."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    if x.ndim == 2:  # [channels, samples] or [samples, channels]
        x = x.mean(dim=0 if x.shape[0] < x.shape[1] else 1)
    target = int(getattr(speech_tokenizer_model, "sample_rate", sample_rate))
    if sample_rate != target:
        from anygpt.modality.media import resample  # bounded cost: a voice prompt is outside input too

        x = torch.from_numpy(resample(x.numpy(), int(sample_rate), target, "voice prompt"))
    if max_seconds is not None:
        x = x[: int(max_seconds * target)]
    if x.numel() < getattr(speech_tokenizer_model, "downsample_rate", 320):
        raise ValueError(f"voice prompt too short ({x.numel()} samples at {target} Hz)")
    dev = next(speech_tokenizer_model.parameters()).device
    with torch.no_grad():
        codes = speech_tokenizer_model.encode(x[None, None].to(dev))  # [n_q, 1, Tp]
    return codes[:, 0, :].cpu().numpy().astype(np.int64)


def semantic_to_acoustic(soundstorm: SoundStorm, speech_tokenizer_model, semantic_codes, prompt_codes=None,
                         steps: int = 3, seed: int = 0) -> np.ndarray:
    """Layer-0 codes ``[T]`` (+ a voice prompt's ``[1+q, Tp]`` codes) → all layers ``[1+q, T]``.

    ``speech_tokenizer_model`` is the SpeechTokenizer whose codes these are; its number of
    quantizers must be SoundStorm's plus one. Without a prompt the voice is random (as the reference)."""
    n_q = getattr(speech_tokenizer_model, "n_q", None)
    want = soundstorm.num_quantizers + 1
    if n_q is not None and int(n_q) != want:
        raise ValueError(f"SoundStorm predicts {want} layers but the speech tokenizer has {n_q}")
    sem = torch.as_tensor(np.asarray(semantic_codes, dtype=np.int64).reshape(1, -1))
    if sem.numel() == 0:
        return np.zeros((want, 0), dtype=np.int64)
    limit = soundstorm.cfg.num_semantic_token_ids
    if int(sem.min()) < 0 or int(sem.max()) >= limit:
        raise ValueError(f"semantic codes must lie in [0, {limit})")
    prompt = None
    if prompt_codes is not None:
        p = np.asarray(prompt_codes, dtype=np.int64)
        if p.ndim != 2 or p.shape[0] != want:
            raise ValueError(f"voice prompt codes must be [{want}, T], got {list(p.shape)}")
        if p.shape[1]:
            prompt = torch.as_tensor(p.T[None].copy())
    gen = torch.Generator().manual_seed(seed)
    out = soundstorm.generate(sem, prompt, steps=steps, generator=gen)
    return out[0].T.cpu().numpy().astype(np.int64)


@dataclass
class VoiceDecoder:
    """What a speech backend needs for voice-prompted decoding: a loaded SoundStorm plus the card's
    settings. ``all_layers`` turns layer-0 codes (+ a prompt file) into every RVQ layer."""

    soundstorm: SoundStorm
    steps: int = 3
    prompt_seconds: float | None = None  # None: the voice prompt is used whole (the reference)

    @classmethod
    def from_card(cls, card, device: str = "cpu") -> "VoiceDecoder | None":
        """From a speech card's ``soundstorm`` (path), ``soundstorm_config`` (sizes, optional),
        ``soundstorm_steps`` and ``voice_prompt_seconds`` (unset or null: the prompt is used whole);
        None when the card names no SoundStorm."""
        path = card.path("soundstorm")
        if path is None:
            return None
        trim = card.settings.get("voice_prompt_seconds")
        if trim is not None and (isinstance(trim, bool) or not isinstance(trim, (int, float)) or trim <= 0):
            raise ValueError(f"{card.root}: voice_prompt_seconds must be a positive number of seconds or null, not {trim!r}")
        model = load_soundstorm(path, card.settings.get("soundstorm_config"), device)
        return cls(model, int(card.settings.get("soundstorm_steps", 3)), None if trim is None else float(trim))

    def all_layers(self, speech_tokenizer_model, semantic_codes, voice_prompt: str | os.PathLike | None = None) -> np.ndarray:
        """Layer-0 codes ``[T]`` (+ a voice prompt audio file) → ``[n_q, T]`` codes to decode."""
        prompt = None
        if voice_prompt is not None:
            wav, sr = read_voice_prompt(voice_prompt, self.prompt_seconds)
            prompt = prompt_codes_from_audio(speech_tokenizer_model, wav, sr, self.prompt_seconds)
        return semantic_to_acoustic(self.soundstorm, speech_tokenizer_model, semantic_codes, prompt, self.steps)


def read_voice_prompt(path: str | os.PathLike, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """An audio file (its first ``max_seconds`` when given) as mono float32 (soundfile: wav/flac/ogg/mp3)."""
    import soundfile as sf

    from anygpt.modality.media import MediaError

    try:
        info = sf.info(str(path))
        frames = -1 if max_seconds is None else int(max_seconds * info.samplerate)
        wav, sr = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise MediaError(f"{path}: no such voice prompt file") from None
    except (RuntimeError, sf.LibsndfileError) as e:
        raise MediaError(f"{path}: not a readable audio file ({e})") from None
    if wav.shape[0] == 0:
        raise MediaError(f"{path}: the voice prompt is empty")
    return wav.mean(axis=1), int(sr)
