"""Shipped pretrained checkpoints (wav2vec2_lite.pretrained): integrity, provenance, the
re-measured valid accuracy, name resolution in the CLIs; and the bundling of a run."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wav2vec2_lite import pretrained
from wav2vec2_lite.data.audio import load_audio
from wav2vec2_lite.data.manifest import read_manifest
from wav2vec2_lite.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining
from wav2vec2_lite.serialization import CheckpointError, file_sha256, load_model

from _tolerance import float32_bound

REPO = Path(__file__).resolve().parent.parent
SHIPPED = pretrained.available()


def test_a_checkpoint_is_shipped_in_the_package():
    assert "tiny-espeak-10h" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_integrity_and_provenance(name):
    folder = pretrained.folder(name)
    prov = pretrained.provenance(name)
    weights = folder / "model.safetensors"
    assert weights.stat().st_size <= 25 * 2**20
    sha = file_sha256(weights)
    assert json.loads((folder / "config.json").read_text())["weights_sha256"] == sha == prov["weights_sha256"]
    model = pretrained.load(name)
    assert isinstance(model, Wav2Vec2ForPreTraining) and not model.training
    assert sum(p.numel() for p in model.parameters()) == prov["num_parameters"]
    for key in (
        "command",
        "code_version",
        "cpu",
        "corpus",
        "hours_of_audio_seen",
        "valid_curve",
        "final_metrics",
        "fresh_valid_check",
        "train_loss_log",
    ):
        assert prov[key], key
    corpus = prov["corpus"]
    assert corpus["unlabeled"]["minutes"] >= 600 and {"valid", "test"} <= set(
        corpus["pretraining_speakers_disjoint_from"]
    )
    assert prov["hours_of_audio_seen"] > corpus["unlabeled"]["minutes"] / 60  # more than one pass
    # the run learned its task: valid loss fell below chance and kept falling, accuracy far above chance
    curve = prov["valid_curve"]
    assert curve[-1]["loss"] < curve[0]["loss"] < curve[0]["chance_loss"]
    assert prov["final_metrics"]["chosen"]["accuracy"] > 10 / 101


def _near_ties(model, manifest_dir, seed: int) -> int:
    """Masked frames whose decision (the best-scoring candidate) float32 rounding can flip: the gap
    between the two best logits, in float64, within the float32 logits' measured rounding error
    (tests/_tolerance.py); the same masks and distractors as ``pretext_accuracy``."""
    manifest, exact = read_manifest(Path(manifest_dir) / "valid.tsv"), copy.deepcopy(model).double().eval()
    model.eval()
    ties, g32, g64 = 0, torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for i in range(len(manifest)):
        wave = torch.from_numpy(load_audio(manifest.full_path(i))[:250_000])[None]
        with torch.no_grad():
            l32, l64 = model(wave.float(), generator=g32).logits, exact(wave.double(), generator=g64).logits
        top2 = l64.topk(2, dim=-1).values
        ties += int(((top2[:, 0] - top2[:, 1]) <= float32_bound(l32, l64)).sum())
    return ties


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_reproduces_its_accuracy_on_a_fresh_valid_set(name, tmp_path):
    """The recorded accuracy on a freshly synthesized valid set (held-out speakers) is re-measured
    here within the tolerance stated in provenance.json (same audio and masks; float rounding only)."""
    pytest.importorskip("espeakng_loader")
    from wav2vec2_lite.pretrained.check import fresh_valid_set, pretext_accuracy

    rec = pretrained.provenance(name)["fresh_valid_check"]
    manifest = fresh_valid_set(tmp_path / "valid", rec["corpus_seed"], rec["valid_minutes"])
    got = pretext_accuracy(pretrained.load(name), manifest, seed=rec["mask_seed"])
    assert got["masked_frames"] == rec["masked_frames"] and got["utterances"] == rec["utterances"]
    # the CPU that recorded it rounded differently: only decisions within float32 rounding of a tie may differ
    ties = _near_ties(pretrained.load(name), manifest, rec["mask_seed"])
    assert abs(got["accuracy"] - rec["accuracy"]) * rec["masked_frames"] <= ties + 1e-6, (got, rec, ties)
    assert rec["accuracy"] > 10 * (1 / 101)  # chance with 100 distractors


def test_names_resolve_in_the_apis_and_an_existing_path_wins(tmp_path, monkeypatch):
    from wav2vec2_lite.train.tasks import resolve_pretrained

    name = SHIPPED[0]
    assert resolve_pretrained(name).path == pretrained.folder(name)
    ctc = Wav2Vec2ForCTC.from_pretraining(name, vocab_size=7)
    shipped = pretrained.load(name).wav2vec2.state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in ctc.wav2vec2.state_dict().items())
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()  # a folder of that name here: the path wins (and holds no model)
    with pytest.raises(FileNotFoundError, match=f"{name}: no checkpoint found"):
        resolve_pretrained(name)
    with pytest.raises(
        FileNotFoundError, match=r"not the name of a shipped pretrained checkpoint \(available: " + name
    ):
        resolve_pretrained("tiny-espeak-1h")


def test_the_probe_cli_takes_a_name_and_lists_the_available_ones_for_an_unknown_one(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from wav2vec2_lite.cli import probe; probe()",
            "no-such-model",
            "--data",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "available: " + SHIPPED[0] in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A 20-update pretraining run through the CLI on a tiny eSpeak corpus (~15 s)."""
    pytest.importorskip("espeakng_loader")
    from wav2vec2_lite.corpus import build_corpus

    root = tmp_path_factory.mktemp("bundle")
    build_corpus(
        root / "c",
        seed=0,
        workers=1,
        unlabeled_minutes=1.0,
        train_10min_minutes=0.1,
        train_1h_minutes=0.1,
        valid_minutes=0.5,
        test_minutes=0.1,
    )
    cmd = [
        sys.executable,
        str(REPO / "scripts/pretrain.py"),
        "--config-name",
        "pretrain_demo",
        f"data.manifest_dir={root / 'c'}",
        "data.train_subset=unlabeled",
        "trainer.max_updates=20",
        "schedule.warmup_updates=2",
        "trainer.num_threads=1",
        "trainer.valid_interval=10",
        "trainer.save_interval=10",
        "trainer.log_interval=5",
        "trainer.progress=false",
        "model.num_layers=2",
        f"hydra.run.dir={root / 'run'}",
    ]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return root / "run"


def test_make_bundle_writes_weights_checksum_and_provenance_and_the_command_reproduces(tiny_run, tmp_path):
    from wav2vec2_lite.pretrained.bundle import make_bundle
    from wav2vec2_lite.pretrained.check import reproduce_losses

    out = make_bundle(tiny_run, "toy", tmp_path)
    prov = json.loads((out / "provenance.json").read_text())
    model = load_model(out)
    best = load_model(tiny_run / "checkpoints" / "best")
    assert all(torch.equal(v, best.state_dict()[k]) for k, v in model.state_dict().items())
    assert prov["weights_sha256"] == file_sha256(out / "model.safetensors")
    assert prov["updates"] == 20 and [r["update"] for r in prov["valid_curve"]] == [10, 20]
    assert prov["chosen_checkpoint"]["update"] in (10, 20)
    assert prov["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert prov["corpus"]["seed"] == 0 and "--unlabeled-minutes 1" in prov["corpus"]["build_command"]
    # 20 updates of <= 2 s crops, at most 4 crops (max_tokens 128000 samples) each
    assert 0 < prov["hours_of_audio_seen"] <= 20 * 128000 / 16000 / 3600 + 1e-9
    with pytest.raises(FileExistsError):
        make_bundle(tiny_run, "toy", tmp_path)
    # a run stopped before the end of its schedule: the command reproduces the shipped update
    import yaml

    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    cfg["trainer"]["max_updates"] = 40  # as if the run had been planned for 40 updates and stopped at 20
    stopped = tmp_path / "stopped_run"
    shutil.copytree(tiny_run, stopped)
    (stopped / "config.yaml").write_text(yaml.safe_dump(cfg))
    run = json.loads((stopped / "run.json").read_text())
    run["argv"] = [a.replace("trainer.max_updates=20", "trainer.max_updates=40") for a in run["argv"]]
    (stopped / "run.json").write_text(json.dumps(run))
    with pytest.raises(ValueError, match="schedule.total_updates"):
        make_bundle(stopped, "stopped", tmp_path)  # its lr schedule would depend on the length
    run["argv"].append("schedule.total_updates=40")
    (stopped / "run.json").write_text(json.dumps(run))
    early = json.loads((make_bundle(stopped, "stopped", tmp_path) / "provenance.json").read_text())
    shipped = early["chosen_checkpoint"]["update"]
    assert (
        early["stopped_early"]["schedule_updates"] == 40
        and early["stopped_early"]["last_logged_update"] == 20
    )
    assert early["command"].endswith(f"schedule.total_updates=40 trainer.max_updates={shipped}")
    assert "trainer.max_updates=40" not in early["command"] and early["updates"] == shipped
    # the recorded command, rerun for 15 updates on the same machine, logs the very same losses
    rows = reproduce_losses(prov, tmp_path / "rerun", updates=15)
    assert [r["update"] for r in rows] == [5, 10, 15] and all(r["rel_diff"] == 0.0 for r in rows)
    # same-size corruption of the shipped weights is caught on load
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-100:] = bytes(100)
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_the_provenance_command_reproduces_the_logged_losses(name, tmp_path):
    """200 updates of the recorded command on the recorded corpus give the logged losses. Needs that
    corpus (its build command is in provenance.json, ~3 min) and the CPU kind and thread count that
    made the run; skipped otherwise (float32 kernels differ between CPU kinds)."""
    from wav2vec2_lite.pretrained.check import reproduce_losses

    prov = pretrained.provenance(name)
    corpus = Path(os.environ.get("W2V2_SCIENCE_CORPUS", REPO / prov["corpus"]["path"]))
    if not (corpus / "corpus.json").is_file():
        pytest.skip(
            f"needs the corpus at {corpus}: {prov['corpus']['build_command']} (or set W2V2_SCIENCE_CORPUS)"
        )
    if (
        torch.backends.cpu.get_cpu_capability() != prov["cpu"]["torch_capability"]
        or (os.cpu_count() or 1) < 2
    ):
        pytest.skip(f"made on a {prov['cpu']['torch_capability']} CPU with {prov['num_threads']} threads")
    rows = reproduce_losses(prov, tmp_path / "rerun", updates=200, corpus=corpus)
    assert [r["update"] for r in rows][-1] == 200


def test_running_minutes_leave_out_the_gap_between_a_stopped_run_and_its_resume():
    from wav2vec2_lite.pretrained.bundle import running_minutes

    def data(t):
        return {"kind": "data", "event": "data_validated", "time": t, "seconds": 30.0}

    records = [
        data(1000.0),
        data(1000.0),
        {"kind": "train", "update": 50, "time": 1600.0},
        {"kind": "train", "update": 100, "time": 2200.0},  # stopped here; resumed 5 hours later
        data(20200.0),
        data(20200.0),
        {"kind": "train", "update": 150, "time": 20800.0},
        {"kind": "train", "update": 200, "time": 21400.0},
    ]
    assert running_minutes(records, 200) == (round((1230 + 1230) / 60, 1), 2)
    assert running_minutes(records, 100) == (round(1230 / 60, 1), 1)
    # a process stopped before its first update (here: 40 minutes into its data checks) adds nothing
    killed = [{"kind": "data", "event": "data_validated", "time": 500.0, "seconds": 2400.0}] * 2
    assert running_minutes(killed + records, 200) == (round((1230 + 1230) / 60, 1), 2)
