"""The benchmark results beside the paper's figures: a Markdown table from ``OUT/<name>.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence


def _fmt(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per (benchmark, metric): ours with its 95 % interval, n, the paper's figure."""
    lines = ["| benchmark | metric | ours | 95 % interval | n | paper |", "|---|---|---|---|---|---|"]
    for r in results:
        for name, m in r["metrics"].items():
            paper = _fmt(m["paper"]) if "paper" in m else ""
            if "not_scored" in m:
                lines.append(f"| {r['benchmark']} | {name} | not scored: {m['not_scored']} |  |  | {paper} |")
                continue
            ci = f"{_fmt(m['ci95'][0])}–{_fmt(m['ci95'][1])}" if "ci95" in m else ""
            lines.append(f"| {r['benchmark']} | {name} | {_fmt(m['value'])} | {ci} | {m.get('n', '')} | {paper} |")
    return "\n".join(lines)


def collect(out: str | Path) -> list[dict[str, Any]]:
    """Every benchmark result JSON in ``out`` (files whose ``benchmark`` key names a benchmark)."""
    from anygpt.eval.benchmarks import BENCHMARKS

    found = []
    for name in BENCHMARKS:
        p = Path(out) / f"{name}.json"
        if p.is_file():
            found.append(json.loads(p.read_text(encoding="utf-8")))
    return found


def write_benchmark_report(out: str | Path, dest: str | Path) -> Path:
    """``dest/benchmarks.md``: the table for every benchmark result in ``out``, with each protocol
    and decoding settings (all read from the results, nothing fixed)."""
    results = collect(out)
    parts = ["# Paper benchmarks", "", format_table(results), ""]
    for r in results:
        dec = {k: v for k, v in r["decoding"].items() if k not in ("paper_settings",)}
        parts += [f"## {r['benchmark']}", "", r["protocol"], "", f"- data: {r['data']['read']} ({r['data']['items']} items, "
                  f"{r['n_failed']} failed)", f"- model: {r['model']}", f"- decoding: `{json.dumps(dec)}`", f"- seed: {r['seed']}"]
        parts += [f"- note: {n}" for n in r.get("notes", [])] + [""]
    from anygpt.utils import atomic_write_text

    p = Path(dest) / "benchmarks.md"
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, "\n".join(parts))
    return p
