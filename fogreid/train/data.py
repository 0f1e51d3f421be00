"""What every training mode reads: the synthetic training pairs (FVRID_syn) in P x K
batches, less the identities held out for validation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fogreid.data.datasets import ImageRecord, ReIDImages, ReIDSplit, carve_validation, load_fvrid
from fogreid.data.sampler import IdentitySampler
from fogreid.errors import FogreidError
from fogreid.model.config import ModelConfig
from fogreid.train.config import TrainConfig
from fogreid.train.evaluation import leave_one_out


@dataclass
class TrainData:
    """The synthetic training set (FVRID_syn) less its validation identities."""

    records: list[ImageRecord]
    val: ReIDSplit                    # leave-one-out retrieval over the held-out identities
    real: ReIDSplit | None            # sjdl: the real foggy training split (FVRID_real)
    ids: list[int]                    # the training vehicle ids; labels index into it
    labels: list[int]
    dataset: ReIDImages
    sampler: IdentitySampler
    loader: torch.utils.data.DataLoader

    def pk_sampler(self, seed: int) -> IdentitySampler:
        """Another P x K sampler over the same images (precise BN's batches)."""
        return IdentitySampler(self.labels, self.sampler.p, self.sampler.k, seed)


def training_data(cfg: TrainConfig, device: torch.device, rank: int = 0,
                  world: int = 1) -> tuple[TrainData, ModelConfig]:
    """The training data and the model config it implies (its identities, its input size).
    Under torchrun each process takes every world-th batch."""
    if not cfg.data.root:
        raise FogreidError("no dataset: pass --data ROOT (a folder with FVRID_syn/, e.g. from `fogreid synth`)")
    records, val = carve_validation(load_fvrid(cfg.data.root, "syn"), cfg.data.val_fraction, cfg.seed)
    ids = sorted({r.pid for r in records})
    labels = [ids.index(r.pid) for r in records]
    real = load_fvrid(cfg.data.root, "real") if cfg.mode == "sjdl" else None
    model_cfg = cfg.model_config(len(ids), real.num_train_ids if real else 0)
    dataset = ReIDImages(records, model_cfg.imgsz, labels)
    sampler = IdentitySampler(labels, cfg.data.ids_per_batch, cfg.data.instances_per_id, cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=ShardedBatches(sampler, rank, world),
                                         num_workers=cfg.data.num_workers,
                                         persistent_workers=False, pin_memory=device.type == "cuda")
    return TrainData(records, leave_one_out(val), real, ids, labels, dataset, sampler, loader), model_cfg


class ShardedBatches:
    """The identity sampler's batches, every world_size-th one for this rank."""

    def __init__(self, sampler: IdentitySampler, rank: int, world: int) -> None:
        self.sampler, self.rank, self.world = sampler, rank, world

    def __iter__(self):
        batches = list(self.sampler)
        usable = len(batches) - len(batches) % self.world  # every rank takes the same number of steps
        return iter(batches[self.rank:usable:self.world])

    def __len__(self) -> int:
        return len(self.sampler) // self.world

