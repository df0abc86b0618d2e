"""Report rendering: metrics.json keys, target pass/fail, loss curves, copied samples, sections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from anygpt.eval.report import TARGETS, flat_metrics, missed_detail, read_loss_series, target_status, write_report


def _eval_dir(d: Path) -> Path:
    import soundfile as sf

    d.mkdir(parents=True)
    (d / "samples" / "text_to_image").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(d / "samples" / "text_to_image" / "x1.png")
    Image.new("RGB", (8, 8), "blue").save(d / "in1.png")
    (d / "samples" / "tts").mkdir(parents=True)
    sf.write(d / "samples" / "tts" / "s1.wav", np.zeros(800, dtype=np.float32), 8000)
    Image.new("RGB", (8, 8), "white").save(d / "asr_wer_histogram.png")
    dec = {"output_modality": "text", "do_sample": False, "preset": "default"}
    tasks = {
        "image_to_text": ({"n": 20, "attribute_accuracy": 0.97, "bleu4": 0.5, "attribute_accuracy_ci95_low": 0.85,
                           "attribute_accuracy_ci95_high": 0.99}, [{"id": "i1", "input": str(d / "in1.png"), "reference": "a blue square", "output": "a blue square"}], []),
        "text_to_image": ({"n": 20, "attribute_accuracy": 0.70, "colour_accuracy": 1.0, "shape_accuracy": 0.7},
                          [{"id": "x1", "input": "a red circle", "output_media": "samples/text_to_image/x1.png",
                            "attributes": {"colour": "red", "shape": "circle"}, "recovered": {"colour": "red", "shape": "circle"}},
                           {"id": "x2", "input": "a red circle", "attributes": {"colour": "red", "shape": "circle"},
                            "recovered": {"colour": "red", "shape": "square"}}], []),
        "asr": ({"n": 10, "wer": 0.05}, [{"id": "a", "input": "missing.wav", "reference": "hello world", "output": "hello world"}], ["asr_wer_histogram.png"]),
        "tts": ({"n": 10, "wer": 0.3, "asr": "own"}, [{"id": "s1", "input": "hello", "output_media": "samples/tts/s1.wav", "own_asr": "hello"}], []),
        "music_to_text": ({"n": 8, "instrument_accuracy": 0.5}, [], []),
    }
    summary = {}
    for t, (m, ex, pl) in tasks.items():
        r = {"task": t, "metrics": m, "n": m["n"], "decoding": dec, "seed": 5, "examples": ex, "plots": pl, "errors": [], "notes": ["note " + t]}
        (d / f"{t}.json").write_text(json.dumps(r))
        summary[t] = {k: r[k] for k in ("metrics", "n", "decoding", "seed")}
    (d / "results.json").write_text(json.dumps(summary))
    return d


def test_target_status_and_flat_keys():
    assert set(TARGETS) == {"image_to_text.attribute_accuracy", "text_to_image.attribute_accuracy", "asr.wer",
                            "music_to_text.instrument_accuracy", "multi_turn.asked_modality_rate",
                            "multi_turn.later_caption_attribute_accuracy"}
    assert target_status("asr.wer", 0.1) == "pass" and target_status("asr.wer", 0.11) == "FAIL"
    assert target_status("image_to_text.attribute_accuracy", 0.899) == "FAIL" and target_status("tts.wer", 0.9) == "–"
    assert target_status("asr.wer", None) == "n/a"
    flat = flat_metrics({"asr": {"metrics": {"wer": 0.2, "n": 3, "asr": "own"}, "n": 3}})
    assert flat == {"asr.wer": 0.2, "asr.n": 3}


def test_loss_series_joins_stages_and_keeps_modality_losses(tmp_path):
    log = tmp_path / "metrics.jsonl"
    recs = [{"stage": "pretrain", "step": s, "loss": 5 - s, "loss_image": 6 - s, "lr": 1e-3} for s in (1, 2, 3)]
    recs += [{"stage": "sft", "step": s, "loss": 2 - 0.1 * s} for s in (1, 2)] + [{"note": "no step"}]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    series = read_loss_series(log)
    assert set(series) == {"pretrain: loss", "pretrain: loss_image", "sft: loss"}
    assert series["sft: loss"][0] == [4.0, 5.0]  # continues after the pretraining steps
    assert "lr" not in " ".join(series)
    # one file per stage, the trainer's record shape: split, per-modality groups, val records
    pre, sft = tmp_path / "pre.jsonl", tmp_path / "sft.jsonl"
    pre.write_text("".join(json.dumps({"step": s, "split": "train", "loss": 3.0, "modality/image": 4.0, "lr": 0.1}) + "\n" for s in (10, 20)))
    sft.write_text(json.dumps({"step": 5, "split": "train", "loss": 2.0}) + "\n" + json.dumps({"step": 5, "split": "val", "loss": 2.5}) + "\n")
    series = read_loss_series({"pretrain": pre, "sft": sft})
    assert set(series) == {"pretrain: loss", "pretrain: modality/image", "sft: loss", "sft: val loss"}
    assert series["sft: val loss"] == ([25.0], [2.5])


def test_report_writes_metrics_markdown_html_and_copies_media(tmp_path):
    ed = _eval_dir(tmp_path / "eval")
    log = tmp_path / "train.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 4.0 / s}) + "\n" for s in range(1, 6)))
    rd = tmp_path / "report"
    out = write_report(rd, ed, train_log=log, run_info={"seconds": 612.5, "seed": 5, "model": "m/"}, chat_hint="anygpt chat --model m/")
    metrics = json.loads((rd / "metrics.json").read_text())
    for key in ("image_to_text.attribute_accuracy", "text_to_image.attribute_accuracy", "asr.wer", "tts.wer", "music_to_text.instrument_accuracy"):
        assert key in metrics and key.split(".")[0] + ".n" in metrics
    assert metrics["run.seconds"] == 612.5 and metrics["run.seed"] == 5
    md = (rd / "report.md").read_text()
    for section in ("## Metrics", "## Run", "## Decoding settings", "## Training loss", "## Samples", "## Plots", "## Chat with the model"):
        assert section in md, section
    assert "| `image_to_text.attribute_accuracy` | 0.9700 (0.85–0.99) | not run | 20 / – | >= 0.9 | pass (harness) |" in md
    assert "_ci95_" not in md.split("## Run")[0]  # intervals sit beside their metric, not as rows of their own
    assert "| `text_to_image.attribute_accuracy` | 0.7000 (no interval) | not run | 20 / – | >= 0.75 | FAIL (harness) |" in md
    assert "| `music_to_text.instrument_accuracy` | 0.5000 (no interval) | not run | 8 / – | >= 0.8 | FAIL (harness) |" in md
    assert "| `multi_turn.asked_modality_rate` | not run | not run | – / – | >= 0.95 | n/a |" in md
    missed = md.split("## Targets not reached", 1)[1].split("\n## ", 1)[0]  # each missed target, and only those
    # computed from the run: the task's per-part accuracies and its wrong examples, no fixed prose
    assert "- `text_to_image.attribute_accuracy`: [harness path] colour_accuracy 1.00, shape_accuracy 0.70; 1 of 2 recorded " \
           "examples wrong (x2: shape=square, want circle)" in missed
    assert "- `music_to_text.instrument_accuracy`: [harness path] no per-part scores or wrong examples recorded" in missed
    assert "image_to_text" not in missed
    assert (rd / "loss_curves.png").read_bytes()[:4] == b"\x89PNG" and out["loss_curves"] == rd / "loss_curves.png"
    page = (rd / "report.html").read_text()
    import re

    srcs = re.findall(r"src=['\"]([^'\"]+)['\"]", page)
    assert any(s.endswith(".wav") for s in srcs) and sum(s.endswith(".png") for s in srcs) >= 4
    for s in srcs:  # self-contained: every referenced file is inside the report folder
        assert not Path(s).is_absolute() and (rd / s).is_file(), s
    assert "class='FAIL'" in page and "612.5" in page and "Targets not reached" in page


def test_a_missed_wer_target_lists_the_worst_recorded_utterances():
    res = {"asr": {"metrics": {"wer": 0.3, "n": 3}, "examples": [
        {"id": "a", "reference": "hi", "output": "hi", "wer": 0.0},
        {"id": "b", "reference": "x y", "output": "x", "wer": 0.5},
        {"id": "c", "reference": "z", "output": "", "wer": 1.0}]}}
    assert missed_detail("asr.wer", res) == "[harness path] 2 of 3 recorded examples wrong (c: WER 1.00: '' for 'z'; b: WER 0.50: 'x' for 'x y')"


def test_targets_are_judged_on_the_chat_path_and_misses_cite_its_confusions(tmp_path):
    """With a chat-path result beside the harness's, the table shows both with their intervals, the
    target is judged on the chat path, and the miss is explained from the chat run's own confusions
    and turns."""
    ed = _eval_dir(tmp_path / "eval")
    dec = {"output_modality": "text", "preset": "demo"}
    chat = {"task": "image_to_text", "path": "chat", "n": 20, "decoding": dec, "seed": 5, "errors": [], "notes": [], "plots": [],
            "metrics": {"n": 20, "attribute_accuracy": 0.4, "attribute_accuracy_ci95_low": 0.22, "attribute_accuracy_ci95_high": 0.61,
                        "confusions": {"colour": [["red", "orange", 7], ["blue", "none", 2]], "shape": []}},
            "examples": [{"id": "i1", "question": "What is in this picture?", "asked": "text", "reply_modality": "speech",
                          "reply": "", "output": "", "attributes": {"colour": "blue"}, "recovered": {"colour": None}}]}
    multi = {"task": "multi_turn", "path": "chat", "n": 2, "decoding": dec, "seed": 5, "errors": [], "notes": [], "plots": [],
             "metrics": {"n": 2, "asked_modality_rate": 0.5, "asked_modality_rate_n": 10, "asked_modality_rate_ci95_low": 0.24,
                         "asked_modality_rate_ci95_high": 0.76, "later_caption_speech_rate": 1.0},
             "examples": [{"id": "p0", "turns": [{"kind": "caption_again", "asked": "text", "reply_modality": "speech", "reply": ""}]}]}
    summary = json.loads((ed / "results.json").read_text())
    for key, r in (("image_to_text.chat", chat), ("multi_turn", multi)):
        (ed / f"{key}.json").write_text(json.dumps(r))
        summary[key] = {k: r[k] for k in ("task", "path", "metrics", "n", "decoding", "seed")}
    (ed / "results.json").write_text(json.dumps(summary))
    write_report(tmp_path / "r", ed)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| `image_to_text.attribute_accuracy` | 0.9700 (0.85–0.99) | 0.4000 (0.22–0.61) | 20 / 20 | >= 0.9 | FAIL (chat) |" in md
    assert "| `multi_turn.asked_modality_rate` | not run | 0.5000 (0.24–0.76) | – / 10 | >= 0.95 | FAIL (chat) |" in md  # n: its turns
    missed = md.split("## Targets not reached", 1)[1].split("\n## ", 1)[0]
    assert "- `image_to_text.attribute_accuracy`: [chat path] colour confusions red→orange ×7, blue→none ×2" in missed
    assert "i1: reply: asked text, got speech" in missed
    assert "later_caption_speech_rate 1.00" in missed and "p0: caption_again: asked text, got speech" in missed
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["image_to_text.chat.attribute_accuracy"] == 0.4


def test_loss_figure_has_a_panel_per_stage_and_group_with_a_log_axis_where_losses_span_decades():
    from anygpt.eval.plots import loss_panels, spans_decades

    names = ["pretrain: loss", "pretrain: val loss", "pretrain: modality/image", "pretrain: modality/speech",
             "pretrain: direction/x2t", "sft: loss", "sft: dataset/conversations"]
    assert loss_panels(names) == {"pretrain: loss": ["pretrain: loss", "pretrain: val loss"],
                                  "pretrain: modality": ["pretrain: modality/image", "pretrain: modality/speech"],
                                  "pretrain: direction": ["pretrain: direction/x2t"], "sft: loss": ["sft: loss"],
                                  "sft: dataset": ["sft: dataset/conversations"]}
    assert spans_decades([9.0, 2.0, 0.5]) and not spans_decades([9.0, 2.0, 1.0]) and not spans_decades([5.0, 0.0, 0.01])
