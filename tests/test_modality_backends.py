"""Each codec backend: save a random model in its published layout → load via a card →
encode → decode, with shapes, rates, determinism and the fingerprint; plus the registry."""

from __future__ import annotations


import numpy as np
import pytest
import yaml

from anygpt.modality import testing as T
from anygpt.modality.base import CodeLayout, backend_names, get_backend, load_tokenizer


def card(tmp_path, backend, modality, **settings):
    """A card YAML beside (not inside) the checkpoint, with paths relative to the card."""
    path = tmp_path / f"{backend}.yaml"
    path.write_text(yaml.safe_dump({"backend": backend, "modality": modality, **settings}))
    return path


def test_registry_lists_backends_and_rejects_unknown(tmp_path):
    names = backend_names()
    for n in ("speechtokenizer", "encodec-hf", "encodec", "janus-vq", "demo-image", "demo-speech", "demo-music"):
        assert n in names
    with pytest.raises(ValueError, match="unknown tokenizer backend 'nope'; known: .*demo-image.*speechtokenizer"):
        get_backend("nope")
    with pytest.raises(ValueError, match="backend demo-image is for image, card says speech"):
        load_tokenizer(card(tmp_path, "demo-image", "speech"))
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        load_tokenizer(card(tmp_path, "janus-vq", "image", path="missing_dir"))


def check_audio_roundtrip(tok, wavs, expect_tokens, min_agree=0.8):
    a = tok.encode(wavs)
    b = tok.encode(wavs)
    assert [len(c) for c in a] == expect_tokens
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # deterministic
    single = tok.encode([wavs[1]])[0]
    # zero padding in a batch reaches only the last frames of a shorter item through the
    # encoder's receptive field (all of it for a bidirectional LSTM, hence min_agree)
    assert single.shape == a[1].shape and (single == a[1]).mean() >= min_agree
    assert all(c.min() >= 0 and c.max() < tok.codebook_size for c in a)
    assert len(set(a[0].tolist())) > 3  # sample-initialised codebooks give varied codes
    wav = tok.decode(a[1])
    assert wav.dtype == np.float32 and wav.ndim == 1 and np.isfinite(wav).all()
    return a, wav


def check_short_spans(tok, lengths=(0, 1, 2, 3)):
    """Any span a model can emit (issue 15: a 1-code speech reply crashed chat) decodes to a finite
    waveform, with a warning where codes had to be repaired, never an exception."""
    for n in lengths:
        wav = tok.decode(np.arange(n, dtype=np.int64) % tok.codebook_size)
        assert wav.ndim == 1 and wav.size > 0 and np.isfinite(wav).all(), n


def test_speechtokenizer_published_layout(tmp_path, logged_warning):
    T.save_random_speechtokenizer(tmp_path / "speechtokenizer_hubert_avg")
    tok = load_tokenizer(card(tmp_path, "speechtokenizer", "speech", path="speechtokenizer_hubert_avg",
                              config="config.json", checkpoint="SpeechTokenizer.pt"))
    assert (tok.sample_rate, tok.frames_per_second, tok.codebook_size) == (16000, 50, 1024)
    # the codec has 8 RVQ layers, but the LLM sequence holds layer 0 only: one stream of 1024 codes
    assert tok.n_q == 8 and tok.code_layout == CodeLayout(1, 1024, None)
    wavs = T.audio_corpus(16000, 2, seed=7)
    wavs[1] = wavs[1][:8000]
    codes, wav = check_audio_roundtrip(tok, wavs, [50, 25], min_agree=0.5)
    assert wav.shape == (25 * 320,)
    all_layers = tok.model.encode(__import__("torch").from_numpy(wavs[0])[None, None])[:, 0].numpy()
    assert all_layers.shape == (8, 50) and np.array_equal(all_layers[0], codes[0])
    assert tok.decode(all_layers).shape == (50 * 320,)  # all 8 layers decode too
    with logged_warning("dropped 1 code"):
        assert tok.decode(np.array([1, 2, 5000, 3])).shape == (3 * 320,)
    assert tok.fingerprint == load_tokenizer(tmp_path / "speechtokenizer.yaml").fingerprint
    check_short_spans(tok)


def test_encodec_hf_published_layout_and_flattening(tmp_path, logged_warning):
    T.save_random_encodec_hf(tmp_path / "encodec_32khz")
    assert {p.name for p in (tmp_path / "encodec_32khz").iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    tok = load_tokenizer(card(tmp_path, "encodec-hf", "music", path="encodec_32khz"))
    assert (tok.n_q, tok.layer_size, tok.codebook_size, tok.frames_per_second) == (4, 2048, 8192, 200)
    assert tok.code_layout == CodeLayout(4, 2048, None)  # all four layers, frame-major, in the sequence
    wavs = T.audio_corpus(32000, 2, seed=3)
    wavs[1] = wavs[1][:16000]
    codes, wav = check_audio_roundtrip(tok, wavs, [200, 100])
    slots = codes[0].reshape(-1, 4) // 2048
    assert (slots == np.arange(4)).all()  # frame-major with per-layer offsets, as the reference
    assert wav.shape == (25 * 640,)
    broken = np.concatenate([codes[1][:6], codes[1][8:]])  # a frame loses its last two tokens
    with logged_warning("repaired 2 token"):
        assert tok.decode(broken).shape == (24 * 640,)
    check_short_spans(tok)


def test_encodec_package_checkpoint_file(tmp_path):
    ckpt = T.save_random_encodec(tmp_path / "ckpts", "24khz")
    assert ckpt.name == "encodec_24khz-d7cc33bc.th"
    tok = load_tokenizer(card(tmp_path, "encodec", "music", path="ckpts", variant="24khz", bandwidth=3.0))
    assert (tok.sample_rate, tok.n_q, tok.layer_size, tok.frame_rate) == (24000, 4, 1024, 75)
    wavs = T.audio_corpus(24000, 2, seed=4)
    wavs[1] = wavs[1][:12000]
    codes, wav = check_audio_roundtrip(tok, wavs, [300, 152])
    assert wav.shape == (38 * 320,)
    other = load_tokenizer(card(tmp_path, "encodec", "music", path="ckpts", variant="24khz", bandwidth=6.0))
    assert other.n_q == 8 and other.fingerprint != tok.fingerprint  # bandwidth changes codes
    check_short_spans(tok)


def test_janus_vq_save_pretrained_layout(tmp_path, logged_warning):
    from PIL import Image

    T.save_random_janus_vq(tmp_path / "janus_vq", num_patches=4)
    tok = load_tokenizer(card(tmp_path, "janus-vq", "image", path="janus_vq", resize_policy="center-crop"))
    assert (tok.image_size, tok.tokens_per_item, tok.codebook_size) == (64, 16, 1024)
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 255, (90, 60, 3), dtype=np.uint8)), Image.new("L", (64, 64), 128)]
    a, b = tok.encode(ims), tok.encode(ims)
    assert [c.shape for c in a] == [(16,), (16,)] and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert tok.decode(a[0]).size == (64, 64)
    with logged_warning("expected 16"):
        assert tok.decode(a[0][:10]).size == (64, 64)


def test_fingerprint_changes_with_weights(tmp_path):
    T.save_random_janus_vq(tmp_path / "a", seed=0)
    T.save_random_janus_vq(tmp_path / "b", seed=1)
    fa = load_tokenizer(card(tmp_path, "janus-vq", "image", path="a")).fingerprint
    fb = load_tokenizer(card(tmp_path, "janus-vq", "image", path="b")).fingerprint
    assert fa != fb and len(fa) == 16


def test_janus_vq_from_full_janus_checkpoint(tmp_path):
    """Janus-Pro publishes the VQ inside the whole model: only model.vqmodel.* is read."""
    import torch
    from transformers import JanusForConditionalGeneration

    T.save_random_janus_full(tmp_path / "janus_pro")
    tok = load_tokenizer(card(tmp_path, "janus-vq", "image", path="janus_pro"))
    full = JanusForConditionalGeneration.from_pretrained(str(tmp_path / "janus_pro"))
    assert (tok.image_size, tok.tokens_per_item, tok.codebook_size) == (32, 4, 64)
    for k, v in full.model.vqmodel.state_dict().items():
        assert torch.equal(tok.model.state_dict()[k], v), k
    from PIL import Image

    assert tok.decode(tok.encode([Image.new("RGB", (32, 32), (200, 10, 10))])[0]).size == (32, 32)


@pytest.mark.slow
def test_encodec_48khz_stereo_segments(tmp_path):
    T.save_random_encodec(tmp_path / "ckpts", "48khz")
    tok = load_tokenizer(card(tmp_path, "encodec", "music", path="ckpts", variant="48khz", bandwidth=3.0))
    assert (tok.sample_rate, tok.channels, tok.frame_rate, tok.n_q) == (48000, 2, 150, 2)
    wav = T.audio_corpus(48000, 1, seconds=1.5, seed=2)[0]
    codes = tok.encode([wav])[0]
    # two overlapping 1 s segments (stride 0.99 s): 150 + ceil(0.51 s * 150) = 227 frames, 2 layers
    assert codes.shape == (2 * 227,)
    assert abs(tok.decode(codes).shape[0] - 72000) < 320


def test_one_repair_policy_for_single_stream_codes(logged_warning):
    """base.repair_codes, which every single-stream backend's decode applies: fixed-length items
    keep positions (bad codes → filler, then padded or cut), free-length streams drop bad codes."""
    from anygpt.modality.base import repair_codes

    image, stream = CodeLayout(1, 8, 4), CodeLayout(1, 8)
    with logged_warning(r"img: 2 code\(s\) outside \[0, 8\) replaced with 3"):
        assert repair_codes([1, 9, -1, 2], image, "img", filler=3).tolist() == [1, 3, 3, 2]
    with logged_warning("got 2 codes, expected 4; padded with 0"):
        assert repair_codes([5, 6], image, "img").tolist() == [5, 6, 0, 0]
    with logged_warning("got 5 codes, expected 4; truncated"):
        assert repair_codes([1, 2, 3, 4, 5], image, "img").tolist() == [1, 2, 3, 4]
    with logged_warning(r"audio: dropped 2 code\(s\) outside \[0, 8\)"):
        assert repair_codes(np.array([7, 8, 0, 100]), stream, "audio").tolist() == [7, 0]
    assert repair_codes([0, 7], stream, "audio").dtype == np.int64
    with pytest.raises(ValueError, match="2 interleaved layers"):
        repair_codes([0, 8], CodeLayout(2, 8), "music")


def test_voice_prompt_goes_only_to_a_backend_that_declares_it(speech_tok_dir, tmp_path, monkeypatch, logged_warning):
    """chat.save_decoded reads ModalityTokenizer.takes_voice_prompt (it once inspected decode's
    signature): a backend that declares it gets the prompt, one that does not gets a warning."""
    from anygpt.inference.chat import save_decoded
    from anygpt.modality.speech import SpeechTokenizerBackend

    assert SpeechTokenizerBackend.takes_voice_prompt and not get_backend("demo-speech").takes_voice_prompt
    tok = load_tokenizer(speech_tok_dir)
    with logged_warning("takes no voice prompt; v.wav ignored"):
        out = save_decoded(tok, [1, 2, 3], tmp_path / "a.wav", voice_prompt="v.wav")
    assert out.stat().st_size > 44
    seen = []
    monkeypatch.setattr(type(tok), "takes_voice_prompt", True)
    monkeypatch.setattr(type(tok), "decode", lambda self, codes, voice_prompt=None: seen.append(voice_prompt) or np.zeros(640, np.float32))
    save_decoded(tok, [1, 2, 3], tmp_path / "b.wav", voice_prompt="v.wav")
    assert seen == ["v.wav"]
