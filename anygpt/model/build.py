"""Build the base causal LM for training: load or create it, grow its vocabulary, apply freezing,
LoRA and gradient checkpointing — all before DeepSpeed wraps it.

Sources (exactly one): an exported model dir (``init_from``: model, tokenizer and layout from the
bundle), ``base`` (a local dir or hub id of any Hugging Face causal LM), or ``from_config`` (a
from-scratch model, ``model_type`` defaults to ``llama``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from anygpt.model.config import ModelConfig
from anygpt.vocab import LAYOUT_FILE, VocabLayout, load_base_tokenizer

log = logging.getLogger(__name__)


def load_tokenizer_and_layout(cfg: ModelConfig, init_from: str | None = None) -> tuple[Any, VocabLayout]:
    """The grown text tokenizer and its ``VocabLayout``.

    Looks for ``anygpt_layout.json`` beside the tokenizer; else grows it with ``cfg.profile``;
    else recognises a released AnyGPT tokenizer."""
    src = init_from or cfg.tokenizer or cfg.base
    if src is None:
        raise ValueError("model.tokenizer: a from_config model needs a tokenizer (a grown tokenizer dir from `anygpt vocab`)")
    tok = load_base_tokenizer(src)
    if Path(src).is_dir() and (Path(src) / LAYOUT_FILE).exists():
        layout = VocabLayout.load(src)
        if len(tok) != layout.vocab_size:
            raise ValueError(f"{src}: tokenizer has {len(tok)} entries, its layout says {layout.vocab_size}")
    elif cfg.profile:
        layout = VocabLayout.from_profile(cfg.profile, len(tok), cfg.sizes)
        layout.grow_tokenizer(tok)
    else:
        layout = VocabLayout.detect(tok)
        if layout is None:
            raise ValueError(f"{src}: tokenizer has no {LAYOUT_FILE}; set model.profile to grow it")
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok, layout


def build_model(cfg: ModelConfig, layout: VocabLayout, tokenizer, init_from: str | None = None,
                dtype: torch.dtype = torch.float32, state_dict: dict | None = None, zero3_config: dict | None = None):
    """The causal LM with ``layout.padded_vocab_size`` embedding rows, ready for DeepSpeed;
    ``state_dict`` (full weights, e.g. from a training checkpoint) is loaded after growth.

    With ``zero3_config`` (the DeepSpeed config of a ZeRO-3 run) the model is built partitioned,
    under ``deepspeed.zero.Init`` (through ``HfDeepSpeedConfig``, which Hugging Face loading
    honours), so no rank ever holds all of it; vocabulary growth and ``state_dict`` loading then
    work on gathered parameters, one tensor at a time."""
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_ds = None
    if zero3_config is not None:
        from transformers.integrations import HfDeepSpeedConfig

        # transformers holds this only weakly: keep it alive as long as the model
        hf_ds = HfDeepSpeedConfig(zero3_config)
    kw = {"attn_implementation": cfg.attn_implementation}
    if init_from or cfg.base:
        from anygpt.utils import refuse_remote_code

        refuse_remote_code(init_from or cfg.base)
        model = AutoModelForCausalLM.from_pretrained(init_from or cfg.base, dtype=dtype, trust_remote_code=False, **kw)
    else:
        spec = dict(cfg.from_config or {})
        model_type = spec.pop("model_type", "llama")
        spec.setdefault("bos_token_id", tokenizer.bos_token_id)
        spec.setdefault("eos_token_id", tokenizer.eos_token_id)
        spec.setdefault("pad_token_id", tokenizer.pad_token_id)
        spec.setdefault("tie_word_embeddings", False)
        config = AutoConfig.for_model(model_type, vocab_size=layout.base_vocab_size, **spec)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kw)
    if hf_ds is not None:
        model._anygpt_hf_deepspeed_config = hf_ds
    layout.grow_model(model, gather=zero3_gather if hf_ds is not None else None)
    if hf_ds is not None:
        import deepspeed

        # Hugging Face's resize builds the grown embedding and head whole (outside zero.Init):
        # partition what is not partitioned yet
        deepspeed.zero.Init(module=model, config_dict_or_path=zero3_config)
    if state_dict is not None:
        if hf_ds is not None:
            load_partitioned(model, state_dict)
        else:
            model.load_state_dict(state_dict)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.freeze != "none":
        freeze_base_vocab(model, layout.base_vocab_size, only_new_rows=cfg.freeze == "all_but_new_rows")
    if cfg.lora.r > 0:
        model = apply_lora(model, cfg)
    return model


def model_hidden_size(cfg: ModelConfig, init_from: str | None = None) -> int | None:
    """The hidden size of the model :func:`build_model` will build, read from its config before
    building it (ZeRO sizes scale with it); None when the config has no ``hidden_size``."""
    from transformers import AutoConfig

    if init_from or cfg.base:
        config = AutoConfig.from_pretrained(init_from or cfg.base, trust_remote_code=False)
    else:
        spec = dict(cfg.from_config or {})
        config = AutoConfig.for_model(spec.pop("model_type", "llama"), **spec)
    return getattr(config, "hidden_size", None)


def zero3_gather(params: list[torch.nn.Parameter]):
    """Context in which ZeRO-3 partitioned ``params`` are whole; what rank 0 writes is kept on all."""
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0)


def load_partitioned(model, state_dict: dict) -> None:
    """``model.load_state_dict(state_dict)`` for a ZeRO-3 partitioned model, one parameter gathered at a time."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(state_dict))
    if missing:
        raise ValueError(f"weights lack {len(missing)} parameters of the model, e.g. {missing[:3]}")
    for name, p in params.items():
        with zero3_gather([p]):
            p.data.copy_(state_dict[name].to(p.dtype))
    for name, b in model.named_buffers():
        if name in state_dict:
            b.data.copy_(state_dict[name])


def embedding_weights(model) -> list[torch.nn.Parameter]:
    """Input embedding and LM head weights (one entry when tied)."""
    ws = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not ws[0]:
        ws.append(out.weight)
    return ws


def freeze_base_vocab(model, base_vocab_size: int, only_new_rows: bool = False) -> None:
    """Keep the original vocabulary rows fixed: a gradient hook zeroes their rows in the input
    embedding and LM head. With ``only_new_rows`` every other parameter is frozen too.

    Pair with zero weight decay on these weights (``param_groups`` does): with AdamW, an
    exactly-zero gradient gives an exactly-zero update."""
    if only_new_rows:
        for p in model.parameters():
            p.requires_grad_(False)

    def mask_old_rows(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:base_vocab_size] = 0
        return grad

    for w in embedding_weights(model):
        w.requires_grad_(True)
        w.register_hook(mask_old_rows)
        w._anygpt_frozen_rows = base_vocab_size  # read by param_groups


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on norms/biases and on row-frozen embeddings."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or hasattr(p, "_anygpt_frozen_rows") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def apply_lora(model, cfg: ModelConfig):
    """Wrap with a peft LoRA adapter; embeddings and LM head stay fully trainable so the new
    vocabulary rows learn (peft is imported only here)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError("model.lora.r > 0 needs the peft package (pip install peft)") from None
    lc = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=list(cfg.lora.target_modules), modules_to_save=["embed_tokens", "lm_head"],
                    task_type="CAUSAL_LM")
    return get_peft_model(model, lc)


def count_parameters(model, trainable_only: bool = False) -> int:
    """Parameters of the whole model (a ZeRO-3 partitioned parameter counts its full ``ds_numel``)."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad or not trainable_only)
