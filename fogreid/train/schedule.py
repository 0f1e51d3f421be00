"""The learning-rate schedule: linear warmup, then a step decay by `gamma` at each milestone.

Named schedules are given for the run length they were published with. A run of another
length gets them scaled (warmup and milestones in proportion), so an 8-epoch run still
warms up and decays instead of spending its whole budget in a 10-epoch warmup. Warmup and
milestones given explicitly (`optim.warmup_epochs`, `optim.milestones`) are in the run's own
epochs and are used as given, with a warning where they cannot act within the run.

The peak lr, left unset (`optim.lr` None, the default), follows from where the encoder starts:
the published 1e-4 (Adam) assumes ImageNet weights (`--pretrained`); from scratch, which is
what a machine without those weights gets, 1e-4 underfits (16 epochs: SJDL no better than
ReID-only) and 10x that keeps the papers' order (docs/benchmarks.md, "Training defaults").
"""

from __future__ import annotations

from dataclasses import dataclass

from fogreid.errors import FogreidError


@dataclass(frozen=True)
class Schedule:
    epochs: int                      # the run length the numbers below assume
    warmup_epochs: float
    milestones: tuple[int, ...]
    gamma: float


SCHEDULES: dict[str, Schedule] = {
    # SJDL's official solver (120 epochs, 10 warmup, x0.6 at 20, 30, 45, 60, 75, 90, 105).
    "paper": Schedule(120, 10, (20, 30, 45, 60, 75, 90, 105), 0.6),
    # fogreid's earlier default: fewer, later steps (more epochs near the peak lr).
    "long-steps": Schedule(120, 10, (40, 70, 100), 0.6),
}


# The peak lr when optim.lr is unset: (from scratch, from pretrained weights).
LR_FROM_SCRATCH = 1e-3
LR_PRETRAINED = 1e-4


def default_lr(pretrained: bool) -> float:
    return LR_PRETRAINED if pretrained else LR_FROM_SCRATCH


@dataclass(frozen=True)
class ResolvedSchedule:
    """The schedule of one run (or one RVSL stage), in that run's epochs."""

    lr: float
    epochs: int
    warmup_epochs: float
    warmup_factor: float
    milestones: tuple[int, ...]
    gamma: float
    notes: tuple[str, ...] = ()
    lr_source: str = "optim.lr"      # why this peak lr: the user's optim.lr, or the recipe's reason

    def lr_at(self, epoch: float) -> float:
        """The lr at a (fractional) epoch: warmup is per step, the decay per whole epoch."""
        if epoch < self.warmup_epochs:
            alpha = epoch / self.warmup_epochs
            return self.lr * (self.warmup_factor * (1 - alpha) + alpha)
        return self.lr * self.gamma ** sum(int(epoch) >= m for m in self.milestones)

    def describe(self) -> str:
        return (f"lr {self.lr:g} ({self.lr_source}), "
                f"warmup {self.warmup_epochs:g} epochs from x{self.warmup_factor:g}, "
                f"x{self.gamma:g} at {list(self.milestones)} of {self.epochs} epochs")


def resolve_schedule(optim, epochs: int | None = None, pretrained: bool = False) -> ResolvedSchedule:
    """`optim` (an OptimConfig) for a run of `epochs` (default optim.epochs) whose encoder starts
    from pretrained weights or not (which sets the peak lr when optim.lr is unset)."""
    epochs = optim.epochs if epochs is None else epochs
    if optim.lr is None:
        lr = default_lr(pretrained)
        lr_source = "default for pretrained weights" if pretrained else "default from scratch; 1e-4 with --pretrained"
    else:
        lr, lr_source = optim.lr, "optim.lr"
    if optim.schedule not in SCHEDULES:
        raise FogreidError(f"optim.schedule {optim.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    named = SCHEDULES[optim.schedule]
    scale = epochs / named.epochs
    notes = []
    if optim.warmup_epochs is None:
        warmup = named.warmup_epochs * scale
        # Short runs: at least one epoch of warmup, and at most a quarter of the run.
        warmup = min(max(round(warmup, 2), min(1.0, epochs / 4)), epochs / 4) if epochs > 1 else 0.0
    else:
        warmup = float(optim.warmup_epochs)
        if warmup >= epochs:
            notes.append(f"optim.warmup_epochs={warmup:g} is not shorter than the run ({epochs} epochs): "
                         f"the lr never reaches its peak {lr:g}; lower it or leave it unset (scaled)")
    if optim.milestones is None:
        # Milestones that scale onto the same epoch all count (x0.6 twice = x0.36): the run
        # still ends at the schedule's final fraction of the lr.
        milestones = sorted(max(int(round(m * scale)), 1) for m in named.milestones)
        milestones = tuple(m for m in milestones if warmup < m < epochs)  # the peak lasts an epoch at least
    else:
        milestones = tuple(sorted(optim.milestones))
        late = [m for m in milestones if m >= epochs]
        if late:
            notes.append(f"optim.milestones {late} lie beyond the run's {epochs} epochs and never apply")
    if scale != 1 and (optim.warmup_epochs is None or optim.milestones is None):
        notes.append(f"schedule {optim.schedule!r} assumes {named.epochs} epochs; scaled to {epochs}")
    gamma = named.gamma if optim.gamma is None else optim.gamma
    return ResolvedSchedule(lr, epochs, warmup, optim.warmup_factor, milestones, gamma, tuple(notes), lr_source)
