"""Nothing silent (issue 38, section 4): what used to finish with exit 0 and a wrong result is now a
counted warning or an error naming the file or key."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC
from wav2vec2_lite.asr.transcribe import Transcriber
from wav2vec2_lite.cli import extract, manifest, pretrain, transcribe
from wav2vec2_lite.data.audio import AudioError
from wav2vec2_lite.data.manifest import ManifestError
from wav2vec2_lite.data.prepare import prepare_dataset, read_transcripts
from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.serialization import save_model
from wav2vec2_lite.train.logging import config_changes, read_metrics
from wav2vec2_lite.train.toy_data import make_toy_corpus

from _helpers import CLI_MICRO_MODEL


def _wav(path: Path, n: int = 4000, subtype: str = "PCM_16", wave: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if wave is None:
        wave = (np.random.default_rng(n).standard_normal(n) * 0.1).astype(np.float32)
    sf.write(path, wave, 16000, subtype=subtype)
    return path


def _code(fn, argv: list[str]) -> int:
    try:
        fn(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


# ----------------------------------------------------------------------------- w2v2-manifest
def test_manifest_lists_nan_inf_and_too_short_audio(tmp_path, capsys):
    for i in range(4):
        _wav(tmp_path / "a" / f"ok{i}.wav")
    nan = np.full(4000, 0.1, np.float32)
    nan[7] = np.nan
    _wav(tmp_path / "a" / "nan.wav", subtype="FLOAT", wave=nan)
    inf = np.full(4000, 0.1, np.float32)
    inf[9] = np.inf
    _wav(tmp_path / "a" / "inf.wav", subtype="FLOAT", wave=inf)
    _wav(tmp_path / "a" / "short.wav", n=300)
    with pytest.raises(ManifestError) as e:
        prepare_dataset(tmp_path / "a", tmp_path / "o", valid_percent=0)
    text = str(e.value)
    assert text.startswith("3 of 7 files cannot be used (pass --skip-bad to skip them)")
    assert f"{tmp_path / 'a' / 'nan.wav'}: 1 NaN/inf sample(s), first at sample 7" in text
    assert f"{tmp_path / 'a' / 'inf.wav'}: 1 NaN/inf sample(s), first at sample 9" in text
    assert f"{tmp_path / 'a' / 'short.wav'}: 300 samples at 16 kHz, shorter than the 400-sample" in text
    assert not (tmp_path / "o").exists()
    code = _code(
        manifest, [str(tmp_path / "a"), "--dest", str(tmp_path / "d"), "--valid-percent", "0", "--skip-bad"]
    )
    captured = capsys.readouterr()
    assert code == 1 and "3 of 7 files skipped" in captured.err
    assert len((tmp_path / "d" / "train.tsv").read_text().splitlines()) == 1 + 4


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_manifest_follows_linked_folders_once_and_names_fifos_broken_links_and_loops(tmp_path):
    corpus, elsewhere = tmp_path / "corpus", tmp_path / "elsewhere"
    _wav(corpus / "own" / "a.wav")
    _wav(elsewhere / "spk" / "b.wav")
    (corpus / "linked").symlink_to(elsewhere / "spk", target_is_directory=True)
    (corpus / "own" / "loop").symlink_to(corpus, target_is_directory=True)  # back up: a loop
    os.mkfifo(corpus / "own" / "pipe.wav")
    (corpus / "own" / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    with pytest.raises(ManifestError) as e:
        prepare_dataset(corpus, tmp_path / "o", valid_percent=0)
    text = str(e.value)
    assert text.startswith("2 of 4 files cannot be used")
    assert f"{corpus / 'own' / 'pipe.wav'}: not a regular file (a FIFO)" in text
    assert f"{corpus / 'own' / 'gone.wav'}: a broken symbolic link" in text
    report = prepare_dataset(corpus, tmp_path / "o", valid_percent=0, skip_bad=True)
    rows = (tmp_path / "o" / "train.tsv").read_text().splitlines()[1:]
    assert sorted(r.split("\t")[0] for r in rows) == ["linked/b.wav", "own/a.wav"]  # the link was followed
    assert [s["path"] for s in report.skipped] == [
        str(corpus / "own" / "gone.wav"),
        str(corpus / "own" / "pipe.wav"),
    ]
    assert report.notes == [
        f"{corpus / 'own' / 'loop'}: a link to {corpus}, already searched; not searched again"
    ]
    assert f"note: {report.notes[0]}" in report.summary()


def test_two_different_transcripts_for_one_key_are_an_error_naming_both_lines(tmp_path):
    (tmp_path / "t.tsv").write_text("a.wav\tHELLO\nb.wav\tWORLD\na.wav\tGOODBYE\nb.wav\tWORLD\n")
    with pytest.raises(ManifestError) as e:
        read_transcripts(tmp_path / "t.tsv")
    assert str(e.value) == (
        f"1 key(s) with two different transcripts (which one is right?); keep one line per key:\n"
        f"  {tmp_path / 't.tsv'}:3: 'a.wav' has another transcript on line 1 ('HELLO' vs 'GOODBYE')"
    )
    (tmp_path / "t.csv").write_text("path,text\na.wav,HELLO\na.wav,HULLO\n")
    with pytest.raises(ManifestError, match=r"t.csv:3: 'a.wav' has another transcript on line 2"):
        read_transcripts(tmp_path / "t.csv")
    (tmp_path / "same.tsv").write_text("a.wav\tHELLO\na.wav\tHELLO \n")
    assert read_transcripts(tmp_path / "same.tsv") == {"a.wav": "HELLO"}


def test_a_whole_folder_as_one_evaluation_split(tmp_path, capsys):
    for i in range(3):
        _wav(tmp_path / "a" / f"{i}.wav")
    (tmp_path / "t.tsv").write_text("0.wav\tONE\n1.wav\tTWO\n2.wav\tSIX\n")
    common = [str(tmp_path / "a"), "--transcripts", str(tmp_path / "t.tsv")]
    assert _code(manifest, [*common, "--dest", str(tmp_path / "test"), "--test-percent", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "test").iterdir() if not p.name.startswith(".")) == [
        "dict.ltr.txt",
        "prepare_report.json",
        "test.ltr",
        "test.tsv",
        "test.wrd",
    ]
    assert (tmp_path / "test" / "test.wrd").read_text().split("\n")[:3] == ["ONE", "TWO", "SIX"]
    assert _code(manifest, [*common, "--dest", str(tmp_path / "dev"), "--split-name", "dev-clean"]) == 0
    assert len((tmp_path / "dev" / "dev-clean.tsv").read_text().splitlines()) == 4
    capsys.readouterr()
    assert (
        _code(
            manifest,
            [*common, "--dest", str(tmp_path / "x"), "--test-percent", "1", "--valid-percent", "0.1"],
        )
        == 2
    )
    assert (
        "add up to more than 1; one split of the whole folder is --test-percent 1" in capsys.readouterr().err
    )


# ----------------------------------------------------------------------------- inference inputs
@pytest.fixture(scope="module")
def unnormalised_model(tmp_path_factory):
    """A fine-tuned model whose input is not normalised (group norm, like BASE)."""
    root = tmp_path_factory.mktemp("m")
    tok = CharTokenizer(list("|ABC"))
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config.tiny(num_layers=1, vocab_size=len(tok), feat_extract_norm="group"))
    save_model(model, root / "model")
    tok.save(root / "model" / "tokenizer.json")
    return root / "model"


def test_float_audio_far_outside_minus_one_to_one_is_an_error_naming_the_file(
    unnormalised_model, tmp_path, capsys
):
    wave = (np.random.default_rng(0).standard_normal(8000) * 3000).astype(np.float32)  # int16 scale
    loud = _wav(tmp_path / "loud.wav", subtype="FLOAT", wave=wave)
    quiet = _wav(tmp_path / "quiet.wav", subtype="FLOAT", wave=wave / 32768)
    code = _code(transcribe, [str(unnormalised_model), str(loud), str(quiet)])
    out, err = capsys.readouterr()
    assert code == 1 and out.startswith(f"{quiet}\t")
    assert f"w2v2-transcribe: error: {loud}: out of range: samples reach " in err
    assert "float audio is expected in [-1, 1] (limit 4); rescale the file; divide by 32768" in err
    # a model that normalises its input is not affected by the level: it transcribes the file
    tr = Transcriber.from_path(unnormalised_model)
    tr.normalize = True
    assert tr.read_wave(loud)[0].shape == (8000,)
    tr.normalize = False
    with pytest.raises(AudioError, match="out of range"):
        tr.read_wave(loud)


def test_an_empty_manifest_is_an_error_for_transcribe_and_extract(unnormalised_model, tmp_path, capsys):
    (tmp_path / "empty.tsv").write_text(f"{tmp_path}\n")
    assert _code(transcribe, [str(unnormalised_model), str(tmp_path / "empty.tsv")]) == 2
    err = capsys.readouterr().err
    assert f"w2v2-transcribe: error: {tmp_path / 'empty.tsv'}: the manifest lists no audio files" in err
    code = _code(
        extract, [str(unnormalised_model), str(tmp_path / "empty.tsv"), "--out", str(tmp_path / "x")]
    )
    assert code == 2
    assert (
        f"w2v2-extract: error: {tmp_path / 'empty.tsv'}: the manifest lists no audio files"
        in capsys.readouterr().err
    )


# ----------------------------------------------------------------------------- training
def test_config_changes_names_each_key_that_differs():
    old = "optim:\n  lr: 0.001\n  betas: [0.9, 0.98]\ntrainer:\n  max_updates: 10\n"
    new = "optim:\n  lr: 0.002\n  betas: [0.9, 0.98]\ntrainer:\n  max_updates: 10\n  seed: 3\n"
    assert config_changes(old, new) == ["optim.lr: 0.001 -> 0.002", "trainer.seed: (unset) -> 3"]
    assert config_changes(old, old) == []


def test_a_long_warmup_and_a_changed_config_on_resume_are_counted_warnings(tmp_path, capsys, monkeypatch):
    corpus = make_toy_corpus(tmp_path / "corpus", train=6, valid=3)
    run_dir = tmp_path / "run"
    base = [
        "--config-name",
        "pretrain_tiny",
        f"data.manifest_dir={corpus}",
        f"hydra.run.dir={run_dir}",
        *CLI_MICRO_MODEL,
        "data.max_sample_size=8000",
        "data.max_tokens=40000",
        "trainer.progress=false",
        "trainer.num_threads=1",
        "schedule.warmup_updates=100",
    ]
    monkeypatch.setattr(sys, "argv", ["w2v2-pretrain", *base, "trainer.max_updates=2"])
    pretrain()
    err = capsys.readouterr().err
    assert (
        "warning: schedule.warmup_updates=100 is longer than the run (2 updates): the learning rate only "
        "rises to 4e-05, 2.0% of optim.lr=0.002" in err
    )
    events = read_metrics(run_dir / "metrics.jsonl", "event")
    assert events[0] == {
        **events[0],
        "event": "warmup_longer_than_run",
        "warmup_updates": 100,
        "total_updates": 2,
    }
    assert "config_changes" not in json.loads((run_dir / "run.json").read_text())
    monkeypatch.setattr(sys, "argv", ["w2v2-pretrain", *base, "trainer.max_updates=3", "optim.lr=0.001"])
    pretrain()
    err = capsys.readouterr().err
    changes = ["optim.lr: 0.002 -> 0.001", "trainer.max_updates: 2 -> 3"]
    assert (
        "warning: the config differs from the earlier run's in 2 key(s)" in err and "; ".join(changes) in err
    )
    assert json.loads((run_dir / "run.json").read_text())["config_changes"] == changes
    changed = [r for r in read_metrics(run_dir / "metrics.jsonl", "event") if r["event"] == "config_changed"]
    assert [(r["update"], r["changes"]) for r in changed] == [(2, changes)]
