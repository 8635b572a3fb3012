"""Each pretraining objective's own typed settings, chosen by ``Wav2Vec2Config.objective``.

The model config holds one sub-config per objective (``contrastive``, ``best_rq``), always
present, so every setting is a typed field OmegaConf and Hydra can check and override
(``model.contrastive.num_negatives=50``, ``model.best_rq.codebook_size=4096``); only the one
``objective`` names is used. This module imports neither torch nor the objectives, so the
model config can hold these without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "ContrastiveConfig",
    "BestRQConfig",
    "OBJECTIVE_CONFIGS",
    "MOVED_KEYS",
    "NORMALIZATIONS",
    "moved_key",
    "migrate_override",
]

NORMALIZATIONS = ("global", "utterance")


def _need(cond: bool, owner: str, key: str, value: Any, msg: str) -> None:
    if not cond:
        raise ValueError(f"{owner}.{key}: {msg} (got {value!r})")


@dataclass(kw_only=True)
class ContrastiveConfig:
    """wav2vec 2.0's objective (§3.2): Gumbel product quantizer, distractors, loss weights
    (defaults = BASE as released by fairseq), and what is quantized (Table 5: inputs and/or
    targets; ``docs/objectives.md``)."""

    num_code_groups: int = 2
    """G, codebooks (fairseq ``latent_groups``)."""
    num_codes_per_group: int = 320
    """V, entries per codebook (fairseq ``latent_vars``)."""
    codevector_dim: int = 256
    """Width of the concatenated codevector (fairseq ``latent_dim`` or ``final_dim``); each
    entry has ``codevector_dim // G`` dims."""
    final_dim: int = 256
    """Width of the space where context vectors and quantized targets are compared."""
    gumbel_temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)
    """(max, min, decay per update): temperature = max(max * decay**update, min)."""
    dropout_features: float = 0.1
    """Dropout on the unmasked features fed to the quantizer (fairseq ``dropout_features``)."""
    num_negatives: int = 100
    """K, distractors per masked frame, drawn from the same utterance's masked frames."""
    cross_sample_negatives: int = 0
    """Extra distractors drawn from the other utterances of the batch."""
    logit_temperature: float = 0.1
    """κ, cosine similarities are divided by it."""
    diversity_loss_weight: float = 0.1
    """α, weight of the codebook diversity loss."""
    feature_penalty_weight: float = 10.0
    """Weight of the L2 penalty on the feature encoder output (0 for LARGE)."""
    quantize_targets: bool = True
    """Targets are the Gumbel quantizer's codevectors (the paper); False: the unmasked
    continuous features, projected by ``project_q`` (no target codebook, fairseq
    ``quantize_targets``; the paper's Table 5)."""
    quantize_input: bool = False
    """The context network sees quantized features: an input quantizer and ``project_inp``
    replace the feature projection, before masking and in every forward (part of the backbone,
    kept by fine-tuning; fairseq ``quantize_input``)."""
    same_quantizer: bool = False
    """With both quantize_* on: the input quantizer is the target quantizer (one codebook;
    needs ``codevector_dim == final_dim``, fairseq's rule; fairseq ``same_quantizer``)."""
    input_codevector_dim: int = 0
    """Width of a separate input quantizer's codevectors; 0: ``hidden_size`` (fairseq:
    ``latent_dim`` if set, else ``encoder_embed_dim``). Unused without quantize_input or
    with same_quantizer."""

    def __post_init__(self) -> None:
        if isinstance(self.gumbel_temperature, list):
            self.gumbel_temperature = tuple(self.gumbel_temperature)

    def validate(self) -> ContrastiveConfig:
        """Raise ``ValueError`` naming the first bad key; returns itself."""
        owner = "contrastive"
        for key in ("num_code_groups", "num_codes_per_group", "codevector_dim", "final_dim"):
            v = getattr(self, key)
            _need(isinstance(v, int) and v > 0, owner, key, v, "must be a positive int")
        _need(
            self.codevector_dim % self.num_code_groups == 0,
            owner,
            "codevector_dim",
            self.codevector_dim,
            f"must be divisible by num_code_groups={self.num_code_groups}",
        )
        _need(
            0.0 <= self.dropout_features <= 1.0,
            owner,
            "dropout_features",
            self.dropout_features,
            "must be in [0, 1]",
        )
        _need(
            self.num_negatives >= 0 and self.cross_sample_negatives >= 0,
            owner,
            "num_negatives",
            self.num_negatives,
            "num_negatives and cross_sample_negatives must be >= 0",
        )
        _need(
            self.num_negatives + self.cross_sample_negatives > 0,
            owner,
            "num_negatives",
            self.num_negatives,
            "needs at least one distractor (num_negatives + cross_sample_negatives > 0)",
        )
        _need(self.logit_temperature > 0, owner, "logit_temperature", self.logit_temperature, "must be > 0")
        _need(
            self.diversity_loss_weight >= 0,
            owner,
            "diversity_loss_weight",
            self.diversity_loss_weight,
            "must be >= 0",
        )
        _need(
            self.feature_penalty_weight >= 0,
            owner,
            "feature_penalty_weight",
            self.feature_penalty_weight,
            "must be >= 0",
        )
        t = self.gumbel_temperature
        _need(
            len(t) == 3 and t[0] >= t[1] > 0 and 0 < t[2] <= 1,
            owner,
            "gumbel_temperature",
            t,
            "must be (max, min, decay) with max >= min > 0 and 0 < decay <= 1",
        )
        self._validate_quantization(owner)
        return self

    def _validate_quantization(self, owner: str) -> None:
        """The Table 5 switches: same_quantizer needs both quantizers and fairseq's width rule."""
        for key in ("quantize_targets", "quantize_input", "same_quantizer"):
            v = getattr(self, key)
            _need(isinstance(v, bool), owner, key, v, "must be true or false")
        v = self.input_codevector_dim
        _need(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            owner,
            "input_codevector_dim",
            v,
            "must be an int >= 0 (0: hidden_size)",
        )
        _need(
            v % self.num_code_groups == 0,
            owner,
            "input_codevector_dim",
            v,
            f"must be divisible by num_code_groups={self.num_code_groups}",
        )
        if self.same_quantizer:
            _need(
                self.quantize_targets and self.quantize_input,
                owner,
                "same_quantizer",
                self.same_quantizer,
                f"shares the target quantizer with the input: needs quantize_targets=true and "
                f"quantize_input=true (they are {self.quantize_targets} and {self.quantize_input})",
            )
            _need(
                self.codevector_dim == self.final_dim,
                owner,
                "codevector_dim",
                self.codevector_dim,
                f"must equal final_dim={self.final_dim} with same_quantizer (fairseq sizes project_inp "
                "by final_dim for the shared quantizer)",
            )
            _need(v == 0, owner, "input_codevector_dim", v, "is unused with same_quantizer: leave it 0")


@dataclass(kw_only=True)
class BestRQConfig:
    """BEST-RQ (Chiu et al. 2022): a frozen random-projection quantizer of log-mel frames
    (defaults = the paper and SpeechBrain's ``BEST-RQ.yaml``)."""

    codebook_size: int = 8192
    """V, entries of the frozen codebook (the paper and SpeechBrain: 8192)."""
    codebook_dim: int = 16
    """d, width of the projection and of each codebook entry (the paper: 16)."""
    num_mel_bins: int = 80
    """Mel bins of the log-mel front end (the paper: 80)."""
    seed: int = 0
    """Seed of the generator that draws the frozen projection and codebook."""
    normalization: str = "global"
    """``global``: per-dimension mean/std estimated on the first ``normalization_frames``
    training frames, then frozen buffers; ``utterance``: each utterance normalised by its
    own frames (SpeechBrain's recipe)."""
    normalization_frames: int = 2000
    """``global``: valid encoder frames (20 ms each; 2000 = 40 s of audio) the statistics are
    estimated on before they freeze."""

    def validate(self) -> BestRQConfig:
        """Raise ``ValueError`` naming the first bad key; returns itself."""
        owner = "best_rq"
        _need(
            self.normalization in NORMALIZATIONS,
            owner,
            "normalization",
            self.normalization,
            f"must be one of {list(NORMALIZATIONS)}",
        )
        for f in fields(self):
            if f.name == "normalization":
                continue
            v, low = getattr(self, f.name), 0 if f.name == "seed" else 1
            _need(
                isinstance(v, int) and not isinstance(v, bool) and v >= low,
                owner,
                f.name,
                v,
                f"must be a {'non-negative' if low == 0 else 'positive'} int",
            )
        _need(self.codebook_size >= 2, owner, "codebook_size", self.codebook_size, "must be >= 2")
        return self


OBJECTIVE_CONFIGS: dict[str, type | None] = {"contrastive": ContrastiveConfig, "best_rq": BestRQConfig}
"""The valid ``Wav2Vec2Config.objective`` names -> each one's config class (``Wav2Vec2Config`` has a
field of that name holding it), or None for an objective without settings."""

MOVED_KEYS: dict[str, str] = {
    **{f.name: f"contrastive.{f.name}" for f in fields(ContrastiveConfig)},
    "objective_options": "best_rq",
}
"""Keys that were flat ``Wav2Vec2Config`` fields before the objectives owned their settings
(``format_version`` 2 and earlier) -> where they live now."""


def moved_key(key: str) -> str | None:
    """Where a model key (or node) that moved into an objective's sub-config lives now
    (``model.num_negatives`` -> ``model.contrastive.num_negatives``,
    ``model.objective_options.seed`` -> ``model.best_rq.seed``); None for any other key."""
    head, _, rest = key.removeprefix("model.").partition(".")
    if not key.startswith("model.") or head not in MOVED_KEYS:
        return None
    return f"model.{MOVED_KEYS[head]}{'.' + rest if rest else ''}"


def migrate_override(arg: str) -> str:
    """A recorded command-line override in today's keys: a model key that moved into an objective's
    sub-config gets its new place (``model.num_negatives=5`` -> ``model.contrastive.num_negatives=5``,
    ``+model.objective_options={...}`` -> ``model.best_rq={...}``); anything else is returned as it is.
    For commands recorded by earlier versions (provenance); a user's old key is refused, named."""
    key, eq, value = arg.partition("=")
    new = moved_key(key.lstrip("+~")) if eq else None
    return arg if new is None else f"{new}={value}"  # the key exists now: no '+'
