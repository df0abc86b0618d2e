"""Export a DeepSpeed-trained model as a bundle dir (see ``anygpt.model.bundle``).

Weights are gathered correctly under every ZeRO stage: stage 3 consolidates the partitions with
``engine._zero3_consolidated_16bit_state_dict()`` (a collective: every rank calls ``export``),
stages 0-2 read the full module on rank 0. The bundle is written into a temp dir and renamed into
place, so a reader never sees a half-written export.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch.distributed as dist

from anygpt.data.templates import Template
from anygpt.model.bundle import save_bundle_extras
from anygpt.vocab import VocabLayout


def export_bundle(engine, zero_stage: int, out_dir: str | os.PathLike, tokenizer, layout: VocabLayout, template: Template,
                  cards: dict[str, str] | None = None, generation: dict[str, dict] | None = None,
                  extra_files: dict[str, str] | None = None) -> Path:
    """Collective. Writes ``out_dir`` (replacing an older export) and returns it; ``extra_files``
    (name -> text) are written into the bundle too."""
    out = Path(out_dir)
    rank = dist.get_rank() if dist.is_initialized() else 0
    module = engine.module
    is_peft = hasattr(module, "merge_and_unload")
    if zero_stage == 3:
        if is_peft:
            raise ValueError("export of a LoRA model trained under ZeRO-3 is not supported; use zero_stage<=2 for LoRA")
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    else:
        state_dict = None
    if rank == 0:
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if is_peft:
            module = module.merge_and_unload()
        module.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        save_bundle_extras(tmp, tokenizer, layout, template, cards=cards, generation=generation)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()
    return out
