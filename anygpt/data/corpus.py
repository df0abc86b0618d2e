"""The embedded corpus: an offline, deterministic multimodal data set built in seconds.

- image: one coloured shape on a plain background, with a caption (:mod:`anygpt.data.shapes`)
- speech: short sentences from a ~150-word vocabulary spoken by eSpeak NG in ten voices at
  several rates and pitches, recorded at 8–44.1 kHz (half at 16 kHz), with transcripts
  (:mod:`anygpt.data.espeak`)
- music: short synthesised melodies with instrument / tempo / key / mood and a description
  (:mod:`anygpt.data.melody`)
- conversations: instruction dialogues mixing all three (AnyInstruct schema, media by path,
  see :mod:`anygpt.data.conversations`); later rounds ask about media shown earlier and switch
  the reply's modality (text, speech, image, music); spoken replies are recorded under
  ``conversations/<split>/``

Every item is drawn from its own RNG seeded by ``(seed, modality, split, index)``: the same
arguments give byte-identical files, and the ``eval`` split is disjoint from ``train`` (ids and
draws). Layout of ``out_dir``::

    image/train/image-train-000000.png …      speech/…/*.wav   music/…/*.wav
    image_train.jsonl  image_eval.jsonl  …    {"id", "path", "text", "attributes"}
    conversations_train.jsonl  conversations_eval.jsonl
    corpus.json                               settings used

Manifest paths are relative to the manifest's folder (``out_dir``). Rerunning skips media files
that already exist (they are written atomically, so an existing file is complete).

Example::

    paths = build_corpus("corpus/", {"image": 200, "speech": 200, "music": 100}, n_eval=20, seed=0)
    paths["image"]["train"]   # Path("corpus/image_train.jsonl")
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence


from anygpt.data.conversations import MEDIA_REF, media_ref
from anygpt.data.espeak import VOICES, speak
from anygpt.data.melody import INSTRUMENTS, KEYS, TEMPOS, draw_melody_item
from anygpt.data.shapes import COLOURS, SHAPES, analyse_image, draw_shape_item  # noqa: F401 (re-exported)
from anygpt.modality.media import save_audio, save_image
from anygpt.utils import atomic_write_text, write_jsonl
from anygpt.vocab import MODALITIES

SPLITS = ("train", "eval")
SPEECH_SAMPLE_RATE = 16000
# recordings come at other rates too (the speech tokenizer resamples them on load); half at 16 kHz
SPEECH_SAMPLE_RATES: tuple[int, ...] = (16000, 16000, 16000, 16000, 8000, 22050, 24000, 44100)
SPEECH_RATES = (120, 210)  # words per minute
SPEECH_PITCHES = (25, 75)  # eSpeak's 0–100 scale

# ---------------------------------------------------------------- speech sentences
_PLURAL = {"cross": "crosses"}
NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
NAMES = ("anna", "tom", "maria", "ben", "lucy", "sam", "emma", "jack")
NOUNS = ("cat", "dog", "bird", "house", "tree", "car", "ball", "book", "boat", "cup", "hat", "box", "apple",
         "flower", "chair", "door", "window", "train", "river", "song")
ADJECTIVES = ("big", "small", "old", "new", "happy", "sad", "bright", "dark", "warm", "cold", "soft", "loud",
              "quiet", "fast", "slow", "calm")
VERBS = ("see", "like", "draw", "play", "want", "have", "find", "make", "paint", "hear")
PLACES = ("on the table", "in the box", "near the door", "by the river", "under the tree", "in the garden")
_SENTENCES: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"the {r.choice(list(COLOURS))} {r.choice(SHAPES)} is {r.choice(ADJECTIVES)}",
    lambda r: f"i see {r.choice(NUMBERS[1:])} {r.choice(list(COLOURS))} {_plural(r.choice(SHAPES))}",
    lambda r: f"please play the {r.choice(INSTRUMENTS)}",
    lambda r: f"{r.choice(NAMES)} can {r.choice(VERBS)} a {r.choice(NOUNS)}",
    lambda r: f"my {r.choice(NOUNS)} is {r.choice(list(COLOURS))}",
    lambda r: f"we {r.choice(VERBS)} the {r.choice(ADJECTIVES)} {r.choice(NOUNS)}",
    lambda r: f"the {r.choice(NOUNS)} is {r.choice(PLACES)}",
    lambda r: f"{r.choice(NAMES)} likes a {r.choice(list(TEMPOS))} song",
    lambda r: f"{r.choice(NUMBERS)} {r.choice(NOUNS)} and {r.choice(NUMBERS)} {r.choice(NOUNS)}",
)


def _plural(word: str) -> str:
    return _PLURAL.get(word, word + "s")


def draw_sentence(rng: random.Random) -> str:
    """A 3–6 word sentence from the corpus vocabulary (lower case, no punctuation)."""
    return rng.choice(_SENTENCES)(rng)


def vocabulary() -> list[str]:
    """Every word a corpus transcript can contain (for ASR/TTS evaluation and text tokenizers)."""
    words = set(" ".join([*COLOURS, *SHAPES, *map(_plural, SHAPES), *NUMBERS, *NAMES, *NOUNS, *ADJECTIVES, *VERBS,
                          *PLACES, *INSTRUMENTS, *TEMPOS]).split())
    words |= set("the is i see please play my we can a likes song and".split())
    return sorted(words)


# ---------------------------------------------------------------- items
def item_rng(seed: int, modality: str, split: str, index: int) -> random.Random:
    """The RNG of one item: independent of every other item and of build order."""
    return random.Random(f"anygpt-corpus:{seed}:{modality}:{split}:{index}")


def item_id(modality: str, split: str, index: int) -> str:
    return f"{modality}-{split}-{index:06d}"


def make_item(modality: str, split: str, index: int, out_dir: Path, seed: int = 0, image_size: int = 64,
              music_sample_rate: int = 16000, music_seconds: float = 3.0) -> dict:
    """Draw item ``index`` of a split, write its media file (unless present), return its manifest row."""
    rng = item_rng(seed, modality, split, index)
    iid = item_id(modality, split, index)
    rel = Path(modality) / split / f"{iid}.{'png' if modality == 'image' else 'wav'}"
    dest = out_dir / rel
    if modality == "image":
        item = draw_shape_item(rng, image_size)
        text, attrs = item.caption, item.attributes
        if not dest.exists():
            save_image(item.image, dest)
    elif modality == "speech":
        text = draw_sentence(rng)
        voice, rate, pitch = rng.choice(VOICES), rng.randint(*SPEECH_RATES), rng.randint(*SPEECH_PITCHES)
        sr = rng.choice(SPEECH_SAMPLE_RATES)
        attrs = {"voice": voice, "rate": rate, "pitch": pitch, "sample_rate": sr}
        if not dest.exists():
            save_audio(speak(text, voice, rate, sr, pitch=pitch), sr, dest)
    elif modality == "music":
        item = draw_melody_item(rng, music_sample_rate, music_seconds)
        text, attrs = item.description, {**item.attributes, "sample_rate": music_sample_rate}
        if not dest.exists():
            save_audio(item.audio, music_sample_rate, dest)
    else:
        raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    return {"id": iid, "path": rel.as_posix(), "text": text, "attributes": attrs}


# ---------------------------------------------------------------- conversations
_QA = (
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("How many sides does a square have?", "A square has four sides."),
    ("How many points does a star usually have?", "A star usually has five points."),
    ("What colour do you get by mixing blue and yellow?", "Mixing blue and yellow gives green."),
    ("What colour do you get by mixing red and yellow?", "Mixing red and yellow gives orange."),
    ("What colour is a banana?", "A ripe banana is yellow."),
    ("Which instrument has strings and is played with a bow?", "The violin is played with a bow."),
    ("Is a flute a string instrument?", "No, the flute is a wind instrument."),
    ("What is a fast tempo?", "A fast tempo is above about one hundred and thirty beats per minute."),
    ("Which shape has no corners?", "A circle has no corners."),
    ("What is two plus three?", "Two plus three is five."),
    ("Say hello.", "Hello! How can I help you today?"),
)
_ASK = {
    ("image", "x2t"): ("Describe this picture.", "What is in this image?", "What shape and colour do you see here?"),
    ("image", "t2x"): ("Draw {t}.", "Please draw {t}.", "Can you make a picture of {t}?"),
    ("speech", "x2t"): ("Transcribe this recording.", "What does the speaker say?", "Write down what you hear."),
    ("speech", "t2x"): ("Say this out loud: {t}", "Read this aloud: {t}", "Please speak the sentence: {t}"),
    ("music", "x2t"): ("Describe this music.", "What instrument and tempo is this clip?", "Tell me about this melody."),
    ("music", "t2x"): ("Play {t}.", "Compose {t}.", "Can you play {t} for me?"),
}


def conversation_round(rng: random.Random, items: dict[str, Sequence[dict]]) -> tuple[str, str, dict]:
    """One (user, assistant, meta) round: describe/draw an image, transcribe/say speech, describe/play
    music (media as path markers, relative to the corpus folder), or a short text Q&A. ``meta``:
    ``{"task", "reply"}`` (the reply's modality, ``text`` for text) and ``"row"`` (the media item)."""
    tasks = [(m, d) for m in MODALITIES if items.get(m) for d in ("x2t", "t2x")]
    if not tasks or rng.random() < 0.15:
        user, assistant = rng.choice(_QA)
        return user, assistant, {"task": "qa", "reply": "text", "row": None}
    modality, direction = rng.choice(tasks)
    row = rng.choice(items[modality])
    ref = media_ref(modality, row["path"])
    ask = rng.choice(_ASK[(modality, direction)])
    meta = {"task": f"{modality}_{direction}", "reply": "text" if direction == "x2t" else modality, "row": row}
    if direction == "x2t":
        return f"{ask} {ref}", row["text"], meta
    return ask.format(t=row["text"]), ref, meta


Speaker = Callable[[str, random.Random], str]  # text → corpus-relative path of a new recording of it
_NOUN = {"image": "picture", "speech": "recording", "music": "melody"}
_ORDINAL = ("first", "second", "third", "fourth")


def _find(rng: random.Random, rows: Sequence[dict], **attrs: str) -> dict | None:
    """A random item whose attributes match ``attrs`` (None when there is none)."""
    hits = [r for r in rows if all(r["attributes"].get(k) == v for k, v in attrs.items())]
    return rng.choice(hits) if hits else None


def _said_shape(text: str) -> tuple[str, str] | None:
    """(colour, shape) when a transcript names one of each (``the red circle is big``)."""
    words = text.split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((s for s in SHAPES if s in words or _plural(s) in words), None)
    return (colour, shape) if colour and shape else None


def follow_up(rng: random.Random, shown: Sequence[tuple[str, dict]], items: dict[str, Sequence[dict]],
              speak_text: Speaker) -> tuple[str, str, dict]:
    """A later round about media shown earlier in the session (``shown``: ``(modality, row)`` in
    order), answered in the modality the request names: text, speech (``speak_text`` records it),
    an image or a melody (an item with the asked attributes)."""
    index = rng.randrange(len(shown))
    modality, row = shown[index]
    same = [i for i, (m, _) in enumerate(shown) if m == modality]
    name = f"the {_ORDINAL[same.index(index)]} {_NOUN[modality]}" if len(same) > 1 else f"that {_NOUN[modality]}"
    a, text = row["attributes"], row["text"]
    options: list[tuple[str, str, str, str]] = []  # (task, reply modality, user, assistant)
    alike = drawn = None
    if modality == "image":
        options += [("colour", "text", f"What colour is the shape in {name}?", f"It is {a['colour']}."),
                    ("shape", "text", f"What shape is in {name}?", f"It is a {a['shape']}."),
                    ("describe", "text", f"Describe {name} in words.", text)]
        options.append(("say", "speech", f"Say out loud what {name} shows.", ""))
        other = rng.choice([c for c in COLOURS if c != a["colour"]])
        alike = _find(rng, items.get("image", ()), shape=a["shape"], colour=other)
        if alike:
            options.append(("redraw", "image", f"Draw the {a['shape']} of {name} in {other}.",
                            media_ref("image", alike["path"])))
    elif modality == "speech":
        options += [("transcribe", "text", f"Write down what {name} says.", text),
                    ("last_word", "text", f"What is the last word in {name}?", f"The last word is {text.split()[-1]}."),
                    ("say", "speech", f"Say the words of {name} in your own voice.", "")]
        said = _said_shape(text)
        drawn = _find(rng, items.get("image", ()), colour=said[0], shape=said[1]) if said else None
        if drawn:
            options.append(("draw_said", "image", f"Draw the {said[0]} {said[1]} that {name} talks about.",
                            media_ref("image", drawn["path"])))
    else:
        options += [("instrument", "text", f"Which instrument plays in {name}?", f"The {a['instrument']}."),
                    ("tempo", "text", f"Is {name} slow, medium or fast?", f"It is {a['tempo']}."),
                    ("say", "speech", f"Tell me out loud which instrument plays in {name}.", "")]
        alike = _find(rng, items.get("music", ()), instrument=a["instrument"])
        if alike and alike is not row:
            options.append(("replay", "music", f"Play another {a['instrument']} melody like {name}.",
                            media_ref("music", alike["path"])))
    task, reply, user, assistant = rng.choice(options)
    made = {"redraw": alike, "replay": alike, "draw_said": drawn}.get(task)
    if task == "say":
        spoken = text if modality != "music" else f"the {a['instrument']}"
        assistant = media_ref("speech", speak_text(spoken, rng))
    return user, assistant, {"task": f"{modality}_{task}", "reply": reply, "refers_to": index, "row": made}


def make_conversation(rng: random.Random, items: dict[str, Sequence[dict]], conv_id: str,
                      max_rounds: int = 4, speak_text: Speaker | None = None, max_media: int = 3) -> dict:
    """An AnyInstruct line of 1..``max_rounds`` rounds. With ``speak_text``, later rounds may ask
    about media shown earlier (:func:`follow_up`) and switch the reply's modality; at most
    ``max_media`` media per conversation (so it fits the training rows). Besides ``id`` and
    ``conversation`` the line carries ``tasks``: per round its task, the reply's modality and,
    for a follow-up, ``refers_to`` (the index of the media it asks about among those shown)."""
    turns: list[dict] = []
    tasks: list[dict] = []
    shown: list[tuple[str, dict]] = []
    n_media = 0
    for _ in range(rng.randint(1, max_rounds)):
        if speak_text is not None and shown and rng.random() < 0.5:
            user, assistant, meta = follow_up(rng, shown, items, speak_text)
        else:
            user, assistant, meta = conversation_round(rng, items)
        n_media += len(MEDIA_REF.findall(user + assistant))
        if n_media > max_media and turns:
            break
        row = meta.pop("row", None)
        if row is not None:
            shown.append((meta["task"].split("_")[0], row))
        turns += [{"role": "user", "message": user}, {"role": "assistant", "message": assistant}]
        tasks.append(meta)
    return {"id": conv_id, "conversation": [turns], "tasks": tasks}


def _conversation_speaker(out: Path, split: str, conv_id: str) -> Speaker:
    """Records a conversation's spoken replies as ``conversations/<split>/<conv_id>-<k>.wav``
    (16 kHz, a random voice, rate and pitch); an existing file is kept (resumable)."""
    count = [0]

    def speak_text(text: str, rng: random.Random) -> str:
        rel = Path("conversations") / split / f"{conv_id}-{count[0]:02d}.wav"
        count[0] += 1
        voice, rate, pitch = rng.choice(VOICES), rng.randint(*SPEECH_RATES), rng.randint(*SPEECH_PITCHES)
        if not (out / rel).exists():
            save_audio(speak(text, voice, rate, SPEECH_SAMPLE_RATE, pitch=pitch), SPEECH_SAMPLE_RATE, out / rel)
        return rel.as_posix()

    return speak_text


def _write_jsonl(path: Path, rows: Sequence[dict]) -> Path:
    write_jsonl(path, rows)
    return path


# ---------------------------------------------------------------- the whole corpus
def build_corpus(
    out_dir: str | Path,
    n_per_modality: dict[str, int] | None = None,
    n_eval: int | dict[str, int] = 20,
    seed: int = 0,
    n_conversations: int | None = None,
    image_size: int = 64,
    music_sample_rate: int = 16000,
    music_seconds: float = 3.0,
    progress: bool = False,
    workers: int = 1,
) -> dict[str, dict[str, Path]]:
    """Write the corpus under ``out_dir`` and return ``{modality|"conversations": {split: manifest}}``.

    ``n_per_modality``: train items per modality (default 200 each; a modality missing from the
    dict, or 0, is left out).
    ``n_eval``: eval items per modality (an int for all, or a dict). ``n_conversations``: train
    conversations (default: as many as image items; eval gets ``max(n_eval)``). ``workers`` > 1
    draws the media in that many processes (each item has its own seed: the corpus is the same)."""
    out = Path(out_dir)
    counts = dict(n_per_modality) if n_per_modality is not None else {m: 200 for m in MODALITIES}
    unknown = set(counts) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modality {sorted(unknown)}; known: {', '.join(MODALITIES)}")
    evals = n_eval if isinstance(n_eval, dict) else {m: int(n_eval) for m in MODALITIES}
    settings = {"seed": seed, "image_size": image_size, "music_sample_rate": music_sample_rate,
                "music_seconds": music_seconds}
    paths: dict[str, dict[str, Path]] = {}
    rows: dict[str, dict[str, list[dict]]] = {s: {} for s in SPLITS}
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:  # spawned, not forked: a parent's eSpeak state is not shared
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
        for modality in MODALITIES:
            for split in SPLITS:
                n = counts.get(modality, 0) if split == "train" else evals.get(modality, 0)
                if n <= 0:
                    continue
                make = functools.partial(make_item, modality, split, out_dir=out, **settings)
                it = pool.map(make, range(n), chunksize=16) if pool else map(make, range(n))
                if progress:
                    from tqdm import tqdm

                    it = tqdm(it, total=n, desc=f"{modality}/{split}", unit="item")
                rows[split][modality] = list(it)
                paths.setdefault(modality, {})[split] = _write_jsonl(out / f"{modality}_{split}.jsonl", rows[split][modality])
    n_conv = {"train": n_conversations if n_conversations is not None else counts.get("image", 0),
              "eval": max(evals.values(), default=0)}
    for split in SPLITS:
        if n_conv[split] <= 0 or not rows[split]:
            continue
        convs = []
        for i in range(n_conv[split]):
            cid = f"conv-{split}-{i:06d}"
            convs.append(make_conversation(item_rng(seed, "conversation", split, i), rows[split], cid,
                                           speak_text=_conversation_speaker(out, split, cid)))
        paths.setdefault("conversations", {})[split] = _write_jsonl(out / f"conversations_{split}.jsonl", convs)
    info = {**settings, "counts": {m: {s: len(rows[s].get(m, [])) for s in SPLITS} for m in MODALITIES},
            "voices": list(VOICES), "keys": list(KEYS), "instruments": list(INSTRUMENTS),
            "manifests": {k: {s: p.name for s, p in v.items()} for k, v in paths.items()}}
    atomic_write_text(out / "corpus.json", json.dumps(info, indent=1))
    return paths


def read_corpus_manifest(path: str | Path) -> list[dict]:
    """Rows of a corpus manifest with ``path`` resolved against the manifest's folder."""
    from anygpt.utils import read_jsonl

    base = Path(path).parent
    return [{**r, "path": str(base / r["path"])} for _, r in read_jsonl(path)]
