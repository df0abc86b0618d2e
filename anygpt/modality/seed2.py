"""SEED tokenizer-2: the reference's image tokenizer (32 codes per 224×224 image, codebook 8192).

Architecture (SEED-LLaMA's ``Blip2QformerQuantizer``, as AnyGPT loads it):

    pixels (224×224, resized without crop, CLIP normalisation)
      → EVA-CLIP ViT-g/14 (39 blocks, width 1408)  → ``ln_vision``
      → causal Q-Former (BERT-base, 32 learned queries, cross-attention every 2nd layer)
      → ``encode_task_layer`` (768 → 32) → nearest code in ``quantize.embedding`` (8192 × 32)  = the codes
    codes → ``decode_task_layer`` (32 → 768) + ``pos_embed_image`` → 4 ViT blocks (``blocks_image``)
      → ``image_down`` (768 → 256 → 128 → 32 per query) → ``distill_image_proj`` (32·32 → 1024)
      = an unCLIP image embedding, rendered by Stable Diffusion 2.1 unCLIP (guidance 10, 20 steps).

Every module and parameter name matches the published ``seed_quantizer.pt`` (the network is in
:mod:`anygpt.modality.seed2_net`), so the released file loads here with ``weights_only=True``. Unlike the reference, nothing is downloaded: the vision
tower comes from ``seed_quantizer.pt`` itself when it holds ``visual_encoder.*`` keys, else from the
local file the card names (``eva_vit_g.pth`` of LAVIS). Widths and depths are parameters
(``Seed2Config``, a card's ``architecture``) so tests can build a tiny model with the same key names.

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
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from anygpt.modality.base import CodeLayout, ModalityTokenizer, TokenizerCard, register_backend, repair_codes
from anygpt.modality.media import load_image
from anygpt.modality.seed2_net import Seed2Config, Seed2Quantizer
from anygpt.weights import load_torch_file

__all__ = ["Seed2Config", "Seed2Quantizer", "Seed2ImageTokenizer", "load_seed2", "save_seed2", "load_torch_file",
           "preprocess", "build_unclip_pipeline", "render_embedding"]

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


_IGNORABLE_PREFIXES = ("Qformer.cls.", "Qformer.bert.embeddings.word_embeddings", "Qformer.bert.embeddings.position_embeddings")
_OPTIONAL_MISSING = ("Qformer.bert.embeddings.position_ids",)


def _unused_for_tokenizing(key: str) -> bool:
    """SEED's training-only reconstruction head (``blocks``, ``pos_embed``): tolerated when absent."""
    return key == "pos_embed" or key.startswith("blocks.")


def load_seed2(checkpoint: str | os.PathLike, vision_tower: str | os.PathLike | None = None,
               cfg: Seed2Config | None = None) -> Seed2Quantizer:
    """Build :class:`Seed2Quantizer` and load ``seed_quantizer.pt`` (plus the vision tower file
    when the checkpoint lacks ``visual_encoder.*``). Missing weights are an error naming the file."""
    sd = load_torch_file(checkpoint)  # first: a refused or unreadable file fails before building the ViT
    model = Seed2Quantizer(cfg)
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
            im = load_image(im)  # the guarded opener: refuses decompression bombs and non-files
        elif isinstance(im, np.ndarray):
            im = Image.fromarray(im.astype(np.uint8))
        arr = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
        out.append((arr - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


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

    @property
    def code_layout(self) -> CodeLayout:
        """One stream of 8192 codes (the quantizer's codebook), 32 per image (one per query)."""
        return CodeLayout(1, self.codebook_size, self.tokens_per_item)

    def load_media(self, path: str | os.PathLike):
        """An RGB image at its own size (:func:`preprocess` resizes as the reference does)."""
        return load_image(path)

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        """PIL images (or paths, or HxWx3 uint8 arrays) → one ``[32]`` int64 code array each."""
        if not len(batch):
            return []
        pixels = preprocess(batch, self.image_size).to(self.device, next(self.model.parameters()).dtype)
        codes = self.model.codes(pixels).cpu().numpy().astype(np.int64)
        return [c for c in codes]

    def _repair(self, codes: Sequence[int] | np.ndarray) -> torch.Tensor:
        return torch.from_numpy(repair_codes(codes, self.code_layout, "seed2 decode"))[None].to(self.device)

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
