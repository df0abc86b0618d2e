"""Instruction phrasings for text-centric alignment pairs, drawn at random per sample.

Our own pools (the reference shipped ~100–240 per task and direction); keys are
``(modality, direction)`` with direction ``"x2t"`` (media → text) or ``"t2x"`` (text → media).

The released AnyGPT-base was pretrained with the reference's own pools, so prompts for it read
best with those. :func:`load_instruction_pools` reads them from the reference repository's
instruction modules (``anygpt/src/m_utils/other2text_instructions.py`` and
``text2other_instructions.py``: a dict literal per file, parsed, never imported or run), from a
checkout folder holding them, or from a JSON export (``{"x2t": {"image": [...]}, "t2x": {...}}``,
which ``python -m anygpt.data.instructions SRC OUT.json`` writes). ``anygpt build-data
--instructions PATH`` and ``anygpt chat/eval --instructions PATH`` use them.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import sys
from pathlib import Path

# the reference's module and variable names, and the direction each holds
REFERENCE_MODULES = {"other2text_instructions": "x2t", "text2other_instructions": "t2x"}
Pools = dict[tuple[str, str], list[str]]

POOLS: dict[tuple[str, str], list[str]] = {
    ("image", "x2t"): [
        "Describe the scene in this picture.",
        "What does this image show?",
        "Write a short caption for this picture.",
        "Give a one-sentence description of the image.",
        "Tell me what you see in this photo.",
        "Caption this image.",
        "Summarize the content of this picture in a few words.",
        "What is depicted here?",
        "Provide a brief caption for the following image.",
        "Describe this image briefly.",
        "Explain what appears in the picture.",
        "Look at this image and describe it.",
        "Write a caption that fits this image.",
        "What can be seen in this image?",
        "In one sentence, what is in the picture?",
        "Please describe the visual content of this image.",
        "Generate a descriptive caption for this image.",
        "What is shown in the following picture?",
        "Describe the main objects in this image.",
        "Give this picture a short description.",
        "Briefly state what the image contains.",
        "Could you describe this picture for me?",
        "Tell me about the contents of this image.",
        "What is the subject of this image?",
        "Write an alt text for this image.",
    ],
    ("image", "t2x"): [
        "Draw a picture of the following description.",
        "Generate an image that matches this text.",
        "Create an image based on the caption.",
        "Please paint what this sentence describes.",
        "Render an image for the following prompt.",
        "Make a picture that shows the following.",
        "Illustrate this description.",
        "Produce an image from this caption.",
        "Turn this text into a picture.",
        "Show me an image of what is described.",
        "Sketch the scene in the following text.",
        "Create a visual representation of this description.",
        "Can you draw this for me?",
        "Generate a picture for the caption below.",
        "Design an image that fits the description.",
        "Paint a picture according to the text.",
        "Visualize the following sentence as an image.",
        "Please generate an image of this.",
        "Depict the following in a picture.",
        "Create an illustration of the described scene.",
        "Draw what the following caption says.",
        "Produce a picture matching this prompt.",
        "Make an image showing this description.",
        "Generate artwork for the following text.",
        "Picture this and draw it.",
    ],
    ("speech", "x2t"): [
        "Transcribe this speech.",
        "Write down what is said in this recording.",
        "What does the speaker say?",
        "Convert this audio to text.",
        "Please transcribe the following utterance.",
        "Turn this spoken audio into written words.",
        "Listen to this and write the transcript.",
        "What is being said in this clip?",
        "Give me the text of this speech.",
        "Recognize the speech in this audio.",
        "Provide a transcription of the recording.",
        "Write out the spoken words.",
        "Transcribe the audio exactly.",
        "What words are spoken here?",
        "Convert the following speech to text.",
        "Please write down this spoken sentence.",
        "Type out what you hear.",
        "Produce a transcript for this audio.",
        "Tell me what the voice says.",
        "Speech to text, please.",
        "Write the words of this utterance.",
        "Could you transcribe this voice recording?",
        "What is the content of this speech?",
        "Listen and transcribe.",
        "Turn the recording into text.",
    ],
    ("speech", "t2x"): [
        "Would you kindly read this text out loud so that I can hear it?",
        "Read the following sentence aloud.",
        "Say this out loud.",
        "Convert this text to speech.",
        "Please speak the following words.",
        "Turn this text into spoken audio.",
        "Read this aloud for me.",
        "Pronounce the following sentence.",
        "Speak this text.",
        "Give me a spoken version of this sentence.",
        "Can you say the following?",
        "Voice the following text.",
        "Produce speech for this sentence.",
        "Read out the text below.",
        "Please narrate this sentence.",
        "Synthesize speech from the following text.",
        "Say these words in a clear voice.",
        "Make a recording of this sentence.",
        "Text to speech, please.",
        "Read the following words out loud.",
        "Recite this sentence.",
        "Speak the following out loud.",
        "Could you read this to me?",
        "Vocalize this text.",
        "Utter the following sentence.",
    ],
    ("music", "x2t"): [
        "Describe this piece of music.",
        "What instrument is playing in this clip?",
        "Write a caption for this music.",
        "Tell me about this melody.",
        "Describe the mood and instrumentation of this audio.",
        "What does this music sound like?",
        "Give a short description of this tune.",
        "Caption this music clip.",
        "Explain the character of this piece.",
        "Listen to this music and describe it.",
        "What kind of music is this?",
        "Describe the tempo and instrument of this melody.",
        "Summarize this musical excerpt.",
        "Provide a caption for the following song.",
        "How would you describe this music?",
        "Write a brief description of this melody.",
        "Characterize this audio clip.",
        "What are the features of this tune?",
        "Describe what you hear in this music.",
        "Give this music a caption.",
        "Tell me the style of this piece.",
        "Describe the following musical clip.",
        "What is played in this recording?",
        "Name the instrument and describe the feel of this music.",
        "Write a caption describing this track.",
    ],
    ("music", "t2x"): [
        "Compose a piece of music that matches this description.",
        "Generate music based on the following text.",
        "Play a melody like this.",
        "Create a short tune from this description.",
        "Make music that fits the following caption.",
        "Please compose the described melody.",
        "Turn this description into music.",
        "Produce a music clip for this prompt.",
        "Write and play a melody as described.",
        "Generate a tune matching the text.",
        "Compose something like the following.",
        "Create music for this caption.",
        "Play music that sounds like this description.",
        "Make a melody according to the text below.",
        "Generate an audio clip of this music.",
        "Can you compose this piece?",
        "Produce a melody that matches the following.",
        "Create a song from this description.",
        "Synthesize music as described.",
        "Compose music following this caption.",
        "Play the following kind of music.",
        "Generate a short piece in this style.",
        "Make a tune with these qualities.",
        "Please create music like this.",
        "Write music for the following description.",
    ],
}


def draw_instruction(modality: str, direction: str, rng: random.Random, pools: Pools | None = None) -> str:
    """A random phrasing for ``(modality, direction)`` from ``pools`` (default: ours); unknown
    pairs fail listing the known ones."""
    pools = POOLS if pools is None else pools
    key = (modality, direction)
    if key not in pools:
        raise KeyError(f"no instruction pool for {key}; known: {sorted(pools)}")
    return rng.choice(pools[key])


def _check_pool(src: Path, direction: str, table: object) -> Pools:
    if not isinstance(table, dict):
        raise ValueError(f"{src}: the {direction} instructions must be a mapping modality → list of strings")
    out: Pools = {}
    for modality, phrasings in table.items():
        if not isinstance(phrasings, list) or not phrasings or not all(isinstance(x, str) and x.strip() for x in phrasings):
            raise ValueError(f"{src}: {direction} instructions for {modality!r} must be a non-empty list of strings")
        out[(str(modality), direction)] = [x.strip() for x in phrasings]
    return out


def _read_reference_module(path: Path) -> Pools:
    """The dict literal a reference instruction module assigns (parsed with ``ast``, not run)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable Python module ({e})") from None
    out: Pools = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in REFERENCE_MODULES:
                try:
                    table = ast.literal_eval(node.value)
                except ValueError:
                    raise ValueError(f"{path}: {name} is not a plain literal") from None
                out.update(_check_pool(path, REFERENCE_MODULES[name], table))
    if not out:
        raise ValueError(f"{path}: assigns neither {' nor '.join(REFERENCE_MODULES)}")
    return out


def load_instruction_pools(path: str | os.PathLike) -> Pools:
    """Instruction pools from the reference's modules (a ``.py`` file, or a folder holding them,
    e.g. a checkout of OpenMOSS/AnyGPT) or from a JSON export. Bad input raises one line naming
    the file and the reason."""
    p = Path(path)
    if p.is_dir():
        found = [f for name in REFERENCE_MODULES for f in (p / f"{name}.py", p / "anygpt" / "src" / "m_utils" / f"{name}.py")
                 if f.is_file()]
        if not found:
            raise FileNotFoundError(f"{p}: no {' or '.join(n + '.py' for n in REFERENCE_MODULES)} (looked here and "
                                    "in anygpt/src/m_utils/)")
        pools: Pools = {}
        for f in found:
            pools.update(_read_reference_module(f))
        return pools
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such instruction file or folder")
    if p.suffix == ".py":
        return _read_reference_module(p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected an object with keys x2t / t2x")
    pools = {}
    for key, table in data.items():
        direction = REFERENCE_MODULES.get(key, key)
        if direction not in ("x2t", "t2x"):
            raise ValueError(f"{p}: unknown key {key!r}; expected x2t, t2x, {', '.join(REFERENCE_MODULES)}")
        pools.update(_check_pool(p, direction, table))
    return pools


def save_instruction_pools(pools: Pools, out: str | os.PathLike) -> Path:
    """Write pools as the JSON export ``load_instruction_pools`` reads."""
    from anygpt.utils import atomic_write_text

    data: dict[str, dict[str, list[str]]] = {"x2t": {}, "t2x": {}}
    for (modality, direction), phrasings in sorted(pools.items()):
        data[direction][modality] = phrasings
    atomic_write_text(Path(out), json.dumps(data, ensure_ascii=False, indent=1))
    return Path(out)


if __name__ == "__main__":  # python -m anygpt.data.instructions SRC OUT.json
    if len(sys.argv) != 3:
        sys.exit("usage: python -m anygpt.data.instructions SRC(.py | folder | .json) OUT.json")
    try:
        written = save_instruction_pools(load_instruction_pools(sys.argv[1]), sys.argv[2])
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    n = json.loads(written.read_text(encoding="utf-8"))
    print(f"wrote {written}: " + ", ".join(f"{d} {m} {len(v)}" for d, t in n.items() for m, v in t.items()))


def instruction_source(path: str | os.PathLike | None) -> dict | None:
    """What ``anygpt_data.json`` records about the instruction pools: their path and sha256 of the
    phrasings (None: ours)."""
    if not path:
        return None
    pools = load_instruction_pools(path)
    digest = hashlib.sha256(json.dumps(sorted(pools.items()), ensure_ascii=False).encode()).hexdigest()
    return {"path": str(path), "sha256": digest, "pools": {f"{m}/{d}": len(v) for (m, d), v in sorted(pools.items())}}
