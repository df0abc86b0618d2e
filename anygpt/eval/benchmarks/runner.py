"""Run one paper benchmark: read the data set, generate (batched, resumable), score with the local
judge models (batched, resumable), aggregate with intervals, write the result.

Files under ``OUT`` (``NAME`` = the benchmark):

- ``NAME.items.jsonl``: one line per finished item (generated text, or the path of the generated
  media under ``NAME/``), append-only; a rerun skips the ids it holds.
- ``NAME.scores.jsonl``: per-item judge-model scores, append-only, resumed the same way; a judge
  model that appears later scores the items generated before it.
- ``NAME.json``: the protocol, data, decoding settings (paper's, and what was overridden), seed,
  judge models (path looked at, found or not), metrics with 95 % intervals beside the paper's
  figures, and the items that failed.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from anygpt.config import parse_assignments
from anygpt.eval.benchmarks.base import (
    Benchmark, Item, ItemLog, NotScored, ScoreLog, read_wave,
)
from anygpt.eval.benchmarks.models import LocalModels
from anygpt.eval.steps import bundle_tokenizer
from anygpt.inference.settings import PRESETS, GenerationSettings
from anygpt.utils import atomic_write_text, safe_name


@dataclass
class BenchmarkConfig:
    """What ``anygpt eval --benchmark`` was asked."""

    benchmark: str
    data: Path
    out: Path
    model: str = ""
    limit: int | None = None
    subset: int | None = None  # coco-t2i: size of the fixed random caption subset (paper: 30k)
    seed: int = 0
    batch_size: int = 8
    decoding: dict[str, dict[str, Any]] = field(default_factory=dict)  # overrides per output modality
    models_dir: Path | None = None
    model_paths: dict[str, Path | None] = field(default_factory=dict)  # kind -> local dir
    progress: bool = True
    device: str | None = None  # the bundle's and the judge models' device (default: cuda when there is one)


def parse_decoding(pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["text.num_beams=3", "speech.top_p=0.9"]`` → ``{"text": {"num_beams": 3}, ...}`` (values
    parsed as YAML by :func:`anygpt.config.parse_assignments`: numbers, true/false); a bad item
    raises one line naming it."""
    known = set(GenerationSettings().to_dict())
    out: dict[str, dict[str, Any]] = {}
    for p in pairs:
        [(key, value)] = parse_assignments([p], "--decoding").items()
        mod, dot, name = key.partition(".")
        if not dot or mod not in PAPER or name not in known:
            raise ValueError(f"--decoding {p!r}: expected MODALITY.SETTING=VALUE with MODALITY one of "
                             f"{', '.join(PAPER)} and SETTING one of {', '.join(sorted(known))}")
        out.setdefault(mod, {})[name] = value
    return out


PAPER = PRESETS["paper"]  # the paper's evaluation settings, per output modality


def _settings(cfg: BenchmarkConfig, modality: str) -> GenerationSettings:
    """The paper's settings for ``modality`` with the ``--decoding`` overrides (validated, cast)."""
    return PAPER[modality].updated(cfg.decoding.get(modality))


class _Bar:
    """tqdm when installed and stderr is a terminal-ish stream; silent otherwise."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="item", disable=None)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Generation:
    """Prompts → outputs for one benchmark on a loaded bundle (reusing the eval generation path)."""

    def __init__(self, bench: Benchmark, bundle: Any, cfg: BenchmarkConfig, out_dir: Path):
        from anygpt.eval.generation import default_generator

        self.bench, self.bundle, self.cfg, self.out_dir = bench, bundle, cfg, out_dir
        self.generate, self.generator_name = default_generator()
        self.settings = _settings(cfg, bench.output_modality)
        self.notes: list[str] = []

    def tokenizer(self, modality: str) -> Any:
        """The bundle's tokenizer for ``modality``; a missing one raises saying how to add it."""
        return bundle_tokenizer(self.bundle, modality)

    def _input_media(self, tok: Any, item: Item) -> Any:
        if self.bench.input_modality == "image":
            return tok.load_media(item.source)
        from anygpt.modality.media import resample

        wav, rate = read_wave(item.source)
        wav = resample(wav, rate, tok.sample_rate)
        if tok.max_seconds and len(wav) > tok.max_seconds * tok.sample_rate:
            if self.bench.input_modality != "music":  # an utterance is transcribed whole, or not at all
                raise ValueError(f"{item.source}: {len(wav) / tok.sample_rate:.1f} s, longer than the speech tokenizer's "
                                 f"max_seconds {tok.max_seconds}")
            wav = wav[: int(tok.max_seconds * tok.sample_rate)]  # a music clip is cut (see the protocol)
        return wav

    def run_batch(self, items: Sequence[Item]) -> list[dict]:
        """One record per item: ``output`` (text) or ``output_media`` (a path under OUT), or ``error``."""
        import torch

        from anygpt.data.templates import MediaCodes
        from anygpt.eval.generation import build_prompt, generated_text, media_codes, task_content

        b, inp, outm = self.bundle, self.bench.input_modality, self.bench.output_modality
        recs: dict[str, dict] = {it.id: {"id": it.id, "references": it.references, **it.extra} for it in items}
        prompts, asked, live = [], [], []
        if inp != "text":
            tok = self.tokenizer(inp)
            loaded = []
            for it in items:
                try:
                    loaded.append((it, self._input_media(tok, it)))
                except Exception as e:  # bad media: record, go on
                    recs[it.id]["error"] = f"{it.source}: {e}"
            codes = tok.encode([m for _, m in loaded]) if loaded else []
            for (it, _), c in zip(loaded, codes):
                rng = random.Random(f"{self.cfg.seed}:{it.id}")  # the same prompt whatever the batch
                src = MediaCodes(inp, [int(x) for x in np.asarray(c).reshape(-1)])
                prompts.append(build_prompt(b, task_content(src, inp, outm, rng), outm))
                live.append(it)
        else:
            for it in items:
                rng = random.Random(f"{self.cfg.seed}:{it.id}")
                prompts.append(build_prompt(b, task_content(it.source, "text", outm, rng), outm))
                asked.append(it.source)
                live.append(it)
        if not live:
            return list(recs.values())
        torch.manual_seed(zlib.crc32(f"{self.cfg.seed}:{live[0].id}".encode()))  # sampling: the same per batch on a rerun
        gen = self.generate(b, prompts, outm, self.settings, requests=asked or None)
        for it, g in zip(live, gen):
            r = recs[it.id]
            if outm == "text":
                r["output"] = generated_text(b, g)
                continue
            codes = media_codes(b, outm, g)
            r["n_codes"] = len(codes)
            try:
                media = self._decode(outm, codes, it)
                rel = Path(self.bench.name) / f"{safe_name(it.id)}.{'png' if outm == 'image' else 'wav'}"
                (self.out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                self.tokenizer(outm).save_media(media, self.out_dir / rel)
                r["output_media"] = rel.as_posix()
            except Exception as e:  # a model can emit codes a detokenizer rejects: record, go on
                r["error"] = f"decoding {len(codes)} {outm} codes failed: {e}"
        return list(recs.values())

    def _decode(self, modality: str, codes: list[int], item: Item) -> Any:
        tok = self.tokenizer(modality)
        arr = np.asarray(codes, dtype=np.int64)
        prompt = item.extra.get("voice_prompt")
        if prompt and modality == "speech":
            from anygpt.modality.speech import SpeechTokenizerBackend

            if isinstance(tok, SpeechTokenizerBackend) and tok.voice is not None:
                return tok.decode(arr, voice_prompt=prompt)
            note = f"voice prompt not used: the speech tokenizer ({type(tok).__name__}) has no voice-prompted decoder"
            if note not in self.notes:
                self.notes.append(note)
        return tok.decode(arr)


def _device(cfg: BenchmarkConfig) -> str:
    if cfg.device:
        return cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _fingerprint(cfg: BenchmarkConfig, bench: Benchmark, settings: dict) -> dict[str, Any]:
    return {"benchmark": bench.name, "model": str(Path(cfg.model).resolve()) if cfg.model else "", "data": str(Path(cfg.data).resolve()),
            "seed": cfg.seed, "subset": cfg.subset, "decoding": settings}


def run_benchmark(cfg: BenchmarkConfig, bundle: Any = None, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run ``cfg.benchmark`` end to end; writes and returns ``OUT/<name>.json``'s content."""
    from anygpt.eval.benchmarks import get_benchmark

    bench = get_benchmark(cfg.benchmark)
    t0 = time.time()
    data = Path(cfg.data)
    read = bench.read(data, cfg.subset, cfg.seed)  # fails on a wrong layout before the (slow) model load
    items = read.items[: cfg.limit] if cfg.limit else read.items
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(cfg, bench.output_modality)
    gen_log = ItemLog(out / f"{bench.name}.items.jsonl", _fingerprint(cfg, bench, settings.to_dict())).open()
    todo = [it for it in items if it.id not in gen_log.records]
    gen = None
    if todo:
        if bundle is None:
            from anygpt.model.bundle import load_bundle

            bundle = load_bundle(cfg.model, device=_device(cfg))
        gen = _Generation(bench, bundle, cfg, out)
        bar = _Bar(len(items), len(items) - len(todo), f"{bench.name} generate", cfg.progress)
        for k in range(0, len(todo), max(1, cfg.batch_size)):
            batch = todo[k : k + cfg.batch_size]
            for rec in gen.run_batch(batch):
                gen_log.add(rec)
            bar.update(len(batch))
        bar.close()
    ids = [it.id for it in items]
    records = [gen_log.records[i] for i in ids if i in gen_log.records]
    good = [r for r in records if "error" not in r]
    failed = [f"{r['id']}: {r['error']}" for r in records if "error" in r]
    # judge models
    judges = LocalModels(cfg.models_dir, cfg.model_paths, device=_device(cfg))
    # each score line names the judge model directory that made it: another model rescores, never mixes
    score_log = ScoreLog(out / f"{bench.name}.scores.jsonl", {"benchmark": bench.name}).open()
    missing: dict[str, str] = {}
    by = {key: str(judges.paths[sc.kind]) for key, sc in bench.scorers.items()}
    for key, scorer in bench.scorers.items():
        need = [r for r in good if score_log.records.get(r["id"], {}).get(f"{key}__model") != by[key]]
        if not need:
            continue
        try:
            model = judges.get(scorer.kind)
        except NotScored as e:
            missing[key] = str(e)
            continue
        bar = _Bar(len(good), len(good) - len(need), f"{bench.name} {key}", cfg.progress)
        for k in range(0, len(need), max(1, cfg.batch_size)):
            batch = need[k : k + cfg.batch_size]
            try:
                vals = scorer.fn(batch, model, out)
            except Exception:  # one unreadable output must not lose the rest: score one by one
                vals = []
                for r in batch:
                    try:
                        vals += scorer.fn([r], model, out)
                    except Exception as e1:  # recorded, counted as unscored
                        failed.append(f"{r['id']}: {key}: {type(e1).__name__}: {e1}")
                        vals.append(None)
            for r, v in zip(batch, vals):
                score_log.add({"id": r["id"], key: v, f"{key}__model": by[key]})
            bar.update(len(batch))
        bar.close()
    scores = {i: {k: v for k, v in score_log.records.get(i, {}).items()
                  if k in by and score_log.records[i].get(f"{k}__model") == by[k]} for i in ids}
    metrics = bench.aggregate(good, scores, missing)
    for name, m in metrics.items():
        if name in bench.paper:
            m["paper"] = bench.paper[name]
    result = {
        "benchmark": bench.name,
        "protocol": bench.protocol,
        "data": {"path": str(data), "read": read.source, "layout": bench.layout, "items_available": len(read.items),
                 "items": len(items), "limit": cfg.limit, "subset": cfg.subset},
        "model": str(cfg.model),
        "decoding": {"output_modality": bench.output_modality, **settings.to_dict(),
                     "paper_settings": PAPER[bench.output_modality].to_dict(),
                     "overridden": cfg.decoding.get(bench.output_modality, {}),
                     "generator": gen.generator_name if gen else "(all items from an earlier run)"},
        "seed": cfg.seed,
        "n": len(good),
        "n_failed": len(records) - len(good),
        "metrics": metrics,
        "judge_models": judges.describe(),
        "read_errors": read.errors[:200],
        "failed_items": failed[:200],
        "notes": gen.notes if gen else [],
        "files": {"items": gen_log.path.name, "scores": score_log.path.name},
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_text(out / f"{bench.name}.json", json.dumps(result, indent=1, default=str))
    if log:
        from anygpt.eval.benchmarks.report import format_table

        log(format_table([result]))
    return result
