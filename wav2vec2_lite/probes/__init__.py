"""Frozen-feature probes: a linear CTC probe over letters on every layer of a model.

What a layer's frames encode about the letters, without fine-tuning: for the conv features
and every transformer layer of (a) a checkpoint, (b) the same architecture at random init
and (c) the log-mel front end, a linear CTC probe is trained under one fixed
:class:`ProbeProtocol` and scored by greedy-decoding CER on a held-out split (or PER over
phonemes, ``labels="phn"``, with labels from :mod:`wav2vec2_lite.probes.phonemes`). See
``docs/probes.md``; the CLI is ``w2v2-probe``.
"""

from wav2vec2_lite.probes.features import (
    FrameFeatures,
    extract_layer_features,
    layer_names,
    log_mel_features,
)
from wav2vec2_lite.probes.linear_ctc import ProbeResult, train_ctc_probe
from wav2vec2_lite.probes.protocol import ProbeError, ProbeProtocol
from wav2vec2_lite.probes.report import LayerScore, ModelProbes, ProbeReport
from wav2vec2_lite.probes.run import (
    LabelledSplit,
    load_backbone,
    load_split,
    run_probes,
)

__all__ = [
    "FrameFeatures",
    "LabelledSplit",
    "LayerScore",
    "ModelProbes",
    "ProbeError",
    "ProbeProtocol",
    "ProbeReport",
    "ProbeResult",
    "extract_layer_features",
    "layer_names",
    "load_backbone",
    "load_split",
    "log_mel_features",
    "run_probes",
    "train_ctc_probe",
]
