"""collate: padding masks match lengths, labels round-trip, fairseq-style crop to shortest."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wav2vec2_lite.data.collate import LABEL_PAD, collate


def _items(lengths, label_lengths=None):
    g = torch.Generator().manual_seed(0)
    out = []
    for i, n in enumerate(lengths):
        it = {"id": 10 + i, "waveform": torch.randn(n, generator=g), "text": f"t{i}"}
        if label_lengths is not None:
            it["labels"] = torch.randint(4, 30, (label_lengths[i],), generator=g)
        out.append(it)
    return out


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    st.lists(st.tuples(st.integers(1, 300), st.integers(0, 20)), min_size=1, max_size=6),
    st.sampled_from([None, 1, 7, 64]),
)
def test_pad_property(spec, pad_multiple) -> None:
    lengths = [n for n, _ in spec]
    items = _items(lengths, [label_length for _, label_length in spec])
    b = collate(items, pad_multiple=pad_multiple)
    B, S = b["waveform"].shape
    assert B == len(items) and S >= max(lengths)
    if pad_multiple:
        assert S % pad_multiple == 0 and S < max(lengths) + pad_multiple
    else:
        assert S == max(lengths)
    mask = b["padding_mask"]
    expect = torch.arange(S)[None] >= torch.tensor(lengths)[:, None]
    if not expect.any():
        assert mask is None
    else:
        assert torch.equal(mask, expect)
    assert b["lengths"].tolist() == lengths
    for i, it in enumerate(items):
        assert torch.equal(b["waveform"][i, : lengths[i]], it["waveform"])
        assert (b["waveform"][i, lengths[i] :] == 0).all()
        n = int(b["label_lengths"][i])
        assert torch.equal(b["labels"][i, :n], it["labels"])
        assert (b["labels"][i, n:] == LABEL_PAD).all()
    assert b["ids"].tolist() == [it["id"] for it in items]
    assert b["texts"] == [it["text"] for it in items]


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_crop_to_shortest_property(lengths, seed) -> None:
    items = _items(lengths)
    b1 = collate(items, crop_to_shortest=True, generator=torch.Generator().manual_seed(seed))
    b2 = collate(items, crop_to_shortest=True, generator=torch.Generator().manual_seed(seed))
    S = min(lengths)
    assert b1["waveform"].shape == (len(items), S) and b1["padding_mask"] is None
    assert torch.equal(b1["waveform"], b2["waveform"])
    for i, it in enumerate(items):  # each row is a contiguous window of its wave
        w = it["waveform"]
        windows = w.unfold(0, S, 1)
        assert (windows == b1["waveform"][i]).all(dim=1).any()


def test_crop_uses_random_offsets() -> None:
    items = _items([100, 1000])
    starts = set()
    for seed in range(10):
        b = collate(items, crop_to_shortest=True, generator=torch.Generator().manual_seed(seed))
        row = b["waveform"][1]
        starts.add(int((items[1]["waveform"].unfold(0, 100, 1) == row).all(1).nonzero()[0]))
    assert len(starts) > 5


def test_errors() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    items = _items([5, 6], [2, 3])
    del items[1]["labels"]
    with pytest.raises(ValueError, match="some items have labels"):
        collate(items)
    with pytest.raises(ValueError, match="only one"):
        collate(_items([5]), crop_to_shortest=True, pad_multiple=8)
