"""TensorBoard logging (the ``tensorboard`` extra): the scalars of metrics.jsonl, by kind, per update."""

from __future__ import annotations

import json
import sys

import pytest

from wav2vec2_lite.train.logging import MetricsLogger


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path, tensorboard=True, progress=False)
    for update in (10, 20, 30):
        logger.log(
            "train", update, {"loss": 5.0 - update / 10, "accuracy": update / 100, "note": "text"}, epoch=0
        )
    logger.log("valid", 30, {"loss": 3.25})
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == [
        "train/accuracy",
        "train/loss",
        "valid/loss",
    ]  # no time, no text
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for tag in ("train/loss", "train/accuracy", "valid/loss"):
        kind, key = tag.split("/")
        expected = [(r["update"], r[key]) for r in rows if r["kind"] == kind]
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in expected]
        assert all(v == pytest.approx(x, rel=1e-6) for (_, v), (_, x) in zip(got, expected))


def test_without_tensorboard_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(RuntimeError, match=r"needs the `tensorboard` package .*trainer.tensorboard=false"):
        MetricsLogger(tmp_path, tensorboard=True, progress=False)
