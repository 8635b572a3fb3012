"""AudioDataset: labels, skipping short rows, reproducible crops, errors naming files."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from wav2vec2_lite.data.collate import collate
from wav2vec2_lite.data.dataset import AudioDataset, DatasetError
from wav2vec2_lite.data.manifest import (
    count_symbols,
    text_to_ltr,
    write_dictionary,
    write_labels,
    write_manifest,
)
from wav2vec2_lite.data.sampler import BucketBatchSampler
from wav2vec2_lite.data.tokenizer import CharTokenizer

TEXTS = ["hello world", "a b", "seven", "tiny", "the end"]
LENGTHS = [3000, 1200, 300, 5000, 2000]


@pytest.fixture
def corpus(tmp_path: Path):
    rng = np.random.default_rng(0)
    waves = []
    for i, n in enumerate(LENGTHS):
        w = rng.uniform(-0.5, 0.5, n).astype(np.float32)
        sf.write(str(tmp_path / f"u{i}.wav"), w, 16000, subtype="FLOAT")
        waves.append(w)
    write_manifest(tmp_path / "train.tsv", tmp_path, [(f"u{i}.wav", n) for i, n in enumerate(LENGTHS)])
    ltr = [text_to_ltr(t) for t in TEXTS]
    write_labels(tmp_path / "train.ltr", ltr)
    write_labels(tmp_path / "train.wrd", [t.upper() for t in TEXTS])
    write_dictionary(tmp_path / "dict.ltr.txt", count_symbols(ltr))
    return tmp_path, waves


def test_unlabelled_items(corpus) -> None:
    root, waves = corpus
    ds = AudioDataset(root / "train.tsv")
    assert len(ds) == 5 and ds.sizes.tolist() == LENGTHS
    it = ds[3]
    assert it["id"] == 3 and it["path"] == str(root / "u3.wav")
    assert it["waveform"].dtype == torch.float32
    np.testing.assert_array_equal(it["waveform"].numpy(), waves[3])
    assert "labels" not in it and "text" not in it
    with pytest.raises(IndexError):
        ds[5]


@pytest.mark.parametrize("labels_name", ["train.ltr", "train.wrd"])
def test_labels_and_skipping(corpus, labels_name: str) -> None:
    root, waves = corpus
    tok = CharTokenizer.from_dictionary(root / "dict.ltr.txt")
    ds = AudioDataset(
        root / "train.tsv",
        labels_path=root / labels_name,
        tokenizer=tok,
        min_sample_size=400,
        max_sample_size=4000,
    )
    # row 2 (300 samples) is too short, row 3 (5000 > 4000) is labelled and would lose its transcript
    assert ds.num_skipped_short == 1 and ds.num_skipped_long == 1
    assert ds.rows == [0, 1, 4] and ds.sizes.tolist() == [3000, 1200, 2000]
    it = ds[2]
    assert it["text"] == "THE END"
    assert tok.decode(it["labels"]) == "THE END"
    assert it["labels"].tolist() == tok.encode_text("the end")
    np.testing.assert_array_equal(it["waveform"].numpy(), waves[4])


def test_crop_reproducible_per_epoch(corpus) -> None:
    root, waves = corpus
    ds = AudioDataset(root / "train.tsv", max_sample_size=1000, seed=1)
    assert ds.sizes.tolist() == [1000, 1000, 300, 1000, 1000]
    a = ds[3]["waveform"]
    assert a.shape == (1000,)
    start = int(np.flatnonzero(waves[3] == a[0].item())[0])
    np.testing.assert_array_equal(a.numpy(), waves[3][start : start + 1000])
    assert torch.equal(AudioDataset(root / "train.tsv", max_sample_size=1000, seed=1)[3]["waveform"], a)
    offsets = set()
    for e in range(6):
        ds.set_epoch(e)
        offsets.add(float(ds[3]["waveform"][0]))
    assert len(offsets) > 3
    fixed = AudioDataset(root / "train.tsv", max_sample_size=1000, random_crop=False)
    np.testing.assert_array_equal(fixed[3]["waveform"].numpy(), waves[3][:1000])


def test_normalize_before_crop(corpus) -> None:
    root, waves = corpus
    ds = AudioDataset(root / "train.tsv", normalize=True, max_sample_size=1000, random_crop=False)
    full = F.layer_norm(torch.from_numpy(waves[0]), (3000,))
    torch.testing.assert_close(ds[0]["waveform"], full[:1000])


def test_label_count_mismatch(corpus) -> None:
    root, _ = corpus
    write_labels(root / "short.ltr", [text_to_ltr(t) for t in TEXTS[:3]])
    with pytest.raises(DatasetError) as e:
        AudioDataset(root / "train.tsv", labels_path=root / "short.ltr")
    msg = str(e.value)
    assert "short.ltr has 3 lines" in msg and "train.tsv has 5 rows" in msg


def test_unknown_char_names_label_line(corpus) -> None:
    root, _ = corpus
    write_labels(root / "bad.wrd", ["HELLO", "A B", "SEVEN", "TINY", "THE ÉND"])
    tok = CharTokenizer.from_dictionary(root / "dict.ltr.txt")
    with pytest.raises(DatasetError, match=r"bad.wrd:5 \(row of u4.wav\).*'É'"):
        AudioDataset(root / "train.tsv", labels_path=root / "bad.wrd", tokenizer=tok)


def test_end_to_end_loader(corpus) -> None:
    root, _ = corpus
    tok = CharTokenizer.from_dictionary(root / "dict.ltr.txt")
    ds = AudioDataset(root / "train.tsv", labels_path=root / "train.ltr", tokenizer=tok, min_sample_size=400)
    sampler = BucketBatchSampler(ds.sizes, max_tokens=6000, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate)
    seen = []
    for batch in loader:
        assert batch["waveform"].shape[0] * batch["waveform"].shape[1] <= 6000
        for row, i in enumerate(batch["ids"].tolist()):
            assert tok.decode(batch["labels"][row]) == ds.texts[i]
            seen.append(i)
    assert sorted(seen) == list(range(len(ds)))


def test_kept_waves_give_the_same_items_each_epoch_and_are_bounded(corpus) -> None:
    """keep_decoded: each file decoded once, later epochs crop the kept wave to the same items as
    reading the file; an item's tensor never shares memory with the kept wave; a set larger than
    the budget keeps nothing."""
    root, _ = corpus
    kw = dict(max_sample_size=1000, normalize=True, seed=3)
    read, kept = AudioDataset(root / "train.tsv", **kw), AudioDataset(root / "train.tsv", **kw)
    assert kept.keep_decoded(4 * sum(LENGTHS)) and not read.keep_decoded(0)
    assert not AudioDataset(root / "train.tsv").keep_decoded(4 * sum(LENGTHS) - 1)
    expected = {}
    for epoch in range(3):
        read.set_epoch(epoch)
        expected.update({(epoch, i): read[i]["waveform"] for i in range(len(read))})
    for epoch in range(3):
        kept.set_epoch(epoch)
        for i in range(len(kept)):
            item = kept[i]
            assert torch.equal(item["waveform"], expected[epoch, i])
            item["waveform"].fill_(7.0)  # a consumer writing into its item leaves the kept wave alone
        if epoch == 0:
            for i in range(len(kept)):
                Path(kept.path(i)).rename(root / f"moved{i}.wav")  # kept: not read again
    assert kept._decoded_bytes == 4 * sum(LENGTHS)


def test_levels_checked_on_the_first_read_only(corpus) -> None:
    root, _ = corpus
    silent = np.zeros(LENGTHS[0], dtype=np.float32)
    sf.write(str(root / "u0.wav"), silent, 16000, subtype="FLOAT")
    ds = AudioDataset(root / "train.tsv")
    ds.check_levels = True
    assert "silent" in " ".join(ds[0]["level_warnings"])
    assert "level_warnings" not in ds[0]  # reported once (the trainer logs each file once anyway)
