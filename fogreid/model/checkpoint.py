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
from fogreid._deprecated import renamed
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
    from fogreid.file_kinds import expect

    path = Path(path)
    expect(path, "", "checkpoint", elsewhere={"onnx": "a checkpoint (.pt) is needed here; an .onnx goes to "
                                                      "--model"})
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        # torch's own message advises weights_only=False, which would run the file's code: never repeated
        if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
            raise FogreidError(f"{path}: holds Python objects besides weights and plain values; fogreid never "
                               f"unpickles those (loading them could run code): re-save the weights with "
                               f"fogreid (save_checkpoint)") from None
        raise FogreidError(f"{path}: cannot be read as a checkpoint: the file is cut short or damaged "
                           f"({type(exc).__name__}), probably an interrupted copy; copy it again or use the run's "
                           f"other checkpoint (best.pt / last.pt)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FogreidError(f"{path}: not a fogreid checkpoint (no '{FORMAT}' marker); "
                           f"checkpoints are written by `fogreid train` or save_checkpoint()")
    check_schema(state, path)
    return state


def check_schema(state: dict[str, Any], path: str | Path = "checkpoint") -> None:
    """The entries every reader uses, of the types it uses them as: a checkpoint with the marker
    but a missing or mistyped entry (hand-edited, or written by something else) is refused here,
    naming the entry, instead of failing later with a KeyError deep in a verb."""
    version = state.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise FogreidError(f"{path}: format_version is {version!r}, not a whole number; the checkpoint is damaged: "
                           f"re-save it with fogreid")
    if version > FORMAT_VERSION:
        raise FogreidError(f"{path}: written by a newer fogreid (format {version}); upgrade fogreid to read it")
    for key, what in (("model_config", "the model config"), ("model", "the weights")):
        if key not in state:
            raise FogreidError(f"{path}: has no '{key}' entry ({what}); it is not a complete fogreid checkpoint: "
                               f"use the run's best.pt / last.pt or re-save it with fogreid")
        if not isinstance(state[key], dict):
            raise FogreidError(f"{path}: '{key}' ({what}) is a {type(state[key]).__name__}, not a mapping; the "
                               f"checkpoint is damaged: re-save it with fogreid")
    for part in ("model", "bn_ema"):
        bad = [k for k, v in (state.get(part) or {}).items()
               if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise FogreidError(f"{path}: {part} entry {bad[0]!r} is not a tensor; the checkpoint is damaged: "
                               f"re-save it with fogreid")
    for key in ("meta", "bn_ema"):
        if key in state and not isinstance(state[key], dict):
            raise FogreidError(f"{path}: '{key}' is a {type(state[key]).__name__}, not a mapping; the checkpoint "
                               f"is damaged: re-save it with fogreid")
    check_finite(state, path)


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


def load_network(path: str | Path, expect: ModelConfig | None = None,
                 map_location: str | torch.device = "cpu", imgsz: tuple[int, int] | None = None) -> SJDLNet:
    """The network stored in checkpoint `path`, built and loaded, in eval mode. With `expect`,
    the stored config must equal it. `imgsz` deploys the (fully convolutional) network at
    another image size."""
    state = read_checkpoint(path, map_location)
    cfg = checkpoint_config(state, path)
    if expect is not None and expect != cfg:
        raise FogreidError(f"{path}: checkpoint is for another model config: {describe_mismatch(expect, cfg)}. "
                           f"Use the config the checkpoint was trained with, or retrain.")
    if imgsz is not None:
        cfg = dataclasses.replace(cfg, imgsz=tuple(imgsz))
    net = build_model(cfg)
    load_weights(net, state["model"], path)
    return net.eval()


def load_model(path: str | Path, expect: ModelConfig | None = None,
               map_location: str | torch.device = "cpu", input_size: tuple[int, int] | None = None) -> SJDLNet:
    """Deprecated: `load_network` (fogreid.runtime.load_deployed loads a deployed artifact)."""
    renamed("fogreid.model.load_model", "fogreid.model.load_network")
    return load_network(path, expect, map_location, input_size)


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
