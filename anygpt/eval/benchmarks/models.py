"""The local judge models of the paper's benchmarks, loaded through transformers from local
directories only (never downloaded), and the text normalisation and caption tokenisation the
field uses with them.

========= ============================ =================================================
kind      default directory name       what it scores
========= ============================ =================================================
clip      ``clip-vit-large-patch14``   text→image: cosine of CLIP image and text embeddings
whisper   ``whisper-medium``           TTS: transcripts of the generated speech (WER)
wavlm     ``wavlm-base-plus-sv``       TTS: speaker similarity (cosine of x-vectors)
clap      ``larger_clap_music``        music: cosine of CLAP audio and text embeddings
========= ============================ =================================================

Each is looked up at ``--<kind>-model DIR`` or else ``<--models-dir>/<default name>`` (the hub
name's last part, so ``huggingface-cli download openai/whisper-medium --local-dir
models/whisper-medium`` puts it where it is looked for). A missing directory makes the metrics
that need it ``not scored`` with the path that was looked at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anygpt.eval.benchmarks.base import NotScored

DEFAULT_NAMES = {
    "clip": "clip-vit-large-patch14",
    "whisper": "whisper-medium",
    "wavlm": "wavlm-base-plus-sv",
    "clap": "larger_clap_music",
}


class LocalModels:
    """Lazily loaded judge models: ``get(kind)`` → ``(model, processor)`` or NotScored."""

    def __init__(self, models_dir: str | os.PathLike | None = None, paths: dict[str, str | os.PathLike | None] | None = None,
                 device: str = "cpu"):
        base = Path(models_dir) if models_dir else Path("models")
        self.paths = {k: Path((paths or {}).get(k) or base / n) for k, n in DEFAULT_NAMES.items()}
        self.device = device
        self._loaded: dict[str, Any] = {}

    def describe(self) -> dict[str, dict]:
        """``{kind: {"path", "found"}}`` for the result file."""
        return {k: {"path": str(p), "found": (p / "config.json").is_file()} for k, p in self.paths.items()}

    def get(self, kind: str) -> tuple[Any, Any]:
        if kind in self._loaded:
            return self._loaded[kind]
        path = self.paths[kind]
        if not (path / "config.json").is_file():
            raise NotScored(f"no local {kind} model at {path} (pass --{kind}-model DIR or put it under --models-dir)")
        import transformers as T

        cls = {"clip": T.CLIPModel, "whisper": T.WhisperForConditionalGeneration, "wavlm": T.WavLMForXVector,
               "clap": T.ClapModel}[kind]
        proc_cls = {"clip": T.CLIPProcessor, "whisper": T.WhisperProcessor, "wavlm": T.AutoFeatureExtractor,
                    "clap": T.ClapProcessor}[kind]
        try:
            model = cls.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
            proc = proc_cls.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise NotScored(f"{path}: not a loadable {cls.__name__} directory ({str(e).splitlines()[0]})") from None
        self._loaded[kind] = (model, proc)
        return model, proc


def _on(model: Any, batch: Any) -> dict[str, Any]:
    """A processor's output as keyword tensors on the model's device."""
    return {k: v.to(model.device) for k, v in batch.items()}


def _rate_of(proc: Any) -> int:
    fe = getattr(proc, "feature_extractor", proc)  # processors wrap a feature extractor; WavLM's is one
    return int(fe.sampling_rate)


def _resampled(waves: Sequence[np.ndarray], rate: int, target: int) -> list[np.ndarray]:
    from anygpt.modality.media import resample

    return [resample(np.asarray(w, dtype=np.float32).reshape(-1), rate, target) for w in waves]


def clip_similarity(model_proc: tuple[Any, Any], images: Sequence[Any], texts: Sequence[str] | None = None,
                    other_images: Sequence[Any] | None = None) -> list[float]:
    """Per pair: cosine of CLIP embeddings of ``images`` with ``texts`` (or with ``other_images``)."""
    import torch

    model, proc = model_proc
    with torch.inference_mode():
        v = model.get_image_features(**_on(model, proc(images=[im.convert("RGB") for im in images], return_tensors="pt")))
        if texts is not None:
            w = model.get_text_features(**_on(model, proc(text=list(texts), return_tensors="pt", padding=True, truncation=True)))
        else:
            w = model.get_image_features(**_on(model, proc(images=[im.convert("RGB") for im in other_images], return_tensors="pt")))
    return _cosine(v, w)


def _cosine(a: Any, b: Any) -> list[float]:
    import torch

    a = a if isinstance(a, torch.Tensor) else a.pooler_output
    b = b if isinstance(b, torch.Tensor) else b.pooler_output
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).tolist()


def whisper_transcribe(model_proc: tuple[Any, Any], waves: Sequence[np.ndarray], rate: int, max_new_tokens: int = 200) -> list[str]:
    """English transcripts (greedy; language and task forced when the model knows them)."""
    import torch

    model, proc = model_proc
    target = _rate_of(proc)
    feats = proc.feature_extractor(_resampled(waves, rate, target), sampling_rate=target, return_tensors="pt")
    # the decoder's positions bound the transcript (448 in the released checkpoints); a few go to the prefix
    kw: dict[str, Any] = {"max_new_tokens": min(max_new_tokens, int(model.config.max_target_positions) - 8)}
    if getattr(model.generation_config, "lang_to_id", None):  # multilingual checkpoints: force English transcription
        kw.update(language="en", task="transcribe")
    with torch.inference_mode():
        ids = model.generate(feats.input_features.to(model.device), **kw)
    return [t.strip() for t in proc.batch_decode(ids, skip_special_tokens=True)]


def speaker_similarity(model_proc: tuple[Any, Any], waves: Sequence[np.ndarray], rate: int,
                       references: Sequence[np.ndarray], ref_rate: int) -> list[float | None]:
    """Per pair: cosine of the x-vector embeddings (the WavLMForXVector model card's recipe);
    None for a clip too short to pool."""
    import torch

    model, fe = model_proc
    target = _rate_of(fe)

    def embed(w: np.ndarray) -> Any:  # one at a time: no padding inside the x-vector statistics pooling
        inp = fe([w], sampling_rate=target, return_tensors="pt")
        return model(**_on(model, inp)).embeddings

    out = []
    with torch.inference_mode():
        for w, r in zip(_resampled(waves, rate, target), _resampled(references, ref_rate, target)):
            v = _cosine(embed(w), embed(r))[0]
            out.append(None if v != v else v)  # NaN: too short for the model's pooling, so no score
    return out


def clap_similarity(model_proc: tuple[Any, Any], waves: Sequence[np.ndarray], rate: int, texts: Sequence[str]) -> list[float]:
    """Per pair: cosine of CLAP audio and text embeddings."""
    import torch

    model, proc = model_proc
    target = _rate_of(proc)
    with torch.inference_mode():
        a = model.get_audio_features(**_on(model, proc.feature_extractor(_resampled(waves, rate, target), sampling_rate=target,
                                                                         return_tensors="pt")))
        t = model.get_text_features(**_on(model, proc.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True)))
    return _cosine(a, t)


# ---------------------------------------------------------------------------- text

_NORMALIZER = None


def whisper_english_normalize(text: str) -> str:
    """Whisper's ``EnglishTextNormalizer`` (the one the field applies before WER with Whisper),
    as shipped by the ``whisper-normalizer`` package together with its ``english.json``
    British→American spelling map."""
    global _NORMALIZER
    if _NORMALIZER is None:
        try:
            from whisper_normalizer.english import EnglishTextNormalizer
        except ImportError:
            raise NotScored("the Whisper English normaliser needs `pip install whisper-normalizer`") from None
        _NORMALIZER = EnglishTextNormalizer()
    return _NORMALIZER(text)


def ptb_tokenize(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """coco-caption's Stanford PTB tokenisation (lowercased, punctuation removed), via
    pycocoevalcap's ``PTBTokenizer`` (a Java program)."""
    try:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError:
        raise NotScored("CIDEr with the standard tokenisation needs `pip install pycocoevalcap`") from None
    if shutil.which("java") is None:
        raise NotScored("pycocoevalcap's PTB tokenizer needs Java (`java` is not on PATH)")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
