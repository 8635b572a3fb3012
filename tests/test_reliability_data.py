"""Bad input never costs a run: a clear error before any update, or a counted, logged skip.

Every case of docs/reliability.md's bad-input table is exercised here through the Trainer
(validation pass, ``data.skip_invalid``, ``data.validate=false``, files that break mid-run).
Micro models on the toy corpus.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wav2vec2_lite.data.audio import AudioError
from wav2vec2_lite.data.dataset import AudioDataset, DatasetError
from wav2vec2_lite.data.manifest import ManifestError, read_labels, read_manifest, write_labels
from wav2vec2_lite.train.checkpoint import load_checkpoint
from wav2vec2_lite.train.config import to_run_config
from wav2vec2_lite.train.logging import read_metrics
from wav2vec2_lite.train.toy_data import make_toy_corpus
from wav2vec2_lite.train.trainer import Trainer

from _helpers import deep_merge

SR = 16000
MICRO = dict(
    preset="tiny",
    num_layers=2,
    hidden_size=32,
    ffn_dim=64,
    num_heads=2,
    conv_dim=[16] * 7,
    pos_conv_kernel=8,
    pos_conv_groups=8,
    mask_time_length=3,
    mask_time_prob=0.5,
    layerdrop=0.0,
    contrastive=dict(codevector_dim=16, final_dim=16, num_codes_per_group=8, num_negatives=5),
)


def make_cfg(task: str, corpus: Path, **over):
    base = {
        "task": task,
        "model": dict(MICRO),
        "data": {
            "manifest_dir": str(corpus),
            "max_sample_size": 8000 if task == "pretrain" else None,
            "min_sample_size": 4000 if task == "pretrain" else 0,
            "max_tokens": 32000 if task == "pretrain" else 64000,
        },
        "optim": {"lr": 1e-3, "clip_norm": 5.0},
        "schedule": {"name": "polynomial", "warmup_updates": 1},
        "trainer": {"max_updates": 2, "log_interval": 1, "save_interval": 1000, "progress": False, "seed": 3},
    }
    if task == "finetune":
        base["ctc"] = {"mask_time_prob": 0.2, "mask_time_length": 3}
    return to_run_config(deep_merge(base, over))


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_toy_corpus(
        tmp_path_factory.mktemp("toy"), train=12, valid=4, seed=0, min_words=2, max_words=3
    )


@pytest.fixture
def corpus(toy, tmp_path) -> Path:
    out = tmp_path / "corpus"
    shutil.copytree(toy, out)
    for subset in ("train", "valid"):  # manifests point at the copy
        lines = (out / f"{subset}.tsv").read_text().split("\n")
        lines[0] = str(out)
        (out / f"{subset}.tsv").write_text("\n".join(lines))
    return out


def _noise(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-0.3, 0.3, (n, channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


# Each audio case: (name, writer(path) -> samples the manifest claims, reason in the error)
def _empty(p):
    p.write_bytes(b"")
    return 8000


def _truncated(p):
    sf.write(str(p), _noise(8000), SR, subtype="PCM_16")
    p.write_bytes(p.read_bytes()[:6000])
    return 8000


def _not_audio(p):
    p.write_text("this is a text file, not a wave\n" * 40)
    return 8000


def _nan(p):
    w = _noise(8000)
    w[[11, 500]] = [np.nan, np.inf]
    sf.write(str(p), w, SR, subtype="FLOAT")
    return 8000


def _stereo(p):
    sf.write(str(p), _noise(8000, 2), SR, subtype="PCM_16")
    return 8000


def _rate(p):
    sf.write(str(p), _noise(8000), 8000, subtype="PCM_16")
    return 8000


def _short(p):
    sf.write(str(p), _noise(300), SR, subtype="PCM_16")
    return 300


def _long(p):
    sf.write(str(p), _noise(5 * SR), SR, subtype="PCM_16")  # "absurd" here: data.max_duration_s=3
    return 5 * SR


AUDIO_CASES = [
    ("empty", _empty, "file is empty (0 bytes)"),
    ("truncated", _truncated, "truncated WAV"),
    ("not_audio", _not_audio, "not a readable audio file"),
    ("nan_inf", _nan, "2 NaN/inf sample(s), first at sample 11"),
    ("stereo", _stereo, "has 2 channels, expected mono"),
    ("wrong_rate", _rate, "sample rate is 8000 Hz, expected 16000 Hz"),
    ("too_short", _short, "300 samples is shorter than min_sample_size=400"),
    ("absurdly_long", _long, "5.0 s is longer than max_duration_s=3.0"),
]


def add_bad_rows(
    corpus: Path, subset: str = "train", *, missing: bool = True, malformed: bool = True, labels: bool = False
) -> dict[str, tuple[int, str, str]]:
    """Append one bad row per case to ``subset``.tsv; returns {case: (line_no, path, reason)}."""
    bad_dir = corpus / "bad"
    bad_dir.mkdir(exist_ok=True)
    tsv = corpus / f"{subset}.tsv"
    lines = tsv.read_text().rstrip("\n").split("\n")
    expected = {}
    for name, write, reason in AUDIO_CASES:
        p = bad_dir / f"{subset}_{name}.wav"
        size = write(p)
        lines.append(f"bad/{p.name}\t{size}")
        expected[name] = (len(lines), str(p), reason)
    if missing:
        lines.append(f"bad/{subset}_missing.wav\t8000")
        expected["missing"] = (len(lines), str(bad_dir / f"{subset}_missing.wav"), "audio file not found")
    if malformed:
        lines.append("bad/no_tab_here.wav 8000")
        expected["malformed"] = (len(lines), "-", "malformed manifest line")
    tsv.write_text("\n".join(lines) + "\n")
    if labels:
        ltr = read_labels(corpus / f"{subset}.ltr")
        n_new = len(lines) - 1 - len(ltr)
        write_labels(corpus / f"{subset}.ltr", ltr + ["A |"] * n_new)
    return expected


def _assert_lists_every_problem(msg: str, manifest: Path, expected: dict[str, tuple[int, str, str]]) -> None:
    lines = msg.splitlines()
    for case, (line_no, path, reason) in expected.items():
        prefix = f"{manifest}:{line_no}: {path}: "
        assert any(ln.strip().startswith(prefix) and reason in ln for ln in lines), (
            case,
            prefix,
            reason,
            msg,
        )


def _nothing_trained(run: Path) -> None:
    assert not (run / "checkpoints" / "last").exists()
    assert not (run / "metrics.jsonl").exists() or read_metrics(run / "metrics.jsonl", kind="train") == []


# --------------------------------------------------------------------------- validation pass
def test_every_bad_audio_row_in_one_error_before_training(corpus, tmp_path):
    """empty, truncated, not audio, NaN/inf, stereo, wrong rate, < 400 samples, absurdly long,
    missing file, malformed line: one DatasetError naming manifest:line, file and reason; no update."""
    expected = add_bad_rows(corpus, "train")
    valid_expected = add_bad_rows(corpus, "valid", malformed=False)
    cfg = make_cfg("pretrain", corpus, data={"max_duration_s": 3.0})
    with pytest.raises(DatasetError) as e:
        Trainer(cfg, tmp_path / "run")
    msg = str(e.value)
    assert "nothing was trained" in msg and "data.skip_invalid=true" in msg
    _assert_lists_every_problem(msg, corpus / "train.tsv", expected)
    _assert_lists_every_problem(msg, corpus / "valid.tsv", valid_expected)  # both manifests, one error
    _nothing_trained(tmp_path / "run")


def test_skip_invalid_drops_counts_logs_and_trains_on_the_rest(corpus, tmp_path, capsys):
    expected = add_bad_rows(corpus, "train")
    cfg = make_cfg("pretrain", corpus, data={"max_duration_s": 3.0, "skip_invalid": True})
    trainer = Trainer(cfg, tmp_path / "run")
    assert len(trainer.train_set) == 12  # the toy corpus' good rows, all >= min_sample_size
    result = trainer.fit()
    assert result["update"] == 2
    events = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="event")
    skipped = [e for e in events if e["event"] == "skipped_invalid"]
    assert len(skipped) == 1 and skipped[0]["subset"] == "train" and skipped[0]["count"] == len(expected)
    _assert_lists_every_problem("\n".join(skipped[0]["problems"]), corpus / "train.tsv", expected)
    data = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="data")
    assert {(d["subset"], d["invalid"]) for d in data if d["event"] == "data_validated"} == {
        ("train", len(expected)),
        ("valid", 0),
    }
    assert f"skipping {len(expected)} invalid row(s)" in capsys.readouterr().err


def test_label_problems_oov_empty_transcript_and_count_mismatch(corpus, tmp_path):
    """Fine-tuning: characters outside dict.ltr.txt and empty transcripts are rows of the one
    error (or skipped); a label file whose line count differs from the manifest is always fatal."""
    ltr = read_labels(corpus / "train.ltr")
    ltr[2] = "A Ö |"
    ltr[5] = ""
    write_labels(corpus / "train.ltr", ltr)
    lab = corpus / "train.ltr"
    with pytest.raises(DatasetError) as e:
        Trainer(make_cfg("finetune", corpus), tmp_path / "a")
    msg = str(e.value)
    assert f"{corpus / 'train.tsv'}:4: " in msg and f"{lab}:3: " in msg and "'Ö'" in msg
    assert f"{corpus / 'train.tsv'}:7: " in msg and f"empty transcript ({lab}:6)" in msg
    _nothing_trained(tmp_path / "a")

    trainer = Trainer(make_cfg("finetune", corpus, data={"skip_invalid": True}), tmp_path / "b")
    assert len(trainer.train_set) == 10
    trainer.fit()
    ev = [
        e
        for e in read_metrics(tmp_path / "b" / "metrics.jsonl", kind="event")
        if e["event"] == "skipped_invalid"
    ]
    assert ev[0]["count"] == 2

    write_labels(lab, ltr[:-1])  # one line short: rows can no longer be paired with labels
    for skip in (False, True):
        with pytest.raises(DatasetError, match=r"train.ltr has 11 lines but .*train.tsv has 12 rows"):
            Trainer(make_cfg("finetune", corpus, data={"skip_invalid": skip}), tmp_path / "c")
    _nothing_trained(tmp_path / "c")


def test_full_mode_decodes_every_file(corpus, tmp_path):
    """Damage inside compressed data is invisible in the header: data.validate=full finds it."""
    p = corpus / "bad_flac.flac"
    sf.write(str(p), _noise(20000, seed=5), SR, subtype="PCM_16")
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 3 :] = b"\x00" * (len(raw) - len(raw) // 3)  # zero out the last two thirds
    p.write_bytes(bytes(raw))
    with open(corpus / "train.tsv", "a") as f:
        f.write(f"{p.name}\t20000\n")
    Trainer(make_cfg("pretrain", corpus, data={"validate": "header"}), tmp_path / "h")  # header is fine
    with pytest.raises(DatasetError, match=r"train.tsv:14: .*bad_flac.flac: (corrupt|truncated)"):
        Trainer(make_cfg("pretrain", corpus, data={"validate": "full"}), tmp_path / "f")


def test_validation_cost_on_the_demo_corpus():
    """The demo corpus' manifests (over 1000 files): the default header pass stays under 10 s."""
    import time

    from wav2vec2_lite.data.tokenizer import CharTokenizer
    from wav2vec2_lite.data.validate import validate_dataset

    demo = Path(__file__).resolve().parent.parent / "data" / "demo"
    if not (demo / "train_1h.tsv").is_file():
        pytest.skip("data/demo not built (python -m wav2vec2_lite.corpus)")
    tok = CharTokenizer.from_dictionary(demo / "dict.ltr.txt")
    start, rows = time.perf_counter(), 0
    for subset in ("unlabeled", "train_1h", "valid", "test"):
        labels = None if subset == "unlabeled" else demo / f"{subset}.ltr"
        rows += validate_dataset(
            demo / f"{subset}.tsv",
            labels_path=labels,
            tokenizer=tok if labels else None,
            check_audio="header",
        ).num_rows
    seconds = time.perf_counter() - start
    print(f"header validation: {rows} rows in {seconds:.2f} s")
    assert rows > 1000 and seconds < 10


# --------------------------------------------------------------------------- validation off
def test_validation_off_bad_files_are_counted_skips_during_training(corpus, tmp_path):
    """data.validate=false: unreadable files are skipped when read (counted, logged, event records);
    too-short and absurdly long rows are dropped when the dataset is built (event records)."""
    expected = add_bad_rows(corpus, "train", malformed=False)
    cfg = make_cfg(
        "pretrain",
        corpus,
        data={"validate": False, "max_duration_s": 3.0, "max_unreadable_fraction": 0.5},
        trainer={"max_updates": 6, "save_interval": 3},
    )
    trainer = Trainer(cfg, tmp_path / "run")
    # 12 good + 7 readable-looking bad rows; too_short (< 400 samples) and absurdly_long are dropped up front
    assert len(trainer.train_set) == 12 + 7
    result = trainer.fit()
    assert result["update"] == 6 and result["epoch"] >= 1  # at least one full pass over every row
    events = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="event")
    unreadable = [e for e in events if e["event"] == "skipped_unreadable"]
    seen = {e["path"]: e["reason"] for e in unreadable}
    for case in ("empty", "truncated", "not_audio", "nan_inf", "stereo", "wrong_rate", "missing"):
        _, path, reason = expected[case]
        assert path in seen and reason in seen[path], (case, seen)
    assert [e["unreadable_total"] for e in unreadable] == list(range(1, len(unreadable) + 1))
    # remedies in the run's own syntax, not the loader's Python keywords
    assert (
        "set data.mono=mix" in seen[expected["stereo"][1]] and "mono='mix'" not in seen[expected["stereo"][1]]
    )
    assert "set data.resample=soxr" in seen[expected["wrong_rate"][1]]
    by_event = {e["event"]: e for e in events}
    assert by_event["skipped_too_short"]["count"] == 1 and by_event["skipped_too_short"]["min_samples"] == 400
    assert by_event["skipped_too_long"]["count"] == 1
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert state["unreadable_total"] == len(unreadable) and len(state["unreadable_ids"]) == 7
    assert all(
        math.isfinite(r["loss"]) for r in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")
    )


def test_validation_off_malformed_line_oov_and_count_mismatch_fail_before_training(corpus, tmp_path):
    with open(corpus / "train.tsv", "a") as f:
        f.write("bad/no_tab.wav 8000\n")
    with pytest.raises(ManifestError, match=rf"{corpus / 'train.tsv'}:14: expected 'relative/path<TAB>"):
        Trainer(make_cfg("pretrain", corpus, data={"validate": False}), tmp_path / "a")
    _nothing_trained(tmp_path / "a")
    lines = (corpus / "train.tsv").read_text().splitlines()[:-1]
    (corpus / "train.tsv").write_text("\n".join(lines) + "\n")
    ltr = read_labels(corpus / "train.ltr")
    write_labels(corpus / "train.ltr", ltr[:3] + ["A Ö |"] + ltr[4:])
    with pytest.raises(DatasetError, match=r"train.ltr:4 \(row of wav/train_00003.wav\).*'Ö'"):
        Trainer(make_cfg("finetune", corpus, data={"validate": False}), tmp_path / "b")
    write_labels(corpus / "train.ltr", ltr[:5])
    with pytest.raises(DatasetError, match="train.ltr has 5 lines"):
        Trainer(make_cfg("finetune", corpus, data={"validate": False}), tmp_path / "c")


def test_validation_off_empty_transcripts_are_dropped_and_counted(corpus, tmp_path):
    """A batch of only empty transcripts has no CTC target at all: such rows are dropped when the
    dataset is built (an event record), so the run trains on the labelled ones."""
    ltr = read_labels(corpus / "train.ltr")
    write_labels(corpus / "train.ltr", ["" if i % 2 else t for i, t in enumerate(ltr)])
    trainer = Trainer(
        make_cfg("finetune", corpus, data={"validate": False}, trainer={"max_updates": 3}), tmp_path / "run"
    )
    assert len(trainer.train_set) == 6 and all(trainer.train_set.label_ids)
    trainer.fit()
    ev = [
        e
        for e in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="event")
        if e["event"] == "skipped_empty_transcript"
    ]
    assert [(e["subset"], e["count"]) for e in ev] == [("train", 6)]


# --------------------------------------------------------------------------- files that break mid-run
def test_files_broken_after_validation_are_skipped_counted_and_logged(corpus, tmp_path):
    """The trainer is built (validation passed), then files are deleted / cut / filled with NaN:
    the run finishes, each bad utterance is skipped when read, counted and recorded."""
    cfg = make_cfg(
        "pretrain",
        corpus,
        data={"max_unreadable_fraction": 0.5},
        trainer={"max_updates": 6, "save_interval": 3},
    )
    trainer = Trainer(cfg, tmp_path / "run")
    rows = read_manifest(corpus / "train.tsv")
    victims = [str(rows.full_path(i)) for i in (1, 4, 7)]
    Path(victims[0]).unlink()  # deleted
    Path(victims[1]).write_bytes(Path(victims[1]).read_bytes()[:200])  # cut mid-copy
    wave, _ = sf.read(victims[2], dtype="float32")
    wave[100] = np.nan  # rewritten with a NaN, same length
    sf.write(victims[2], wave, SR, subtype="FLOAT")
    result = trainer.fit()
    assert result["update"] == 6 and result["epoch"] >= 1
    events = [
        e
        for e in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="event")
        if e["event"] == "skipped_unreadable"
    ]
    reasons = {e["path"]: e["reason"] for e in events}
    assert set(reasons) == set(victims)
    assert "audio file not found" in reasons[victims[0]]
    assert "truncated" in reasons[victims[1]] or "not a readable" in reasons[victims[1]]
    assert "NaN/inf" in reasons[victims[2]]
    assert trainer.data.unreadable_total == len(events) and trainer.data.unreadable_ids == {1, 4, 7}
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_too_many_unreadable_files_stop_the_run_with_checkpoint_intact(corpus, tmp_path):
    cfg = make_cfg(
        "pretrain",
        corpus,
        data={"max_unreadable_fraction": 0.2},
        trainer={"max_updates": 30, "save_interval": 1},
    )
    trainer = Trainer(cfg, tmp_path / "run")
    rows = read_manifest(corpus / "train.tsv")
    for i in range(0, 12, 3):  # 4 of 12 files vanish (storage unmounted?)
        rows.full_path(i).unlink()
    with pytest.raises(
        DatasetError, match=r"of 12 training files became unreadable .*rerun the same command"
    ):
        trainer.fit()
    if (tmp_path / "run" / "checkpoints" / "last").exists():
        assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last")["update"] == trainer.update


# --------------------------------------------------------------------------- short audio
def test_shorter_than_a_mask_span_trains(tmp_path):
    """Utterances of 2000 samples give 6 frames, fewer than mask_time_length=10: accepted; the
    span shrinks to fit (masking's short-audio fix) and the loss stays finite."""
    from wav2vec2_lite.data.manifest import write_manifest

    d = tmp_path / "short"
    d.mkdir()
    rows = []
    for i in range(8):
        sf.write(str(d / f"s{i}.wav"), _noise(2000 + 40 * i, seed=i), SR, subtype="PCM_16")
        rows.append((f"s{i}.wav", 2000 + 40 * i))
    write_manifest(d / "train.tsv", d, rows)
    cfg = make_cfg(
        "pretrain",
        d,
        model={"mask_time_length": 10, "contrastive": {"num_negatives": 3}},
        data={"valid_subset": None, "min_sample_size": 0, "max_tokens": 10000},
        trainer={"max_updates": 3},
    )
    Trainer(cfg, tmp_path / "run").fit()
    train = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")
    assert len(train) == 3 and all(math.isfinite(r["loss"]) and r["masked_frames"] > 0 for r in train)


def test_no_batch_is_cropped_below_the_receptive_field(corpus, tmp_path):
    """Zero frames after cropping: a manifest row that lies about its length (says 8000, the file
    holds 300 samples) would crop a whole pretraining batch to 300 samples = 0 frames. Validation
    reports the mismatch; without it the dataset skips the row when read (counted)."""
    sf.write(str(corpus / "liar.wav"), _noise(300), SR, subtype="PCM_16")
    with open(corpus / "train.tsv", "a") as f:
        f.write("liar.wav\t8000\n")
    with pytest.raises(
        DatasetError,
        match=r"train.tsv:14: .*liar.wav: manifest says 8000 samples, the file header "
        r"says 300",
    ):
        Trainer(make_cfg("pretrain", corpus), tmp_path / "a")
    cfg = make_cfg("pretrain", corpus, data={"validate": False}, trainer={"max_updates": 4})
    trainer = Trainer(cfg, tmp_path / "b")
    assert trainer.fit()["update"] == 4
    events = [
        e
        for e in read_metrics(tmp_path / "b" / "metrics.jsonl", kind="event")
        if e["event"] == "skipped_unreadable"
    ]
    assert events and all("holds 300 samples, the manifest says 8000" in e["reason"] for e in events)
    # the dataset alone: the row passes the size filter (manifest says 8000), reading it gives the stand-in
    ds = AudioDataset(corpus / "train.tsv", min_sample_size=400, on_error="skip")
    assert ds.num_skipped_short == 0 and ds[len(ds) - 1]["error"].startswith("holds 300 samples")
    with pytest.raises(AudioError, match="holds 300 samples"):
        AudioDataset(corpus / "train.tsv", min_sample_size=400)[len(ds) - 1]
