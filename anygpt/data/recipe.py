"""The pretraining recipe (``build-data --recipe FILE``): datasets, weights, directions, template,
and the policy for a sample longer than ``max_length``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from anygpt.data.alignment import Sample
from anygpt.data.error_log import ErrorLog
from anygpt.utils import read_yaml

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
        try:
            check_overlong_policy(d.get("overlong", "drop"))
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
        return cls(specs, **{k: v for k, v in d.items() if k != "datasets"})


def check_overlong_policy(policy: str) -> None:
    """Refuse an ``overlong`` value that is not one of :data:`OVERLONG_POLICIES`."""
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
