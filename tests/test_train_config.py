"""Hydra configs: presets, composition, command-line overrides reaching the model, multirun."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.train.config import build_model_config, register_configs, to_run_config
from wav2vec2_lite.train.toy_data import make_toy_corpus

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "wav2vec2_lite" / "configs"
register_configs()


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@pytest.mark.parametrize("name", ["tiny", "base", "large"])
def test_model_yaml_names_its_preset_and_every_field_stays_overridable(name):
    """Each value is said once: the YAML names the Python preset; the schema knows every field."""
    data = yaml.safe_load((CONFIGS / "model" / f"{name}.yaml").read_text())
    assert data == {"preset": name}
    assert build_model_config(
        to_run_config(_compose("pretrain", [f"model={name}", "data.manifest_dir=/x"])).model
    ) == Wav2Vec2Config.preset(name)
    over = ["model.num_layers=2", "model.contrastive.num_negatives=7", "model.best_rq.codebook_size=64"]
    m = build_model_config(
        to_run_config(_compose("pretrain", [f"model={name}", "data.manifest_dir=/x", *over])).model
    )
    assert m == Wav2Vec2Config.preset(
        name, num_layers=2, contrastive={"num_negatives": 7}, best_rq={"codebook_size": 64}
    )


def test_paper_base_pretraining_defaults():
    cfg = to_run_config(_compose("pretrain", ["data.manifest_dir=/x"]))
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.eps, cfg.optim.weight_decay) == (
        5e-4,
        [0.9, 0.98],
        1e-6,
        0.01,
    )
    assert (cfg.schedule.name, cfg.schedule.warmup_updates, cfg.trainer.max_updates) == (
        "polynomial",
        32000,
        400000,
    )
    assert (cfg.data.max_tokens, cfg.data.max_sample_size, cfg.data.min_sample_size) == (
        1400000,
        250000,
        32000,
    )
    assert cfg.trainer.precision == "fp16"
    m = build_model_config(cfg.model)
    assert m == Wav2Vec2Config.base()
    c = m.contrastive
    assert (m.layerdrop, m.feature_grad_mult, c.diversity_loss_weight, c.feature_penalty_weight) == (
        0.05,
        0.1,
        0.1,
        10.0,
    )


@pytest.mark.parametrize(
    "recipe,lr,updates,freeze,channel,layerdrop",
    [
        ("base_10m", 5e-5, 13000, 10000, 0.25, 0.1),
        ("base_1h", 5e-5, 13000, 10000, 0.25, 0.1),
        ("base_10h", 5e-5, 20000, 10000, 0.5, 0.05),
        ("base_100h", 3e-5, 80000, 0, 0.5, 0.1),
    ],
)
def test_finetune_recipes_match_fairseq(recipe, lr, updates, freeze, channel, layerdrop):
    cfg = to_run_config(_compose("finetune", [f"recipe={recipe}", "data.manifest_dir=/x"]))
    assert (cfg.optim.lr, cfg.optim.eps, cfg.trainer.max_updates, cfg.trainer.update_freq) == (
        lr,
        1e-8,
        updates,
        4,
    )
    assert cfg.schedule.name == "tri_stage" and cfg.schedule.phase_ratio == [0.1, 0.4, 0.5]
    assert cfg.schedule.final_lr_scale == 0.05
    assert cfg.finetune.freeze_finetune_updates == freeze
    assert (cfg.ctc.mask_time_prob, cfg.ctc.mask_channel_prob, cfg.ctc.mask_channel_length) == (
        0.65,
        channel,
        64,
    )
    assert (cfg.ctc.layerdrop, cfg.ctc.activation_dropout, cfg.ctc.feature_grad_mult) == (layerdrop, 0.1, 0.0)
    assert cfg.data.max_tokens == 3200000 and cfg.trainer.best_metric == "wer"


def test_demo_configs_compose_and_differ_from_tiny_only_where_documented():
    """scripts/demo.py's recipes: pretrain_demo = pretrain_tiny + pre-LN, 2 x 8 codes, lr 3e-3,
    slower τ decay; finetune_demo = finetune_tiny + light time masking, no channel masking,
    lr 2e-3."""
    tiny = to_run_config(_compose("pretrain_tiny", ["data.manifest_dir=/x"]))
    demo = to_run_config(_compose("pretrain_demo", ["data.manifest_dir=/x"]))
    m_tiny, m_demo = build_model_config(tiny.model), build_model_config(demo.model)
    assert m_demo == m_tiny.replace(
        layer_norm_first=True, contrastive={"num_codes_per_group": 8, "gumbel_temperature": (2.0, 0.5, 0.999)}
    )
    assert (tiny.optim.lr, demo.optim.lr) == (2e-3, 3e-3) and demo.schedule == tiny.schedule
    ft_tiny = to_run_config(_compose("finetune_tiny", ["data.manifest_dir=/x"]))
    ft_demo = to_run_config(_compose("finetune_demo", ["data.manifest_dir=/x"]))
    assert (ft_demo.ctc.mask_time_prob, ft_demo.ctc.mask_channel_prob, ft_demo.optim.lr) == (0.05, 0.0, 2e-3)
    assert ft_demo.trainer.best_metric == "cer"
    assert ft_demo.finetune == ft_tiny.finetune and ft_demo.schedule == ft_tiny.schedule


def test_overrides_reach_the_model_config_and_bad_values_name_the_key():
    cfg = to_run_config(
        _compose(
            "pretrain_tiny",
            [
                "data.manifest_dir=/x",
                "model.num_layers=2",
                "model.mask_time_prob=0.3",
                "trainer.max_updates=50",
            ],
        )
    )
    m = build_model_config(cfg.model)
    assert (m.num_layers, m.mask_time_prob, m.hidden_size, cfg.trainer.max_updates) == (2, 0.3, 256, 50)
    with pytest.raises(Exception, match="mask_time_prob"):
        build_model_config(
            to_run_config(
                _compose("pretrain_tiny", ["data.manifest_dir=/x", "model.mask_time_prob=1.5"])
            ).model
        )
    with pytest.raises(Exception, match="precision"):
        to_run_config(_compose("pretrain_tiny", ["data.manifest_dir=/x", "trainer.precision=fp8"]))


def test_per_part_lr_from_the_command_line_and_bad_values_name_the_key():
    from wav2vec2_lite.train.config import flatten_lr_scale

    assert to_run_config(_compose("finetune_tiny", ["data.manifest_dir=/x"])).optim.lr_scale == {}
    cfg = to_run_config(
        _compose(
            "finetune_tiny",
            ["data.manifest_dir=/x", "+optim.lr_scale.lm_head=4", "+optim.lr_scale.wav2vec2.context=0.5"],
        )
    )
    assert flatten_lr_scale(cfg.optim.lr_scale) == {"lm_head": 4, "wav2vec2.context": 0.5}
    cfg = to_run_config(_compose("finetune_tiny", ["data.manifest_dir=/x", "+optim.lr_scale={lm_head: 3}"]))
    assert flatten_lr_scale(cfg.optim.lr_scale) == {"lm_head": 3}
    for bad in ("0", "-1", "fast"):
        with pytest.raises(ValueError, match=r"optim.lr_scale.wav2vec2.context: a number > 0"):
            to_run_config(
                _compose("finetune_tiny", ["data.manifest_dir=/x", f"+optim.lr_scale.wav2vec2.context={bad}"])
            )


def test_cli_multirun_overrides_reach_the_saved_model(tmp_path):
    """`scripts/pretrain.py -m ...`: two jobs, each with its own run dir, overrides in the saved config."""
    corpus = make_toy_corpus(tmp_path / "toy", train=6, valid=2, seed=1)
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "pretrain.py"),
        "-m",
        "--config-name",
        "pretrain_tiny",
        f"data.manifest_dir={corpus}",
        "trainer.max_updates=1",
        "trainer.progress=false",
        "model.num_layers=1,2",
        "model.hidden_size=64",
        "model.num_heads=2",
        "model.ffn_dim=64",
        "model.conv_dim=[16,16,16,16,16,16,16]",
        "model.contrastive.num_codes_per_group=8",
        "model.contrastive.num_negatives=5",
        "data.max_sample_size=8000",
        "data.max_tokens=16000",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, layers in (("0", 1), ("1", 2)):
        run = tmp_path / "sweep" / job
        saved = json.loads((run / "checkpoints" / "last" / "config.json").read_text())
        cfg = saved.get("config", saved)
        assert (cfg["num_layers"], cfg["hidden_size"]) == (layers, 64)
        assert (run / "metrics.jsonl").is_file() and (run / "config.yaml").is_file()
        info = json.loads((run / "run.json").read_text())
        assert info["seed"] == 1 and info["code_version"]


def test_each_part_checks_its_own_keys_and_choices_name_the_valid_values():
    base = ["data.manifest_dir=/x"]
    for override, message in (
        ("data.mono=average", r"Invalid value 'average', expected one of \[error, mix\]"),
        ("trainer.best_mode=lowest", r"expected one of \[min, max\]"),
        ("data.max_unreadable_fraction=2", r"data.max_unreadable_fraction: in \[0, 1\]"),
        ("trainer.update_freq=0", r"trainer.update_freq: must be > 0"),
        ("optim.lr=0", r"optim.lr: must be > 0"),
        ("ctc.mask_time_prob=1.5", r"ctc.mask_time_prob: must be in \[0, 1\]"),
        ("data.validate=sometimes", r"data.validate: 'header', 'full' or false"),
    ):
        with pytest.raises(Exception) as e:
            to_run_config(_compose("finetune_tiny", base + [override]))
        chain = [str(e.value)] + (
            [str(e.value.__cause__)] if e.value.__cause__ else []
        )  # Hydra wraps OmegaConf's
        assert any(re.search(message, m) for m in chain), (override, chain)
        assert any(override.split("=")[0] in m for m in chain), (override, chain)  # the full key is named
    cfg = to_run_config(_compose("finetune_tiny", base + ["data.mono=mix", "trainer.precision=16-mixed"]))
    assert (
        cfg.data.mono == "mix" and cfg.trainer.precision == "fp16"
    )  # enums compare as strings; aliases resolved


def test_ctc_overrides_are_model_fields_applied_on_top_of_the_model():
    import dataclasses

    cfg = to_run_config(
        _compose("finetune_tiny", ["data.manifest_dir=/x", "model=tiny", "ctc.layerdrop=0.2"])
    )
    types = {f.name: f.type for f in dataclasses.fields(Wav2Vec2Config)}
    assert all(f.name in types for f in dataclasses.fields(cfg.ctc))  # no field of its own
    m = build_model_config(cfg.model, **dataclasses.asdict(cfg.ctc))
    assert (m.layerdrop, m.mask_time_prob, m.hidden_size) == (0.2, 0.3, 256)  # recipe=tiny's masking
    for typo in (
        "+ctc.num_layerz=2",
        "+trainer.max_update=5",
    ):  # not dropped silently: an error naming the key
        with pytest.raises(Exception, match=typo[1:].split("=")[0].replace(".", r"\.")):
            to_run_config(_compose("finetune_tiny", ["data.manifest_dir=/x", typo]))


def test_schedule_groups_switch_the_registered_schedule_and_its_keys():
    from wav2vec2_lite.train.schedules import Constant, Polynomial, TriStage

    pt = to_run_config(_compose("pretrain_tiny", ["data.manifest_dir=/x", "schedule.power=2.0"]))
    assert pt.schedule == Polynomial(warmup_updates=100, power=2.0)
    ft = to_run_config(
        _compose("finetune_tiny", ["data.manifest_dir=/x", "schedule.phase_ratio=[0.2,0.3,0.5]"])
    )
    assert isinstance(ft.schedule, TriStage) and ft.schedule.phase_ratio == [0.2, 0.3, 0.5]
    const = to_run_config(
        _compose("pretrain_tiny", ["data.manifest_dir=/x", "schedule=constant", "schedule.warmup_updates=7"])
    )
    assert const.schedule == Constant(warmup_updates=7)
    with pytest.raises(ValueError, match=r"schedule.end_lr: not a field of the 'constant' schedule"):
        to_run_config(_compose("pretrain_tiny", ["data.manifest_dir=/x", "schedule.name=constant"]))


def test_a_typed_config_round_trips_through_plain_containers():
    from wav2vec2_lite.train.config import config_container

    for name in ("pretrain_tiny", "finetune_tiny"):
        cfg = to_run_config(_compose(name, ["data.manifest_dir=/x", "data.mono=mix"]))
        plain = config_container(cfg)
        assert plain["data"]["mono"] == "mix" and type(plain["data"]["mono"]) is str  # weights_only-loadable
        assert to_run_config(plain) == cfg
