"""INT8 calibration from foggy images: Q/DQ ONNX and TensorRT calibration caches."""
