"""The training loop, top to bottom: setup, model, data, DeepSpeed engine, resume, steps,
validation, checkpoints, export.

Runs the same under ``deepspeed``, ``torchrun`` or as one plain process::

    python -m anygpt.cli train --config train/tiny.yaml steps=50
    torchrun --nproc_per_node 2 -m anygpt.cli train --config train/tiny.yaml
    deepspeed --num_gpus 8 --module anygpt.cli train --config train/pretrain_7b.yaml

Loss is the mean next-token cross-entropy over labelled tokens of each micro batch (computed
here from the logits so it can also be split by modality, direction and dataset).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
import zlib
from pathlib import Path

import torch
import torch.distributed as dist

from anygpt.data.datainfo import TRAIN_INFO_FILE, check_against_model, check_datasets
from anygpt.data.loader import MixtureLoader, check_sample_lengths, load_dataset_dir
from anygpt.data.packing import model_inputs, resolve_attention
from anygpt.data.templates import get_template
from anygpt.model.build import build_model, count_parameters, load_tokenizer_and_layout, model_hidden_size, param_groups
from anygpt.model.export import export_bundle
from anygpt.model.loss import token_losses
from anygpt.train import checkpoint, contract
from anygpt.train.config import RECIPES_DIR, TrainConfig, load_config, save_config
from anygpt.train.distributed import init_distributed
from anygpt.train.metrics import GroupedLoss, MetricsLog, default_peak_flops, plot_losses
from anygpt.train.stop import StopWatch, TrainingStopped, restores_signal_handlers
from anygpt.utils import seed_everything

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def export_cards(cfg: TrainConfig, info: dict) -> dict[str, str]:
    """The tokenizer cards the export carries: ``export.cards`` when given, else the cards the
    training data recorded (``build-data``), else those of the ``init_from`` export. A card that
    is gone is left out with one line saying how to add it."""
    if cfg.export.cards:
        return dict(cfg.export.cards)
    cards = dict(info.get("cards") or {})
    if cfg.init_from:
        for d in sorted((Path(cfg.init_from) / "tokenizers").glob("*/card.yaml")):
            cards.setdefault(d.parent.name, str(d.parent))
    out = {}
    for modality, card in cards.items():
        if Path(card).exists():
            out[modality] = card
        else:
            print0(f"export: the {modality} tokenizer card {card} (recorded by build-data) is gone; "
                   f"pass export.cards='{{\"{modality}\": \"CARD\"}}' to include it")
    return out


def print0(*args) -> None:
    """Say a line from rank 0 only (through the ``anygpt`` logger; the CLI prints it plainly)."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        logger.info(" ".join(map(str, args)))


def deepspeed_config_path(cfg: TrainConfig) -> Path:
    """``deepspeed.config`` when given, else the package's ``ds_zero{stage}.json`` (shipped in
    ``anygpt/train/recipes/``); either one missing is an error naming it, never an empty config."""
    ds = cfg.deepspeed
    if ds.config:
        path = Path(ds.config)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: DeepSpeed config (deepspeed.config) not found")
        return path
    path = RECIPES_DIR / f"ds_zero{ds.zero_stage}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the package's ZeRO-{ds.zero_stage} config is missing (a broken install?); "
                                "reinstall anygpt or pass deepspeed.config=FILE")
    return path


# ZeRO sizes written "auto" in a ZeRO JSON, as multiples of the model's hidden size h. The first three are
# Hugging Face Trainer's rule; the live / reuse / sub-group limits are one Llama layer (~12 h^2 parameters).
# DeepSpeed's defaults (1e9 live parameters and reuse distance, 1e9-element sub-groups, 5e8-element
# buckets) are sized for GPU models of billions of parameters: on a smaller model they keep the whole
# model gathered between forward and backward and allocate full-model-sized gradient buffers, so ZeRO-3
# held more per rank than ZeRO-0 (measurements in docs/experiments.md, 2026-12-01).
ZERO_AUTO = {
    "reduce_bucket_size": lambda h: h * h,
    "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
    "stage3_param_persistence_threshold": lambda h: 10 * h,
    "stage3_max_live_parameters": lambda h: 12 * h * h,
    "stage3_max_reuse_distance": lambda h: 12 * h * h,
    "sub_group_size": lambda h: 12 * h * h,
}


def fill_auto_sizes(path: Path, zero: dict, hidden_size: int | None) -> None:
    """Replace ``"auto"`` values of ``zero_optimization`` (keys of :data:`ZERO_AUTO`) by sizes
    from the model's hidden size; an ``"auto"`` elsewhere, or without a hidden size, is an error."""
    for key, value in zero.items():
        if value != "auto":
            continue
        if key not in ZERO_AUTO:
            raise ValueError(f"{path}: zero_optimization.{key} cannot be auto (auto works for {', '.join(ZERO_AUTO)})")
        if hidden_size is None:
            raise ValueError(f"{path}: zero_optimization.{key} is auto but the model's hidden size is unknown")
        zero[key] = ZERO_AUTO[key](hidden_size)


def deepspeed_config(cfg: TrainConfig, world_size: int, on_gpu: bool, hidden_size: int | None = None) -> dict:
    """The ZeRO JSON (:func:`deepspeed_config_path`) with the recipe's batch, precision, clipping
    and optimizer settings filled in (the recipe wins), and its ``"auto"`` ZeRO sizes computed from
    ``hidden_size`` (:data:`ZERO_AUTO`)."""
    ds = cfg.deepspeed
    path = deepspeed_config_path(cfg)
    try:
        conf = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
    conf.setdefault("zero_optimization", {})["stage"] = ds.zero_stage
    fill_auto_sizes(path, conf["zero_optimization"], hidden_size)
    if ds.grad_accum is None:
        total = ds.batch_size or ds.micro_batch_size * world_size
        if total % (ds.micro_batch_size * world_size):
            raise ValueError(f"deepspeed.batch_size {total} is not a multiple of micro_batch_size {ds.micro_batch_size} x {world_size} ranks")
        accum = total // (ds.micro_batch_size * world_size)
    else:
        accum = ds.grad_accum
    conf.update({
        "train_micro_batch_size_per_gpu": ds.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "train_batch_size": ds.micro_batch_size * accum * world_size,
        "gradient_clipping": cfg.optim.grad_clip,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16", **({"initial_scale_power": 16} if ds.precision == "fp16" else {})},
        "steps_per_print": 10**9,
    })
    torch_adam = cfg.optim.torch_adam if cfg.optim.torch_adam is not None else not on_gpu
    conf["optimizer"] = {"type": "AdamW", "params": {
        "lr": cfg.optim.lr, "betas": list(cfg.optim.betas), "eps": cfg.optim.eps,
        "weight_decay": cfg.optim.weight_decay, "torch_adam": torch_adam}}
    return conf


def cosine_with_warmup(cfg: TrainConfig):
    """lr multiplier: linear warmup, then cosine to ``min_lr_ratio``."""
    warmup = cfg.optim.warmup_steps if cfg.optim.warmup_steps is not None else math.ceil(cfg.optim.warmup_ratio * cfg.steps)
    floor = cfg.optim.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, cfg.steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def batch_hash(batch: dict[str, torch.Tensor]) -> int:
    """A checksum of the token ids, summed over ranks in the log to show which data a step saw."""
    return zlib.crc32(batch["input_ids"].numpy().tobytes())


def validate(engine, loaders: dict[str, MixtureLoader], max_batches: int, dtype, attention: str) -> dict[str, float]:
    """Mean validation loss per dataset (and per modality/direction within each)."""
    out: dict[str, float] = {}
    engine.eval()
    with torch.no_grad():
        for name, loader in loaders.items():
            acc = GroupedLoss({"modality": loader.modality_names, "direction": loader.direction_names})
            plan = loader.epoch_plan(0)
            for b in range(min(max_batches, len(plan))):
                batch = loader._fetch(plan[b])
                logits = engine(**to_device(model_inputs(batch, dtype, attention), engine.device), use_cache=False).logits
                loss, valid = token_losses(logits, batch["labels"].to(logits.device))
                acc.add(loss, valid, batch)
            for k, v in acc.read().items():
                out[f"{name}/{k}" if k != "loss" else f"dataset/{name}"] = v
    engine.train()
    return out


def peak_memory_mb() -> float:
    """Peak memory of the busiest rank: GPU allocations on CUDA, the process's max RSS on CPU."""
    if torch.cuda.is_available():
        mine = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource

        mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    t = torch.tensor([mine], dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def to_device(kw: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in kw.items()}


def model_source(cfg: TrainConfig):
    """``(model config, export dir or None, weights or None)``. ``init_from`` may be an export
    dir, or a checkpoint tag ``RUN/checkpoints/stepN`` of an earlier run: then that run's saved
    ``config.yaml`` says how to build the model and the tag's weights are loaded into it."""
    if not cfg.init_from or not (Path(cfg.init_from) / checkpoint.COMPLETE_FILE).exists():
        return cfg.model, cfg.init_from, None
    src_path = Path(cfg.init_from).parents[1] / "config.yaml"
    if not src_path.exists():
        raise FileNotFoundError(f"{src_path}: the checkpoint's run config is missing; cannot rebuild its model")
    src = load_config(src_path)
    if src.init_from and (Path(src.init_from) / checkpoint.COMPLETE_FILE).exists():
        raise ValueError(f"{cfg.init_from}: its run also started from a checkpoint; start from an export instead")
    mine = cfg.model
    model_cfg = dataclasses.replace(src.model, freeze=mine.freeze, lora=mine.lora, attn_implementation=mine.attn_implementation,
                                    gradient_checkpointing=mine.gradient_checkpointing)
    if src.model.lora.r > 0:
        raise ValueError(f"{cfg.init_from}: a LoRA run's checkpoint; start from its export (LoRA merged) instead")
    return model_cfg, src.init_from, checkpoint.full_weights(cfg.init_from)


@restores_signal_handlers  # SIGTERM / SIGINT handlers back however the run ends, an error mid-loop included
def run(cfg: TrainConfig) -> Path | None:
    """Train with ``cfg`` and export; returns the export dir (None when ``export.enabled`` is off).

    Initialises the process group when needed (one plain process gets world size 1) and leaves it
    initialised, so several runs can share one process; launched runs end with ``shutdown()``."""
    import deepspeed

    cfg.validate()
    rank, world, device = init_distributed()
    out_dir = Path(cfg.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    # before config.yaml is rewritten: a resume must use the settings its checkpoints were made with
    for line in contract.check_resume(cfg, out_dir, world, cosine_with_warmup, rank):
        print0(line)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    seed_everything(cfg.seed + rank)
    dtype = DTYPES[cfg.deepspeed.precision]

    # ---- model: tokenizer + layout, base LM, vocabulary grown before DeepSpeed wraps it
    model_cfg, init_dir, init_weights = model_source(cfg)
    tokenizer, layout = load_tokenizer_and_layout(model_cfg, init_dir)
    torch.manual_seed(cfg.seed)  # identical init on every rank
    # loaded in the training precision: a 7B model in bf16 is 14 GB of host memory per rank, not 28
    ds_config = deepspeed_config(cfg, world, device.type == "cuda", model_hidden_size(model_cfg, init_dir))
    # ZeRO-3: built partitioned (zero.Init), so no rank holds the whole model
    model = build_model(model_cfg, layout, tokenizer, init_dir, dtype=dtype, state_dict=init_weights,
                        zero3_config=ds_config if cfg.deepspeed.zero_stage == 3 else None)
    n_params = count_parameters(model)
    print0(f"model: {n_params / 1e6:.2f}M parameters ({count_parameters(model, True) / 1e6:.2f}M trainable), vocab {layout.padded_vocab_size}")
    if cfg.deepspeed.zero_stage == 3:
        held = sum(p.ds_tensor.numel() for p in model.parameters() if hasattr(p, "ds_tensor"))
        print0(f"ZeRO-3: built partitioned over {world} ranks, rank 0 holds {held:,} of {n_params:,} parameters")
    seed_everything(cfg.seed + rank)

    attention = resolve_attention(cfg.data.attention, model.config._attn_implementation)

    # ---- data: refuse sets built for another layout; mixture loader sharded by rank
    info = check_datasets(cfg.data.train + cfg.data.val, layout)
    if cfg.init_from:
        check_against_model(cfg.init_from, info)
    sets = {p: load_dataset_dir(p) for p in cfg.data.train + cfg.data.val}  # opened once, checked, then loaded
    contract.preflight(cfg, model, [(p, sets[p]) for p in cfg.data.train])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for p, ds in sets.items():  # a sample past seq_len would be cut silently by the packer
        check_sample_lengths(p, ds, cfg.data.seq_len)
    loader = MixtureLoader(
        [sets[p] for p in cfg.data.train], cfg.data.weights, cfg.deepspeed.micro_batch_size,
        cfg.data.seq_len, cfg.data.pack, pad_id, cfg.seed, rank, world, True, cfg.data.samples_per_epoch, cfg.data.prefetch)
    val_loaders = {Path(p).name: MixtureLoader([sets[p]], None, 1, cfg.data.seq_len,
                                               cfg.data.pack, pad_id, cfg.seed, rank, world, False, None, 0)
                   for p in cfg.data.val}

    # ---- engine
    accum = ds_config["gradient_accumulation_steps"]
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, model_parameters=param_groups(model, cfg.optim.weight_decay), config=ds_config,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(cfg)))

    # ---- resume
    step = 0
    tag = checkpoint.resolve_resume(cfg.checkpoint.resume, ckpt_dir)
    if tag is not None:
        state = checkpoint.load(engine, tag)
        step = state["step"]
        loader.load_state_dict(state["loader"])
        print0(f"resumed from {tag} at step {step}")
        if rank == 0 and (dropped := contract.trim_metrics(out_dir, step)):
            print0(f"metrics.jsonl: dropped {dropped} line(s) past step {step}, logged before the stop")

    # ---- train
    groups = {"modality": loader.modality_names, "direction": loader.direction_names,
              "dataset": [Path(p).name for p in cfg.data.train]}
    acc = GroupedLoss(groups)
    log = MetricsLog(out_dir, rank, cfg.log.tensorboard)
    peak = (cfg.log.peak_flops or default_peak_flops()) * world
    tokens = torch.zeros(2, dtype=torch.float64)  # real tokens, data checksum since the last log
    t_log = time.time()
    from tqdm import tqdm

    # rank 0 only; in a log file (no terminal) it redraws at most every 30 s instead of every step
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.stage}", unit="step", disable=rank != 0,
               mininterval=0.5 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    stop = StopWatch().install()
    while step < cfg.steps:
        for _ in range(accum):
            batch = next(loader)
            logits = engine(**to_device(model_inputs(batch, dtype, attention), engine.device), use_cache=False).logits
            loss_tok, valid = token_losses(logits, batch["labels"].to(logits.device))
            loss = loss_tok.sum() / valid.sum().clamp(min=1)
            engine.backward(loss)
            engine.step()
            acc.add(loss_tok, valid, batch)
            tokens += torch.tensor([float(batch["n_real"]), float(batch_hash(batch))], dtype=torch.float64)
        step += 1
        bar.update(1)

        if step % cfg.log.every == 0 or step == cfg.steps:
            values = acc.read()
            if dist.is_initialized():
                dist.all_reduce(tokens)
            dt = time.time() - t_log
            tps = float(tokens[0]) / dt
            values.update({"lr": scheduler.get_last_lr()[0], "tokens_per_s": tps, "mfu": 6 * n_params * tps / peak,
                           "data_hash": int(tokens[1]), "peak_mem_mb": peak_memory_mb()})
            log.write(step, values)
            if "loss" in values:
                bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
            tokens.zero_()
            t_log = time.time()
        if val_loaders and cfg.log.val_every and step % cfg.log.val_every == 0 and step != cfg.steps:
            log.write(step, validate(engine, val_loaders, cfg.log.val_batches, dtype, attention), "val")
        saved = False
        if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step != cfg.steps:
            print0(f"saved checkpoint {checkpoint.save(engine, ckpt_dir, step, loader.state_dict(), cfg.checkpoint.keep_last)}")
            saved = True
        if step < cfg.steps and stop.should_stop():  # every rank agrees, after the same step
            bar.close()
            print0(f"stopping at step {step} of {cfg.steps} ({stop.reason})")
            tag = ckpt_dir / checkpoint.tag_for(step) if saved else (
                checkpoint.save(engine, ckpt_dir, step, loader.state_dict(), cfg.checkpoint.keep_last) if cfg.checkpoint.on_stop else None)
            loader.close()
            log.close()
            stop.restore()
            print0(f"saved checkpoint {tag}; rerun the same command to resume" if tag else
                   "no checkpoint saved (checkpoint.on_stop=false)")
            from anygpt.train.distributed import shutdown

            shutdown()
            raise TrainingStopped(stop.exit_code)
    bar.close()
    stop.restore()
    loader.close()

    # ---- end: validation, final checkpoint, plot, export
    if val_loaders:
        log.write(step, validate(engine, val_loaders, cfg.log.val_batches, dtype, attention), "val")
    print0(f"saved checkpoint {checkpoint.save(engine, ckpt_dir, step, loader.state_dict(), cfg.checkpoint.keep_last)}")
    log.close()
    if rank == 0:
        plot_losses(out_dir / "metrics.jsonl", out_dir / "loss.png")
    if not cfg.export.enabled:
        return None
    template = get_template(cfg.export.template or info.get("template") or "chat")
    record = {"stage": cfg.stage, "steps": step, "data": cfg.data.train, **info}
    export_dir = export_bundle(engine, cfg.deepspeed.zero_stage, out_dir / "export", tokenizer, layout, template,
                               export_cards(cfg, info), cfg.export.generation, {TRAIN_INFO_FILE: json.dumps(record, indent=1)})
    print0(f"exported {export_dir}")
    print0("next: try it   anygpt chat --model " + str(export_dir) + "\n"
           "      score it anygpt eval --model " + str(export_dir) + " --data CORPUS --out " + str(out_dir / "eval")
           + ("\n      SFT it   anygpt train --config train/sft_tiny.yaml init_from=" + str(export_dir) if cfg.stage == "pretrain" else ""))
    return export_dir
