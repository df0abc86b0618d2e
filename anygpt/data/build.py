"""Training sequences by id arithmetic: alignment pairs (pretraining) and conversations (SFT).

Codes become ids through :class:`VocabLayout` and messages become ids through the template's
renderer, so no prompt string with thousands of media token strings is ever built or tokenized
(the reference's way; ``bench/sequence_build_vs_strings.py`` measures the difference).

- Alignment: a (media codes, text) pair becomes ``x2t`` (instruction + media → text) or ``t2x``
  (instruction + "This is input: text" → media), the direction drawn per sample with the
  dataset's ``t2x_prob`` and the instruction drawn from :mod:`anygpt.data.instructions`.
- Mixture: datasets are interleaved so that each one's share of samples (``mix_by: samples``) or
  of tokens (``mix_by: tokens``) follows its weight: at every step the dataset furthest below its
  share is drawn next (exact up to one sample); each dataset is walked in a reshuffled order per
  epoch. Everything streams: samples are rendered, written in Arrow chunks and never all held.
- SFT: AnyInstruct conversations (:mod:`anygpt.data.conversations`); media by path are encoded
  with the modality's tokenizer (batched) or found in code shards; loss on assistant turns only.

Output: a Hugging Face dataset (``save_to_disk``) with columns ``input_ids`` and ``labels``
(list<int32>, -100 = no loss), ``modality``, ``direction`` (``x2t`` / ``t2x`` / ``chat``),
``source``, ``length``, plus ``anygpt_data.json`` (layout, template, tokenizer fingerprints) that
training checks with :func:`check_data_info`.
"""

from __future__ import annotations

import collections.abc
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from anygpt.data.datainfo import DATA_INFO_FILE
from anygpt.data.instructions import Pools, draw_instruction, load_instruction_pools
from anygpt.data.templates import MediaCodes, Message, Template, get_template
from anygpt.utils import atomic_write_text, read_jsonl, read_yaml
from anygpt.vocab import LAYOUT_FILE, VocabLayout, load_base_tokenizer

ERRORS_FILE = "errors.jsonl"
DIRECTIONS = ("x2t", "t2x")
REFERENCE_MEDIA_KEYS = ("image", "speech", "music")


class DataMismatch(ValueError):
    """A training set built for another layout, template or modality tokenizer."""


@dataclass
class Pair:
    """One alignment pair: modality-local codes and their text."""

    id: str
    modality: str
    codes: Sequence[int]
    text: str
    source: str = ""


@dataclass
class Sample:
    """One training sequence and where it came from."""

    input_ids: list[int]
    labels: list[int]
    modality: str
    direction: str
    source: str
    id: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)


# ---------------------------------------------------------------- tokenizer + layout
def load_grown_tokenizer(directory: str | os.PathLike):
    """The grown text tokenizer and its layout from an ``anygpt vocab --out`` directory, a bundle,
    or a released AnyGPT directory (no layout file: the layout is recognised from its tokens)."""
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"{directory}: not a tokenizer directory")
    tok = load_base_tokenizer(directory)
    if (Path(directory) / LAYOUT_FILE).exists():
        layout = VocabLayout.load(directory)
    else:
        layout = VocabLayout.detect(tok)
        if layout is None:
            raise ValueError(f"{directory}: no {LAYOUT_FILE} and not a released AnyGPT tokenizer; grow it with "
                             "`anygpt vocab --profile …`")
    if len(tok) != layout.vocab_size:
        raise ValueError(f"{directory}: tokenizer has {len(tok)} entries, its layout says {layout.vocab_size}; "
                         "regrow it with `anygpt vocab`")
    return tok, layout


def default_template(layout: VocabLayout, stage: str) -> str:
    """The template that matches a layout profile for ``stage`` (``pretrain`` or ``sft``)."""
    if layout.profile == "default":
        return "chat"
    return "anygpt-pretrain" if stage == "pretrain" else "anygpt-chat"


def check_template(template: Template, layout: VocabLayout) -> None:
    """Refuse a template whose markers the layout does not have."""
    compatible = {"anygpt": {"anygpt", "anygpt-chat"}, "anygpt-chat": {"anygpt-chat"}, "default": {"default"}}
    if layout.profile not in compatible.get(template.profile, {template.profile}):
        raise ValueError(f"template {template.id} needs a layout of profile {template.profile!r}, the tokenizer has "
                         f"{layout.profile!r}")


# ---------------------------------------------------------------- alignment samples
def alignment_messages(pair: Pair, direction: str, rng: random.Random, pools: Pools | None = None) -> list[Message]:
    """The user/assistant pair for one direction, with an instruction drawn from ``pools``
    (default: ours; :func:`~anygpt.data.instructions.load_instruction_pools` reads the reference's)."""
    instruction = draw_instruction(pair.modality, direction, rng, pools)
    media = MediaCodes(pair.modality, pair.codes)
    if direction == "x2t":
        return [Message("user", [instruction + " ", media]), Message("assistant", pair.text)]
    if direction == "t2x":
        return [Message("user", f"{instruction} This is input: {pair.text}"), Message("assistant", [media])]
    raise ValueError(f"direction must be x2t or t2x, not {direction!r}")


def render_alignment(pair: Pair, direction: str, template: Template, tokenizer, layout: VocabLayout,
                     rng: random.Random, source: str = "", loss_on: str = "assistant",
                     pools: Pools | None = None) -> Sample:
    """One alignment sample rendered to ids (labels: the response span and its end marker)."""
    r = template.render(alignment_messages(pair, direction, rng, pools), tokenizer, layout, loss_on=loss_on)
    return Sample(r.input_ids, r.labels, pair.modality, direction, source, pair.id)


def instruction_source(path: str | os.PathLike | None) -> dict | None:
    """What ``anygpt_data.json`` records about the instruction pools: their path and sha256 of the
    phrasings (None: ours)."""
    if not path:
        return None
    pools = load_instruction_pools(path)
    digest = hashlib.sha256(json.dumps(sorted(pools.items()), ensure_ascii=False).encode()).hexdigest()
    return {"path": str(path), "sha256": digest, "pools": {f"{m}/{d}": len(v) for (m, d), v in sorted(pools.items())}}


def draw_direction(rng: random.Random, t2x_prob: float) -> str:
    return "t2x" if rng.random() < t2x_prob else "x2t"


# ---------------------------------------------------------------- mixture
@dataclass
class MixSource:
    """A dataset in a mixture: ``make(index, rng) -> Sample`` for its ``size`` items."""

    name: str
    weight: float
    size: int
    make: Callable[[int, random.Random], Sample]


def mix(sources: Sequence[MixSource], by: str = "samples", num_samples: int | None = None,
        num_tokens: int | None = None, seed: int = 0) -> Iterator[Sample]:
    """Interleave ``sources`` so each one's share of samples or tokens follows its weight.

    Stops after ``num_samples`` samples or once ``num_tokens`` tokens were produced (default: as
    many samples as all sources hold together). Greedy deficit scheduling keeps every prefix of
    the stream within one sample of the target shares, so the stream is already interleaved and is
    yielded as it is made (memory stays flat); each source is walked in a reshuffled order per epoch
    and directions are drawn per sample."""
    if by not in ("samples", "tokens"):
        raise ValueError(f"mix_by must be samples or tokens, not {by!r}")
    sources = [s for s in sources if s.weight > 0]
    for s in sources:
        if s.size <= 0:
            raise ValueError(f"dataset {s.name!r} has no items")
    if not sources:
        raise ValueError("no dataset with a positive weight")
    total_w = sum(s.weight for s in sources)
    shares = [s.weight / total_w for s in sources]
    if num_samples is None and num_tokens is None:
        num_samples = sum(s.size for s in sources)
    rng = random.Random(seed)
    orders: list[list[int]] = [[] for _ in sources]
    produced = [0.0] * len(sources)
    n_out, tokens_out = 0, 0
    while (num_samples is None or n_out < num_samples) and (num_tokens is None or tokens_out < num_tokens):
        total = sum(produced)
        i = max(range(len(sources)), key=lambda k: (shares[k] * total - produced[k], shares[k]))
        if not orders[i]:
            orders[i] = list(range(sources[i].size))
            rng.shuffle(orders[i])
        sample = sources[i].make(orders[i].pop(), rng)
        produced[i] += len(sample) if by == "tokens" else 1
        n_out += 1
        tokens_out += len(sample)
        yield sample


# ---------------------------------------------------------------- pretraining: sources
class ShardPairs(collections.abc.Sequence):
    """The pairs of a code-shard dataset, read lazily from the memory-mapped Arrow table (rows
    without text are left out)."""

    def __init__(self, ds, modality: str, where: str):
        self.ds, self.modality, self.where = ds, modality, where
        texts = ds["text"]
        self.rows = [i for i, t in enumerate(texts) if t]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Pair:  # type: ignore[override]
        row = self.ds[self.rows[i]]
        if row["modality"] != self.modality:
            raise ValueError(f"{self.where}: row {row['id']} is {row['modality']}, the recipe says {self.modality}")
        return Pair(row["id"], self.modality, row["codes"], row["text"])


def pairs_from_shards(src: str | os.PathLike, modality: str, expect_fingerprint: str | None = None
                      ) -> tuple[ShardPairs, str | None]:
    """Pairs of the code shards in ``src`` and the fingerprint of the tokenizer that made them."""
    from anygpt.data.shards import load_shards, read_meta, shard_files

    files = shard_files(src)
    fps = {read_meta(f).get("fingerprint") for f in files}
    if len(fps) > 1:
        raise ValueError(f"{src}: shards made by different tokenizers ({sorted(map(str, fps))})")
    mods = {read_meta(f).get("modality") for f in files} - {None}
    if mods and mods != {modality}:
        raise ValueError(f"{src}: shards hold {sorted(mods)}, the recipe says {modality}")
    return ShardPairs(load_shards(files, expect_fingerprint=expect_fingerprint), modality, str(src)), fps.pop()


def parse_reference_line(obj: dict, layout: VocabLayout) -> Pair:
    """A line of the reference's pretraining JSONL: ``{"text", "image"|"speech"|"music": "<so..>…"}``."""
    keys = [k for k in REFERENCE_MEDIA_KEYS if k in obj]
    if len(keys) != 1:
        raise ValueError(f"expected exactly one of {', '.join(REFERENCE_MEDIA_KEYS)}, found {keys or 'none'}")
    modality = keys[0]
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing or empty 'text'")
    pieces = layout.parse(str(obj[modality]).strip(), strict=True)
    spans = [p for p in pieces if p[0] != "text" or str(p[1]).strip()]
    if len(spans) != 1 or spans[0][0] != modality:
        raise ValueError(f"'{modality}' must hold exactly one {modality} span of token strings")
    if not spans[0][1]:
        raise ValueError(f"empty {modality} span")
    return Pair(str(obj.get("id", "")), modality, spans[0][1], text.strip())


# ---------------------------------------------------------------- errors
class ErrorLog:
    """Bad input: raise at once (``skip=False``) or record to ``errors.jsonl`` and go on."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.rows: list[dict] = []

    def bad_line(self, err: ValueError) -> None:
        """A ValueError whose message starts with ``file:line: ``."""
        where, _, reason = str(err).partition(": ")
        self.bad(where, reason)

    def bad(self, where: str, reason: str, **extra: Any) -> None:
        if not self.skip:
            raise ValueError(f"{where}: {reason} (use --skip-bad to record bad lines and go on)")
        self.rows.append({"where": where, "error": reason, **extra})

    def write(self, out_dir: Path) -> None:
        if self.rows:
            atomic_write_text(out_dir / ERRORS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows))


def reference_jsonl_pairs(files: Sequence[str | os.PathLike], layout: VocabLayout, errors: ErrorLog) -> Iterator[Pair]:
    """Pairs of the reference's pretokenized JSONL files, streamed; bad lines name ``file:line``."""
    for f in files:
        for lineno, obj in read_jsonl(f, lenient=True):
            if isinstance(obj, ValueError):
                errors.bad_line(obj)
                continue
            try:
                p = parse_reference_line(obj, layout)
            except (ValueError, KeyError) as e:
                errors.bad(f"{f}:{lineno}", str(e))
                continue
            p.id = p.id or f"{Path(f).stem}:{lineno}"
            p.source = Path(f).stem
            yield p


# ---------------------------------------------------------------- recipe
@dataclass
class DatasetSpec:
    """One dataset of a pretraining recipe."""

    name: str
    shards: str
    modality: str
    weight: float = 1.0
    t2x_prob: float = 0.5
    card: str | None = None  # tokenizer card: shards must carry its fingerprint
    fingerprint: str | None = None  # or the expected fingerprint itself


@dataclass
class PretrainRecipe:
    """``anygpt build-data --stage pretrain --recipe FILE``: datasets, weights, directions, template."""

    datasets: list[DatasetSpec]
    template: str | None = None  # default: the layout profile's template
    mix_by: str = "samples"
    num_samples: int | None = None
    num_tokens: int | None = None
    seed: int = 0
    loss_on: str = "assistant"
    max_length: int | None = None
    instructions: str | None = None  # instruction pools (the reference's modules or a JSON export); default ours

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PretrainRecipe":
        """Read a YAML recipe; relative shard/card paths resolve against the recipe's folder."""
        p = Path(path)
        d = read_yaml(p, "recipe")
        if not isinstance(d, dict) or not isinstance(d.get("datasets"), list) or not d["datasets"]:
            raise ValueError(f"{p}: a recipe needs a non-empty 'datasets' list")
        known = set(cls.__dataclass_fields__) - {"datasets"}
        unknown = set(d) - known - {"datasets"}
        if unknown:
            raise ValueError(f"{p}: unknown recipe keys {sorted(unknown)}; known: {sorted(known | {'datasets'})}")
        specs = []
        for i, ds in enumerate(d["datasets"]):
            try:
                spec = DatasetSpec(**ds)
            except TypeError as e:
                raise ValueError(f"{p}: datasets[{i}]: {e}") from None
            for key in ("shards", "card"):
                v = getattr(spec, key)
                if v is not None and not Path(v).is_absolute():
                    setattr(spec, key, str(p.parent / v))
            if not 0.0 <= spec.t2x_prob <= 1.0:
                raise ValueError(f"{p}: datasets[{i}] t2x_prob must be in [0, 1]")
            specs.append(spec)
        if d.get("instructions") and not Path(d["instructions"]).is_absolute():
            d["instructions"] = str(p.parent / d["instructions"])
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"{p}: dataset names must be unique, got {names}")
        return cls(specs, **{k: v for k, v in d.items() if k != "datasets"})


# ---------------------------------------------------------------- writing
def text_tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the text tokenizer's vocabulary (ids and strings)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def write_dataset(samples: Iterable[Sample], out_dir: str | os.PathLike, info: dict, errors: ErrorLog | None = None,
                  overwrite: bool = False, chunk_rows: int = 4096) -> Path:
    """Save samples as a Hugging Face dataset + ``anygpt_data.json``; the folder appears complete
    or not at all (built beside it, then renamed)."""
    import datasets

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
    features = datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "labels": datasets.Sequence(datasets.Value("int32")),
        "modality": datasets.Value("string"),
        "direction": datasets.Value("string"),
        "source": datasets.Value("string"),
        "length": datasets.Value("int32"),
    })
    names = list(features)
    cols: dict[str, list] = {k: [] for k in names}
    chunks: list = []  # Arrow tables (compact int32), not Python lists
    counts: dict[str, dict[str, int]] = {}
    n_tokens = 0
    from tqdm import tqdm

    for s in tqdm(samples, desc="building samples", unit="sample", disable=None):
        for k, v in zip(names, (s.input_ids, s.labels, s.modality, s.direction, s.source, len(s))):
            cols[k].append(v)
        c = counts.setdefault(s.source, {"samples": 0, "tokens": 0, "loss_tokens": 0})
        c["samples"] += 1
        c["tokens"] += len(s)
        c["loss_tokens"] += sum(1 for x in s.labels if x != -100)
        n_tokens += len(s)
        if len(cols["length"]) >= chunk_rows:
            chunks.append(datasets.Dataset.from_dict(cols, features=features))
            cols = {k: [] for k in names}
    if cols["length"]:
        chunks.append(datasets.Dataset.from_dict(cols, features=features))
    if not chunks:
        raise ValueError("no samples to write (every input was empty or bad)")
    ds = chunks[0] if len(chunks) == 1 else datasets.concatenate_datasets(chunks)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    info = {**info, "num_samples": len(ds), "num_tokens": n_tokens, "sources": counts,
            "errors": len(errors.rows) if errors else 0}
    atomic_write_text(tmp / DATA_INFO_FILE, json.dumps(info, indent=1, ensure_ascii=False))
    if errors:
        errors.write(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def data_info(stage: str, tokenizer, layout: VocabLayout, template: Template, fingerprints: dict[str, str | None],
              **extra: Any) -> dict:
    """The ``anygpt_data.json`` record (the schema of :mod:`anygpt.data.datainfo`, which training
    checks: ``layout``, ``tokenizer_fingerprints``, ``template`` id) plus how the set was built."""
    return {"layout": layout.to_dict(), "tokenizer_fingerprints": {m: f for m, f in fingerprints.items() if f},
            "template": template.id, "template_config": template.to_dict(), "stage": stage,
            "text_tokenizer": text_tokenizer_fingerprint(tokenizer), **extra}


def read_data_info(data_dir: str | os.PathLike) -> dict:
    """The record of a built set; a folder without one is not a training set of ours."""
    p = Path(data_dir) / DATA_INFO_FILE
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: not a training set built by `anygpt build-data`") from None


def check_data_info(data_dir: str | os.PathLike, layout: VocabLayout, fingerprints: dict[str, str] | None = None,
                    template: Template | None = None) -> dict:
    """Refuse data built for another layout, template or modality tokenizer (raises DataMismatch)."""
    info = read_data_info(data_dir)
    theirs = VocabLayout.from_dict(info["layout"])
    if theirs.to_dict() != layout.to_dict():
        raise DataMismatch(f"{data_dir}: built for layout {theirs.profile} ({theirs.vocab_size} ids), "
                           f"the model has {layout.profile} ({layout.vocab_size} ids)")
    if template is not None and info.get("template") != template.id:
        raise DataMismatch(f"{data_dir}: rendered with template {info.get('template')}, the model uses {template.id}")
    for modality, fp in (fingerprints or {}).items():
        got = info.get("tokenizer_fingerprints", {}).get(modality)
        if got is not None and fp is not None and got != fp:
            raise DataMismatch(f"{data_dir}: {modality} codes made by tokenizer {got}, the model expects {fp}")
    return info


# ---------------------------------------------------------------- pretraining: entry points
def _limit(sample: Sample, max_length: int | None, errors: ErrorLog) -> bool:
    if max_length is not None and len(sample) > max_length:
        errors.bad(f"{sample.source}:{sample.id}", f"{len(sample)} tokens > max_length {max_length}")
        return False
    return True


def build_pretrain_from_recipe(recipe: PretrainRecipe, tokenizer, layout: VocabLayout, out_dir: str | os.PathLike,
                               skip_bad: bool = False, overwrite: bool = False) -> Path:
    """Alignment samples from code shards, mixed by the recipe's weights."""
    template = get_template(recipe.template or default_template(layout, "pretrain"))
    check_template(template, layout)
    pools = load_instruction_pools(recipe.instructions) if recipe.instructions else None
    errors = ErrorLog(skip_bad or recipe.max_length is not None)
    sources, fingerprints = [], {}
    for spec in recipe.datasets:
        expect = spec.fingerprint
        if spec.card:
            from anygpt.modality.base import load_tokenizer

            expect = load_tokenizer(spec.card, device="cpu").fingerprint
        pairs, fp = pairs_from_shards(spec.shards, spec.modality, expect)
        if fingerprints.get(spec.modality, fp) != fp:
            raise ValueError(f"{spec.shards}: {spec.modality} shards made by tokenizer {fp}, another dataset's by "
                             f"{fingerprints[spec.modality]}; one model needs one tokenizer per modality")
        fingerprints[spec.modality] = fp
        sources.append(MixSource(spec.name, spec.weight, len(pairs), _pair_maker(pairs, spec.name, spec.t2x_prob,
                                                                                  template, tokenizer, layout,
                                                                                  recipe.loss_on, pools)))
    samples = (s for s in mix(sources, recipe.mix_by, recipe.num_samples, recipe.num_tokens, recipe.seed)
               if _limit(s, recipe.max_length, errors))
    info = data_info("pretrain", tokenizer, layout, template, fingerprints, mix_by=recipe.mix_by, seed=recipe.seed,
                     weights={s.name: s.weight for s in recipe.datasets}, instructions=instruction_source(recipe.instructions),
                     t2x_prob={s.name: s.t2x_prob for s in recipe.datasets})
    return write_dataset(samples, out_dir, info, errors, overwrite)


def _pair_maker(pairs: Sequence[Pair], source: str, t2x_prob: float, template: Template, tokenizer,
                layout: VocabLayout, loss_on: str, pools: Pools | None = None) -> Callable[[int, random.Random], Sample]:
    def make(i: int, rng: random.Random) -> Sample:
        return render_alignment(pairs[i], draw_direction(rng, t2x_prob), template, tokenizer, layout, rng, source,
                                loss_on, pools)

    return make


def build_pretrain_from_reference(files: Sequence[str | os.PathLike], tokenizer, layout: VocabLayout,
                                  out_dir: str | os.PathLike, template_name: str | None = None,
                                  t2x_prob: float = 0.5, both_directions: bool = False, seed: int = 0,
                                  loss_on: str = "assistant", skip_bad: bool = False, overwrite: bool = False,
                                  instructions: str | os.PathLike | None = None) -> Path:
    """Ingest the reference's pretokenized JSONL (codes as token strings). The template defaults to
    ``anygpt-pretrain`` on the reference's layouts and ``chat`` on ours (same token strings);
    ``instructions`` names instruction pools to draw from (default: ours)."""
    template = get_template(template_name or default_template(layout, "pretrain"))
    check_template(template, layout)
    pools = load_instruction_pools(instructions) if instructions else None
    errors = ErrorLog(skip_bad)
    rng = random.Random(seed)

    def samples() -> Iterator[Sample]:
        for p in reference_jsonl_pairs(files, layout, errors):
            for d in DIRECTIONS if both_directions else (draw_direction(rng, t2x_prob),):
                yield render_alignment(p, d, template, tokenizer, layout, rng, p.source, loss_on, pools)

    info = data_info("pretrain", tokenizer, layout, template, {}, inputs=[str(f) for f in files], seed=seed,
                     t2x_prob=t2x_prob, both_directions=both_directions, instructions=instruction_source(instructions))
    return write_dataset(samples(), out_dir, info, errors, overwrite)
