"""``janus-vq`` image backend: the pixel VQ-VAE of Janus (transformers ``JanusVQVAE``).

16× downsampling: an image of ``image_size`` pixels gives ``(image_size / 16)²`` codes
(384 px → 576 codes with Janus' 16384-entry codebook). Images are resized to ``image_size`` with
the card's resize policy and normalised to [-1, 1] as the Janus image processor does.

Layouts: a ``JanusVQVAE.save_pretrained`` folder (config.json + model.safetensors), or a whole
Janus model folder in transformers format (e.g. ``deepseek-community/Janus-Pro-1B``: config.json with
``vq_config``, safetensors possibly sharded), from which only the ``model.vqmodel.*`` tensors are
read. Card::

    backend: janus-vq
    modality: image
    path: /models/janus_vqvae
    resize_policy: resize
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from anygpt.modality.base import CodeLayout, ModalityTokenizer, TokenizerCard, register_backend, repair_codes
from anygpt.modality.checkpoints import checkpoint_dir, required_file
from anygpt.utils import refuse_remote_code


FULL_MODEL_PREFIX = "model.vqmodel."


def load_vq_from_full_janus(folder: Path, config: dict):
    """The VQ-VAE of a full Janus checkpoint: its ``vq_config`` + the ``model.vqmodel.*`` tensors."""
    from safetensors import safe_open
    from transformers import JanusVQVAE, JanusVQVAEConfig

    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted({folder / f for k, f in json.loads(index.read_text())["weight_map"].items()
                        if k.startswith(FULL_MODEL_PREFIX)})
    else:
        files = [folder / "model.safetensors"]
    state = {}
    for f in files:
        with safe_open(str(f), "pt") as st:
            state.update({k[len(FULL_MODEL_PREFIX):]: st.get_tensor(k) for k in st.keys() if k.startswith(FULL_MODEL_PREFIX)})
    if not state:
        raise FileNotFoundError(f"{folder}: no {FULL_MODEL_PREFIX}* tensors in {[f.name for f in files]}")
    model = JanusVQVAE(JanusVQVAEConfig(**config["vq_config"]))
    model.load_state_dict(state, strict=True)
    return model


@register_backend("janus-vq")
class JanusVQTokenizer(ModalityTokenizer):
    """JanusVQVAE encode (image → codes) and decode (codes → image)."""

    modality = "image"

    def __init__(self, model, card: TokenizerCard | None = None, device: str | None = None,
                 resize_policy: str = "resize"):
        super().__init__(card, device)
        self.model = model.eval().to(self.device)
        cfg = model.config
        self.grid = int(cfg.num_patches)
        self.image_size = self.grid * 2 ** (len(cfg.channel_multiplier) - 1)
        self.tokens_per_item = self.grid * self.grid
        self.codebook_size = int(cfg.num_embeddings)
        self.resize_policy = resize_policy

    @property
    def code_layout(self) -> CodeLayout:
        """One stream of ``num_embeddings`` codes, ``num_patches²`` per image (raster order)."""
        return CodeLayout(1, self.codebook_size, self.tokens_per_item)

    @classmethod
    def from_card(cls, card: TokenizerCard, device: str | None = None) -> "JanusVQTokenizer":
        from transformers import JanusVQVAE

        folder = checkpoint_dir(card, ["config.json", "*.safetensors", "*.safetensors.index.json"])
        config = json.loads(required_file(folder, "config.json", card).read_text(encoding="utf-8"))
        if config.get("model_type") == "janus":
            model = load_vq_from_full_janus(folder, config)
        else:
            refuse_remote_code(folder)
            model = JanusVQVAE.from_pretrained(str(folder), trust_remote_code=False)
        return cls(model, card, device, card.settings.get("resize_policy", "resize"))

    def state_for_fingerprint(self) -> dict:
        return {**super().state_for_fingerprint(), "resize_policy": self.resize_policy}

    def _pixels(self, images: Sequence[Any]) -> torch.Tensor:
        from anygpt.modality.media import resize_image, to_rgb

        arr = np.stack([np.asarray(resize_image(to_rgb(im), self.image_size, self.resize_policy), dtype=np.float32)
                        for im in images])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0
        return x.to(self.device, self.model.dtype)

    @torch.inference_mode()
    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        if not len(batch):
            return []
        with self.autocast():
            tokens = self.model.encode(self._pixels(batch)).image_tokens.view(len(batch), -1)
        return list(tokens.cpu().numpy().astype(np.int64))

    @torch.inference_mode()
    def decode(self, codes):
        from PIL import Image

        c = repair_codes(codes, self.code_layout, "janus-vq decode")
        with self.autocast():
            pix = self.model.decode(torch.from_numpy(c)[None].to(self.device))[0]
        arr = ((pix.float().clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(arr, "RGB")
