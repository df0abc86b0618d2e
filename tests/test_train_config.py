"""Training config, schedule and checkpoint bookkeeping (no process group needed)."""

from __future__ import annotations

import json

import pytest

from anygpt.train import checkpoint
from anygpt.train.config import load_config
from anygpt.train.loop import cosine_with_warmup, deepspeed_config


def test_recipes_load_and_overrides_apply(repo_root):
    cfg = load_config(repo_root / "train" / "tiny.yaml", ["data.train=[a, b]", "model.tokenizer=tok", "optim.lr=1e-4",
                                                          "model.from_config.hidden_size=32", "deepspeed.zero_stage=3"])
    assert cfg.data.train == ["a", "b"] and cfg.optim.lr == 1e-4 and cfg.model.from_config["hidden_size"] == 32
    assert cfg.model.from_config["num_hidden_layers"] == 4  # the rest of the section is kept
    pre = load_config(repo_root / "train" / "pretrain_7b.yaml")
    assert (pre.optim.lr, pre.optim.warmup_ratio, pre.optim.grad_clip, pre.deepspeed.batch_size) == (6e-5, 0.03, 1.0, 480)
    sft = load_config(repo_root / "train" / "sft_7b.yaml")
    assert (sft.stage, sft.optim.lr, sft.deepspeed.batch_size, sft.steps) == ("sft", 2e-5, 64, 5000)
    ds = deepspeed_config(pre, world_size=16, on_gpu=True)
    assert ds["train_batch_size"] == 480 and ds["gradient_accumulation_steps"] == 15 and ds["bf16"]["enabled"]
    assert ds["optimizer"]["params"]["torch_adam"] is False and ds["zero_optimization"]["stage"] == 2
    with pytest.raises(ValueError, match="not a multiple"):
        deepspeed_config(pre, world_size=7, on_gpu=True)


def test_bad_keys_and_values_are_named(repo_root):
    with pytest.raises(ValueError, match="unknown config key optim.lrr"):
        load_config(repo_root / "train" / "tiny.yaml", ["optim.lrr=1", "data.train=[a]", "model.tokenizer=t"])
    with pytest.raises(ValueError, match="zero_stage"):
        load_config(repo_root / "train" / "tiny.yaml", ["deepspeed.zero_stage=4", "data.train=[a]"])
    with pytest.raises(ValueError, match="exactly one of init_from"):
        load_config(repo_root / "train" / "tiny.yaml", ["data.train=[a]", "model.base=x"])


def test_cosine_schedule_warms_up_then_decays_to_floor(repo_root):
    cfg = load_config(repo_root / "train" / "tiny.yaml", ["data.train=[a]", "steps=100", "optim.warmup_steps=10"])
    f = cosine_with_warmup(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5) and f(100) == pytest.approx(cfg.optim.min_lr_ratio)
    assert all(f(i) >= f(i + 1) for i in range(10, 100))


def fake_tag(root, step, complete=True, drop=None):
    d = root / checkpoint.tag_for(step)
    d.mkdir(parents=True)
    files = ["mp_rank_00_model_states.pt", "anygpt_rank0.pt"]
    for f in files:
        (d / f).write_bytes(b"x")
    if complete:
        (d / checkpoint.COMPLETE_FILE).write_text(json.dumps({"step": step, "world_size": 1, "files": files}))
    if drop:
        (d / drop).unlink()
    return d


def test_resume_skips_incomplete_checkpoints_and_prune_keeps_newest(tmp_path):
    fake_tag(tmp_path, 2)
    good = fake_tag(tmp_path, 4)
    fake_tag(tmp_path, 6, complete=False)  # killed before the completion record
    fake_tag(tmp_path, 8, drop="anygpt_rank0.pt")  # a listed file vanished
    assert checkpoint.resolve_resume("auto", tmp_path) == good
    assert checkpoint.resolve_resume("none", tmp_path) is None
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        checkpoint.resolve_resume(str(tmp_path / "step00000006"), tmp_path)
    checkpoint.prune(tmp_path, keep_last=1)
    assert [s for s, _ in checkpoint.list_tags(tmp_path)] == [8, 6, 4]  # newer broken ones stay for inspection
    assert checkpoint.latest_complete(tmp_path) == good


def test_data_for_another_layout_or_tokenizer_is_refused(tiny_train_data, tmp_path):
    import shutil

    from anygpt.data.datainfo import check_datasets

    layout = tiny_train_data["layout"]
    merged = check_datasets(tiny_train_data["train"], layout)
    assert merged == {"tokenizer_fingerprints": {"image": "demo-image", "speech": "demo-speech"}, "template": "chat@1"}
    bad = tmp_path / "bad"
    shutil.copytree(tiny_train_data["train"][0], bad)
    info = json.loads((bad / "anygpt_data.json").read_text())
    info["layout"]["base_vocab_size"] += 1
    (bad / "anygpt_data.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="bad/anygpt_data.json: built for layout base_vocab_size"):
        check_datasets([str(bad)], layout)
    info = json.loads((tmp_path / "bad" / "anygpt_data.json").read_text())
    info["layout"]["base_vocab_size"] -= 1
    info["tokenizer_fingerprints"] = {"image": "other"}
    (bad / "anygpt_data.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="image tokenizer fingerprint other differs"):
        check_datasets(tiny_train_data["train"] + [str(bad)], layout)
    # a model trained on other tokenizer codes refuses the data too
    from anygpt.data.datainfo import check_against_model

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "anygpt_train.json").write_text(json.dumps({"tokenizer_fingerprints": {"speech": "old"}}))
    with pytest.raises(ValueError, match="trained on speech codes of tokenizer old"):
        check_against_model(tmp_path / "model", check_datasets(tiny_train_data["train"], layout))


def test_training_only_new_rows_masks_base_rows_and_freezes_the_rest(tiny_train_data):
    import torch

    from anygpt.model.build import build_model, load_tokenizer_and_layout, param_groups
    from anygpt.model.config import ModelConfig

    cfg = ModelConfig(tokenizer=tiny_train_data["tokenizer"], freeze="all_but_new_rows",
                      from_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "num_key_value_heads": 1})
    tok, layout = load_tokenizer_and_layout(cfg)
    model = build_model(cfg, layout, tok)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["model.embed_tokens.weight", "lm_head.weight"]
    ids = torch.tensor([[1, 5, layout.start_id("image"), layout.code_range("image").start + 3, 2]])
    model(input_ids=ids, labels=ids).loss.backward()
    base = layout.base_vocab_size
    for n in trainable:
        grad = dict(model.named_parameters())[n].grad
        assert grad[:base].abs().sum() == 0 and grad[base:].abs().sum() > 0
    assert all(g["weight_decay"] == 0.0 for g in param_groups(model, 0.1))  # no decay drift on frozen rows


def test_export_carries_the_cards_the_data_recorded(tmp_path, capsys):
    """Issue 15: an export had no tokenizer cards unless export.cards was passed. The cards the
    training data was built with (recorded by build-data) travel by default, then those of the
    init_from export; export.cards still wins; a card that is gone is said, with the fix."""
    from anygpt.data.datainfo import check_datasets, write_data_info
    from anygpt.train.config import TrainConfig
    from anygpt.train.loop import export_cards
    from anygpt.vocab import VocabLayout

    layout = VocabLayout.from_profile("default", 300, {"image": 8, "speech": 8, "music": 0})
    card = tmp_path / "image.yaml"
    card.write_text("backend: demo-image\nmodality: image\n")
    data = tmp_path / "data"
    data.mkdir()
    write_data_info(data, {"layout": layout.to_dict(), "tokenizer_fingerprints": {"image": "fp"}, "template": "chat@1"})
    import json

    info_file = next(data.glob("*.json"))
    rec = json.loads(info_file.read_text())
    rec["cards"] = {"image": str(card), "speech": str(tmp_path / "gone.yaml")}
    info_file.write_text(json.dumps(rec))
    info = check_datasets([str(data)], layout)
    assert info["cards"] == rec["cards"]
    cfg = TrainConfig()
    assert export_cards(cfg, info) == {"image": str(card)}
    said = capsys.readouterr().out
    assert "speech tokenizer card" in said and "gone.yaml" in said and "export.cards=" in said
    prev = tmp_path / "prev_export"
    (prev / "tokenizers" / "music").mkdir(parents=True)
    (prev / "tokenizers" / "music" / "card.yaml").write_text("backend: demo-music\nmodality: music\n")
    cfg.init_from = str(prev)
    assert export_cards(cfg, info) == {"image": str(card), "music": str(prev / "tokenizers" / "music")}
    cfg.export.cards = {"image": "given.yaml"}
    assert export_cards(cfg, info) == {"image": "given.yaml"}


def test_tiny_sft_recipe_runs_from_an_export_and_the_package_carries_the_recipes(tmp_path):
    """Issue 15: there was no tiny SFT recipe, and tiny.yaml with init_from failed until
    model.from_config=null was guessed. The package's copies are the files in train/."""
    from pathlib import Path

    from anygpt.train.config import RECIPES_DIR, load_config

    repo = Path(__file__).resolve().parents[1]
    for name in ("tiny.yaml", "sft_tiny.yaml"):
        assert (repo / "train" / name).resolve() == (RECIPES_DIR / name).resolve(), f"train/{name} is not the packaged file"
    cfg = load_config(repo / "train" / "sft_tiny.yaml", ["init_from=runs/tiny/export", "data.train=[d]"])
    assert cfg.stage == "sft" and cfg.model.from_config is None and cfg.init_from == "runs/tiny/export"
    assert load_config("sft_tiny", ["init_from=x", "data.train=[d]"]).out_dir == cfg.out_dir  # the packaged copy
    with pytest.raises(ValueError, match=r"given: init_from, model.from_config.*add model.from_config=null.*sft_tiny.yaml"):
        load_config(repo / "train" / "tiny.yaml", ["init_from=runs/tiny/export", "data.train=[d]", "stage=sft"])


def test_zero3_auto_sizes_follow_the_hidden_size(tmp_path):
    cfg = load_config("tiny", ["data.train=[d]", "deepspeed.zero_stage=3"])
    zero = deepspeed_config(cfg, 2, False, hidden_size=1024)["zero_optimization"]
    assert (zero["reduce_bucket_size"], zero["stage3_prefetch_bucket_size"], zero["stage3_param_persistence_threshold"]) \
        == (1024**2, int(0.9 * 1024**2), 10240)
    assert zero["stage3_max_live_parameters"] == zero["stage3_max_reuse_distance"] == zero["sub_group_size"] == 12 * 1024**2
    with pytest.raises(ValueError, match=r"ds_zero3\.json: zero_optimization\.reduce_bucket_size is auto but the model's hidden size is unknown"):
        deepspeed_config(cfg, 2, False)
    (tmp_path / "mine.json").write_text('{"zero_optimization": {"stage3_prefetch_bucket_size": 7, "overlap_comm": "auto"}}')
    cfg = load_config("tiny", ["data.train=[d]", "deepspeed.zero_stage=3", f"deepspeed.config={tmp_path / 'mine.json'}"])
    with pytest.raises(ValueError, match=r"mine\.json: zero_optimization\.overlap_comm cannot be auto"):
        deepspeed_config(cfg, 2, False, hidden_size=64)
