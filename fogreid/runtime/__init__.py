"""Inference on deployed models (PyTorch, ONNX Runtime, OpenVINO, TensorRT) and the stream pipeline.

    from fogreid.runtime import load_deployed, build_gallery, Gallery

    with load_deployed("deploy/model.onnx") as model:    # .pt, .onnx or a TensorRT engine
                                                          # (backend="openvino": the .onnx on OpenVINO)
        defogged, embeddings = model(crops)                # uint8 (N, H, W, 3) BGR
        build_gallery(model, "gallery_images/").save("gallery.npz")

`run_stream(model, RunOptions(...))` runs sources (video files, folders, cameras, RTSP) through
regions, the model and a gallery, as `fogreid run` does. Names are imported on first use;
this package never imports `fogreid.train`.
"""

from fogreid._lazy import attach

_NAMES = {
    "load_deployed": "backends",
    "load_model": "backends",       # deprecated: load_deployed
    "DeployedModel": "backends",
    "make_runner": "backends",
    "engines_for": "backends",
    "Gallery": "gallery",
    "build_gallery": "gallery",
    "run_stream": "pipeline",
    "RunOptions": "pipeline",
    "RunStats": "pipeline",
    "stats_dict": "pipeline",
    "FullFrame": "regions",
    "FixedRegions": "regions",
    "OnnxDetector": "regions",
    "SourceReader": "sources",
    "parse_source": "sources",
    "PublicDetections": "regions",
    "TrackingConfig": "tracking",
    "AssociationConfig": "association",
    "CrossCameraAssociator": "association",
    "measure": "bench",
    "Timing": "bench",
}

__getattr__, __dir__, __all__ = attach(__name__, _NAMES)
