"""The demo's time budget: the probe's measured step time sizes both training stages to fit."""

import json
from pathlib import Path

from anygpt.demo import DemoConfig, plan_steps, step_seconds


def test_steps_fit_the_seconds_left_and_keep_the_stage_ratio():
    cfg = DemoConfig()
    total = cfg.pretrain_steps + cfg.sft_steps
    # exactly the configured steps fit: the configured steps come back
    step_s, overhead = 0.5, 30.0
    left = (total - 20 + cfg.eval_step_equiv) * step_s + 2 * overhead
    assert plan_steps(cfg, left, step_s, overhead, done_steps=20) == (cfg.pretrain_steps, cfg.sft_steps)
    # a machine three times slower gets fewer steps in the same ratio, and the plan fits its budget
    pre, sft = plan_steps(cfg, left, 3 * step_s, overhead, done_steps=20)
    assert pre < cfg.pretrain_steps / 2 and abs(sft / pre - cfg.sft_steps / cfg.pretrain_steps) < 0.01
    assert (pre - 20 + sft + cfg.eval_step_equiv) * 3 * step_s + 2 * overhead <= left * 1.05
    # bounds: never past max_step_scale, never below min_step_scale or past the probe
    assert plan_steps(cfg, 1e9, step_s, overhead, 20)[0] == round(cfg.pretrain_steps * cfg.max_step_scale)
    assert plan_steps(cfg, 0.0, step_s, overhead, 20) == (round(cfg.pretrain_steps * cfg.min_step_scale),
                                                          max(5, round(cfg.sft_steps * cfg.min_step_scale)))
    assert plan_steps(DemoConfig(min_step_scale=0.0), 0.0, step_s, overhead, 20)[0] == 21


def test_step_seconds_reads_the_last_process_of_a_metrics_log(tmp_path: Path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "split": "train", "time": 2.0 * s, "loss": 1.0} for s in (5, 10, 15, 20)]
    rows.append({"step": 20, "split": "val", "time": 99.0, "loss": 1.0})
    # a resumed run (clock restarted) at 4 s a step
    rows += [{"step": s, "split": "train", "time": 4.0 * (s - 25), "loss": 1.0} for s in (30, 40, 50)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert step_seconds(log) == 4.0
    assert step_seconds(log, after_step=40) is None  # one record: no slope
    log.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    assert step_seconds(log) == 2.0
