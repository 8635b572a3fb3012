"""BucketBatchSampler: budget, coverage, determinism, resume, DDP sharding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wav2vec2_lite.data.sampler import BucketBatchSampler, SamplerError, batch_by_size

SIZES = np.random.default_rng(0).integers(400, 5000, size=300)


def _check_budget(batches, sizes, max_tokens, max_batch_size=None):
    for b in batches:
        assert len(b) >= 1
        assert max(sizes[i] for i in b) * len(b) <= max_tokens
        if max_batch_size:
            assert len(b) <= max_batch_size


@pytest.mark.parametrize("num_buckets", [0, 4])
@pytest.mark.parametrize("max_batch_size", [None, 3])
def test_budget_and_every_index_once(num_buckets, max_batch_size) -> None:
    s = BucketBatchSampler(
        SIZES, max_tokens=12000, max_batch_size=max_batch_size, num_buckets=num_buckets, seed=1
    )
    for _ in range(2):
        batches = list(s)
        _check_budget(batches, SIZES, 12000, max_batch_size)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(len(SIZES)))
    assert s.epoch == 2


def test_groups_similar_lengths() -> None:
    s = BucketBatchSampler(SIZES, max_tokens=20000, seed=0)
    batches = list(s)
    # sorted batching: padding waste far below a random grouping of the same batch sizes
    waste = sum(max(SIZES[b]) * len(b) - sum(SIZES[b]) for b in batches)
    perm = np.random.default_rng(0).permutation(len(SIZES))
    pos, rand_waste = 0, 0
    for b in batches:
        rb = perm[pos : pos + len(b)]
        pos += len(b)
        rand_waste += max(SIZES[rb]) * len(rb) - sum(SIZES[rb])
    assert waste < 0.1 * rand_waste


def test_batch_by_size_exact() -> None:
    sizes = np.array([1, 2, 3, 4, 10])
    assert batch_by_size([0, 1, 2, 3, 4], sizes, max_tokens=10) == [[0, 1, 2], [3], [4]]
    assert batch_by_size([0, 1, 2, 3, 4], sizes, max_tokens=10, max_batch_size=2) == [[0, 1], [2, 3], [4]]


def test_deterministic_and_changes_across_epochs() -> None:
    a = BucketBatchSampler(SIZES, max_tokens=12000, seed=3)
    b = BucketBatchSampler(SIZES, max_tokens=12000, seed=3)
    c = BucketBatchSampler(SIZES, max_tokens=12000, seed=4)
    e0a, e0b, e0c = list(a), list(b), list(c)
    assert e0a == e0b and e0a != e0c
    e1a = list(a)
    assert e1a != e0a
    b.set_epoch(1)
    assert list(b) == e1a
    ns = BucketBatchSampler(SIZES, max_tokens=12000, shuffle=False)
    first = list(ns)
    assert first == list(ns)
    assert [int(SIZES[b[0]]) for b in first] == sorted(int(SIZES[b[0]]) for b in first)


@pytest.mark.parametrize("world_size", [1, 3])
def test_resume_mid_epoch(world_size: int) -> None:
    kw = dict(max_tokens=9000, seed=7, world_size=world_size, rank=world_size - 1)
    ref = BucketBatchSampler(SIZES, **kw)
    ref.set_epoch(2)
    full = list(ref)
    s = BucketBatchSampler(SIZES, **kw)
    s.set_epoch(2)
    it = iter(s)
    head = [next(it) for _ in range(5)]
    state = s.state_dict()
    assert state["epoch"] == 2 and state["consumed"] == 5
    resumed = BucketBatchSampler(SIZES, **kw)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a trainer re-selecting the same epoch keeps progress
    assert len(resumed) == len(full)
    rest = list(resumed)
    assert head + rest == full
    assert resumed.state_dict()["epoch"] == 3 and resumed.state_dict()["consumed"] == 0
    with pytest.raises(ValueError, match="seed"):
        BucketBatchSampler(SIZES, max_tokens=9000, seed=8, world_size=world_size).load_state_dict(state)


@pytest.mark.parametrize("drop_last", [False, True])
def test_ddp_sharding(drop_last: bool) -> None:
    W = 3
    single = BucketBatchSampler(SIZES, max_tokens=7000, seed=5)
    n_all = len(list(single))
    assert n_all % W != 0  # the padding path is exercised
    shards = [
        list(BucketBatchSampler(SIZES, max_tokens=7000, seed=5, rank=r, world_size=W, drop_last=drop_last))
        for r in range(W)
    ]
    assert len({len(sh) for sh in shards}) == 1
    whole = BucketBatchSampler(SIZES, max_tokens=7000, seed=5, world_size=W, drop_last=drop_last).all_batches(
        0
    )
    for r in range(W):
        assert shards[r] == whole[r::W]
    flat = [i for sh in shards for b in sh for i in b]
    if drop_last:
        assert len(whole) == n_all - n_all % W
        assert len(flat) == len(set(flat))  # a partition of the kept batches
    else:
        assert len(whole) == n_all + (W - n_all % W)
        assert set(flat) == set(range(len(SIZES)))  # all covered; only padding batches repeat


def test_too_long() -> None:
    sizes = [100, 5000, 200, 9000]
    with pytest.raises(
        SamplerError, match=r"utterance 1 has 5000 samples, more than max_tokens=4000 \(2 such"
    ):
        BucketBatchSampler(sizes, max_tokens=4000)
    s = BucketBatchSampler(sizes, max_tokens=4000, too_long="skip")
    assert s.num_skipped_long == 2
    assert sorted(i for b in s for i in b) == [0, 2]


def test_bad_args() -> None:
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler(SIZES, max_tokens=9000, rank=2, world_size=2)
    with pytest.raises(ValueError, match="max_tokens"):
        BucketBatchSampler(SIZES, max_tokens=0)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    st.lists(st.integers(1, 1000), min_size=1, max_size=80),
    st.integers(1000, 5000),
    st.sampled_from([None, 1, 4]),
    st.integers(0, 3),
    st.integers(1, 4),
    st.integers(0, 5),
)
def test_property(sizes, max_tokens, max_batch_size, num_buckets, world_size, consumed) -> None:
    sizes = np.array(sizes)
    kw = dict(
        max_tokens=max_tokens,
        max_batch_size=max_batch_size,
        num_buckets=num_buckets,
        world_size=world_size,
        seed=11,
        drop_last=False,
    )
    shards = [BucketBatchSampler(sizes, rank=r, **kw) for r in range(world_size)]
    per_rank = [list(s) for s in shards]
    assert len({len(b) for b in per_rank}) == 1
    flat = [i for b in per_rank for batch in b for i in batch]
    assert set(flat) == set(range(len(sizes)))
    _check_budget([batch for b in per_rank for batch in b], sizes, max_tokens, max_batch_size)
    if world_size == 1:
        assert sorted(flat) == list(range(len(sizes)))
    # resume rank 0 of epoch 0 after `consumed` batches
    consumed = min(consumed, len(per_rank[0]))
    s = BucketBatchSampler(sizes, rank=0, **kw)
    s.load_state_dict({"epoch": 0, "consumed": consumed})
    assert list(s) == per_rank[0][consumed:]
