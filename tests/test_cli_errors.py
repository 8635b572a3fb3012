"""Every console script, given bad arguments and files, answers with one line (issue 38, section 3).

Each case runs the script's entry point in this process and asserts: no traceback, one
``PROG: error: ...`` line naming the file or key and what to do, the documented exit status
(2: usage error or nothing ran; 1: training stopped after updates; 130: Ctrl-C; 141: the reader of
stdout went away). Errors a root user never meets (read-only folders, full disks) are injected at
the write, so these run everywhere. One subprocess checks that ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tomllib
import torch
from safetensors import SafetensorError

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.serialization import save_model
from wav2vec2_lite.train.run_dir import RunDir, RunDirError
from wav2vec2_lite.train.toy_data import make_toy_corpus

from _helpers import CLI_MICRO_MODEL

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
OURS = sorted(SCRIPTS)
HYDRA = ("w2v2-pretrain", "w2v2-finetune")
TINY = [
    "data.max_sample_size=8000",
    "data.max_tokens=40000",
    "trainer.progress=false",
    "trainer.num_threads=1",
    "trainer.max_updates=2",
]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """A fine-tuned model, a pretraining model, a small corpus, audio and bad model files."""
    root = tmp_path_factory.mktemp("fx")
    tok = CharTokenizer(list("|ABC"))
    torch.manual_seed(0)
    ctc = Wav2Vec2ForCTC(
        Wav2Vec2Config.tiny(num_layers=1, vocab_size=len(tok), feat_extract_norm="layer", conv_bias=True)
    )
    save_model(ctc, root / "ctc" / "checkpoints" / "best")
    tok.save(root / "ctc" / "tokenizer.json")
    save_model(Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(num_layers=1)), root / "pt")
    make_toy_corpus(root / "corpus", train=6, valid=3)
    noise = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    sf.write(root / "good.wav", noise, 16000)
    (root / "empty.pt").write_bytes(b"")
    (root / "truncated.pt").write_bytes(b"PK\x03\x04" + bytes(60))
    return root


def _entry(name: str):
    module, _, attr = SCRIPTS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def run(name: str, argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of console script ``name`` run here with ``argv``."""
    monkeypatch.setattr(sys, "argv", [name, *argv])
    try:
        result = _entry(name)() if name in HYDRA else _entry(name)(argv)
        code = result if isinstance(result, int) else 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    return code, out, err


def error_line(err: str, prog: str) -> str:
    """The one ``PROG: error:`` line of ``err``."""
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _train(name: str, fx: Path, run_dir: Path, *overrides: str) -> list[str]:
    config = "pretrain_tiny" if name == "w2v2-pretrain" else "finetune_tiny"
    # fine-tuning takes its architecture from the (1-layer) pretrained model
    extra = CLI_MICRO_MODEL if name == "w2v2-pretrain" else [f"finetune.pretrained={fx / 'pt'}"]
    return [
        "--config-name",
        config,
        f"data.manifest_dir={fx / 'corpus'}",
        f"hydra.run.dir={run_dir}",
        *TINY,
        *extra,
        *overrides,
    ]


def _bad_argv(name: str, fx: Path, tmp: Path, model: str | None = None, device: str = "cpu") -> list[str]:
    """A call of ``name`` that reaches its model (``model``) on ``device``."""
    model = model or str(
        fx / ("ctc" if name in ("w2v2-transcribe", "w2v2-evaluate", "w2v2-export-hf") else "pt")
    )
    return {
        "w2v2-transcribe": [model, str(fx / "good.wav"), "--device", device],
        "w2v2-evaluate": [
            model,
            "--data",
            str(fx / "corpus"),
            "--split",
            "valid",
            "--labels",
            "ltr",
            "--device",
            device,
        ],
        "w2v2-extract": [model, str(fx / "good.wav"), "--out", str(tmp / "x"), "--device", device],
        "w2v2-export-hf": [model, str(tmp / "hf")],
        "w2v2-probe": [model, "--data", str(fx / "corpus"), "--steps", "1", "--quiet"],
    }[name]


# ----------------------------------------------------------------------------- every script
@pytest.mark.parametrize("name", OURS)
def test_ctrl_c_is_one_line_and_exit_130_in_every_script(name, fx, tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", interrupted)  # Hydra parses too
    argv = _train(name, fx, tmp_path / "run") if name in HYDRA else [str(fx), "--out", str(tmp_path / "o")]
    code, _, err = run(name, argv, capsys, monkeypatch)
    assert code == 130
    assert error_line(err, name) == f"{name}: error: interrupted (Ctrl-C)"


def test_ctrl_c_during_training_says_what_a_rerun_resumes_from(fx, tmp_path, capsys, monkeypatch):
    from wav2vec2_lite.train.trainer import Trainer

    real, calls = Trainer.train_step, []

    def step_then_interrupt(self, group):
        calls.append(self.update)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, group)

    monkeypatch.setattr(Trainer, "train_step", step_then_interrupt)
    run_dir = tmp_path / "run"
    argv = _train("w2v2-pretrain", fx, run_dir, "trainer.save_interval=1")
    code, _, err = run("w2v2-pretrain", argv, capsys, monkeypatch)
    assert code == 130
    assert error_line(err, "w2v2-pretrain") == (
        f"w2v2-pretrain: error: interrupted (Ctrl-C). The last checkpoint is "
        f"{run_dir / 'checkpoints' / 'last'} (update 1): rerunning the same command resumes from update 1."
    )


@pytest.mark.parametrize("name", OURS)
def test_a_reader_that_goes_away_ends_every_script_quietly_with_141(name, fx, tmp_path, capsys, monkeypatch):
    def gone(*a, **k):  # what writing to a pipe whose reader exited (`| head`) raises
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", gone)
    argv = _train(name, fx, tmp_path / "run") if name in HYDRA else [str(fx), "--out", str(tmp_path / "o")]
    code, _, err = run(name, argv, capsys, monkeypatch)
    assert code == 141 and err == ""


@pytest.mark.parametrize("name", ["w2v2-transcribe", "w2v2-evaluate", "w2v2-extract"])
@pytest.mark.parametrize(
    "device, expected",
    [
        ("foo", "--device foo: not a device; use cpu, cuda, cuda:N or mps"),
        ("cuda:7", "--device cuda:7: "),
    ],
)
def test_an_unknown_or_unavailable_device_is_one_line(
    name, device, expected, fx, tmp_path, capsys, monkeypatch
):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code, _, err = run(name, _bad_argv(name, fx, tmp_path, device=device), capsys, monkeypatch)
    line = error_line(err, name)
    assert code == 2 and line.startswith(f"{name}: error: {expected}"), line
    assert "cpu" in line  # what to pass instead
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", HYDRA)
def test_an_unknown_or_unavailable_training_device_names_the_key(name, fx, tmp_path, capsys, monkeypatch):
    code, _, err = run(name, _train(name, fx, tmp_path / "a", "trainer.device=foo"), capsys, monkeypatch)
    assert code == 2
    assert (
        error_line(err, name)
        == f"{name}: error: trainer.device=foo: not a device; use auto, cpu, cuda, cuda:N or mps"
    )
    if not torch.cuda.is_available():
        code, _, err = run(name, _train(name, fx, tmp_path / "b", "trainer.device=cuda"), capsys, monkeypatch)
        assert code == 2
        assert "trainer.device=cuda: no CUDA GPU is available here; use trainer.device=cpu" in error_line(
            err, name
        )


MODEL_READERS = ["w2v2-transcribe", "w2v2-evaluate", "w2v2-extract", "w2v2-export-hf", "w2v2-probe"]


@pytest.mark.parametrize("name", MODEL_READERS)
def test_an_audio_file_where_the_model_goes_is_named(name, fx, tmp_path, capsys, monkeypatch):
    code, _, err = run(name, _bad_argv(name, fx, tmp_path, model=str(fx / "good.wav")), capsys, monkeypatch)
    line = error_line(err, name)
    assert code == 2
    assert f"{fx / 'good.wav'}: an audio file where the model goes; the model is the first argument" in line


@pytest.mark.parametrize("name", MODEL_READERS)
@pytest.mark.parametrize(
    "bad, why", [("empty.pt", "empty (0 bytes)"), ("truncated.pt", "truncated or not a PyTorch")]
)
def test_an_empty_or_truncated_fairseq_pt_is_named(name, bad, why, fx, tmp_path, capsys, monkeypatch):
    code, _, err = run(name, _bad_argv(name, fx, tmp_path, model=str(fx / bad)), capsys, monkeypatch)
    line = error_line(err, name)
    assert code == 2
    assert f"{fx / bad}: cannot be read as a model: the file is {why}" in line and "copy it again" in line


@pytest.mark.parametrize("bad", ["empty.pt", "truncated.pt", "good.wav"])
def test_a_bad_file_as_finetune_pretrained_is_one_line(bad, fx, tmp_path, capsys, monkeypatch):
    argv = _train("w2v2-finetune", fx, tmp_path / "run", f"finetune.pretrained={fx / bad}")
    code, _, err = run("w2v2-finetune", argv, capsys, monkeypatch)
    line = error_line(err, "w2v2-finetune")
    assert code == 2 and line.startswith(f"w2v2-finetune: error: {fx / bad}: ")
    if bad.endswith(".wav"):
        assert "an audio file where the model goes; finetune.pretrained names the pretrained model" in line
    else:
        assert "cannot be read as a model" in line and "copy it again" in line
    assert not (tmp_path / "run" / "checkpoints" / "last").exists()


def test_only_errors_of_torch_s_file_reader_are_called_a_damaged_file(tmp_path):
    from wav2vec2_lite.cli.common import _loading_model
    from wav2vec2_lite.serialization import CheckpointError

    pt = tmp_path / "m.pt"
    pt.write_bytes(b"PK\x03\x04" + bytes(60))
    with pytest.raises(CheckpointError, match=r"m.pt: cannot be read as a model: the file is truncated"):
        with _loading_model(str(pt)):
            torch.load(pt, weights_only=True)
    with pytest.raises(RuntimeError, match="^size mismatch for w$"):  # a model that does not fit: as it is
        with _loading_model(str(pt)):
            raise RuntimeError("size mismatch for w")


def test_an_untrusted_pickle_in_w2v2_probe_is_one_line_naming_the_way_round(
    fx, tmp_path, capsys, monkeypatch
):
    class Evil:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"model": {}, "evil": Evil()}, tmp_path / "evil.pt")
    code, out, err = run(
        "w2v2-probe", _bad_argv("w2v2-probe", fx, tmp_path, str(tmp_path / "evil.pt")), capsys, monkeypatch
    )
    line = error_line(err, "w2v2-probe")
    assert code == 2 and "this ran" not in out
    assert f"{tmp_path / 'evil.pt'}: refused to unpickle" in line and "save it once as a model folder" in line


# ----------------------------------------------------------------------------- files and overrides
def test_a_torn_metrics_line_is_named_and_a_cut_last_line_is_a_note(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    good = json.dumps({"kind": "train", "update": 1, "loss": 2.0})
    (run_dir / "metrics.jsonl").write_text(f'{good}\n{{"kind": "tra\n{good}\n')
    code, _, err = run("w2v2-report", [str(run_dir)], capsys, monkeypatch)
    line = error_line(err, "w2v2-report")
    assert code == 2 and f"{run_dir / 'metrics.jsonl'}:2: not a JSON record" in line and "repair" in line
    (run_dir / "metrics.jsonl").write_text(f'{good}\n{{"kind": "tra')  # a killed run's last write
    code, out, err = run("w2v2-report", [str(run_dir)], capsys, monkeypatch)
    assert code == 0 and "wrote" in out
    assert f"w2v2-report: note: {run_dir / 'metrics.jsonl'}:2: left out a last line cut short" in err
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "metrics.jsonl").write_text(f"[1, 2]\n{good}\n")
    code, _, err = run("w2v2-sweep-summary", [str(sweep)], capsys, monkeypatch)
    assert code == 2
    assert f"{sweep / '0' / 'metrics.jsonl'}:1: not a JSON object" in error_line(err, "w2v2-sweep-summary")


@pytest.mark.parametrize("name", HYDRA)
def test_an_unquoted_override_with_a_space_and_a_nan_lr_are_named(name, fx, tmp_path, capsys, monkeypatch):
    argv = _train(name, fx, tmp_path / "a", "data.manifest_dir=/my", "corpus")
    code, _, err = run(name, argv, capsys, monkeypatch)
    assert code == 2
    assert error_line(err, name) == (
        f"{name}: error: 'corpus': not KEY=VALUE; it looks like the rest of the value before it, split at "
        f"a space by the shell: quote the whole override, 'data.manifest_dir=/my corpus'"
    )
    code, _, err = run(name, _train(name, fx, tmp_path / "b", "optim.lr=nan"), capsys, monkeypatch)
    assert code == 2
    assert error_line(err, name) == f"{name}: error: optim.lr: must be a finite number > 0 (got nan)"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "checkpoints" / "last").exists()


def test_a_manifest_with_a_byte_order_mark_is_read(fx, tmp_path, capsys, monkeypatch):
    tsv = tmp_path / "bom.tsv"
    tsv.write_bytes(b"\xef\xbb\xbf" + (fx / "corpus" / "valid.tsv").read_bytes())
    code, out, err = run("w2v2-transcribe", [str(fx / "ctc"), str(tsv)], capsys, monkeypatch)
    assert code == 0 and len(out.splitlines()) == 3, err
    assert "\ufeff" not in out


# ----------------------------------------------------------------------------- failed writes
def _eroFS(path):
    return OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))


def test_a_read_only_run_folder_names_hydra_run_dir(fx, tmp_path, capsys, monkeypatch):
    import hydra.core.utils

    def read_only(cfg, filename, output_dir):
        raise _eroFS(Path(output_dir) / filename)

    monkeypatch.setattr(hydra.core.utils, "_save_config", read_only)
    code, _, err = run("w2v2-pretrain", _train("w2v2-pretrain", fx, tmp_path / "run"), capsys, monkeypatch)
    line = error_line(err, "w2v2-pretrain")
    assert code == 2 and ".hydra/config.yaml: Read-only file system (EROFS)" in line
    assert "Set hydra.run.dir to a folder you can write to" in err


def test_a_full_disk_during_a_save_names_the_checkpoint_and_what_a_rerun_does(
    fx, tmp_path, capsys, monkeypatch
):
    import wav2vec2_lite.serialization as serialization

    def full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(serialization, "save_file", full)
    run_dir = tmp_path / "run"
    code, _, err = run("w2v2-pretrain", _train("w2v2-pretrain", fx, run_dir), capsys, monkeypatch)
    line = error_line(err, "w2v2-pretrain")
    assert code == 1  # it ran updates
    assert f"{run_dir / 'checkpoints'}/" in line and ": could not write the checkpoint (ENOSPC: " in line
    assert "No space left on device" in line and "free some disk space" in line
    assert "No checkpoint was written: rerunning the same command starts again from update 0." in line
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name != ".write-probe"]


def test_a_read_only_extract_folder_is_one_line_and_leaves_nothing(fx, tmp_path, capsys, monkeypatch):
    import wav2vec2_lite.extract as extract

    monkeypatch.setattr(extract, "save_file", lambda arrays, path, **k: (_ for _ in ()).throw(_eroFS(path)))
    code, _, err = run("w2v2-extract", _bad_argv("w2v2-extract", fx, tmp_path), capsys, monkeypatch)
    line = error_line(err, "w2v2-extract")
    assert (
        code == 2 and "good.safetensors: Read-only file system (EROFS)" in line and "another folder" in line
    )
    assert not (tmp_path / "x").exists()
    monkeypatch.setattr(
        extract,
        "save_file",
        lambda *a, **k: (_ for _ in ()).throw(
            SafetensorError("I/O error: No space left on device (os error 28)")
        ),
    )
    code, _, err = run("w2v2-extract", _bad_argv("w2v2-extract", fx, tmp_path), capsys, monkeypatch)
    assert (
        code == 2 and "could not write" in error_line(err, "w2v2-extract") and "free some disk space" in err
    )


def test_a_read_only_evaluate_folder_keeps_the_scores_on_stdout(fx, tmp_path, capsys, monkeypatch):
    import wav2vec2_lite.cli.asr as cli_asr

    def read_only(folder, *a):
        raise _eroFS(Path(folder) / "summary.json")

    monkeypatch.setattr(cli_asr, "_write_evaluation", read_only)
    argv = [*_bad_argv("w2v2-evaluate", fx, tmp_path), "--out", str(tmp_path / "eval")]
    code, out, err = run("w2v2-evaluate", argv, capsys, monkeypatch)
    assert code == 2 and out.startswith("valid: WER ")  # scored, and shown before the write failed
    assert "summary.json: Read-only file system (EROFS)" in error_line(err, "w2v2-evaluate")
    assert f"--out {tmp_path / 'eval'} was not written; the scores above are the result" in err
    assert not (tmp_path / "eval").exists()


def test_a_full_disk_in_w2v2_manifest_is_one_line(fx, tmp_path, capsys, monkeypatch):
    import wav2vec2_lite.data.prepare as prepare

    def full(path, *a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(prepare, "write_manifest", full)
    code, _, err = run(
        "w2v2-manifest",
        [str(fx / "corpus" / "wav"), "--dest", str(tmp_path / "m"), "--valid-percent", "0.2"],
        capsys,
        monkeypatch,
    )
    line = error_line(err, "w2v2-manifest")
    assert code == 2 and "train.tsv: No space left on device (ENOSPC); free some disk space" in line
    assert not (tmp_path / "m").exists()


def test_the_space_check_counts_last_best_and_a_save_s_temporary_copy(tmp_path, monkeypatch):
    import wav2vec2_lite.train.run_dir as run_dir_mod

    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(num_layers=1))
    one = sum(v.numel() * v.element_size() for v in model.state_dict().values()) + 2 * sum(
        p.numel() * p.element_size() for p in model.parameters()
    )
    usage = namedtuple("usage", "total used free")
    run = RunDir(tmp_path / "run")
    run.prepare()
    monkeypatch.setattr(run_dir_mod.shutil, "disk_usage", lambda p: usage(10 * one, 0, int(2.5 * one)))
    with pytest.raises(RunDirError, match=r"three must fit \(last, best, and the temporary copy"):
        run.check_free_space(model)  # room for two: the third save of a run with best fails
    (run.checkpoints / "last").mkdir()
    (run.checkpoints / "last" / "model.safetensors").write_bytes(bytes(one // 2 + 1))
    run.check_free_space(model)  # half of one is on disk already


# ----------------------------------------------------------------------------- --debug, for real
def test_debug_shows_the_traceback_and_its_absence_hides_it_and_a_closed_pipe_is_quiet(fx):
    code = (
        "import sys; from wav2vec2_lite.cli import transcribe; sys.argv[0] = 'w2v2-transcribe'; transcribe()"
    )
    cmd = [sys.executable, "-c", code, str(fx / "ctc"), str(fx / "good.wav"), "--device", "foo"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert (
        plain.stderr == "w2v2-transcribe: error: --device foo: not a device; use cpu, cuda, cuda:N or mps\n"
    )
    debug = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, timeout=300, env=env)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith(
        "ValueError: --device foo: not a device; use cpu, cuda, cuda:N or mps"
    )
    # output piped into a reader that is gone (`| head` after its lines): no traceback, exit 141
    piped = [sys.executable, "-c", code, str(fx / "ctc"), str(fx / "good.wav")]
    proc = subprocess.Popen(piped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and err == ""
