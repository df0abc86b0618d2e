"""The model section of a training recipe (``model:`` in ``train/*.yaml``): which causal LM to start
from, its tokenizer, attention, freezing and LoRA. Read by :mod:`anygpt.model.build`; the training
config (:class:`anygpt.train.config.TrainConfig`) nests it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoraConfig:
    """LoRA adapters on the attention projections (``r: 0`` = none)."""

    r: int = 0  # 0 = no LoRA
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    """The model to train: exactly one source (``base``, ``from_config``, or the recipe's ``init_from``)."""

    base: str | None = None  # local dir or hub id of a causal LM
    from_config: dict[str, Any] | None = None  # or a from-scratch model: {model_type: llama, hidden_size: …}
    tokenizer: str | None = None  # grown tokenizer dir (anygpt vocab --out), or a base tokenizer + profile
    profile: str | None = None  # grow the tokenizer with this layout profile when it is not grown yet
    sizes: dict[str, int] | None = None  # per-modality codebook sizes for `profile`
    attn_implementation: str = "sdpa"
    freeze: str = "none"  # none | base_vocab (old embedding rows fixed) | all_but_new_rows
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False
