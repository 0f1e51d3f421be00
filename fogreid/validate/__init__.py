"""Is an exported artifact as accurate as the PyTorch model? Figures, a verdict, a report.

    from fogreid.validate import validate, write_html

    result = validate("best.pt", "deploy/model_int8.onnx", images=["foggy/"])
    print(result.passed, result.figures["cosine_mean"])
    write_html(result, "validation.html")

    # every artifact on every installed engine (ONNX Runtime, OpenVINO, TensorRT), one table
    results = validate_many("best.pt", candidates(["deploy/model.onnx", "deploy/model_int8.onnx"]),
                            images=["foggy/"])
    print(cross_engine_table(results))

Names are imported on first use.
"""

from fogreid._lazy import attach

_NAMES = {
    "validate": "compare",
    "validate_many": "compare",
    "candidates": "compare",
    "cross_engine_table": "report",
    "ValidationResult": "compare",
    "Thresholds": "compare",
    "thresholds_for": "compare",
    "Check": "compare",
    "write_json": "report",
    "write_html": "report",
}

__getattr__, __dir__, __all__ = attach(__name__, _NAMES)
