"""TrainingData: a data config in, checked loaders and resumable micro-batch groups out (no trainer)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.data.config import DataConfig
from wav2vec2_lite.data.dataset import AudioDataset, DatasetError
from wav2vec2_lite.data.pipeline import TrainingData, describe
from wav2vec2_lite.train.toy_data import make_toy_corpus

MODEL = Wav2Vec2Config.tiny()  # receptive field 400 samples


class Source:
    """The DatasetSource a pretraining task provides: manifests only, crops of at most 8000 samples."""

    crop_to_shortest = True

    def __init__(self, root: Path) -> None:
        self.root = root

    def data_files(self, subset: str) -> dict:
        return {"manifest_path": self.root / f"{subset}.tsv"}

    def dataset(self, subset: str, train: bool, *, min_samples: int = 0, indices=None) -> AudioDataset:
        return AudioDataset(
            self.root / f"{subset}.tsv",
            max_sample_size=8000,
            min_sample_size=min_samples,
            random_crop=train,
            seed=5,
            indices=indices,
            on_error="skip",
        )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_toy_corpus(
        tmp_path_factory.mktemp("toy"), train=10, valid=3, seed=2, min_words=2, max_words=2
    )


def build(corpus: Path, **data) -> TrainingData:
    cfg = DataConfig(manifest_dir=str(corpus), max_tokens=24000, min_sample_size=0, **data)
    cfg.check()
    return TrainingData(cfg, Source(corpus), MODEL, seed=11)


def ids(groups) -> list[list[list[int]]]:
    return [[batch["ids"].tolist() for batch in group] for group in groups]


def test_rows_are_checked_and_reported_before_any_loader(corpus):
    data = build(corpus)
    events = data.take_events()
    assert [(e["event"], e["subset"], e["rows"], e["invalid"]) for e in events] == [
        ("data_validated", "train", 10, 0),
        ("data_validated", "valid", 3, 0),
    ]
    assert data.take_events() == []  # taken once
    assert len(data.train_set) == 10 and data.valid_loader is not None


def test_groups_cover_each_epoch_once_and_resume_mid_epoch_with_the_same_batches(corpus):
    data = build(corpus)
    straight = ids(g for _, g in zip(range(6), data.groups(update_freq=2, max_epochs=None)))
    assert data.epoch >= 1  # the six groups run into the second epoch

    first = build(corpus)
    head = ids(g for _, g in zip(range(2), first.groups(update_freq=2, max_epochs=None)))
    resumed = build(corpus)
    resumed.load_state_dict(first.state_dict())
    tail = ids(g for _, g in zip(range(4), resumed.groups(update_freq=2, max_epochs=None)))
    assert head + tail == straight
    assert resumed.take_events()[-1]["event"] == "data_validated"  # same rows: no train_rows_changed


def test_max_epochs_ends_the_groups(corpus):
    data = build(corpus)
    groups = list(data.groups(update_freq=1, max_epochs=1))
    assert data.epoch == 1 and sorted(i for g in groups for b in g for i in b["ids"].tolist()) == list(
        range(10)
    )


def test_an_unreadable_file_is_skipped_counted_and_too_many_stop(corpus, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    lines = (copy / "train.tsv").read_text().split("\n")
    (copy / "train.tsv").write_text("\n".join([str(copy)] + lines[1:]))
    data = build(copy, max_unreadable_fraction=0.2, keep_decoded_mb=0)  # read every epoch
    data.take_events()
    victim = data.train_set.path(3)
    Path(victim).unlink()
    list(data.groups(update_freq=1, max_epochs=1))
    events = data.take_events()
    assert [(e["event"], e["path"], e["unreadable_total"]) for e in events] == [
        ("skipped_unreadable", victim, 1)
    ]
    assert data.unreadable_ids == {3} and "audio file not found" in describe(events[0])
    for i in (5, 7):
        Path(data.train_set.path(i)).unlink()
    with pytest.raises(
        DatasetError, match=r"3 of 10 training files became unreadable .*max_unreadable_fraction=0.2"
    ):
        list(data.groups(update_freq=1, max_epochs=2))


def test_a_small_training_set_is_decoded_once_and_gives_the_same_batches(corpus):
    """data.keep_decoded_mb: the toy set fits, so files are read in the first epoch only; the
    batches are those of a run that reads every file every epoch. Not with loader workers."""
    kept, read = build(corpus), build(corpus, keep_decoded_mb=0)
    assert kept.train_set._decoded is not None and read.train_set._decoded is None
    assert build(corpus, num_workers=1).train_set._decoded is None
    a = list(zip(range(20), kept.groups(update_freq=1, max_epochs=None)))
    b = list(zip(range(20), read.groups(update_freq=1, max_epochs=None)))
    assert kept.epoch >= 2 and len(kept.train_set._decoded) == len(kept.train_set)
    for (_, ga), (_, gb) in zip(a, b):
        assert ga[0]["ids"].tolist() == gb[0]["ids"].tolist()
        assert torch.equal(ga[0]["waveform"], gb[0]["waveform"])


def test_a_bad_row_stops_before_any_loader_unless_skipped(corpus, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    lines = (copy / "train.tsv").read_text().rstrip("\n").split("\n")
    (copy / "train.tsv").write_text("\n".join([str(copy)] + lines[1:] + ["missing.wav\t8000"]) + "\n")
    with pytest.raises(DatasetError, match=r"train.tsv:12: .*missing.wav: audio file not found"):
        build(copy)
    data = build(copy, skip_invalid=True)
    skipped = [e for e in data.take_events() if e["event"] == "skipped_invalid"]
    assert len(skipped) == 1 and skipped[0]["count"] == 1 and len(data.train_set) == 10
    assert describe(skipped[0]).startswith(f"{copy / 'train.tsv'}: skipping 1 invalid row(s)")
