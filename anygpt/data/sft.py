"""SFT training sets from instruction conversations (AnyInstruct schema, media by path or inline).

Media referenced by path (``<image:PATH>``, see :mod:`anygpt.data.conversations`) are resolved
once per file: first in code shards (matched by the shard row's ``source`` path or its ``id``),
else encoded in batches with the modality's tokenizer card. A file that cannot be read fails the
conversations that use it, each reported by ``file:line``. Loss covers assistant turns only
(the template masks by ids).

Example::

    tok, layout = load_grown_tokenizer("grown/")
    build_sft(["convs.jsonl"], tok, layout, "sft_data/", tokenizers={"image": load_tokenizer("cards/image")})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from anygpt.data.alignment import BuiltSample
from anygpt.data.conversations import MediaRef, check_conversation, split_media_refs
from anygpt.data.datainfo import data_info
from anygpt.data.error_log import ErrorLog
from anygpt.data.templates import MediaCodes, Message, get_template, voice_response
from anygpt.data.tokenizer import check_template, default_template
from anygpt.data.writer import write_dataset
from anygpt.utils import read_jsonl
from anygpt.vocab import VocabLayout

VOICE_INSTRUCTION = "Please acknowledge the user's vocal input, create a textual response"


class MediaResolver:
    """Codes of media files, from code shards or by encoding with modality tokenizers."""

    def __init__(self, tokenizers: dict[str, Any] | None = None, shards: dict[str, str | os.PathLike] | None = None,
                 batch_size: int = 16):
        from anygpt.data.shards import load_shards, read_meta, shard_files

        self.tokenizers = dict(tokenizers or {})
        self.batch_size = batch_size
        self.fingerprints: dict[str, str | None] = {m: t.fingerprint for m, t in self.tokenizers.items()}
        self._known: dict[str, dict[str, list[int]]] = {}
        for modality, src in (shards or {}).items():
            expect = self.fingerprints.get(modality)
            files = shard_files(src)
            ds = load_shards(files, expect_fingerprint=expect)
            self.fingerprints[modality] = read_meta(files[0]).get("fingerprint")
            table = self._known.setdefault(modality, {})
            for row in ds:
                codes = list(row["codes"])
                table[row["id"]] = codes
                if row["source"]:
                    table[row["source"]] = codes
                    table[str(Path(row["source"]).resolve())] = codes
        self._cache: dict[tuple[str, str], list[int] | Exception] = {}

    def _from_shards(self, modality: str, path: Path, written: str) -> list[int] | None:
        table = self._known.get(modality, {})
        for key in (str(path), written, path.stem):
            if key in table:
                return table[key]
        return None

    def resolve(self, refs: Sequence[tuple[str, Path, str]]) -> None:
        """Resolve ``(modality, absolute path, path as written)`` triples into the cache."""
        todo: dict[str, list[Path]] = {}
        for modality, path, written in refs:
            key = (modality, str(path))
            if key in self._cache:
                continue
            codes = self._from_shards(modality, path, written)
            if codes is not None:
                self._cache[key] = codes
            elif modality not in self.tokenizers:
                self._cache[key] = ValueError(f"{path}: not in the {modality} code shards and no {modality} tokenizer "
                                              f"card given (--cards {modality}=CARD)")
            elif path not in todo.setdefault(modality, []):
                todo[modality].append(path)
        for modality, paths in todo.items():
            for i in range(0, len(paths), self.batch_size):
                self._encode(modality, paths[i : i + self.batch_size])

    def _encode(self, modality: str, paths: Sequence[Path]) -> None:
        tok = self.tokenizers[modality]
        loaded, ok = [], []
        for p in paths:
            try:
                if not p.exists():
                    raise FileNotFoundError(f"{p}: no such {modality} file")
                loaded.append(tok.load_media(p))
                ok.append(p)
            except Exception as e:  # a bad file fails only the conversations that use it
                self._cache[(modality, str(p))] = e
        if not ok:
            return
        try:
            codes = tok.encode(loaded)
        except Exception:
            if len(ok) == 1:
                raise
            for p in ok:  # find the item that breaks the batch
                self._encode(modality, [p])
            return
        for p, c in zip(ok, codes):
            self._cache[(modality, str(p))] = [int(x) for x in c]

    def codes(self, modality: str, path: Path) -> list[int]:
        got = self._cache.get((modality, str(path)))
        if got is None:
            raise KeyError(f"{path} was not resolved")
        if isinstance(got, Exception):
            raise ValueError(str(got)) from got
        return got


def _ref_path(ref: MediaRef, base: Path) -> Path:
    p = Path(os.path.expanduser(ref.path))
    return (p if p.is_absolute() else base / p).resolve()


def conversation_messages(conv: Sequence[dict], base: Path, resolver: MediaResolver) -> list[Message]:
    """Turns → messages; path references become :class:`MediaCodes`, inline token strings stay text."""
    out = []
    for turn in conv:
        content: list = []
        for piece in split_media_refs(turn["message"]):
            if isinstance(piece, MediaRef):
                content.append(MediaCodes(piece.modality, resolver.codes(piece.modality, _ref_path(piece, base))))
            elif piece:
                content.append(piece)
        out.append(Message(turn["role"], content or ""))
    return out


def voice_chat_messages(speech_in: MediaCodes, transcript: str, reply: str, speech_out: MediaCodes,
                        instruction: str = VOICE_INSTRUCTION) -> list[Message]:
    """The reference's voice-chat sample: spoken question in, ``<-Ins-> … <-Res-> …`` + speech out."""
    return [Message("user", [speech_in, " " + instruction]),
            Message("assistant", voice_response(transcript, reply, speech_out))]


def _modalities(ids: Sequence[int], layout: VocabLayout) -> str:
    present = set(ids)
    mods = [m for m in layout.modality_names if layout.start_id(m) in present]
    return "+".join(mods) or "text"


def split_at_turns(turns: Sequence[dict], length: Callable[[Sequence[dict]], int], max_length: int | None,
                   keep_long: bool = False) -> list[list[dict]]:
    """``turns`` as consecutive parts of whole rounds (user … assistant) that each render to at most
    ``max_length`` tokens (``length(turns)`` renders); ``[turns]`` when it fits or there is no limit.
    A round alone too long: ValueError, or (``keep_long``) a part of its own for the caller to cut."""
    turns = list(turns)
    if max_length is None:
        return [turns]
    n = length(turns)
    if n <= max_length:
        return [turns]
    rounds: list[list[dict]] = []
    for t in turns:  # a round: user turn(s) up to and including the next assistant turn
        if not rounds or rounds[-1][-1]["role"] == "assistant":
            rounds.append([])
        rounds[-1].append(t)
    parts: list[list[dict]] = []
    for i, rnd in enumerate(rounds):
        if parts and length(parts[-1] + rnd) <= max_length:
            parts[-1] = parts[-1] + rnd
            continue
        m = length(rnd)
        if m > max_length and not keep_long:
            raise ValueError(f"round {i + 1} alone is {m} tokens > max_length {max_length} (raise --max-length or shorten it)")
        parts.append(list(rnd))
    return parts


def build_sft(files: Sequence[str | os.PathLike], tokenizer, layout: VocabLayout, out_dir: str | os.PathLike,
              tokenizers: dict[str, Any] | None = None, shards: dict[str, str | os.PathLike] | None = None,
              template_name: str | None = None, max_length: int | None = None, skip_bad: bool = False,
              overwrite: bool = False, overlong: str = "drop", join_rounds: bool = True,
              card_paths: dict[str, str] | None = None) -> Path:
    """Render every conversation of ``files``: one multi-turn sample per line, loss on every
    assistant turn. A line's inner lists are the rounds of one dialogue (``join_rounds``; False
    keeps each inner list a sample of its own, the old behaviour). A dialogue longer than
    ``max_length`` tokens is split between rounds (each part ends with an assistant turn); a
    single round longer than that follows ``overlong``: ``"drop"`` records it (an error without
    ``skip_bad``), ``"truncate"`` cuts it to ``max_length`` (counted in ``anygpt_data.json``).
    ``card_paths`` (modality → the card of ``tokenizers``) are recorded in the data info, so
    training exports them."""
    if overlong not in ("drop", "truncate"):
        raise ValueError(f"overlong must be drop or truncate for sft, not {overlong!r}")
    counts: dict[str, int] = {}
    template = get_template(template_name or default_template(layout, "sft"))
    if template.name == "anygpt-pretrain":
        raise ValueError("template anygpt-pretrain renders single pairs; use anygpt-chat or chat for conversations")
    check_template(template, layout)
    errors = ErrorLog(skip_bad)
    resolver = MediaResolver(tokenizers, shards)

    def valid_lines() -> Iterator[tuple[str, int, Path, list[list[dict]], str]]:
        """Conversations of every good line; bad ones are reported on the first pass only."""
        for f in files:
            base = Path(f).resolve().parent
            for lineno, obj in read_jsonl(f, lenient=True):
                try:
                    if isinstance(obj, ValueError):
                        raise obj
                    convs = check_conversation(obj)
                except ValueError as e:
                    if first_pass:
                        if str(e).startswith(f"{f}:{lineno}: "):
                            errors.bad_line(e)
                        else:
                            errors.bad(f"{f}:{lineno}", str(e))
                    continue
                yield str(f), lineno, base, convs, str(obj.get("id", lineno))

    # pass 1: validate and collect media references, so files are encoded in batches, once each
    first_pass = True
    refs = [(r.modality, _ref_path(r, base), r.path) for _, _, base, convs, _ in valid_lines()
            for conv in convs for turn in conv for r in split_media_refs(turn["message"]) if isinstance(r, MediaRef)]
    resolver.resolve(refs)
    first_pass = False

    def render(turns: Sequence[dict], base: Path):
        return template.render(conversation_messages(turns, base, resolver), tokenizer, layout, loss_on="assistant")

    def samples() -> Iterator[BuiltSample]:  # pass 2: render, streamed
        for f, lineno, base, convs, cid in valid_lines():
            dialogues = [[t for conv in convs for t in conv]] if join_rounds else convs
            for k, conv in enumerate(dialogues):
                where = f"{f}:{lineno}"
                try:
                    parts = split_at_turns(conv, lambda turns: len(render(turns, base)), max_length,
                                           keep_long=overlong == "truncate")
                    rendered = [render(part, base) for part in parts]
                except (ValueError, KeyError, TypeError) as e:
                    errors.bad(where, str(e.args[0] if isinstance(e, KeyError) and e.args else e))
                    continue
                for j, r in enumerate(rendered):
                    ids, labels = r.input_ids, r.labels
                    if max_length is not None and len(ids) > max_length:  # one round alone, overlong: truncate
                        counts["truncated"] = counts.get("truncated", 0) + 1
                        ids, labels = ids[:max_length], labels[:max_length]
                    name = f"{cid}#{k}" if len(dialogues) > 1 else cid
                    yield BuiltSample(ids, labels, _modalities(ids, layout), "chat", Path(f).stem,
                                 f"{name}@{j}" if len(rendered) > 1 else name)

    info = data_info("sft", tokenizer, layout, template, resolver.fingerprints, inputs=[str(f) for f in files],
                     max_length=max_length, overlong=overlong, length_policy=counts,
                     cards={m: str(Path(c).resolve()) for m, c in (card_paths or {}).items()})
    return write_dataset(samples(), out_dir, info, errors, overwrite)
