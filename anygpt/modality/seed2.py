"""SEED tokenizer-2: the reference's image tokenizer (32 codes per 224×224 image, codebook 8192).

Architecture (SEED-LLaMA's ``Blip2QformerQuantizer``, as AnyGPT loads it):

    pixels (224×224, resized without crop, CLIP normalisation)
      → EVA-CLIP ViT-g/14 (39 blocks, width 1408)  → ``ln_vision``
      → causal Q-Former (BERT-base, 32 learned queries, cross-attention every 2nd layer)
      → ``encode_task_layer`` (768 → 32) → nearest code in ``quantize.embedding`` (8192 × 32)  = the codes
    codes → ``decode_task_layer`` (32 → 768) + ``pos_embed_image`` → 4 ViT blocks (``blocks_image``)
      → ``image_down`` (768 → 256 → 128 → 32 per query) → ``distill_image_proj`` (32·32 → 1024)
      = an unCLIP image embedding, rendered by Stable Diffusion 2.1 unCLIP (guidance 10, 20 steps).

Every module and parameter name matches the published ``seed_quantizer.pt`` (the reference's code
instantiates these names and loads the file with ``load_state_dict``), so the released file loads
here with ``torch.load(weights_only=True)``. Unlike the reference, nothing is downloaded: the vision
tower comes from ``seed_quantizer.pt`` itself when it holds ``visual_encoder.*`` keys, else from the
local file the card names (``eva_vit_g.pth`` of LAVIS). Widths and depths are parameters
(:class:`Seed2Config`) so tests can build a tiny model with the same key names.

Card (``tokenizers/seed2.yaml``)::

    backend: seed2
    modality: image
    checkpoint: seed-tokenizer-2/seed_quantizer.pt
    vision_tower: eva_vit_g.pth                     # optional when the checkpoint holds it
    unclip_dir: stable-diffusion-2-1-unclip         # optional: needed only to decode to pixels
    dtype: float16                                  # optional: default float16 on GPU, float32 on CPU
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anygpt.modality.base import MediaError, ModalityTokenizer, TokenizerCard, register_backend

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Seed2Config:
    """Sizes of the SEED-2 tokenizer; the defaults are the published model's."""

    image_size: int = 224
    patch_size: int = 14
    vit_width: int = 1408
    vit_depth: int = 39  # BLIP-2 drops EVA-CLIP-g's last block
    vit_heads: int = 16
    vit_mlp_hidden: int = 6144  # int(1408 * 4.3637)
    qformer_hidden: int = 768
    qformer_layers: int = 12
    qformer_heads: int = 12
    qformer_intermediate: int = 3072
    cross_attention_freq: int = 2
    num_queries: int = 32
    codebook_size: int = 8192
    codebook_dim: int = 32
    decode_depth: int = 4
    decode_heads: int = 12
    image_down_dims: tuple[int, int, int] = (256, 128, 32)
    embed_dim: int = 1024  # unCLIP image embedding

    @classmethod
    def from_dict(cls, d: dict | None) -> "Seed2Config":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SEED-2 architecture keys {sorted(unknown)}; known: {', '.join(sorted(known))}")
        if "image_down_dims" in d:
            d["image_down_dims"] = tuple(int(x) for x in d["image_down_dims"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_down_dims"] = list(self.image_down_dims)
        return d


# ----------------------------------------------------------------------------- EVA-CLIP ViT-g
class EvaAttention(nn.Module):
    """EVA attention: one qkv matrix without bias plus separate q and v biases (k has none)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EvaBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EvaAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, image_size: int, patch: int, dim: int):
        super().__init__()
        self.num_patches = (image_size // patch) ** 2
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class EvaViT(nn.Module):
    """EVA-CLIP ViT without a final norm (BLIP-2 takes the last block's output)."""

    def __init__(self, cfg: Seed2Config):
        super().__init__()
        self.image_size = cfg.image_size
        self.num_features = cfg.vit_width
        self.patch_embed = PatchEmbed(cfg.image_size, cfg.patch_size, cfg.vit_width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.vit_width))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, cfg.vit_width))
        self.blocks = nn.ModuleList(EvaBlock(cfg.vit_width, cfg.vit_heads, cfg.vit_mlp_hidden) for _ in range(cfg.vit_depth))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return x


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (the reference's ``ln_vision`` under fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight.float(), self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


# ----------------------------------------------------------------------------- causal Q-Former
class QformerSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_width: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(kv_width, hidden)
        self.value = nn.Linear(kv_width, hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor, causal: bool) -> torch.Tensor:
        b, n, c = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(context)), split(self.value(context)), is_causal=causal)
        return out.transpose(1, 2).reshape(b, n, c)


class QformerSelfOutput(nn.Module):
    def __init__(self, hidden: int, in_dim: int | None = None):
        super().__init__()
        self.dense = nn.Linear(in_dim or hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class QformerAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_width: int):
        super().__init__()
        self.self = QformerSelfAttention(hidden, heads, kv_width)
        self.output = QformerSelfOutput(hidden)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        return self.output(self.self(x, x if context is None else context, causal), x)


class QformerIntermediate(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class QformerLayer(nn.Module):
    """Query path of a BLIP-2 Q-Former layer: causal self-attention over the queries,
    cross-attention to the image (every ``cross_attention_freq``-th layer), query feed-forward.
    (The text-path ``intermediate``/``output`` of BERT were removed by the reference.)"""

    def __init__(self, cfg: Seed2Config, index: int):
        super().__init__()
        h = cfg.qformer_hidden
        self.attention = QformerAttention(h, cfg.qformer_heads, h)
        if index % cfg.cross_attention_freq == 0:
            self.crossattention = QformerAttention(h, cfg.qformer_heads, cfg.vit_width)
        else:
            self.crossattention = None
        self.intermediate_query = QformerIntermediate(h, cfg.qformer_intermediate)
        self.output_query = QformerSelfOutput(h, cfg.qformer_intermediate)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, causal=True)
        if self.crossattention is not None:
            x = self.crossattention(x, image)
        return self.output_query(self.intermediate_query(x), x)


class QformerEmbeddings(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        # BERT's persistent buffer; the published file carries it, the query path never reads it.
        self.register_buffer("position_ids", torch.arange(512).expand((1, -1)))


class QformerEncoder(nn.Module):
    def __init__(self, cfg: Seed2Config):
        super().__init__()
        self.layer = nn.ModuleList(QformerLayer(cfg, i) for i in range(cfg.qformer_layers))


class QformerBert(nn.Module):
    def __init__(self, cfg: Seed2Config):
        super().__init__()
        self.embeddings = QformerEmbeddings(cfg.qformer_hidden)
        self.encoder = QformerEncoder(cfg)

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.embeddings.LayerNorm(queries)
        for layer in self.encoder.layer:
            x = layer(x, image)
        return x


class Qformer(nn.Module):
    def __init__(self, cfg: Seed2Config):
        super().__init__()
        self.bert = QformerBert(cfg)


# ----------------------------------------------------------------------------- decoder blocks
class ViTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VectorQuantizer(nn.Module):
    """Nearest-neighbour lookup in ``embedding`` (n_codes × dim)."""

    def __init__(self, n_codes: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_codes, 1.0 / n_codes)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1]).float()
        w = self.embedding.weight.float()
        d = flat.pow(2).sum(1, keepdim=True) + w.pow(2).sum(1) - 2 * flat @ w.t()
        return d.argmin(1).reshape(z.shape[:-1])


# ----------------------------------------------------------------------------- the whole tokenizer
class Seed2Quantizer(nn.Module):
    """SEED-2's encoder, quantizer and embedding decoder, with the published parameter names."""

    def __init__(self, cfg: Seed2Config | None = None):
        super().__init__()
        cfg = cfg or Seed2Config()
        self.cfg = cfg
        h = cfg.qformer_hidden
        self.visual_encoder = EvaViT(cfg)
        self.ln_vision = Fp32LayerNorm(cfg.vit_width)
        self.Qformer = Qformer(cfg)
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.num_queries, h) * 0.02)
        self.quantize = VectorQuantizer(cfg.codebook_size, cfg.codebook_dim)
        self.encode_task_layer = nn.Sequential(nn.Linear(h, h), nn.Tanh(), nn.Linear(h, cfg.codebook_dim))
        self.decode_task_layer = nn.Sequential(nn.Linear(cfg.codebook_dim, cfg.codebook_dim), nn.Tanh(), nn.Linear(cfg.codebook_dim, h))
        # ``blocks``/``pos_embed`` reconstruct Q-Former features in SEED's training; kept so the
        # published file loads without unexpected keys, unused for tokenizing.
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_queries, h))
        self.blocks = nn.ModuleList(ViTBlock(h, cfg.decode_heads) for _ in range(cfg.decode_depth))
        self.pos_embed_image = nn.Parameter(torch.zeros(1, cfg.num_queries, h))
        self.blocks_image = nn.ModuleList(ViTBlock(h, cfg.decode_heads) for _ in range(cfg.decode_depth))
        d1, d2, d3 = cfg.image_down_dims
        self.image_down = nn.Sequential(
            nn.Linear(h, d1, bias=False), nn.ReLU(), nn.Linear(d1, d2, bias=False), nn.ReLU(), nn.Linear(d2, d3, bias=False)
        )
        self.distill_image_proj = nn.Linear(cfg.num_queries * d3, cfg.embed_dim)

    @torch.no_grad()
    def codes(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels ``[B, 3, S, S]`` → codes ``[B, num_queries]`` (int64)."""
        image = self.ln_vision(self.visual_encoder(pixels))
        queries = self.query_tokens.expand(pixels.shape[0], -1, -1).to(image.dtype)
        q = self.Qformer.bert(queries, image)
        return self.quantize.indices(self.encode_task_layer(q))

    @torch.no_grad()
    def embedding(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, num_queries]`` → unCLIP image embeddings ``[B, embed_dim]``."""
        x = self.decode_task_layer(self.quantize.embedding(codes)) + self.pos_embed_image
        for blk in self.blocks_image:
            x = blk(x)
        x = self.image_down(x)
        return self.distill_image_proj(x.reshape(x.shape[0], -1))


# Keys a published file may carry that this module does not need (BERT text path, buffers).
_IGNORABLE_PREFIXES = ("Qformer.cls.", "Qformer.bert.embeddings.word_embeddings", "Qformer.bert.embeddings.position_embeddings")
_OPTIONAL_MISSING = ("Qformer.bert.embeddings.position_ids",)


def _unused_for_tokenizing(key: str) -> bool:
    """SEED's training-only reconstruction head (``blocks``, ``pos_embed``): tolerated when absent."""
    return key == "pos_embed" or key.startswith("blocks.")


def load_torch_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.pt``/``.pth``/``.bin`` state dict, loaded with ``weights_only=True`` (a pickle that
    would run code is refused); ``{"model": sd}`` / ``{"state_dict": sd}`` wrappers are unwrapped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such checkpoint file")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError and friends: name the file and the reason
        raise ValueError(f"{p}: refused or unreadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{p}: not a state dict of tensors")
    return obj


def load_seed2(checkpoint: str | os.PathLike, vision_tower: str | os.PathLike | None = None,
               cfg: Seed2Config | None = None) -> Seed2Quantizer:
    """Build :class:`Seed2Quantizer` and load ``seed_quantizer.pt`` (plus the vision tower file
    when the checkpoint lacks ``visual_encoder.*``). Missing weights are an error naming the file."""
    model = Seed2Quantizer(cfg)
    sd = load_torch_file(checkpoint)
    if not any(k.startswith("visual_encoder.") for k in sd):
        if vision_tower is None:
            raise ValueError(f"{checkpoint}: holds no visual_encoder.* weights; name the EVA-CLIP ViT-g file as vision_tower")
        tower = load_torch_file(vision_tower)
        sd.update({k if k.startswith("visual_encoder.") else f"visual_encoder.{k}": v for k, v in tower.items()})
    sd = {k: v for k, v in sd.items() if not k.startswith(_IGNORABLE_PREFIXES)}
    expected = model.state_dict()
    bad_shape = [f"{k} {tuple(v.shape)} != {tuple(expected[k].shape)}" for k, v in sd.items() if k in expected and v.shape != expected[k].shape]
    if bad_shape:
        raise ValueError(f"{checkpoint}: weights do not fit the SEED-2 architecture: {'; '.join(bad_shape[:3])}")
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if k not in _OPTIONAL_MISSING and not _unused_for_tokenizing(k)]
    if missing:
        raise ValueError(f"{checkpoint}: missing {len(missing)} SEED-2 weights, e.g. {missing[:4]}")
    if result.unexpected_keys:
        log.info("SEED-2: ignored %d unused keys, e.g. %s", len(result.unexpected_keys), result.unexpected_keys[:3])
    return model.eval()


def save_seed2(model: Seed2Quantizer, path: str | os.PathLike, with_vision_tower: bool = True) -> Path:
    """Write ``model`` in the published ``seed_quantizer.pt`` layout (a flat ``torch.save`` dict).
    With ``with_vision_tower=False`` the ViT goes to ``eva_vit_g.pth`` beside it, keyed as LAVIS does."""
    from anygpt.utils import atomic_path

    p = Path(path)
    sd = model.state_dict()
    if not with_vision_tower:
        tower = {k[len("visual_encoder."):]: v for k, v in sd.items() if k.startswith("visual_encoder.")}
        sd = {k: v for k, v in sd.items() if not k.startswith("visual_encoder.")}
        with atomic_path(p.parent / "eva_vit_g.pth") as tmp:
            torch.save(tower, tmp)
    with atomic_path(p) as tmp:
        torch.save(sd, tmp)
    return p


def preprocess(images: Sequence[Any], size: int) -> torch.Tensor:
    """PIL images → ``[B, 3, size, size]``: bicubic resize to a square without crop, CLIP normalisation."""
    from PIL import Image

    out = []
    for im in images:
        if isinstance(im, (str, os.PathLike)):
            im = _open_image(im)
        elif isinstance(im, np.ndarray):
            im = Image.fromarray(im.astype(np.uint8))
        arr = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
        out.append((arr - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _open_image(path: str | os.PathLike):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise MediaError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(f"{path}: not a readable image ({e})") from None


def build_unclip_pipeline(unclip_dir: str | os.PathLike, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """diffusers' ``StableUnCLIPImg2ImgPipeline`` from a local Stable Diffusion 2.1 unCLIP directory
    (never the hub: ``local_files_only=True``)."""
    from diffusers import StableUnCLIPImg2ImgPipeline

    d = Path(unclip_dir)
    if not (d / "model_index.json").is_file():
        raise FileNotFoundError(f"{d}: not a diffusers pipeline directory (no model_index.json)")
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(d), dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def render_embedding(pipe, embeds: torch.Tensor, guidance_scale: float = 10.0, num_inference_steps: int = 20, seed: int = 0):
    """unCLIP image embeddings ``[B, D]`` → PIL images with the reference's settings
    (guidance 10, 20 steps, noise level 0; a fixed seed stands in for its fixed latents)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dtype = next(pipe.unet.parameters()).dtype
    return pipe(image_embeds=embeds.to(pipe.device, dtype), guidance_scale=guidance_scale, noise_level=0,
                num_inference_steps=num_inference_steps, generator=gen).images


@register_backend("seed2")
class Seed2ImageTokenizer(ModalityTokenizer):
    """The reference's image tokenizer: 32 codes from 8192 per image; decodes through unCLIP."""

    modality = "image"
    codebook_size = 8192
    tokens_per_item = 32
    image_size = 224

    def __init__(self, card: TokenizerCard | None = None, device: str | None = None, model: Seed2Quantizer | None = None):
        super().__init__(card, device)
        settings = card.settings if card is not None else {}
        if model is None:
            if card is None or card.path("checkpoint") is None:
                raise ValueError("seed2 card needs 'checkpoint' (seed_quantizer.pt)")
            cfg = Seed2Config.from_dict(settings.get("architecture"))
            model = load_seed2(card.path("checkpoint"), card.path("vision_tower"), cfg)
        # fp16 on GPU as the reference; fp32 elsewhere; the card's ``dtype`` overrides.
        dtype_name = settings.get("dtype") or ("float16" if str(self.device).startswith("cuda") else "float32")
        if dtype_name not in ("float16", "bfloat16", "float32"):
            raise ValueError(f"seed2 card: dtype must be float16, bfloat16 or float32, not {dtype_name!r}")
        self.model = model.to(self.device, getattr(torch, dtype_name))
        cfg = model.cfg
        self.codebook_size = cfg.codebook_size
        self.tokens_per_item = cfg.num_queries
        self.image_size = cfg.image_size
        self.embed_dim = cfg.embed_dim
        self.unclip_dir = card.path("unclip_dir") if card is not None else None
        self.guidance_scale = float(settings.get("guidance_scale", 10.0))
        self.num_inference_steps = int(settings.get("num_inference_steps", 20))
        self.seed = int(settings.get("seed", 0))
        self._pipe = None

    def load_media(self, path: str | os.PathLike):
        return _open_image(path)

    def save_media(self, item, path: str | os.PathLike) -> Path:
        from anygpt.utils import atomic_path

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p) as tmp:
            item.save(tmp, format=(p.suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG"))
        return p

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        """PIL images (or paths, or HxWx3 uint8 arrays) → one ``[32]`` int64 code array each."""
        if not len(batch):
            return []
        pixels = preprocess(batch, self.image_size).to(self.device, next(self.model.parameters()).dtype)
        codes = self.model.codes(pixels).cpu().numpy().astype(np.int64)
        return [c for c in codes]

    def _repair(self, codes: Sequence[int] | np.ndarray) -> torch.Tensor:
        arr = np.asarray(codes, dtype=np.int64).reshape(-1)
        n = self.tokens_per_item
        if arr.size != n:
            warnings.warn(f"seed2: got {arr.size} image codes, expected {n}; {'truncating' if arr.size > n else 'repeating the last code'}")
            arr = arr[:n] if arr.size > n else np.concatenate([arr, np.full(n - arr.size, arr[-1] if arr.size else 0)])
        if (arr < 0).any() or (arr >= self.codebook_size).any():
            warnings.warn(f"seed2: image codes outside [0, {self.codebook_size}) clamped")
            arr = arr.clip(0, self.codebook_size - 1)
        return torch.from_numpy(arr)[None].to(self.device)

    def embed(self, codes: Sequence[int] | np.ndarray) -> np.ndarray:
        """Codes of one image → its ``[embed_dim]`` unCLIP image embedding (float32)."""
        return self.model.embedding(self._repair(codes))[0].float().cpu().numpy()

    @property
    def pipeline(self):
        """The unCLIP pipeline, built on first use from the card's ``unclip_dir``."""
        if self._pipe is None:
            if self.unclip_dir is None:
                raise ValueError("seed2: decoding to pixels needs 'unclip_dir' (a local stable-diffusion-2-1-unclip directory) in the card")
            dtype = torch.float16 if str(self.device).startswith("cuda") else torch.float32
            self._pipe = build_unclip_pipeline(self.unclip_dir, self.device, dtype)
        return self._pipe

    def decode(self, codes: Sequence[int] | np.ndarray):
        """Codes of one image → a PIL image (768×768 with the published unCLIP)."""
        emb = self.model.embedding(self._repair(codes)).float()
        return render_embedding(self.pipeline, emb, self.guidance_scale, self.num_inference_steps, self.seed)[0]

    def state_for_fingerprint(self) -> dict:
        return {**super().state_for_fingerprint(), "architecture": self.model.cfg.to_dict()}
