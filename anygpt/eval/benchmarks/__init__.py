"""The AnyGPT paper's six evaluation rows as ``anygpt eval --benchmark NAME --data DIR``.

Each benchmark reads a local copy of the public data set in the layout it is published in,
decodes with the paper's settings unless overridden, scores with local judge models, and writes
its protocol, settings and metrics (with 95 % intervals, beside the paper's figures) into
``OUT/<name>.json``. See docs/evaluation.md.

=================== ================================ ============================ ===========
name                data set                         metric                       paper
=================== ================================ ============================ ===========
coco-caption        COCO 2014 Karpathy test          CIDEr                        107.5
coco-t2i            COCO 2014 val captions (subset)  CLIP score                   0.65
librispeech-asr     LibriSpeech test-clean           WER (%)                      8.5
vctk-tts            VCTK 0.92                        WER (%) / speaker similarity 8.5 / 0.77
musiccaps-caption   MusicCaps (eval split)           CLAP score                   0.11
musiccaps-t2m       MusicCaps (eval split)           CLAP score                   0.14
=================== ================================ ============================ ===========
"""

from __future__ import annotations

from anygpt.eval.benchmarks.base import Benchmark
from anygpt.eval.benchmarks.coco import CocoCaption, CocoTextToImage
from anygpt.eval.benchmarks.musiccaps import MusicCapsCaption, MusicCapsTextToMusic
from anygpt.eval.benchmarks.speech import VCTKTTS, LibriSpeechASR

BENCHMARKS: dict[str, type[Benchmark]] = {
    b.name: b for b in (CocoCaption, CocoTextToImage, LibriSpeechASR, VCTKTTS, MusicCapsCaption, MusicCapsTextToMusic)
}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``; ValueError listing the known ones otherwise."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]()
