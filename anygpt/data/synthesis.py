"""Instruction synthesis in the reference's (AnyInstruct's) shape, resumable, offline by default.

Steps, each writing its outputs atomically and recording itself in ``manifest.json``:

1. ``topics``      meta-topics → topics                         ``topics.jsonl``
2. ``scenarios``   topic → a scenario                           ``scenarios.jsonl``
3. ``dialogues``   scenario → a text dialogue whose media are    ``dialogues.jsonl``
                   written as descriptions: ``[[image: a red star]]``, ``[[music: a slow calm piano
                   melody in C major]]``, ``[[speech: words to speak]]``
4. ``media``       each description → a file (text-to-image,    ``media/…``, ``media.jsonl``
                   text-to-music, TTS)
5. ``conversations`` descriptions → ``<image:media/…png>`` refs  ``conversations.jsonl`` (AnyInstruct)
6. ``tokenize``    (optional) → a training set via :func:`anygpt.data.sft.build_sft`  ``sft/``

Every step is a pluggable generator. Text: ``template`` (offline, default), ``openai`` (any
OpenAI-compatible chat-completions endpoint: base URL + model), ``hf`` (a local Hugging Face causal
LM). Media: ``corpus`` renderers for images and music and ``espeak`` for speech (offline
defaults); ``diffusers`` (text-to-image) and ``musicgen`` (text-to-music) from local weights.

Resuming: items are keyed by id and drawn from per-item RNGs; a step's JSONL is rewritten
atomically every few items, so a rerun after a kill keeps what exists and produces only the
missing items; a step recorded as done with the same settings is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from anygpt import config as configlib
from anygpt.data.conversations import media_ref
from anygpt.data.synthesis_media import MEDIA_BACKENDS, MediaGenerator
from anygpt.data.synthesis_text import DESCRIPTION, TEXT_BACKENDS, TextGenerator
from anygpt.utils import atomic_write_text, read_jsonl, write_jsonl

MANIFEST = "manifest.json"
STEPS = ("topics", "scenarios", "dialogues", "media", "conversations", "tokenize")


def item_rng(seed: int, step: str, key: str) -> random.Random:
    return random.Random(f"anygpt-synthesis:{seed}:{step}:{key}")


def _build(kind: str, table: dict[str, Callable], spec: dict) -> Any:
    spec = dict(spec)
    name = spec.pop("backend", None)
    if name not in table:
        raise ValueError(f"unknown {kind} generator {name!r}; known: {', '.join(sorted(table))}")
    return table[name](**spec)


# ================================================================ configuration
@dataclass
class SynthesisConfig:
    """The recipe (``data_pipeline/synthesis.yaml``)."""

    meta_topics: list[str] = field(default_factory=lambda: ["art", "music", "everyday life"])
    topics_per_meta: int = 3
    scenarios_per_topic: int = 1
    dialogues_per_scenario: int = 2
    seed: int = 0
    text: dict = field(default_factory=lambda: {"backend": "template"})
    image: dict = field(default_factory=lambda: {"backend": "corpus"})
    music: dict = field(default_factory=lambda: {"backend": "corpus"})
    speech: dict = field(default_factory=lambda: {"backend": "espeak"})
    tokenize: dict | None = None  # {"tokenizer": DIR, "cards": {modality: CARD}, "template": name}
    flush_every: int = 16

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: dict | Sequence[str] | None = None) -> "SynthesisConfig":
        """Read a YAML recipe plus overrides (a mapping or ``a.b=c`` strings; :mod:`anygpt.config`:
        an unknown key or a value of the wrong type is one error naming the file and key);
        relative tokenizer and card paths resolve against the recipe's folder."""
        p = Path(path)
        cfg = configlib.load(cls, p, overrides or {}, what="synthesis recipe", file_kind="synthesis recipe")
        if cfg.tokenize:  # relative paths resolve against the recipe's folder
            tk = dict(cfg.tokenize)
            tk["tokenizer"] = str(p.parent / tk["tokenizer"]) if "tokenizer" in tk else None
            tk["cards"] = {m: str(p.parent / c) for m, c in (tk.get("cards") or {}).items()}
            cfg.tokenize = tk
        return cfg

    def step_key(self, step: str) -> str:
        """Hash of the settings a step's output depends on (a changed recipe redoes the step)."""
        parts: dict[str, Any] = {"seed": self.seed, "text": self.text, "meta": self.meta_topics,
                                 "n": [self.topics_per_meta, self.scenarios_per_topic, self.dialogues_per_scenario]}
        if step in ("media", "conversations", "tokenize"):
            parts.update(image=self.image, music=self.music, speech=self.speech)
        if step == "tokenize":
            parts["tokenize"] = self.tokenize
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ================================================================ the pipeline
class _StepFile:
    """A step's JSONL output keyed by ``id``: loaded on start, rewritten atomically as it grows."""

    def __init__(self, path: Path, flush_every: int):
        self.path, self.flush_every = path, flush_every
        self.rows: dict[str, dict] = {}
        if path.exists():
            for _, row in read_jsonl(path):
                self.rows[row["id"]] = row
        self._dirty = 0

    def add(self, row: dict) -> None:
        self.rows[row["id"]] = row
        self._dirty += 1
        if self._dirty >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        write_jsonl(self.path, self.rows.values())
        self._dirty = 0


class SynthesisPipeline:
    """Runs the steps in order under ``out_dir``; see the module docstring."""

    def __init__(self, config: SynthesisConfig, out_dir: str | os.PathLike, text: TextGenerator | None = None,
                 media: dict[str, MediaGenerator] | None = None, tokenizers: dict[str, Any] | None = None,
                 log: Callable[[str], None] = print):
        self.cfg, self.out = config, Path(out_dir)
        self._text, self._media = text, dict(media or {})
        self.tokenizers = tokenizers
        self.log = log
        self.out.mkdir(parents=True, exist_ok=True)
        mp = self.out / MANIFEST
        self.manifest: dict[str, dict] = json.loads(mp.read_text()) if mp.exists() else {}

    # -- generators are built lazily: a finished step never loads its model
    @property
    def text(self) -> TextGenerator:
        if self._text is None:
            self._text = _build("text", TEXT_BACKENDS, self.cfg.text)
        return self._text

    def media_generator(self, modality: str) -> MediaGenerator:
        if modality not in self._media:
            self._media[modality] = _build(modality, MEDIA_BACKENDS[modality], getattr(self.cfg, modality))
        return self._media[modality]

    def _done(self, step: str) -> bool:
        m = self.manifest.get(step)
        return bool(m and m.get("done") and m.get("key") == self.cfg.step_key(step))

    def _finish(self, step: str, **info: Any) -> None:
        self.manifest[step] = {"done": True, "key": self.cfg.step_key(step), **info}
        atomic_write_text(self.out / MANIFEST, json.dumps(self.manifest, indent=1))
        self.log(f"[synthesis] {step}: {info}")

    def run(self, until: str | None = None) -> dict[str, dict]:
        """Run every step (or up to and including ``until``); finished steps are skipped."""
        if until is not None and until not in STEPS:
            raise ValueError(f"unknown step {until!r}; steps: {', '.join(STEPS)}")
        for step in STEPS:
            if step == "tokenize" and not (self.cfg.tokenize or self.tokenizers is not None):
                break
            if self._done(step):
                self.log(f"[synthesis] {step}: done, skipped")
            else:
                getattr(self, f"step_{step}")()
            if step == until:
                break
        return self.manifest

    # -- steps
    def step_topics(self) -> None:
        f = _StepFile(self.out / "topics.jsonl", self.cfg.flush_every)
        for mi, meta in enumerate(self.cfg.meta_topics):
            if any(r["meta_topic"] == meta for r in f.rows.values()):
                continue
            topics = self.text.topics(meta, self.cfg.topics_per_meta, item_rng(self.cfg.seed, "topics", meta))
            for ti, topic in enumerate(topics):
                f.add({"id": f"t{mi:03d}-{ti:03d}", "meta_topic": meta, "topic": topic})
        f.flush()
        self._finish("topics", count=len(f.rows), file="topics.jsonl")

    def step_scenarios(self) -> None:
        topics = _StepFile(self.out / "topics.jsonl", 1).rows
        f = _StepFile(self.out / "scenarios.jsonl", self.cfg.flush_every)
        for tid, t in topics.items():
            for k in range(self.cfg.scenarios_per_topic):
                sid = f"{tid}-s{k}"
                if sid not in f.rows:
                    text = self.text.scenario(t["topic"], item_rng(self.cfg.seed, "scenarios", sid))
                    f.add({"id": sid, "topic_id": tid, "topic": t["topic"], "scenario": text})
        f.flush()
        self._finish("scenarios", count=len(f.rows), file="scenarios.jsonl")

    def step_dialogues(self) -> None:
        scenarios = _StepFile(self.out / "scenarios.jsonl", 1).rows
        f = _StepFile(self.out / "dialogues.jsonl", self.cfg.flush_every)
        failed = []
        for sid, s in scenarios.items():
            for k in range(self.cfg.dialogues_per_scenario):
                did = f"{sid}-d{k}"
                if did in f.rows:
                    continue
                try:
                    turns = self.text.dialogue(s["scenario"], item_rng(self.cfg.seed, "dialogues", did))
                except ValueError as e:  # a malformed model answer is recorded, not fatal
                    failed.append({"id": did, "error": str(e)})
                    continue
                f.add({"id": did, "scenario_id": sid, "turns": turns})
        f.flush()
        if failed:
            write_jsonl(self.out / "dialogues_errors.jsonl", failed)
        self._finish("dialogues", count=len(f.rows), failed=len(failed), file="dialogues.jsonl")

    def _descriptions(self) -> list[tuple[str, int, str, str]]:
        """(dialogue id, index, modality, description) of every media description."""
        out = []
        for did, d in _StepFile(self.out / "dialogues.jsonl", 1).rows.items():
            k = 0
            for turn in d["turns"]:
                for m in DESCRIPTION.finditer(turn["message"]):
                    out.append((did, k, m.group(1), m.group(2)))
                    k += 1
        return out

    def step_media(self) -> None:
        f = _StepFile(self.out / "media.jsonl", self.cfg.flush_every)
        failed = []
        for did, k, modality, desc in self._descriptions():
            mid = f"{did}-m{k}"
            gen = self.media_generator(modality)
            rel = Path("media") / modality / f"{mid}.{gen.extension}"
            if mid in f.rows and (self.out / rel).exists():
                continue
            try:
                if not (self.out / rel).exists():
                    gen.render(desc, self.out / rel, item_rng(self.cfg.seed, "media", mid))
            except Exception as e:  # one failed render does not stop the batch
                failed.append({"id": mid, "modality": modality, "description": desc, "error": str(e)})
                continue
            f.add({"id": mid, "dialogue_id": did, "index": k, "modality": modality, "description": desc,
                   "path": rel.as_posix()})
        f.flush()
        if failed:
            write_jsonl(self.out / "media_errors.jsonl", failed)
        counts = {m: sum(r["modality"] == m for r in f.rows.values()) for m in MEDIA_BACKENDS}
        self._finish("media", count=len(f.rows), failed=len(failed), per_modality=counts, file="media.jsonl")

    def step_conversations(self) -> None:
        media = _StepFile(self.out / "media.jsonl", 1).rows
        rows, skipped = [], 0
        for did, d in _StepFile(self.out / "dialogues.jsonl", 1).rows.items():
            counter = iter(range(10**6))
            missing = False
            turns = []
            for turn in d["turns"]:
                def sub(m: re.Match) -> str:
                    nonlocal missing
                    row = media.get(f"{did}-m{next(counter)}")
                    if row is None:
                        missing = True
                        return m.group(0)
                    return media_ref(row["modality"], row["path"])

                turns.append({"role": turn["role"], "message": DESCRIPTION.sub(sub, turn["message"])})
            if missing:
                skipped += 1  # a dialogue whose media failed to render is left out
                continue
            rows.append({"id": did, "conversation": [turns]})
        write_jsonl(self.out / "conversations.jsonl", rows)
        self._finish("conversations", count=len(rows), skipped=skipped, file="conversations.jsonl")

    def step_tokenize(self) -> None:
        from anygpt.data.tokenizer import load_grown_tokenizer
        from anygpt.data.sft import build_sft
        from anygpt.modality.base import load_tokenizer

        spec = dict(self.cfg.tokenize or {})
        if not spec.get("tokenizer"):
            raise ValueError("the tokenize step needs tokenize.tokenizer (a grown tokenizer directory)")
        tok, layout = load_grown_tokenizer(spec["tokenizer"])
        tokenizers = self.tokenizers if self.tokenizers is not None else {
            m: load_tokenizer(c) for m, c in (spec.get("cards") or {}).items()}
        out = build_sft([self.out / "conversations.jsonl"], tok, layout, self.out / "sft", tokenizers=tokenizers,
                        template_name=spec.get("template"), skip_bad=True, overwrite=True)
        self._finish("tokenize", dataset=str(out.relative_to(self.out)))


def run_synthesis(config: SynthesisConfig, out_dir: str | os.PathLike, until: str | None = None, **kwargs: Any
                  ) -> dict[str, dict]:
    """Run (or resume) the pipeline; returns the manifest."""
    return SynthesisPipeline(config, out_dir, **kwargs).run(until)
