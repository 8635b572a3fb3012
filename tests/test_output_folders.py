"""A tool never overwrites what it did not write (issue 33): every console script that writes a folder
claims it with ``wav2vec2_lite.tools.output_dir``; the single-file reports follow the same rule.

Each refusal is checked through the console entry point: exit 2, one ``PROG: error:`` line naming the
folder, what is in it and ``--overwrite``, and the folder byte-for-byte as it was (sha256 of every file).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.cli import evaluate, export_hf, extract, manifest, pretrain, probe, report
from wav2vec2_lite.data.manifest import read_labels, read_manifest, text_to_ltr
from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.serialization import save_model
from wav2vec2_lite.tools.output_dir import (
    MARKER,
    OutputError,
    check_training_run_dir,
    claim_output_dir,
    claim_output_file,
)
from wav2vec2_lite.train.checkpoint import load_checkpoint, save_checkpoint
from wav2vec2_lite.train.toy_data import make_toy_corpus

WORDS = [
    "ALPHA BETA",
    "GAMMA",
    "DELTA EPSILON",
    "ZETA ETA THETA",
    "IOTA",
    "KAPPA LAMBDA",
    "MU NU",
    "XI OMICRON",
]


# ----------------------------------------------------------------------------- helpers
def _tree(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (hidden ones included), by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _refused(command, argv: list[str], capsys, *expected: str) -> str:
    """Run ``command(argv)``: exit 2 with one error line holding each of ``expected``; that line."""
    with pytest.raises(SystemExit) as e:
        command(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("w2v2-") and ": error: " in err, err
    for text in expected:
        assert text in err, (text, err)
    return err


def _unchanged(folder: Path, before: dict[str, str]) -> None:
    """``folder`` holds the same bytes, and no temporary folder was left beside it."""
    assert _tree(folder) == before
    assert not [p for p in folder.parent.iterdir() if ".w2v2-" in p.name]


def _wav(path: Path, n: int = 3200, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32), 16000)


@pytest.fixture()
def audio(tmp_path) -> tuple[Path, Path, dict[str, str]]:
    """A folder of 8 wavs and a transcripts file: (folder, transcripts, {file name: text})."""
    folder = tmp_path / "audio"
    texts = {f"u{i}.wav": WORDS[i] for i in range(8)}
    for i, name in enumerate(texts):
        _wav(folder / name, 3200 + 160 * i, seed=i)
    (tmp_path / "t.tsv").write_text("".join(f"{name}\t{text.lower()}\n" for name, text in texts.items()))
    return folder, tmp_path / "t.tsv", texts


def _assert_aligned(dest: Path, texts: dict[str, str]) -> None:
    """Every split has its labels, every label line belongs to its audio row, no label file is left alone."""
    splits = sorted(p.stem for p in dest.glob("*.tsv"))
    assert splits and sorted(p.stem for p in dest.glob("*.ltr")) == splits == sorted(
        p.stem for p in dest.glob("*.wrd")
    )
    for split in splits:
        rows = read_manifest(dest / f"{split}.tsv").paths
        wrd, ltr = read_labels(dest / f"{split}.wrd"), read_labels(dest / f"{split}.ltr")
        assert len(rows) == len(wrd) == len(ltr)
        for rel, words, letters in zip(rows, wrd, ltr):
            where = (split, rel, words, letters)
            assert words == texts[Path(rel).name] and letters == text_to_ltr(words), where


def _ctc_folder(folder: Path) -> Path:
    tok = CharTokenizer(list("|ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    torch.manual_seed(0)
    save_model(Wav2Vec2ForCTC(Wav2Vec2Config.tiny(num_layers=1, vocab_size=len(tok))), folder)
    tok.save(folder / "tokenizer.json")
    return folder


# ----------------------------------------------------------------------------- w2v2-manifest
def test_manifest_into_a_labelled_corpus_is_refused_and_overwrite_replaces_the_whole_set(
    audio, tmp_path, capsys
):
    folder, transcripts, texts = audio
    corpus = make_toy_corpus(
        tmp_path / "corpus", train=6, valid=3
    )  # .tsv/.ltr/.wrd written by something else
    before = _tree(corpus)
    argv = [str(folder), "--dest", str(corpus), "--transcripts", str(transcripts), "--valid-percent", "0.25"]
    _refused(
        manifest,
        argv,
        capsys,
        str(corpus),
        "is not empty",
        "dict.ltr.txt",
        "not written by w2v2-manifest",
        "--overwrite",
    )
    _unchanged(corpus, before)

    manifest([*argv, "--overwrite"])
    assert "wrote" in capsys.readouterr().out
    _assert_aligned(
        corpus, texts
    )  # the old .ltr/.wrd (and wav/) are gone with the old set, not kept beside it
    assert sorted(p.name for p in corpus.iterdir()) == [
        MARKER,
        "dict.ltr.txt",
        "prepare_report.json",
        "train.ltr",
        "train.tsv",
        "train.wrd",
        "valid.ltr",
        "valid.tsv",
        "valid.wrd",
    ]
    record = json.loads((corpus / MARKER).read_text())
    assert record["tool"] == "w2v2-manifest" and sorted(record["files"]) == sorted(
        p.name for p in corpus.iterdir() if p.name != MARKER
    )
    assert not [p for p in tmp_path.iterdir() if ".w2v2-" in p.name]


def test_manifest_rerun_replaces_its_own_set_and_refuses_files_it_did_not_write(audio, tmp_path, capsys):
    folder, transcripts, texts = audio
    dest = tmp_path / "corpus"
    manifest(
        [
            str(folder),
            "--dest",
            str(dest),
            "--transcripts",
            str(transcripts),
            "--valid-percent",
            "0.25",
            "--test-percent",
            "0.25",
        ]
    )
    assert (dest / "test.tsv").is_file()
    capsys.readouterr()
    manifest([str(folder), "--dest", str(dest), "--transcripts", str(transcripts), "--valid-percent", "0.25"])
    assert "replaced the earlier output of w2v2-manifest" in capsys.readouterr().err
    assert (
        not (dest / "test.tsv").exists() and not (dest / "test.ltr").exists()
    )  # no split of the old set stays
    _assert_aligned(dest, texts)

    (dest / "train.phn").write_text("x\n")  # labels another tool added: they would no longer match
    before = _tree(dest)
    _refused(
        manifest,
        [str(folder), "--dest", str(dest)],
        capsys,
        "was written by w2v2-manifest but also holds",
        "train.phn",
        "--overwrite",
    )
    _unchanged(dest, before)


def test_manifest_never_replaces_its_own_input_or_a_run_and_a_failure_leaves_the_folder(
    audio, tmp_path, capsys
):
    folder, transcripts, _ = audio
    before = _tree(folder)
    _refused(
        manifest, [str(folder), "--dest", str(folder), "--overwrite"], capsys, "an input of this command"
    )
    _unchanged(folder, before)

    dest = tmp_path / "corpus"
    manifest([str(folder), "--dest", str(dest), "--transcripts", str(transcripts), "--valid-percent", "0.25"])
    capsys.readouterr()
    before = _tree(dest)
    _refused(
        manifest,
        [str(folder), "--dest", str(dest), "--valid-percent", "0.01"],
        capsys,
        "the valid split would be empty",
    )  # an error after the claim: the earlier set stays
    _unchanged(dest, before)


def test_an_empty_folder_is_filled_in_place_even_when_it_is_the_current_one(
    audio, tmp_path, monkeypatch, capsys
):
    folder, transcripts, texts = audio
    here = tmp_path / "here"
    here.mkdir()
    inode = here.stat().st_ino
    monkeypatch.chdir(here)
    manifest([str(folder), "--dest", ".", "--transcripts", str(transcripts), "--valid-percent", "0.25"])
    assert here.stat().st_ino == inode and (here / MARKER).is_file()
    _assert_aligned(here, texts)
    capsys.readouterr()
    before = _tree(here)
    _refused(
        manifest, [str(folder), "--dest", ".", "--transcripts", str(transcripts)], capsys, "current folder"
    )
    _unchanged(here, before)


# ----------------------------------------------------------------------------- w2v2-export-hf
@pytest.fixture()
def finetune_run(tmp_path) -> tuple[Path, dict[str, str]]:
    """A fine-tuning run folder as the trainer leaves it: run.json, metrics.jsonl, checkpoints/last."""
    run = tmp_path / "run"
    model = Wav2Vec2ForCTC(Wav2Vec2Config.tiny(num_layers=1, vocab_size=8))
    save_checkpoint(run / "checkpoints", "last", model, {"task": "finetune", "update": 3})
    CharTokenizer(list("|ABC")).save(run / "checkpoints" / "last" / "tokenizer.json")
    (run / "run.json").write_text(json.dumps({"seed": 1}))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "update": 3}) + "\n")
    return run, _tree(run)


def test_export_into_the_training_checkpoint_is_refused_even_with_overwrite(finetune_run, capsys):
    run, before = finetune_run
    last = run / "checkpoints" / "last"
    for extra in ([], ["--overwrite"]):
        _refused(
            export_hf,
            [str(run), str(last), *extra],
            capsys,
            str(last),
            f"is inside the training run folder {run}",
            "even with --overwrite",
        )
        _refused(export_hf, [str(run), str(run), *extra], capsys, "is a training run folder")
        _refused(export_hf, [str(run), str(run / "hf"), *extra], capsys, "inside the training run folder")
    _unchanged(run, before)
    load_checkpoint(
        last, Wav2Vec2ForCTC(Wav2Vec2Config.tiny(num_layers=1, vocab_size=8))
    )  # resumable as before


def test_export_into_a_foreign_folder_is_refused_and_overwrite_leaves_only_the_export(
    finetune_run, tmp_path, capsys
):
    run, _ = finetune_run
    out = tmp_path / "somewhere"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "bert"}')
    (out / "notes.txt").write_text("mine")
    before = _tree(out)
    _refused(
        export_hf,
        [str(run), str(out)],
        capsys,
        "is not empty (holds 2 files: config.json, notes.txt)",
        "not written by w2v2-export-hf",
        "--overwrite",
    )
    _unchanged(out, before)

    export_hf([str(run), str(out), "--overwrite"])
    assert not (out / "notes.txt").exists()
    assert json.loads((out / "config.json").read_text())["model_type"] == "wav2vec2"
    record = json.loads((out / MARKER).read_text())
    assert record["tool"] == "w2v2-export-hf" and set(record["files"]) == set(_tree(out)) - {MARKER}
    assert "vocab.json" in record["files"] and "preprocessor_config.json" in record["files"]
    assert not [p for p in tmp_path.iterdir() if ".w2v2-" in p.name]
    capsys.readouterr()
    export_hf([str(run), str(out)])  # its own folder: the export is made again, whole
    assert "replaced the earlier output of w2v2-export-hf" in capsys.readouterr().err


# ----------------------------------------------------------------------------- w2v2-extract
def _pretraining_model(folder: Path) -> Path:
    torch.manual_seed(0)
    save_model(
        Wav2Vec2ForPreTraining(
            Wav2Vec2Config.tiny(
                num_layers=2, contrastive={"num_codes_per_group": 8, "codevector_dim": 16, "final_dim": 16}
            )
        ),
        folder,
    )
    return folder


def test_a_second_extract_into_its_folder_is_refused_and_overwrite_gives_one_consistent_index(
    tmp_path, capsys
):
    model = _pretraining_model(tmp_path / "model")
    for name in ("a/one", "a/two", "b/three"):
        _wav(tmp_path / "in" / f"{name}.wav", seed=len(name))
    out = tmp_path / "feats"
    extract([str(model), str(tmp_path / "in" / "a"), "--out", str(out), "--units"])
    capsys.readouterr()
    before = _tree(out)
    _refused(
        extract,
        [str(model), str(tmp_path / "in" / "b"), "--out", str(out)],
        capsys,
        str(out),
        "already holds the output of an earlier w2v2-extract",
        "give every input to one call",
        "--overwrite",
    )
    _unchanged(out, before)

    extract([str(model), str(tmp_path / "in" / "b"), "--out", str(out), "--overwrite"])
    assert "replaced the earlier output of w2v2-extract" in capsys.readouterr().err
    index = [json.loads(ln) for ln in (out / "index.jsonl").read_text().splitlines()]
    assert [r["out"] for r in index] == [["three.safetensors"]]
    assert set(_tree(out)) == {
        MARKER,
        "index.jsonl",
        "three.safetensors",
    }  # every file indexed, none of the first call

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.jsonl").write_text("{}\n")
    before = _tree(foreign)
    _refused(
        extract,
        [str(model), str(tmp_path / "in"), "--out", str(foreign)],
        capsys,
        "is not empty",
        "index.jsonl",
        "not written by w2v2-extract",
    )
    _unchanged(foreign, before)


# ----------------------------------------------------------------------------- w2v2-evaluate --out
def test_evaluate_out_follows_the_rule(tmp_path, capsys):
    model = _ctc_folder(tmp_path / "model")
    data = make_toy_corpus(tmp_path / "data", train=1, valid=2)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    before = _tree(out)
    argv = [str(model), "--data", str(data), "--split", "valid", "--out", str(out)]
    _refused(evaluate, argv, capsys, "not written by w2v2-evaluate", "--overwrite")
    _unchanged(out, before)
    evaluate([*argv, "--overwrite"])
    assert set(_tree(out)) == {MARKER, "summary.json", "utterances.jsonl"}
    assert json.loads((out / "summary.json").read_text())["utterances"] == 2
    evaluate(argv)  # a rerun replaces its own output
    assert "replaced the earlier output of w2v2-evaluate" in capsys.readouterr().err


# ----------------------------------------------------------------------------- single-file reports
def test_report_and_probe_files_replace_only_their_own(finetune_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run, _ = finetune_run
    report([str(run)])
    report([str(run)])  # its own page, replaced
    assert (run / "report.html").read_text().count("w2v2-report") == 1
    before = _tree(run)
    for extra in ([], ["--overwrite"]):
        _refused(
            report,
            [str(run), "--out", str(run / "run.json"), *extra],
            capsys,
            f"belongs to the training run {run}",
            "never replaced",
        )
    (tmp_path / "page.html").write_text("<p>someone's page</p>")
    _refused(
        report,
        [str(run), "--out", str(tmp_path / "page.html")],
        capsys,
        "not written by w2v2-report",
        "--overwrite",
    )
    _unchanged(run, before)
    report([str(run), "--out", str(tmp_path / "page.html"), "--overwrite"])
    assert "w2v2-report" in (tmp_path / "page.html").read_text()

    model = _ctc_folder(tmp_path / "model")
    (tmp_path / "probes.json").write_text('{"mine": 1}')
    _refused(
        probe,
        [str(model), "--data", str(tmp_path), "--json", str(tmp_path / "probes.json")],
        capsys,
        "probes.json exists and was not written by w2v2-probe",
        "--overwrite",
    )  # refused before any probe
    assert (tmp_path / "probes.json").read_text() == '{"mine": 1}'


# ----------------------------------------------------------------------------- training run folders
def test_training_never_starts_in_another_tools_folder_and_still_resumes_its_own(
    audio, tmp_path, monkeypatch, capsys
):
    folder, transcripts, _ = audio
    corpus = tmp_path / "corpus"
    manifest(
        [str(folder), "--dest", str(corpus), "--transcripts", str(transcripts), "--valid-percent", "0.25"]
    )
    capsys.readouterr()
    before = _tree(corpus)
    monkeypatch.setattr(sys, "argv", ["w2v2-pretrain", f"hydra.run.dir={corpus}"])
    _refused(
        lambda argv: pretrain(),
        [],
        capsys,
        "was written by w2v2-manifest",
        "set hydra.run.dir to a new folder",
    )
    _unchanged(corpus, before)

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    check_training_run_dir(
        run, "hydra.run.dir"
    )  # an earlier run (here cut before run.json): resumed, not refused
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "recipe.json").write_text("{}")  # what scripts/demo.py records before training
    check_training_run_dir(tmp_path / "recipe", "run_dir")
    check_training_run_dir(tmp_path / "new", "hydra.run.dir")


# ----------------------------------------------------------------------------- the helper itself
def test_a_swap_cut_between_its_renames_is_undone_and_dead_temporaries_are_removed(tmp_path):
    out = tmp_path / "out"
    with claim_output_dir(out, "w2v2-x") as claimed:
        (claimed.staging / "a.txt").write_text("first")
    old = tmp_path / f".out.w2v2-old-{os.getpid()}-deadbeef"
    out.rename(old)  # killed after DIR -> .DIR.w2v2-old-*, before tmp -> DIR
    dead = tmp_path / ".out.w2v2-tmp-999999999-cafebabe"
    dead.mkdir()
    claimed = claim_output_dir(out, "w2v2-x")
    assert (out / "a.txt").read_text() == "first" and not old.exists() and not dead.exists()
    assert claimed.state == "own"
    claimed.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_error_or_interrupt_inside_the_claim_leaves_nothing(tmp_path):
    for error in (ValueError("bad"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with claim_output_dir(tmp_path / "out", "w2v2-x") as claimed:
                (claimed.staging / "half.txt").write_text("half")
                raise error
        assert list(tmp_path.iterdir()) == []


def test_the_folder_is_checked_again_when_the_set_is_put_in_place(tmp_path):
    claimed = claim_output_dir(tmp_path / "out", "w2v2-x")
    (claimed.staging / "a.txt").write_text("mine")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "theirs.txt").write_text("theirs")  # appeared while the tool ran
    with pytest.raises(OutputError, match="not written by w2v2-x"):
        claimed.commit()
    assert _tree(tmp_path / "out") == {"theirs.txt": hashlib.sha256(b"theirs").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_files_and_folders_of_the_wrong_kind(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file; w2v2-x needs a folder"):
        claim_output_dir(tmp_path / "f", "w2v2-x")
    with pytest.raises(OutputError, match="is a folder"):
        claim_output_file(tmp_path, "w2v2-x")
    with pytest.raises(ValueError, match="rerun"):
        claim_output_dir(tmp_path / "o", "w2v2-x", rerun="append")
    with claim_output_dir(tmp_path / "o", "w2v2-y") as claimed:
        (claimed.staging / "y.txt").write_text("y")
    with pytest.raises(OutputError, match="was written by w2v2-y, not w2v2-x"):
        claim_output_dir(tmp_path / "o", "w2v2-x")
    (tmp_path / "sweep" / "0" / ".hydra").mkdir(parents=True)  # a folder holding runs is never replaced
    with pytest.raises(OutputError, match="holds the training run folder"):
        claim_output_dir(tmp_path / "sweep", "w2v2-x", overwrite=True)
