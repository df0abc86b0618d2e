"""Loader throughput vs consumption: batches/s the mixture loader serves (packing + collation, no
consumer) vs batches/s a tiny Llama training step consumes, and how long the prefetching loader
makes that step wait. A ratio above 1 means the model never waits for data.

    python bench/loader_vs_consumption.py
"""

from __future__ import annotations

import json
import random
import tempfile
import time

import torch


def make_dataset(n: int, seed: int = 0):
    from datasets import Dataset

    rng = random.Random(seed)
    rows = {"input_ids": [], "labels": [], "modality": [], "direction": [], "length": []}
    for i in range(n):
        k = rng.randint(20, 300)
        ids = [rng.randint(3, 440) for _ in range(k)]
        rows["input_ids"].append(ids)
        rows["labels"].append(ids)
        rows["modality"].append(("image", "speech", "music")[i % 3])
        rows["direction"].append(("x2t", "t2x")[i % 2])
        rows["length"].append(k)
    return Dataset.from_dict(rows)


def main() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from anygpt.data.loader import MixtureLoader, load_dataset_dir
    from anygpt.data.packing import model_inputs

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for j in range(2):
            make_dataset(1500, j).save_to_disk(f"{tmp}/d{j}")
        dss = [load_dataset_dir(f"{tmp}/d{j}") for j in range(2)]
        kw = dict(weights=[0.7, 0.3], batch_size=4, row_len=512, pack=True, seed=0)

        served = MixtureLoader(dss, prefetch=0, **kw)
        t0 = time.perf_counter()
        n_served = 0
        while time.perf_counter() - t0 < 5:
            next(served)
            n_served += 1
        serve_rate = n_served / (time.perf_counter() - t0)

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=448, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                                             num_attention_heads=4, max_position_embeddings=512))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loader = MixtureLoader(dss, prefetch=4, **kw)
        next(loader)  # start the thread
        time.sleep(1.0)  # let it fill the queue, as during the engine's setup
        waited = 0.0
        t0 = time.perf_counter()
        n_used = 0
        while time.perf_counter() - t0 < 10:
            tw = time.perf_counter()
            batch = next(loader)
            waited += time.perf_counter() - tw
            out = model(**model_inputs(batch, torch.float32), labels=batch["labels"])
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            n_used += 1
        consume_rate = n_used / (time.perf_counter() - t0)
        loader.close()
    print(f"served {serve_rate:.1f} batches/s; consumed {consume_rate:.2f} batches/s (4 x 512 tokens, 1.2M-param Llama); "
          f"the step waited for data {100 * waited / (n_used / consume_rate):.2f}% of the time")
    print(json.dumps({"bench": "loader_vs_consumption", "ours": round(serve_rate, 2), "baseline": round(consume_rate, 3),
                      "ratio": round(serve_rate / consume_rate, 2), "unit": "batches/s", "better": "higher"}))


if __name__ == "__main__":
    main()
