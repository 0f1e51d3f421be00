"""Foggy vehicle data: image I/O, dataset readers, the P x K sampler, fog models, the generator.

    from fogreid.data import SynthConfig, generate, load_dataset

    generate("data/", SynthConfig(ids=40))               # FVRID's layout, foggy and clear
    split = load_dataset("fvrid-syn", "data/")           # train / query / gallery records

Names are imported on first use.
"""

from fogreid._lazy import attach

_NAMES = {
    "read_image": "image_io",
    "write_image": "image_io",
    "list_images": "image_io",
    "resize_for_model": "image_io",
    "load_for_model": "image_io",
    "load_dataset": "datasets",
    "load_fvrid": "datasets",
    "ReIDSplit": "datasets",
    "ImageRecord": "datasets",
    "IdentitySampler": "sampler",
    "SynthConfig": "synth",
    "generate": "synth",
    "synthetic_fog": "fog",
    "make_video": "synth_video",
    "dehaze_dcp": "dehaze",
}

__getattr__, __dir__, __all__ = attach(__name__, _NAMES)
