"""LibriSpeech test-clean ASR (WER) and VCTK zero-shot TTS (WER through a local Whisper, speaker
similarity through a local WavLM x-vector model).

Published layouts read here:

- LibriSpeech: ``DIR/test-clean/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` (lines
  ``<utterance id> <TRANSCRIPT>``) beside ``<utterance id>.flac``; ``DIR`` may also be the
  ``LibriSpeech`` folder's parent-free ``test-clean`` itself.
- VCTK 0.92: ``DIR/txt/pXXX/pXXX_NNN.txt`` and ``DIR/wav48_silence_trimmed/pXXX/pXXX_NNN_mic1.flac``
  (48 kHz). Per speaker, the first utterance (by id) that lasts at least 3 s is cut to 3 s and is
  that speaker's voice prompt; every other utterance with text and audio is an item. Items are
  ordered round-robin over speakers, so ``--limit`` keeps the speakers balanced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from anygpt.eval.benchmarks.base import (
    Benchmark, Item, NotScored, ReadResult, Scorer, bootstrap_mean, bootstrap_ratio, item_scores, metric_or_reason,
    per_rate, read_wave, require_dir,
)
from anygpt.eval.benchmarks.models import speaker_similarity, whisper_english_normalize, whisper_transcribe
from anygpt.eval.metrics import edit_distance

WER_PROTOCOL = ("WER (%) = word edits / reference words over the corpus, after Whisper's EnglishTextNormalizer "
                "(package whisper-normalizer, with its english.json spelling map) on both sides; 95 % interval: "
                "bootstrap over utterances")


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """Corpus WER in percent after the Whisper English normaliser, with a bootstrap interval."""
    edits, n = [], []
    for r, h in zip(references, hypotheses):
        rw, hw = whisper_english_normalize(r).split(), whisper_english_normalize(h).split()
        edits.append(edit_distance(rw, hw) * 100.0)
        n.append(len(rw))
    return bootstrap_ratio(edits, n)


class LibriSpeechASR(Benchmark):
    name = "librispeech-asr"
    input_modality, output_modality = "speech", "text"
    paper = {"wer": 8.5}
    layout = "DIR/test-clean/<speaker>/<chapter>/{<id>.flac, <speaker>-<chapter>.trans.txt}"
    protocol = ("LibriSpeech test-clean, every utterance; transcript from the reference pretraining prompt "
                "'{instruction} {speech}'; " + WER_PROTOCOL)

    def read(self, data: Path, subset: int | None, seed: int) -> ReadResult:
        root = data / "test-clean" if (data / "test-clean").is_dir() else data
        if root == data and (data / "LibriSpeech" / "test-clean").is_dir():
            root = data / "LibriSpeech" / "test-clean"
        require_dir(root, "LibriSpeech test-clean", self.layout)
        trans = sorted(root.glob("*/*/*.trans.txt"))
        if not trans:
            raise FileNotFoundError(f"{root}: no <speaker>/<chapter>/*.trans.txt (expected {self.layout})")
        items, errors = [], []
        for t in trans:
            for k, line in enumerate(t.read_text(encoding="utf-8").splitlines(), 1):
                uid, _, text = line.strip().partition(" ")
                if not uid:
                    continue
                audio = t.parent / f"{uid}.flac"
                if not text.strip():
                    errors.append(f"{t}:{k}: no transcript")
                elif not audio.is_file():
                    errors.append(f"{audio}: listed in {t.name} but missing")
                else:
                    items.append(Item(uid, str(audio), [text.strip()]))
        return ReadResult(items, errors, str(root))

    def aggregate(self, records: Sequence[dict], scores: dict[str, dict], missing: dict[str, str]) -> dict[str, dict]:
        def wer():
            if not records:
                raise NotScored("no transcripts")
            return corpus_wer([r["references"][0] for r in records], [r["output"] for r in records])

        return {"wer": metric_or_reason(wer)}


def _transcribe(records: Sequence[dict], model: Any, out: Path) -> list[str]:
    waves = [read_wave(out / r["output_media"]) for r in records]
    return per_rate(waves, lambda w, rate, _: whisper_transcribe(model, w, rate))


def _speaker(records: Sequence[dict], model: Any, out: Path) -> list[float]:
    vals = []
    for r in records:
        gen, rate = read_wave(out / r["output_media"])
        ref, ref_rate = read_wave(r["voice_prompt"], 3.0)
        vals += speaker_similarity(model, [gen], rate, [ref], ref_rate)
    return vals


class VCTKTTS(Benchmark):
    name = "vctk-tts"
    input_modality, output_modality = "text", "speech"
    paper = {"wer": 8.5, "speaker_similarity": 0.77}
    layout = "DIR/txt/pXXX/pXXX_NNN.txt + DIR/wav48_silence_trimmed/pXXX/pXXX_NNN_mic1.flac"
    protocol = ("VCTK 0.92 zero-shot TTS: per speaker a 3 s voice prompt (the speaker's first utterance of at least "
                "3 s, mic1, cut to 3 s); every other utterance's text is spoken from '{instruction} This is input: "
                "{text}' and decoded in the prompt's voice when the speech tokenizer has a voice-prompted decoder "
                "(SoundStorm); wer: a local Whisper transcribes the generated speech, " + WER_PROTOCOL +
                "; speaker_similarity: cosine of WavLMForXVector embeddings of the generated speech and the 3 s "
                "prompt, bootstrap interval over utterances")
    scorers = {"whisper_transcript": Scorer("whisper", _transcribe), "speaker_similarity": Scorer("wavlm", _speaker)}

    def read(self, data: Path, subset: int | None, seed: int) -> ReadResult:
        import soundfile as sf

        txt = require_dir(data / "txt", "VCTK txt", self.layout)
        wav = require_dir(data / "wav48_silence_trimmed", "VCTK wav48_silence_trimmed", self.layout)
        per_speaker: list[list[Item]] = []
        errors: list[str] = []
        for spk in sorted(p for p in txt.iterdir() if p.is_dir()):
            prompt, rest = None, []
            for t in sorted(spk.glob("*.txt")):
                audio = wav / spk.name / f"{t.stem}_mic1.flac"
                if not audio.is_file():
                    errors.append(f"{audio}: missing (text {t})")
                    continue
                text = t.read_text(encoding="utf-8").strip()
                if prompt is None:
                    try:
                        long_enough = sf.info(str(audio)).duration >= 3.0
                    except RuntimeError as e:
                        errors.append(f"{audio}: not readable ({e})")
                        continue
                    if long_enough:
                        prompt = audio
                        continue
                if text:
                    rest.append((t.stem, text))
            if prompt is None:
                errors.append(f"{wav / spk.name}: no utterance of at least 3 s for a voice prompt; speaker skipped")
                continue
            per_speaker.append([Item(uid, text, [text], {"voice_prompt": str(prompt)}) for uid, text in rest])
        items = [lst[k] for k in range(max(map(len, per_speaker), default=0)) for lst in per_speaker if k < len(lst)]
        if not items:
            raise ValueError(f"{data}: no VCTK utterance with text, audio and a voice prompt")
        return ReadResult(items, errors, str(data))

    def aggregate(self, records: Sequence[dict], scores: dict[str, dict], missing: dict[str, str]) -> dict[str, dict]:
        def wer():
            if "whisper_transcript" in missing:
                raise NotScored(missing["whisper_transcript"])
            have = [r for r in records if scores.get(r["id"], {}).get("whisper_transcript") is not None]
            if not have:
                raise NotScored("no generated speech was transcribed")
            return corpus_wer([r["references"][0] for r in have], [scores[r["id"]]["whisper_transcript"] for r in have])

        return {"wer": metric_or_reason(wer),
                "speaker_similarity": metric_or_reason(lambda: bootstrap_mean(item_scores(records, scores, "speaker_similarity", missing)))}
