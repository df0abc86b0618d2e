"""The pretraining recipe (``build-data --recipe FILE``): datasets, weights, directions, template,
and the policy for a sample longer than ``max_length``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from anygpt import config as configlib
from anygpt.data.alignment import SampleBatch
from anygpt.data.error_log import ErrorLog

OVERLONG_POLICIES = ("drop", "error", "truncate")


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
    # or "truncate" (cut to max_length, counted in anygpt_data.json); see data_pipeline/README.md
    overlong: str = "drop"
    instructions: str | None = None  # instruction pools (the reference's modules or a JSON export); default ours

    @classmethod
    def load(cls, path: str | os.PathLike, overrides: Sequence[str] = ()) -> "PretrainRecipe":
        """Read a YAML recipe plus ``a.b=c`` overrides (:mod:`anygpt.config`: an unknown key or a
        value of the wrong type is one error naming the file and key); relative shard, card and
        instruction paths resolve against the recipe's folder."""
        p = Path(path)
        recipe = configlib.load(cls, p, overrides, what="recipe", file_kind="recipe")
        if not recipe.datasets:
            raise ValueError(f"{p}: a recipe needs a non-empty 'datasets' list")
        for i, spec in enumerate(recipe.datasets):
            for key in ("shards", "card"):
                v = getattr(spec, key)
                if v is not None and not Path(v).is_absolute():
                    setattr(spec, key, str(p.parent / v))
            if not 0.0 <= spec.t2x_prob <= 1.0:
                raise ValueError(f"{p}: datasets[{i}] t2x_prob must be in [0, 1]")
        if recipe.instructions and not Path(recipe.instructions).is_absolute():
            recipe.instructions = str(p.parent / recipe.instructions)
        names = [s.name for s in recipe.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"{p}: dataset names must be unique, got {names}")
        try:
            check_overlong_policy(recipe.overlong)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
        return recipe


def check_overlong_policy(policy: str) -> None:
    """Refuse an ``overlong`` value that is not one of :data:`OVERLONG_POLICIES`."""
    if policy not in OVERLONG_POLICIES:
        raise ValueError(f"overlong must be one of {', '.join(OVERLONG_POLICIES)}, not {policy!r}")


def apply_length_policy(batch: SampleBatch, max_length: int | None, policy: str, errors: ErrorLog,
                        counts: dict[str, int]) -> SampleBatch:
    """The batch's samples within ``max_length`` tokens, by the recipe's ``overlong`` policy:
    ``drop`` leaves a longer one out and records it in errors.jsonl (its stream position stays a
    gap), ``error`` stops naming it, ``truncate`` cuts it (counted in ``counts["truncated"]``).
    Without ``max_length`` every sample passes (training then refuses one longer than its
    ``seq_len``, naming it)."""
    if max_length is None:
        return batch
    lengths = batch.rendered.lengths
    long = np.flatnonzero(lengths > max_length)
    if not len(long):
        return batch
    if policy == "truncate":
        counts["truncated"] = counts.get("truncated", 0) + len(long)
        return _keep(batch, batch.take(np.arange(len(batch)), max_length))
    names = [f"{s}:{i}" for s, i in zip(batch.source.take(long).to_pylist(), batch.id.take(long).to_pylist())]
    if policy == "error":
        raise ValueError(f"{names[0]}: {int(lengths[long[0]])} tokens > max_length {max_length} "
                         "(recipe overlong: error; use drop or truncate to go on)")
    for j, name in zip(long, names):
        errors.bad(name, f"{int(lengths[j])} tokens > max_length {max_length}",
                   position=None if batch.positions is None else int(batch.positions[j]))
    return _keep(batch, batch.take(np.flatnonzero(lengths <= max_length)))


def _keep(batch: SampleBatch, new: SampleBatch) -> SampleBatch:
    new.end = batch.end  # the batch still covers its stream positions, dropped ones included
    return new
