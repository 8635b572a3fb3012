"""Length-bucketed batch sampler with a sample budget (fairseq ``max_tokens``), resumable, DDP-aware."""

from __future__ import annotations

from typing import Any, Iterator, Literal, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["SamplerError", "BucketBatchSampler", "batch_by_size", "TooLongPolicy"]

TooLongPolicy = Literal["error", "skip"]


class SamplerError(ValueError):
    """Batching is impossible with the given sizes and budget."""


def batch_by_size(
    order: Sequence[int], sizes: np.ndarray, max_tokens: int, max_batch_size: int | None = None
) -> list[list[int]]:
    """Greedy batches along ``order``: each keeps ``max(size) * len(batch) <= max_tokens``.

    ``order`` should be sorted by size so that batches hold similar lengths (as fairseq).
    Every index must fit alone.
    """
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        s = int(sizes[i])
        new_max = max(cur_max, s)
        full = max_batch_size is not None and len(cur) >= max_batch_size
        if cur and (full or new_max * (len(cur) + 1) > max_tokens):
            batches.append(cur)
            cur, new_max = [], s
        cur.append(int(i))
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices whose padded size ``max_len * batch_size <= max_tokens``.

    Per epoch: indices are sorted by size (ties, or whole buckets when ``num_buckets > 0``,
    in a seeded random order), cut greedily into batches, and the batch order is shuffled
    with a generator seeded by (seed, epoch). For DDP the batch list is made a multiple of
    ``world_size`` (repeating the first batches, or dropping the tail with ``drop_last``)
    and rank ``r`` takes batches ``r, r + W, ...``, so every rank gets the same count.

    Iterating to the end advances the epoch; ``set_epoch(e)`` with a new ``e`` restarts.
    ``state_dict()`` holds the epoch and the batches this rank has consumed, so
    ``load_state_dict`` resumes mid-epoch with exactly the remaining batches. (A DataLoader
    with workers prefetches from the sampler: there, build the state from the batches the
    trainer has actually processed: ``{"epoch": e, "consumed": n}``.)

    Args:
        sizes: samples per utterance ``(N,)`` (e.g. ``AudioDataset.sizes``).
        too_long: an utterance longer than ``max_tokens`` is an ``"error"`` or is
            ``"skip"``-ped and counted in ``num_skipped_long``.
    """

    def __init__(
        self,
        sizes: Sequence[int] | np.ndarray,
        *,
        max_tokens: int,
        max_batch_size: int | None = None,
        num_buckets: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        too_long: TooLongPolicy = "error",
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, found {max_tokens}")
        if max_batch_size is not None and max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be > 0 or None, found {max_batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, found rank={rank}, world_size={world_size}")
        if too_long not in ("error", "skip"):
            raise ValueError(f"too_long must be 'error' or 'skip', found {too_long!r}")
        self.sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
        self.max_tokens = int(max_tokens)
        self.max_batch_size = max_batch_size
        self.num_buckets = int(num_buckets)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank, self.world_size = int(rank), int(world_size)

        long_idx = np.flatnonzero(self.sizes > self.max_tokens)
        if len(long_idx) and too_long == "error":
            i = int(long_idx[0])
            raise SamplerError(
                f"utterance {i} has {int(self.sizes[i])} samples, more than max_tokens={self.max_tokens} "
                f"({len(long_idx)} such utterance(s)); raise max_tokens, crop with max_sample_size, "
                f"or pass too_long='skip'"
            )
        self.num_skipped_long = int(len(long_idx))
        self._indices = np.flatnonzero(self.sizes <= self.max_tokens)
        if self.num_buckets > 0 and len(self._indices):
            qs = np.quantile(self.sizes[self._indices], np.linspace(0, 1, self.num_buckets + 1)[1:-1])
            self._bucket = np.searchsorted(qs, self.sizes, side="left")
        else:
            self._bucket = None

        self.epoch = 0
        self.consumed = 0  # batches of this rank already yielded in self.epoch
        self._cache: tuple[int, list[list[int]]] | None = None

    # ------------------------------------------------------------------ batches
    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def all_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every rank's batches of ``epoch`` (after DDP padding), in iteration order."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        idx = self._indices
        sizes = self.sizes[idx]
        if self.shuffle:
            rng = self._rng(epoch)
            tie = rng.permutation(len(idx))
            if self._bucket is not None:  # random order inside each bucket of similar sizes
                order = idx[np.lexsort((tie, self._bucket[idx]))]
            else:  # by size, ties in random order
                order = idx[np.lexsort((tie, sizes))]
        else:
            rng = None
            order = idx[np.argsort(sizes, kind="stable")]
        batches = batch_by_size(order, self.sizes, self.max_tokens, self.max_batch_size)
        if rng is not None:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        rem = len(batches) % self.world_size
        if rem:
            if self.drop_last:
                batches = batches[: len(batches) - rem]
            else:
                pad = self.world_size - rem
                batches = batches + [batches[j % len(batches)] for j in range(pad)]
        self._cache = (epoch, batches)
        return batches

    def rank_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch``: ``all_batches[rank::world_size]``."""
        return self.all_batches(epoch)[self.rank :: self.world_size]

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch (from its start)."""
        return len(self.rank_batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches()
        while self.consumed < len(batches):
            b = batches[self.consumed]
            self.consumed += 1
            yield list(b)
        self.epoch += 1
        self.consumed = 0

    # ------------------------------------------------------------------ epoch / resume
    def restart(self) -> None:
        """Start the current epoch over from its first batch (a validation pass that stopped early
        must not leave the next one to continue where it stopped)."""
        self.consumed = 0

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch``; a different epoch restarts it, the current one keeps its progress."""
        if int(epoch) != self.epoch:
            self.epoch, self.consumed = int(epoch), 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state["epoch"]`` after ``state["consumed"]`` batches of this rank."""
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"state was saved with seed={state['seed']}, this sampler has seed={self.seed}")
        if "world_size" in state and int(state["world_size"]) != self.world_size:
            raise ValueError(
                f"state was saved with world_size={state['world_size']}, this sampler has {self.world_size}; "
                f"a mid-epoch resume needs the same world size"
            )
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        n = len(self.rank_batches(epoch))
        if not 0 <= consumed <= n:
            raise ValueError(f"state says {consumed} batches consumed, epoch {epoch} has {n}")
        self.epoch, self.consumed = epoch, consumed
