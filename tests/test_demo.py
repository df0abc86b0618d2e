"""`anygpt demo --quick` end to end: every stage runs and every artifact exists and is well formed.

A smoke check; the learning targets are verified by the full run and recorded in its report."""

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

_spec = importlib.util.spec_from_file_location("eval_support", Path(__file__).with_name("eval_support.py"))
eval_support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eval_support)  # a helper shared with test_demo (tests are not a package)

METRIC_KEYS = ["image_to_text.attribute_accuracy", "text_to_image.attribute_accuracy", "asr.wer", "tts.wer",
               "music_to_text.instrument_accuracy", "run.seconds"]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("demo") / "run"
    # with a time budget: the pretraining starts with a probe that sizes both stages (schedule.json)
    proc = cli("demo", "--quick", "--minutes", "30", "--out", out, timeout=1200)
    return out, proc


def test_quick_demo_writes_every_artifact(quick_demo):
    out, proc = quick_demo
    assert f"anygpt chat --model {out / 'sft' / 'export'}" in proc.stdout
    # corpus, tokenizers, shards
    for m in ("image", "speech", "music"):
        assert (out / "corpus" / f"{m}_train.jsonl").stat().st_size > 0
        assert (out / "corpus" / f"{m}_eval.jsonl").stat().st_size > 0
        assert (out / "cards" / m / "card.yaml").exists()
        assert list((out / "shards" / m).glob("*.parquet"))
    # training: both stages exported a loadable bundle with metrics and loss curves
    for stage in ("pretrain", "sft"):
        exp = out / stage / "export"
        assert (exp / "model.safetensors").exists() and (exp / "anygpt_layout.json").exists()
        assert not list(exp.glob("*.bin")) and not list(exp.glob("*.pt"))
        lines = (out / stage / "metrics.jsonl").read_text().splitlines()
        assert any("loss" in json.loads(l) for l in lines)
    for m in ("image", "speech", "music"):
        assert (out / "sft" / "export" / "tokenizers" / m / "card.yaml").exists()
    # the probe's plan was followed: the pretraining log ends at the planned step (quick sizes only shrink)
    plan = json.loads((out / "schedule.json").read_text())
    assert plan["step_s"] > 0 and plan["probe_steps"] < plan["pretrain_steps"] <= 12
    steps = [json.loads(l)["step"] for l in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == plan["pretrain_steps"] and min(steps) <= plan["probe_steps"]
    # evaluation and report
    metrics = json.loads((out / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert key in metrics, key
    # the report's numbers are the eval's, and each is the score its recorded examples give
    assert all(metrics[k] == json.loads((out / "eval" / f"{k.split('.')[0]}.json").read_text())["metrics"][k.split(".")[1]]
               for k in METRIC_KEYS[:-1])
    eval_support.assert_scores_match_examples(out / "eval", METRIC_KEYS[:-1])
    report = (out / "report" / "report.md").read_text()
    for section in ("Metrics", "Decoding settings"):
        assert section in report
    html = (out / "report" / "report.html").read_text()
    assert "<img" in html and "<audio" in html
    with Image.open(out / "report" / "loss_curves.png") as im:
        assert im.size[0] > 100


def test_quick_demo_rerun_skips_finished_steps(quick_demo, cli):
    out, _ = quick_demo
    proc = cli("demo", "--quick", "--out", out, timeout=600)
    assert proc.stdout.count("done before, skipped") == 9
