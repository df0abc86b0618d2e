"""Tiny copies of the paper's benchmark data sets in their published layouts, and random-weight
judge models saved the way their hub repositories ship them (``save_pretrained`` of tiny configs
with real processor files), for tests/test_eval_benchmarks.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


# ---------------------------------------------------------------------------- data sets

def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def write_coco(root: Path, n_test: int = 3) -> Path:
    """``dataset_coco.json`` (Karpathy) + ``val2014/*.jpg`` + ``annotations/captions_val2014.json``."""
    from PIL import Image

    (root / "val2014").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    colours = ["red", "blue", "green", "yellow", "white"]
    images, coco_images, anns = [], [], []
    sentid = 0
    for i in range(n_test + 2):
        cocoid = 391895 + i
        name = f"COCO_val2014_{cocoid:012d}.jpg"
        c = colours[i % len(colours)]
        Image.new("RGB", (40, 30), c).save(root / "val2014" / name, format="JPEG")
        raws = [f"A {c} square on a table.", f"a {c} box sitting on the table", f"There is a {c} object here!"]
        sents = [{"tokens": r.lower().strip(".!").split(), "raw": r, "imgid": i, "sentid": sentid + k} for k, r in enumerate(raws)]
        images.append({"filepath": "val2014", "sentids": [s["sentid"] for s in sents], "filename": name, "imgid": i,
                       "split": "test" if i < n_test else ("val" if i == n_test else "restval"), "sentences": sents, "cocoid": cocoid})
        coco_images.append({"license": 1, "file_name": name, "height": 30, "width": 40, "id": cocoid})
        anns += [{"image_id": cocoid, "id": 1000 + sentid + k, "caption": r} for k, r in enumerate(raws)]
        sentid += len(raws)
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(
        {"info": {}, "licenses": [], "images": coco_images, "annotations": anns}))
    return root


def write_librispeech(root: Path, n_per_chapter: int | None = None) -> Path:
    """``LibriSpeech/test-clean/<spk>/<chapter>/{<id>.flac, <spk>-<chapter>.trans.txt}``: 2 + 1
    utterances, or ``n_per_chapter`` in each of the two chapters."""
    import soundfile as sf

    texts = {("1089", "134686"): ["HE HOPED THERE WOULD BE STEW FOR DINNER", "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM"],
             ("121", "121726"): ["ALSO A POPULAR CONTRIVANCE"]}
    if n_per_chapter:
        texts = {k: [f"{v[0]} {j}" for j in range(n_per_chapter)] for k, v in texts.items()}
    for (spk, ch), lines in texts.items():
        d = root / "LibriSpeech" / "test-clean" / spk / ch
        d.mkdir(parents=True, exist_ok=True)
        rows = []
        for k, t in enumerate(lines):
            uid = f"{spk}-{ch}-{k:04d}"
            sf.write(str(d / f"{uid}.flac"), _tone(200 + 50 * k, 0.5, 16000), 16000, format="FLAC")
            rows.append(f"{uid} {t}")
        (d / f"{spk}-{ch}.trans.txt").write_text("\n".join(rows) + "\n")
    return root / "LibriSpeech"


def write_vctk(root: Path) -> Path:
    """``txt/pXXX/pXXX_NNN.txt`` + ``wav48_silence_trimmed/pXXX/pXXX_NNN_mic1.flac`` (48 kHz)."""
    import soundfile as sf

    lines = {"p225": ["Please call Stella.", "Ask her to bring these things with her from the store.", "Six spoons of fresh snow peas."],
             "p226": ["Please call Stella.", "We also need a small plastic snake."]}
    for spk, ts in lines.items():
        (root / "txt" / spk).mkdir(parents=True, exist_ok=True)
        (root / "wav48_silence_trimmed" / spk).mkdir(parents=True, exist_ok=True)
        for k, t in enumerate(ts, 1):
            uid = f"{spk}_{k:03d}"
            (root / "txt" / spk / f"{uid}.txt").write_text(t + "\n")
            secs = 3.5 if k == 1 else 1.0
            for mic in ("mic1", "mic2"):
                sf.write(str(root / "wav48_silence_trimmed" / spk / f"{uid}_{mic}.flac"), _tone(150 + 40 * k, secs, 48000), 48000, format="FLAC")
    return root


MUSICCAPS_FIELDS = ["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
                    "is_balanced_subset", "is_audioset_eval"]


def write_musiccaps(root: Path) -> Path:
    """``musiccaps-public.csv`` + ``music_data/<ytid>.wav`` 10 s clips (one eval row without a clip,
    one non-eval row)."""
    import soundfile as sf

    rows = [("-0Gj8-vB1q4", "The low quality recording features a slow piano melody.", True, True),
            ("-0SdAVK79lg", "This song features an electric guitar playing a fast riff.", True, True),
            ("-0vPFx-wRRI", "A calm flute solo with soft percussion.", True, False),
            ("-1LrH01Ei1w", "An orchestra plays a dramatic theme.", False, True)]
    (root / "music_data").mkdir(parents=True, exist_ok=True)
    with open(root / "musiccaps-public.csv", "w", newline="") as f:
        w = csv.DictWriter(f, MUSICCAPS_FIELDS)
        w.writeheader()
        for k, (ytid, cap, ev, clip) in enumerate(rows):
            w.writerow({"ytid": ytid, "start_s": 30, "end_s": 40, "audioset_positive_labels": "/m/0140xf",
                        "aspect_list": "['piano']", "caption": cap, "author_id": 4, "is_balanced_subset": False,
                        "is_audioset_eval": ev})
            if clip:
                sf.write(str(root / "music_data" / f"{ytid}.wav"), _tone(220 * (k + 1), 10.0, 44100), 44100)
    return root


# ---------------------------------------------------------------------------- judge models

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable-character map (CLIP, Whisper and RoBERTa BPE vocabularies use it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _write_bpe(d: Path, specials: list[str], word_end: bool = False, specials_first: bool = False) -> None:
    """A byte-level BPE with no merges: vocab.json + merges.txt (a real, if tiny, tokenizer)."""
    chars = list(_bytes_to_unicode().values())
    vocab = chars + ([c + "</w>" for c in chars] if word_end else [])
    vocab = {t: i for i, t in enumerate(dict.fromkeys(specials + vocab if specials_first else vocab + specials))}
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")


def save_tiny_clip(d: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    _write_bpe(d, ["<|startoftext|>", "<|endoftext|>"], word_end=True)
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    cfg = CLIPConfig(text_config={"vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": tok.bos_token_id,
                                  "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
                     vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                    "image_size": 32, "patch_size": 8},
                     projection_dim=8)
    CLIPModel(cfg).save_pretrained(str(d))
    ip = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(str(d))
    return d


def save_tiny_whisper(d: Path) -> Path:
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor,
                              WhisperTokenizer)

    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>", "<|nospeech|>",
                "<|notimestamps|>", "<|startoflm|>", "<|startofprev|>"]
    _write_bpe(d, [])
    tok = WhisperTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                           eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": specials[1:]})
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    cfg = WhisperConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=64, pad_token_id=ids["<|endoftext|>"],
                        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
                        decoder_start_token_id=ids["<|startoftranscript|>"], suppress_tokens=[], begin_suppress_tokens=[])
    model = WhisperForConditionalGeneration(cfg)
    g = model.generation_config
    g.decoder_start_token_id, g.eos_token_id, g.pad_token_id = ids["<|startoftranscript|>"], ids["<|endoftext|>"], ids["<|endoftext|>"]
    g.lang_to_id, g.task_to_id = {"<|en|>": ids["<|en|>"]}, {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    g.no_timestamps_token_id, g.is_multilingual = ids["<|notimestamps|>"], True
    model.save_pretrained(str(d))
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok).save_pretrained(str(d))
    return d


def save_tiny_wavlm(d: Path) -> Path:
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    cfg = WavLMConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                      conv_dim=(8, 8, 8, 8, 8, 8, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                      tdnn_dim=(8, 8, 8, 8, 16), xvector_output_dim=8, num_buckets=32, max_bucket_distance=100)
    WavLMForXVector(cfg).save_pretrained(str(d))
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False,
                             return_attention_mask=True).save_pretrained(str(d))
    return d


def save_tiny_clap(d: Path) -> Path:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    _write_bpe(d, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], specials_first=True)  # RoBERTa's ids 0-4
    tok = RobertaTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    cfg = ClapConfig(text_config={"vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "max_position_embeddings": 80, "pad_token_id": tok.pad_token_id,
                                  "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id},
                     audio_config={"depths": [1, 1], "num_attention_heads": [1, 1], "patch_embeds_hidden_size": 8,
                                   "hidden_size": 16, "window_size": 8, "spec_size": 256, "num_mel_bins": 64},
                     projection_dim=8)
    ClapModel(cfg).save_pretrained(str(d))
    # a non-fusion model, so a non-fusion feature extractor
    ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tok).save_pretrained(str(d))
    return d


def save_judges(models_dir: Path) -> Path:
    """All four, under the directory names ``anygpt eval --models-dir`` looks for."""
    save_tiny_clip(models_dir / "clip-vit-large-patch14")
    save_tiny_whisper(models_dir / "whisper-medium")
    save_tiny_wavlm(models_dir / "wavlm-base-plus-sv")
    save_tiny_clap(models_dir / "larger_clap_music")
    return models_dir
