"""Choosing a torch device from a user's --device, shared by training, evaluation and runtime."""

from __future__ import annotations

from fogreid.errors import EnvironmentProblem, FogreidError


def pick_device(name: str = "auto", local_rank: int = 0):
    import torch

    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FogreidError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EnvironmentProblem(f"--device {name}: CUDA is not available on this machine (torch "
                           f"{torch.__version__}); use --device cpu")
    return device
