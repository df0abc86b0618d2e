"""Text generators of instruction synthesis: topics, scenarios and dialogues whose media are
written as descriptions (``[[image: a red star]]``).

``template`` fills templates offline with the embedded corpus's vocabulary (the default);
``openai`` asks any OpenAI-compatible chat-completions endpoint; ``hf`` runs a local Hugging
Face causal LM. :data:`TEXT_BACKENDS` names them for the recipe's ``text.backend``.
"""

from __future__ import annotations

import abc
import json
import os
import random
import re
from typing import Any, Callable

from anygpt.data.conversations import check_conversation

DESCRIPTION = re.compile(r"\[\[(image|speech|music):\s*([^\[\]]+?)\s*\]\]")


def describe(modality: str, text: str) -> str:
    """A media description marker for a dialogue: ``[[image: a red star]]``."""
    return f"[[{modality}: {text}]]"


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


TEXT_BACKENDS: dict[str, Callable[..., TextGenerator]] = {
    "template": TemplateTextGenerator, "openai": OpenAIChatGenerator, "hf": HFTextGenerator}
