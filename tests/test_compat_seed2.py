"""SEED-2 image tokenizer: published key names, loading through a card, image → 32 codes → embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from anygpt.modality.base import load_tokenizer
from anygpt.modality.testing import save_random_unclip
from anygpt.modality.seed2 import (
    Seed2Config, Seed2ImageTokenizer, Seed2Quantizer, build_unclip_pipeline, load_seed2, load_torch_file, save_seed2,
)

# Tiny widths, the published structure and names; 32 codes from 8192 as the real model.
TINY = dict(image_size=28, patch_size=14, vit_width=32, vit_depth=2, vit_heads=2, vit_mlp_hidden=64,
            qformer_hidden=48, qformer_layers=2, qformer_heads=4, qformer_intermediate=96,
            decode_depth=1, decode_heads=4, image_down_dims=[16, 8, 4], embed_dim=24)


def write_card(d, **settings):
    path = d / "seed2.yaml"
    path.write_text(yaml.safe_dump({"backend": "seed2", "modality": "image", "architecture": TINY, **settings}))
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random tiny SEED-2 saved as seed_quantizer.pt (vision tower inside) and its state dict."""
    d = tmp_path_factory.mktemp("seed2")
    torch.manual_seed(0)
    model = Seed2Quantizer(Seed2Config.from_dict(TINY))
    save_seed2(model, d / "seed_quantizer.pt")
    return d, {k: v.clone() for k, v in model.state_dict().items()}


def test_full_size_key_names_and_shapes_match_the_published_model():
    with torch.device("meta"):
        sd = Seed2Quantizer().state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["quantize.embedding.weight"] == (8192, 32)
    assert shapes["query_tokens"] == (1, 32, 768)
    assert shapes["visual_encoder.patch_embed.proj.weight"] == (1408, 3, 14, 14)
    assert shapes["visual_encoder.pos_embed"] == (1, 257, 1408)
    assert shapes["visual_encoder.blocks.38.mlp.fc1.weight"] == (6144, 1408)
    assert "visual_encoder.blocks.39.norm1.weight" not in shapes  # BLIP-2 keeps 39 of 40 blocks
    assert shapes["visual_encoder.blocks.0.attn.q_bias"] == (1408,)
    assert shapes["Qformer.bert.encoder.layer.10.crossattention.self.key.weight"] == (768, 1408)
    assert not any(k.startswith("Qformer.bert.encoder.layer.11.crossattention") for k in shapes)
    assert shapes["Qformer.bert.encoder.layer.11.output_query.dense.weight"] == (768, 3072)
    assert shapes["encode_task_layer.2.weight"] == (32, 768)
    assert shapes["decode_task_layer.2.weight"] == (768, 32)
    assert shapes["blocks_image.3.attn.qkv.bias"] == (2304,)
    assert [shapes[f"image_down.{i}.weight"] for i in (0, 2, 4)] == [(256, 768), (128, 256), (32, 128)]
    assert shapes["distill_image_proj.weight"] == (1024, 1024)


def test_image_to_32_codes_to_embedding(saved, tmp_path):
    d, sd = saved
    tok = load_tokenizer(write_card(d, checkpoint="seed_quantizer.pt"), device="cpu")
    assert isinstance(tok, Seed2ImageTokenizer) and tok.tokens_per_item == 32 and tok.codebook_size == 8192
    assert all(torch.equal(v, sd[k]) for k, v in tok.model.state_dict().items())  # loaded, not re-initialised
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))  # not square: resized, no crop
    path = tmp_path / "x.png"
    img.save(path)
    codes = tok.encode([img, tok.load_media(path)])
    assert [c.shape for c in codes] == [(32,), (32,)] and codes[0].dtype == np.int64
    assert np.array_equal(codes[0], codes[1]) and codes[0].min() >= 0 and codes[0].max() < 8192
    emb = tok.embed(codes[0])
    assert emb.shape == (TINY["embed_dim"],) and np.isfinite(emb).all()
    assert not np.allclose(emb, tok.embed((codes[0] + 1) % 8192))  # the embedding depends on the codes


def test_vision_tower_from_a_separate_local_file(saved, tmp_path):
    d, sd = saved
    model = Seed2Quantizer(Seed2Config.from_dict(TINY))
    model.load_state_dict(sd)
    save_seed2(model, tmp_path / "seed_quantizer.pt", with_vision_tower=False)
    assert not any(k.startswith("visual_encoder.") for k in load_torch_file(tmp_path / "seed_quantizer.pt"))
    with pytest.raises(ValueError, match="vision_tower"):
        load_tokenizer(write_card(tmp_path, checkpoint="seed_quantizer.pt"), device="cpu")
    tok = load_tokenizer(write_card(tmp_path, checkpoint="seed_quantizer.pt", vision_tower="eva_vit_g.pth"), device="cpu")
    pixels = torch.randn(1, 3, 28, 28)
    assert torch.equal(tok.model.codes(pixels), model.eval().codes(pixels))


def test_incomplete_or_unsafe_checkpoints_are_refused(saved, tmp_path):
    _, sd = saved
    torch.save({k: v for k, v in sd.items() if not k.startswith("distill_image_proj")}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"partial\.pt: missing 2 SEED-2 weights"):
        load_seed2(tmp_path / "partial.pt", cfg=Seed2Config.from_dict(TINY))
    # the training-only reconstruction head may be absent: tokenizing does not read it
    torch.save({k: v for k, v in sd.items() if not (k.startswith("blocks.") or k == "pos_embed")}, tmp_path / "no_recon.pt")
    assert load_seed2(tmp_path / "no_recon.pt", cfg=Seed2Config.from_dict(TINY)) is not None
    torch.save({k: (v[:, :-1] if k == "quantize.embedding.weight" else v) for k, v in sd.items()}, tmp_path / "narrow.pt")
    with pytest.raises(ValueError, match=r"narrow\.pt: weights do not fit"):
        load_seed2(tmp_path / "narrow.pt", cfg=Seed2Config.from_dict(TINY))
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"quantize.embedding.weight": Payload()}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match=r"evil\.pt: refused"):
        load_torch_file(tmp_path / "evil.pt")
    assert not marker.exists()


def test_repairs_bad_code_lists_and_needs_unclip_dir_to_render(saved, logged_warning):
    d, _ = saved
    tok = load_tokenizer(write_card(d, checkpoint="seed_quantizer.pt"), device="cpu")
    # the package's one repair policy (base.repair_codes): pad with code 0, replace codes out of range with 0
    with logged_warning("expected 32"):
        short = tok.embed([5, 6, 7])
    with logged_warning(r"outside \[0, 8192\) replaced with 0"):
        out_of_range = tok.embed([9000] * 32)
    assert short.shape == (TINY["embed_dim"],)
    np.testing.assert_array_equal(short, tok.embed([5, 6, 7] + [0] * 29))
    np.testing.assert_array_equal(out_of_range, tok.embed([0] * 32))
    with pytest.raises(ValueError, match="unclip_dir"):
        tok.decode([1] * 32)


def test_codes_render_through_a_local_unclip_pipeline_with_reference_settings(saved, tmp_path, monkeypatch):
    """The pixel path end to end with random weights: the pipeline is loaded from the card's local
    directory (never the hub) and called with the codes' embedding, guidance 10, noise level 0 and
    the card's step count (the reference's 20; 2 here to stay fast)."""
    import diffusers

    d, _ = saved
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        build_unclip_pipeline(tmp_path)
    save_random_unclip(tmp_path / "sd21-unclip", TINY["embed_dim"])
    seen = {}
    real_load, real_call = diffusers.StableUnCLIPImg2ImgPipeline.from_pretrained, diffusers.StableUnCLIPImg2ImgPipeline.__call__

    def spy_load(path, **kw):
        seen["path"], seen["local_files_only"] = path, kw.get("local_files_only")
        return real_load(path, **kw)

    def spy_call(self, **kw):
        seen.update(kw)
        return real_call(self, **kw)

    monkeypatch.setattr(diffusers.StableUnCLIPImg2ImgPipeline, "from_pretrained", staticmethod(spy_load))
    monkeypatch.setattr(diffusers.StableUnCLIPImg2ImgPipeline, "__call__", spy_call)
    card = write_card(d, checkpoint="seed_quantizer.pt", unclip_dir=str(tmp_path / "sd21-unclip"), num_inference_steps=2)
    tok = load_tokenizer(card, device="cpu")
    codes = list(range(0, 8192, 256))
    image = tok.decode(codes)
    assert isinstance(image, Image.Image) and image.size == (16, 16)  # sample_size 8 × VAE factor 2
    assert seen["path"] == str(tmp_path / "sd21-unclip") and seen["local_files_only"] is True
    assert (seen["guidance_scale"], seen["num_inference_steps"], seen["noise_level"]) == (10.0, 2, 0)
    assert np.allclose(seen["image_embeds"][0].numpy(), tok.embed(codes))
    assert np.array_equal(np.asarray(image), np.asarray(tok.decode(codes)))  # fixed noise: same codes, same image


def test_half_precision_as_the_reference_runs_on_gpu(saved):
    d, _ = saved
    tok = load_tokenizer(write_card(d, checkpoint="seed_quantizer.pt", dtype="bfloat16"), device="cpu")
    assert next(tok.model.parameters()).dtype == torch.bfloat16
    codes = tok.encode([Image.new("RGB", (40, 40), (200, 30, 30))])[0]
    assert codes.shape == (32,) and tok.embed(codes).dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        load_tokenizer(write_card(d, checkpoint="seed_quantizer.pt", dtype="int8"), device="cpu")


def test_reads_images_through_the_guarded_opener(saved, tmp_path):
    """SEED-2 reads files with the package's image opener: a decompression bomb and a folder are
    refused with one line naming the file, before anything is decoded."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "faults"))
    from test_hostile_media import png_bomb

    from anygpt.modality.media import MediaError

    d, _ = saved
    tok = load_tokenizer(write_card(d, checkpoint="seed_quantizer.pt"), device="cpu")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(10_000, 10_000))  # a few hundred bytes claiming 10^8 pixels (Pillow's own limit is higher)
    with pytest.raises(MediaError, match=r"bomb\.png: image is 10000x10000 = 100000000 pixels, more than the limit"):
        tok.load_media(bomb)
    with pytest.raises(MediaError, match="not a regular file"):
        tok.encode([tmp_path])
    Image.new("RGBA", (20, 10), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert tok.load_media(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)  # transparency → white
