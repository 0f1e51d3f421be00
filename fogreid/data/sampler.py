"""P x K identity sampling: every batch holds P vehicles with K images each, which is
what the batch-hard triplet loss needs to find positives and negatives in a batch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from fogreid.errors import FogreidError


class IdentitySampler:
    """A batch sampler. Batches depend only on (seed, epoch), so a resumed run can
    regenerate the epoch and skip the batches it already saw (`start_batch`)."""

    def __init__(self, labels: list[int], ids_per_batch: int, instances_per_id: int, seed: int = 0) -> None:
        if ids_per_batch < 1 or instances_per_id < 1:  # P = 0 would never end an epoch
            raise FogreidError(f"P x K sampling needs --ids-per-batch and --instances-per-id >= 1, "
                               f"got {ids_per_batch} x {instances_per_id}")
        self.by_id: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            self.by_id[label].append(index)
        if len(self.by_id) < ids_per_batch:
            raise FogreidError(f"the training set has {len(self.by_id)} identities, fewer than "
                               f"--ids-per-batch {ids_per_batch}; lower it or add identities")
        self.p, self.k, self.seed = ids_per_batch, instances_per_id, seed
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks: dict[int, list[list[int]]] = {}
        for label in sorted(self.by_id):
            indices = list(self.by_id[label])
            if len(indices) < self.k:  # too few images: repeat some rather than drop the id
                indices = list(rng.choice(indices, self.k, replace=True))
            rng.shuffle(indices)
            chunks[label] = [indices[i:i + self.k] for i in range(0, len(indices) - self.k + 1, self.k)]
        available = sorted(chunks)
        batches = []
        while len(available) >= self.p:
            chosen = rng.choice(available, self.p, replace=False)
            batch = []
            for label in chosen:
                batch += [int(i) for i in chunks[label].pop()]
                if not chunks[label]:
                    available.remove(label)
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start_batch:]

    def __len__(self) -> int:
        return max(len(self.batches()) - self.start_batch, 0)
