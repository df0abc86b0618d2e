"""Pretraining sets: alignment pairs from code shards (a recipe) or from the reference's JSONL.

A recipe build mixes its datasets by weight (:mod:`anygpt.data.mixture`), renders the samples in
batches (:mod:`anygpt.data.alignment`), applies the recipe's overlong policy and streams them to
disk (:mod:`anygpt.data.writer`); an interrupted build resumes when rerun. The output and its
``anygpt_data.json`` are described in :mod:`anygpt.data.writer` and :mod:`anygpt.data.datainfo`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from pathlib import Path
from typing import Iterator, Sequence

from anygpt.data.alignment import DIRECTIONS, BuiltSample, SampleBatch, draw_direction, render_alignment, render_alignments
from anygpt.data.datainfo import data_info
from anygpt.data.error_log import ErrorLog
from anygpt.data.instructions import Pools, draw_instruction, instruction_source, load_instruction_pools
from anygpt.data.mixture import MixSource, mix_batches
from anygpt.data.pairs import ShardPairs, files_signature, pairs_from_shards, reference_jsonl_pairs
from anygpt.data.recipe import PretrainRecipe, apply_length_policy, check_overlong_policy
from anygpt.data.templates import BatchRenderer, get_template
from anygpt.data.tokenizer import check_template, default_template
from anygpt.data.writer import as_batches, write_dataset
from anygpt.vocab import VocabLayout, text_coverage

TEXT_CHECK_LIMIT = 20_000  # texts per source checked for unknown / dropped characters (bounded cost)


def build_pretrain_from_recipe(recipe: PretrainRecipe, tokenizer, layout: VocabLayout, out_dir: str | os.PathLike,
                               skip_bad: bool = False, overwrite: bool = False, num_proc: int = 1,
                               chunk_rows: int = 4096, shard_rows: int = 65536, batch_size: int = 512) -> Path:
    """Alignment samples from code shards, mixed by the recipe's weights, rendered
    ``batch_size`` at a time (in ``num_proc`` processes) and written as they come (see
    :func:`write_dataset` for the sizes); an interrupted build resumes when rerun."""
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

    def samples(start: int) -> Iterator[SampleBatch]:
        stream = mix_batches(sources, recipe.mix_by, recipe.num_samples, recipe.num_tokens, recipe.seed, skip=start,
                             batch_size=batch_size, num_proc=num_proc)
        for b in as_batches(stream, start, batch_size):
            yield apply_length_policy(b, recipe.max_length, recipe.overlong, errors, counts)

    cards = {spec.modality: str(Path(spec.card).resolve()) for spec in recipe.datasets if spec.card}
    info = data_info("pretrain", tokenizer, layout, template, fingerprints, cards=cards, mix_by=recipe.mix_by,
                     seed=recipe.seed, weights={s.name: s.weight for s in recipe.datasets},
                     t2x_prob={s.name: s.t2x_prob for s in recipe.datasets}, text_coverage=coverage,
                     instructions=instruction_source(recipe.instructions),
                     max_length=recipe.max_length, overlong=recipe.overlong, length_policy=counts)
    job = {"info": info, "recipe": dataclasses.asdict(recipe), "skip_bad": skip_bad,
           "shards": {spec.name: files_signature(spec.shards) for spec in recipe.datasets}}
    return write_dataset(samples, out_dir, info, errors, overwrite, chunk_rows, shard_rows, job_key=_job_key(job))


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

    def render(plans: Sequence[tuple[int, str, str]]) -> SampleBatch:
        idx, dirs, ins = zip(*plans)
        return render_alignments(pairs.take(idx), dirs, ins, renderer, name, loss_on)

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

    def samples() -> Iterator[BuiltSample]:
        for p in reference_jsonl_pairs(files, layout, errors):
            for d in DIRECTIONS if both_directions else (draw_direction(rng, t2x_prob),):
                yield render_alignment(p, d, template, tokenizer, layout, rng, p.source, loss_on, pools)

    info = data_info("pretrain", tokenizer, layout, template, {}, inputs=[str(f) for f in files], seed=seed,
                     t2x_prob=t2x_prob, both_directions=both_directions, instructions=instruction_source(instructions))
    return write_dataset(samples(), out_dir, info, errors, overwrite)
