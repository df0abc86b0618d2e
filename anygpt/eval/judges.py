"""Optional judge models for ``anygpt eval`` (local directories only, never downloaded): an ASR
model for TTS, CLIP for text→image, CLAP for text→music."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def external_asr(model_dir: str | os.PathLike, waves: Sequence[np.ndarray], sample_rate: int) -> list[str]:
    """Transcripts from a local transformers ASR model directory (e.g. Whisper); never downloads."""
    from transformers import pipeline

    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{model_dir}: --asr-model must be a local model directory")
    asr = pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    return [asr({"raw": np.asarray(w, dtype=np.float32), "sampling_rate": sample_rate})["text"] for w in waves]


def clip_score(model_dir: str | os.PathLike, texts: Sequence[str], images: Sequence[Any]) -> float:
    """Mean CLIPScore (100 · max(cos, 0)) with a local CLIP directory; never downloads."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{model_dir}: --clip-model must be a local model directory")
    from anygpt.utils import refuse_remote_code

    refuse_remote_code(model_dir)
    model = CLIPModel.from_pretrained(str(model_dir), trust_remote_code=False).eval()
    proc = CLIPProcessor.from_pretrained(str(model_dir), trust_remote_code=False)
    with torch.inference_mode():
        inp = proc(text=list(texts), images=[im.convert("RGB") for im in images], return_tensors="pt", padding=True, truncation=True)
        out = model(**inp)
        t = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        v = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        return float((100 * (t * v).sum(-1).clamp(min=0)).mean())


def clap_score(model_dir: str | os.PathLike, texts: Sequence[str], waves: Sequence[np.ndarray], sample_rate: int) -> list[float]:
    """CLAPScore (100 · max(cos, 0)) per (text, waveform) pair with a local CLAP directory; audio is
    resampled to the model's rate; never downloads."""
    import torch
    from transformers import ClapModel, ClapProcessor

    from anygpt.modality.media import resample

    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{model_dir}: --clap-model must be a local model directory")
    model = ClapModel.from_pretrained(str(model_dir)).eval()
    proc = ClapProcessor.from_pretrained(str(model_dir))
    rate = int(proc.feature_extractor.sampling_rate)
    audio = [resample(np.asarray(w, dtype=np.float32).reshape(-1), sample_rate, rate) for w in waves]
    with torch.inference_mode():
        out = model(**proc.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True),
                    **proc.feature_extractor(audio, sampling_rate=rate, return_tensors="pt"))
        t = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        a = torch.nn.functional.normalize(out.audio_embeds, dim=-1)
        return (100 * (t * a).sum(-1).clamp(min=0)).tolist()
