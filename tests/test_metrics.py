"""Grouped training-loss accumulation: the per-group means equal a direct masked computation."""

from __future__ import annotations

import torch

from anygpt.train.metrics import GroupedLoss


def test_grouped_loss_matches_masked_means_over_steps():
    g = torch.Generator().manual_seed(0)
    groups = {"modality": ["image", "speech", "music"], "direction": ["t2x", "x2t"], "dataset": ["a"]}
    acc = GroupedLoss(groups)
    want_sum, want_n = {}, {}
    for _ in range(3):
        loss = torch.rand(2, 9, generator=g, dtype=torch.float64)
        valid = torch.rand(2, 9, generator=g) > 0.3
        loss = loss * valid
        batch = {"modality_ids": torch.randint(-1, 3, (2, 10), generator=g),  # -1: padding, in no group
                 "direction_ids": torch.randint(0, 2, (2, 10), generator=g), "dataset_ids": torch.zeros(2, 10, dtype=torch.long)}
        acc.add(loss, valid, batch)
        for kind, names in groups.items():
            ids = batch[f"{kind}_ids"][:, 1:]
            for i, n in enumerate(names):
                m = valid & (ids == i)
                want_sum[f"{kind}/{n}"] = want_sum.get(f"{kind}/{n}", 0.0) + float(loss[m].sum())
                want_n[f"{kind}/{n}"] = want_n.get(f"{kind}/{n}", 0) + int(m.sum())
        want_sum["loss"] = want_sum.get("loss", 0.0) + float(loss[valid].sum())
        want_n["loss"] = want_n.get("loss", 0) + int(valid.sum())
    got = acc.read()
    assert set(got) == {k for k, n in want_n.items() if n}
    for k, v in got.items():
        assert abs(v - want_sum[k] / want_n[k]) < 1e-12
    assert acc.read() == {}  # read resets
