"""The mixture loader: exact mid-epoch resume, mixture weights, disjoint ranks."""

from __future__ import annotations

import random

import pytest
import torch

from anygpt.data.loader import MixtureLoader, load_dataset_dir


def make_dataset(n: int, tag: int, modality: str, seed: int = 0, lo: int = 4, hi: int = 40):
    from datasets import Dataset

    rng = random.Random(seed)
    rows = {"input_ids": [], "labels": [], "modality": [], "direction": [], "source": [], "length": []}
    for i in range(n):
        k = rng.randint(lo, hi)
        ids = [tag * 1000 + i] + [rng.randint(3, 99) for _ in range(k - 1)]  # first id names the sample
        rows["input_ids"].append(ids)
        rows["labels"].append(ids)
        rows["modality"].append(modality)
        rows["direction"].append("x2t" if i % 2 else "t2x")
        rows["source"].append(f"src{tag}")
        rows["length"].append(k)
    return Dataset.from_dict(rows)


def first_ids(batch) -> set[int]:
    """Sample identities in a batch (the first token of each sample)."""
    starts = (batch["position_ids"] == 0) & (batch["segment_ids"] >= 0)
    return set(batch["input_ids"][starts].tolist())


@pytest.mark.parametrize("pack", [True, False])
def test_resume_mid_epoch_yields_the_same_batches(pack):
    dss = [make_dataset(60, 1, "image"), make_dataset(40, 2, "speech", seed=1)]
    kw = dict(weights=[0.6, 0.4], batch_size=3, row_len=64, pack=pack, seed=7, prefetch=2)
    full = MixtureLoader(dss, **kw)
    n = len(full) + 5  # crosses into the next epoch
    reference = [next(full) for _ in range(n)]
    full.close()

    first = MixtureLoader(dss, **kw)
    got = [next(first) for _ in range(4)]
    state = first.state_dict()
    first.close()
    resumed = MixtureLoader(dss, **kw)
    resumed.load_state_dict(state)
    got += [next(resumed) for _ in range(n - 4)]
    resumed.close()
    for a, b in zip(reference, got):
        for key in ("input_ids", "labels", "position_ids", "segment_ids"):
            assert torch.equal(a[key], b[key])
    # a new epoch reshuffles
    assert not torch.equal(reference[0]["input_ids"], reference[len(full)]["input_ids"])


def test_mixture_weights_are_honoured():
    dss = [make_dataset(50, 1, "image"), make_dataset(50, 2, "music", seed=2)]
    loader = MixtureLoader(dss, weights=[0.8, 0.2], batch_size=8, row_len=64, pack=False,
                           samples_per_epoch=2000, prefetch=0)
    counts = torch.zeros(2)
    for _ in range(len(loader)):
        b = next(loader)
        starts = (b["position_ids"] == 0) & (b["segment_ids"] >= 0)
        counts += torch.bincount(b["dataset_ids"][starts], minlength=2)
    assert abs(counts[0] / counts.sum() - 0.8) < 0.03
    assert loader.modality_names == ["image", "music"] and loader.direction_names == ["t2x", "x2t"]


def test_ranks_see_disjoint_data_and_equal_batch_counts():
    ds = [make_dataset(80, 1, "image")]
    loaders = [MixtureLoader(ds, batch_size=2, row_len=48, pack=True, seed=3, rank=r, world_size=2, prefetch=0) for r in range(2)]
    assert len(loaders[0]) == len(loaders[1])
    seen = [set().union(*(first_ids(next(l)) for _ in range(len(l)))) for l in loaders]
    assert seen[0] and seen[1] and not (seen[0] & seen[1])


def test_state_from_another_world_size_is_refused():
    ds = [make_dataset(20, 1, "image")]
    a = MixtureLoader(ds, row_len=48, world_size=1, prefetch=0)
    b = MixtureLoader(ds, row_len=48, world_size=2, rank=1, prefetch=0)
    with pytest.raises(ValueError, match="world_size"):
        b.load_state_dict(a.state_dict())


def test_load_dataset_dir_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset_dir(tmp_path / "nope")
    make_dataset(5, 1, "image").remove_columns(["labels"]).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ValueError, match="labels"):
        load_dataset_dir(tmp_path / "d")


def test_sample_lengths_follow_the_rows_the_dataset_shows():
    """The plan's lengths are the rows' real token counts: of a shuffled selection (its index
    mapping honoured), and from ``input_ids`` when a set has no ``length`` column."""
    from anygpt.data.loader import sample_lengths

    ds = make_dataset(50, 1, "image", seed=4).shuffle(seed=1).select(range(10, 40))
    want = [len(x) for x in ds["input_ids"]]
    assert sample_lengths(ds).tolist() == want
    assert sample_lengths(ds.remove_columns("length")).tolist() == want
    loader = MixtureLoader([ds], row_len=48, pack=False, shuffle=False, prefetch=0)
    batch = next(iter(loader))
    assert int((batch["segment_ids"] >= 0).sum()) == want[loader.epoch_plan(0)[0][0][0][1]]


def test_batches_hold_the_planned_rows_of_many_sets_with_mixed_columns():
    """Sets are joined into few Arrow views at open (one gather per batch); every batch must still
    hold exactly the rows its plan names, with their dataset / modality / direction ids, for sets
    that differ in columns (one without ``direction``) and one that is a shuffled selection."""
    from anygpt.data.packing import Sample, collate_rows

    dss = [make_dataset(12, k, "image" if k % 2 else "speech", seed=k) for k in range(1, 7)]
    dss.append(make_dataset(10, 7, "music", seed=7).remove_columns("direction"))
    dss.append(make_dataset(30, 8, "image", seed=8).shuffle(seed=2).select(range(5, 25)))
    loader = MixtureLoader(dss, batch_size=2, row_len=64, pack=True, seed=5, prefetch=0)
    mod = {n: i for i, n in enumerate(loader.modality_names)}
    dirs = {n: i for i, n in enumerate(loader.direction_names)}
    assert "" in dirs  # the set without the column
    for b, plan in enumerate(loader.epoch_plan(0)[:6]):
        rows = [[Sample(dss[k][i]["input_ids"], dss[k][i]["labels"], k, mod[dss[k][i]["modality"]],
                        dirs[dss[k][i].get("direction", "")]) for k, i in row] for row in plan]
        want = collate_rows(rows, 64, 0)
        got = next(loader)
        assert sorted(got) == sorted(want), b
        for key in want:
            assert torch.equal(got[key], want[key]), (b, key)
