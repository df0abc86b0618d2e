"""The embedded default: `anygpt demo` trains a tiny any-to-any model offline, end to end.

Steps (each one writes its outputs under ``--out`` and a marker in ``.done/``; a rerun after a kill
skips finished steps and finishes the rest):

1. corpus     shapes images, eSpeak NG speech, synthesised melodies, instruction conversations
2. tokenizers ``demo`` k-means tokenizers fitted on the training media (image / speech / music)
3. shards     the training media tokenized into Parquet code shards (the `anygpt tokenize` job)
4. text       a small sentencepiece text tokenizer trained on the corpus text, grown with the layout
5. data       alignment pairs (both directions) and instruction conversations as training sets
6. pretrain   a small Llama from a config, trained under DeepSpeed with two CPU processes
7. sft        instruction tuning from the pretraining export (loss on assistant turns only)
8. eval       held-out evaluation (`anygpt eval`)
9. report     report.md / report.html, loss curves, samples, metrics.json

Run: ``anygpt demo --out runs/demo`` (about 20 minutes on 2 CPU cores), ``--quick`` (every stage,
a few minutes, numbers meaningless).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from anygpt.utils import atomic_write_text
from anygpt.vocab import MODALITIES

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Sizes of the embedded default. ``quick()`` shrinks every stage for CI."""

    out: Path = Path("runs/demo")
    seed: int = 0
    nproc: int = 2
    # images and speech are where generalisation is hard (shape from patch codes, words from mel codes):
    # many distinct items, seen a few times each, beat a small set memorised. The measurements behind
    # these sizes, shares and rates: docs/experiments.md, "Embedded demo sizes"
    n_train: dict[str, int] = field(default_factory=lambda: {"image": 3000, "speech": 1500, "music": 300})
    # shares of the pretraining pairs: image and speech trade against each other for the same minutes;
    # music→text needs only a small share
    mix: dict[str, float] = field(default_factory=lambda: {"image": 0.5, "speech": 0.45, "music": 0.05})
    # share of text→media pairs. With loss on every token (below) each pair also trains its media codes,
    # so the direction only decides whether the text comes first (generation) or last (recognition).
    # Speech leans to recognition (ASR has a target, TTS not); music to generation (music→text is easy)
    t2x_prob: dict[str, float] = field(default_factory=lambda: {"image": 0.5, "speech": 0.1, "music": 0.7})
    # pretraining pairs carry loss on every token, not only on the response: the forward pass over the
    # input media is paid for anyway, and predicting its codes teaches the model the shapes' layout;
    # the SFT conversations keep loss on replies only
    pretrain_loss_on: str = "all"
    pretrain_samples: int = 12000
    n_eval: int = 100
    n_conversations: int = 400
    image_codebook: int = 256
    speech_codebook: int = 512
    music_codebook: int = 256
    text_vocab: int = 600
    model: dict = field(default_factory=lambda: {
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 512,
    })
    seq_len: int = 384
    micro_batch: int = 8
    pretrain_steps: int = 1080
    sft_steps: int = 80
    lr: float = 3e-3
    sft_lr: float = 5e-4
    eval_limit: int | None = None
    quick_mode: bool = False
    # the time budget of the whole run, in minutes (None: train exactly the steps above). The
    # pretraining starts with `probe_steps` steps, whose measured step time sizes both stages so the
    # run ends within the budget: the steps above times a factor in [min_step_scale, max_step_scale]
    minutes: float | None = 20.0
    probe_steps: int = 20
    probe_log_every: int = 5
    min_step_scale: float = 0.1
    max_step_scale: float = 2.0
    # what evaluation and report cost, in training-step times (they slow down with the machine as
    # training does); measured: docs/experiments.md, "Embedded demo sizes"
    eval_step_equiv: float = 150.0

    @classmethod
    def quick(cls, out: Path, seed: int = 0) -> "DemoConfig":
        return cls(out=out, seed=seed, n_train={"image": 48, "speech": 32, "music": 24}, n_eval=6, n_conversations=24,
                   image_codebook=32, speech_codebook=32, music_codebook=32, text_vocab=400,
                   model={"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 512},
                   seq_len=256, micro_batch=4, pretrain_samples=200, pretrain_steps=12, sft_steps=6, eval_limit=4,
                   quick_mode=True, minutes=None, probe_steps=6, probe_log_every=2, max_step_scale=1.0)


def plan_steps(cfg: DemoConfig, left_s: float, step_s: float, overhead_s: float, done_steps: int = 0) -> tuple[int, int]:
    """Pretraining and SFT steps that fit in ``left_s`` seconds: each step costs ``step_s``, each of
    the two launches still to come ``overhead_s`` (start-up, final checkpoint, export), evaluation
    and report ``cfg.eval_step_equiv`` steps. ``done_steps`` pretraining steps already ran (the
    probe). Both stages keep the configured ratio, scaled within the config's bounds."""
    affordable = (left_s - 2 * overhead_s) / step_s - cfg.eval_step_equiv + done_steps
    scale = min(cfg.max_step_scale, max(cfg.min_step_scale, affordable / (cfg.pretrain_steps + cfg.sft_steps)))
    return max(done_steps + 1, round(cfg.pretrain_steps * scale)), max(5, round(cfg.sft_steps * scale))


def step_seconds(metrics: Path, after_step: int = 0) -> float | None:
    """Seconds per training step from a ``metrics.jsonl``: the slope of the logged ``time`` over the
    train records past ``after_step`` written by one process (the last run; None: too few)."""
    from anygpt.utils import read_jsonl

    recs = [r for _, r in read_jsonl(metrics) if r.get("split") == "train" and r["step"] > after_step]
    run: list[dict] = []
    for r in recs:  # a resumed run restarts its clock: keep the records of the last process
        run = [r] if run and r["time"] < run[-1]["time"] else run + [r]
    if len(run) < 2 or run[-1]["step"] <= run[0]["step"]:
        return None
    return (run[-1]["time"] - run[0]["time"]) / (run[-1]["step"] - run[0]["step"])


class Demo:
    """Runs the steps of the embedded default with resumable markers."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.log = logger.info
        self.timings: dict[str, float] = {}
        self._step_t0 = time.time()

    def elapsed(self) -> float:
        """Seconds the run has taken so far: finished steps (as recorded, also by an earlier
        process) and the running one."""
        return sum(self.timings.values()) + time.time() - self._step_t0

    # ------------------------------------------------------------------ plumbing
    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def step(self, name: str, fn: Callable[[], None]) -> None:
        marker = self.path(".done", name)
        if marker.exists():
            self.log(f"[demo] {name}: done before, skipped")
            self.timings[name] = json.loads(marker.read_text()).get("seconds", 0.0)
            return
        self.log(f"[demo] {name} …")
        t0 = self._step_t0 = time.time()
        fn()
        dt = time.time() - t0
        self.timings[name] = dt
        atomic_write_text(marker, json.dumps({"seconds": dt}))
        self.log(f"[demo] {name}: {dt:.0f} s")

    def run(self) -> Path:
        t0 = time.time()
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path("demo_config.json"), json.dumps(asdict(self.cfg), default=str, indent=1))
        for name in ("corpus", "tokenizers", "shards", "text", "data", "pretrain", "sft", "eval", "report"):
            self.step(name, getattr(self, f"do_{name}"))
        total = time.time() - t0
        self.log(f"[demo] finished in {total / 60:.1f} min; report: {self.path('report', 'report.md')}")
        self.log(f"[demo] chat with the model:  anygpt chat --model {self.model_dir}")
        return self.path("report")

    @property
    def model_dir(self) -> Path:
        return self.path("sft", "export")

    def manifest(self, modality: str, split: str) -> Path:
        return self.path("corpus", f"{modality}_{split}.jsonl")

    def card(self, modality: str) -> Path:
        return self.path("cards", modality)

    # ------------------------------------------------------------------ steps
    def do_corpus(self) -> None:
        from anygpt.data.corpus import build_corpus

        c = self.cfg
        build_corpus(self.path("corpus"), dict(c.n_train), n_eval=c.n_eval, seed=c.seed, n_conversations=c.n_conversations,
                     progress=sys.stderr.isatty(), workers=c.nproc)

    def do_tokenizers(self) -> None:
        from anygpt.modality.kmeans_tokenizer import kmeans_tokenizer_class

        c = self.cfg
        sizes = {"image": c.image_codebook, "speech": c.speech_codebook, "music": c.music_codebook}
        for m in MODALITIES:
            cls = kmeans_tokenizer_class(m)
            tok = cls.fit(self.manifest(m, "train"), self.card(m), codebook_size=sizes[m], seed=c.seed)
            self.log(f"  {m}: {tok.codebook_size} codes, fingerprint {tok.fingerprint}")

    def do_shards(self) -> None:
        from anygpt.jobs.tokenize_media import tokenize_manifest

        for m in MODALITIES:
            res = tokenize_manifest(self.card(m), self.path("shards", m), manifest=self.manifest(m, "train"),
                                    modality=m, batch_size=32, shard_size=200, max_error_rate=0.02, device="cpu",
                                    rank=0, world_size=1, progress=sys.stderr.isatty())
            if res.failed:
                raise RuntimeError(f"tokenizing {m}: {res.failed}")

    def corpus_texts(self) -> list[str]:
        """Every text the model will read or write: captions, transcripts, descriptions,
        conversation messages (media references removed) and the instruction pools."""
        import re

        from anygpt.data.instructions import POOLS
        from anygpt.utils import read_jsonl

        texts: list[str] = []
        for m in MODALITIES:
            texts += [obj.get("text") or "" for _, obj in read_jsonl(self.manifest(m, "train"))]
        for _, obj in read_jsonl(self.path("corpus", "conversations_train.jsonl")):
            for conv in obj["conversation"]:
                texts += [re.sub(r"<(image|speech|music):[^>]*>", " ", t["message"]) for t in conv]
        for pool in POOLS.values():
            texts += pool
        return [t for t in texts if t.strip()]

    def do_text(self) -> None:
        import sentencepiece as spm

        from anygpt.modality.base import load_tokenizer
        from anygpt.vocab import VocabLayout, load_base_tokenizer

        d = self.path("text")
        d.mkdir(parents=True, exist_ok=True)
        texts = self.corpus_texts()
        random.Random(self.cfg.seed).shuffle(texts)
        (d / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=self.cfg.text_vocab, model_type="bpe",
            bos_id=1, eos_id=2, unk_id=0, pad_id=-1, byte_fallback=True, character_coverage=1.0,
            num_threads=1, minloglevel=2, hard_vocab_limit=False,
        )
        tok = load_base_tokenizer(d / "sp.model")
        sizes = {m: load_tokenizer(self.card(m), device="cpu").codebook_size for m in MODALITIES}
        layout = VocabLayout.from_profile("default", len(tok), sizes)
        layout.grow_tokenizer(tok)
        tok.save_pretrained(str(self.path("tokenizer")))
        layout.save(self.path("tokenizer"))
        self.log(f"  text vocab {layout.base_vocab_size}, grown {layout.vocab_size} (padded {layout.padded_vocab_size})")

    def do_data(self) -> None:
        import yaml

        from anygpt.data.pretrain import build_pretrain_from_recipe
        from anygpt.data.recipe import PretrainRecipe
        from anygpt.data.tokenizer import load_grown_tokenizer
        from anygpt.data.sft import build_sft
        from anygpt.modality.base import load_tokenizer

        tok, layout = load_grown_tokenizer(self.path("tokenizer"))
        recipe = {
            "template": "chat", "mix_by": "samples", "seed": self.cfg.seed, "loss_on": self.cfg.pretrain_loss_on,
            "num_samples": self.cfg.pretrain_samples,
            # declared: a sample past the training rows is cut here (training refuses undeclared overflow)
            "max_length": self.cfg.seq_len, "overlong": "truncate",
            "datasets": [
                {"name": f"{m}_pairs", "shards": str(self.path("shards", m)), "modality": m, "weight": self.cfg.mix[m],
                 "t2x_prob": self.cfg.t2x_prob[m], "card": str(self.card(m))}
                for m in MODALITIES
            ],
        }
        atomic_write_text(self.path("data", "pretrain_recipe.yaml"), yaml.safe_dump(recipe, sort_keys=False))
        build_pretrain_from_recipe(PretrainRecipe.load(self.path("data", "pretrain_recipe.yaml")), tok, layout,
                                   self.path("data", "pretrain"), overwrite=True)
        toks = {m: load_tokenizer(self.card(m), device="cpu") for m in MODALITIES}
        shards = {m: self.path("shards", m) for m in MODALITIES}
        build_sft([self.path("corpus", "conversations_train.jsonl")], tok, layout, self.path("data", "sft"),
                  tokenizers=toks, shards=shards, template_name="chat", overwrite=True,
                  max_length=self.cfg.seq_len, overlong="truncate")
        build_sft([self.path("corpus", "conversations_eval.jsonl")], tok, layout, self.path("data", "sft_val"),
                  tokenizers=toks, template_name="chat", overwrite=True, max_length=self.cfg.seq_len, overlong="truncate")

    def _train(self, stage: str, overrides: list[str]) -> None:
        from anygpt.train.config import RECIPES_DIR
        from anygpt.train.launch import launch

        c = self.cfg
        cards = json.dumps({m: str(self.card(m)) for m in MODALITIES})
        common = [
            f"stage={stage}", f"out_dir={self.path(stage)}", f"seed={c.seed}",
            f"data.seq_len={c.seq_len}", "data.pack=true", f"data.val={json.dumps([str(self.path('data', 'sft_val'))])}",
            f"deepspeed.micro_batch_size={c.micro_batch}", "deepspeed.zero_stage=2", "deepspeed.precision=bf16",
            f"export.cards={cards}", "export.template=chat", "log.every=10",
            f"checkpoint.every={max(50, (c.pretrain_steps if stage == 'pretrain' else c.sft_steps) // 3)}",
        ]
        recipe = RECIPES_DIR / "tiny.yaml"  # shipped in the package: an installed anygpt runs the demo too
        if not recipe.is_file():
            raise FileNotFoundError(f"{recipe}: the package's tiny recipe is missing (a broken install?); reinstall anygpt")
        cfg_path = self.path(f"{stage}_recipe.yaml")
        shutil.copy(recipe, cfg_path)
        proc = launch(cfg_path, common + overrides, nproc=c.nproc, capture=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{stage} training failed (exit {proc.returncode}); rerun `anygpt demo` to resume it")

    @property
    def schedule_file(self) -> Path:
        return self.path("schedule.json")

    def do_pretrain(self) -> None:
        c = self.cfg
        model_cfg = json.dumps(c.model)
        args = [
            f"model.tokenizer={self.path('tokenizer')}", f"model.from_config={model_cfg}",
            f"data.train={json.dumps([str(self.path('data', 'pretrain'))])}", f"optim.lr={c.lr}",
            # fixed, not a share of the steps: the probe and the sized run then follow one schedule
            f"optim.warmup_steps={math.ceil(0.05 * c.pretrain_steps)}",
        ]
        if c.minutes is not None and not self.schedule_file.exists():
            self._probe(args)
        if self.schedule_file.exists():
            c.pretrain_steps = json.loads(self.schedule_file.read_text())["pretrain_steps"]
        self._train("pretrain", args + [f"steps={c.pretrain_steps}"])

    def _probe(self, args: list[str]) -> None:
        """Train the first steps, measure the step time and launch overhead, and size both stages
        to the budget (written to ``schedule.json``; a resumed run reads it back)."""
        c = self.cfg
        probe = min(c.probe_steps, c.pretrain_steps)
        t0 = time.time()
        self._train("pretrain", args + [f"steps={probe}", f"log.every={c.probe_log_every}", "export.enabled=false"])
        wall = time.time() - t0
        step_s = step_seconds(self.path("pretrain", "metrics.jsonl")) or wall / probe
        overhead = max(0.0, wall - probe * step_s)
        left = c.minutes * 60 - self.elapsed()
        pre, sft = plan_steps(c, left, step_s, overhead, probe)
        plan = {"budget_s": c.minutes * 60, "left_s": round(left, 1), "step_s": round(step_s, 3),
                "overhead_s": round(overhead, 1), "probe_steps": probe, "pretrain_steps": pre, "sft_steps": sft}
        atomic_write_text(self.schedule_file, json.dumps(plan, indent=1))
        self.log(f"  probe: {step_s:.2f} s/step, {overhead:.0f} s per launch, {left / 60:.1f} min left "
                 f"→ pretrain {pre} steps, sft {sft} steps")
        need = (pre - probe + sft + c.eval_step_equiv) * step_s + 2 * overhead
        if need > left * 1.05:  # the floor (min_step_scale) is above what the budget allows
            logger.warning(f"[demo] at {step_s:.1f} s/step even the fewest steps the demo trains ({pre} + {sft}) "
                           f"need about {need / 60:.0f} of the {left / 60:.0f} minutes left: the run will overrun "
                           f"its {c.minutes:g}-minute budget (a busy machine?)")

    def do_sft(self) -> None:
        c = self.cfg
        if self.schedule_file.exists():  # re-sized to the time actually left: pretraining may have run slower
            plan = json.loads(self.schedule_file.read_text())
            step_s = step_seconds(self.path("pretrain", "metrics.jsonl"), plan["probe_steps"]) or plan["step_s"]
            left = plan["budget_s"] - self.elapsed()
            fit = int((left - plan["overhead_s"]) / step_s - c.eval_step_equiv)
            c.sft_steps = plan.setdefault("sft_steps_run", max(5, min(plan["sft_steps"], fit)))
            atomic_write_text(self.schedule_file, json.dumps(plan, indent=1))
            self.log(f"  sft: {step_s:.2f} s/step in pretraining, {left / 60:.1f} min left → {c.sft_steps} steps")
        self._train("sft", [
            f"init_from={self.path('pretrain', 'export')}", "model.from_config=null",
            f"data.train={json.dumps([str(self.path('data', 'sft')), str(self.path('data', 'pretrain'))])}",
            "data.weights=[0.5,0.5]",
            f"steps={c.sft_steps}", f"optim.lr={c.sft_lr}", "optim.warmup_ratio=0.05",
        ])

    def do_eval(self) -> None:
        from anygpt.eval.harness import EvalConfig, run_eval

        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        cfg = EvalConfig(data=self.path("corpus"), out=self.path("eval"), limit=self.cfg.eval_limit, seed=self.cfg.seed,
                         batch_size=16)
        run_eval(cfg, model_dir=self.model_dir, progress=self.log)

    def do_report(self) -> None:
        from anygpt.eval.report import write_report

        run_info = {"seconds": round(sum(self.timings.values()), 1), "seed": self.cfg.seed,
                    "mode": "quick" if self.cfg.quick_mode else "default",
                    "steps": {k: round(v, 1) for k, v in self.timings.items()},
                    "model": self.cfg.model, "pretrain_steps": self.cfg.pretrain_steps, "sft_steps": self.cfg.sft_steps}
        if self.schedule_file.exists():
            plan = json.loads(self.schedule_file.read_text())
            run_info.update(pretrain_steps=plan["pretrain_steps"], sft_steps=plan.get("sft_steps_run", plan["sft_steps"]),
                            schedule=plan)
        write_report(self.path("report"), self.path("eval"),
                     train_log={"pretrain": self.path("pretrain", "metrics.jsonl"), "sft": self.path("sft", "metrics.jsonl")},
                     run_info=run_info, chat_hint=f"anygpt chat --model {self.model_dir}")
        shutil.copy(self.path("report", "metrics.json"), self.path("metrics.json"))


def run_demo(cfg: DemoConfig) -> Path:
    """Run (or resume) the embedded default in ``cfg.out``; progress lines go to the ``anygpt`` logger."""
    return Demo(cfg).run()
