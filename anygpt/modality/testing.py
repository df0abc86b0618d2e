"""Randomly initialised codecs saved in their published checkpoint layouts, for tests and benches.

Nothing here downloads. Each ``save_random_*`` writes the same files a real checkpoint has, so the
backend's real loading path is what the tests exercise. Random-init RVQ codebooks are all zeros
(every frame gets the same code); :func:`sample_init_codebooks` fills them, layer by layer, with
encoder frames of real audio so codes vary (the codecs' own k-means init is far too slow on CPU).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

SMALL_SPEECHTOKENIZER = {"n_filters": 16, "strides": [8, 5, 4, 2], "dimension": 128, "semantic_dimension": 128,
                         "bidirectional": True, "dilation_base": 2, "residual_kernel_size": 3, "n_residual_layers": 1,
                         "lstm_layers": 1, "activation": "ELU", "sample_rate": 16000, "codebook_size": 1024, "n_q": 8}


def _rvq_codebooks(model) -> list:
    q = model.quantizer
    if hasattr(q, "vq"):  # speechtokenizer / encodec packages
        return [layer._codebook for layer in q.vq.layers]
    return [layer.codebook for layer in q.layers]  # transformers EncodecModel


@torch.no_grad()
def sample_init_codebooks(model: torch.nn.Module, wavs: Sequence[np.ndarray], seed: int = 0) -> None:
    """Fill every RVQ codebook with residual encoder frames of ``wavs`` (at the model's rate)."""
    g = torch.Generator().manual_seed(seed)
    n = max(len(w) for w in wavs)
    x = torch.zeros(len(wavs), 1, n)
    for i, w in enumerate(wavs):
        x[i, 0, : len(w)] = torch.as_tensor(w)
    channels = getattr(model, "channels", 1)
    if channels == 2:
        x = x.expand(-1, 2, -1).contiguous()
    e = model.encoder(x)
    res = e.transpose(1, 2).reshape(-1, e.shape[1])
    for cb in _rvq_codebooks(model):
        k = cb.embed.shape[0]
        idx = torch.randint(res.shape[0], (k,), generator=g)
        embed = res[idx] + 1e-3 * torch.randn(k, res.shape[1], generator=g)
        cb.embed.copy_(embed)
        cb.embed_avg.copy_(embed)
        cb.cluster_size.fill_(1.0)
        cb.inited.fill_(1.0)
        d = (embed * embed).sum(1)[None] - 2 * res @ embed.T
        res = res - embed[d.argmin(1)]


def audio_corpus(sample_rate: int, n: int = 3, seconds: float = 1.0, seed: int = 0) -> list[np.ndarray]:
    """Harmonic tones with varied pitch and envelopes (enough spectral variety for sample init)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    out = []
    for _ in range(n):
        f0 = rng.uniform(80, 400)
        sig = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
        out.append((0.2 * sig * np.abs(np.sin(2 * np.pi * rng.uniform(0.5, 3) * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return out


def save_random_speechtokenizer(folder: str | Path, config: dict | None = None, seed: int = 0) -> Path:
    """``config.json`` + ``SpeechTokenizer.pt`` (state dict), as fnlp/SpeechTokenizer publishes."""
    from anygpt.modality.speech import speechtokenizer_class

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(config or SMALL_SPEECHTOKENIZER)
    torch.manual_seed(seed)
    model = speechtokenizer_class()(config).eval()
    sample_init_codebooks(model, audio_corpus(config["sample_rate"], seed=seed), seed)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    torch.save(model.state_dict(), folder / "SpeechTokenizer.pt")
    return folder


def save_random_encodec_hf(folder: str | Path, small: bool = True, seed: int = 0) -> Path:
    """The facebook/encodec_32khz folder layout (config.json, model.safetensors,
    preprocessor_config.json); ``small`` narrows the layers but keeps rates and codebooks."""
    from transformers import EncodecConfig, EncodecFeatureExtractor, EncodecModel

    folder = Path(folder)
    widths = {"num_filters": 8, "hidden_size": 32, "num_lstm_layers": 1} if small else {"num_filters": 64, "hidden_size": 128, "num_lstm_layers": 2}
    cfg = EncodecConfig(audio_channels=1, chunk_length_s=None, codebook_size=2048, compress=2, dilation_growth_rate=2,
                        kernel_size=7, last_kernel_size=7, norm_type="weight_norm", normalize=False,
                        num_residual_layers=1, overlap=None, pad_mode="reflect", residual_kernel_size=3,
                        sampling_rate=32000, target_bandwidths=[2.2], trim_right_ratio=1.0, upsampling_ratios=[8, 5, 4, 4],
                        use_causal_conv=False, use_conv_shortcut=False, **widths)
    torch.manual_seed(seed)
    model = EncodecModel(cfg).eval()
    sample_init_codebooks(model, audio_corpus(32000, seed=seed), seed)
    model.save_pretrained(str(folder), safe_serialization=True)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=32000, padding_value=0.0).save_pretrained(str(folder))
    return folder


def save_random_encodec(folder: str | Path, variant: str = "24khz", seed: int = 0) -> Path:
    """The ``encodec`` package's checkpoint file (e.g. ``encodec_24khz-d7cc33bc.th``, a state dict)."""
    from anygpt.modality.music import ENCODEC_CHECKPOINTS, EncodecTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = EncodecTokenizer.build(variant).eval()
    sample_init_codebooks(model, audio_corpus(model.sample_rate, seed=seed), seed)
    path = folder / ENCODEC_CHECKPOINTS[variant]
    torch.save(model.state_dict(), path)
    return path


def save_random_janus_vq(folder: str | Path, num_patches: int = 4, num_embeddings: int = 1024, seed: int = 0) -> Path:
    """A ``JanusVQVAE.save_pretrained`` folder with a small config (16× down: 64 px → 4×4 codes)."""
    from transformers import JanusVQVAE, JanusVQVAEConfig

    torch.manual_seed(seed)
    cfg = JanusVQVAEConfig(embed_dim=8, num_embeddings=num_embeddings, latent_channels=64, base_channels=32,
                           channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=1, num_patches=num_patches)
    model = JanusVQVAE(cfg).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def save_random_janus_full(folder: str | Path, seed: int = 0) -> Path:
    """A whole (tiny) ``JanusForConditionalGeneration`` folder, the layout Janus-Pro ships in."""
    from transformers import JanusConfig, JanusForConditionalGeneration

    torch.manual_seed(seed)
    cfg = JanusConfig(
        text_config={"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 300},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        vq_config={"embed_dim": 8, "num_embeddings": 64, "latent_channels": 32, "base_channels": 32,
                   "channel_multiplier": [1, 1, 2, 2, 4], "num_res_blocks": 1, "num_patches": 2,
                   "image_token_embed_dim": 32, "projection_dim": 32})
    model = JanusForConditionalGeneration(cfg).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def save_random_unclip(folder: str | Path, embed_dim: int, seed: int = 0) -> Path:
    """A randomly initialised Stable UnCLIP img2img pipeline in diffusers' directory layout (tiny
    widths, the same components as stabilityai/stable-diffusion-2-1-unclip) at ``folder``."""
    import tempfile

    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch], vocab[ch + "</w>"] = len(vocab), len(vocab) + 1
    folder = Path(folder)
    d = Path(tempfile.mkdtemp())  # the CLIP tokenizer's source files; the pipeline saves its own copies
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    torch.manual_seed(seed)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=32, size=32),
        image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=32,
            patch_size=4, projection_dim=embed_dim)),
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=embed_dim),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=16),
        text_encoder=CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1)),
        unet=UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=(2, 4), class_embed_type="projection",
            projection_class_embeddings_input_dim=embed_dim * 2, norm_num_groups=8),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1),
        vae=AutoencoderKL(block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
                          down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2),
    )
    pipe.save_pretrained(str(folder))
    return folder
