"""The config library (anygpt/config.py): shipped recipes load, bad overrides say one line naming the
key and what was expected, and the resolved config a run writes reads back equal."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anygpt import config as C
from anygpt.train.config import RECIPES_DIR, TrainConfig, load_config, save_config

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "train").glob("*.yaml")) + sorted(RECIPES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_recipe_loads_and_its_resolved_config_round_trips(recipe, tmp_path):
    raw = yaml.safe_load(recipe.read_text())
    need = [] if raw["data"].get("train") else ["data.train=[d]"]  # the CPU recipes leave data to the user
    if raw.get("stage") == "sft" and not raw.get("init_from") and not raw["model"].get("base"):
        need.append("init_from=x")
    cfg = load_config(recipe, need)
    assert isinstance(cfg, TrainConfig) and cfg.data.train
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert C.to_yaml(load_config(tmp_path / "config.yaml")) == (tmp_path / "config.yaml").read_text()


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", r"tiny.yaml: unknown config key optim.lrr; valid: betas, eps, grad_clip, lr, "),
    ("nope=1", r"unknown config key nope; valid: checkpoint, data, deepspeed, "),
    ("steps=abc", r"tiny.yaml: config key steps: expected int, got 'abc'$"),
    ("optim.warmup_steps=1.5", r"config key optim.warmup_steps: expected int or null, got 1.5$"),
    ("log.tensorboard=maybe", r"config key log.tensorboard: expected bool, got 'maybe'$"),
    ("optim.betas=[0.9, x]", r"config key optim.betas\[1\]: expected float, got 'x'$"),
    ("model.lora=[1]", r"config key model.lora: expected a mapping, got list \[1\]$"),
    ("data.train={a: 1}", r"config key data.train: expected list\[str\], got dict"),
    ("steps", r"override 'steps': expected KEY=VALUE$"),
])
def test_a_bad_override_is_one_line_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message) as e:
        load_config(REPO / "train" / "tiny.yaml", ["data.train=[d]", override])
    assert "\n" not in str(e.value)


def test_values_convert_to_the_field_types_and_stay_literal():
    cfg = load_config(REPO / "train" / "tiny.yaml", ["data.train=[d]", "optim.lr=1e-4", "steps=7",
                                                     "model.tokenizer=${HOME}/tok", "model.from_config=null",
                                                     "model.from_config.hidden_size=8", "init_from=null"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float) and cfg.steps == 7
    assert cfg.model.tokenizer == "${HOME}/tok"  # no interpolation: what was written
    assert cfg.model.from_config == {"hidden_size": 8}  # null, then a key of it: a fresh section


def test_a_recipe_file_with_a_bad_key_is_named(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("steps: 3\nmodel:\n  from_config: {}\n  lora: {rank: 4}\ndata: {train: [d]}\n")
    with pytest.raises(ValueError, match=r"r.yaml: unknown config key model.lora.rank; valid: alpha, dropout, r, target_modules$"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="no such recipe"):
        load_config(tmp_path / "missing.yaml")


def test_frozen_and_tuple_dataclasses_build_and_dump():
    from anygpt.inference.settings import GenerationSettings
    from anygpt.modality.seed2_net import Seed2Config

    g = C.build(GenerationSettings, GenerationSettings(top_k=3), {"temperature": "0.5", "do_sample": False})
    assert (g.top_k, g.temperature, g.do_sample) == (3, 0.5, False)
    s = C.build(Seed2Config, {"image_down_dims": [8, 4, 2]})
    assert s.image_down_dims == (8, 4, 2) and C.to_dict(s)["image_down_dims"] == [8, 4, 2]
    assert C.parse_assignments(["a=1", "b=x y", "c=[1,2]", "d=true"], "--set") == {"a": 1, "b": "x y", "c": [1, 2], "d": True}


def test_card_architectures_and_generation_overrides_name_the_bad_key():
    from anygpt.inference.settings import resolve_settings
    from anygpt.modality.seed2_net import Seed2Config
    from anygpt.modality.soundstorm import SoundStormConfig

    with pytest.raises(ValueError, match=r"^unknown SEED-2 architecture key vit_widht; valid: codebook_dim, "):
        Seed2Config.from_dict({"vit_widht": 8})
    with pytest.raises(ValueError, match=r"^SoundStorm config key dim: expected int, got 'wide'$"):
        SoundStormConfig.from_dict({"dim": "wide"})
    assert SoundStormConfig.from_dict({"depth": 2}) == SoundStormConfig(depth=2)
    # `anygpt chat --set temperature=0.5 --set do_sample=false`
    s = resolve_settings("demo", "text", None, C.parse_assignments(["temperature=0.5", "do_sample=false"], "--set"))
    assert (s.temperature, s.do_sample) == (0.5, False)
    with pytest.raises(ValueError, match=r"^generation setting key top_k: expected int, got 'many'$"):
        resolve_settings("demo", "text", None, C.parse_assignments(["top_k=many"], "--set"))
    with pytest.raises(ValueError, match=r"^--set 'top_k': expected KEY=VALUE$"):
        C.parse_assignments(["top_k"], "--set")
