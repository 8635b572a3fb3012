"""Batch ``AudioDataset`` items: right-pad (with a padding mask) or crop to the shortest."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from wav2vec2_lite.data.dataset import is_skipped

__all__ = ["collate", "pad_labels", "LABEL_PAD", "SeededCollate", "derive_seed"]

LABEL_PAD = -100  # ignored by the CTC loss wrapper and by CrossEntropyLoss


def pad_labels(labels: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Label sequences -> ``(B, L)`` long padded with ``LABEL_PAD`` and their ``(B,)`` lengths."""
    rows = [torch.as_tensor(lab, dtype=torch.long) for lab in labels]
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    padded = torch.full((len(rows), int(lengths.max())), LABEL_PAD, dtype=torch.long)
    for b, r in enumerate(rows):
        padded[b, : len(r)] = r
    return padded, lengths


def collate(
    items: Sequence[dict[str, Any]],
    *,
    crop_to_shortest: bool = False,
    pad_multiple: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Stack items into a batch.

    Returns:
        waveform: (B, S) float32, right-padded with zeros.
        padding_mask: (B, S) bool, True = padded sample; None when nothing is padded.
        lengths: (B,) long, valid samples per row.
        ids: (B,) long.
        labels: (B, L) long padded with -100, label_lengths: (B,) long (when items have labels).
        texts: list[str] (when items have text).

    ``crop_to_shortest=True`` is fairseq's pretraining default (``pad=False``): every wave is
    cropped to the batch's shortest at a random offset drawn from ``generator``, so nothing
    is padded. ``pad_multiple`` rounds S up to a multiple (padding mode only).
    """
    if not items:
        raise ValueError("collate got an empty batch")
    if crop_to_shortest and pad_multiple is not None:
        raise ValueError("pad_multiple pads; crop_to_shortest never pads: pass only one of them")
    if pad_multiple is not None and pad_multiple <= 0:
        raise ValueError(f"pad_multiple must be > 0, found {pad_multiple}")
    waves = [it["waveform"] for it in items]
    for it, w in zip(items, waves):
        if w.dim() != 1:
            raise ValueError(f"item {it.get('id')}: waveform must be 1-D (S,), found shape {tuple(w.shape)}")
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    B = len(items)

    if crop_to_shortest:
        S = int(lengths.min())
        out = torch.empty(B, S, dtype=torch.float32)
        for b, w in enumerate(waves):
            diff = len(w) - S
            start = int(torch.randint(0, diff + 1, (1,), generator=generator)) if diff > 0 else 0
            out[b] = w[start : start + S]
        lengths = torch.full((B,), S, dtype=torch.long)
        padding_mask = None
    else:
        S = int(lengths.max())
        if pad_multiple is not None:
            S = -(-S // pad_multiple) * pad_multiple
        out = torch.zeros(B, S, dtype=torch.float32)
        for b, w in enumerate(waves):
            out[b, : len(w)] = w
        padding_mask = torch.arange(S)[None, :] >= lengths[:, None]  # (B, S)
        if not padding_mask.any():
            padding_mask = None

    batch: dict[str, Any] = {
        "waveform": out,
        "padding_mask": padding_mask,
        "lengths": lengths,
        "ids": torch.tensor([int(it["id"]) for it in items], dtype=torch.long),
    }

    has_labels = ["labels" in it for it in items]
    if any(has_labels):
        if not all(has_labels):
            raise ValueError(
                "some items have labels and some do not; batch labelled and unlabelled data apart"
            )
        batch["labels"], batch["label_lengths"] = pad_labels([it["labels"] for it in items])
    if all("text" in it for it in items):
        batch["texts"] = [it["text"] for it in items]
    return batch


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy SeedSequence)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SeededCollate:
    """Picklable :func:`collate` whose crop offsets depend only on (seed, epoch, utterance ids).

    Items the dataset could not read (``is_skipped``) are left out and listed in the batch's
    ``skipped`` (``[{"id", "path", "reason"}]``); a batch of only such items has no ``waveform``.
    Silent or clipped items (``level_warnings``) are listed in ``warned`` (``[{"id", "path", "warnings"}]``).
    """

    def __init__(self, crop_to_shortest: bool, seed: int) -> None:
        self.crop_to_shortest, self.seed, self.epoch = crop_to_shortest, seed, 0

    def __call__(self, items: list[dict]) -> dict:
        skipped = [
            {"id": int(i["id"]), "path": i["path"], "reason": i["error"]} for i in items if is_skipped(i)
        ]
        items = [i for i in items if not is_skipped(i)]
        if not items:
            return {"skipped": skipped}
        gen = None
        if self.crop_to_shortest:
            gen = torch.Generator().manual_seed(
                derive_seed(self.seed, self.epoch, *[int(i["id"]) for i in items])
            )
        batch = collate(items, crop_to_shortest=self.crop_to_shortest, generator=gen)
        batch["skipped"] = skipped
        batch["warned"] = [
            {"id": int(i["id"]), "path": i["path"], "warnings": i["level_warnings"]}
            for i in items
            if "level_warnings" in i
        ]
        return batch
