"""Reliability through the command lines (issue 22): w2v2-transcribe, w2v2-pretrain,
w2v2-finetune, w2v2-export-hf.

Bad inputs cost only themselves, errors are one line naming the input, exit codes are
0 (all done) / 1 (some failed, the rest done) / 2 (usage error or nothing ran), and the
training messages say what is true about checkpoints.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.asr.transcribe import Transcriber
from wav2vec2_lite.cli import export_hf, transcribe
from wav2vec2_lite.data.manifest import write_manifest
from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.serialization import save_model
from wav2vec2_lite.train.toy_data import make_toy_corpus

from _helpers import CLI_MICRO_MODEL

REPO = Path(__file__).resolve().parent.parent
PROG = "w2v2-transcribe"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    tok = CharTokenizer(list("|ABC"))
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(
        Wav2Vec2Config.tiny(num_layers=1, vocab_size=len(tok), feat_extract_norm="layer", conv_bias=True)
    )
    with torch.no_grad():  # favour letters over blank so that transcripts are not empty
        model.lm_head.bias[0] = -5.0
    save_model(model, root / "checkpoints" / "best")
    tok.save(root / "tokenizer.json")
    return root


def _noise(n: int, seed: int, channels: int = 1) -> np.ndarray:
    wave = np.random.default_rng(seed).standard_normal((n, channels)).astype(np.float32) * 0.1
    return wave[:, 0] if channels == 1 else wave


@pytest.fixture()
def audio(tmp_path):
    """good / clipping / silence (usable), nan / short / missing / not-audio (bad)."""
    d = tmp_path / "in"
    d.mkdir()
    sf.write(d / "good.wav", _noise(16000, 1), 16000)
    sf.write(d / "clipping.wav", np.sign(_noise(16000, 2)), 16000, subtype="PCM_16")
    sf.write(d / "silence.wav", np.zeros(16000, np.float32), 16000)
    nan = _noise(16000, 3)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(d / "short.wav", _noise(300, 4), 16000)
    (d / "text.wav").write_text("not audio")
    return d


def _run_transcribe(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit status, stdout, stderr of ``w2v2-transcribe ARGV`` run in this process."""
    try:
        transcribe(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- item 1: batches
def test_one_bad_file_costs_only_itself_and_is_named_on_one_line(model_dir, audio, capsys):
    names = ["good", "clipping", "silence", "nan", "short", "missing", "text"]
    code, out, err = _run_transcribe([str(model_dir), *(str(audio / f"{n}.wav") for n in names)], capsys)
    assert code == 1  # some failed, the rest transcribed
    rows = [line.split("\t") for line in out.splitlines()]
    assert [Path(path).stem for path, _ in rows] == ["good", "clipping", "silence"]
    assert rows[0][1]  # the good file has a transcript
    errors = err.splitlines()
    assert len(errors) == 5 and errors[-1] == f"{PROG}: 4 of 7 inputs failed"
    for line, name in zip(errors[:4], ("nan", "short", "missing", "text")):
        assert line.startswith(f"{PROG}: error: {audio / name}.wav: "), line
    assert "NaN/inf" in errors[0]
    assert "300 samples" in errors[1] and "400-sample receptive field" in errors[1]
    assert "not found" in errors[2] and "not a readable audio file" in errors[3]
    assert "Traceback" not in err


def test_results_are_streamed_as_each_file_is_done(model_dir, audio, monkeypatch):
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    printed_before: list[int] = []
    real = Transcriber.transcribe_file

    def spy(self, path):
        printed_before.append(stdout.getvalue().count("\n"))
        return real(self, path)

    monkeypatch.setattr(Transcriber, "transcribe_file", spy)
    transcribe(
        [str(model_dir), str(audio / "good.wav"), str(audio / "clipping.wav"), str(audio / "silence.wav")]
    )
    assert printed_before == [0, 1, 2]  # each result was out before the next file was read


def test_json_gives_one_record_per_input_errors_included(model_dir, audio, capsys):
    code, out, err = _run_transcribe(
        [str(model_dir), str(audio / "good.wav"), "--json", str(audio / "nan.wav")], capsys
    )  # an option between the files
    assert code == 1
    good, bad = (json.loads(line) for line in out.splitlines())
    assert good["path"] == str(audio / "good.wav") and good["text"] and good["words"]
    assert (
        set(bad) == {"path", "error"} and bad["path"] == str(audio / "nan.wav") and "NaN/inf" in bad["error"]
    )
    assert err == f"{PROG}: 1 of 2 inputs failed\n"


def test_folders_recursively_and_manifests_with_a_bad_line(model_dir, audio, tmp_path, capsys):
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    sf.write(tree / "a" / "one.wav", _noise(8000, 5), 16000)
    sf.write(tree / "a" / "b" / "two.flac", _noise(8000, 6), 16000)
    (tree / "a" / "notes.txt").write_text("not audio, not picked up")
    (tmp_path / "empty").mkdir()
    tsv = tmp_path / "m.tsv"
    write_manifest(tsv, audio, [("good.wav", 16000)])
    tsv.write_text(tsv.read_text() + "broken line without a size\n")
    code, out, err = _run_transcribe(
        ["--json", str(model_dir), str(tree), str(tsv), str(tmp_path / "empty")], capsys
    )
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in records] == [
        str(tree / "a" / "b" / "two.flac"),
        str(tree / "a" / "one.wav"),
        str(audio / "good.wav"),
        f"{tsv}:3",
        str(tmp_path / "empty"),
    ]
    assert [("error" in r) for r in records] == [False, False, False, True, True]
    assert "no audio files" in records[4]["error"]
    assert err == f"{PROG}: 2 of 5 inputs failed\n"


def test_every_input_failing_or_a_bad_model_is_exit_2_in_one_line(model_dir, audio, tmp_path, capsys):
    code, out, err = _run_transcribe([str(model_dir), str(audio / "nan.wav")], capsys)
    assert (code, out) == (2, "") and err.splitlines()[-1] == f"{PROG}: 1 of 1 inputs failed"
    code, out, err = _run_transcribe([str(tmp_path / "no_model"), str(audio / "good.wav")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"{PROG}: error: {tmp_path / 'no_model'}: no such file or folder")
    pretraining = tmp_path / "pretraining"
    save_model(Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(num_layers=1)), pretraining)
    code, out, err = _run_transcribe([str(pretraining), str(audio / "good.wav")], capsys)
    assert (
        code == 2
        and out == ""
        and err
        == (
            f"{PROG}: error: {pretraining}: holds a Wav2Vec2ForPreTraining, "
            f"not a fine-tuned Wav2Vec2ForCTC; give a fine-tuning run or its "
            f"model folder\n"
        )
    )
    code, _, err = _run_transcribe([str(model_dir), "--bogus", str(audio / "good.wav")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"{PROG}: error: ") and "--bogus" in err
    code, _, err = _run_transcribe([str(model_dir)], capsys)
    assert code == 2 and err.count("\n") == 1 and "give audio files" in err


def test_debug_shows_the_traceback_of_a_bad_file(model_dir, audio, capsys):
    code, out, err = _run_transcribe(
        ["--debug", str(model_dir), str(audio / "nan.wav"), str(audio / "good.wav")], capsys
    )
    assert code == 1 and out.count("\n") == 1
    assert "Traceback" in err and "AudioError" in err and f"{PROG}: error: {audio / 'nan.wav'}: " in err


# ----------------------------------------------------------------------------- item 5: audio policy
def test_transcription_converts_stereo_and_other_rates_with_a_notice(model_dir, tmp_path, capsys):
    stereo = _noise(44100, 7, channels=2)
    sf.write(tmp_path / "stereo44k.wav", stereo, 44100, subtype="FLOAT")
    sf.write(tmp_path / "mono8k.wav", _noise(8000, 8), 8000, subtype="FLOAT")
    code, out, err = _run_transcribe(
        [str(model_dir), "--json", str(tmp_path / "stereo44k.wav"), str(tmp_path / "mono8k.wav")], capsys
    )
    assert code == 0
    assert err.splitlines() == [
        (
            f"{PROG}: note: {tmp_path / 'stereo44k.wav'}: 2 channels averaged to mono, "
            f"resampled from 44100 Hz to 16000 Hz (soxr)"
        ),
        f"{PROG}: note: {tmp_path / 'mono8k.wav'}: resampled from 8000 Hz to 16000 Hz (soxr)",
    ]
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["notice"].endswith("2 channels averaged to mono, resampled from 44100 Hz to 16000 Hz (soxr)")
    assert second["duration_s"] == 1.0
    # what the model heard is the mean of the channels, resampled by soxr
    tr = Transcriber.from_path(model_dir)
    expected = soxr.resample(stereo.mean(axis=1), 44100, 16000, quality="HQ").astype(np.float32)
    assert first["text"] == tr.transcribe_wave(torch.from_numpy(expected)).text


# ----------------------------------------------------------------------------- training CLIs
TINY = [
    *CLI_MICRO_MODEL,
    "data.max_sample_size=8000",
    "data.max_tokens=16000",
    "trainer.progress=false",
    "trainer.num_threads=1",
]


def _cli(
    command: str, *args: str, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a console entry point of wav2vec2_lite.cli in a fresh process."""
    return subprocess.run(
        [sys.executable, "-c", f"from wav2vec2_lite.cli import {command}; {command}()", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd or REPO,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def _pretrain(
    corpus: Path, run: Path, *overrides: str, env: dict | None = None
) -> subprocess.CompletedProcess:
    return _cli(
        "pretrain",
        "--config-name",
        "pretrain_tiny",
        f"data.manifest_dir={corpus}",
        *TINY,
        f"hydra.run.dir={run}",
        *overrides,
        env=env,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_toy_corpus(tmp_path_factory.mktemp("toy"), train=6, valid=2, seed=1)


def _one_error(proc: subprocess.CompletedProcess, prog: str = "w2v2-pretrain") -> str:
    """The stderr of a run that failed with a user error: one ``PROG: error:`` message, no traceback."""
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{prog}: error: ")]
    assert len(errors) == 1, proc.stderr
    return proc.stderr[proc.stderr.index(f"{prog}: error: ") :]


def test_training_refuses_stereo_and_other_rates_naming_the_overrides(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    (data / "wav").mkdir(parents=True)
    sf.write(data / "wav" / "stereo.wav", rng.standard_normal((16000, 2)).astype(np.float32) * 0.1, 16000)
    sf.write(data / "wav" / "low.wav", rng.standard_normal(8000).astype(np.float32) * 0.1, 8000)
    for i in range(3):
        sf.write(data / "wav" / f"ok{i}.wav", rng.standard_normal(16000).astype(np.float32) * 0.1, 16000)
    rows = [("wav/stereo.wav", 16000), ("wav/low.wav", 8000)] + [(f"wav/ok{i}.wav", 16000) for i in range(3)]
    write_manifest(data / "train.tsv", data, rows)
    write_manifest(data / "valid.tsv", data, rows[2:])
    refused = _pretrain(data, tmp_path / "run", "trainer.max_updates=1")
    assert refused.returncode == 2
    message = _one_error(refused)
    assert "nothing was trained" in message
    assert f"{data / 'wav' / 'stereo.wav'}: has 2 channels, expected mono (or set data.mono=mix)" in message
    assert "sample rate is 8000 Hz, expected 16000 Hz (or set data.resample=soxr)" in message
    assert "mono='mix'" not in message and "resample='soxr'" not in message
    accepted = _pretrain(
        data, tmp_path / "run", "trainer.max_updates=1", "data.mono=mix", "data.resample=soxr"
    )
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last").is_dir()


def test_user_errors_are_one_line_exit_2_and_debug_shows_the_traceback(corpus, tmp_path):
    bad_key = _pretrain(corpus, tmp_path / "r", "data.bogus=1")
    assert bad_key.returncode == 2
    assert _one_error(bad_key).startswith(
        "w2v2-pretrain: error: unknown config key data.bogus: the keys of data are "
    )
    typo = _pretrain(corpus, tmp_path / "r", "trainer.max_update=1")  # refused by Hydra: the project's line
    assert typo.returncode == 2
    assert _one_error(typo) == (
        "w2v2-pretrain: error: unknown config key trainer.max_update: did you mean trainer.max_updates?\n"
    )
    bad_value = _pretrain(corpus, tmp_path / "r", "trainer.update_freq=0")
    assert bad_value.returncode == 2
    assert _one_error(bad_value) == "w2v2-pretrain: error: trainer.update_freq: must be > 0 (got 0)\n"
    missing = _pretrain(tmp_path / "nowhere", tmp_path / "r")
    assert missing.returncode == 2 and "manifest not found" in _one_error(missing)
    for debug in (["--debug"], []):
        shown = _pretrain(
            tmp_path / "nowhere", tmp_path / "r", *debug, env=None if debug else {"HYDRA_FULL_ERROR": "1"}
        )
        assert shown.returncode != 0 and "Traceback" in shown.stderr and "FileNotFoundError" in shown.stderr


def test_run_dir_that_is_a_file_gets_the_projects_error(corpus, tmp_path):
    (tmp_path / "taken").write_text("a file")
    proc = _pretrain(corpus, tmp_path / "taken", "trainer.max_updates=1")
    assert proc.returncode == 2
    assert _one_error(proc) == (
        f"w2v2-pretrain: error: run directory {tmp_path / 'taken'} is not writable: it is "
        f"a file, not a folder; set hydra.run.dir to a folder for the run's outputs\n"
    )


def _bad_corpus(corpus: Path, dest: Path) -> tuple[Path, dict[str, str]]:
    """A copy of ``corpus`` whose train manifest holds one good row and one row per kind of bad input."""
    import shutil

    from wav2vec2_lite.data.manifest import read_labels, write_labels

    shutil.copytree(corpus, dest)
    w, rng = dest / "wav", np.random.default_rng(11)
    (w / "empty.wav").write_bytes(b"")
    sf.write(w / "cut.wav", rng.standard_normal(16000) * 0.1, 16000)
    (w / "cut.wav").write_bytes((w / "cut.wav").read_bytes()[:16000])
    (w / "text.wav").write_text("not audio")
    nan = rng.standard_normal(16000).astype(np.float32) * 0.1
    nan[5] = np.nan
    sf.write(w / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(w / "stereo.wav", rng.standard_normal((16000, 2)) * 0.1, 16000)
    sf.write(w / "rate.wav", rng.standard_normal(8000) * 0.1, 8000)
    sf.write(w / "short.wav", rng.standard_normal(300) * 0.1, 16000)
    sf.write(w / "long.wav", rng.standard_normal(48000) * 0.1, 16000)
    good = sf.info(w / "train_00000.wav").frames
    rows = [
        ("wav/train_00000.wav", good),
        ("wav/empty.wav", 16000),
        ("wav/cut.wav", 16000),
        ("wav/text.wav", 16000),
        ("wav/nan.wav", 16000),
        ("wav/stereo.wav", 16000),
        ("wav/rate.wav", 8000),
        ("wav/short.wav", 300),
        ("wav/missing.wav", 16000),
        ("wav/long.wav", 48000),
    ]
    write_manifest(dest / "train.tsv", dest, rows)
    (dest / "train.tsv").write_text((dest / "train.tsv").read_text() + "malformed line\n")
    write_labels(dest / "train.ltr", read_labels(corpus / "train.ltr")[:1] + ["A |"] * 9 + ["A |"])
    expected = {
        "empty": "file is empty (0 bytes)",
        "cut": "truncated WAV",
        "text": "not a readable audio file",
        "nan": "1 NaN/inf sample(s)",
        "stereo": "has 2 channels",
        "rate": "sample rate is 8000 Hz",
        "short": "300 samples",
        "missing": "audio file not found",
    }
    return dest, expected


def test_every_kind_of_bad_row_through_pretrain_finetune_and_transcribe(corpus, model_dir, tmp_path, capsys):
    data, expected = _bad_corpus(corpus, tmp_path / "bad")
    for command, extra in (
        ("pretrain", ["--config-name", "pretrain_tiny", *TINY]),
        ("finetune", ["--config-name", "finetune_tiny", "model=tiny", *TINY[:7]]),
    ):
        proc = _cli(
            command,
            *extra,
            f"data.manifest_dir={data}",
            "data.max_duration_s=2",
            "trainer.max_updates=1",
            "trainer.progress=false",
            f"hydra.run.dir={tmp_path / command}",
        )
        assert proc.returncode == 2, proc.stderr[-3000:]
        message = _one_error(proc, f"w2v2-{command}")
        assert "nothing was trained" in message and not (tmp_path / command / "checkpoints" / "last").exists()
        for name, reason in {**expected, "long": "3.0 s is longer than max_duration_s=2"}.items():
            assert any(f"{data / 'wav' / name}.wav: {reason}" in ln for ln in message.splitlines()), (
                name,
                message,
            )
        assert f"{data / 'train.tsv'}:12: -: malformed manifest line" in message
    code, out, err = _run_transcribe([str(model_dir), str(data / "train.tsv")], capsys)
    assert code == 1
    assert [Path(ln.split("\t")[0]).stem for ln in out.splitlines()] == [
        "train_00000",
        "stereo",
        "rate",
        "long",
    ]
    for name, reason in expected.items():
        if name not in ("stereo", "rate"):  # converted, with a note
            assert f"{PROG}: error: {data / 'wav' / name}.wav: " in err and reason in err, (name, err)
    assert f"{PROG}: error: {data / 'train.tsv'}:12: expected 'relative/path<TAB>num_samples'" in err
    assert err.splitlines()[-1] == f"{PROG}: 7 of 11 inputs failed"


def test_a_too_long_utterance_names_the_cli_keys(corpus, tmp_path):
    proc = _cli(
        "finetune",
        "--config-name",
        "finetune_tiny",
        "model=tiny",
        *TINY[:7],
        f"data.manifest_dir={corpus}",
        "data.max_tokens=1000",
        "trainer.max_updates=1",
        f"hydra.run.dir={tmp_path / 'ft'}",
    )
    assert proc.returncode == 2
    message = _one_error(proc, "w2v2-finetune")
    assert "more than max_tokens=1000" in message and "or set data.too_long=skip" in message
    assert "too_long='skip'" not in message


# ----------------------------------------------------------------------------- item 7: true messages
def test_resume_says_from_which_update(corpus, tmp_path):
    first = _pretrain(corpus, tmp_path / "run", "trainer.max_updates=2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "resuming" not in first.stderr
    again = _pretrain(corpus, tmp_path / "run", "trainer.max_updates=3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"resuming from update 2 ({tmp_path / 'run' / 'checkpoints' / 'last'})" in again.stderr.splitlines()
    )
    info = json.loads(
        (tmp_path / "run" / "run.json").read_text()
    )  # the first process is kept, not overwritten
    assert info["resumed_from_update"] == 2 and [
        p["resumed_from_update"] for p in info["earlier_processes"]
    ] == [None]
    assert info["earlier_processes"][0]["code_version"] == info["code_version"]


def test_nonfinite_stop_without_a_checkpoint_says_none_was_written(corpus, tmp_path):
    proc = _pretrain(
        corpus,
        tmp_path / "run",
        "optim.lr=1e12",
        "trainer.max_consecutive_nonfinite=1",
        "trainer.max_updates=5",
    )
    assert not (tmp_path / "run" / "checkpoints" / "last").exists()
    message = _one_error(proc)
    assert proc.returncode == 1  # one update ran before the stop
    assert "non-finite loss or gradient" in message
    assert "No checkpoint was written: rerunning the same command starts again from update 0." in message
    assert "last good checkpoint" not in message and "intact" not in message


def test_finetune_from_nan_pretrained_weights_names_the_file_and_no_checkpoint(corpus, tmp_path):
    from safetensors.torch import load_file, save_file

    from wav2vec2_lite.serialization import write_checksums
    from wav2vec2_lite.train.checkpoint import file_sha256

    pre = tmp_path / "pre"
    save_model(Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(num_layers=1)), pre)
    weights = load_file(pre / "model.safetensors")
    weights[min(weights)].fill_(float("nan"))
    save_file(weights, pre / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((pre / "config.json").read_text())
    config["weights_sha256"] = file_sha256(pre / "model.safetensors")  # damaged at save time, not on disk
    (pre / "config.json").write_text(json.dumps(config))
    write_checksums(pre)
    proc = _cli(
        "finetune",
        "--config-name",
        "finetune_tiny",
        f"data.manifest_dir={corpus}",
        f"finetune.pretrained={pre}",
        f"hydra.run.dir={tmp_path / 'ft'}",
        "trainer.max_updates=1",
        "trainer.progress=false",
    )
    assert proc.returncode == 2
    message = _one_error(proc, "w2v2-finetune")
    assert str(pre / "model.safetensors") in message and "non-finite" in message
    assert "checkpoint is" not in message and not (tmp_path / "ft" / "checkpoints" / "last").exists()


# ----------------------------------------------------------------------------- export
def test_export_user_errors_are_one_line_exit_2(model_dir, tmp_path, capsys):
    for argv, expected in (
        ([str(tmp_path / "none"), str(tmp_path / "out")], "no such file or folder"),
        ([str(model_dir), str(model_dir / "tokenizer.json")], "is a file"),
    ):
        with pytest.raises(SystemExit) as e:
            export_hf(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("w2v2-export-hf: error: ")
        assert expected in err
    export_hf(["--debug", str(model_dir), str(tmp_path / "hf")])  # an option before the positionals
    assert (tmp_path / "hf" / "vocab.json").is_file()
