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
import dataclasses
import hashlib
import itertools
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from anygpt.data.datainfo import DATA_INFO_FILE
from anygpt.data.instructions import Pools, draw_instruction, load_instruction_pools
from anygpt.data.templates import BatchRenderer, MediaCodes, Message, Template, get_template
from anygpt.utils import atomic_write_text, read_jsonl, read_yaml
from anygpt.vocab import LAYOUT_FILE, VocabLayout, load_base_tokenizer
from anygpt.vocab import MODALITIES

ERRORS_FILE = "errors.jsonl"
DIRECTIONS = ("x2t", "t2x")
REFERENCE_MEDIA_KEYS = MODALITIES  # the reference JSONL names its media keys after the modalities


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
    return _alignment_messages(pair, direction, draw_instruction(pair.modality, direction, rng, pools))


def _alignment_messages(pair: Pair, direction: str, instruction: str) -> list[Message]:
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


def render_alignments(pairs: Sequence[Pair], directions: Sequence[str], instructions: Sequence[str],
                      renderer: BatchRenderer, source: str = "", loss_on: str = "assistant") -> list[Sample]:
    """Many alignment samples at once, each with its drawn direction and instruction: the same ids
    as :func:`render_alignment` with those draws, one tokenizer call for the batch."""
    convs = [_alignment_messages(p, d, ins) for p, d, ins in zip(pairs, directions, instructions)]
    return [Sample(r.input_ids, r.labels, p.modality, d, source, p.id)
            for p, d, r in zip(pairs, directions, renderer.render(convs, loss_on))]


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
    """A dataset in a mixture of ``size`` items.

    Either ``make(index, rng) -> Sample`` renders one item, or ``plan(index, rng)`` draws one
    item's randomness (cheap; the same draws ``make`` would take) and ``render(plans)`` renders
    many at once, which lets :func:`mix` batch rendering and spread it over processes."""

    name: str
    weight: float
    size: int
    make: Callable[[int, random.Random], Sample] | None = None
    plan: Callable[[int, random.Random], Any] | None = None
    render: Callable[[Sequence[Any]], list[Sample]] | None = None

    def __post_init__(self) -> None:
        if self.make is None:
            if self.plan is None or self.render is None:
                raise ValueError(f"dataset {self.name!r}: a mix source needs make, or plan and render")
            plan, render = self.plan, self.render
            self.make = lambda i, rng: render([plan(i, rng)])[0]


def mix(sources: Sequence[MixSource], by: str = "samples", num_samples: int | None = None,
        num_tokens: int | None = None, seed: int = 0, skip: int = 0, batch_size: int = 512,
        num_proc: int = 1) -> Iterator[Sample]:
    """Interleave ``sources`` so each one's share of samples or tokens follows its weight.

    Stops after ``num_samples`` samples or once ``num_tokens`` tokens were produced (default: as
    many samples as all sources hold together). Greedy deficit scheduling keeps every prefix of
    the stream within one sample of the target shares, so the stream is already interleaved and is
    yielded as it is made (memory stays flat); each source is walked in a reshuffled order per epoch
    and directions are drawn per sample.

    ``skip`` leaves out the first samples of the stream (a resumed build). Mixing by samples with
    sources that ``plan``/``render`` renders ``batch_size`` samples at a time, in ``num_proc``
    processes when more than one (the stream is the same either way); skipped samples are then
    planned but never rendered."""
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

    def next_source() -> tuple[int, int]:
        total = sum(produced)
        i = max(range(len(sources)), key=lambda k: (shares[k] * total - produced[k], shares[k]))
        if not orders[i]:
            orders[i] = list(range(sources[i].size))
            rng.shuffle(orders[i])
        return i, orders[i].pop()

    if num_tokens is None and by == "samples" and all(s.plan and s.render for s in sources):
        def plans() -> Iterator[tuple[int, Any]]:
            for _ in range(num_samples):
                i, item = next_source()
                produced[i] += 1
                yield i, sources[i].plan(item, rng)

        stream = plans()
        for _ in itertools.islice(stream, skip):
            pass
        yield from _render_batches(sources, stream, batch_size, num_proc)
        return
    n_out, tokens_out = 0, 0
    while (num_samples is None or n_out < num_samples) and (num_tokens is None or tokens_out < num_tokens):
        i, item = next_source()
        sample = sources[i].make(item, rng)
        produced[i] += len(sample) if by == "tokens" else 1
        n_out += 1
        tokens_out += len(sample)
        if n_out > skip:
            yield sample


_FORKED_SOURCES: Sequence[MixSource] = ()  # what forked rendering workers render from (set before the fork)


def _render_batch(batch: Sequence[tuple[int, Any]]) -> list[Sample]:
    """Render one batch of ``(source, plan)`` in stream order, grouping plans by source."""
    by_source: dict[int, list[int]] = {}
    for pos, (k, _) in enumerate(batch):
        by_source.setdefault(k, []).append(pos)
    out: list[Sample | None] = [None] * len(batch)
    for k, positions in by_source.items():
        for pos, sample in zip(positions, _FORKED_SOURCES[k].render([batch[p][1] for p in positions])):
            out[pos] = sample
    return out  # type: ignore[return-value]


def _render_batches(sources: Sequence[MixSource], stream: Iterator[tuple[int, Any]], batch_size: int,
                    num_proc: int) -> Iterator[Sample]:
    global _FORKED_SOURCES
    _FORKED_SOURCES = sources
    batches = iter(lambda: list(itertools.islice(stream, batch_size)), [])
    if num_proc <= 1:
        for b in batches:
            yield from _render_batch(b)
        return
    import multiprocessing as mp

    # fork: workers inherit the sources (closures over tokenizer and memory-mapped shards) without
    # pickling them; each worker's tokenizer runs single-threaded so processes do not oversubscribe
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with mp.get_context("fork").Pool(num_proc) as pool:
        for rendered in pool.imap(_render_batch, batches, chunksize=1):
            yield from rendered


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

    def texts(self, limit: int | None = None) -> list[str]:
        """The pairs' texts (the first ``limit``), read as one column."""
        rows = self.rows if limit is None else self.rows[:limit]
        col = self.ds["text"]
        return [col[r] for r in rows]

    def __getitem__(self, i: int) -> Pair:  # type: ignore[override]
        row = self.ds[self.rows[i]]
        if row["modality"] != self.modality:
            raise ValueError(f"{self.where}: row {row['id']} is {row['modality']}, the recipe says {self.modality}")
        return Pair(row["id"], self.modality, row["codes"], row["text"])

    def get_many(self, indices: Sequence[int]) -> list[Pair]:
        """Pairs ``indices`` in one columnar read (row-at-a-time reads dominated building)."""
        cols = self.ds[[self.rows[i] for i in indices]]
        for rid, mod in zip(cols["id"], cols["modality"]):
            if mod != self.modality:
                raise ValueError(f"{self.where}: row {rid} is {mod}, the recipe says {self.modality}")
        return [Pair(rid, self.modality, codes, text) for rid, codes, text in zip(cols["id"], cols["codes"], cols["text"])]


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
    # a sample longer than max_length: "drop" (recorded in errors.jsonl), "error" (stop, naming it)
    # or "truncate" (cut to max_length, counted in anygpt_data.json); see docs/data.md
    overlong: str = "drop"
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
        if d.get("overlong", "drop") not in OVERLONG_POLICIES:
            raise ValueError(f"{p}: overlong must be one of {', '.join(OVERLONG_POLICIES)}, not {d['overlong']!r}")
        return cls(specs, **{k: v for k, v in d.items() if k != "datasets"})


# ---------------------------------------------------------------- writing
def text_tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the text tokenizer's vocabulary (ids and strings)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


PROGRESS_FILE = "progress.json"


def _features():
    import datasets

    return datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "labels": datasets.Sequence(datasets.Value("int32")),
        "modality": datasets.Value("string"),
        "direction": datasets.Value("string"),
        "source": datasets.Value("string"),
        "id": datasets.Value("string"),  # the sample's id in its source: training errors name it
        "length": datasets.Value("int32"),
    })


def write_dataset(samples: Iterable[Sample | None] | Callable[[int], Iterable[Sample | None]], out_dir: str | os.PathLike,
                  info: dict, errors: ErrorLog | None = None, overwrite: bool = False, chunk_rows: int = 4096,
                  shard_rows: int = 65536, job_key: str | None = None) -> Path:
    """Save samples as a Hugging Face dataset (``load_from_disk`` reads it) + ``anygpt_data.json``.

    Rows go to Arrow shards as they come (``chunk_rows`` at a time, a new file every
    ``shard_rows``), so memory does not grow with the output. The folder is built beside it
    (``.NAME.partial``) and renamed when complete, so it appears complete or not at all.

    Resumable: with a ``job_key`` (what identifies the build: inputs and settings) and ``samples``
    a callable ``start -> stream from position start`` (``None`` items are positions whose
    sample was dropped), every closed shard is recorded in
    ``.NAME.partial/progress.json``; rerunning the same build continues after the last closed
    shard, a different build starts over."""
    import pyarrow as pa

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: already exists and is not empty (pass --overwrite to replace it)")
    features = _features()
    names = list(features)
    tmp = out.with_name(f".{out.name}.partial")
    state = {"job": job_key, "shards": [], "consumed": 0, "counts": {}, "tokens": 0, "errors": []}
    prev = _read_progress(tmp) if job_key is not None and callable(samples) else None
    if prev is not None and prev.get("job") == job_key:
        state = prev
        for name in os.listdir(tmp):  # a shard left open by the interrupted run
            if name.endswith(".arrow") and name not in state["shards"]:
                os.remove(tmp / name)
        if errors is not None:
            errors.rows[:0] = state["errors"]
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    start = state["consumed"]
    counted = _Counted(samples(start) if callable(samples) else samples)
    counts: dict[str, dict[str, int]] = state["counts"]
    cols: dict[str, list] = {k: [] for k in names}
    writer: pa.ipc.RecordBatchStreamWriter | None = None
    in_shard = 0
    from tqdm import tqdm

    def flush_chunk() -> None:
        nonlocal writer, in_shard
        import datasets

        table = datasets.Dataset.from_dict(cols, features=features).data.table  # arrow schema + HF metadata
        if writer is None:
            name = f"data-{len(state['shards']):05d}.arrow"
            writer = pa.ipc.new_stream(str(tmp / name), table.schema)
            state["open"] = name
        writer.write_table(table)
        in_shard += table.num_rows
        for k in names:
            cols[k] = []

    def close_shard() -> None:
        nonlocal writer, in_shard
        if writer is None:
            return
        writer.close()
        writer, in_shard = None, 0
        state["shards"].append(state.pop("open"))
        state["consumed"] = start + counted.n
        state["errors"] = list(errors.rows) if errors else []
        atomic_write_text(tmp / PROGRESS_FILE, json.dumps(state))

    for s in tqdm(counted, desc="building samples", unit="sample", disable=None, initial=start):
        if s is None:  # dropped by the stream (recorded in errors), still a position to resume after
            continue
        n, labels = len(s), s.labels
        for k, v in zip(names, (s.input_ids, labels, s.modality, s.direction, s.source, s.id, n)):
            cols[k].append(v)
        c = counts.setdefault(s.source, {"samples": 0, "tokens": 0, "loss_tokens": 0})
        c["samples"] += 1
        c["tokens"] += n
        c["loss_tokens"] += n - labels.count(-100) if isinstance(labels, list) else sum(1 for x in labels if x != -100)
        state["tokens"] += n
        if len(cols["length"]) >= chunk_rows:
            flush_chunk()
            if in_shard >= shard_rows:
                close_shard()
    if cols["length"]:
        flush_chunk()
    close_shard()
    if not state["shards"]:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError("no samples to write (every input was empty or bad)")
    _finish_hf_dataset(tmp, state["shards"], features)
    n_samples = sum(c["samples"] for c in counts.values())
    info = {**info, "num_samples": n_samples, "num_tokens": state["tokens"], "sources": counts,
            "errors": len(errors.rows) if errors else 0}
    atomic_write_text(tmp / DATA_INFO_FILE, json.dumps(info, indent=1, ensure_ascii=False))
    if errors:
        errors.write(tmp)
    (tmp / PROGRESS_FILE).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


class _Counted:
    """An iterator that counts what it handed out (the stream position a resumed build starts at)."""

    def __init__(self, it: Iterable):
        self.it, self.n = iter(it), 0

    def __iter__(self):
        return self

    def __next__(self):
        x = next(self.it)
        self.n += 1
        return x


def _read_progress(tmp: Path) -> dict | None:
    try:
        return json.loads((tmp / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _finish_hf_dataset(tmp: Path, shards: list[str], features) -> None:
    """Name the shards and write the two files with which ``datasets.load_from_disk`` opens them
    (the layout ``Dataset.save_to_disk`` writes)."""
    import datasets

    files = []
    for i, name in enumerate(shards):
        final = f"data-{i:05d}-of-{len(shards):05d}.arrow"
        os.replace(tmp / name, tmp / final)
        files.append({"filename": final})
    datasets.DatasetInfo(features=features).write_to_directory(str(tmp))
    fingerprint = hashlib.sha256(json.dumps(files).encode() + os.urandom(8)).hexdigest()[:16]
    atomic_write_text(tmp / "state.json", json.dumps({
        "_data_files": files, "_fingerprint": fingerprint, "_format_columns": None, "_format_kwargs": {},
        "_format_type": None, "_output_all_columns": False, "_split": None}, indent=2))


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
OVERLONG_POLICIES = ("drop", "error", "truncate")


def check_overlong_policy(policy: str) -> None:
    if policy not in OVERLONG_POLICIES:
        raise ValueError(f"overlong must be one of {', '.join(OVERLONG_POLICIES)}, not {policy!r}")


def apply_length_policy(s: Sample, max_length: int | None, policy: str, errors: ErrorLog,
                        counts: dict[str, int]) -> Sample | None:
    """The sample within ``max_length`` tokens, by the recipe's ``overlong`` policy: ``drop``
    records a longer one in errors.jsonl (None: a position the stream skips), ``error`` stops
    naming it, ``truncate`` cuts it (counted in ``counts["truncated"]``). Without ``max_length``
    every sample passes (training then refuses one longer than its ``seq_len``, naming it)."""
    if max_length is None or len(s) <= max_length:
        return s
    if policy == "truncate":
        counts["truncated"] = counts.get("truncated", 0) + 1
        return dataclasses.replace(s, input_ids=s.input_ids[:max_length], labels=s.labels[:max_length])
    if policy == "error":
        raise ValueError(f"{s.source}:{s.id}: {len(s)} tokens > max_length {max_length} "
                         "(recipe overlong: error; use drop or truncate to go on)")
    errors.bad(f"{s.source}:{s.id}", f"{len(s)} tokens > max_length {max_length}")
    return None


TEXT_CHECK_LIMIT = 20_000  # texts per source checked for unknown / dropped characters (bounded cost)


def text_coverage(tokenizer, texts: Sequence[str]) -> dict[str, int]:
    """:func:`anygpt.vocab.text_coverage` (unknown pieces, characters lost in a round trip)."""
    from anygpt.vocab import text_coverage as coverage

    return coverage(tokenizer, texts)


def summary_lines(info: dict) -> list[str]:
    """What a user should know about a built set beyond its size: items used more than once
    (a recipe asking for more samples than the sources hold) and text the tokenizer could not
    represent. One line each; empty when there is nothing to say."""
    lines = []
    per = info.get("sources") or {}
    for name, cov in (info.get("text_coverage") or {}).items():
        items, samples = cov.get("items") or 0, (per.get(name) or {}).get("samples", 0)
        if items and samples > items:
            lines.append(f"note: source {name}: {items} items made {samples} samples (each item used about "
                         f"{samples / items:.1f} times); lower the recipe's num_samples / num_tokens or add data if that is not meant")
        if cov.get("unknown_tokens") or cov.get("lost_chars"):
            lines.append(f"warning: source {name}: {cov['texts_with_unknown']} of {cov['texts']} texts checked have text the "
                         f"tokenizer cannot represent ({cov['unknown_tokens']} unknown pieces, {cov['lost_chars']} of "
                         f"{cov['chars']} characters lost); use a base tokenizer with byte fallback (sentencepiece "
                         f"byte_fallback=true) or one trained on this text")
    return lines


def build_pretrain_from_recipe(recipe: PretrainRecipe, tokenizer, layout: VocabLayout, out_dir: str | os.PathLike,
                               skip_bad: bool = False, overwrite: bool = False, num_proc: int = 1,
                               chunk_rows: int = 4096, shard_rows: int = 65536) -> Path:
    """Alignment samples from code shards, mixed by the recipe's weights, rendered in batches
    (``num_proc`` processes) and written as they come (see :func:`write_dataset` for the
    sizes); an interrupted build resumes when rerun."""
    template = get_template(recipe.template or default_template(layout, "pretrain"))
    check_template(template, layout)
    pools = load_instruction_pools(recipe.instructions) if recipe.instructions else None
    errors = ErrorLog(skip_bad or recipe.max_length is not None)
    renderer = BatchRenderer(template, tokenizer, layout)
    sources, fingerprints = [], {}
    src_pairs: dict[str, ShardPairs] = {}
    for spec in recipe.datasets:
        expect = spec.fingerprint
        if spec.card:
            from anygpt.modality.base import load_tokenizer

            expect = load_tokenizer(spec.card, device="cpu").fingerprint
        pairs, fp = pairs_from_shards(spec.shards, spec.modality, expect)
        src_pairs[spec.name] = pairs
        if fingerprints.get(spec.modality, fp) != fp:
            raise ValueError(f"{spec.shards}: {spec.modality} shards made by tokenizer {fp}, another dataset's by "
                             f"{fingerprints[spec.modality]}; one model needs one tokenizer per modality")
        fingerprints[spec.modality] = fp
        sources.append(_pair_source(spec.name, spec.weight, pairs, spec.t2x_prob, renderer, recipe.loss_on, pools))
    check_overlong_policy(recipe.overlong)
    coverage = {}
    for spec, src in zip(recipe.datasets, sources):
        texts = src_pairs[spec.name].texts(TEXT_CHECK_LIMIT)
        coverage[spec.name] = {"items": src.size, **text_coverage(tokenizer, texts)}
    counts: dict[str, int] = {}

    def samples(start: int) -> Iterator[Sample | None]:
        for s in mix(sources, recipe.mix_by, recipe.num_samples, recipe.num_tokens, recipe.seed, skip=start,
                     num_proc=num_proc):
            yield apply_length_policy(s, recipe.max_length, recipe.overlong, errors, counts)

    cards = {spec.modality: str(Path(spec.card).resolve()) for spec in recipe.datasets if spec.card}
    info = data_info("pretrain", tokenizer, layout, template, fingerprints, cards=cards, mix_by=recipe.mix_by,
                     seed=recipe.seed, weights={s.name: s.weight for s in recipe.datasets},
                     t2x_prob={s.name: s.t2x_prob for s in recipe.datasets}, text_coverage=coverage,
                     instructions=instruction_source(recipe.instructions),
                     max_length=recipe.max_length, overlong=recipe.overlong, length_policy=counts)
    job = {"info": info, "recipe": dataclasses.asdict(recipe), "skip_bad": skip_bad,
           "shards": {spec.name: _files_signature(spec.shards) for spec in recipe.datasets}}
    return write_dataset(samples, out_dir, info, errors, overwrite, chunk_rows, shard_rows, job_key=_job_key(job))


def _files_signature(src: str | os.PathLike) -> list:
    """Names, sizes and modification times of a folder's shard files (a changed input starts a build over)."""
    from anygpt.data.shards import shard_files

    return [[str(f), os.path.getsize(f), os.path.getmtime(f)] for f in shard_files(src)]


def _job_key(job: dict) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _pair_source(name: str, weight: float, pairs: ShardPairs, t2x_prob: float, renderer: BatchRenderer,
                 loss_on: str, pools: Pools | None = None) -> MixSource:
    """A mix source of shard pairs: the plan draws direction then instruction (the draws of
    :func:`render_alignment`), rendering reads the batch's rows at once."""
    modality = pairs.modality

    def plan(i: int, rng: random.Random) -> tuple[int, str, str]:
        direction = draw_direction(rng, t2x_prob)
        return i, direction, draw_instruction(modality, direction, rng, pools)

    def render(plans: Sequence[tuple[int, str, str]]) -> list[Sample]:
        idx, dirs, ins = zip(*plans)
        return render_alignments(pairs.get_many(idx), dirs, ins, renderer, name, loss_on)

    return MixSource(name, weight, len(pairs), plan=plan, render=render)


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
