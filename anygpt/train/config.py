"""Typed training configuration: dataclasses are the schema, recipes are YAML, ``a.b=c`` overrides.

``load_config("train/tiny.yaml", ["optim.lr=1e-3", "deepspeed.zero_stage=3"])`` returns a
``TrainConfig``; unknown keys are an error naming the key and the valid ones. The resolved config
is written as ``OUT_DIR/config.yaml`` by every run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from anygpt import config as configlib
from anygpt.model.config import LoraConfig, ModelConfig

__all__ = ["TrainConfig", "ModelConfig", "LoraConfig", "DataConfig", "OptimConfig", "DeepSpeedConfig",
           "CheckpointConfig", "LogConfig", "ExportConfig", "load_config", "save_config", "packaged_recipe"]


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # dataset dirs (save_to_disk)
    weights: list[float] | None = None  # mixture weights by samples, one per train dir
    val: list[str] = field(default_factory=list)
    seq_len: int = 512
    pack: bool = True
    # packed-sample isolation: auto (position_ids for flash-attention varlen, else the mask) |
    # mask (4-D block-diagonal, sdpa/eager) | position_ids (flash-attention varlen only)
    attention: str = "auto"
    samples_per_epoch: int | None = None
    prefetch: int = 4


@dataclass
class OptimConfig:
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None  # overrides warmup_ratio
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0
    torch_adam: bool | None = None  # None: torch AdamW on CPU, DeepSpeed's fused Adam on GPU


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 2
    precision: str = "bf16"  # bf16 | fp16 | fp32
    config: str | None = None  # a DeepSpeed JSON to start from (default train/ds_zero{stage}.json)
    micro_batch_size: int = 1  # rows per rank per micro step
    grad_accum: int | None = None  # derived from batch_size when None
    batch_size: int | None = None  # global rows per optimizer step; None = micro * accum * world


@dataclass
class CheckpointConfig:
    every: int = 0  # steps between checkpoints (0 = only at the end)
    keep_last: int = 2
    resume: str = "auto"  # auto | none | path to a checkpoint tag dir
    on_stop: bool = True  # SIGTERM / Ctrl-C: save a checkpoint at the step where every rank stops


@dataclass
class LogConfig:
    every: int = 10
    val_every: int = 0  # 0 = validate only at the end
    val_batches: int = 20
    tensorboard: bool = True
    peak_flops: float | None = None  # per device, for MFU; None = a stated default by device


@dataclass
class ExportConfig:
    enabled: bool = True
    template: str | None = None  # template name; default: the data's, else "chat"
    cards: dict[str, str] = field(default_factory=dict)  # modality -> tokenizer card path
    generation: dict[str, dict] = field(default_factory=dict)  # output modality -> generation settings


@dataclass
class TrainConfig:
    stage: str = "pretrain"  # pretrain | sft
    out_dir: str = "runs/tiny"
    init_from: str | None = None  # an export dir, or a checkpoint tag RUN/checkpoints/stepN (sft starts from pretraining)
    steps: int = 100
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def validate(self) -> "TrainConfig":
        """Raise ValueError on inconsistent settings (one message naming the key)."""
        if self.stage not in ("pretrain", "sft"):
            raise ValueError(f"stage must be pretrain or sft, got {self.stage!r}")
        if self.deepspeed.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"deepspeed.zero_stage must be 0-3, got {self.deepspeed.zero_stage}")
        if self.deepspeed.precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"deepspeed.precision must be bf16, fp16 or fp32, got {self.deepspeed.precision!r}")
        if self.model.freeze not in ("none", "base_vocab", "all_but_new_rows"):
            raise ValueError(f"model.freeze must be none, base_vocab or all_but_new_rows, got {self.model.freeze!r}")
        if not self.data.train:
            raise ValueError("data.train: give at least one dataset directory")
        if self.data.weights is not None and len(self.data.weights) != len(self.data.train):
            raise ValueError(f"data.weights has {len(self.data.weights)} entries for {len(self.data.train)} data.train dirs")
        given = [k for k, v in (("init_from", self.init_from), ("model.base", self.model.base),
                                ("model.from_config", self.model.from_config)) if v is not None]
        if len(given) != 1:
            fix = ""
            if self.init_from is not None and self.model.from_config is not None:
                fix = ("; starting from init_from, add model.from_config=null (or use the SFT recipe "
                       "train/sft_tiny.yaml, which has none)")
            raise ValueError(f"give exactly one of init_from, model.base, model.from_config (given: {', '.join(given) or 'none'}){fix}")
        if self.stage == "sft" and self.init_from is None and self.model.from_config is not None:
            raise ValueError("stage sft starts from a pretrained model: set init_from (or model.base)")
        return self

    def to_dict(self) -> dict:
        """Plain nested dicts and lists, as written to ``config.yaml``."""
        return configlib.to_dict(self)


RECIPES_DIR = Path(__file__).with_name("recipes")  # copies of train/tiny.yaml and train/sft_tiny.yaml


def packaged_recipe(path: str | os.PathLike) -> Path:
    """``path``, or the package's copy of a shipped CPU recipe when ``path`` does not exist and is
    named like one (``train/tiny.yaml``, ``sft_tiny.yaml``, ``sft_tiny``): an installed package
    trains without a source checkout."""
    p = Path(path)
    if p.exists():
        return p
    name = p.name if p.suffix else f"{p.name}.yaml"
    packaged = RECIPES_DIR / name
    return packaged if packaged.is_file() else p


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A ``TrainConfig`` from a YAML recipe (or defaults when None) plus ``key=value`` overrides
    (values parsed as YAML: ``steps=20``, ``data.train=[a,b]``, ``model.from_config.hidden_size=64``),
    validated. Bad keys and values raise one line naming them (:mod:`anygpt.config`)."""
    return configlib.load(TrainConfig, None if path is None else packaged_recipe(path), overrides,
                          file_kind="recipe").validate()


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomic); :func:`load_config` reads it back equal."""
    configlib.save(cfg, path)
