"""A bundle that carries its own code (``auto_map`` in tokenizer_config.json or config.json)
is refused with one line, even when the user would answer "y" to transformers' prompt; the
bundle's ``evil.py`` never runs (issue 19 item 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]

EVIL = """import pathlib
pathlib.Path(__file__).with_name("RAN").write_text("the bundle's code ran")
from transformers import LlamaTokenizerFast as EvilTokenizer, LlamaForCausalLM as EvilModel
from transformers import LlamaConfig as EvilConfig
"""


@pytest.fixture(scope="module")
def clean_bundle(tmp_path_factory, base_tokenizer_dir, image_tok_dir, infer_support) -> Path:
    return infer_support.make_bundle(tmp_path_factory.mktemp("rc") / "model", base_tokenizer_dir,
                                     cards={"image": image_tok_dir})


@pytest.mark.parametrize("file, auto_map", [
    ("tokenizer_config.json", {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizer"]}),
    ("config.json", {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}),
])
def test_bundle_with_auto_map_is_refused_and_its_code_never_runs(tmp_path, clean_bundle, child_env, file, auto_map):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(clean_bundle, model)
    cfg = json.loads((model / file).read_text(encoding="utf-8"))
    cfg["auto_map"] = auto_map
    (model / file).write_text(json.dumps(cfg), encoding="utf-8")
    (model / "evil.py").write_text(EVIL, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "anygpt.cli", "chat", "--model", str(model), "--single", "text|text|hi"],
                          cwd=REPO, env=child_env(), input="y\ny\n", capture_output=True, text=True, timeout=300)
    assert not (model / "RAN").exists(), "the bundle's own code ran"
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("anygpt chat: error:")]
    assert len(lines) == 1 and f"{file}: declares auto_map" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
