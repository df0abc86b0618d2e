"""MS-COCO: image captioning on the Karpathy test split (CIDEr) and text→image on val captions
(CLIP score).

Published layouts read here:

- captioning: ``DIR/dataset_coco.json`` (Karpathy's splits: ``images[]`` with ``filepath``,
  ``filename``, ``split``, ``cocoid`` and ``sentences[].raw``) and the images at
  ``DIR/<filepath>/<filename>`` (``val2014/COCO_val2014_*.jpg``). Items: ``split == "test"``
  (5,000 images), every reference sentence of an image kept.
- text→image: ``DIR/annotations/captions_val2014.json`` (``images[]``, ``annotations[]`` with
  ``image_id``, ``id``, ``caption``); ``--subset N`` captions drawn at random (seeded, from the
  annotations sorted by id) — the paper used 30k. The real image (``DIR/val2014/<file_name>``),
  when present, gives the image–image similarity too.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

from anygpt.eval.benchmarks.base import (
    Benchmark, Item, NotScored, ReadResult, Scorer, bootstrap_mean, item_scores, metric_or_reason, read_image,
)
from anygpt.eval.benchmarks.models import clip_similarity, ptb_tokenize


def _read_json(path: Path, layout: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected the published layout: {layout})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def cider_pycoco(references: dict[str, list[str]], hypotheses: dict[str, str]) -> tuple[float, dict[str, float], float]:
    """coco-caption's CIDEr (pycocoevalcap ``Cider``, which is CIDEr-D) and BLEU-4 over
    PTB-tokenised captions: ``(cider, {id: per-item cider}, bleu4)``."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        raise NotScored("CIDEr needs `pip install pycocoevalcap`") from None
    ids = sorted(hypotheses)
    gts = ptb_tokenize({i: references[i] for i in ids})
    res = ptb_tokenize({i: [hypotheses[i]] for i in ids})
    for i in ids:  # the PTB tokenizer can turn a punctuation-only caption into "": Cider needs one string
        res[i] = res[i] or [""]
    score, per = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return float(score), dict(zip(ids, map(float, per))), float(bleu[3])


class CocoCaption(Benchmark):
    name = "coco-caption"
    input_modality, output_modality = "image", "text"
    paper = {"cider": 107.5}
    layout = "DIR/dataset_coco.json (Karpathy splits) + DIR/val2014/*.jpg"
    protocol = ("MS-COCO 2014 Karpathy test split (split == 'test' in dataset_coco.json); one caption per image from the "
                "reference pretraining prompt '{instruction} {image}'; CIDEr (coco-caption's Cider scorer = CIDEr-D, "
                "pycocoevalcap) against all reference sentences of the image after the Stanford PTB tokenizer, "
                "reported x100 as the paper; 95 % interval: bootstrap over images of the per-image CIDEr (document "
                "frequencies fixed from the whole set)")

    def read(self, data: Path, subset: int | None, seed: int) -> ReadResult:
        f = data / "dataset_coco.json"
        d = _read_json(f, self.layout)
        if not isinstance(d, dict) or not isinstance(d.get("images"), list):
            raise ValueError(f"{f}: expected Karpathy's {{'images': [...]}} (dataset_coco.json)")
        items, errors = [], []
        for k, im in enumerate(d["images"]):
            if not isinstance(im, dict) or im.get("split") != "test":
                continue
            try:
                refs = [str(s["raw"]) for s in im["sentences"]]
                path = data / str(im["filepath"]) / str(im["filename"])
                key = str(im.get("cocoid", im.get("imgid", k)))
            except (KeyError, TypeError) as e:
                errors.append(f"{f}: images[{k}]: missing {e}")
                continue
            items.append(Item(key, str(path), refs))
        if not items:
            raise ValueError(f"{f}: no image with split == 'test'")
        return ReadResult(items, errors, str(f))

    def aggregate(self, records: Sequence[dict], scores: dict[str, dict], missing: dict[str, str]) -> dict[str, dict]:
        refs = {r["id"]: r["references"] for r in records}
        hyps = {r["id"]: r["output"] for r in records}

        def both():
            if not hyps:
                raise NotScored("no captions")
            c, per, b = cider_pycoco(refs, hyps)
            m = bootstrap_mean([per[i] * 100 for i in sorted(per)])
            m["value"] = c * 100
            return m, b

        try:
            cider, bleu = both()
        except NotScored as e:
            return {"cider": {"not_scored": str(e)}, "bleu4": {"not_scored": str(e)}}
        return {"cider": cider, "bleu4": {"value": bleu * 100, "n": cider["n"], "note": "corpus BLEU-4 x100, no interval"}}


def _clip_text(records: Sequence[dict], model: Any, out: Path) -> list[float]:
    return clip_similarity(model, [read_image(out / r["output_media"]) for r in records], texts=[r["references"][0] for r in records])


def _clip_image(records: Sequence[dict], model: Any, out: Path) -> list[Any]:
    have = [r for r in records if r.get("reference_image") and Path(r["reference_image"]).is_file()]
    got = dict(zip([r["id"] for r in have], clip_similarity(
        model, [read_image(out / r["output_media"]) for r in have], other_images=[read_image(r["reference_image"]) for r in have]))) if have else {}
    return [got.get(r["id"]) for r in records]


class CocoTextToImage(Benchmark):
    name = "coco-t2i"
    input_modality, output_modality = "text", "image"
    paper = {"clip_score": 0.65}
    layout = "DIR/annotations/captions_val2014.json (+ DIR/val2014/*.jpg for the image-image score)"
    protocol = ("MS-COCO 2014 val captions: a fixed random subset (--subset, seeded by --seed; the paper used 30k) of "
                "annotations; one image per caption from '{instruction} This is input: {caption}'; clip_score = cosine "
                "of CLIP ViT-L/14 embeddings of the generated image and its caption (unscaled, as the paper's 0.65); "
                "clip_image_similarity = cosine with the real COCO image, reported too because the paper's wording "
                "('its corresponding caption from a real image') admits both; 95 % interval: bootstrap over items")
    scorers = {"clip_score": Scorer("clip", _clip_text), "clip_image_similarity": Scorer("clip", _clip_image)}

    def read(self, data: Path, subset: int | None, seed: int) -> ReadResult:
        f = data / "annotations" / "captions_val2014.json"
        d = _read_json(f, self.layout)
        if not isinstance(d, dict) or not isinstance(d.get("annotations"), list):
            raise ValueError(f"{f}: expected COCO's {{'images': [...], 'annotations': [...]}}")
        files = {im.get("id"): im.get("file_name") for im in d.get("images", []) if isinstance(im, dict)}
        items, errors = [], []
        for k, a in enumerate(d["annotations"]):
            try:
                name = files.get(a["image_id"])
                extra = {"reference_image": str(data / "val2014" / name)} if name else {}
                items.append(Item(str(a["id"]), str(a["caption"]).strip(), [str(a["caption"]).strip()], extra))
            except (KeyError, TypeError) as e:
                errors.append(f"{f}: annotations[{k}]: missing {e}")
        if not items:
            raise ValueError(f"{f}: no annotations")
        items.sort(key=lambda it: int(it.id) if it.id.isdigit() else it.id)
        n = min(subset or 30000, len(items))
        return ReadResult(random.Random(seed).sample(items, n), errors, str(f))

    def aggregate(self, records: Sequence[dict], scores: dict[str, dict], missing: dict[str, str]) -> dict[str, dict]:
        return {k: metric_or_reason(lambda k=k: bootstrap_mean(item_scores(records, scores, k, missing)))
                for k in ("clip_score", "clip_image_similarity")}
