"""The package runs without the repository: a wheel installed (not editable) into a fresh venv
trains two steps of the shipped tiny recipe from a folder outside the checkout; a missing ZeRO JSON
or recipe fails naming the file."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["tiny.yaml", "sft_tiny.yaml", "pretrain_7b.yaml", "sft_7b.yaml"] + [f"ds_zero{i}.json" for i in range(4)]


def run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (a build in the checkout would leave build/ there)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(REPO / "anygpt", src / "anygpt", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", out, src], src)
    (whl,) = out.glob("anygpt-*.whl")
    return whl


def test_the_wheel_carries_the_recipes_and_zero_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in SHIPPED if f"anygpt/train/recipes/{n}" not in names]
    assert not missing, f"{wheel.name} lacks {missing}"


def test_installed_wheel_trains_two_steps_outside_the_repo(wheel, tiny_train_data, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp_path)
    py = venv / "bin" / "python"
    mine = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip())
    # torch, deepspeed … (and pip) from this test's environment, after the venv's own site-packages;
    # a plain path line, so that environment's editable-install hook (a .pth of its own) is not run
    (mine / "shared_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the checkout must not be importable
    run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel], tmp_path, env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = run([py, "-c", "import anygpt; print(anygpt.__file__)"], work, env).stdout.strip()
    assert Path(where).is_relative_to(mine), f"the fresh venv imported {where}, not its own anygpt"
    # launched ranks import the same installed package: nothing (no checkout, no site-packages) is prepended
    ranks_path = run([py, "-c", "from anygpt.train.launch import launch_env; print(launch_env()['PYTHONPATH'])"], work, env)
    assert ranks_path.stdout.strip() == "", ranks_path.stdout
    proc = run([venv / "bin" / "anygpt", "train", "--config", "tiny", "steps=2", "log.every=1", "export.enabled=false",
                f"model.tokenizer={tiny_train_data['tokenizer']}", f"data.train=[{','.join(tiny_train_data['train'])}]",
                "data.val=[]", "model.from_config.hidden_size=64", "model.from_config.intermediate_size=128",
                "model.from_config.num_hidden_layers=1", "data.seq_len=128", "out_dir=run"], work, env, timeout=600)
    records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2], proc.stdout[-2000:]
    assert (work / "run" / "checkpoints").is_dir()
    assert not (work / "train").exists() and REPO not in work.parents


def test_a_missing_zero_config_is_named(tmp_path, monkeypatch):
    from anygpt.train import loop
    from anygpt.train.config import load_config

    cfg = load_config("tiny", ["data.train=[d]", f"deepspeed.config={tmp_path / 'mine.json'}"])
    with pytest.raises(FileNotFoundError, match=r"mine\.json: DeepSpeed config \(deepspeed\.config\) not found"):
        loop.deepspeed_config(cfg, 1, False)
    (tmp_path / "mine.json").write_text('{"zero_optimization": {"overlap_comm": false}}')
    assert loop.deepspeed_config(cfg, 1, False)["zero_optimization"] == {"overlap_comm": False, "stage": 2}  # a user's own file
    monkeypatch.setattr(loop, "RECIPES_DIR", tmp_path / "gone")
    cfg = load_config("tiny", ["data.train=[d]"])
    with pytest.raises(FileNotFoundError, match=r"gone/ds_zero2\.json: the package's ZeRO-2 config is missing"):
        loop.deepspeed_config(cfg, 1, False)
