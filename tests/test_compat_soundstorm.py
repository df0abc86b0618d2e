"""SoundStorm: the MLS checkpoint's layout, loading, and filling RVQ layers 1–7 for a voice prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anygpt.modality.soundstorm import (
    SoundStorm, SoundStormConfig, load_soundstorm, prompt_codes_from_audio, save_soundstorm, semantic_to_acoustic,
)

TINY = dict(dim=32, depth=2, heads=2, dim_head=16, conv_kernel_size=7)


@pytest.fixture(scope="module")
def speech_tokenizer():
    """A randomly initialised SpeechTokenizer (8 RVQ layers × 1024, hop 320, 16 kHz), small widths."""
    from speechtokenizer.model import SpeechTokenizer

    torch.manual_seed(0)
    cfg = {"n_filters": 8, "strides": [8, 5, 4, 2], "dimension": 64, "semantic_dimension": 32, "bidirectional": True,
           "dilation_base": 2, "residual_kernel_size": 3, "n_residual_layers": 1, "lstm_layers": 1, "activation": "ELU",
           "sample_rate": 16000, "codebook_size": 1024, "n_q": 8}
    return SpeechTokenizer(cfg).eval()


@pytest.fixture(scope="module")
def storm_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("storm") / "speechtokenizer_soundstorm_mls.pt"
    save_soundstorm(SoundStorm(SoundStormConfig(**TINY)), path)
    return path


def test_full_size_layout_matches_the_published_checkpoint():
    with torch.device("meta"):
        sd = SoundStorm().state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["semantic_token_emb.weight"] == (1024, 1024)
    assert shapes["net.code_embeds.weight"] == (7 * 1025, 1024)
    assert shapes["net.heads.0.weight"] == (7 * 1024, 1024)
    assert shapes["net.to_logits.0.weight"] == (1024,)
    assert shapes["net.to_logits.2.weight"] == (7, 1024, 1024)
    assert shapes["net.to_logits.2.bias"] == (1, 1, 7, 1024)
    layer = "net.conformer.layers.11."
    assert shapes[layer + "attn.fn.to_q.weight"] == (1024, 1024)  # 8 heads × 128
    assert shapes[layer + "attn.fn.to_kv.weight"] == (2048, 1024)
    assert shapes[layer + "ff1.fn.fn.net.0.weight"] == (4096, 1024)
    assert shapes[layer + "conv.net.2.weight"] == (4096, 1024, 1)
    assert shapes[layer + "conv.net.4.conv.weight"] == (2048, 1, 31)
    assert shapes[layer + "conv.net.6.gamma"] == (1, 2048, 1)
    assert "net.conformer.layers.12.post_norm.weight" not in shapes
    assert not any("inv_freq" in k or "quantizer_offsets" in k for k in shapes)  # non-persistent buffers


def test_load_is_strict_and_names_the_file(storm_file, tmp_path):
    model = load_soundstorm(storm_file, TINY)
    saved = torch.load(storm_file, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"speechtokenizer_soundstorm_mls\.pt: not a SoundStorm checkpoint"):
        load_soundstorm(storm_file, {**TINY, "depth": 3})


def test_fills_seven_layers_for_a_voice_prompt(storm_file, speech_tokenizer):
    storm = load_soundstorm(storm_file, TINY)
    rng = np.random.default_rng(0)
    prompt_wav = rng.normal(0, 0.1, 2 * 24000).astype(np.float32)  # 2 s at 24 kHz: resampled, trimmed to 1 s
    prompt = prompt_codes_from_audio(speech_tokenizer, prompt_wav, 24000, max_seconds=1.0)
    assert prompt.shape == (8, 50)
    semantic = rng.integers(0, 1024, 20)
    codes = semantic_to_acoustic(storm, speech_tokenizer, semantic, prompt, steps=3)
    assert codes.shape == (8, 20) and codes.dtype == np.int64
    assert np.array_equal(codes[0], semantic)
    assert codes[1:].min() >= 0 and codes[1:].max() < 1024  # every mask filled with a real code
    assert np.array_equal(codes, semantic_to_acoustic(storm, speech_tokenizer, semantic, prompt, steps=3))
    other = semantic_to_acoustic(storm, speech_tokenizer, semantic, (prompt + 1) % 1024, steps=3)
    assert not np.array_equal(codes[1:], other[1:])  # the prompt conditions the acoustic layers
    wav = speech_tokenizer.decode(torch.from_numpy(codes)[:, None, :])
    assert wav.shape == (1, 1, 20 * 320)
    unprompted = semantic_to_acoustic(storm, speech_tokenizer, semantic, None, steps=3)
    assert unprompted.shape == (8, 20) and np.array_equal(unprompted[0], semantic)


def test_rejects_mismatched_inputs(storm_file, speech_tokenizer):
    storm = load_soundstorm(storm_file, TINY)
    with pytest.raises(ValueError, match=r"\[8, T\]"):
        semantic_to_acoustic(storm, speech_tokenizer, [1, 2, 3], np.zeros((4, 10), np.int64))
    with pytest.raises(ValueError, match="semantic codes"):
        semantic_to_acoustic(storm, speech_tokenizer, [1, 2, 5000])


def test_voice_decoder_from_a_speech_card_and_a_prompt_file(storm_file, speech_tokenizer, tmp_path):
    """What the speech backend calls: card → VoiceDecoder; layer-0 codes + prompt file → 8 layers."""
    import soundfile as sf

    from anygpt.modality.base import MediaError, TokenizerCard
    from anygpt.modality.soundstorm import VoiceDecoder

    assert VoiceDecoder.from_card(TokenizerCard("speechtokenizer", "speech", tmp_path, {})) is None
    card = TokenizerCard("speechtokenizer", "speech", storm_file.parent,
                         {"soundstorm": storm_file.name, "soundstorm_config": TINY, "soundstorm_steps": 2, "voice_prompt_seconds": 0.5})
    voice = VoiceDecoder.from_card(card)
    assert (voice.steps, voice.prompt_seconds) == (2, 0.5)
    stereo = np.random.default_rng(1).normal(0, 0.1, (22050, 2)).astype(np.float32)  # 1 s stereo at 22.05 kHz
    sf.write(tmp_path / "voice.wav", stereo, 22050)
    codes = voice.all_layers(speech_tokenizer, [3, 1, 4, 1, 5], tmp_path / "voice.wav")
    assert codes.shape == (8, 5) and list(codes[0]) == [3, 1, 4, 1, 5] and codes.max() < 1024
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(MediaError, match=r"bad\.wav: not a readable audio file"):
        voice.all_layers(speech_tokenizer, [3], tmp_path / "bad.wav")


def test_speech_backend_decodes_voice_prompted_through_its_card(storm_file, tmp_path):
    """`speechtokenizer` card + `soundstorm` key: layer-0 codes decode with layers 1-7 filled in."""
    import shutil

    import soundfile as sf
    import yaml

    from anygpt.modality.base import load_tokenizer
    from anygpt.modality.testing import save_random_speechtokenizer

    folder = tmp_path / "speech"
    save_random_speechtokenizer(folder)
    shutil.copy(storm_file, folder / "soundstorm.pt")
    (folder / "card.yaml").write_text(yaml.safe_dump({
        "backend": "speechtokenizer", "modality": "speech", "soundstorm": "soundstorm.pt",
        "soundstorm_config": TINY, "soundstorm_steps": 2, "voice_prompt_seconds": 0.5}))
    tok = load_tokenizer(folder)
    assert tok.voice is not None
    sf.write(tmp_path / "voice.wav", np.random.default_rng(2).normal(0, 0.1, 8000).astype(np.float32), 16000)
    wav = tok.decode([3, 1, 4, 1, 5, 9], voice_prompt=tmp_path / "voice.wav")
    assert wav.ndim == 1 and len(wav) == 6 * tok.hop and np.isfinite(wav).all()
