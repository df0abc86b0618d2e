"""``janus-vq`` image backend: the pixel VQ-VAE of Janus (transformers ``JanusVQVAE``).

16× downsampling: an image of ``image_size`` pixels gives ``(image_size / 16)²`` codes
(384 px → 576 codes with Janus' 16384-entry codebook). Images are resized to ``image_size`` with
the card's resize policy and normalised to [-1, 1] as the Janus image processor does.

Layout: a ``JanusVQVAE.save_pretrained`` folder (config.json + model.safetensors). Card::

    backend: janus-vq
    modality: image
    path: /models/janus_vqvae
    resize_policy: resize
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from anygpt.modality.base import ModalityTokenizer, TokenizerCard, register_backend
from anygpt.modality.checkpoints import checkpoint_dir, required_file
from anygpt.modality.demo import repair_codes


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

    @classmethod
    def from_card(cls, card: TokenizerCard, device: str | None = None) -> "JanusVQTokenizer":
        from transformers import JanusVQVAE

        folder = checkpoint_dir(card, ["config.json", "*.safetensors"])
        required_file(folder, "config.json", card)
        return cls(JanusVQVAE.from_pretrained(str(folder)), card, device, card.settings.get("resize_policy", "resize"))

    def state_for_fingerprint(self) -> dict:
        return {**super().state_for_fingerprint(), "resize_policy": self.resize_policy}

    def _pixels(self, images: Sequence[Any]) -> torch.Tensor:
        from anygpt.media import resize_image, to_rgb

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

        c = repair_codes(codes, self.codebook_size, self.tokens_per_item, 0, "janus-vq decode")
        with self.autocast():
            pix = self.model.decode(torch.from_numpy(c)[None].to(self.device))[0]
        arr = ((pix.float().clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(arr, "RGB")
