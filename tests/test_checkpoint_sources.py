"""Any checkpoint in: our folders, Hugging Face ``save_pretrained`` folders and fairseq ``.pt`` files
are detected from their files and read with the same weights and outputs (float32, 1e-4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wav2vec2_lite import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model
from wav2vec2_lite.asr.transcribe import Transcriber
from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.data.audio import normalize as normalize_wave
from wav2vec2_lite.interop.sources import detect, load_any, load_backbone
from wav2vec2_lite.serialization import CheckpointError, load_model, save_model
from wav2vec2_lite.train.toy_data import make_toy_corpus

transformers = pytest.importorskip("transformers")
pytest.importorskip("omegaconf")

from test_fairseq import HF_LAYOUTS, HF_SMALL, _hf, _save_ctc, _save_pretraining  # noqa: E402

ATOL = 1e-4
REPO = Path(__file__).resolve().parents[1]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """save_pretrained folders of the three transformers classes (tiny, post-LN and pre-LN)."""
    root = tmp_path_factory.mktemp("hf")
    pre = _hf("pretraining", "group_postln")
    ctc = _hf("ctc", "layer_preln", seed=1)
    torch.manual_seed(2)
    backbone = transformers.Wav2Vec2Model(
        transformers.Wav2Vec2Config(**HF_SMALL, **HF_LAYOUTS["group_postln"])
    )
    folders = {}
    for name, model in (("pretraining", pre), ("ctc", ctc), ("model", backbone)):
        model.eval().save_pretrained(root / name)
        folders[name] = (root / name, model)
    return folders


def _wave(seed: int = 0, n: int = 4000) -> torch.Tensor:
    return torch.randn(2, n, generator=torch.Generator().manual_seed(seed))


def test_detect_names_each_kind_and_refuses_the_rest(tmp_path, hf_folders):
    ours = save_model(
        Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(num_layers=1)), tmp_path / "run" / "checkpoints" / "best"
    )
    assert detect(tmp_path / "run").kind == "wav2vec2_lite" and detect(tmp_path / "run").path == ours
    assert detect(ours / "model.safetensors").path == ours
    for name, (folder, _) in hf_folders.items():
        assert (detect(folder).kind, detect(folder).path) == ("transformers", folder), name
    _, fairseq_pt = _save_pretraining(tmp_path, "group_postln", "dict")
    assert (detect(fairseq_pt).kind, detect(fairseq_pt).path) == ("fairseq", fairseq_pt)
    (tmp_path / "fs_run").mkdir()
    fairseq_pt.rename(tmp_path / "fs_run" / "checkpoint_best.pt")
    assert detect(tmp_path / "fs_run").path == tmp_path / "fs_run" / "checkpoint_best.pt"

    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"empty: no checkpoint found; expected .*Hugging Face.*fairseq"
    ):
        detect(tmp_path / "empty")
    hubert = tmp_path / "hubert"
    hubert.mkdir()
    (hubert / "config.json").write_text(json.dumps({"model_type": "hubert"}))
    with pytest.raises(CheckpointError, match=r"hubert/config.json: neither .* \(model_type 'hubert'\)"):
        detect(hubert)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(CheckpointError, match="without weights"):
        detect(no_weights)


def test_hf_folders_load_with_their_outputs(hf_folders):
    wave = _wave()
    for name, (folder, hf) in hf_folders.items():
        loaded = load_any(folder)
        assert loaded.source.kind == "transformers" and not loaded.model.training
        hf_backbone = getattr(hf, "wav2vec2", hf)
        with torch.no_grad():
            expected = hf_backbone(wave).last_hidden_state
            got = load_backbone(folder).model(wave).last_hidden_state
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0, msg=name)
    ctc_folder, hf_ctc = hf_folders["ctc"]
    with torch.no_grad():
        torch.testing.assert_close(
            Wav2Vec2ForCTC.from_pretrained(ctc_folder)(wave).logits, hf_ctc(wave).logits, atol=ATOL, rtol=0
        )


def test_normalisation_is_read_from_either_feature_extractor_file(tmp_path, hf_folders):
    folder, _ = hf_folders["model"]
    assert load_any(folder).normalize is None
    for name, content in (
        ("preprocessor_config.json", {"do_normalize": True}),
        ("processor_config.json", {"feature_extractor": {"do_normalize": True}}),
    ):
        copy = tmp_path / name
        copy.mkdir()
        for f in folder.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        (copy / name).write_text(json.dumps(content))
        assert load_any(copy).normalize is True, name


def test_fairseq_files_load_as_pretraining_or_ctc_with_the_recorded_normalisation(tmp_path):
    hf, pt = _save_pretraining(tmp_path, "layer_preln", "dictconfig")
    loaded = load_any(pt)
    assert isinstance(loaded.model, Wav2Vec2ForPreTraining) and loaded.normalize is True
    wave = _wave(1)
    with torch.no_grad():
        torch.testing.assert_close(
            load_backbone(pt).model(wave).last_hidden_state,
            hf.wav2vec2(wave).last_hidden_state,
            atol=ATOL,
            rtol=0,
        )
    hf_ctc, ctc_pt = _save_ctc(tmp_path, "group_postln", "namespace")
    ctc = load_any(ctc_pt)
    assert isinstance(ctc.model, Wav2Vec2ForCTC) and ctc.has_ctc_head and ctc.normalize is False
    assert isinstance(load_backbone(ctc_pt).model, Wav2Vec2Model)


def test_from_pretrained_and_save_pretrained(tmp_path, hf_folders):
    pre_folder, hf_pre = hf_folders["pretraining"]
    with pytest.raises(ValueError, match="no CTC head to reuse.*vocab_size"):
        Wav2Vec2ForCTC.from_pretrained(pre_folder)
    ctc = Wav2Vec2ForCTC.from_pretrained(pre_folder, vocab_size=7, mask_time_prob=0.3)
    assert ctc.config.vocab_size == 7 and ctc.config.mask_time_prob == 0.3 and not ctc.training
    assert _same_weights(ctc.wav2vec2, Wav2Vec2Model.from_pretrained(pre_folder))
    with pytest.raises(TypeError, match="has no pretraining objective"):
        Wav2Vec2ForPreTraining.from_pretrained(hf_folders["ctc"][0])
    ctc_folder, _ = hf_folders["ctc"]
    regrown = Wav2Vec2ForCTC.from_pretrained(ctc_folder, vocab_size=5)  # another vocabulary: a new head
    assert regrown.lm_head.out_features == 5
    assert _same_weights(regrown.wav2vec2, Wav2Vec2Model.from_pretrained(ctc_folder))

    pre = Wav2Vec2ForPreTraining.from_pretrained(pre_folder)
    saved = pre.save_pretrained(tmp_path / "ours")
    assert len(json.loads((saved / "config.json").read_text())["weights_sha256"]) == 64
    again = Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "ours")
    assert _same_weights(again, pre) and _same_weights(again, load_model(saved))
    assert type(Wav2Vec2ForCTC.from_pretrained("tiny-espeak-10h", vocab_size=9)) is Wav2Vec2ForCTC


def test_transcriber_reads_a_fairseq_ctc_file_with_its_dictionary(tmp_path):
    _, pt = _save_ctc(tmp_path, "layer_preln", "dict")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        Transcriber.from_path(pt)
    symbols = "|ETAONIHSRDLUMWC"  # 16 + the 4 specials = the checkpoint's 20 outputs
    (tmp_path / "dict.ltr.txt").write_text("".join(f"{s} {100 - i}\n" for i, s in enumerate(symbols)))
    tr = Transcriber.from_path(pt)
    assert tr.normalize is True and len(tr.tokenizer) == 20
    wave = _wave(2, 8000)[0]
    with torch.no_grad():
        expected = load_any(pt).model(normalize_wave(wave)[None]).logits[0]
    torch.testing.assert_close(tr.logits(wave), expected, atol=ATOL, rtol=0)
    assert isinstance(tr.transcribe_wave(wave).text, str)
    elsewhere = tmp_path / "elsewhere.txt"
    (tmp_path / "dict.ltr.txt").rename(elsewhere)
    assert len(Transcriber.from_path(pt, dictionary=elsewhere).tokenizer) == 20


@pytest.mark.slow
def test_finetune_cli_takes_hf_and_fairseq_checkpoints_and_replaces_their_heads(tmp_path, hf_folders):
    corpus = make_toy_corpus(tmp_path / "toy", train=6, valid=2, seed=1)
    n_symbols = 4 + len((corpus / "dict.ltr.txt").read_text().splitlines())
    _, fairseq_ctc = _save_ctc(tmp_path, "group_postln", "dict")
    for name, source in (("hf", hf_folders["ctc"][0]), ("fairseq", fairseq_ctc)):
        run = tmp_path / f"ft_{name}"
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from wav2vec2_lite.cli import finetune; finetune()",
                "--config-name",
                "finetune_tiny",
                f"data.manifest_dir={corpus}",
                f"finetune.pretrained={source}",
                "trainer.max_updates=2",
                "trainer.progress=false",
                "trainer.num_threads=1",
                "data.max_tokens=40000",
                f"hydra.run.dir={run}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        log = proc.stdout + proc.stderr + (run / "train.log").read_text()
        assert (
            "dropped its CTC head (20 outputs)" in log and f"new CTC head over the {n_symbols} symbols" in log
        )
        tuned = load_model(run / "checkpoints" / "last")
        assert tuned.lm_head.out_features == n_symbols
        start = load_backbone(source).model  # the frozen feature encoder is the source's, bit for bit
        assert _same_weights(tuned.wav2vec2.feature_encoder, start.feature_encoder)
