"""The SJDL / RVSL networks, their deploy wrapper and their checkpoints.

    from fogreid.model import preset, build_model, FusedDefogReID, load_network, save_checkpoint

    net = build_model(preset("edge", num_ids=100))     # a fresh network from a named preset
    save_checkpoint("net.pt", net)                     # atomic; loading never runs pickled code
    deployed = FusedDefogReID.from_checkpoint("net.pt")  # uint8 BGR NHWC in, (defogged, embeddings) out

Names are imported on first use, so `import fogreid.model` does not import torch.
"""

from fogreid._lazy import attach

_NAMES = {
    "ModelConfig": "config",
    "SJDLOutput": "config",
    "preset": "config",
    "build_model": "build",
    "build_sjdl": "build",          # deprecated: build_model
    "SJDLNet": "sjdl",
    "RVSLNet": "rvsl",
    "FusedDefogReID": "fused",
    "save_checkpoint": "checkpoint",
    "read_checkpoint": "checkpoint",
    "load_network": "checkpoint",
    "load_model": "checkpoint",     # deprecated: load_network
    "checkpoint_config": "checkpoint",
    "summarize": "summary",
    "format_summary": "summary",
    "update_bn_stats": "precise_bn",
}

__getattr__, __dir__, __all__ = attach(__name__, _NAMES)
