"""Training configuration: typed dataclasses, filled from defaults, a YAML file, then
`--set section.key=value` overrides and the command-line flags, in that order."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fogreid.config import from_dict, load_yaml, ranged, renamed_keys, to_dict
from fogreid.errors import FogreidError
from fogreid.model.config import ModelConfig, preset

MODES = ("sjdl", "jdl", "reid", "rvsl", "frames")


@dataclass
class DataConfig:
    root: str = ""
    ids_per_batch: int = ranged(6, 2, 100_000, integer=True)       # P (the triplet loss needs 2)
    instances_per_id: int = ranged(6, 2, 100_000, integer=True)    # K
    # training identities held out to choose the best checkpoint
    val_fraction: float = ranged(0.2, 0, 1, high_open=True)
    num_workers: int = ranged(2, 0, 1024, integer=True)
    hflip: float = ranged(0.5, 0, 1)
    # Sensor noise on the synthetic foggy input (its clear target stays clean): the largest sigma
    # of the signal-dependent noise, drawn per image from [0, noise_sigma]. Synthetic pairs are
    # noise-free, real cameras are not; a head that never saw noise amplifies it by 1 / t.
    noise_sigma: float = ranged(0.0, 0, 0.2)
    real_every: int = ranged(5, 1, 1_000_000, integer=True)  # sjdl: every k-th iteration also takes a real foggy batch
    reid_input: str = "foggy"        # reid mode: train on foggy or clear images
    # frames mode (fogreid/train/frames.py): "generated" (frames of generated cities) or a folder
    # of clear camera frames of one size (with optional NAME_depth.png maps: fogreid/data/scenes.py)
    frames: str = "generated"
    # generated: cameras, each giving frames_per_camera frames, 1 s apart. One frame from each of 288
    # cameras scored 0.2 dB (synthetic) and 0.4-0.5 dB (real-like) above six from each of 48, the
    # same frames in memory; 576 x 1 no better than 288 (docs/benchmarks.md, Whole-frame defog).
    frame_cameras: int = ranged(288, 1, 100_000, integer=True)
    frames_per_camera: int = ranged(1, 1, 10_000, integer=True)
    frame_size: tuple[int, int] = ranged((480, 640), 32, 8192, integer=True)  # generated: height, width
    frame_batch: int = ranged(2, 1, 1024, integer=True)          # whole frames per step, beside the crop batch
    # Each frame, with probability 1/2, gets a coloured airlight, each channel offset by up to this
    # much (real-like fog's RealFogRanges.airlight_tint); 0: every frame's airlight grey, as FVRID_syn's
    # (fogreid/train/frames.py)
    frame_airlight_tint: float = ranged(0.08, 0, 0.5)
    # The scattering coefficient of the frames' fog, drawn per frame from [low, high]. Down to 0.3, as
    # thin as real-like fog's thinnest patches, not FVRID_syn's [1, 5]: the benchmark's cameras (beta
    # 1, 2.5, 4) gained 0.2-0.4 dB on both domains with two seeds, the run's held-out ones (1.5 and
    # denser) lost 0.1-0.3 (docs/benchmarks.md, Whole-frame defog)
    frame_beta: tuple[float, float] = ranged((0.3, 5.0), 0.05, 20)


@dataclass
class RVSLWeights:
    """One RVSL stage's loss weights. Synthetic pairs: `reid` (CE + triplet, each domain),
    `translation` (SmoothL1 of both translations), `embedding` (L1 between the clear and hazy
    embeddings), `adversarial` (generator side, LSGAN). Unlabelled real images (stages 2-3):
    `cycle` (SmoothL1 of the round trip), `real_embedding` (L1 between the embeddings of the
    real image and of its translation), `priors` (stage 2: dark-channel monotonicity +
    colinearity; stage 3: 0.5 dark channel + 2 TV + 0.05 colinearity, as upstream)."""

    reid: float = ranged(1.0, 0)
    translation: float = ranged(0.5, 0)
    embedding: float = ranged(0.5, 0)
    adversarial: float = ranged(0.5, 0)
    cycle: float = ranged(0.0, 0)
    real_embedding: float = ranged(0.0, 0)
    priors: float = ranged(0.0, 0)


@dataclass
class LossConfig:
    id_weight: float = ranged(1.0, 0)
    label_smoothing: float = ranged(0.1, 0, 1, high_open=True)
    triplet_weight: float = ranged(1.0, 0)
    triplet_margin: float = ranged(0.3, 0)
    restoration: str = "l1"          # l1 | mse
    # Restoration against ReID: with 1 / 0 (L1 only) a 40-epoch demo run's defog output had a
    # lower SSIM than the foggy input; 10 / 10 beats the input and the dark channel prior on
    # PSNR and SSIM with no loss of mAP (README, "Defog quality").
    restoration_weight: float = ranged(10.0, 0)
    ssim_weight: float = ranged(10.0, 0)     # (1 - SSIM) of both defog outputs against the clear image
    real_weight: float = ranged(1.0, 0)      # the real batch's id losses
    # frames mode: the whole frames' restoration terms (restoration_weight, ssim_weight) times this,
    # beside the crop batch's at 1. 10 scored 1.0-1.1 dB (synthetic) and 0.2-0.6 dB (real-like) above 1
    # on the benchmark's whole frames, both seeds; 3 between (docs/benchmarks.md, Whole-frame defog)
    frame_weight: float = ranged(10.0, 0)
    # frames mode: L1 of the whole frames' transmission (as the graph applies it) against the
    # fog's own, exp(-beta * depth), held at the graph's floor, times this. 10 put the demo model's
    # frames above 0 on PSNR and SSIM, synthetic and real-like, with both seeds; 50 and 100 no
    # better then; with the frames weighted 10, 30 scored +0.16 / +0.22 dB on real-like whole frames
    # over 10, level elsewhere, both seeds (docs/benchmarks.md, Whole-frame defog)
    frame_transmission_weight: float = ranged(30.0, 0)
    # SJDL's priors on the real batch. Upstream multiplies per-image pixel SUMS by 1e-5; ours
    # average over pixels, so the same strength at the published 384 px is 1e-5 * 384 * 384
    # (dark channel, one value per pixel) and 1e-5 * 3 * 384 * 384 (TV, per channel and pixel).
    dark_channel_weight: float = ranged(1.47, 0)
    dark_channel_patch: int = ranged(35, 1, 511, integer=True)
    tv_weight: float = ranged(4.42, 0)
    # RVSL (mode rvsl): the official weights of each stage (RVSL/losses, stage*_trainer.py)
    rvsl_stage1: RVSLWeights = field(default_factory=lambda: RVSLWeights(
        reid=1.0, translation=0.5, embedding=0.5, adversarial=0.5))
    rvsl_stage2: RVSLWeights = field(default_factory=lambda: RVSLWeights(
        reid=10.0, translation=100.0, embedding=1.0, adversarial=0.5, cycle=100.0, real_embedding=1.0, priors=0.01))
    rvsl_stage3: RVSLWeights = field(default_factory=lambda: RVSLWeights(
        reid=10.0, translation=100.0, embedding=1.0, adversarial=0.5, cycle=100.0, real_embedding=1.0, priors=0.01))



@dataclass
class OptimConfig:
    epochs: int = ranged(120, 1, 100_000, integer=True)    # rvsl: per stage
    # None: the recipe's peak lr, from where the encoder starts (fogreid/train/schedule.py):
    # 1e-3 from scratch, the published 1e-4 from pretrained weights
    lr: float | None = ranged(None, 0, 10, low_open=True)
    weight_decay: float = ranged(5e-4, 0, 1)
    schedule: str = "paper"          # a named schedule (fogreid/train/schedule.py), scaled to `epochs`
    # None: the schedule's, scaled; else in this run's epochs
    warmup_epochs: float | None = ranged(None, 0, 100_000)
    warmup_factor: float = ranged(0.01, 0, 1, low_open=True)
    # None: the schedule's, scaled; else in this run's epochs
    milestones: tuple[int, ...] | None = ranged(None, 1, 100_000, integer=True)
    gamma: float | None = ranged(None, 0, 1, low_open=True)   # None: the schedule's
    # Precise BatchNorm: re-estimate BN statistics over this many training batches (deployed
    # domain, no augmentation) before each validation and at the end; 0 turns it off.
    precise_bn_batches: int = ranged(40, 0, 1_000_000, integer=True)


@dataclass
class TrainConfig:
    mode: str = "sjdl"
    preset: str = "edge"
    model: dict[str, Any] = field(default_factory=dict)   # overrides of the preset's ModelConfig
    pretrained: str = ""             # "", "imagenet" or a weights file for the encoder
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    # Mixed precision: the network in FP16 with a GradScaler, the losses in FP32 (sjdl, jdl,
    # reid). auto: on CUDA only; fp16 on the CPU exists for tests and debugging.
    amp: str = "auto"                # auto | fp16 | off
    seed: int = ranged(0, 0, 2**32 - 1, integer=True)
    eval_every: int = ranged(1, 1, 100_000, integer=True)          # epochs between validations
    # also save last.pt every N steps (0: end of epoch only)
    save_every_steps: int = ranged(0, 0, 1_000_000_000, integer=True)
    stage: str = "all"               # rvsl: 1 | 2 | 3 | all (in order, each from the previous)

    def model_config(self, num_ids: int, num_ids_real: int) -> ModelConfig:
        overrides = renamed_keys(ModelConfig, dict(self.model), "model", stacklevel=2)
        if "imgsz" in overrides:
            overrides["imgsz"] = tuple(overrides["imgsz"])
        if self.mode == "reid":
            overrides["defog"] = False
        if self.mode == "rvsl":
            overrides.update(arch="rvsl", deform_branch=False)
        if self.mode == "frames":   # it adds a whole-frame head to the init's network
            overrides["frame_head"] = True
        try:
            cfg = preset(self.preset, **overrides)
        except TypeError as exc:
            known = ", ".join(f.name for f in dataclasses.fields(ModelConfig))
            raise FogreidError(f"model overrides: {exc}; known: {known}") from None
        return dataclasses.replace(cfg, num_ids=num_ids, num_ids_real=num_ids_real if self.mode == "sjdl" else 0)

    def check(self) -> None:
        if self.mode not in MODES:
            raise FogreidError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.data.reid_input not in ("foggy", "clear"):
            raise FogreidError("data.reid_input must be foggy or clear")
        if self.data.reid_input == "clear" and self.mode != "reid":
            raise FogreidError("data.reid_input=clear is for --mode reid (the clear-only baseline)")
        if self.amp not in ("auto", "fp16", "off"):
            raise FogreidError(f"amp {self.amp!r}: choose auto, fp16 or off")
        if self.amp == "fp16" and self.mode == "rvsl":
            raise FogreidError("amp=fp16: RVSL trains in FP32 (its discriminators step outside the GradScaler); "
                               "leave amp at auto or off")
        if self.stage not in ("1", "2", "3", "all"):
            raise FogreidError(f"stage {self.stage!r}: choose 1, 2, 3 or all (RVSL)")
        if self.stage != "all" and self.mode != "rvsl":
            raise FogreidError("--stage is for --mode rvsl")
        if self.optim.epochs < 1:
            raise FogreidError(f"optim.epochs {self.optim.epochs}: train at least 1 epoch (--epochs N)")
        for key, value in (("ids_per_batch", self.data.ids_per_batch),
                           ("instances_per_id", self.data.instances_per_id)):
            if value < 2:  # the batch-hard triplet loss needs 2 identities and 2 images of each
                raise FogreidError(f"data.{key} {value}: give at least 2 (--{key.replace('_', '-')})")
        if self.data.num_workers < 0 or not 0 <= self.data.val_fraction < 1:
            raise FogreidError("data.num_workers must be >= 0 and data.val_fraction in [0, 1)")
        if self.data.frame_beta[0] > self.data.frame_beta[1]:
            raise FogreidError(f"data.frame_beta {list(self.data.frame_beta)}: give [low, high] with low <= high")
        if self.loss.restoration not in ("l1", "mse"):
            raise FogreidError("loss.restoration must be l1 or mse")
        from fogreid.train.schedule import SCHEDULES

        if self.optim.schedule not in SCHEDULES:
            raise FogreidError(f"optim.schedule {self.optim.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.optim.precise_bn_batches < 0:
            raise FogreidError("optim.precise_bn_batches must be >= 0 (0 turns precise BatchNorm off)")
        self.model_config(0, 0)  # the model overrides (model.imgsz=...) checked now, not after the data loads


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise FogreidError(f"--set {key}: {part} is not a section")
    node[leaf] = value


def _check_set(item: str, key: str, value: Any) -> None:
    """`--set KEY=VALUE` with a number out of the setting's range (NaN and inf included, also
    spelt as text: `nan`, `inf`): refused naming the key, the value and the range. Types and
    unknown keys are left to from_dict, which names them too."""
    import typing

    from fogreid.config import FINITE

    cls: Any = TrainConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return
        if i < len(parts) - 1:
            cls = typing.get_type_hints(cls)[part]
            continue
        rng = fields[part].metadata.get("range")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str):  # YAML reads `nan`, `inf` and `1e-3` as text: what from_dict will convert
                try:
                    v = float(v)
                except ValueError:
                    continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if v not in (rng or FINITE) and (rng is not None or isinstance(v, float)):
                raise FogreidError(f"--set {item}: out of range; {part} takes {(rng or FINITE).describe()}")


def build_config(config_file: str | Path | None = None, sets: list[str] = (),
                 flags: dict[str, Any] | None = None) -> TrainConfig:
    import yaml

    data: dict[str, Any] = load_yaml(config_file) if config_file else {}
    where = str(config_file) if config_file else "config"
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep:
            raise FogreidError(f"--set {item!r}: expected key=value, e.g. --set loss.tv_weight=0.02")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            first = next(iter(str(exc).splitlines()), "")
            raise FogreidError(f"--set {item}: the value is not valid YAML ({first}); quote it, e.g. "
                               f"--set '{key.strip()}=\"...\"'") from None
        _check_set(item, key.strip(), value)
        _set_dotted(data, key.strip(), value)
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    cfg = from_dict(TrainConfig, data, where)
    cfg.check()
    return cfg


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return to_dict(cfg)
