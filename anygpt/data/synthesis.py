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

import abc
import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from anygpt.data.conversations import check_conversation, media_ref
from anygpt.utils import atomic_write_text

DESCRIPTION = re.compile(r"\[\[(image|speech|music):\s*([^\[\]]+?)\s*\]\]")
MANIFEST = "manifest.json"
STEPS = ("topics", "scenarios", "dialogues", "media", "conversations", "tokenize")


def item_rng(seed: int, step: str, key: str) -> random.Random:
    return random.Random(f"anygpt-synthesis:{seed}:{step}:{key}")


def describe(modality: str, text: str) -> str:
    """A media description marker for a dialogue: ``[[image: a red star]]``."""
    return f"[[{modality}: {text}]]"


# ================================================================ text generators
class TextGenerator(abc.ABC):
    """Writes topics, scenarios and dialogues (messages carry ``[[modality: description]]``)."""

    @abc.abstractmethod
    def topics(self, meta_topic: str, n: int, rng: random.Random) -> list[str]: ...

    @abc.abstractmethod
    def scenario(self, topic: str, rng: random.Random) -> str: ...

    @abc.abstractmethod
    def dialogue(self, scenario: str, rng: random.Random) -> list[dict]: ...


class TemplateTextGenerator(TextGenerator):
    """Offline: fills templates with the embedded corpus's vocabulary (shapes, colours, instruments)."""

    def __init__(self, max_rounds: int = 3):
        self.max_rounds = max_rounds

    def topics(self, meta_topic, n, rng):
        from anygpt.data.melody import INSTRUMENTS
        from anygpt.data.shapes import COLOURS, SHAPES

        pool = [f"{meta_topic}: {c} {s}s" for c in COLOURS for s in SHAPES]
        pool += [f"{meta_topic}: the sound of the {i}" for i in INSTRUMENTS]
        return rng.sample(pool, min(n, len(pool)))

    def scenario(self, topic, rng):
        who = rng.choice(("a child", "a teacher", "a designer", "a musician", "a student", "a grandparent"))
        want = rng.choice(("learn about", "make something with", "talk about", "get ideas for"))
        return f"{who.capitalize()} wants to {want} {topic.split(': ', 1)[-1]} and chats with the assistant."

    def dialogue(self, scenario, rng):
        from anygpt.data.corpus import draw_sentence
        from anygpt.data.melody import INSTRUMENTS, KEYS, MOODS, TEMPOS
        from anygpt.data.shapes import COLOURS, SHAPES

        def image_text():
            return f"a {rng.choice(('small', 'large'))} {rng.choice(list(COLOURS))} {rng.choice(SHAPES)}"

        def music_text():
            tempo, key = rng.choice(list(TEMPOS)), rng.choice(list(KEYS))
            return f"a {tempo} {MOODS[(KEYS[key][1], tempo)]} melody played on the {rng.choice(INSTRUMENTS)} in {key}"

        rounds = []
        for _ in range(rng.randint(1, self.max_rounds)):
            kind = rng.choice(("draw", "see", "play", "hear", "speak", "say"))
            if kind == "draw":
                t = image_text()
                rounds.append((f"Could you draw {t}?", f"Sure, here is {t}. {describe('image', t)}"))
            elif kind == "see":
                t = image_text()
                rounds.append((f"What is in this picture? {describe('image', t)}", f"It shows {t}."))
            elif kind == "play":
                t = music_text()
                rounds.append((f"Please play {t}.", f"Here is {t}. {describe('music', t)}"))
            elif kind == "hear":
                t = music_text()
                rounds.append((f"What do you hear in this clip? {describe('music', t)}", f"It is {t}."))
            elif kind == "speak":
                s = draw_sentence(rng)
                rounds.append((describe("speech", s), f"You said: {s}."))
            else:
                s = draw_sentence(rng)
                rounds.append((f"Please say this out loud: {s}", describe("speech", s)))
        return [t for u, a in rounds for t in ({"role": "user", "message": u}, {"role": "assistant", "message": a})]


PROMPTS = {
    "topics": ("List {n} distinct, concrete conversation topics within the area \"{meta_topic}\" that involve "
               "pictures, music or speech. Answer with a JSON list of strings only."),
    "scenario": ("Write a two-sentence scenario in which a user talks to a multimodal assistant about \"{topic}\". "
                 "Answer with the scenario text only."),
    "dialogue": ("Write a conversation of 2-3 rounds between a user and an assistant for this scenario: {scenario}\n"
                 "Media are written as descriptions: [[image: ...]] for a picture, [[music: ...]] for a music clip "
                 "(instrument, tempo, key, mood), [[speech: ...]] for words spoken aloud. Use at most two images and "
                 "one music clip. Answer with a JSON list of objects {{\"role\": \"user\"|\"assistant\", \"message\": ...}} "
                 "only, starting with the user."),
}


class PromptedTextGenerator(TextGenerator):
    """Text from a chat model: subclasses implement :meth:`chat`; prompts and parsing are shared."""

    @abc.abstractmethod
    def chat(self, prompt: str, seed: int) -> str:
        """One user message → the model's reply."""

    def _json(self, prompt: str, rng: random.Random, what: str) -> Any:
        reply = self.chat(prompt, rng.getrandbits(31))
        m = re.search(r"\[.*\]", reply, re.S)
        try:
            return json.loads(m.group(0) if m else reply)
        except json.JSONDecodeError:
            raise ValueError(f"the text model's {what} is not a JSON list: {reply[:120]!r}") from None

    def topics(self, meta_topic, n, rng):
        got = self._json(PROMPTS["topics"].format(n=n, meta_topic=meta_topic), rng, "topic list")
        return [str(t).strip() for t in got if str(t).strip()][:n]

    def scenario(self, topic, rng):
        return self.chat(PROMPTS["scenario"].format(topic=topic), rng.getrandbits(31)).strip()

    def dialogue(self, scenario, rng):
        turns = self._json(PROMPTS["dialogue"].format(scenario=scenario), rng, "dialogue")
        turns = [{"role": str(t.get("role")), "message": str(t.get("message", ""))} for t in turns if isinstance(t, dict)]
        if turns and turns[-1]["role"] == "user":
            turns = turns[:-1]
        check_conversation({"conversation": [turns]})
        return turns


class OpenAIChatGenerator(PromptedTextGenerator):
    """An OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server, OpenAI…).

    The API key is read from the environment variable ``api_key_env`` (never from the recipe)."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", temperature: float = 0.8,
                 timeout: float = 120.0, max_tokens: int = 1024):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.temperature, self.timeout, self.max_tokens = temperature, timeout, max_tokens

    def chat(self, prompt, seed):
        import urllib.request

        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": self.temperature, "seed": seed, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
        try:
            return data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{self.url}: unexpected response {str(data)[:200]}") from None


class HFTextGenerator(PromptedTextGenerator):
    """A local Hugging Face causal LM (a directory), prompted with its chat template."""

    def __init__(self, model: str, max_new_tokens: int = 512, temperature: float = 0.8, device: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from anygpt.utils import refuse_remote_code

        refuse_remote_code(model)
        self.tok = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(model, trust_remote_code=False)
        if device:
            self.model.to(device)
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def chat(self, prompt, seed):
        import torch

        torch.manual_seed(seed)
        ids = self.tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_tensors="pt").to(self.model.device)
        out = self.model.generate(ids, do_sample=True, temperature=self.temperature, max_new_tokens=self.max_new_tokens)
        return self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


# ================================================================ media generators
class MediaGenerator(abc.ABC):
    """Renders a description into a media file."""

    modality: str = ""
    extension: str = ""

    @abc.abstractmethod
    def render(self, description: str, path: Path, rng: random.Random) -> None:
        """Write the media for ``description`` to ``path`` (atomically)."""


def _word(text: str, options: Sequence[str]) -> str | None:
    low = text.lower()
    for o in sorted(options, key=len, reverse=True):
        if re.search(rf"\b{re.escape(o.lower())}(e?s)?\b", low):
            return o
    return None


class CorpusImageGenerator(MediaGenerator):
    """The corpus's shape renderer: colour, shape, size and background words in the description are
    honoured; missing ones are drawn at random."""

    modality, extension = "image", "png"

    def __init__(self, size: int = 64):
        self.size = size

    def render(self, description, path, rng):
        from anygpt.data.corpus import _write_png
        from anygpt.data.shapes import COLOURS, SHAPES, render_shape, shape_box

        shape = _word(description, SHAPES) or rng.choice(SHAPES)
        colour = _word(description, list(COLOURS)) or rng.choice(list(COLOURS))
        frac = rng.uniform(0.4, 0.58) if "small" in description.lower() else rng.uniform(0.6, 0.8)
        bg = "grey" if re.search(r"\bgr[ae]y background", description.lower()) else "white"
        box = shape_box(rng, self.size, frac)
        _write_png(render_shape(shape, colour, self.size, box, bg), path)


class CorpusMusicGenerator(MediaGenerator):
    """The corpus's melody synthesiser: instrument, tempo and key words are honoured."""

    modality, extension = "music", "wav"

    def __init__(self, sample_rate: int = 16000, seconds: float = 3.0):
        self.sample_rate, self.seconds = sample_rate, seconds

    def render(self, description, path, rng):
        from anygpt.data.corpus import _write_wav
        from anygpt.data.melody import INSTRUMENTS, KEYS, TEMPOS, render_melody

        instrument = _word(description, INSTRUMENTS) or rng.choice(INSTRUMENTS)
        tempo = _word(description, list(TEMPOS)) or rng.choice(list(TEMPOS))
        m = re.search(r"\b([A-G]) (major|minor)\b", description)
        key = f"{m.group(1)} {m.group(2)}" if m and f"{m.group(1)} {m.group(2)}" in KEYS else rng.choice(list(KEYS))
        audio = render_melody(instrument, rng.randint(*TEMPOS[tempo]), key, self.seconds, self.sample_rate, rng)
        _write_wav(audio, self.sample_rate, path)


class ESpeakGenerator(MediaGenerator):
    """Text-to-speech with eSpeak NG (voice and rate drawn per utterance)."""

    modality, extension = "speech", "wav"

    def __init__(self, voices: Sequence[str] | None = None, sample_rate: int = 16000):
        from anygpt.data.espeak import VOICES

        self.voices, self.sample_rate = list(voices or VOICES), sample_rate

    def render(self, description, path, rng):
        from anygpt.data.corpus import _write_wav
        from anygpt.data.espeak import speak

        _write_wav(speak(description, rng.choice(self.voices), rng.randint(140, 180), self.sample_rate),
                   self.sample_rate, path)


class DiffusersImageGenerator(MediaGenerator):
    """Text-to-image with a local diffusers pipeline directory (e.g. Stable Diffusion)."""

    modality, extension = "image", "png"

    def __init__(self, model: str, steps: int = 25, guidance: float = 7.5, device: str | None = None):
        from diffusers import AutoPipelineForText2Image

        self.pipe = AutoPipelineForText2Image.from_pretrained(model)
        if device:
            self.pipe.to(device)
        self.steps, self.guidance = steps, guidance

    def render(self, description, path, rng):
        import torch

        from anygpt.data.corpus import _write_png

        g = torch.Generator().manual_seed(rng.getrandbits(31))
        image = self.pipe(description, num_inference_steps=self.steps, guidance_scale=self.guidance, generator=g).images[0]
        _write_png(image, path)


class MusicGenGenerator(MediaGenerator):
    """Text-to-music with a local MusicGen checkpoint (transformers)."""

    modality, extension = "music", "wav"

    def __init__(self, model: str, seconds: float = 5.0, device: str | None = None):
        from transformers import AutoProcessor, MusicgenForConditionalGeneration

        from anygpt.utils import refuse_remote_code

        refuse_remote_code(model)
        self.processor = AutoProcessor.from_pretrained(model, trust_remote_code=False)
        self.model = MusicgenForConditionalGeneration.from_pretrained(model, trust_remote_code=False)
        if device:
            self.model.to(device)
        self.seconds = seconds

    def render(self, description, path, rng):
        import torch

        from anygpt.data.corpus import _write_wav

        torch.manual_seed(rng.getrandbits(31))
        inputs = self.processor(text=[description], return_tensors="pt").to(self.model.device)
        frame_rate = self.model.config.audio_encoder.frame_rate
        audio = self.model.generate(**inputs, do_sample=True, max_new_tokens=int(self.seconds * frame_rate))
        sr = self.model.config.audio_encoder.sampling_rate
        _write_wav(audio[0, 0].float().cpu().numpy(), sr, path)


TEXT_BACKENDS: dict[str, Callable[..., TextGenerator]] = {
    "template": TemplateTextGenerator, "openai": OpenAIChatGenerator, "hf": HFTextGenerator}
MEDIA_BACKENDS: dict[str, dict[str, Callable[..., MediaGenerator]]] = {
    "image": {"corpus": CorpusImageGenerator, "diffusers": DiffusersImageGenerator},
    "music": {"corpus": CorpusMusicGenerator, "musicgen": MusicGenGenerator},
    "speech": {"espeak": ESpeakGenerator},
}


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
    def load(cls, path: str | os.PathLike, overrides: dict | None = None) -> "SynthesisConfig":
        import yaml

        p = Path(path)
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: no such synthesis recipe") from None
        d.update(overrides or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{p}: unknown keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        cfg = cls(**d)
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
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[row["id"]] = row
        self._dirty = 0

    def add(self, row: dict) -> None:
        self.rows[row["id"]] = row
        self._dirty += 1
        if self._dirty >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows.values()))
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
            atomic_write_text(self.out / "dialogues_errors.jsonl", "".join(json.dumps(e) + "\n" for e in failed))
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
            atomic_write_text(self.out / "media_errors.jsonl", "".join(json.dumps(e) + "\n" for e in failed))
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
        atomic_write_text(self.out / "conversations.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
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
