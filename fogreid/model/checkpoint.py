"""Checkpoint files: weights, the model config and metadata in one file.

The file is a `torch.save` of plain containers and tensors, read back with
`weights_only=True`, so loading never runs pickled code. Training adds its own entries
(optimiser, scheduler, epoch, RNG state) beside the model ones in `last.pt`, which is what
resuming needs; `best.pt` is what deployment needs (`DEPLOY_KEYS`: weights, config,
metadata, and the few small training facts a reader may want), about a third of the size:
Adam keeps two moments per weight.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
from pathlib import Path
from typing import Any

import torch

from fogreid import __version__
from fogreid.config import from_dict, to_dict
from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write
from fogreid.model.build import build_model
from fogreid.model.config import ModelConfig
from fogreid.model.sjdl import SJDLNet

FORMAT = "fogreid.checkpoint"
FORMAT_VERSION = 1
# What a deployment checkpoint keeps of the training extras (small, informative; no optimiser state).
DEPLOY_EXTRAS = ("train_config", "epoch", "global_step", "best", "bn_ema")  # bn_ema: fogreid/train/precise.py


def save_checkpoint(path: str | Path, net: SJDLNet, meta: dict[str, Any] | None = None, deploy: bool = False,
                    **extra: Any) -> None:
    """Write `net` (and any training state in `extra`) to `path`, atomically. With `deploy`,
    only `DEPLOY_EXTRAS` of `extra` are kept (best.pt): the optimiser, scaler and RNG state
    are for resuming, which reads last.pt."""
    if deploy:
        extra = {k: v for k, v in extra.items() if k in DEPLOY_EXTRAS}
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": to_dict(net.config),
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "meta": {"fogreid_version": __version__,
                 "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 **(meta or {})},
        **extra,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_write(path) as handle:
        handle.write(buffer.getbuffer())


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, checked to be a fogreid checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FogreidError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise FogreidError(f"{path}: the checkpoint is empty (0 bytes), probably an interrupted copy; copy it again "
                           f"or use the run's other checkpoint (best.pt / last.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first_line = next(iter(str(exc).splitlines()), "")[:200]
        raise FogreidError(
            f"{path}: cannot be read as a fogreid checkpoint ({type(exc).__name__}: {first_line}). The file may "
            f"be truncated or corrupt, or it holds pickled objects, which are never loaded; re-save it with "
            f"fogreid.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FogreidError(f"{path}: not a fogreid checkpoint (no '{FORMAT}' marker); "
                           f"checkpoints are written by `fogreid train` or save_checkpoint()")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise FogreidError(f"{path}: written by a newer fogreid (format {state['format_version']}); "
                           f"upgrade fogreid to read it")
    check_finite(state, path)
    return state


def check_finite(state: dict[str, Any], path: str | Path = "checkpoint") -> None:
    """Every float tensor of the weights (and of the BatchNorm statistics kept beside them) is
    finite: a NaN weight (a diverged run, a damaged file) makes every embedding NaN, and the
    model would still evaluate, export and pass its pre-flight check."""
    for part in ("model", "bn_ema"):
        tensors = state.get(part)
        if not isinstance(tensors, dict):
            continue
        for name, tensor in tensors.items():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel():
                finite = torch.isfinite(tensor)
                if not bool(finite.all()):
                    bad = int(finite.numel() - finite.sum())
                    raise FogreidError(f"{path}: weight {part}.{name} holds {bad} NaN or infinite value(s) of "
                                       f"{finite.numel()}; the checkpoint is damaged or from a run that diverged: "
                                       f"use an earlier checkpoint (e.g. the run's best.pt) or retrain")


def checkpoint_config(state: dict[str, Any], path: str | Path = "checkpoint") -> ModelConfig:
    return from_dict(ModelConfig, state["model_config"], where=f"{path}: model_config")


def load_model(path: str | Path, expect: ModelConfig | None = None,
               map_location: str | torch.device = "cpu", input_size: tuple[int, int] | None = None) -> SJDLNet:
    """Build the network stored in `path`. With `expect`, the stored config must equal it.
    `input_size` deploys the (fully convolutional) network at another resolution."""
    state = read_checkpoint(path, map_location)
    cfg = checkpoint_config(state, path)
    if expect is not None and expect != cfg:
        raise FogreidError(f"{path}: checkpoint is for another model config: {describe_mismatch(expect, cfg)}. "
                           f"Use the config the checkpoint was trained with, or retrain.")
    if input_size is not None:
        cfg = dataclasses.replace(cfg, input_size=tuple(input_size))
    net = build_model(cfg)
    load_weights(net, state["model"], path)
    return net.eval()


def load_weights(net: SJDLNet, weights: dict[str, torch.Tensor], path: str | Path = "checkpoint") -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append("shapes differ: " + ", ".join(
                f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3]))
        raise FogreidError(f"{path}: weights do not fit the model config: {'; '.join(parts)}")
    net.load_state_dict(weights)


def describe_mismatch(expected: ModelConfig, found: ModelConfig) -> str:
    diffs = [f"{f.name}: expected {getattr(expected, f.name)!r}, checkpoint has {getattr(found, f.name)!r}"
             for f in dataclasses.fields(ModelConfig) if getattr(expected, f.name) != getattr(found, f.name)]
    return "; ".join(diffs)
