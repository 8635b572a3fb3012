"""Frozen-feature probes (wav2vec2_lite.probes): the linear CTC probe, per-layer runs, baselines, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wav2vec2_lite import Wav2Vec2Config
from wav2vec2_lite.data.tokenizer import CharTokenizer
from wav2vec2_lite.models import Wav2Vec2ForPreTraining, Wav2Vec2Model
from wav2vec2_lite.modules.log_mel import LogMel
from wav2vec2_lite.probes import (
    FrameFeatures,
    ProbeError,
    ProbeProtocol,
    layer_names,
    log_mel_features,
    run_probes,
    train_ctc_probe,
)
from wav2vec2_lite.serialization import save_model
from wav2vec2_lite.train.toy_data import make_toy_corpus

REPO = Path(__file__).resolve().parent.parent
MICRO = dict(
    num_layers=2,
    hidden_size=32,
    ffn_dim=64,
    num_heads=2,
    conv_dim=(16,) * 7,
    pos_conv_kernel=16,
    pos_conv_groups=16,
    mask_time_length=3,
    layerdrop=0.0,
    contrastive=dict(codevector_dim=16, final_dim=16, num_codes_per_group=8, num_negatives=5),
)
FAST = ProbeProtocol(steps=15, lr=1e-2, batch_size=4, random_init_seeds=2, log_mel=True)


# ----------------------------------------------------------------------------- the probe itself
LETTERS = "ABCDEFGH"


def toy_frames(tok: CharTokenizer, codes: torch.Tensor, n: int, g: torch.Generator, noise: float = 0.1):
    """Utterances whose frames linearly encode the letters: each label is 1-3 frames of its fixed
    random vector (+ noise), blanks (the vector of id 0) 0-2 frames after it, always >= 1 between
    two equal labels (a CTC-feasible path)."""
    feats, labels, texts = [], [], []
    for _ in range(n):
        words = [
            "".join(
                LETTERS[int(i)]
                for i in torch.randint(
                    0, len(LETTERS), (int(torch.randint(2, 5, (1,), generator=g)),), generator=g
                )
            )
            for _ in range(int(torch.randint(1, 4, (1,), generator=g)))
        ]
        text = " ".join(words)
        ids = tok.encode_text(text)
        rows: list[torch.Tensor] = []
        for k, i in enumerate(ids):
            rows += [codes[i]] * int(torch.randint(1, 4, (1,), generator=g))
            blanks = int(torch.randint(0, 3, (1,), generator=g))
            if k + 1 < len(ids) and ids[k + 1] == i:
                blanks = max(blanks, 1)
            rows += [codes[0]] * blanks
        x = torch.stack(rows)
        feats.append(x + noise * torch.randn(x.shape, generator=g))
        labels.append(torch.tensor(ids))
        texts.append(text)
    return FrameFeatures.from_list(feats), labels, texts


def test_linear_probe_reads_letters_that_frames_encode_linearly():
    tok = CharTokenizer(list(LETTERS) + ["|"])
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(len(tok), 16, generator=g)  # one fixed vector per token (blank = id 0)
    tr, tr_lab, _ = toy_frames(tok, codes, 100, g)
    va, va_lab, va_txt = toy_frames(tok, codes, 30, g)
    protocol = ProbeProtocol(steps=300, lr=1e-2, batch_size=8)
    r = train_ctc_probe(tr, tr_lab, va, va_lab, va_txt, tok.vocab, protocol)
    assert r.valid_error <= 0.05, (r.valid_error, r.hypotheses[:3], va_txt[:3])
    assert r.train_loss < 0.5 and r.valid_loss < 0.5
    # same protocol and seed: the same numbers
    again = train_ctc_probe(tr, tr_lab, va, va_lab, va_txt, tok.vocab, protocol)
    assert again.valid_error == r.valid_error and again.valid_loss == r.valid_loss
    # control: frames that carry no letter information leave the probe far from that
    noise = tr.map_frames(lambda x: torch.randn(x.shape, generator=g))
    noise_va = va.map_frames(lambda x: torch.randn(x.shape, generator=g))
    control = train_ctc_probe(noise, tr_lab, noise_va, va_lab, va_txt, tok.vocab, protocol)
    assert control.valid_error >= 0.5, control.valid_error


def test_standardisation_uses_training_statistics_only():
    """A feature scaled by 1000 and shifted by 50 probes exactly as the unscaled one (standardised)."""
    tok = CharTokenizer(list(LETTERS) + ["|"])
    g = torch.Generator().manual_seed(1)
    codes = torch.randn(len(tok), 8, generator=g)
    tr, tr_lab, _ = toy_frames(tok, codes, 40, g)
    va, va_lab, va_txt = toy_frames(tok, codes, 10, g)
    protocol = ProbeProtocol(steps=60, batch_size=8)
    a = train_ctc_probe(tr, tr_lab, va, va_lab, va_txt, tok.vocab, protocol)
    b = train_ctc_probe(
        tr.map_frames(lambda x: 1000 * x + 50),
        tr_lab,
        va.map_frames(lambda x: 1000 * x + 50),
        va_lab,
        va_txt,
        tok.vocab,
        protocol,
    )
    assert b.valid_error == pytest.approx(a.valid_error, abs=0.02)
    assert b.valid_loss == pytest.approx(a.valid_loss, rel=1e-2)


def test_protocol_validate_names_the_field():
    assert ProbeProtocol().validate() == ProbeProtocol()
    for bad, field in (
        (dict(steps=0), "steps"),
        (dict(lr=-1.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(batch_size=0), "batch_size"),
        (dict(random_init_seeds=-1), "random_init_seeds"),
        (dict(max_train_utterances=0), "max_train_utterances"),
        (dict(steps=2.5), "steps"),
        (dict(probe_seeds=0), "probe_seeds"),
    ):
        with pytest.raises(ProbeError, match=field):
            ProbeProtocol(**bad).validate()
    with pytest.raises(ProbeError, match="unknown"):
        ProbeProtocol.from_dict({"stpes": 3})
    assert ProbeProtocol.from_dict(ProbeProtocol(steps=7).to_dict()).steps == 7


# ----------------------------------------------------------------------------- features
def test_log_mel_features_have_exactly_the_encoders_frame_count():
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config.tiny(**MICRO)).eval()
    cfg = model.config
    lm = LogMel()
    for samples in (400, 401, 719, 720, 721, 4000, 4321, 8159, 16000):
        wave = torch.randn(samples)
        with torch.no_grad():
            encoder_frames = model(wave[None]).last_hidden_state.shape[1]
        assert int(model.feature_output_lengths(torch.tensor([samples]))[0]) == encoder_frames
        feats = log_mel_features([wave], [encoder_frames], cfg.frame_stride, lm)
        assert feats.frames.shape == (encoder_frames, 2 * lm.n_mels), samples
        # frame t = mel frames 2t and 2t + 1, the first starting where encoder frame t starts
        mel = lm(torch.nn.functional.pad(wave, (0, 160))[None])[0]
        t = encoder_frames - 1
        assert torch.allclose(feats.frames[t], torch.cat([mel[2 * t], mel[2 * t + 1]]), atol=1e-5)


def test_extracted_frames_are_the_models_own_the_ctc_head_gives_its_logits():
    """The last layer's extracted frames through a CTC model's lm_head are its forward's logits, and
    the conv / layer_0 frames are its extract_features / hidden_states[0] (one utterance, eval mode)."""
    from wav2vec2_lite.models import Wav2Vec2ForCTC
    from wav2vec2_lite.probes import extract_layer_features

    torch.manual_seed(2)
    model = Wav2Vec2ForCTC(Wav2Vec2Config.tiny(**MICRO, vocab_size=12)).eval()
    waves = [torch.randn(n) for n in (3000, 5210)]
    feats = extract_layer_features(model, waves)
    assert list(feats) == layer_names(2)
    with torch.no_grad():
        for i, w in enumerate(waves):
            out = model(w[None], output_hidden_states=True)
            torch.testing.assert_close(model.lm_head(feats["layer_2"].utterance(i)), out.logits[0])
            torch.testing.assert_close(feats["layer_0"].utterance(i), out.hidden_states[0][0])
            backbone = model.wav2vec2(w[None])
            torch.testing.assert_close(feats["conv"].utterance(i), backbone.extract_features[0])


# ----------------------------------------------------------------------------- run_probes
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_toy_corpus(
        tmp_path_factory.mktemp("toy"), train=10, valid=4, seed=0, min_words=1, max_words=2
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(5)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(**MICRO))
    return save_model(model, tmp_path_factory.mktemp("run") / "checkpoints" / "best").parent.parent


def test_run_probes_every_layer_random_init_mean_of_two_seeds_and_log_mel(corpus, tmp_path):
    torch.manual_seed(5)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(**MICRO)).train()
    lines: list[str] = []
    report = run_probes(model, corpus, "train", "valid", FAST, log=lines.append)
    assert model.training  # mode restored
    names = layer_names(MICRO["num_layers"])
    assert names == ["conv", "layer_0", "layer_1", "layer_2"]
    ckpt, rand, lm = report.models["checkpoint"], report.models["random_init"], report.models["log_mel"]
    assert [s.layer for s in ckpt.layers] == names and [s.layer for s in rand.layers] == names
    assert [s.dim for s in ckpt.layers] == [16, 32, 32, 32]
    assert [s.layer for s in lm.layers] == ["log_mel"] and lm.layers[0].dim == 160
    assert rand.seeds == [0, 1]
    for s in rand.layers:
        assert len(s.per_seed["valid_error"]) == 2
        assert s.valid_error == pytest.approx(sum(s.per_seed["valid_error"]) / 2)
        assert s.valid_loss == pytest.approx(sum(s.per_seed["valid_loss"]) / 2)
    # the two random inits are different networks: their probes differ somewhere
    assert any(s.per_seed["valid_loss"][0] != s.per_seed["valid_loss"][1] for s in rand.layers)
    for m in report.models.values():
        assert m.best.valid_error == min(s.valid_error for s in m.layers)
        assert all(s.valid_error >= 0 and s.valid_loss >= 0 for s in m.layers)
    assert len(lines) == len(names) * 3 + 1
    d = report.to_dict()
    assert d["protocol"] == FAST.to_dict()
    assert d["data"]["train_utterances"] == 10 and d["data"]["valid_utterances"] == 4
    assert d["data"]["train_frames"] == sum(
        int(x)
        for x in model.feature_output_lengths(
            torch.tensor([int(r.split("\t")[1]) for r in (corpus / "train.tsv").read_text().splitlines()[1:]])
        )
    )
    md = report.to_markdown()
    assert "| layer_2 | 32 |" in md and "log-mel" in md and "random init (mean of 2 seeds)" in md
    # a checkpoint of this model probes exactly as the model in memory
    folder = save_model(model, tmp_path / "saved")
    again = run_probes(
        folder, corpus, "train", "valid", ProbeProtocol(steps=15, lr=1e-2, batch_size=4, random_init_seeds=0)
    )
    assert [s.valid_loss for s in again.models["checkpoint"].layers] == [s.valid_loss for s in ckpt.layers]
    assert set(again.models) == {"checkpoint"}


def test_probe_seeds_average_probes_of_different_batch_orders(corpus):
    torch.manual_seed(5)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(**MICRO))
    protocol = ProbeProtocol(steps=15, batch_size=4, random_init_seeds=0, probe_seeds=2, log_mel=True)
    report = run_probes(model, corpus, "train", "valid", protocol)
    single = run_probes(
        model, corpus, "train", "valid", ProbeProtocol(steps=15, batch_size=4, random_init_seeds=0)
    )
    d = report.to_dict()
    for name in ("checkpoint", "log_mel"):
        for s, layer in zip(report.models[name].layers, d["models"][name]["layers"]):
            errors = layer["probe_seeds_valid_cer"]
            assert len(errors) == 2 and s.valid_error == pytest.approx(sum(errors) / 2)
    # the first probe seed is the single-probe run's seed: its number is the single run's
    first = [layer["probe_seeds_valid_cer"][0] for layer in d["models"]["checkpoint"]["layers"]]
    assert first == [s.valid_error for s in single.models["checkpoint"].layers]
    assert "probe_seeds_valid_cer" not in single.to_dict()["models"]["checkpoint"]["layers"][0]


def test_run_probes_user_errors_are_probe_errors(corpus, model_dir, tmp_path):
    with pytest.raises(ProbeError, match="train_1h"):
        run_probes(model_dir, corpus, "train_1h", "valid", FAST)
    with pytest.raises(ProbeError, match="data folder not found"):
        run_probes(model_dir, tmp_path / "nowhere", "train", "valid", FAST)
    with pytest.raises(ProbeError, match="no such file"):
        run_probes(tmp_path / "no_model", corpus, "train", "valid", FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbeError, match="cannot load a model"):
        run_probes(tmp_path / "empty", corpus, "train", "valid", FAST)
    with pytest.raises(ProbeError, match="different"):
        run_probes(model_dir, corpus, "train", "train", FAST)


def test_log_mel_needs_a_frame_stride_the_mel_hop_divides(corpus):
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config.tiny(**MICRO, conv_stride=(4, 2, 2, 2, 2, 2, 2)))  # 256 samples
    with pytest.raises(ProbeError, match="frame stride"):
        run_probes(model, corpus, "train", "valid", FAST)


def test_a_hugging_face_folder_probes_as_the_converted_model(corpus, tmp_path):
    pytest.importorskip("transformers")
    from wav2vec2_lite.interop.hf import to_hf

    torch.manual_seed(4)
    ours = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(**MICRO, masked_group_norm=False))
    to_hf(ours).save_pretrained(tmp_path / "hf")
    protocol = ProbeProtocol(steps=5, batch_size=4, random_init_seeds=0)
    from_folder = run_probes(tmp_path / "hf", corpus, "train", "valid", protocol)
    in_memory = run_probes(ours, corpus, "train", "valid", protocol)
    assert [s.layer for s in from_folder.models["checkpoint"].layers] == layer_names(2)
    for a, b in zip(from_folder.models["checkpoint"].layers, in_memory.models["checkpoint"].layers):
        assert a.valid_loss == pytest.approx(b.valid_loss, rel=1e-4)


PHONES = {"A": "aɪ", "E": "iː", "I": "ɪ", "O": "oʊ", "U": "uː", "S": "s", "F": "f", "H": "tʃ"}


def test_token_unit_scores_phonemes_not_characters():
    """Multi-character phonemes: with unit="token" the probe's error rate (PER) counts a phoneme
    as one token."""
    from wav2vec2_lite.asr.metrics import align_counts

    tok = CharTokenizer(sorted(set(PHONES.values())))
    g = torch.Generator().manual_seed(3)
    codes = torch.randn(len(tok), 16, generator=g)

    def utterances(n: int):
        feats, labels, refs = [], [], []
        for _ in range(n):
            ids = (
                4
                + torch.randint(0, len(tok) - 4, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g)
            ).tolist()
            rows: list[torch.Tensor] = []
            for k, i in enumerate(ids):
                rows += [codes[i]] * int(torch.randint(1, 4, (1,), generator=g))
                repeat = k + 1 < len(ids) and ids[k + 1] == i
                rows += [codes[0]] * max(int(torch.randint(0, 3, (1,), generator=g)), int(repeat))
            x = torch.stack(rows)
            feats.append(x + 0.1 * torch.randn(x.shape, generator=g))
            labels.append(torch.tensor(ids))
            refs.append(" ".join(tok.vocab[i] for i in ids))
        return FrameFeatures.from_list(feats), labels, refs

    tr, tr_lab, _ = utterances(80)
    va, va_lab, refs = utterances(30)
    r = train_ctc_probe(tr, tr_lab, va, va_lab, refs, tok.vocab, ProbeProtocol(steps=300), unit="token")
    assert r.valid_error <= 0.05, (r.valid_error, r.hypotheses[:2], refs[:2])
    # the rate is over phoneme tokens: recomputed from the hypotheses' tokens
    errors = sum(align_counts(ref.split(), hyp.split()).errors for ref, hyp in zip(refs, r.hypotheses))
    assert r.valid_error == pytest.approx(errors / sum(len(ref.split()) for ref in refs))
    weak = train_ctc_probe(tr, tr_lab, va, va_lab, refs, tok.vocab, ProbeProtocol(steps=5), unit="token")
    errors = sum(align_counts(ref.split(), hyp.split()).errors for ref, hyp in zip(refs, weak.hypotheses))
    assert (
        weak.valid_error == pytest.approx(errors / sum(len(ref.split()) for ref in refs))
        and weak.valid_error > 0.05
    )
    with pytest.raises(ValueError, match="unit"):
        train_ctc_probe(tr, tr_lab, va, va_lab, refs, tok.vocab, ProbeProtocol(steps=1), unit="word")


def test_run_probes_on_phoneme_labels_reports_per(corpus, tmp_path):
    """``labels="phn"``: SPLIT.phn + dict.phn.txt read like .ltr; the report's keys say per."""
    import shutil

    from wav2vec2_lite.data.manifest import (
        count_symbols,
        read_labels,
        write_dictionary,
        write_labels,
    )

    data = tmp_path / "data"
    shutil.copytree(corpus, data, ignore=shutil.ignore_patterns("wav"))
    for split in ("train", "valid"):
        lines = [
            " ".join(PHONES[c] for c in ltr.split() if c != "|") for ltr in read_labels(data / f"{split}.ltr")
        ]
        write_labels(data / f"{split}.phn", lines)
    write_dictionary(data / "dict.phn.txt", count_symbols(read_labels(data / "train.phn")))
    torch.manual_seed(5)
    model = Wav2Vec2ForPreTraining(Wav2Vec2Config.tiny(**MICRO))
    report = run_probes(
        model,
        data,
        "train",
        "valid",
        ProbeProtocol(steps=10, batch_size=4, random_init_seeds=0),
        labels="phn",
    )
    d = report.to_dict()
    assert d["data"]["labels"] == "phn" and d["data"]["metric"] == "per"
    assert (
        "valid_per" in d["models"]["checkpoint"]["layers"][0]
        and "best_valid_per" in d["models"]["checkpoint"]
    )
    assert "checkpoint PER (loss)" in report.to_markdown()
    assert d["data"]["valid_label_symbols"] == sum(len(x.split()) for x in read_labels(data / "valid.phn"))
    with pytest.raises(ProbeError, match=r"dict\.wrd2\.txt"):
        run_probes(model, data, "train", "valid", FAST, labels="wrd2")


def test_espeak_phonemes_of_the_corpus(tmp_path):
    pytest.importorskip("espeakng_loader")
    from wav2vec2_lite.corpus import build_corpus
    from wav2vec2_lite.data.manifest import read_dictionary, read_labels
    from wav2vec2_lite.probes.phonemes import EspeakPhonemizer, write_phoneme_labels

    ph = EspeakPhonemizer()
    # /work/shared/FACTS.md: "s ˈɛ t  ɐ n  ɐ l ˈɑːɹ m ..." for en-us, stress marks dropped here
    assert ph.phonemes("set an alarm", "en-us") == ["s", "ɛ", "t", "ɐ", "n", "ɐ", "l", "ɑːɹ", "m"]
    assert ph.phonemes("set an alarm", "en-gb") != []  # the corpus's 'en-gb' is eSpeak's 'en'
    build_corpus(
        tmp_path / "c",
        unlabeled_minutes=0.1,
        train_10min_minutes=0.1,
        train_1h_minutes=0.1,
        valid_minutes=0.1,
        test_minutes=0.1,
        seed=0,
        workers=1,
    )
    written = write_phoneme_labels(tmp_path / "c", ["train_10min", "valid"])
    for split in ("train_10min", "valid"):
        phn = read_labels(written[split])
        assert len(phn) == len(read_labels(tmp_path / "c" / f"{split}.ltr")) and all(
            line.split() for line in phn
        )
        assert not any(m in line for line in phn for m in "ˈˌ")
    assert set(read_dictionary(written["dict"])) == {
        p for split in ("train_10min", "valid") for line in read_labels(written[split]) for p in line.split()
    }
    with pytest.raises(ProbeError, match="utterances.jsonl"):
        write_phoneme_labels(tmp_path, ["train"])


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_json_with_the_expected_keys(corpus, model_dir, tmp_path, capsys):
    from wav2vec2_lite.cli import probe

    out = tmp_path / "probes.json"
    probe(
        [
            str(model_dir),
            "--data",
            str(corpus),
            "--steps",
            "10",
            "--batch-size",
            "4",
            "--log-mel",
            "--random-init-seeds",
            "2",
            "--json",
            str(out),
            "--markdown",
            str(tmp_path / "p.md"),
            "--quiet",
        ]
    )
    report = json.loads(out.read_text())
    assert set(report) == {"protocol", "data", "models"}
    assert set(report["models"]) == {"checkpoint", "random_init", "log_mel"}
    assert report["protocol"]["steps"] == 10 and report["protocol"]["log_mel"] is True
    assert report["models"]["checkpoint"]["source"].endswith("checkpoints/best")
    for m in report["models"].values():
        assert {"layers", "best_layer", "best_valid_cer", "source"} <= set(m)
        for layer in m["layers"]:
            assert {"layer", "dim", "valid_cer", "valid_loss", "train_loss"} <= set(layer)
    assert [x["layer"] for x in report["models"]["checkpoint"]["layers"]] == [
        "conv",
        "layer_0",
        "layer_1",
        "layer_2",
    ]
    assert report["models"]["random_init"]["seeds"] == [0, 1]
    assert "| conv | 16 |" in capsys.readouterr().out
    assert (tmp_path / "p.md").read_text().startswith("| layer | dim |")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wav2vec2_lite.probes.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )


def test_cli_subprocess_exit_codes(corpus, model_dir, tmp_path):
    ok = _cli(
        str(model_dir),
        "--data",
        str(corpus),
        "--steps",
        "3",
        "--random-init-seeds",
        "0",
        "--quiet",
        "--json",
        str(tmp_path / "r.json"),
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "r.json").read_text())["models"].keys() == {"checkpoint"}
    bad = _cli(str(tmp_path / "missing_run"), "--data", str(corpus))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("w2v2-probe: error: ")
    assert "missing_run" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "args, match",
    [
        (["--train", "train_1h"], "train_1h"),
        (["--steps", "0"], "steps"),
        (["--lr", "abc"], "--lr"),
        (["--bogus"], "--bogus"),
    ],
)
def test_cli_user_errors_are_one_line_and_exit_2(corpus, model_dir, capsys, args, match):
    from wav2vec2_lite.cli import probe

    with pytest.raises(SystemExit) as e:
        probe([str(model_dir), "--data", str(corpus), "--steps", "2", "--quiet", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("w2v2-probe: error: ") and match in err, err
