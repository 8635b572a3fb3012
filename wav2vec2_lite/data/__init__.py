"""Data pipeline: manifests, audio I/O, dataset, bucketing sampler, collate, tokenizer, validation.

Flow: ``build_manifests`` -> ``validate_dataset`` -> ``AudioDataset`` ->
``BucketBatchSampler(ds.sizes, max_tokens=...)`` -> ``collate`` -> model. For training,
``pipeline.TrainingData`` builds all of it from a ``config.DataConfig`` (the ``data`` group).
"""

from wav2vec2_lite.data.audio import AudioError, audio_info, load_audio, normalize
from wav2vec2_lite.data.collate import LABEL_PAD, collate
from wav2vec2_lite.data.dataset import AudioDataset, DatasetError
from wav2vec2_lite.data.manifest import (
    Manifest,
    ManifestError,
    build_manifests,
    count_symbols,
    ltr_to_text,
    read_dictionary,
    read_labels,
    read_manifest,
    text_to_ltr,
    write_dictionary,
    write_labels,
    write_manifest,
)
from wav2vec2_lite.data.sampler import BucketBatchSampler, SamplerError
from wav2vec2_lite.data.tokenizer import CharTokenizer, TokenizerError
from wav2vec2_lite.data.validate import Problem, ValidationReport, validate_dataset

__all__ = [
    "AudioDataset",
    "AudioError",
    "BucketBatchSampler",
    "CharTokenizer",
    "DatasetError",
    "LABEL_PAD",
    "Manifest",
    "ManifestError",
    "Problem",
    "SamplerError",
    "TokenizerError",
    "ValidationReport",
    "audio_info",
    "build_manifests",
    "collate",
    "count_symbols",
    "load_audio",
    "ltr_to_text",
    "normalize",
    "read_dictionary",
    "read_labels",
    "read_manifest",
    "text_to_ltr",
    "validate_dataset",
    "write_dictionary",
    "write_labels",
    "write_manifest",
]
