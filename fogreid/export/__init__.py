"""Export of the fused deploy graph to ONNX (FP32, FP16, Q/DQ INT8) and TensorRT engines.

    from fogreid.export import export, ExportOptions, parse_formats

    result = export("best.pt", parse_formats("onnx,onnx-int8"), "deploy/",
                    ExportOptions(calib_images=["foggy/"]))
    result.files      # {"onnx": Path("deploy/model.onnx"), ...}; result.manifest is export.json

`FORMATS` is the table of formats (`fogreid export --format`). Names are imported on first use.
"""

from fogreid._lazy import attach

_NAMES = {
    "export": "exporter",
    "ExportOptions": "exporter",
    "ExportResult": "exporter",
    "FORMATS": "formats",
    "Format": "formats",
    "parse_formats": "formats",
    "parse_batch": "formats",
    "check_artifact": "preflight",
    "CheckReport": "preflight",
    "trtexec_command": "tensorrt_engine",
}

__getattr__, __dir__, __all__ = attach(__name__, _NAMES)
