"""wav2vec 2.0 models: the backbone, the self-supervised pretraining model and the CTC model.

Data flows one way::

    wave (B, S) -> FeatureEncoder -> (B, C, T) -> FeatureProjection -> (B, T, D)
         -> span mask (mask embedding) -> ContextNetwork -> c_t (B, T, D)
    wave, features, c_t, mask -> objective -> loss                  (pretraining only)
    c_t -> nn.Linear -> CTC logits                                       (fine-tuning)

With ``contrastive.quantize_input`` the feature projection is a
:class:`~wav2vec2_lite.modules.input_quantizer.QuantizedFeatureProjection` (an input quantizer
and ``project_inp``): part of the backbone, so fine-tuning, probes and extraction keep it.

The pretraining objective (``config.objective``) is a module of its own
(:mod:`wav2vec2_lite.objectives`): ``contrastive`` (the paper's Gumbel quantizer, contrastive
+ diversity + feature penalty) or ``best_rq`` (frozen random-projection targets).

Conventions: right padding only; ``padding_mask`` (B, S) bool is True at padded samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from wav2vec2_lite.config import Wav2Vec2Config
from wav2vec2_lite.modules.context import ContextNetwork
from wav2vec2_lite.modules.feature_encoder import FeatureEncoder, FeatureProjection
from wav2vec2_lite.modules.input_quantizer import QuantizedFeatureProjection
from wav2vec2_lite.modules.quantizer import QuantizerOutput
from wav2vec2_lite.objectives.base import ObjectiveInputs
from wav2vec2_lite.objectives.losses import ctc_loss
from wav2vec2_lite.objectives.masking import compute_channel_mask, compute_span_mask
from wav2vec2_lite.objectives.registry import build_objective
from wav2vec2_lite.outputs import CTCOutput, PreTrainingOutput, Wav2Vec2ModelOutput
from wav2vec2_lite.serialization import register_model_class, save_model

__all__ = [
    "BackboneOutput",
    "Wav2Vec2Model",
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2ForCTC",
    "backbone_of",
    "with_config_overrides",
]


_checkpoint_reader: Callable[..., Any] | None = None


def register_checkpoint_reader(reader: Callable[..., Any]) -> None:
    """Install the function ``from_pretrained`` reads checkpoints with: ``reader(path, trust=...)``
    returns an object with ``.model``, ``.backbone`` and ``.source`` (``interop.sources.load_any``,
    which registers itself when the package is imported; the models do not import interop)."""
    global _checkpoint_reader
    _checkpoint_reader = reader


def _read_checkpoint(path_or_name: str | Path, trust: bool = False) -> Any:
    if _checkpoint_reader is None:  # only if the package's __init__ was bypassed
        raise RuntimeError("no checkpoint reader registered: import wav2vec2_lite first")
    return _checkpoint_reader(path_or_name, trust=trust)


class _SavedModelMixin:
    """``from_pretrained`` / ``save_pretrained`` in the style users know from transformers."""

    config: Wav2Vec2Config

    def save_pretrained(self, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write ``model.safetensors``, ``config.json`` and ``checksums.json`` (every file's sha256) to
        ``directory``."""
        return save_model(self, directory, metadata)

    @classmethod
    def from_pretrained(cls, path_or_name: str | Path, *, trust: bool = False, **overrides: Any):
        """This class from any checkpoint :func:`wav2vec2_lite.interop.sources.detect` accepts: our
        run/model folders, Hugging Face folders, fairseq ``.pt`` files, shipped names.

        ``Wav2Vec2Model`` takes the backbone of any of them; ``Wav2Vec2ForCTC`` from a model without
        a CTC head (or with ``vocab_size`` other than its head's) is :meth:`Wav2Vec2ForCTC.from_pretraining`
        and needs ``vocab_size``; ``Wav2Vec2ForPreTraining`` needs a pretraining checkpoint.
        ``overrides`` change config fields; ``trust`` is for fairseq files that need full pickle.
        Returned in eval mode.
        """
        return cls._from_checkpoint(_read_checkpoint(path_or_name, trust=trust), overrides)

    @classmethod
    def _from_checkpoint(cls, loaded: Any, overrides: dict[str, Any]) -> nn.Module:
        """This class from what the checkpoint reader returned (``.model``, ``.backbone``, ``.source``)."""
        raise NotImplementedError

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each transformer block in the backward pass instead of keeping its
        activations (less memory, about a third more compute)."""
        backbone_of(self).context.gradient_checkpointing = True


def with_config_overrides(model: nn.Module, overrides: dict[str, Any]) -> nn.Module:
    """``model``, or the same weights in a model whose config has ``overrides`` applied; eval mode."""
    if overrides:
        new = type(model)(model.config.replace(**overrides))
        new.load_state_dict(model.state_dict(), strict=True)
        model = new
    return model.eval()


def _check_inputs(waveform: Tensor, padding_mask: Tensor | None, receptive_field: int) -> Tensor | None:
    """Validate shapes and right padding; return valid samples per utterance (or None)."""
    if waveform.dim() != 2:
        raise ValueError(
            f"waveform must be (batch, samples); got shape {tuple(waveform.shape)}"
            + (" (use waveform[None] for a single utterance)" if waveform.dim() == 1 else "")
        )
    if not waveform.is_floating_point():
        raise ValueError(f"waveform must be a float tensor; got {waveform.dtype}")
    lengths = None
    if padding_mask is not None:
        if padding_mask.shape != waveform.shape or padding_mask.dtype != torch.bool:
            raise ValueError(
                f"padding_mask must be a bool tensor shaped like waveform {tuple(waveform.shape)}; "
                f"got {padding_mask.dtype} {tuple(padding_mask.shape)} (True = padded sample)"
            )
        if (
            (padding_mask[:, 1:].long() - padding_mask[:, :-1].long()).min() < 0
            if padding_mask.shape[1] > 1
            else False
        ):
            raise ValueError("padding_mask must be right padding: True only after the last valid sample")
        lengths = (~padding_mask).sum(-1)
    shortest = int(lengths.min()) if lengths is not None else waveform.shape[1]
    if shortest < receptive_field:
        raise ValueError(
            f"an utterance has {shortest} samples, fewer than the feature encoder's receptive field "
            f"({receptive_field} samples = {receptive_field / 16:.0f} ms at 16 kHz); "
            f"drop or pad it before batching"
        )
    return lengths


def _init_transformer(module: nn.Module) -> None:
    """BERT-style init of the context network (fairseq ``init_bert_params``)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@dataclass
class BackboneOutput(Wav2Vec2ModelOutput):
    """What the backbone returns: :class:`Wav2Vec2ModelOutput` and, with ``quantize_input``, the
    input quantizer's output, which the contrastive objective's diversity loss and codes need."""

    input_quantization: QuantizerOutput | None = None
    """The input quantizer over all B·T frames (padded ones too); None without ``quantize_input``."""


@register_model_class
class Wav2Vec2Model(_SavedModelMixin, nn.Module):
    """The backbone: wave -> context vectors. ``(B, S) -> BackboneOutput`` (a ``Wav2Vec2ModelOutput``)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.feature_encoder = FeatureEncoder(config)
        quantized = config.contrastive.quantize_input  # part of the backbone (fairseq quantize_input)
        self.feature_projection: FeatureProjection | QuantizedFeatureProjection = (
            QuantizedFeatureProjection(config) if quantized else FeatureProjection(config)
        )
        self.mask_emb = nn.Parameter(torch.empty(config.hidden_size).uniform_())
        self.context = ContextNetwork(config)
        _init_transformer(self.context)
        for layer in self.feature_encoder.conv_layers:
            nn.init.kaiming_normal_(layer.conv.weight)

    @classmethod
    def _from_checkpoint(cls, loaded: Any, overrides: dict[str, Any]) -> nn.Module:
        return with_config_overrides(loaded.backbone, overrides)  # the backbone of any checkpoint

    def feature_output_lengths(self, lengths: Tensor) -> Tensor:
        """Samples -> frames (floor((L - k) / s) + 1 per conv layer)."""
        return self.feature_encoder.output_lengths(lengths)

    @property
    def input_quantizer(self) -> nn.Module | None:
        """The Gumbel quantizer of the transformer's input (``quantize_input``), else None."""
        proj = self.feature_projection
        return proj.quantizer if isinstance(proj, QuantizedFeatureProjection) else None

    def forward(
        self,
        waveform: Tensor,
        padding_mask: Tensor | None = None,
        mask_indices: Tensor | None = None,
        *,
        sample_mask: bool | None = None,
        generator: torch.Generator | None = None,
        output_hidden_states: bool = False,
    ) -> BackboneOutput:
        """waveform (B, S) float; padding_mask (B, S) bool True = padded; mask_indices (B, T) bool.

        Without ``mask_indices``, spans are sampled when ``sample_mask`` is True (default: in
        training when ``mask_time_prob > 0``, SpecAugment-style). Channel masking applies in
        training when ``mask_channel_prob > 0``. ``generator`` also draws the input quantizer's
        Gumbel noise in training (``quantize_input``).
        """
        cfg = self.config
        lengths = _check_inputs(waveform, padding_mask, cfg.receptive_field)
        conv = self.feature_encoder(waveform, lengths)  # (B, C, T)
        batch, frames = conv.shape[0], conv.shape[2]
        if lengths is None:
            frame_lengths = torch.full((batch,), frames, dtype=torch.long, device=conv.device)
            frame_padding = None
        else:
            frame_lengths = self.feature_output_lengths(lengths)
            frame_padding = torch.arange(frames, device=conv.device)[None, :] >= frame_lengths[:, None]
            if not frame_padding.any():
                frame_padding = None
        input_quantization = None
        if isinstance(self.feature_projection, QuantizedFeatureProjection):  # before masking, as fairseq
            hidden, normed, input_quantization = self.feature_projection(conv.transpose(1, 2), generator)
        else:
            hidden, normed = self.feature_projection(conv.transpose(1, 2))

        if sample_mask is None:
            sample_mask = self.training and cfg.mask_time_prob > 0
        if mask_indices is None and sample_mask:
            mask_indices = compute_span_mask(
                batch,
                frames,
                cfg.mask_time_prob,
                cfg.mask_time_length,
                lengths=frame_lengths.cpu(),
                min_masks=cfg.mask_time_min_masks,
                generator=generator,
            ).to(hidden.device)
        if mask_indices is not None:
            if mask_indices.shape != (batch, frames):
                raise ValueError(
                    f"mask_indices must be (batch, frames) = ({batch}, {frames}); "
                    f"got {tuple(mask_indices.shape)}"
                )
            mask_indices = mask_indices.to(device=hidden.device, dtype=torch.bool)
            if frame_padding is not None:
                mask_indices = mask_indices & ~frame_padding
            hidden = torch.where(mask_indices[..., None], self.mask_emb.to(hidden.dtype), hidden)
        if self.training and cfg.mask_channel_prob > 0:
            channels = compute_channel_mask(
                batch, hidden.shape[-1], cfg.mask_channel_prob, cfg.mask_channel_length, generator=generator
            ).to(hidden.device)
            hidden = hidden.masked_fill(channels[:, None, :], 0.0)

        context, hidden_states = self.context(hidden, frame_padding, output_hidden_states)
        return BackboneOutput(
            last_hidden_state=context,
            extract_features=normed,
            conv_features=conv,
            frame_lengths=frame_lengths,
            padding_mask=frame_padding,
            mask_indices=mask_indices,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            input_quantization=input_quantization,
        )


@register_model_class
class Wav2Vec2ForPreTraining(_SavedModelMixin, nn.Module):
    """Self-supervised pretraining: the backbone plus the objective ``config.objective`` names.

    ``self.objective`` owns every target-side part (contrastive: ``quantizer``,
    ``project_q``, ``final_proj``; best_rq: the frozen random-projection quantizer and the
    prediction head), saved under ``objective.``. ``model.quantizer`` is an alias of
    ``model.objective.quantizer`` (None for contrastive with continuous targets);
    objective-specific controls live on the objective (the Gumbel temperature:
    ``model.objective.temperature_at(update)``, ``set_temperature(t)``). With
    ``contrastive.quantize_input`` the backbone's input quantizer is handed to the objective,
    which anneals it; with ``same_quantizer`` it is also the target quantizer (one module, saved
    under both names).
    """

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config)
        self.objective = build_objective(config)
        input_quantizer = self.wav2vec2.input_quantizer
        if input_quantizer is not None:  # quantize_input: the config requires the contrastive objective
            self.objective.use_input_quantizer(input_quantizer)

    # ----------------------------------------------------------------- helpers
    def feature_output_lengths(self, lengths: Tensor) -> Tensor:
        return self.wav2vec2.feature_output_lengths(lengths)

    @property
    def quantizer(self) -> nn.Module | None:
        """The objective's quantizer (contrastive: Gumbel, learned, None with continuous targets;
        best_rq: random projection, frozen)."""
        return self.objective.quantizer

    @classmethod
    def _from_checkpoint(cls, loaded: Any, overrides: dict[str, Any]) -> nn.Module:
        if not isinstance(loaded.model, cls):
            raise TypeError(
                f"{loaded.source}: holds a {type(loaded.model).__name__}, which has no pretraining "
                f"objective; load it as Wav2Vec2Model or Wav2Vec2ForCTC"
            )
        return with_config_overrides(loaded.model, overrides)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        waveform: Tensor,
        padding_mask: Tensor | None = None,
        mask_indices: Tensor | None = None,
        negative_indices: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        output_hidden_states: bool = False,
    ) -> PreTrainingOutput:
        """waveform (B, S); padding_mask (B, S) True = padded; mask_indices (B, T) bool;
        negative_indices (B, T, K) long frame indices inside the same utterance (contrastive
        only; entries at unmasked positions are ignored). Masks and distractors are sampled
        from ``generator`` when not given (in eval mode too, so validation has a loss).
        """
        out = self.wav2vec2(
            waveform,
            padding_mask,
            mask_indices,
            sample_mask=True,
            generator=generator,
            output_hidden_states=output_hidden_states,
        )
        features = ObjectiveInputs(
            waveform=waveform,
            sample_padding=padding_mask,
            conv_features=out.conv_features,
            extract_features=out.extract_features,
            context=out.last_hidden_state,
            mask_indices=out.mask_indices,
            frame_padding=out.padding_mask,
            frame_lengths=out.frame_lengths,
            input_quantization=out.input_quantization,
        )
        targets = self.objective.targets(features, generator=generator, negative_indices=negative_indices)
        result = self.objective.predict(features, targets)  # predict the masked targets
        return PreTrainingOutput.from_objective(result, out)


@register_model_class
class Wav2Vec2ForCTC(_SavedModelMixin, nn.Module):
    """Fine-tuning model: backbone + linear CTC head over characters (blank = index 0)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        nn.init.normal_(self.lm_head.weight, std=1.0 / math.sqrt(config.hidden_size))
        nn.init.zeros_(self.lm_head.bias)
        self._encoder_frozen = False

    def feature_output_lengths(self, lengths: Tensor) -> Tensor:
        return self.wav2vec2.feature_output_lengths(lengths)

    @classmethod
    def _from_checkpoint(cls, loaded: Any, overrides: dict[str, Any]) -> nn.Module:
        """The checkpoint's CTC model when its head fits ``vocab_size``, else a new head on its backbone."""
        vocab_size = overrides.pop("vocab_size", None)
        if isinstance(loaded.model, cls) and vocab_size in (None, loaded.model.config.vocab_size):
            return with_config_overrides(loaded.model, overrides)
        if vocab_size is None:
            raise ValueError(
                f"{loaded.source}: holds a {type(loaded.model).__name__} (no CTC head to reuse); "
                f"give vocab_size= for the new head"
            )
        return cls.from_pretraining(loaded.model, vocab_size=vocab_size, **overrides).eval()

    @classmethod
    def from_pretraining(
        cls, source: "Wav2Vec2ForPreTraining | Wav2Vec2Model | str | Path", vocab_size: int, **overrides: Any
    ) -> "Wav2Vec2ForCTC":
        """A CTC model with a new head over ``vocab_size`` symbols and a pretrained model's backbone
        (an instance, or any checkpoint :func:`wav2vec2_lite.interop.sources.detect` accepts: our
        folders, Hugging Face folders, fairseq ``.pt`` files, shipped names).

        ``overrides`` change config fields for fine-tuning (e.g. ``mask_time_prob=0.65``,
        ``mask_channel_prob=0.25``, ``layerdrop=0.1``); the objective (quantizer, heads) is dropped,
        an input quantizer (``contrastive.quantize_input``) is part of the backbone and kept.
        """
        if isinstance(source, (str, Path)):
            source = _read_checkpoint(source).backbone
        backbone = source.wav2vec2 if hasattr(source, "wav2vec2") else source
        if not isinstance(backbone, Wav2Vec2Model):
            raise TypeError(
                f"expected a wav2vec2_lite pretraining model or backbone; got {type(source).__name__}"
            )
        config = backbone.config.replace(vocab_size=vocab_size, **overrides)
        model = cls(config)
        model.wav2vec2.load_state_dict(backbone.state_dict(), strict=True)
        return model

    # ------------------------------------------------------------ freezing
    def freeze_feature_encoder(self) -> None:
        """Freeze the conv feature encoder (fine-tuning recipe); it then runs without autograd."""
        fe = self.wav2vec2.feature_encoder
        for p in fe.parameters():
            p.requires_grad_(False)
        fe.grad_mult = 0.0

    def unfreeze_feature_encoder(self) -> None:
        fe = self.wav2vec2.feature_encoder
        for p in fe.parameters():
            p.requires_grad_(True)
        fe.grad_mult = self.config.feature_grad_mult if self.config.feature_grad_mult > 0 else 1.0

    def set_encoder_frozen(self, frozen: bool) -> None:
        """Train only the CTC head (True) — fairseq's first ``freeze_finetune_updates`` updates.

        The backbone then runs under ``torch.no_grad``; its parameters keep their
        ``requires_grad`` so an optimizer built over them stays valid.
        """
        self._encoder_frozen = bool(frozen)

    # ------------------------------------------------------------- forward
    def forward(
        self,
        waveform: Tensor,
        padding_mask: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        mask_indices: Tensor | None = None,
        generator: torch.Generator | None = None,
        output_hidden_states: bool = False,
    ) -> CTCOutput:
        """waveform (B, S); padding_mask (B, S) True = padded; labels (B, L) long padded with -100."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._encoder_frozen):
            out = self.wav2vec2(
                waveform,
                padding_mask,
                mask_indices,
                generator=generator,
                output_hidden_states=output_hidden_states,
            )
        logits = self.lm_head(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            if labels.max() >= self.config.vocab_size:
                raise ValueError(
                    f"labels contain id {int(labels.max())} >= vocab_size {self.config.vocab_size}"
                )
            loss = ctc_loss(
                logits,
                out.frame_lengths,
                labels,
                blank=0,
                reduction=self.config.ctc_loss_reduction,
                zero_infinity=self.config.ctc_zero_infinity,
            )
        return CTCOutput(
            logits=logits, output_lengths=out.frame_lengths, loss=loss, hidden_states=out.hidden_states
        )


def backbone_of(model: nn.Module) -> Wav2Vec2Model:
    """The :class:`Wav2Vec2Model` inside a pretraining or CTC model (or the backbone itself)."""
    backbone = getattr(model, "wav2vec2", model)
    if not isinstance(backbone, Wav2Vec2Model):
        raise TypeError(f"expected a wav2vec2_lite model or backbone; got {type(model).__name__}")
    return backbone
