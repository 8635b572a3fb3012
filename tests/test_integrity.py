"""Integrity covers everything that changes the output (issue 38).

* Ours: ``checksums.json`` (format_version 4) records the sha256 and size of every file of a
  model folder or checkpoint; a changed byte in any of them is refused naming the file; a folder
  of an earlier version (no record) loads, verified by its weights' hash only, and says so once.
* Foreign: a transformers folder whose ``config.json`` disagrees with its weights, tensors a
  fairseq checkpoint lacks or has no place for, and non-finite weights in any format are refused
  naming the tensors; the only tensors dropped without an error are those
  ``keymap.DROPPED_ON_PURPOSE`` lists, and dropping them is logged.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch

from wav2vec2_lite import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model, serialization
from wav2vec2_lite.asr.transcribe import TOKENIZER_FILES
from wav2vec2_lite.interop.keymap import DROPPED_ON_PURPOSE
from wav2vec2_lite.serialization import (
    CHECKSUMS_NAME,
    COVERED_IF_PRESENT,
    FORMAT_VERSION,
    CheckpointError,
    file_sha256,
    load_model,
    read_config,
    read_weights,
    save_model,
)
from wav2vec2_lite.train.checkpoint import STATE_FILE, load_checkpoint, resolve_checkpoint, save_checkpoint

SYMBOLS = "E T A O N"


def _ctc(seed: int = 0) -> Wav2Vec2ForCTC:
    torch.manual_seed(seed)
    return Wav2Vec2ForCTC(Wav2Vec2Config.tiny(num_layers=2, hidden_size=64, ffn_dim=128, vocab_size=9))


def _save_with_dictionary(model, directory: Path) -> None:
    """What the fine-tuning task's checkpoints hold: the weights and config, and the vocabulary."""
    save_model(model, directory)
    (directory / "dict.ltr.txt").write_text("".join(f"{s} {9 - i}\n" for i, s in enumerate(SYMBOLS.split())))


def _checkpoint(root: Path, model, update: int = 3) -> Path:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 4000)).logits.sum().backward()
    opt.step()
    state = {"update": update, "optimizer": opt.state_dict()}
    return save_checkpoint(root, "last", model, state, save_weights=_save_with_dictionary)


def _flip_byte(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0x01
    path.write_bytes(bytes(data))


def save_and_load(model, directory: Path):
    return load_model(save_model(model, directory)).eval()


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- our folders
def test_the_record_lists_every_file_of_a_checkpoint_with_its_hash_and_size(tmp_path):
    folder = _checkpoint(tmp_path, _ctc())
    record = json.loads((folder / CHECKSUMS_NAME).read_text())
    on_disk = sorted(p.name for p in folder.iterdir() if p.name != CHECKSUMS_NAME)
    assert on_disk == ["config.json", "dict.ltr.txt", "model.safetensors", STATE_FILE]
    assert sorted(record["files"]) == on_disk and record["algorithm"] == "sha256"
    for name, entry in record["files"].items():
        assert entry == {"sha256": file_sha256(folder / name), "bytes": (folder / name).stat().st_size}
    assert json.loads((folder / "config.json").read_text())["format_version"] == FORMAT_VERSION == 4
    # the state file's own record of the weights agrees with the folder's
    state = load_checkpoint(folder)
    assert state["weights_sha256"] == record["files"]["model.safetensors"]["sha256"]


@pytest.mark.parametrize("name", ["config.json", "dict.ltr.txt", STATE_FILE, "model.safetensors"])
def test_one_flipped_byte_in_any_file_of_a_checkpoint_is_refused_naming_it(tmp_path, name):
    """Same size, one bit: a changed AdamW moment, vocabulary letter, config digit or weight."""
    model = _ctc()
    folder = _checkpoint(tmp_path, model)
    target = folder / name
    if name == "config.json":  # a digit of a value that changes the output
        text = target.read_text()
        assert '"layer_norm_eps": 1e-05' in text
        target.write_text(text.replace('"layer_norm_eps": 1e-05', '"layer_norm_eps": 1e-03'))
    elif name == "dict.ltr.txt":
        target.write_text(target.read_text().replace("E ", "F ", 1))
    else:
        _flip_byte(target, at=target.stat().st_size - 200)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(folder, _ctc(1))  # what resuming reads
    msg = _one_line(e)
    assert msg.startswith(f"{target}: corrupted: its sha256 ") and f"recorded in {CHECKSUMS_NAME}" in msg
    if name == STATE_FILE:  # inference does not read the training state: the model still loads
        assert torch.equal(load_model(folder).lm_head.weight, model.lm_head.weight)
    else:  # transcribe, evaluate, extract, probe, fine-tune all load through load_model
        for load in (load_model, read_weights):
            with pytest.raises(CheckpointError, match=re.escape(f"{target}: corrupted")):
                load(folder)


def test_transcribe_refuses_a_run_whose_vocabulary_changed_after_saving(tmp_path):
    """The dictionary maps CTC outputs to letters: one letter changed would change every transcript."""
    from wav2vec2_lite.asr.transcribe import Transcriber

    folder = _checkpoint(tmp_path / "run" / "checkpoints", _ctc())
    wave = torch.randn(8000, generator=torch.Generator().manual_seed(0))
    before = Transcriber.from_path(tmp_path / "run").transcribe_wave(wave)
    assert Transcriber.from_path(tmp_path / "run").tokenizer.vocab[4:] == SYMBOLS.split()
    (folder / "dict.ltr.txt").write_text((folder / "dict.ltr.txt").read_text().replace("T ", "X ", 1))
    with pytest.raises(CheckpointError) as e:
        Transcriber.from_path(tmp_path / "run")
    assert _one_line(e).startswith(f"{folder / 'dict.ltr.txt'}: corrupted: its sha256")
    assert set(before.text) <= set("ETAON |")


def test_a_changed_config_value_is_refused_even_where_only_the_config_is_read(tmp_path):
    """``num_heads`` 4 -> 2 keeps every shape: without the record it would load and give other outputs."""
    model = _ctc()
    folder = save_model(model, tmp_path / "m")
    info = json.loads((folder / "config.json").read_text())
    info["config"]["num_heads"] = 2
    (folder / "config.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    for read in (load_model, read_config):
        with pytest.raises(CheckpointError, match=re.escape(f"{folder / 'config.json'}: corrupted: ")):
            read(folder)
    # what the record prevents: the same folder as an older format (no record) loads, and differs
    info["format_version"] = 3
    (folder / "config.json").write_text(json.dumps(info))
    (folder / CHECKSUMS_NAME).unlink()
    changed = load_model(folder).eval()
    wave = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model.eval()(wave).logits
        assert torch.equal(save_and_load(model, tmp_path / "same")(wave).logits, reference)
        assert not torch.equal(changed(wave).logits, reference)


def test_a_truncated_or_missing_file_and_a_damaged_record_are_named(tmp_path):
    folder = _checkpoint(tmp_path, _ctc())
    state = folder / STATE_FILE
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(folder)
    assert _one_line(e).startswith(f"{state}: corrupted: {state.stat().st_size} bytes where {CHECKSUMS_NAME}")
    state.unlink()  # resolve_checkpoint needs both files: an incomplete checkpoint
    with pytest.raises(CheckpointError, match=re.escape(f"{state}: training-state file not found")):
        load_checkpoint(folder)
    (folder / "dict.ltr.txt").unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"{folder / 'dict.ltr.txt'}: missing; ")):
        load_model(folder)
    (folder / CHECKSUMS_NAME).write_text('{"files": "nope"}')
    with pytest.raises(CheckpointError, match=re.escape(f"{folder / CHECKSUMS_NAME}: not a valid checksum")):
        load_model(folder)


def test_a_format_4_folder_without_its_record_is_refused(tmp_path):
    folder = save_model(_ctc(), tmp_path / "m")
    (folder / CHECKSUMS_NAME).unlink()
    with pytest.raises(CheckpointError) as e:
        load_model(folder)
    assert _one_line(e).startswith(f"{folder / CHECKSUMS_NAME}: missing: config.json says format_version 4")


def _as_format_3(folder: Path) -> None:
    """A folder as the library wrote it before checksums.json (format_version 3)."""
    info = json.loads((folder / "config.json").read_text())
    info["format_version"] = 3
    (folder / "config.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    (folder / CHECKSUMS_NAME).unlink()


def test_an_older_folder_loads_verified_by_its_weights_only_and_says_so_once(tmp_path, caplog):
    model = _ctc()
    folder = save_model(model, tmp_path / "old")
    _as_format_3(folder)
    with caplog.at_level(logging.INFO, logger="wav2vec2_lite.serialization"):
        for _ in range(3):
            assert torch.equal(load_model(folder).lm_head.weight, model.lm_head.weight)
    notes = [r for r in caplog.records if CHECKSUMS_NAME in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.WARNING
    assert (
        "verified by its weights' sha256 only" in notes[0].getMessage()
        and str(folder) in notes[0].getMessage()
    )
    # what it still checks: its weights, against the sha256 in its config.json
    _flip_byte(folder / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: corrupted: its sha256 .* recorded in config\.json"
    ):
        load_model(folder)


def test_an_older_checkpoint_resumes_verified_by_the_weights_hash_its_state_records(tmp_path, caplog):
    model = _ctc()
    folder = _checkpoint(tmp_path, model, update=5)
    _as_format_3(folder)
    check = _ctc(1)
    with caplog.at_level(logging.WARNING, logger="wav2vec2_lite.serialization"):
        assert load_checkpoint(resolve_checkpoint(tmp_path, "last"), check)["update"] == 5
    assert torch.equal(check.lm_head.weight, model.lm_head.weight)
    assert sum("verified by its weights' sha256 only" in r.getMessage() for r in caplog.records) == 1
    _flip_byte(folder / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=re.escape(f"{folder / 'model.safetensors'}: content does not match")
    ):
        load_checkpoint(folder, check)


def test_a_tokenizer_added_after_saving_is_logged_not_refused(tmp_path, caplog):
    """The usual way to make a saved model transcribe: save it, then put a tokenizer beside it."""
    folder = save_model(_ctc(), tmp_path / "m")
    (folder / "tokenizer.json").write_text("{}")
    with caplog.at_level(logging.INFO, logger="wav2vec2_lite.serialization"):
        load_model(folder)
    assert any("tokenizer.json" in r.getMessage() and "unverified" in r.getMessage() for r in caplog.records)
    # saved again, it is covered
    save_model(_ctc(), folder)
    assert "tokenizer.json" in json.loads((folder / CHECKSUMS_NAME).read_text())["files"]


def test_the_record_covers_every_tokenizer_file_transcribe_reads():
    assert set(TOKENIZER_FILES) <= set(COVERED_IF_PRESENT)


def test_a_failed_write_of_the_record_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """Injected at the write (CI runs as root: permissions would not stop it)."""
    old = _ctc(0)
    _checkpoint(tmp_path, old, update=1)
    real = serialization.atomic_write_text

    def full_disk(path, text):
        if Path(path).name == CHECKSUMS_NAME:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, text)

    monkeypatch.setattr(serialization, "atomic_write_text", full_disk)
    with pytest.raises(CheckpointError) as e:
        _checkpoint(tmp_path, _ctc(1), update=2)
    monkeypatch.undo()
    assert "ENOSPC" in _one_line(e) and "intact" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    check = _ctc(2)
    assert load_checkpoint(resolve_checkpoint(tmp_path, "last"), check)["update"] == 1
    assert torch.equal(check.lm_head.weight, old.lm_head.weight)


def test_the_shipped_checkpoints_carry_a_record_covering_their_three_files():
    from wav2vec2_lite import pretrained

    for name in pretrained.available():
        folder = pretrained.folder(name)
        files = json.loads((folder / CHECKSUMS_NAME).read_text())["files"]
        assert sorted(files) == ["config.json", "model.safetensors", "provenance.json"]
        assert all(files[n]["sha256"] == file_sha256(folder / n) for n in files)


# ----------------------------------------------------------------------------- transformers folders

HF_TINY = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32, 32),
    conv_kernel=(10, 3),
    conv_stride=(5, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    num_codevectors_per_group=8,
    codevector_dim=16,
    proj_codevector_dim=16,
    vocab_size=10,
)


@pytest.fixture(scope="module")
def hf_pretraining(tmp_path_factory) -> Path:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf") / "pretraining"
    transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**HF_TINY)).save_pretrained(folder)
    return folder


def _copy_with_config(src: Path, dst: Path, **changes) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    cfg = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, **changes}))
    return dst


@pytest.mark.parametrize(
    "changes,expect",
    [
        (
            dict(num_hidden_layers=2),
            r"\(num_hidden_layers=2; the weights hold 4 transformer layers\): "
            r"8 weight tensor\(s\)|have no place in it: \['wav2vec2\.encoder\.layers\.2\.",
        ),
        (
            dict(num_hidden_layers=6),
            r"\(num_hidden_layers=6; the weights hold 4 transformer layers\): "
            r"the model it describes has \d+ tensor\(s\) the weights lack: \['wav2vec2\.encoder\.layers\.4\.",
        ),
        (
            dict(feat_extract_norm="layer"),
            r"\(feat_extract_norm='layer' does not match the weights' conv norms\)",
        ),
        (
            dict(hidden_size=48),
            r"config\.json disagrees with the weights: \S+ is \(\d+(, \d+)*\) in the weights",
        ),
    ],
)
def test_a_transformers_folder_whose_config_disagrees_with_its_weights_is_refused(
    hf_pretraining, tmp_path, changes, expect
):
    from wav2vec2_lite.interop.hf import from_hf
    from wav2vec2_lite.interop.sources import load_any

    folder = _copy_with_config(hf_pretraining, tmp_path / "changed", **changes)
    for load in (from_hf, load_any):
        with pytest.raises(CheckpointError) as e:
            load(folder)
        msg = _one_line(e)
        assert msg.startswith(f"{folder / 'model.safetensors'}: config.json disagrees with the weights"), msg
        assert re.search(expect, msg), msg


def test_non_finite_weights_are_refused_in_a_transformers_folder(hf_pretraining, tmp_path):
    from safetensors.torch import load_file, save_file

    from wav2vec2_lite.interop.hf import from_hf

    folder = _copy_with_config(hf_pretraining, tmp_path / "nan")
    weights = load_file(folder / "model.safetensors")
    weights["wav2vec2.encoder.layers.1.final_layer_norm.weight"][3] = float("inf")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as e:
        from_hf(folder)
    assert _one_line(e).startswith(
        f"{folder / 'model.safetensors'}: non-finite weights (NaN/Inf) in "
        "wav2vec2.encoder.layers.1.final_layer_norm.weight"
    )


def test_a_pretraining_folder_read_as_a_backbone_drops_the_listed_tensors_and_logs_them(
    hf_pretraining, tmp_path, caplog
):
    """The one kind of tensor dropped without an error: a pretraining checkpoint's quantizer and
    projections, where the model built has no objective; dropping them is logged by name."""
    from wav2vec2_lite.interop.hf import from_hf

    folder = _copy_with_config(hf_pretraining, tmp_path / "as_model", architectures=["Wav2Vec2Model"])
    with caplog.at_level(logging.INFO, logger="wav2vec2_lite.interop.keymap"):
        ours = from_hf(folder)
    assert type(ours) is Wav2Vec2Model
    (note,) = [r for r in caplog.records if "on purpose" in r.getMessage()]
    for key in (
        "quantizer.codevectors",
        "quantizer.weight_proj.weight",
        "project_q.weight",
        "project_hid.bias",
    ):
        assert key in note.getMessage()
    assert [d.source for d in DROPPED_ON_PURPOSE] == ["transformers", "transformers", "fairseq"]
    # the same weights declared a CTC model: its head would be random, which is refused
    folder = _copy_with_config(hf_pretraining, tmp_path / "as_ctc", architectures=["Wav2Vec2ForCTC"])
    with pytest.raises(CheckpointError, match=r"the weights lack: \['lm_head\.bias', 'lm_head\.weight'\]"):
        from_hf(folder)


# ----------------------------------------------------------------------------- fairseq checkpoints
def test_fairseq_missing_unexpected_and_non_finite_tensors_are_named(tmp_path, caplog):
    pytest.importorskip("omegaconf")
    from test_fairseq import _save_ctc, _save_pretraining

    from wav2vec2_lite.interop.fairseq import load_fairseq
    from wav2vec2_lite.interop.safe_pickle import (
        load_checkpoint as read_fairseq,
    )  # no code from the file runs

    _, path = _save_pretraining(tmp_path, "group_postln", "dict")
    ckpt = read_fairseq(path)
    state = ckpt["model"]
    # a config of 1 layer for weights of 2: the second layer's tensors have no place
    ckpt["cfg"]["model"]["encoder_layers"] = 1
    torch.save(ckpt, path)
    with pytest.raises(KeyError) as e:
        load_fairseq(path)
    msg = e.value.args[0]
    assert str(path) in msg and "have no place in the Wav2Vec2ForPreTraining" in msg
    assert "encoder.layers.1.fc1.weight" in msg and "\n" not in msg
    # missing tensors
    ckpt["cfg"]["model"]["encoder_layers"] = 2
    del state["encoder.layers.0.fc2.bias"]
    torch.save(ckpt, path)
    with pytest.raises(KeyError, match=r"lacks 1 tensor\(s\): \['encoder\.layers\.0\.fc2\.bias'\]"):
        load_fairseq(path)
    # non-finite, in any tensor
    for sub in ("nan", "ctc", "extra"):
        (tmp_path / sub).mkdir()
    _, path = _save_pretraining(tmp_path / "nan", "group_postln", "dict")
    ckpt = read_fairseq(path)
    ckpt["model"]["encoder.layers.1.self_attn.k_proj.weight"][0, 0] = float("nan")
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as e:
        load_fairseq(path)
    assert _one_line(e).startswith(
        f"{path}: non-finite weights (NaN/Inf) in encoder.layers.1.self_attn.k_proj.weight"
    )
    # a fine-tuned checkpoint that still holds its pretraining quantizer: dropped on purpose, logged
    _, path = _save_ctc(tmp_path / "ctc", "group_postln", "dict")
    ckpt = read_fairseq(path)
    ckpt["model"]["w2v_encoder.w2v_model.quantizer.vars"] = torch.randn(1, 32, 16)
    ckpt["model"]["w2v_encoder.w2v_model.final_proj.weight"] = torch.randn(16, 64)
    torch.save(ckpt, path)
    with caplog.at_level(logging.INFO, logger="wav2vec2_lite.interop.keymap"):
        model = load_fairseq(path)
    assert isinstance(model, Wav2Vec2ForCTC) and not isinstance(model, Wav2Vec2ForPreTraining)
    (note,) = [r for r in caplog.records if "on purpose" in r.getMessage()]
    assert "w2v_encoder.w2v_model.quantizer.vars" in note.getMessage()
    assert "w2v_encoder.w2v_model.final_proj.weight" in note.getMessage()
    # ... but not into a pretraining model, whose objective they would have to fill
    _, path = _save_pretraining(tmp_path / "extra", "group_postln", "dict")
    ckpt = read_fairseq(path)
    ckpt["model"]["target_glu.0.weight"] = torch.randn(32, 16)
    torch.save(ckpt, path)
    with pytest.raises(KeyError, match=r"\['target_glu\.0\.weight'\]"):
        load_fairseq(path)


def test_a_mask_embedding_read_with_masking_off_is_dropped_and_logged(hf_pretraining, tmp_path, caplog):
    """transformers builds no ``masked_spec_embed`` when both mask probabilities are 0 (an inference
    config); only training uses it, so dropping it is listed, and logged, not refused."""
    from wav2vec2_lite.interop.hf import from_hf

    folder = _copy_with_config(hf_pretraining, tmp_path / "nomask", mask_time_prob=0.0, mask_feature_prob=0.0)
    with caplog.at_level(logging.INFO, logger="wav2vec2_lite.interop.keymap"):
        ours = from_hf(folder)
    assert type(ours) is Wav2Vec2ForPreTraining and ours.config.mask_time_prob == 0.0
    (note,) = [r for r in caplog.records if "on purpose" in r.getMessage()]
    assert "wav2vec2.masked_spec_embed" in note.getMessage() and "quantizer" not in note.getMessage()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short"], ids=["empty", "truncated"])
def test_a_damaged_pt_file_is_one_error_naming_it(tmp_path, content):
    from wav2vec2_lite.interop.safe_pickle import DamagedCheckpointError, load_checkpoint

    path = tmp_path / "model.pt"
    path.write_bytes(content)
    for trust in (False, True):
        with pytest.raises(DamagedCheckpointError, match=f"{path}: cannot be read as a model: the file is "):
            load_checkpoint(path, trust=trust)


def test_safetensors_full_disk_error_during_a_checkpoint_save_is_a_checkpoint_error(tmp_path):
    """safetensors raises its own error, not OSError, when the disk fills; the save names the folder,
    the errno and that nothing was replaced."""
    from safetensors import SafetensorError

    from wav2vec2_lite.train import checkpoint

    def full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    model = Wav2Vec2ForCTC(Wav2Vec2Config.tiny(num_layers=1, vocab_size=5))
    expected = r"last: could not write the checkpoint \(ENOSPC: .*nothing was replaced.*free some disk space"
    with pytest.raises(checkpoint.CheckpointError, match=expected):
        checkpoint.save_checkpoint(tmp_path, "last", model, {"update": 1}, save_weights=full)
    assert not (tmp_path / "last").exists() and not list(tmp_path.glob(".*"))
