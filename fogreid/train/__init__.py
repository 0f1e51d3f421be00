"""Training and evaluation of the joint defog + ReID network (`fogreid train`, `fogreid eval`).

    from fogreid.train import build_config, train, evaluate

    cfg = build_config(flags={"data.root": "data/", "optim.epochs": 5})
    summary = train(cfg, "runs/exp")                    # writes last.pt, best.pt, metrics.json

Names are imported on first use.
"""

from fogreid._lazy import attach

_NAMES = {
    "train": "loop",
    "train_rvsl": "rvsl",
    "evaluate": "evaluation",
    "TrainConfig": "config",
    "DataConfig": "config",
    "LossConfig": "config",
    "OptimConfig": "config",
    "build_config": "config",
}

__getattr__, __dir__, __all__ = attach(__name__, _NAMES)
