"""SEED tokenizer-2's network: EVA-CLIP ViT-g/14, causal Q-Former, VQ codebook, embedding decoder.

Module and parameter names are those of the published ``seed_quantizer.pt`` (the reference's code
instantiates these names and loads the file with ``load_state_dict``); they were checked against
the reference's module code with shared random weights (outputs equal to 1e-6). Sizes are
parameters (:class:`Seed2Config`) so tests can build a tiny model with the same names. Loading,
pre-processing and the tokenizer backend live in :mod:`anygpt.modality.seed2`.

Why one long module: it is an architecture port whose module tree must match the published
state dict key for key (``visual_encoder.*``, ``Qformer.*``, ``quantize.*``, ``decode_task_layer``
…); kept in one file it reads against the reference's code side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from anygpt.config import build, to_dict


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
        """From a card's ``architecture`` mapping; unknown keys and bad values raise naming them."""
        return build(cls, d, what="SEED-2 architecture")

    def to_dict(self) -> dict:
        """Plain values (lists for tuples), as a card's ``architecture``."""
        return to_dict(self)


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
