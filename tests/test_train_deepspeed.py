"""DeepSpeed training on CPU (gloo): real launches of `anygpt train` with a tiny Llama.

Two-process runs go through torchrun (`anygpt.train.launch`); the plain run uses no launcher.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from anygpt.train.launch import launch, launch_command, launch_env

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from kill_after_step import killing  # noqa: E402

TINY_MODEL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 256}


def write_recipe(tmp: Path, tiny: dict, **over) -> Path:
    recipe = {
        "out_dir": str(tmp / "run"), "steps": 8, "seed": 0,
        "model": {"tokenizer": tiny["tokenizer"], "from_config": TINY_MODEL},
        "data": {"train": tiny["train"], "weights": [0.5, 0.5], "seq_len": 128},
        "optim": {"lr": 3e-3, "warmup_steps": 1},
        "deepspeed": {"zero_stage": 2, "precision": "fp32", "micro_batch_size": 4, "grad_accum": 1},
        "checkpoint": {"every": 0, "keep_last": 2},
        "log": {"every": 1, "tensorboard": False},
    }
    for key, value in over.items():
        section, _, leaf = key.partition("__")
        (recipe.setdefault(section, {}).__setitem__(leaf, value) if leaf else recipe.__setitem__(section, value))
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def train_records(out_dir: Path, split: str = "train") -> list[dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def run_ok(recipe: Path, overrides=(), nproc: int = 2, **env) -> subprocess.CompletedProcess:
    proc = launch(recipe, list(overrides), nproc=nproc, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def zero2_run(tiny_train_data, tmp_path_factory) -> Path:
    """One uninterrupted 2-rank ZeRO-2 run (6 steps), shared by the loss and resume tests."""
    tmp = tmp_path_factory.mktemp("zero2")
    recipe = write_recipe(tmp, tiny_train_data, steps=6, checkpoint__every=2, export={"enabled": False})
    run_ok(recipe)
    return tmp / "run"


def test_zero2_two_ranks_loss_falls(zero2_run):
    recs = train_records(zero2_run)
    assert [r["step"] for r in recs] == list(range(1, 7))
    assert recs[-1]["loss"] < recs[0]["loss"] - 0.3
    # per-modality and per-direction losses are reported from the batch's segment map
    for key in ("modality/image", "modality/speech", "direction/t2x", "direction/x2t", "dataset/image_text"):
        assert key in recs[-1]
    assert (zero2_run / "loss.png").stat().st_size > 1000
    assert yaml.safe_load((zero2_run / "config.yaml").read_text())["deepspeed"]["zero_stage"] == 2


def test_killed_run_resumes_with_same_batches_and_losses(zero2_run, tiny_train_data, tmp_path):
    recipe = write_recipe(tmp_path, tiny_train_data, steps=6, checkpoint__every=2, export={"enabled": False})
    proc = subprocess.run(killing(launch_command(recipe, nproc=2), 5), cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=launch_env())
    assert proc.returncode != 0  # rank 0 SIGKILLed right after step 5 (checkpoint at 4 is the newest)
    out = tmp_path / "run"
    assert max(r["step"] for r in train_records(out)) == 5
    run_ok(recipe)  # resume=auto
    ref = {r["step"]: r for r in train_records(zero2_run)}
    got = train_records(out)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]  # step 5 ran twice; the line logged before the kill was dropped
    for r in got:
        assert r["data_hash"] == ref[r["step"]]["data_hash"], f"step {r['step']} saw other batches"
        assert r["loss"] == pytest.approx(ref[r["step"]]["loss"], rel=1e-4, abs=1e-5)


def test_sft_can_start_from_a_pretraining_checkpoint(zero2_run, tiny_train_data):
    """init_from=RUN/checkpoints/stepN rebuilds that run's model and loads the checkpoint's weights."""
    import torch

    from anygpt.model.build import build_model, load_tokenizer_and_layout
    from anygpt.train.config import load_config
    from anygpt.train.loop import model_source

    tag = zero2_run / "checkpoints" / "step00000006"
    cfg = load_config(None, [f"init_from={tag}", "stage=sft", f"data.train=[{tiny_train_data['train'][0]}]"])
    model_cfg, init_dir, weights = model_source(cfg)
    assert model_cfg.from_config == TINY_MODEL and init_dir is None
    tok, layout = load_tokenizer_and_layout(model_cfg, init_dir)
    trained = build_model(model_cfg, layout, tok, state_dict=weights)
    torch.manual_seed(0)
    fresh = build_model(model_cfg, layout, tok)
    ids = torch.tensor([[1, 7, 9, layout.start_id("image")] + list(layout.code_range("image"))[3:15] + [layout.end_id("image"), 2]])
    with torch.no_grad():
        assert trained(input_ids=ids, labels=ids).loss < fresh(input_ids=ids, labels=ids).loss - 0.3


def test_zero3_two_ranks_trains_and_export_generates(tiny_train_data, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from anygpt.model.bundle import load_bundle

    recipe = write_recipe(tmp_path, tiny_train_data, deepspeed={"zero_stage": 3, "precision": "fp32", "micro_batch_size": 4},
                          export={"generation": {"image": {"temperature": 0.9}}})
    proc = run_ok(recipe)
    # built under zero.Init: rank 0 never held more than its half of the model
    held, total = (int(x.replace(",", "")) for x in re.search(r"rank 0 holds ([\d,]+) of ([\d,]+) parameters",
                                                              proc.stdout).groups())
    assert abs(held - total / 2) < 0.01 * total
    out = tmp_path / "run"
    recs = train_records(out)
    assert recs[-1]["loss"] < recs[0]["loss"] - 0.3
    # the gathered ZeRO-3 weights are the trained ones: the export scores the data as well as training did
    model = AutoModelForCausalLM.from_pretrained(out / "export")
    layout = tiny_train_data["layout"]
    assert model.get_input_embeddings().weight.shape[0] == layout.padded_vocab_size
    ids = torch.tensor([[1, 5, 6, 7, layout.start_id("image")]])
    gen = model.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert gen.shape == (1, 10)
    from datasets import load_from_disk

    rows = load_from_disk(tiny_train_data["train"][0])[:8]
    with torch.no_grad():
        losses = [model(input_ids=torch.tensor([i]), labels=torch.tensor([l])).loss for i, l in zip(rows["input_ids"], rows["labels"])]
    assert float(sum(losses) / len(losses)) < recs[0]["loss"] - 0.3
    bundle = load_bundle(out / "export", with_tokenizers=False)
    assert bundle.generation == {"image": {"temperature": 0.9}} and bundle.layout == layout
    state = torch.load(out / "checkpoints" / "step00000008" / "zero_pp_rank_0_mp_rank_00_model_states.pt", weights_only=False)
    assert state["global_steps"] == 8


def test_single_process_without_launcher_freezing_base_vocab(tiny_train_data, tmp_path):
    """`anygpt train` as one plain process (gradient checkpointing on); with model.freeze=base_vocab
    the base vocabulary rows stay bit-identical while the new rows and the rest train."""
    import torch
    from safetensors.torch import load_file

    recipe = write_recipe(tmp_path, tiny_train_data, steps=4, model={"tokenizer": tiny_train_data["tokenizer"],
                          "from_config": TINY_MODEL, "freeze": "base_vocab", "gradient_checkpointing": True})
    env = launch_env()
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, "-m", "anygpt.cli", "train", "--config", str(recipe), "export.enabled=true",
                           "checkpoint.resume=none"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = load_file(str(tmp_path / "run" / "export" / "model.safetensors"))
    # the same init, untrained, from the same seed
    from anygpt.model.build import build_model, load_tokenizer_and_layout
    from anygpt.train.config import load_config

    cfg = load_config(recipe)
    tok, layout = load_tokenizer_and_layout(cfg.model)
    torch.manual_seed(cfg.seed)
    init = build_model(cfg.model, layout, tok)
    base = layout.base_vocab_size
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        before = dict(init.named_parameters())[name].detach()
        assert torch.equal(weights[name][:base], before[:base]), f"{name}: base rows moved"
        assert not torch.equal(weights[name][base:], before[base:]), f"{name}: new rows did not train"
    assert not torch.equal(weights["model.layers.0.mlp.up_proj.weight"], dict(init.named_parameters())["model.layers.0.mlp.up_proj.weight"])


@pytest.mark.slow
def test_two_node_simulation_with_torchrun(tiny_train_data, tmp_path):
    """Two torchrun launchers on 127.0.0.1, --nnodes 2 --node_rank 0/1, one process each."""
    from anygpt.train.distributed import free_port

    recipe = write_recipe(tmp_path, tiny_train_data, steps=4, export={"enabled": False})
    port = free_port()
    procs = [subprocess.Popen(launch_command(recipe, nproc=1, nnodes=2, node_rank=r, master_port=port), cwd=REPO,
                              env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)
    recs = train_records(tmp_path / "run")
    assert len(recs) == 4 and recs[-1]["loss"] < recs[0]["loss"]


@pytest.mark.slow
def test_deepspeed_launcher_zero1_bf16_with_grad_accum(tiny_train_data, tmp_path):
    recipe = write_recipe(tmp_path, tiny_train_data, steps=4, export={"enabled": False},
                          deepspeed={"zero_stage": 1, "precision": "bf16", "micro_batch_size": 2, "grad_accum": 2})
    proc = launch(recipe, nproc=2, launcher="deepspeed", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = train_records(tmp_path / "run")
    assert len(recs) == 4 and recs[-1]["loss"] < recs[0]["loss"]


@pytest.mark.slow
def test_lora_sft_from_pretrain_export(tiny_train_data, tmp_path):
    """Stage sft starting from a pretraining export, with a LoRA adapter (merged on export)."""
    pytest.importorskip("peft")
    pre = write_recipe(tmp_path / "pre", tiny_train_data, steps=3) if (tmp_path / "pre").mkdir() is None else None
    run_ok(pre, nproc=1)
    sft = write_recipe(tmp_path / "sft", tiny_train_data, steps=3, stage="sft", init_from=str(tmp_path / "pre" / "run" / "export"),
                       model={"lora": {"r": 4}}) if (tmp_path / "sft").mkdir() is None else None
    run_ok(sft, nproc=1)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "run" / "export")
    assert not any("lora" in n for n, _ in model.named_parameters())
