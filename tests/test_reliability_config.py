"""Reliability round 2 (#22): unknown config keys, ``data.unk``, empty validation sets, silent and
clipped audio. Items about the command line go through scripts/pretrain.py / scripts/finetune.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir

from wav2vec2_lite.config import ConfigError, Wav2Vec2Config
from wav2vec2_lite.data.audio import read_samples
from wav2vec2_lite.data.config import DataConfig
from wav2vec2_lite.data.dataset import AudioDataset, DatasetError
from wav2vec2_lite.data.pipeline import TrainingData, describe
from wav2vec2_lite.data.validate import validate_dataset
from wav2vec2_lite.train.config import config_container, register_configs, to_run_config, unknown_key_error
from wav2vec2_lite.train.toy_data import make_toy_corpus

from _helpers import CLI_MICRO_MODEL

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "wav2vec2_lite" / "configs"
register_configs()

# a micro model and batches: each CLI run below is a couple of updates at most
MICRO = [
    *CLI_MICRO_MODEL,
    "data.max_tokens=64000",
    "trainer.max_updates=2",
    "trainer.progress=false",
    "trainer.num_threads=1",
]


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=["data.manifest_dir=/x", *overrides])


def _cli(script: str, config: str, corpus: Path, run: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(REPO / "scripts" / script),
        "--config-name",
        config,
        f"data.manifest_dir={corpus}",
        f"hydra.run.dir={run}",
        *MICRO,
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=run.parent)


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_toy_corpus(tmp_path_factory.mktemp("toy"), train=6, valid=2, seed=1, min_words=2, max_words=2)


def _copy(corpus: Path, dest: Path) -> Path:
    """A copy of the corpus whose manifests point at the copy."""
    shutil.copytree(corpus, dest)
    for tsv in dest.glob("*.tsv"):
        lines = tsv.read_text().split("\n")
        tsv.write_text("\n".join([str(dest)] + lines[1:]))
    return dest


# ------------------------------------------------------------------ 3. unknown keys, data.unk
@pytest.mark.parametrize(
    "config,override,message",
    [
        (
            "pretrain_tiny",
            "+trainer.max_update=1",
            "unknown config key trainer.max_update: did you mean trainer.max_updates?",
        ),
        (
            "finetune_tiny",
            "+trainer.max_update=1",
            "unknown config key trainer.max_update: did you mean trainer.max_updates?",
        ),
        (
            "pretrain_tiny",
            "+data.max_token=9",
            "unknown config key data.max_token: did you mean data.max_tokens?",
        ),
        (
            "pretrain_tiny",
            "+optim.weight_decai=0",
            "unknown config key optim.weight_decai: did you mean optim.weight_decay?",
        ),
        (
            "pretrain_tiny",
            "+model.num_layerz=2",
            "unknown config key model.num_layerz: did you mean model.num_layers?",
        ),
        (
            "finetune_tiny",
            "+model.num_layerz=2",
            "unknown config key model.num_layerz: did you mean model.num_layers?",
        ),
        (
            "pretrain_tiny",
            "+health.windows=5",
            "unknown config key health.windows: did you mean health.window?",
        ),
        ("pretrain_tiny", "+trainer.lr=1", "unknown config key trainer.lr: did you mean optim.lr?"),
        (
            "finetune_tiny",
            "+ctc.mask_time_probs=0.1",
            "unknown config key ctc.mask_time_probs: did you mean ctc.mask_time_prob?",
        ),
        (
            "finetune_tiny",
            "+finetune.pretrainedd=x",
            "unknown config key finetune.pretrainedd: did you mean finetune.pretrained?",
        ),
        ("finetune_tiny", "+taks=finetune", "unknown config key taks: did you mean task?"),
        ("pretrain_tiny", "+ctc.layerdrop=0.1", "unknown config key ctc: only finetune configs have it"),
        (
            "pretrain_tiny",
            "+schedule.warmup_update=5",
            "unknown config key schedule.warmup_update: did you mean schedule.warmup_updates? "
            "(the 'polynomial' schedule's keys; schedule=NAME switches schedules)",
        ),
    ],
)
def test_an_unknown_key_in_any_group_is_one_line_naming_the_closest_valid_key(config, override, message):
    with pytest.raises(ConfigError) as e:
        to_run_config(_compose(config, [override]))
    assert str(e.value) == message


def test_a_key_far_from_any_lists_the_group_keys_and_free_maps_stay_free():
    with pytest.raises(
        ConfigError, match=r"^unknown config key data\.zzz: the keys of data are .*max_tokens, .*unk"
    ):
        to_run_config(_compose("pretrain_tiny", ["+data.zzz=1"]))
    cfg = to_run_config(
        _compose(
            "finetune_tiny",
            [
                "model=tiny",
                "+optim.lr_scale.lm_head=4",
                "+optim.lr_scale.wav2vec2.context=0.5",
                "+model.extra.note=x",
            ],
        )
    )
    assert cfg.optim.lr_scale == {"lm_head": 4, "wav2vec2": {"context": 0.5}} and cfg.model.extra == {
        "note": "x"
    }
    cfg = to_run_config(_compose("pretrain_tiny", ["model=tiny_best_rq", "model.best_rq.codebook_size=64"]))
    assert cfg.model.best_rq.codebook_size == 64
    with pytest.raises(
        ConfigError, match=r"^config key model\.num_negatives is now model\.contrastive\.num_negatives"
    ):
        to_run_config(_compose("pretrain_tiny", ["+model.num_negatives=5"]))
    with pytest.raises(
        ConfigError,
        match=r"^unknown config key model\.best_rq\.codebook_sise: did you mean "
        r"model\.best_rq\.codebook_size\?",
    ):
        to_run_config(_compose("pretrain_tiny", ["+model.best_rq.codebook_sise=64"]))


def test_a_wrong_type_in_a_plain_config_is_one_line_naming_the_key():
    plain = config_container(to_run_config(_compose("pretrain_tiny", [])))
    plain["trainer"]["max_updates"] = "many"
    with pytest.raises(ConfigError) as e:
        to_run_config(plain)
    assert str(e.value) == "trainer.max_updates: Value 'many' of type 'str' could not be converted to Integer"


def test_data_unk_is_a_typed_key_with_its_values_checked():
    assert to_run_config(_compose("finetune_tiny", [])).data.unk == "error"
    assert to_run_config(_compose("finetune_tiny", ["data.unk=map"])).data.unk == "map"
    with pytest.raises(Exception) as e:
        _compose("finetune_tiny", ["data.unk=mapp"])
    assert "Invalid value 'mapp', expected one of [error, map]" in str(e.value.__cause__)


def test_cli_typo_stops_before_training_naming_the_closest_key(corpus, tmp_path):
    run = tmp_path / "run"
    proc = _cli("pretrain.py", "pretrain_tiny", corpus, run, "+trainer.max_update=1")
    assert proc.returncode != 0
    assert "unknown config key trainer.max_update: did you mean trainer.max_updates?" in proc.stderr
    assert not (run / "checkpoints" / "last").exists()
    refused = _cli(
        "pretrain.py", "pretrain_tiny", corpus, run, "trainer.max_update=1"
    )  # refused by Hydra first
    assert refused.returncode != 0
    assert "unknown config key trainer.max_update: did you mean trainer.max_updates?" in refused.stderr
    assert not (run / "checkpoints" / "last").exists()


def test_the_line_for_a_key_hydra_refuses_is_the_same():
    """For a CLI that catches Hydra's refusal of ``group.key=value``: the same line as for ``+group.key``."""
    assert str(unknown_key_error("trainer.max_update", "pretrain")) == (
        "unknown config key trainer.max_update: did you mean trainer.max_updates?"
    )
    assert str(unknown_key_error("schedule.warmup_update", "finetune")) == (
        "unknown config key schedule.warmup_update: did you mean schedule.warmup_updates?"
    )
    assert (
        str(unknown_key_error("ctc", "pretrain")) == "unknown config key ctc: only finetune configs have it"
    )
    # Hydra's refusal of a key that moved into an objective's sub-config names its new place
    assert str(unknown_key_error("model.objective_options.codebook_size", "pretrain")) == (
        "config key model.objective_options.codebook_size is now model.best_rq.codebook_size "
        "(each objective owns its settings)"
    )


def test_cli_out_of_vocabulary_error_names_data_unk_and_data_unk_map_trains(corpus, tmp_path):
    data = _copy(corpus, tmp_path / "oov")
    labels = (data / "train.ltr").read_text().split("\n")
    labels[0] = "Z " + labels[0]  # Z is not in dict.ltr.txt
    (data / "train.ltr").write_text("\n".join(labels))
    scratch = ["model=tiny", *MICRO[:7]]
    refused = _cli("finetune.py", "finetune_tiny", data, tmp_path / "refused", *scratch)
    assert refused.returncode != 0
    assert "symbol 'Z' (U+005A)" in refused.stderr and "data.unk=map" in refused.stderr
    mapped = _cli("finetune.py", "finetune_tiny", data, tmp_path / "mapped", *scratch, "data.unk=map")
    assert mapped.returncode == 0, mapped.stderr[-3000:]
    assert (tmp_path / "mapped" / "checkpoints" / "last").is_dir()


# ------------------------------------------------------------------ 4. empty validation set
def test_cli_empty_valid_tsv_is_an_error_unless_validation_is_off(corpus, tmp_path):
    data = _copy(corpus, tmp_path / "novalid")
    (data / "valid.tsv").write_text(f"{data}\n")
    proc = _cli("pretrain.py", "pretrain_tiny", data, tmp_path / "run")
    assert proc.returncode != 0
    assert (
        f"data.valid_subset=valid: {data / 'valid.tsv'} has no usable row (0 in the manifest); nothing was "
        f"trained."
    ) in proc.stderr and "data.valid_subset=null to train without validation" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last").exists()
    off = _cli("pretrain.py", "pretrain_tiny", data, tmp_path / "off", "data.valid_subset=null")
    assert off.returncode == 0, off.stderr[-3000:]
    assert (tmp_path / "off" / "checkpoints" / "last").is_dir()
    assert not (tmp_path / "off" / "checkpoints" / "best").exists()  # asked for: no validation, no best


def test_cli_every_valid_row_skipped_is_an_error(corpus, tmp_path):
    data = _copy(corpus, tmp_path / "badvalid")
    for wav in sorted((data / "wav").glob("valid_*.wav")):
        wav.write_bytes(b"")
    proc = _cli("pretrain.py", "pretrain_tiny", data, tmp_path / "run", "data.skip_invalid=true")
    assert proc.returncode != 0
    assert (
        f"data.valid_subset=valid: {data / 'valid.tsv'} has no usable row (2 in the manifest; dropped: "
        f"2 invalid); nothing was trained."
    ) in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "last").exists()


class Source:
    """A pretraining task's files and datasets (no labels)."""

    crop_to_shortest = True

    def __init__(self, root: Path) -> None:
        self.root = root

    def data_files(self, subset: str) -> dict:
        return {"manifest_path": self.root / f"{subset}.tsv"}

    def dataset(self, subset: str, train: bool, *, min_samples: int = 0, indices=None) -> AudioDataset:
        return AudioDataset(
            self.root / f"{subset}.tsv",
            min_sample_size=min_samples,
            indices=indices,
            random_crop=train,
            seed=3,
            on_error="skip",
        )


def _training_data(corpus: Path, **data) -> TrainingData:
    cfg = DataConfig(manifest_dir=str(corpus), min_sample_size=0, **data)
    cfg.check()
    return TrainingData(cfg, Source(corpus), Wav2Vec2Config.tiny(), seed=1)


def test_valid_rows_all_dropped_by_batch_size_or_unreadable_mid_run_are_errors(corpus, tmp_path):
    with pytest.raises(
        DatasetError,
        match=r"has no usable row \(2 in the manifest; dropped: 2 longer than "
        r"max_tokens_valid\)",
    ):
        _training_data(corpus, max_tokens_valid=1000, too_long="skip")
    data = _training_data(_copy(corpus, tmp_path / "c"))
    for wav in (tmp_path / "c" / "wav").glob("valid_*.wav"):
        wav.unlink()
    with pytest.raises(DatasetError, match=r"validation gave no usable batch: .*data.valid_subset=null"):
        list(data.valid_batches())
    assert _training_data(corpus, valid_subset=None).valid_loader is None  # off, explicitly
    with pytest.raises(ValueError, match=r"trainer.max_valid_batches: > 0 or null \(got 0\)"):
        to_run_config(_compose("pretrain_tiny", ["trainer.max_valid_batches=0"]))


# ------------------------------------------------------------------ 8. silence and clipping
def _silent_and_clipped(data: Path) -> tuple[Path, Path]:
    """Train rows 1 and 2 rewritten: digital silence, and the same wave driven into clipping."""
    silent, clipped = sorted((data / "wav").glob("train_*.wav"))[:2]
    sf.write(str(silent), np.zeros(sf.info(str(silent)).frames, np.float32), 16000, subtype="PCM_16")
    wave = read_samples(clipped)[:, 0]
    sf.write(str(clipped), np.clip(wave * 50, -1, 1), 16000, subtype="PCM_16")
    return silent, clipped


def test_silence_and_heavy_clipping_are_counted_warnings_not_problems(tmp_path):
    rng = np.random.default_rng(8)
    square = np.where(np.arange(8000) % 2 == 0, 1.0, -1.0)  # RMS = its amplitude
    files = {
        "speech.wav": rng.uniform(-0.3, 0.3, 8000),
        "quiet.wav": square * 10 ** (-65 / 20),
        "low.wav": square * 10 ** (-55 / 20),
        "zeros.wav": np.zeros(8000),
        "clipped.wav": np.where(np.arange(8000) % 50 == 0, 1.0, rng.uniform(-0.3, 0.3, 8000)),  # 2 %
        "touched.wav": np.where(np.arange(8000) % 200 == 0, 1.0, rng.uniform(-0.3, 0.3, 8000)),
    }  # 0.5 %
    for name, wave in files.items():
        sf.write(str(tmp_path / name), wave.astype(np.float32), 16000, subtype="FLOAT")
    sf.write(str(tmp_path / "zeros16.wav"), np.zeros(8000), 16000, subtype="PCM_16")
    (tmp_path / "m.tsv").write_text(
        f"{tmp_path}\n" + "".join(f"{n}\t8000\n" for n in [*files, "zeros16.wav"])
    )
    report = validate_dataset(tmp_path / "m.tsv", check_audio="header", num_workers=1)
    assert report.ok and report.valid_indices == list(range(7))  # warnings do not drop rows
    found = {(Path(w.path).name, w.line_no): w.message for w in report.warnings}
    assert found == {
        ("quiet.wav", 3): "silent: RMS -65.0 dBFS, below -60 dBFS",
        ("zeros.wav", 5): "silent: RMS digital zero, below -60 dBFS",
        ("clipped.wav", 6): "clipped: 2.0% of samples at |x| >= 0.999 (limit 1%)",
    }
    # a PCM file is decoded only by the full check: its silence is found there
    full = validate_dataset(tmp_path / "m.tsv", check_audio="full", num_workers=1)
    assert [(Path(w.path).name, w.message) for w in full.warnings][-1] == (
        "zeros16.wav",
        "silent: RMS digital zero, below -60 dBFS",
    )
    assert len(full.warnings) == 4


def test_cli_validation_report_counts_silence_and_clipping(corpus, tmp_path):
    data = _copy(corpus, tmp_path / "warn")
    silent, clipped = _silent_and_clipped(data)
    run = tmp_path / "run"
    proc = _cli("pretrain.py", "pretrain_tiny", data, run, "data.validate=full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = _events(run)
    train = next(r for r in records if r.get("event") == "data_validated" and r["subset"] == "train")
    assert (train["rows"], train["invalid"], train["warnings"]) == (6, 0, 2)
    warned = next(r for r in records if r.get("event") == "audio_warnings")
    assert warned["count"] == 2 and [w.split(": ")[1] for w in warned["warnings"]] == [
        str(silent),
        str(clipped),
    ]
    assert "silent: RMS digital zero" in warned["warnings"][0] and "clipped: " in warned["warnings"][1]
    assert describe(warned).startswith(f"{data / 'train.tsv'}: 2 warning(s), training on them anyway:")


def test_header_validation_finds_pcm_silence_and_clipping_as_training_loads_them(corpus, tmp_path):
    """data.validate=header decodes only float files; the PCM ones are checked when first loaded."""
    data = _copy(corpus, tmp_path / "warn_header")
    silent, clipped = _silent_and_clipped(data)
    run = tmp_path / "run"
    # two epochs over the 6 training files: each silent/clipped file is reported once
    proc = _cli("pretrain.py", "pretrain_tiny", data, run, "trainer.max_updates=1000", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = _events(run)
    train = next(r for r in records if r.get("event") == "data_validated" and r["subset"] == "train")
    assert (train["mode"], train["warnings"]) == ("header", 0)  # PCM: not decoded by validation
    warned = [r for r in records if r.get("event") == "audio_warnings"]
    assert {r["found_by"] for r in warned} == {"loading"} and {r["subset"] for r in warned} == {"train"}
    paths = [p for r in warned for p in r["paths"]]
    assert sorted(paths) == sorted([str(silent), str(clipped)])  # once each, although read twice
    lines = [w for r in warned for w in r["warnings"]]
    assert any(w.startswith(f"{silent}: silent: RMS digital zero") for w in lines)
    assert any(w.startswith(f"{clipped}: clipped: ") for w in lines)
    assert "warning(s) on loading, training on them anyway" in proc.stdout + proc.stderr
