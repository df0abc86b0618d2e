"""Constrained generation through every shipped card (``tokenizers/*.yaml``), the path a user takes.

For each card, random weights are saved in that backend's PUBLISHED file layout at the place the
card points to (a folder beside a copy of the card, the Hugging Face cache for a ``hub_id``, the
``encodec`` package's torch-hub folder under ``~``), the card is loaded as shipped (only sizes a
CPU cannot afford are overridden: SEED-2's ``architecture``, SoundStorm's ``soundstorm_config``),
a tiny random Llama (one for all cards, its layout reserving the largest published code ranges;
the card's tokenizer is loaded into it, so it decodes no more codes than it declares) generates
forced spans, and the spans are checked
against the backend's REAL layout (written here from the published models, not read from our
code): speech is one stream of SpeechTokenizer's 1024 layer-0 codes, any order, any length, its
end anywhere; EnCodec music is frame-major layers with per-layer offsets, ending only after a
whole frame; images are exactly their fixed count. Every span is then decoded to a file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from anygpt.modality import testing as T

TOKENIZERS = Path(__file__).resolve().parents[1] / "tokenizers"
SNAPSHOT = "0" * 40

# The published layout of each shipped card's model in the LLM sequence: ("stream", codes) = one
# free-length stream; ("frames", layers, layer_size) = frame-major layers; ("fixed", codes, count).
REAL_LAYOUT = {
    "demo-image": ("fixed", 512, 64),
    "demo-speech": ("stream", 1024),
    "demo-music": ("stream", 512),
    "speechtokenizer": ("stream", 1024),  # AnyGPT: RVQ layer 0 only, 50 Hz
    "speechtokenizer_soundstorm": ("stream", 1024),
    "encodec_32khz": ("frames", 4, 2048),  # facebook/encodec_32khz at 2.2 kbps, as AnyGPT
    "encodec_24khz": ("frames", 8, 1024),  # encodec 24 kHz at 6 kbps
    "janus-vq": ("fixed", 16384, 576),  # 384 px / 16 = 24 × 24
    "seed2": ("fixed", 8192, 32),
}
TINY_SEED2 = dict(image_size=28, patch_size=14, vit_width=32, vit_depth=2, vit_heads=2, vit_mlp_hidden=64,
                  qformer_hidden=48, qformer_layers=2, qformer_heads=4, qformer_intermediate=96,
                  decode_depth=1, decode_heads=4, image_down_dims=[16, 8, 4], embed_dim=24)
TINY_STORM = dict(dim=32, depth=2, heads=2, dim_head=16, conv_kernel_size=7)
# under -m slow: the full-size encodec 24 kHz, Janus' 384 px decoder, unCLIP, a second SpeechTokenizer
# card and the Griffin-Lim demo audio decoders (tens of seconds each on a busy CPU); the default run
# keeps one card per layout kind: fixed (demo-image), one stream (speechtokenizer), frames (encodec_32khz)
SLOW = {"encodec_24khz", "janus-vq", "seed2", "speechtokenizer_soundstorm", "demo-speech", "demo-music"}


@pytest.fixture(scope="module")
def shared_bundle(tmp_path_factory, base_tokenizer_dir, demo_cards, infer_support):
    """The tiny model, its layout reserving Janus' 16384 image, SpeechTokenizer's 1024 speech and
    EnCodec 32 kHz's 8192 music codes (every shipped card fits); each test puts its card's tokenizer in."""
    from anygpt.model.bundle import load_bundle

    d = infer_support.make_bundle(tmp_path_factory.mktemp("every_card") / "model", base_tokenizer_dir, demo_cards,
                                  sizes={"image": 16384, "speech": 1024, "music": 8192})
    return load_bundle(d, with_tokenizers=False)


def test_every_shipped_card_has_a_real_layout_here():
    assert {p.stem for p in TOKENIZERS.glob("*.yaml")} == set(REAL_LAYOUT)


def _hub_snapshot(cache: Path, repo: str) -> Path:
    """An offline Hugging Face cache entry for ``repo`` (refs/main → one snapshot folder)."""
    entry = cache / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / "main").write_text(SNAPSHOT)
    snap = entry / "snapshots" / SNAPSHOT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _random_codebook(path: Path, rows: int, dim: int) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"codebook": torch.rand(rows, dim, generator=torch.Generator().manual_seed(rows))}, str(path))


def install_card(name: str, root: Path, monkeypatch) -> Path:
    """Copy the shipped card to ``root/tokenizers`` and save random weights where it points."""
    from huggingface_hub import constants

    src = TOKENIZERS / f"{name}.yaml"
    settings = yaml.safe_load(src.read_text())
    cards = root / "tokenizers"
    cards.mkdir(parents=True, exist_ok=True)
    hub = root / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HOME", str(root / "home"))
    rel = lambda key: cards / settings[key]  # noqa: E731 - paths in a card are relative to it
    extra: dict = {}
    if name == "demo-image":
        _random_codebook(rel("weights"), settings["codebook_size"], settings["patch_size"] ** 2 * 3)
    elif name in ("demo-speech", "demo-music"):
        _random_codebook(rel("weights"), settings["codebook_size"], settings["n_mels"])
    elif name == "speechtokenizer":
        T.save_random_speechtokenizer(_hub_snapshot(hub, settings["hub_id"]) / settings["subfolder"])
    elif name == "speechtokenizer_soundstorm":
        from anygpt.modality.soundstorm import SoundStorm, SoundStormConfig, save_soundstorm

        folder = T.save_random_speechtokenizer(rel("path"))
        (folder / "SpeechTokenizer.pt").rename(folder / settings["checkpoint"])  # fnlp/AnyGPT-speech-modules names it ckpt.dev
        rel("soundstorm").parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_soundstorm(SoundStorm(SoundStormConfig(**TINY_STORM)), rel("soundstorm"))
        extra["soundstorm_config"] = TINY_STORM
    elif name == "encodec_32khz":
        T.save_random_encodec_hf(_hub_snapshot(hub, settings["hub_id"]))
    elif name == "encodec_24khz":
        folder = Path(str(settings["path"]).replace("~", str(root / "home"), 1))
        T.save_random_encodec(folder, "24khz")
    elif name == "janus-vq":
        T.save_random_janus_vq(rel("path"), num_patches=24, num_embeddings=16384)
    elif name == "seed2":
        from anygpt.modality.seed2 import Seed2Config, Seed2Quantizer, save_seed2

        torch.manual_seed(0)
        rel("checkpoint").parent.mkdir(parents=True, exist_ok=True)
        save_seed2(Seed2Quantizer(Seed2Config.from_dict(TINY_SEED2)), rel("checkpoint"))
        T.save_random_unclip(rel("unclip_dir"), TINY_SEED2["embed_dim"])
        extra["architecture"] = TINY_SEED2
    else:  # pragma: no cover - test_every_shipped_card_has_a_real_layout_here fails first
        raise AssertionError(f"no published layout for card {name}")
    card = cards / src.name
    text = src.read_text()
    if extra:  # sizes only: everything else is the card as shipped
        text += "\n" + yaml.safe_dump(extra)
    card.write_text(text)
    return card


def span_errors(reply: list[int], layout, modality: str, real: tuple) -> list[str]:
    """An independent check of one forced reply against the published layout."""
    start, end, first = layout.start_id(modality), layout.end_id(modality), layout.code_range(modality).start
    if not reply or reply[0] != start:
        return [f"reply does not open a {modality} span: {reply[:3]}"]
    if end not in reply:
        return [f"{modality} span never closed ({len(reply)} ids)"]
    codes = [t - first for t in reply[1 : reply.index(end)]]
    errs = [f"{len(reply) - reply.index(end) - 1} id(s) after the end marker"] if reply[-1] != end else []
    if not codes:
        errs.append("empty span")
    kind = real[0]
    n_codes = real[1] * real[2] if kind == "frames" else real[1]
    errs += [f"code {c} outside [0, {n_codes})" for c in codes if not 0 <= c < n_codes]
    if kind == "fixed" and len(codes) != real[2]:
        errs.append(f"{len(codes)} codes, the image needs exactly {real[2]}")
    if kind == "frames":
        layers, size = real[1], real[2]
        if len(codes) % layers:
            errs.append(f"span ends mid-frame: {len(codes)} codes, {layers} layers")
        errs += [f"position {p}: code {c} is in layer {c // size}, the frame wants layer {p % layers}"
                 for p, c in enumerate(codes) if c // size != p % layers]
    return errs


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(REAL_LAYOUT)])
def test_constrained_generation_through_the_shipped_card(name, tmp_path, monkeypatch, shared_bundle):
    import soundfile as sf
    from PIL import Image

    from anygpt.inference.generation import build_prompt_ids, generate_batch, make_processor
    from anygpt.inference.settings import GenerationSettings
    from anygpt.modality.base import load_card, load_tokenizer
    from anygpt.jobs.detokenize_media import _Writer, decode_one

    card = install_card(name, tmp_path, monkeypatch)
    modality, real = load_card(card).modality, REAL_LAYOUT[name]
    bundle = shared_bundle
    tok = load_tokenizer(card, device="cpu")  # the card, as shipped
    bundle.tokenizers = {modality: tok}
    layout = bundle.layout
    assert tok.code_layout.n_codes <= len(layout.code_range(modality))
    n_new = real[2] + 1 if real[0] == "fixed" else 25  # an image whole; audio cut by the budget, then closed
    prompts = [build_prompt_ids(bundle, t, output_modality=modality) for t in ("a red circle", "say hello")]
    replies = generate_batch(bundle, prompts, modality, GenerationSettings(max_new_tokens=n_new, temperature=2.0, top_k=0), seed=3)
    for r in replies:
        assert not span_errors(r, layout, modality, real), span_errors(r, layout, modality, real)

    # where the layout leaves the model free, the constraint does too (the bug was SpeechTokenizer
    # spans held to 8 layer slots of 128 codes, closable only after 8 codes)
    proc, first = make_processor(bundle, modality), layout.code_range(modality).start
    after3 = proc.allowed(torch.tensor([prompts[0] + [first + 1] * 3]))[0]  # three codes into the span
    allowed = set(after3.nonzero().flatten().tolist())
    if real[0] == "stream":
        assert allowed == set(range(first, first + real[1])) | {layout.end_id(modality)}
    elif real[0] == "frames":  # mid-frame: layer 3's codes only (or layer 3 of 8), no end
        assert allowed == set(range(first + 3 * real[2], first + 4 * real[2]))

    writer = _Writer(tmp_path / "out")
    for i, r in enumerate(replies[:1]):  # decoding is the slow part; the layout checks covered every reply
        codes = layout.split_ids(r)[0][1]
        item = decode_one(tok, codes, f"{name}-{i}", writer)
        assert item.path is not None, item.warnings
        assert not [w for w in item.warnings if "repaired" in w or "outside" in w or "expected" in w], item.warnings
        if modality == "image":
            with Image.open(item.path) as im:
                assert im.mode == "RGB" and min(im.size) >= 16
        else:  # every code decoded: the file lasts as long as the span
            info = sf.info(item.path)
            assert info.samplerate == tok.sample_rate
            assert abs(info.duration - len(codes) / tok.frames_per_second) < 0.05, (info.duration, len(codes))
