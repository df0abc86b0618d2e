"""The vocabulary layer: :class:`VocabLayout` (added tokens and id ranges, in :mod:`.layout`)
and the base text tokenizer it grows (:mod:`.text_tokenizer`). Import from here."""

from anygpt.vocab.layout import (
    IGNORE_INDEX, IMAGE_PREFIX, LAYOUT_FILE, MODALITIES, MUSIC_PREFIX, PROFILES, SPEECH_PREFIX, ModalitySpec, TokenStringError,
    VocabLayout,
)
from anygpt.vocab.text_tokenizer import load_base_tokenizer, sentencepiece_tokenizer, text_coverage

__all__ = ["IGNORE_INDEX", "IMAGE_PREFIX", "LAYOUT_FILE", "MODALITIES", "MUSIC_PREFIX", "PROFILES", "SPEECH_PREFIX", "ModalitySpec",
           "TokenStringError", "VocabLayout", "load_base_tokenizer", "sentencepiece_tokenizer", "text_coverage"]
