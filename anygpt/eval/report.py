"""The demo's report: ``metrics.json``, ``report.md`` and ``report.html`` from an eval directory.

Inputs: the directory ``anygpt eval`` wrote (``results.json`` + ``<task>.json`` + plots + samples),
optionally the training metrics JSONL file(s) (records with ``step``, ``loss`` and optional
per-modality keys such as ``modality/image`` or ``loss_image``, optional ``split`` and ``stage``;
one file per stage as ``{"pretrain": path, "sft": path}``), and run facts (seeds,
seconds, model path…). The HTML needs nothing outside the report folder: plots, sample media and
the loss curves are copied in and referenced by relative paths.

``metrics.json`` is flat: ``<task>.<metric>`` for every numeric metric (``asr.wer``, ``asr.n``,
``image_to_text.attribute_accuracy``…) plus ``run.seconds`` and ``run.seed``.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from anygpt.eval import plots
from anygpt.eval.harness import RESULTS_FILE, TASK_IO, TASK_NAMES
from anygpt.utils import atomic_write_text, read_jsonl, safe_name

# the demo run's targets: key → (comparison, threshold); what past runs showed when one was missed is in
# docs/experiments.md, the report shows only what its own run computed
TARGETS: dict[str, tuple[str, float]] = {
    "image_to_text.attribute_accuracy": (">=", 0.95),
    "text_to_image.attribute_accuracy": (">=", 0.75),
    "asr.wer": ("<=", 0.10),
    "music_to_text.instrument_accuracy": (">=", 0.80),
}
# reported beside the targets even without one
HEADLINE = (*TARGETS, "tts.wer", "text_to_music.instrument_accuracy")
METRICS_FILE = "metrics.json"


def flat_metrics(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float | int]:
    """``{"<task>.<metric>": number}`` for every numeric metric of every task (``n`` included)."""
    out: dict[str, float | int] = {}
    for task, r in results.items():
        for k, v in (r.get("metrics") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{task}.{k}"] = v
        if f"{task}.n" not in out and "n" in r:
            out[f"{task}.n"] = r["n"]
    return out


def target_status(key: str, value: float | None) -> str:
    """``pass`` / ``FAIL`` / ``n/a`` (missing or not a number) / ``–`` (no target)."""
    if key not in TARGETS:
        return "–"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    op, thr = TARGETS[key]
    return "pass" if (value >= thr if op == ">=" else value <= thr) else "FAIL"


def _wrong(example: Mapping[str, Any]) -> tuple[float, str] | None:
    """``(how wrong, how)`` for one recorded example (``colour=blue, want red`` / ``WER 0.50: …``),
    or None when it is right."""
    want, got = example.get("attributes") or {}, example.get("recovered") or {}
    bad = [f"{k}={got.get(k)}, want {v}" for k, v in want.items() if k in got and str(got.get(k)).lower() != str(v).lower()]
    if bad:
        return float(len(bad)), "; ".join(bad)
    w = example.get("wer")
    if isinstance(w, (int, float)) and w > 0:
        return float(w), f"WER {w:.2f}: {example.get('output', '')!r} for {example.get('reference', '')!r}"
    return None


def missed_detail(key: str, results: Mapping[str, Mapping[str, Any]], n_items: int = 3) -> str:
    """What the run itself shows about a missed target ``key``: the task's other accuracies and
    the worst of its recorded examples (nothing that the run did not compute)."""
    task, metric = key.split(".", 1)
    r = results.get(task) or {}
    m = r.get("metrics") or {}
    parts = [f"{k} {v:.2f}" for k, v in sorted(m.items()) if k.endswith("_accuracy") and k != metric
             and not k.startswith(("read_back", "analyser")) and isinstance(v, (int, float)) and not isinstance(v, bool)]
    examples = r.get("examples", [])
    wrong = sorted(((w[0], str(ex.get("id")), w[1]) for ex in examples for w in [_wrong(ex)] if w), key=lambda t: -t[0])
    text = ", ".join(parts)
    if wrong:
        shown = "; ".join(f"{i}: {why}" for _, i, why in wrong[:n_items])
        text += f"{'; ' if text else ''}{len(wrong)} of {len(examples)} recorded examples wrong ({shown})"
    return text or "no per-part scores or wrong examples recorded"


def load_eval_dir(eval_dir: str | os.PathLike) -> dict[str, dict]:
    """``{task: full result}`` from ``<task>.json`` files (``results.json`` decides which tasks)."""
    d = Path(eval_dir)
    try:
        summary = json.loads((d / RESULTS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{d}: no {RESULTS_FILE} (run `anygpt eval` first)") from None
    out = {}
    for task in summary:
        p = d / f"{task}.json"
        out[task] = json.loads(p.read_text(encoding="utf-8")) if p.exists() else dict(summary[task])
    return out


LOSS_PREFIXES = ("modality/", "direction/", "dataset/")  # the trainer's per-group losses


def read_loss_series(
    logs: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
) -> dict[str, tuple[list[float], list[float]]]:
    """Loss series from training metrics JSONL file(s).

    Kept per record: ``loss``, any numeric key with ``loss`` in its name, and the trainer's
    per-group keys (``modality/image``…), named ``[stage: ][split ]key``. A stage comes from the
    mapping key (``{"pretrain": p1, "sft": p2}``) or a record's ``stage`` field; the ``train``
    split is left out of names. When a stage restarts its step count, its steps are shifted to
    follow the previous stage's, so pretraining then SFT read left to right."""
    if isinstance(logs, Mapping):
        files = [(str(k), Path(v)) for k, v in logs.items()]
    elif isinstance(logs, (str, os.PathLike)):
        files = [(None, Path(logs))]
    else:
        files = [(None, Path(v)) for v in logs]
    series: dict[str, tuple[list[float], list[float]]] = {}
    offset, last_step, last_stage = 0.0, 0.0, None
    for file_stage, path in files:
        for _, rec in read_jsonl(path):
            if "step" not in rec:
                continue
            stage = file_stage or rec.get("stage")
            step = float(rec["step"])
            if stage != last_stage and last_stage is not None and step + offset <= last_step:
                offset = last_step
            last_stage = stage
            x = step + offset
            last_step = max(last_step, x)
            split = rec.get("split", "train")
            for k, v in rec.items():
                if not ("loss" in k or k.startswith(LOSS_PREFIXES)):
                    continue
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    name = (f"{stage}: " if stage else "") + ("" if split == "train" else f"{split} ") + k
                    xs, ys = series.setdefault(name, ([], []))
                    xs.append(x)
                    ys.append(float(v))
    return series


def _existing_logs(train_log) -> Any:
    """The given log(s) that exist (a missing log only leaves the loss section empty)."""
    if not train_log:
        return None
    if isinstance(train_log, Mapping):
        found = {k: v for k, v in train_log.items() if Path(v).is_file()}
    elif isinstance(train_log, (str, os.PathLike)):
        found = [train_log] if Path(train_log).is_file() else []
    else:
        found = [v for v in train_log if Path(v).is_file()]
    return found or None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _copy_in(src: str | Path | None, base: Path, report_dir: Path, sub: str) -> str | None:
    """Copy a file (absolute, or relative to ``base``) into ``report_dir/sub``; relative path back."""
    if not src:
        return None
    p = Path(src)
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        return None
    dst = report_dir / sub / f"{safe_name(p.stem)}{p.suffix.lower()}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if p.resolve() != dst.resolve():
        shutil.copyfile(p, dst)
    return dst.relative_to(report_dir).as_posix()


def _media_html(rel: str | None) -> str:
    if not rel:
        return ""
    q = html.escape(rel, quote=True)
    if rel.endswith(".wav"):
        return f'<audio controls src="{q}"></audio>'
    return f'<img src="{q}" width="96" alt="{q}">'


def _media_md(rel: str | None) -> str:
    if not rel:
        return ""
    return f"[audio]({rel})" if rel.endswith(".wav") else f"![]({rel})"


def write_report(
    report_dir: str | os.PathLike,
    eval_dir: str | os.PathLike,
    train_log: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] | None = None,
    run_info: Mapping[str, Any] | None = None,
    title: str = "anygpt demo report",
    chat_hint: str | None = None,
    n_samples: int = 3,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md``, ``report.html`` (and copy plots/media) into
    ``report_dir``. ``run_info`` may hold ``seconds``, ``seed`` and anything else worth listing
    (it is shown as a table). Returns the written paths by name."""
    rd = Path(report_dir)
    rd.mkdir(parents=True, exist_ok=True)
    ed = Path(eval_dir)
    results = load_eval_dir(ed)
    run_info = dict(run_info or {})
    flat = flat_metrics(results)
    if "seconds" in run_info:
        flat["run.seconds"] = float(run_info["seconds"])
    seed = run_info.get("seed", next((r.get("seed") for r in results.values() if "seed" in r), None))
    if seed is not None:
        flat["run.seed"] = seed
    written = {"metrics": rd / METRICS_FILE}
    atomic_write_text(written["metrics"], json.dumps(flat, indent=1, sort_keys=True))

    loss_rel = None
    logs = _existing_logs(train_log)
    if logs:
        series = read_loss_series(logs)
        if series:
            written["loss_curves"] = plots.loss_curves_png(series, rd / "loss_curves.png")
            loss_rel = "loss_curves.png"

    # ---- metrics table
    rows = []
    others = sorted(k for k in flat if k not in HEADLINE and not k.endswith(".n") and not k.startswith("run.") and "_ci95_" not in k)
    for key in [*HEADLINE, *others]:
        task = key.split(".")[0]
        if key not in flat and key not in TARGETS:
            continue
        val = flat.get(key)
        why = ((results.get(task) or {}).get("metrics") or {}).get("not_scored", {}).get(key.split(".", 1)[-1])
        shown = _fmt(val) if val is not None else (f"not scored: {why}" if why else "not run")
        if f"{key}_ci95_low" in flat:
            shown += f" ({flat[f'{key}_ci95_low']:.2f}–{flat[f'{key}_ci95_high']:.2f})"
        tgt = f"{TARGETS[key][0]} {TARGETS[key][1]:g}" if key in TARGETS else ""
        rows.append((key, shown, _fmt(flat.get(f"{task}.n", "")), tgt, target_status(key, val)))

    # ---- samples
    sample_rows = []  # (task, input text/media, output text/media)
    for task in TASK_NAMES:
        r = results.get(task)
        if not r:
            continue
        media_in = TASK_IO[task][0] != "text"
        for ex in r.get("examples", [])[:n_samples]:
            out_text = str(ex.get("output", ex.get("own_asr", "")) or "")
            if ex.get("recovered"):
                rec = ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in ex["recovered"].items())
                out_text = f"{out_text} (recovered: {rec})".strip()
            if media_in:  # media → text: input media, reference text, output text
                ref = ex.get("reference", "")
                sample_rows.append((task, "", _copy_in(ex.get("input"), ed, rd, f"media/{task}/input"),
                                    ref if isinstance(ref, str) else "; ".join(ref), None, out_text, None))
            else:  # text → media: input text, reference media, generated media
                sample_rows.append((task, str(ex.get("input", "")), None, "", _copy_in(ex.get("reference_media"), ed, rd, f"media/{task}/reference"),
                                    out_text, _copy_in(ex.get("output_media"), ed, rd, f"media/{task}/output")))

    plot_rel = []
    for task, r in results.items():
        for p in r.get("plots", []):
            rel = _copy_in(p, ed, rd, "plots")
            if rel:
                plot_rel.append((task, rel))

    decoding = {t: r.get("decoding", {}) for t, r in results.items()}
    notes = [(t, n) for t, r in results.items() for n in r.get("notes", [])]
    errors = {t: len(r.get("errors", [])) for t, r in results.items() if r.get("errors")}

    # ---- markdown
    md = [f"# {title}", "", "## Metrics (held-out data)", "", "| metric | value (95 % interval) | n | target | status |", "|---|---|---|---|---|"]
    md += [f"| `{k}` | {v} | {n} | {t} | {s} |" for k, v, n, t, s in rows]
    missed = [(k, missed_detail(k, results)) for k, _, _, _, status in rows if status == "FAIL"]
    if missed:
        md += ["", "## Targets not reached: what this run shows", ""] + [f"- `{k}`: {why}" for k, why in missed]
    md += ["", "## Run", "", "| what | value |", "|---|---|"]
    md += [f"| {k} | {_fmt(v)} |" for k, v in run_info.items()]
    if seed is not None and "seed" not in run_info:
        md.append(f"| seed | {seed} |")
    md += ["", "## Decoding settings", "", "| task | settings |", "|---|---|"]
    md += [f"| {t} | `{json.dumps(d, sort_keys=True)}` |" for t, d in decoding.items()]
    md += ["", "## Training loss", ""]
    md += [f"![loss curves]({loss_rel})" if loss_rel else "(no training metrics log given)"]
    md += ["", "## Samples", "", "| task | input | reference | output |", "|---|---|---|---|"]
    for task, it, im, ref, refm, ot, om in sample_rows:
        md.append(f"| {task} | {it} {_media_md(im)} | {ref} {_media_md(refm)} | {ot} {_media_md(om)} |".replace("\n", " "))
    md += ["", "## Plots", ""] + [f"![{t}]({p})" for t, p in plot_rel]
    if notes or errors:
        md += ["", "## Notes", ""] + [f"- {t}: {n}" for t, n in notes] + [f"- {t}: {c} item(s) skipped (see {t}.json)" for t, c in errors.items()]
    if chat_hint:
        md += ["", "## Chat with the model", "", f"    {chat_hint}"]
    written["markdown"] = rd / "report.md"
    atomic_write_text(written["markdown"], "\n".join(md) + "\n")

    # ---- html
    e = html.escape
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}.pass{color:#070}.FAIL{color:#b00;font-weight:bold}</style>",
         f"</head><body><h1>{e(title)}</h1>", "<h2>Metrics (held-out data)</h2>",
         "<table><tr><th>metric</th><th>value (95 % interval)</th><th>n</th><th>target</th><th>status</th></tr>"]
    h += [f"<tr><td><code>{e(k)}</code></td><td>{e(v)}</td><td>{e(n)}</td><td>{e(t)}</td><td class='{e(s)}'>{e(s)}</td></tr>" for k, v, n, t, s in rows]
    h.append("</table>")
    if missed:
        h += ["<h2>Targets not reached: what this run shows</h2><ul>"]
        h += [f"<li><code>{e(k)}</code>: {e(why)}</li>" for k, why in missed] + ["</ul>"]
    h += ["<h2>Run</h2><table>"] + [f"<tr><td>{e(str(k))}</td><td>{e(_fmt(v))}</td></tr>" for k, v in run_info.items()]
    if seed is not None and "seed" not in run_info:
        h.append(f"<tr><td>seed</td><td>{e(str(seed))}</td></tr>")
    h += ["</table><h2>Decoding settings</h2><table>"]
    h += [f"<tr><td>{e(t)}</td><td><code>{e(json.dumps(d, sort_keys=True))}</code></td></tr>" for t, d in decoding.items()]
    h += ["</table><h2>Training loss</h2>", f"<img src='{e(loss_rel)}' alt='loss curves'>" if loss_rel else "<p>(no training metrics log given)</p>"]
    h += ["<h2>Samples</h2><table><tr><th>task</th><th>input</th><th>reference</th><th>output</th></tr>"]
    for task, it, im, ref, refm, ot, om in sample_rows:
        h.append(f"<tr><td>{e(task)}</td><td>{e(it)} {_media_html(im)}</td><td>{e(ref)} {_media_html(refm)}</td><td>{e(ot)} {_media_html(om)}</td></tr>")
    h += ["</table><h2>Plots</h2>"] + [f"<figure><img src='{e(p)}' alt='{e(t)}'><figcaption>{e(t)}</figcaption></figure>" for t, p in plot_rel]
    if notes or errors:
        h += ["<h2>Notes</h2><ul>"] + [f"<li>{e(t)}: {e(n)}</li>" for t, n in notes]
        h += [f"<li>{e(t)}: {c} item(s) skipped (see {e(t)}.json)</li>" for t, c in errors.items()] + ["</ul>"]
    if chat_hint:
        h += ["<h2>Chat with the model</h2>", f"<pre>{e(chat_hint)}</pre>"]
    h.append("</body></html>")
    written["html"] = rd / "report.html"
    atomic_write_text(written["html"], "\n".join(h) + "\n")
    return written
