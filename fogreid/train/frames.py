"""`fogreid train --mode frames --init RUN/best.pt`: a defog head for whole frames, trained on them.

The whole-frame graph (fogreid/export/frame_graph.py) runs the network on a camera frame
shrunk by K (4 for a 64 px model) and applies its transmission and airlight at full size. A
head trained on vehicle crops alone has never seen a frame's sky, road and buildings at that
scale, and on the generated 640x480 cameras it under-estimated their transmission (dark smears
beside vehicles; synthetic frames below the foggy input's SSIM: docs/benchmarks.md, Whole-frame
defog). This mode trains what it lacks, from a trained checkpoint (`--init`):

* what learns is a head of its own for whole frames (ModelConfig.frame_head: a copy of the defog
  head, the decoder and the enhancement, made from the init's at the start, whose decoder also
  reads the encoder's layer3 through a 1x1 conv that starts at zero, ModelConfig.frame_context:
  on the shrunk frame layer1 sees less than a building or a stretch of road; with layer3 the
  head's transmission came closer to the fog's and the benchmark's whole frames gained 0.3-0.5
  dB, docs/benchmarks.md, Whole-frame defog), which only the whole-frame graph runs. The crop
  graph, its defogged crops and its embedding, stays the init's to the bit, so nothing validated
  about it changes and a gallery made with the init still matches; the encoder and its BatchNorm
  statistics are frozen, precise BN does not run, and no validation mAP can choose an epoch (it
  cannot move): best.pt is the last epoch's;
* each step puts the crop batch of any run through the whole-frame head, with SJDL's restoration
  terms on both defog outputs (vehicles at the crops' scale), and `data.frame_batch` whole clear
  frames (fogreid/data/scenes.py, `data.frames`) fogged with FVRID_syn's model (beta ~
  U(`data.frame_beta`), U(0.3, 5) by default, airlight ~ U(0.4, 1), per frame, drawn from (seed,
  step); each frame with probability 1/2 coloured, each channel offset by up to
  `data.frame_airlight_tint`), rounded to uint8 as a camera's frame is, and defogged by the
  whole-frame graph's own computation (`defog_frame_images`, at the export's default K), with the
  same terms at full size times `loss.frame_weight`, and the L1 distance of the head's
  transmission (before the graph holds it at FRAME_T_MEDIAN_SHARE of the frame's median) from
  the fog's own times `loss.frame_transmission_weight`. Tuning the crops' own head
  instead (measured on the demo model, 600 steps) gave the same whole frames but took the
  real-like crops' PSNR from 17.35 to 16.99 dB: more synthetic restoration training of that head,
  not the frames, did it (crops alone: 17.00);
* the learning rate is the pretrained recipe's (1e-4 unless optim.lr is set): the head starts
  trained.

At the end, besides the test figures of any run, the whole frames of 3 generated cameras that
no run trains on (scenes.held_out_scenes), fogged at beta 1.5, 3 and 4.5, are scored against
their clear render before (the init) and after (metrics.json, "frames").
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fogreid.data.scenes import Scenes, folder_scenes, generated_scenes, held_out_scenes
from fogreid.devices import pick_device
from fogreid.errors import FogreidError
from fogreid.export.frame_graph import (
    FRAME_T_MIN,
    MIN_SIDE,
    default_downscale,
    defog_frame_images,
    defog_frame_images_and_transmission,
    supports_frames,
)
from fogreid.model.checkpoint import load_network
from fogreid.model.sjdl import SJDLNet
from fogreid.pixels import frames_to_images
from fogreid.train import losses as L
from fogreid.train.config import TrainConfig, config_dict
from fogreid.train.data import TrainData, training_data
from fogreid.train.evaluation import test_checkpoint
from fogreid.train.loop import RESUMABLE, Job, Processes, distribute, fit, resume_from, seed_everything
from fogreid.train.schedule import resolve_schedule
from fogreid.train.step import Batch, Step, add_sensor_noise, flip_images

TRAINED = ("frame_decoder.", "frame_enhance.")   # the whole-frame head (ModelConfig.frame_head): what this mode trains
HELD_OUT_BETAS = (1.5, 3.0, 4.5)     # one per held-out camera
HELD_OUT_AIRLIGHT = 0.8
NO_INIT = "--mode frames trains a whole-frame head for a trained model: give --init RUN/best.pt"
FRAME_DRAWS = 7919                   # in the key of each step's frame draws, apart from the loop's flips
# The chance that a frame is fogged with a coloured airlight (data.frame_airlight_tint): real cameras' fog is
# not always grey, and a head trained on grey airlight alone scored 0.4-0.9 dB lower on real-like
# frames; with every frame coloured, 0.3-0.4 dB lower on grey-fogged ones (docs/benchmarks.md,
# Whole-frame defog). Half keeps most of the first gain at half the second cost.
TINTED_SHARE = 0.5


class FramesForward(nn.Module):
    """The crop batch's two defog outputs and the whole frames' output, in one forward (DDP)."""

    def __init__(self, net: SJDLNet, downscale: int) -> None:
        super().__init__()
        self.net, self.downscale = net, downscale

    def forward(self, crops: torch.Tensor, frames: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        coarse, defogged = self.net.defog(crops, whole_frame=True)
        defogged_frames, transmission = defog_frame_images_and_transmission(self.net, frames, self.downscale)
        return coarse, defogged, defogged_frames.clamp(0.0, 1.0), transmission


class FramesStep(Step):
    """`forward` is a FramesForward (DDP-wrapped under torchrun); `scenes` the clear frames."""

    name = "frames"

    def __init__(self, cfg: TrainConfig, forward: nn.Module, scenes: Scenes, device: torch.device,
                 rank: int = 0) -> None:
        self.cfg, self.forward, self.scenes, self.device, self.rank = cfg, forward, scenes, device, rank

    def flip_key(self, epoch: int, step: int) -> tuple:
        return self.cfg.seed, epoch, step, self.rank

    def train_mode(self, net: nn.Module) -> None:
        net.eval()   # the encoder's BatchNorm statistics are the init's, and stay so
        for name in TRAINED:
            getattr(net, name.rstrip(".")).train()

    def frame_batch(self, global_step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(foggy, clear) whole frames for this step, as float images on the device, and their fog's
        transmission exp(-beta * depth)."""
        from fogreid.data.fog import FogRanges, synthetic_fog, transmission

        # Ints only: a str in the key would hash differently in every process (PYTHONHASHSEED).
        draws = torch.Generator().manual_seed(hash((self.cfg.seed, global_step, self.rank, FRAME_DRAWS)) & 0x7FFFFFFF)
        picked = torch.randint(len(self.scenes), (self.cfg.data.frame_batch,), generator=draws).tolist()
        clear_frames, depths = zip(*(self.scenes[i] for i in picked), strict=True)
        clear = frames_to_images(torch.from_numpy(np.stack(clear_frames)))
        depth = torch.from_numpy(np.stack(depths)).float()[:, None]
        flip = torch.rand(len(picked), generator=draws) < self.cfg.data.hflip
        clear, depth = flip_images(clear, flip), flip_images(depth, flip)
        foggy, beta, _ = synthetic_fog(clear, draws, depth, FogRanges(beta=self.cfg.data.frame_beta),
                                       tint=self.cfg.data.frame_airlight_tint, tinted_share=TINTED_SHARE)
        fog_transmission = transmission(depth, beta)
        if self.cfg.data.noise_sigma > 0:
            foggy = add_sensor_noise(foggy, self.cfg.data.noise_sigma, draws)   # rounds to uint8 levels too
        else:
            foggy = (foggy * 255).round() / 255
        return foggy.to(self.device), clear.to(self.device), fog_transmission.to(self.device)

    def losses(self, batch: Batch, global_step: int) -> dict[str, torch.Tensor]:
        ls = self.cfg.loss
        foggy_frames, clear_frames, fog_transmission = self.frame_batch(global_step)
        coarse, defogged, frames, transmission = self.forward(batch.foggy, foggy_frames)
        terms = L.restoration_terms([coarse.float(), defogged.float()], batch.clear, ls)
        frame_terms = L.restoration_terms([frames.float()], clear_frames, ls)
        terms.update({f"frame_{name}": ls.frame_weight * value for name, value in frame_terms.items()})
        if ls.frame_transmission_weight:
            target = fog_transmission.clamp(FRAME_T_MIN, 1.0)
            terms["frame_transmission"] = ls.frame_transmission_weight * (transmission.float() - target).abs().mean()
        return terms


def load_init(init: str | Path | None, device: torch.device, frame_context: bool = True) -> SJDLNet:
    """The trained network this mode starts from, with a whole-frame head (a copy of its defog
    head, reading layer3 with `frame_context`, unless it has one already, which stays as it was)
    and only that head trainable."""
    from fogreid.model.build import build_model
    from fogreid.model.checkpoint import read_checkpoint

    if not init:
        raise FogreidError(NO_INIT)
    net = load_network(init, map_location=device)
    if not supports_frames(net):
        head = net.config.defog_head if net.decoder is not None else "none (a --mode reid model)"
        raise FogreidError(f"--init {init}: its defog head is {head}; --mode frames needs the detail or scatter "
                           f"head (train with --set model.defog_head=detail)")
    if not net.config.frame_head:
        weights = read_checkpoint(init, device)["model"]
        copies = {f"frame_{name}": value for name, value in weights.items()
                  if name.startswith(("decoder.", "enhance."))}
        net = build_model(dataclasses.replace(net.config, frame_head=True, frame_context=frame_context)).to(device)
        # The context conv is new (it starts at zero); everything else is the init's.
        net.load_state_dict({**net.state_dict(), **weights, **copies})
    for name, parameter in net.named_parameters():
        parameter.requires_grad_(name.startswith(TRAINED))
    return net.eval()


def load_scenes(cfg: TrainConfig, downscale: int) -> Scenes:
    data = cfg.data
    scenes = (generated_scenes(data.frame_cameras, data.frames_per_camera, cfg.seed, tuple(data.frame_size))
              if data.frames == "generated"
              else folder_scenes(data.frames))
    if min(scenes.size) < MIN_SIDE * downscale:
        raise FogreidError(f"data.frames: {scenes.size[1]}x{scenes.size[0]} frames are smaller than the whole-frame "
                           f"graph takes at downscale {downscale} ({MIN_SIDE * downscale} px a side)")
    return scenes


@torch.inference_mode()
def score_frames(net: SJDLNet, scenes: Scenes, downscale: int) -> dict:
    """Mean PSNR / SSIM of the whole-frame output on `scenes`, fogged one beta per camera."""
    from fogreid.data.fog import scatter
    from fogreid.metrics import psnr, ssim

    per_camera = len(scenes) // len(HELD_OUT_BETAS)
    values: dict[str, list] = {"psnr": [], "ssim": [], "psnr_foggy": [], "ssim_foggy": []}
    for i in range(len(scenes)):
        clear_frame, depth = scenes[i]
        clear = frames_to_images(torch.from_numpy(clear_frame[None]))
        beta = HELD_OUT_BETAS[min(i // max(per_camera, 1), len(HELD_OUT_BETAS) - 1)]
        foggy = scatter(clear, torch.from_numpy(depth)[None, None], torch.tensor([beta]),
                        torch.tensor([HELD_OUT_AIRLIGHT]))
        foggy = (foggy.clamp(0, 1) * 255).round() / 255
        out = (defog_frame_images(net, foggy, downscale).clamp(0, 1) * 255).round() / 255
        for key, image in (("", out), ("_foggy", foggy)):
            values[f"psnr{key}"].append(float(psnr(image, clear).mean()))
            values[f"ssim{key}"].append(float(ssim(image, clear).mean()))
    return {k: float(np.mean(v)) for k, v in values.items()}


def train_frames(cfg: TrainConfig, out: str | Path, init: str | Path | None, resume: str | Path | None = None,
                 progress: bool = True) -> dict:
    """`--mode frames` into `out`: best.pt / last.pt, history, metrics.json with "frames"."""
    procs = Processes.from_env()
    device = pick_device(cfg.device, procs.local_rank)
    if procs.world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    seed_everything(cfg.seed, device)
    net = load_init(init, device, frame_context=bool(cfg.model.get("frame_context", True)))
    for key in ("imgsz", "backbone", "frame_context"):   # the network is the init's: a different one is refused
        asked = cfg.model.get(key)
        if asked is not None and (tuple(asked) if key == "imgsz" else asked) != getattr(net.config, key):
            raise FogreidError(f"model.{key}={asked}: --mode frames trains the network of --init {init} "
                               f"({key} {getattr(net.config, key)}); leave it unset")
    downscale = default_downscale(net.config.imgsz)
    # The crops at the init's size, every training identity (no validation carve-out: nothing to select on).
    cfg = dataclasses.replace(cfg, model={**cfg.model, "imgsz": list(net.config.imgsz)},
                              data=dataclasses.replace(cfg.data, val_fraction=0.0),
                              optim=dataclasses.replace(cfg.optim, precise_bn_batches=0))
    scenes = load_scenes(cfg, downscale)
    data, _ = training_data(cfg, device, procs.rank, procs.world)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    schedule = resolve_schedule(cfg.optim, pretrained=True)
    trained = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=schedule.lr, weight_decay=cfg.optim.weight_decay)
    amp = cfg.amp == "fp16" or (cfg.amp == "auto" and device.type == "cuda")
    job = Job(net, optimizer, torch.amp.GradScaler(device.type, enabled=amp), schedule, data, device,
              meta={"trained_on": str(cfg.data.root), "mode": "frames", "init": str(init), "frames": scenes.source,
                    "frame_downscale": downscale, "schedule": schedule.describe()},
              checkpoints=RESUMABLE, procs=procs)
    if resume:
        job.start = resume_from(resume, job)
    step = FramesStep(cfg, distribute(FramesForward(net, downscale), procs, device, find_unused=False), scenes,
                      device, procs.rank)
    if procs.master:
        describe(cfg, data, scenes, init, downscale, sum(p.numel() for p in trained), schedule.describe())
    best, history = fit(cfg, job, step, out, progress)

    summary: dict = {"config": config_dict(cfg), "schedule": dataclasses.asdict(schedule), "best": best,
                     "history": history}
    if procs.master:
        summary.update(test_checkpoint(out / "best.pt", cfg.data.root, device, progress))
        held_out = held_out_scenes(scenes.size)
        summary["frames"] = {"held_out": held_out.source, "downscale": downscale,
                             "init": score_frames(load_network(init), held_out, downscale),
                             "tuned": score_frames(load_network(out / "best.pt"), held_out, downscale)}
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        report(summary)
    if procs.world > 1:
        torch.distributed.destroy_process_group()
    return summary


def describe(cfg: TrainConfig, data: TrainData, scenes: Scenes, init, downscale: int, params: int,
             schedule: str) -> None:
    print(f"training a whole-frame defog head for {init} (a copy of its defog head, {params:,} parameters; the "
          f"encoder, the crop head and the embedding frozen) "
          f"on {len(data.records)} crop pairs and {scenes.source} ({scenes.size[1]}x{scenes.size[0]}, "
          f"{cfg.data.frame_batch} per step, the network at 1/{downscale}); schedule: {schedule}")


def report(summary: dict) -> None:
    frames = summary["frames"]
    before, after = frames["init"], frames["tuned"]
    print(f"whole frames ({frames['held_out']}, held out): PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB, "
          f"SSIM {before['ssim']:.3f} -> {after['ssim']:.3f} (foggy input {before['psnr_foggy']:.2f} dB / "
          f"{before['ssim_foggy']:.3f})")
    for split, m in summary["test"].items():
        print(f"test {split}: mAP {m['mAP']:.3f} R1 {m['rank1']:.3f}"
              + (f" PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f}" if "psnr" in m else ""))
